//! Helpers for running real processes in tests: free ports, mosquitto, `wattle` subcommands,
//! polling with deadlines (never sleeping to wait for something).

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

impl Process {
    /// Starts a process with stdout and stderr going to `dir/name.log`.
    pub fn spawn(name: &str, dir: &Path, mut command: Command) -> anyhow::Result<Process> {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
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
        let log = dir.join(format!("{name}.log"));
        let child = command
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
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

/// A mosquitto broker on a free port of 127.0.0.1 with the given extra configuration lines.
pub struct Mosquitto {
    pub port: u16,
    _process: Process,
}

impl Mosquitto {
    pub async fn start(dir: &Path, extra_config: &str) -> anyhow::Result<Mosquitto> {
        let mut last_error = None;
        // The port is free when chosen but may be taken before mosquitto binds it: retry.
        for attempt in 0..5 {
            let port = free_port();
            let config = dir.join(format!("mosquitto-{attempt}.conf"));
            std::fs::write(&config, format!("listener {port} 127.0.0.1\nallow_anonymous true\n{extra_config}\n"))?;
            let mut command = Command::new("mosquitto");
            command.arg("-c").arg(&config);
            let mut process = Process::spawn(&format!("mosquitto-{attempt}"), dir, command)?;
            let listening = poll_until(&format!("mosquitto listening on {port}"), Duration::from_secs(10), || {
                let outcome = if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    Some(true)
                } else {
                    process.try_wait().map(|_| false)
                };
                async move { outcome }
            })
            .await;
            match listening {
                Ok(true) => return Ok(Mosquitto { port, _process: process }),
                Ok(false) => last_error = Some(anyhow::anyhow!("mosquitto exited:\n{}", process.log_tail())),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("mosquitto did not start")))
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

/// Starts `wattle gateway` against a broker and ledger nodes; returns it once subscribed.
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
    (meters, seed, intervals): (u32, u64, u64),
    epoch: &str,
    clock: &[String],
) -> anyhow::Result<Process> {
    let mut command = wattle();
    command
        .args(["sim", "--meters", &meters.to_string(), "--seed", &seed.to_string()])
        .args(["--intervals", &intervals.to_string(), "--epoch", epoch])
        .args(["--broker", &format!("127.0.0.1:{broker_port}")])
        .arg("--truth-out")
        .arg(dir.join("truth.bin"))
        .args(clock);
    Process::spawn("sim", dir, command)
}

/// Starts one bootstrapped ledger node in `dir` (after `configure_ledger`), loading the admin
/// configuration; returns it and its URL once it serves.
pub async fn start_single_ledger(dir: &Path, clock: &[String]) -> anyhow::Result<(Process, String)> {
    let port = free_port();
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

/// A counter or gauge from a `/metrics` page (`name` with its labels, exactly as printed).
pub async fn metric(http: &reqwest::Client, url: &str, name: &str) -> Option<u64> {
    let text = http.get(format!("{url}/metrics")).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|line| line.strip_prefix(&format!("{name} ")).and_then(|value| value.parse().ok()))
}

/// The digest of every reading the ledger holds, in log order (one entry per occurrence).
pub async fn ledger_reading_digests(http: &reqwest::Client, ledger_url: &str) -> anyhow::Result<Vec<String>> {
    let mut digests = Vec::new();
    let mut from = 1u64;
    loop {
        let page: serde_json::Value =
            http.get(format!("{ledger_url}/v1/transactions?from={from}")).send().await?.json().await?;
        let transactions = page["transactions"].as_array().context("transactions")?;
        if transactions.is_empty() {
            return Ok(digests);
        }
        for transaction in transactions {
            for digest in transaction["reading_digests"].as_array().context("digests")? {
                digests.push(digest.as_str().context("digest")?.to_string());
            }
        }
        from = page["next"].as_u64().context("next")?;
    }
}

/// GETs a URL and parses its JSON body; `None` on any failure (for polling).
pub async fn get_json(http: &reqwest::Client, url: &str) -> Option<serde_json::Value> {
    http.get(url).send().await.ok()?.json().await.ok()
}
