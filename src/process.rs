//! Child processes for the benchmarks and the integration tests (`tests/support.rs` includes this
//! file with `#[path]`, so both use one copy): free ports, polling with a deadline, a process that
//! logs to a file and is killed by its own PID when dropped, and mosquitto on a free port.
// The tests use parts of this module that the binary does not.
#![allow(dead_code)]

use std::fs::File;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long `Process::ready_address` waits for a ready file.
const READY_WAIT_DEFAULT: Duration = Duration::from_secs(60);
/// How long mosquitto may take to listen on its port.
const MOSQUITTO_LISTEN_MAX: Duration = Duration::from_secs(10);
/// Ports mosquitto tries before giving up (a free port may be taken before it binds it).
const MOSQUITTO_PORT_ATTEMPTS: u32 = 5;
/// Lines of a process's log that failure messages quote.
const LOG_TAIL_LINES: usize = 30;

/// A free TCP port on 127.0.0.1 (for processes that need a concrete port).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
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
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// The process id, as `/proc` and `kill` name it.
    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Fails, with the end of its log, if the process has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited with {status}; its log ends:\n{}", self.name, self.log_tail());
        }
        Ok(())
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
        self.ready_address_within(ready_file, READY_WAIT_DEFAULT).await
    }

    /// [`Process::ready_address`] with a limit of its own.
    pub async fn ready_address_within(&mut self, ready_file: &Path, limit: Duration) -> anyhow::Result<String> {
        let name = self.name.clone();
        let outcome = poll_until(&format!("{name} ready"), limit, || {
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
        for attempt in 0..MOSQUITTO_PORT_ATTEMPTS {
            let port = free_port()?;
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
        for _ in 0..MOSQUITTO_PORT_ATTEMPTS {
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

    /// The broker's process id.
    pub fn pid(&self) -> String {
        self.process.pid()
    }

    /// Fails if the broker has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        self.process.ensure_running()
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
        let listening = poll_until(&format!("mosquitto listening on {port}"), MOSQUITTO_LISTEN_MAX, || {
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
