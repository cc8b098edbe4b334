//! Helpers for running real processes in tests: free ports, mosquitto, `wattle` subcommands,
//! polling with deadlines (never sleeping to wait for something).

use std::collections::BTreeMap;
use std::fs::File;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The `wattle` binary under test.
/// Tests that run a ledger cluster hold this, so they run one at a time: on a 2-core machine two
/// clusters at once would starve each other's heartbeats and elections.
pub static CLUSTER_SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn wattle() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wattle"))
}

/// A free TCP port on 127.0.0.1 (for processes that need a concrete port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("bind port 0").port()
}

/// How often `poll_until` checks.
const POLL_EVERY: Duration = Duration::from_millis(25);

/// Polls `check` every 25 ms until it returns `Some`, or fails after `limit`. The one place tests
/// wait for something.
pub async fn poll_until<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    let mut ticks = tokio::time::interval(POLL_EVERY);
    loop {
        ticks.tick().await;
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
    }
}

/// A child process that is killed (by its PID, which we started) when dropped.
pub struct Process {
    pub name: String,
    child: Child,
    log: PathBuf,
}

/// Opens `dir/name.log` for appending, so a restarted process keeps its predecessor's lines.
fn open_log(dir: &Path, name: &str) -> anyhow::Result<(PathBuf, File)> {
    let log = dir.join(format!("{name}.log"));
    let file = File::options().create(true).append(true).open(&log).with_context(|| format!("opening {name}.log"))?;
    Ok((log, file))
}

