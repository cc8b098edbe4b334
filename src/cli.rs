//! Command-line options shared by the subcommands.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use domain::clock::{wall_clock_now, Clock};
use domain::ids::UnixMillis;

/// The one clock option every process takes (DESIGN.md, "one clock").
#[derive(Debug, Clone, Args)]
pub struct ClockArgs {
    /// Run on simulated time starting at this instant (RFC 3339, e.g. 2026-01-05T00:00:00Z).
    /// Without it, processes run on real time.
    #[arg(long, env = "WATTLE_CLOCK_START")]
    pub clock_start: Option<chrono::DateTime<chrono::Utc>>,
    /// Speed of simulated time: simulated seconds per real second.
    #[arg(long, env = "WATTLE_CLOCK_SPEED", default_value_t = 1)]
    pub clock_speed: u32,
    /// Real instant (Unix ms) at which simulated time equals --clock-start. Give every process
    /// of one run the same value so they agree on "now"; defaults to this process's start.
    #[arg(long, env = "WATTLE_CLOCK_ANCHOR_MS")]
    pub clock_anchor_ms: Option<i64>,
}

impl ClockArgs {
    pub fn clock(&self) -> Clock {
        match self.clock_start {
            None => Clock::Real,
            Some(start) => Clock::Simulated {
                start: UnixMillis(start.timestamp_millis()),
                anchor: self.clock_anchor_ms.map_or_else(wall_clock_now, UnixMillis),
                speed: self.clock_speed.max(1),
            },
        }
    }
}

/// Writes `{"address": ...}` atomically, so a supervisor or test learns the bound address.
pub fn write_ready_file(path: Option<&Path>, address: std::net::SocketAddr) -> anyhow::Result<()> {
    let Some(path) = path else { return Ok(()) };
    let temporary: PathBuf = path.with_extension("tmp");
    std::fs::write(&temporary, serde_json::json!({ "address": address.to_string() }).to_string())
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("writing {}", path.display()))
}

/// The environment variable holding the ledger's service public key (64 hex characters): every
/// command that talks to a ledger over `https://` trusts only the nodes it endorses.
pub const LEDGER_SERVICE_KEY_ENV: &str = "WATTLE_LEDGER_SERVICE_KEY";

/// Parses a service public key argument (64 hex characters).
pub fn parse_service_key(text: &str) -> Result<[u8; 32], String> {
    domain::tls::parse_service_key(text)
}

/// An HTTP client for the ledger node at `url`: over `https://` it trusts only nodes the service
/// key in [`LEDGER_SERVICE_KEY_ENV`] (else `fallback`) endorses (`domain::tls`); without either
/// an `https://` URL is refused with the reason.
pub fn ledger_client(
    url: &str,
    fallback: Option<[u8; 32]>,
    timeout: std::time::Duration,
) -> anyhow::Result<reqwest::Client> {
    let service_key = match std::env::var(LEDGER_SERVICE_KEY_ENV) {
        Ok(text) => {
            Some(parse_service_key(&text).map_err(|error| anyhow::anyhow!("{LEDGER_SERVICE_KEY_ENV}: {error}"))?)
        }
        Err(std::env::VarError::NotPresent) => fallback,
        Err(error) => anyhow::bail!("{LEDGER_SERVICE_KEY_ENV}: {error}"),
    };
    if let (None, Some(missing)) = (service_key, domain::tls::missing_service_key(url, LEDGER_SERVICE_KEY_ENV)) {
        anyhow::bail!(missing);
    }
    ledger_client_trusting(service_key, timeout)
}

/// An HTTP client that reaches `https://` ledger nodes only if `service_key` endorses them.
pub fn ledger_client_trusting(
    service_key: Option<[u8; 32]>,
    timeout: std::time::Duration,
) -> anyhow::Result<reqwest::Client> {
    let builder = reqwest::Client::builder().timeout(timeout);
    let builder = match service_key {
        None => builder,
        Some(key) => builder.use_preconfigured_tls(domain::tls::client_config(key, None)?),
    };
    Ok(builder.build()?)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// Splits `host:port`.
pub fn parse_host_port(text: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = text.rsplit_once(':').with_context(|| format!("{text:?} is not host:port"))?;
    Ok((host.to_string(), port.parse().with_context(|| format!("{port:?} is not a port"))?))
}
