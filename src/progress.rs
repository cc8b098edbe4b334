//! The sandbox's one progress line: simulated time, what the ledger has applied and signed, the
//! gateway's outbox, and the first customer's running bill. On a terminal it is redrawn in place
//! every second; otherwise (CI, a pipe) a line is printed every ten seconds. Logs go to a file.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use domain::clock::Clock;

/// How often the line is redrawn on a terminal.
const REDRAW_PERIOD: Duration = Duration::from_secs(1);
/// How often a line is printed when standard output is not a terminal.
const PRINT_PERIOD: Duration = Duration::from_secs(10);
/// How long one status request may take before the line shows what it has.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(800);

/// Where the progress line reads its figures (each service's public HTTP API).
#[derive(Debug, Clone)]
pub struct Sources {
    pub clock: Clock,
    pub ledger_url: String,
    /// Trust for an `https://` ledger (the service public key).
    pub ledger_service_key: Option<[u8; 32]>,
    pub gateway_url: String,
    pub billing_url: String,
    pub customer: String,
    /// The customer's bearer token for billing.
    pub customer_token: String,
}

/// Redraws the progress line until the task is aborted.
pub async fn report(sources: Sources) {
    let terminal = std::io::stdout().is_terminal();
    // One client for all three: its trust in the service's nodes applies to https:// only.
    let http = crate::cli::ledger_client_trusting(sources.ledger_service_key, REQUEST_TIMEOUT).unwrap_or_default();
    let mut ticks = tokio::time::interval(if terminal { REDRAW_PERIOD } else { PRINT_PERIOD });
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let line = line(&http, &sources).await;
        let mut out = std::io::stdout().lock();
        // A failed write to our own terminal is not worth stopping the sandbox for.
        let _ = if terminal { write!(out, "\r\x1b[K{line}") } else { writeln!(out, "{line}") };
        let _ = out.flush();
    }
}

/// Ends the progress line so that what follows starts on a line of its own.
pub fn finish() {
    if std::io::stdout().is_terminal() {
        println!();
    }
}

async fn json(http: &reqwest::Client, url: String) -> Option<serde_json::Value> {
    http.get(url).send().await.ok()?.json().await.ok()
}

async fn json_as(http: &reqwest::Client, url: String, token: &str) -> Option<serde_json::Value> {
    http.get(url).bearer_auth(token).send().await.ok()?.json().await.ok()
}

async fn line(http: &reqwest::Client, sources: &Sources) -> String {
    let now = chrono::DateTime::from_timestamp_millis(sources.clock.now().0)
        .map(|time| time.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "?".into());
    let (ledger, gateway, bill) = tokio::join!(
        json(http, format!("{}/healthz", sources.ledger_url)),
        json(http, format!("{}/healthz", sources.gateway_url)),
        json_as(
            http,
            format!("{}/v1/customers/{}/bill", sources.billing_url, sources.customer),
            &sources.customer_token
        ),
    );
    let field = |value: &Option<serde_json::Value>, name: &str| {
        value.as_ref().and_then(|value| value.get(name)).map(|value| value.to_string()).unwrap_or_else(|| "?".into())
    };
    let amount = bill
        .as_ref()
        .and_then(|bill| Some(format!("{} {}", bill.get("amount")?.as_str()?, bill.get("currency")?.as_str()?)))
        .unwrap_or_else(|| "?".into());
    format!(
        "{now} simulated | ledger applied {} signed {} | gateway outbox {} | {}'s bill {amount} over {} intervals",
        field(&ledger, "applied_index"),
        field(&ledger, "signed_index"),
        field(&gateway, "outbox_depth"),
        sources.customer,
        field(&bill, "intervals_settled"),
    )
}