impl Process {
    /// Starts a process with stdout and stderr going to `dir/name.log`.
    pub fn spawn(name: &str, dir: &Path, mut command: Command) -> anyhow::Result<Process> {
        let (log, file) = open_log(dir, name)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Process { name: name.to_string(), child, log })
    }

    /// Starts a process whose stdout the caller has set; stderr goes to `dir/name.log`.
    pub fn spawn_with_stdout(name: &str, dir: &Path, mut command: Command) -> anyhow::Result<Process> {
        let (log, file) = open_log(dir, name)?;
        let child = command.stdin(Stdio::null()).stderr(file).spawn().with_context(|| format!("starting {name}"))?;
        Ok(Process { name: name.to_string(), child, log })
    }

    /// Kills the process now (SIGKILL) and reaps it.
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.child.kill()?;
        self.child.wait().map(|_| ())
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`) to the process, which must be ours.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status()?;
        anyhow::ensure!(status.success(), "kill -{signal} {} failed", self.child.id());
        Ok(())
    }

    /// The last lines of the process's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Whether it has exited, with its status.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the process to exit within `limit`.
    pub async fn wait(&mut self, limit: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let name = self.name.clone();
        let result = poll_until(&format!("{name} to exit"), limit, || {
            let status = self.try_wait();
            async move { status }
        })
        .await;
        result.with_context(|| format!("{name} log:\n{}", self.log_tail()))
    }

    /// Reads `{"address": ...}` from the ready file the process writes once it serves.
    pub async fn ready_address(&mut self, ready_file: &Path) -> anyhow::Result<String> {
        let name = self.name.clone();
        let outcome = poll_until(&format!("{name} ready"), Duration::from_secs(60), || {
            let outcome = match std::fs::read_to_string(ready_file) {
                Ok(text) => Some(Ok(text)),
                Err(_) => self
                    .try_wait()
                    .map(|status| Err(anyhow::anyhow!("{name} exited with {status} before it was ready"))),
            };
            async move { outcome }
        })
        .await
        .and_then(|outcome| outcome)
        .with_context(|| format!("{} log:\n{}", self.name, self.log_tail()))?;
        let value: serde_json::Value = serde_json::from_str(&outcome)?;
        Ok(value["address"].as_str().context("address in ready file")?.to_string())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The log tails of processes, each under its name, for failure messages.
pub fn log_tails(processes: &[&Process]) -> String {
    processes.iter().map(|process| format!("{} log:\n{}\n", process.name, process.log_tail())).collect()
}

/// A mosquitto broker on a free port of 127.0.0.1 with the given extra configuration lines.
pub struct Mosquitto {
    pub port: u16,
    config: PathBuf,
    process: Process,
}

impl Mosquitto {
    pub async fn start(dir: &Path, extra_config: &str) -> anyhow::Result<Mosquitto> {
        let mut last_error = None;
        // The port is free when chosen but may be taken before mosquitto binds it: retry.
        for attempt in 0..5 {
            let port = free_port();
            let config = dir.join(format!("mosquitto-{attempt}.conf"));
            std::fs::write(&config, format!("listener {port} 127.0.0.1\nallow_anonymous true\n{extra_config}\n"))?;
            match Mosquitto::serve(dir, &format!("mosquitto-{attempt}"), port, &config).await {
                Ok(process) => return Ok(Mosquitto { port, config, process }),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("mosquitto did not start")))
    }

    /// Kills the broker (SIGKILL) and starts it again on the same port with the same
    /// configuration. Without `persistence true` (the default) it forgets every session, queued
    /// message and retained message.
    pub async fn restart(&mut self, dir: &Path) -> anyhow::Result<()> {
        self.process.kill()?;
        let mut last_error = None;
        // Our own listening socket is gone once the process is reaped; retry in case the port is
        // still held a moment (or was taken meanwhile, which would fail every attempt).
        for _ in 0..5 {
            match Mosquitto::serve(dir, "mosquitto-restarted", self.port, &self.config).await {
                Ok(process) => {
                    self.process = process;
                    return Ok(());
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("mosquitto did not restart")))
    }

    /// The last lines of the broker's log.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// Runs mosquitto with `config`; returns once it accepts connections on `port`.
    async fn serve(dir: &Path, name: &str, port: u16, config: &Path) -> anyhow::Result<Process> {
        let mut command = Command::new("mosquitto");
        command.arg("-c").arg(config);
        let mut process = Process::spawn(name, dir, command)?;
        let listening = poll_until(&format!("mosquitto listening on {port}"), Duration::from_secs(10), || {
            let outcome = if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                Some(true)
            } else {
                process.try_wait().map(|_| false)
            };
            async move { outcome }
        })
        .await?;
        anyhow::ensure!(listening, "mosquitto exited:\n{}", process.log_tail());
        Ok(process)
    }
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

/// Starts `wattle gateway` against a broker and ledger nodes, with its data in `dir/gateway_id`
/// (a restart with the same id continues on the same data); returns it once subscribed.
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
    let mut command = wattle();
    command
        .args(["gateway", "--gateway-id", gateway_id, "--listen", "127.0.0.1:0"])
        .args(["--broker", &format!("127.0.0.1:{broker_port}"), "--ledger", &ledger_urls.join(",")])
        .arg("--data-dir")
        .arg(dir.join(gateway_id))
        .arg("--ready-file")
        .arg(&ready)
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
    start_single_ledger_on(dir, free_port(), clock).await
}

/// `start_single_ledger` on a given port; run again after the node stopped, it restarts the node
/// on its data directory (`dir/node-1`) and port, where its gateways expect it.
pub async fn start_single_ledger_on(dir: &Path, port: u16, clock: &[String]) -> anyhow::Result<(Process, String)> {
    // A restart must not read the previous run's ready file.
    let _ = std::fs::remove_file(dir.join("node-1.ready"));
    let mut command = wattle();
    command
        .args(["node", "--node-id", "1", "--bootstrap", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.join("node-1"))
        .arg("--ready-file")
        .arg(dir.join("node-1.ready"))
        .arg("--admin-config")
        .arg(dir.join("ledger.toml"))
        .arg("--operator-key")
        .arg(dir.join("operator.key"))
        .args(clock);
    let mut node = Process::spawn("node-1", dir, command)?;
    node.ready_address(&dir.join("node-1.ready")).await?;
    Ok((node, format!("http://127.0.0.1:{port}")))
}

/// GETs a URL and parses its JSON body; `None` on any failure (for polling).
pub async fn get_json(http: &reqwest::Client, url: &str) -> Option<serde_json::Value> {
    http.get(url).send().await.ok()?.json().await.ok()
}

/// Every transaction summary of the ledger at `url`, in log order; `None` on any failure.
async fn ledger_transactions(http: &reqwest::Client, url: &str) -> Option<Vec<serde_json::Value>> {
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
        if lines.next() != Some("wattle.claims.v1") {
            return None;
        }
        let digests = transaction["reading_digests"].as_array()?;
        let lines: Vec<&str> = lines.collect();
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
