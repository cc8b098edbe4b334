#!/usr/bin/env bash
# Wattle's developer entry point: installs what the build and tests need from the system, then
# builds and runs. Every step uses the one cargo profile `ci`, so RocksDB compiles once.
#
#   ./scripts/dev.sh sandbox [ARGS...]   build, then run the whole platform locally
#   ./scripts/dev.sh test [ARGS...]      build, then run every test
#   ./scripts/dev.sh setup               only install the system packages
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: libclang for RocksDB's bindings, a C++ compiler for RocksDB itself,
# mosquitto and its clients for the integration tests, mbpoll (a Modbus client we did not write),
# PostgreSQL (billing's tests run its read model on SQLite and on a server they start themselves),
# Chromium and a font (tests/customer_page.rs loads the customer's page in headless Chromium).
packages=(libclang-dev clang g++ mosquitto mosquitto-clients mbpoll openssl pkg-config postgresql chromium fonts-dejavu-core)
schemathesis_version=4.32.5

setup() {
  local missing=()
  for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing system packages: ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
  # schemathesis (PyPI) checks billing's OpenAPI document against what billing serves (tests/billing.rs).
  if ! command -v schemathesis >/dev/null; then
    echo "installing schemathesis from PyPI" >&2
    python3 -m pip install --quiet --disable-pip-version-check "schemathesis==${schemathesis_version}" >&2
  fi
  # mosquitto's Debian package starts a service on port 1883 where an init system runs; the
  # tests never use it (they start their own brokers on free ports). PostgreSQL's likewise: the
  # billing tests initdb their own server in a temporary directory on a free port.
}

command="${1:-}"
[ $# -gt 0 ] && shift
case "$command" in
  setup) setup ;;
  sandbox)
    setup
    # Build what `test` builds (every target, so dev-dependencies' features too): one build
    # serves both commands, in either order, instead of two that recompile each other's crates.
    cargo build --profile ci --locked --workspace --all-targets
    exec "${CARGO_TARGET_DIR:-target}/ci/wattle" sandbox "$@"
    ;;
  test)
    setup
    exec cargo test --profile ci --locked --workspace "$@"
    ;;
  *)
    echo "usage: $0 {sandbox|test|setup} [ARGS...]" >&2
    exit 2
    ;;
esac
