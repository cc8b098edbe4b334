//! Helpers for running real processes in tests: free ports, mosquitto, `wattle` subcommands,
//! polling with deadlines (never sleeping to wait for something).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Tests that run a ledger cluster hold this, so they run one at a time: on a 2-core machine two
/// clusters at once would starve each other's heartbeats and elections.
pub static CLUSTER_SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The `wattle` binary under test.
pub fn wattle() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wattle"))
}

pub use crate::process::{log_tails, poll_until, Mosquitto, Process};

/// A free TCP port on 127.0.0.1 (for processes that need a concrete port).
/// A stopped node's database as the node itself reads it: sealed under the ledger secrets kept,
/// wrapped for its X25519 key, in its data directory (what an operator with the node's files
/// holds).
pub fn open_sealed(data_dir: &Path) -> anyhow::Result<ledger::sealed_kv::SealedKv> {
    use anyhow::Context as _;
    let kv = ledger::kv::RocksKv::open(&data_dir.join("db"))?;
    let secrets = ledger::provision::load_local(data_dir)?.context("the node keeps its ledger secrets")?;
    Ok(ledger::sealed_kv::SealedKv::new(std::sync::Arc::new(kv), std::sync::Arc::new(secrets)))
}

pub fn free_port() -> u16 {
    crate::process::free_port().expect("127.0.0.1 has a free port")
}

/// Clock arguments shared by every process of one run, so they agree on "now".
pub fn clock_args(start: &str, speed: u32, anchor_ms: i64) -> Vec<String> {
    vec![
        "--clock-start".into(),
        start.into(),
        "--clock-speed".into(),
        speed.to_string(),
        "--clock-anchor-ms".into(),
        anchor_ms.to_string(),
    ]
}

/// The token file of the gateways a test starts in `dir` (their `--tokens`).
pub fn gateway_tokens(dir: &Path) -> std::path::PathBuf {
    dir.join("gateway-tokens.json")
}

