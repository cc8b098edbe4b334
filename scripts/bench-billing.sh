#!/usr/bin/env bash
# Billing under load (BENCHMARKS.md, "Billing"): reading-to-bill latency while the sandbox's fleet
# publishes (`wattle bench bill-latency`), then GET /v1/customers/{id}/bill requests per second
# and latency percentiles with wrk, on SQLite and on PostgreSQL, beside the same billing's
# /healthz (axum with no database read: the HTTP floor of the same process) in the same run.
#
#   ./scripts/bench-billing.sh [SECONDS] [CONNECTIONS]     (defaults 20 and 32)
#
# Starts a sandbox (3 ledger nodes, gateway, 100 meters) for 96 intervals of simulated time,
# then, once the ledger is quiet, a second `wattle billing` on a fresh SQLite file and a third on
# a throw-away PostgreSQL server (initdb in a temporary directory, as the `postgres` user when
# run as root), both following the sandbox's ledger with its reader key and an operator token
# whose rate limit is lifted. Needs wrk and PostgreSQL (apt-get install wrk postgresql).
# Stops only the processes it started.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
connections="${2:-32}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --profile ci --locked --bin wattle >&2
wattle="$target/ci/wattle"
work=$(mktemp -d /tmp/wattle-bench-billing.XXXXXX)
chmod 755 "$work"
pids=()
pg_data=""
# Processes started in command substitutions (subshells) record their PIDs here.
pid_file="$work/pids"
touch "$pid_file"
cleanup() {
  for pid in "${pids[@]}" $(cat "$pid_file"); do kill "$pid" 2>/dev/null || true; done
  if [ -n "$pg_data" ]; then as_pg "$pg_bin/pg_ctl" -D "$pg_data" -m fast -w stop >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # URL, what
  for _ in $(seq 1 600); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "timed out waiting for $2" >&2; exit 1
}

echo "sandbox: 100 meters, 96 intervals at 900x (data in $work/sandbox)" >&2
"$wattle" sandbox --data-dir "$work/sandbox" --meters 100 --speed 900 --intervals 96 >"$work/sandbox.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 600); do grep -q "^  billing " "$work/sandbox.out" 2>/dev/null && break; sleep 0.2; done
ledger=$(grep -oE '^  ledger +http://[0-9.:]+' "$work/sandbox.out" | awk '{print $2}')
[ -n "$ledger" ] || { cat "$work/sandbox.out" >&2; exit 1; }
broker=$(grep -oE '^  MQTT broker +127\.0\.0\.1:[0-9]+' "$work/sandbox.out" | awk '{print $3}')
sandbox_billing=$(grep -oE '^  billing +http://[0-9.:]+' "$work/sandbox.out" | awk '{print $2}')
started=$(date +%s)
# While the fleet publishes (100 meters, an interval a second): reading-to-bill latency.
"$wattle" bench bill-latency --broker "$broker" --ledger "$ledger" --billing "$sandbox_billing" \
  --token-file "$work/sandbox/billing-operator.token" --samples 60
# 96 intervals at one a second, then the ledger is quiet.
remaining=$(( 110 - ($(date +%s) - started) ))
[ "$remaining" -gt 0 ] && { echo "waiting ${remaining} s for the fleet's last intervals" >&2; sleep "$remaining"; }

tokens="$work/sandbox/billing-tokens.json"
token=$(cat "$work/sandbox/billing-operator.token")
start_billing() { # NAME DATABASE -> prints the URL
  local port; port=$(free_port)
  "$wattle" billing --listen "127.0.0.1:$port" --ledger "$ledger" --ledger-key "$work/sandbox/billing.key" \
    --database "$2" --tokens "$tokens" --rate-per-token 10000000 >"$work/$1.log" 2>&1 &
  echo $! >>"$pid_file"  # this runs in a subshell: `pids` would not reach cleanup
  wait_for "http://127.0.0.1:$port/healthz" "billing on $1"
  echo "http://127.0.0.1:$port"
}
run_wrk() { # LABEL URL
  local out; out=$(wrk -t2 -c"$connections" -d"${seconds}s" --latency -H "Authorization: Bearer $token" "$2")
  local rps p50 p99
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  printf '%-34s %10s req/s   p50 %8s   p99 %8s\n' "$1" "$rps" "$p50" "$p99"
}

sqlite_url=$(start_billing sqlite "sqlite://$work/bench.sqlite?mode=rwc")

pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort | tail -1)
pg_dir="$work/pg"; mkdir -p "$pg_dir"
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$pg_dir"
pg_data="$pg_dir/data"
pg_port=$(free_port)
as_pg "$pg_bin/initdb" -D "$pg_data" -U wattle --auth=trust -E UTF8 --no-sync >/dev/null
as_pg "$pg_bin/pg_ctl" -D "$pg_data" -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1" \
  -l "$pg_dir/server.log" -w start >/dev/null
postgres_url=$(start_billing postgres "postgres://wattle@127.0.0.1:$pg_port/postgres")

for url in "$sqlite_url" "$postgres_url"; do
  for _ in $(seq 1 600); do
    curl -s "$url/healthz" | grep -q '"entries_behind":0' && curl -s "$url/healthz" | grep -q '"feed":"following"' && break
    sleep 0.2
  done
done
customer=C0000000
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); wrk -t2 -c$connections -d${seconds}s; the sandbox's ledger idle"
run_wrk "floor: /healthz (SQLite instance)" "$sqlite_url/healthz"
run_wrk "GET /bill, SQLite" "$sqlite_url/v1/customers/$customer/bill"
run_wrk "GET /usage by hour (1 day), SQLite" "$sqlite_url/v1/customers/$customer/usage?from=2026-01-06T00:00:00Z&to=2026-01-07T00:00:00Z&group_by=hour"
run_wrk "floor: /healthz (PostgreSQL inst.)" "$postgres_url/healthz"
run_wrk "GET /bill, PostgreSQL" "$postgres_url/v1/customers/$customer/bill"
run_wrk "GET /usage by hour (1 day), PostgreSQL" "$postgres_url/v1/customers/$customer/usage?from=2026-01-06T00:00:00Z&to=2026-01-07T00:00:00Z&group_by=hour"