/// The operator's token of the gateways a test starts in `dir`: issued once with `wattle gateway
/// token issue` into [`gateway_tokens`], kept in `dir/gateway-operator.token`.
pub fn gateway_token(dir: &Path) -> anyhow::Result<String> {
    let kept = dir.join("gateway-operator.token");
    if let Ok(token) = std::fs::read_to_string(&kept) {
        return Ok(token);
    }
    let output = wattle()
        .args(["gateway", "token", "issue", "--label", "test operator", "--tokens"])
        .arg(gateway_tokens(dir))
        .output()?;
    anyhow::ensure!(output.status.success(), "gateway token issue: {}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout)?.trim().to_string();
    std::fs::write(&kept, &token)?;
    Ok(token)
}

/// An HTTP client that sends the operator's token of the gateways in `dir` (their quarantine).
pub fn gateway_client(dir: &Path) -> anyhow::Result<reqwest::Client> {
    bearer_client(&gateway_token(dir)?)
}

/// Starts `wattle gateway` against a broker and ledger nodes, with its data in `dir/gateway_id`
/// (a restart with the same id continues on the same data) and the token file of
/// [`gateway_token`]; returns it once subscribed.
pub async fn start_gateway(
    dir: &Path,
    gateway_id: &str,
    broker_port: u16,
    ledger_urls: &[String],
    clock: &[String],
) -> anyhow::Result<(Process, String)> {
    start_gateway_with(dir, gateway_id, broker_port, ledger_urls, clock, &[]).await
}

/// [`start_gateway`] with extra arguments (e.g. `--config FILE`).
pub async fn start_gateway_with(
    dir: &Path,
    gateway_id: &str,
    broker_port: u16,
    ledger_urls: &[String],
    clock: &[String],
    extra: &[String],
) -> anyhow::Result<(Process, String)> {
    let ready = dir.join(format!("{gateway_id}.ready"));
    // A restart on the same data directory must not read the previous run's address.
    let _ = std::fs::remove_file(&ready);
    gateway_token(dir)?;
    let mut command = wattle();
    command
        .args(["gateway", "--gateway-id", gateway_id, "--listen", "127.0.0.1:0"])
        .args(["--broker", &format!("127.0.0.1:{broker_port}"), "--ledger", &ledger_urls.join(",")])
        .arg("--data-dir")
        .arg(dir.join(gateway_id))
        .arg("--ready-file")
        .arg(&ready)
        .arg("--tokens")
        .arg(gateway_tokens(dir))
        .args(clock)
        .args(extra);
    let mut gateway = Process::spawn(gateway_id, dir, command)?;
    let url = format!("http://{}", gateway.ready_address(&ready).await?);
    let http = reqwest::Client::new();
    poll_until("gateway subscribed", Duration::from_secs(30), || {
        let request = http.get(format!("{url}/healthz")).send();
        async move { request.await.ok().filter(|response| response.status().is_success()) }
    })
    .await?;
    Ok((gateway, url))
}

/// Writes an operator key, the registry of a fleet and the ledger's admin configuration
/// (`ledger.toml`, flat tariff in EUR) into `dir`.
pub fn configure_ledger(dir: &Path, meters: u32, seed: u64, price: &str) -> anyhow::Result<()> {
    let status = wattle().args(["keygen", "--out"]).arg(dir.join("operator.key")).stdout(Stdio::null()).status()?;
    anyhow::ensure!(status.success(), "keygen failed");
    let status = wattle()
        .args(["sim", "--meters", &meters.to_string(), "--seed", &seed.to_string(), "--registry-only"])
        .arg("--registry-out")
        .arg(dir.join("meters.json"))
        .status()?;
    anyhow::ensure!(status.success(), "writing the registry failed");
    std::fs::write(
        dir.join("ledger.toml"),
        format!("registries = [\"meters.json\"]\n[tariff]\ncurrency = \"EUR\"\nprice_per_kwh = \"{price}\"\n"),
    )?;
    Ok(())
}

/// Starts `wattle sim` for a fleet, writing the ground truth to `dir/truth.bin`.
pub fn spawn_sim(
    dir: &Path,
    broker_port: u16,
    shape: (u32, u64, u64),
    epoch: &str,
    clock: &[String],
) -> anyhow::Result<Process> {
    spawn_sim_with(dir, broker_port, shape, epoch, clock, &[])
}

/// `spawn_sim` with further arguments (`--fault ...`, `--linger-s ...`).
pub fn spawn_sim_with(
    dir: &Path,
    broker_port: u16,
    (meters, seed, intervals): (u32, u64, u64),
    epoch: &str,
    clock: &[String],
    extra: &[String],
) -> anyhow::Result<Process> {
    let mut command = wattle();
    command
        .args(["sim", "--meters", &meters.to_string(), "--seed", &seed.to_string()])
        .args(["--intervals", &intervals.to_string(), "--epoch", epoch])
        .args(["--broker", &format!("127.0.0.1:{broker_port}")])
        .arg("--truth-out")
        .arg(dir.join("truth.bin"))
        .args(clock)
        .args(extra);
    Process::spawn("sim", dir, command)
}

/// The ground truth of a fleet started by `spawn_sim`, once it has written all `meters` ×
/// `intervals` records (the fleet has sent its last interval by then).
pub async fn complete_truth(dir: &Path, meters: u32, intervals: u64) -> anyhow::Result<firmware_sim::Truth> {
    let path = dir.join("truth.bin");
    poll_until("the fleet's last interval", Duration::from_secs(60), || {
        let records = u64::from(meters) * intervals;
        let truth = firmware_sim::Truth::read(&path).ok().filter(|truth| truth.records.len() as u64 == records);
        async move { truth }
    })
    .await
}

/// Starts one bootstrapped ledger node in `dir` (after `configure_ledger`), loading the admin
/// configuration; returns it and its URL once it serves.
pub async fn start_single_ledger(dir: &Path, clock: &[String]) -> anyhow::Result<(Process, String)> {
    on_a_free_port(dir, clock, true).await
}

/// Starts on a port `free_port` chose. Between that choice and the node's bind another process
/// may be handed the port (seen in CI: "Address already in use", with a headless Chromium and
/// other tests' processes opening sockets meanwhile); such a start is retried on a new port.
async fn on_a_free_port(dir: &Path, clock: &[String], configured: bool) -> anyhow::Result<(Process, String)> {
    const ATTEMPTS: usize = 3;
    let mut attempt = 1;
    loop {
        match spawn_single_ledger(dir, free_port(), clock, configured).await {
            Err(error) if attempt < ATTEMPTS && format!("{error:#}").contains("Address already in use") => {
                eprintln!("the ledger's port was taken before it bound it; trying another ({error:#})");
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// `start_single_ledger` on a given port; run again after the node stopped, it restarts the node
/// on its data directory (`dir/node-1`) and port, where its gateways expect it.
pub async fn start_single_ledger_on(dir: &Path, port: u16, clock: &[String]) -> anyhow::Result<(Process, String)> {
    spawn_single_ledger(dir, port, clock, true).await
}

/// A single ledger node with no admin configuration: no meter, no customer, no price.
pub async fn start_bare_ledger(dir: &Path, clock: &[String]) -> anyhow::Result<(Process, String)> {
    on_a_free_port(dir, clock, false).await
}

async fn spawn_single_ledger(
    dir: &Path,
    port: u16,
    clock: &[String],
    configured: bool,
) -> anyhow::Result<(Process, String)> {
    // A restart must not read the previous run's ready file.
    let _ = std::fs::remove_file(dir.join("node-1.ready"));
    let mut command = wattle();
    command
        .args(["node", "--node-id", "1", "--bootstrap", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.join("node-1"))
        .arg("--ready-file")
        .arg(dir.join("node-1.ready"));
    if configured {
        command.arg("--admin-config").arg(dir.join("ledger.toml")).arg("--operator-key").arg(dir.join("operator.key"));
    }
    command.args(clock);
    let mut node = Process::spawn("node-1", dir, command)?;
    node.ready_address(&dir.join("node-1.ready")).await?;
    Ok((node, format!("http://127.0.0.1:{port}")))
}

/// GETs a URL and parses its JSON body; `None` on any failure (for polling).
pub async fn get_json(http: &reqwest::Client, url: &str) -> Option<serde_json::Value> {
    http.get(url).send().await.ok()?.json().await.ok()
}

/// Every transaction summary of the ledger at `url`, in log order; `None` on any failure.
pub async fn ledger_transactions(http: &reqwest::Client, url: &str) -> Option<Vec<serde_json::Value>> {
    let mut transactions = Vec::new();
    let mut from = 0u64;
    loop {
        let mut page = get_json(http, &format!("{url}/v1/transactions?from={from}")).await?;
        let next = page["next"].as_u64();
        let serde_json::Value::Array(items) = page["transactions"].take() else { return None };
        if items.is_empty() {
            return Some(transactions);
        }
        transactions.extend(items);
        from = next?;
    }
}

/// Every reading digest the ledger at `url` has logged, in log order (repeats included);
/// `None` on any failure (for polling).
pub async fn ledger_reading_digests(http: &reqwest::Client, url: &str) -> Option<Vec<String>> {
    let mut digests = Vec::new();
    for transaction in ledger_transactions(http, url).await? {
        for digest in transaction["reading_digests"].as_array()? {
            digests.push(digest.as_str()?.to_string());
        }
    }
    Some(digests)
}

/// One reading a ledger logged in a readings transaction, with what its state machine made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerReading {
    pub digest: String,
    pub meter: String,
    pub sequence: u64,
    /// `accepted` (settled), `duplicate`, `equivocation` or a rejection code.
    pub result: String,
}

/// Every reading the ledger at `url` logged, in log order, with its result from its transaction's
/// claims document (docs/receipts.md). The leader logs what gateways submit and the state machine
/// settles each (meter, sequence) once, so a reading submitted again (a gateway retrying after a
/// crash) is logged again with the result `duplicate`. `None` on any failure (for polling).
pub async fn ledger_readings(http: &reqwest::Client, url: &str) -> Option<Vec<LedgerReading>> {
    let mut readings = Vec::new();
    for transaction in ledger_transactions(http, url).await?.iter().filter(|t| t["kind"] == "readings") {
        let tx_id = transaction["tx_id"].as_str()?;
        let claims_url = format!("{url}/v1/transactions/{tx_id}/claims");
        let claims = http.get(claims_url).send().await.ok()?.error_for_status().ok()?.text().await.ok()?;
        let mut lines = claims.lines();
        if !matches!(lines.next(), Some("wattle.claims.v1" | "wattle.claims.v2")) {
            return None;
        }
        let digests = transaction["reading_digests"].as_array()?;
        // v2 follows a reading line with its interval and component lines, indented.
        let lines: Vec<&str> = lines.filter(|line| !line.starts_with(' ')).collect();
        if lines.len() != digests.len() {
            return None;
        }
        for (digest, line) in digests.iter().zip(lines) {
            // `meter key_id sequence result amount currency`
            let fields: Vec<&str> = line.split(' ').collect();
            readings.push(LedgerReading {
                digest: digest.as_str()?.to_string(),
                meter: fields.first()?.to_string(),
                sequence: fields.get(2)?.parse().ok()?,
                result: fields.get(3)?.to_string(),
            });
        }
    }
    Some(readings)
}

/// A service's Prometheus metrics (`name` or `name{labels}` to value); `None` on any failure.
pub async fn metrics(http: &reqwest::Client, url: &str) -> Option<BTreeMap<String, u64>> {
    let text = http.get(format!("{url}/metrics")).send().await.ok()?.text().await.ok()?;
    Some(
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.rsplit_once(' '))
            .filter_map(|(name, value)| Some((name.to_string(), value.parse().ok()?)))
            .collect(),
    )
}

/// One metric of a service (see `metrics`).
pub async fn metric(http: &reqwest::Client, url: &str, name: &str) -> Option<u64> {
    metrics(http, url).await?.get(name).copied()
}

/// The fleet's last reported count of published readings, from its progress lines in `sim.log`
/// (`published=N`, possibly with colour codes around the `=`).
pub fn sim_published(dir: &Path) -> Option<u64> {
    let raw = std::fs::read_to_string(dir.join("sim.log")).ok()?;
    // Drop colour codes (ESC [ ... m), whose digits would read as the number.
    let mut log = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for code in chars.by_ref() {
                if code == 'm' {
                    break;
                }
            }
        } else {
            log.push(c);
        }
    }
    let at = log.rfind("published=")? + "published=".len();
    let digits: String =
        log[at..].chars().skip_while(|c| !c.is_ascii_digit()).take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A running `wattle sandbox` (authenticated three-node cluster, governance, billing, meters)
/// with its data directory, started in `dir` and waited for until its banner is printed.
pub struct Sandbox {
    pub process: Process,
    pub data: std::path::PathBuf,
    /// The terminal output (`dir/NAME.log`): the banner names every service's address.
    pub terminal: std::path::PathBuf,
    /// The ledger nodes' client ports (id, HOST:PORT), from `DATA_DIR/nodes.json`.
    pub nodes: Vec<(u64, String)>,
    /// Their raft ports (id, HOST:PORT), from `DATA_DIR/raft_nodes.json`: raft and node-to-node
    /// traffic only (they also serve the client API, for forwarded writes and history fetches).
    pub raft_nodes: Vec<(u64, String)>,
    /// `https` (the sandbox's default: TLS, nodes endorsed by the service key) or `http`
    /// (`--no-tls`).
    pub scheme: &'static str,
    /// The service public key (`DATA_DIR/service.key`'s), in hex: what receipts verify against
    /// and what clients of a TLS ledger trust.
    pub service_public: String,
}

impl Sandbox {
    /// Starts `wattle sandbox --meters METERS --data-dir DIR/sandbox ARGS`, logging to
    /// `DIR/NAME.log`, and waits (at most two minutes) for its banner.
    pub async fn start(dir: &Path, name: &str, meters: u32, args: &[&str]) -> anyhow::Result<Sandbox> {
        let data = dir.join("sandbox");
        let mut command = wattle();
        command.arg("sandbox").args(["--meters", &meters.to_string()]).arg("--data-dir").arg(&data).args(args);
        let process = Process::spawn(name, dir, command)?;
        let terminal = dir.join(format!("{name}.log"));
        poll_until("the sandbox's banner", Duration::from_secs(120), || async {
            std::fs::read_to_string(&terminal).ok()?.contains("Wattle sandbox is running").then_some(())
        })
        .await
        .map_err(|error| anyhow::anyhow!("{error}\n{}", process.log_tail()))?;
        let nodes = serde_json::from_str(&std::fs::read_to_string(data.join("nodes.json"))?)?;
        let raft_nodes = serde_json::from_str(&std::fs::read_to_string(data.join("raft_nodes.json"))?)?;
        let scheme = if args.contains(&"--no-tls") { "http" } else { "https" };
        let service_key = ledger::node::read_signing_key(&data.join("service.key"))?;
        let service_public = hex::encode(service_key.verifying_key().to_bytes());
        Ok(Sandbox { process, data, terminal, nodes, raft_nodes, scheme, service_public })
    }

    /// The client URL of node `id` (1-based, as the nodes are numbered).
    pub fn node_url(&self, id: u64) -> String {
        let (_, address) = self.nodes.iter().find(|(node, _)| *node == id).expect("the sandbox runs node {id}");
        format!("{}://{address}", self.scheme)
    }

    /// The URL of a node's client or raft address (HOST:PORT) as this sandbox serves it.
    pub fn url_of(&self, address: &str) -> String {
        format!("{}://{address}", self.scheme)
    }

    /// An HTTP client for the sandbox's ledger: over TLS it trusts exactly the nodes the
    /// sandbox's service key endorses, as the gateway and billing do.
    pub fn ledger_client(&self) -> anyhow::Result<reqwest::Client> {
        trusting_client(&self.service_public)
    }

    /// `wattle ARGS` with the service key in `WATTLE_LEDGER_SERVICE_KEY`, so its ledger calls
    /// reach the sandbox's TLS nodes.
    pub fn wattle(&self) -> Command {
        let mut command = wattle();
        command.env("WATTLE_LEDGER_SERVICE_KEY", &self.service_public);
        command
    }

    /// The URL of a service the banner names (`billing`, `gateway`).
    /// An HTTP client that sends the sandbox's billing operator token (`DATA_DIR/billing-operator.token`).
    pub fn billing_client(&self) -> anyhow::Result<reqwest::Client> {
        bearer_client(std::fs::read_to_string(self.data.join("billing-operator.token"))?.trim())
    }

    pub fn banner_url(&self, service: &str) -> anyhow::Result<String> {
        let banner = std::fs::read_to_string(&self.terminal)?;
        let address = banner
            .lines()
            .find(|line| line.trim_start().starts_with(&format!("{service} ")))
            .and_then(|line| line.split_whitespace().nth(1))
            .ok_or_else(|| anyhow::anyhow!("the banner names no {service}:\n{banner}"))?;
        Ok(if address.starts_with("http") { address.to_string() } else { format!("http://{address}") })
    }

    /// Passes a governance proposal (TOML text) with the sandbox's members: supplier proposes,
    /// grid approves (a majority of the three voting members).
    pub fn pass(&self, url: &str, proposal: &str) -> anyhow::Result<()> {
        let output = self.vote(url, proposal)?;
        anyhow::ensure!(output.contains("accepted"), "vote: {output}");
        Ok(())
    }

    /// Proposes (supplier) and approves (grid) a proposal; the vote's output, which says whether
    /// it passed, failed (and why) or is still open.
    pub fn vote(&self, url: &str, proposal: &str) -> anyhow::Result<String> {
        let file = self.data.join(format!("proposal-{}.toml", rand::random::<u32>()));
        std::fs::write(&file, proposal)?;
        let gov = |member: &str, args: &[&str]| {
            crate::verifiable::run(
                self.wattle()
                    .arg("gov")
                    .args(args)
                    .args(["--ledger", url, "--json", "--member-key"])
                    .arg(self.data.join(format!("{member}.key"))),
            )
        };
        let (ok, output) = gov("supplier", &["propose", file.to_str().expect("a UTF-8 path")])?;
        anyhow::ensure!(ok, "propose: {output}");
        let id = crate::governance::proposal_of(&output)?.record.id;
        let (ok, output) = gov("grid", &["vote", &id, "--approve"])?;
        anyhow::ensure!(ok, "vote: {output}");
        Ok(output)
    }

    /// Stops it with SIGINT; it must exit cleanly within 30 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.process.signal("INT")?;
        let status = self.process.wait(Duration::from_secs(30)).await?;
        anyhow::ensure!(status.success(), "the sandbox stopped with {status}:\n{}", self.process.log_tail());
        Ok(())
    }
}

/// An HTTP client that sends `Authorization: Bearer TOKEN` with every request (billing's API, the
/// gateway's quarantine).
pub fn bearer_client(token: &str) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse()?);
    Ok(reqwest::Client::builder().default_headers(headers).timeout(Duration::from_secs(15)).build()?)
}

/// An HTTP client that reaches `https://` ledger nodes only if `service_public` (hex) endorses
/// them; plain `http://` as any client.
pub fn trusting_client(service_public: &str) -> anyhow::Result<reqwest::Client> {
    let key = domain::tls::parse_service_key(service_public).map_err(anyhow::Error::msg)?;
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .use_preconfigured_tls(domain::tls::client_config(key, None)?)
        .build()?)
}

/// Issues a billing token with `wattle token issue --tokens FILE ROLE_ARGS` and returns it.
pub fn issue_token(tokens: &Path, role: &[&str]) -> anyhow::Result<String> {
    let output = wattle().args(["token", "issue", "--tokens"]).arg(tokens).args(role).output()?;
    anyhow::ensure!(output.status.success(), "token issue failed: {}", String::from_utf8_lossy(&output.stderr));
    Ok(String::from_utf8(output.stdout)?.trim().to_string())
}
