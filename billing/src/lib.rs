//! The billing service: shows each customer the running bill, computed by the ledger's settlement
//! and rounded once here for presentation. It reads the ledger's client API and never writes
//! settlement state.

pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use domain::api::{CustomerAccount, ErrorBody};
use domain::ids::CustomerId;
use domain::money::{Currency, Money};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Timeout of one request to the ledger.
pub const LEDGER_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How to run billing.
#[derive(Debug, Clone)]
pub struct BillingConfig {
    pub listen: SocketAddr,
    /// Base URL of the ledger's client API.
    pub ledger_url: String,
    /// Billing's key, registered with the ledger as a reader (`register_reader`): every read of
    /// a customer's data is signed with it (`domain::client_read`). `None`: unsigned reads, which
    /// only a development node (no peer authentication) serves.
    pub ledger_key: Option<ed25519_dalek::SigningKey>,
}

/// The running bill of one customer (`GET /v1/customers/{id}/bill`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bill {
    pub customer_id: CustomerId,
    /// Energy imported so far, kWh, exact.
    #[serde(with = "rust_decimal::serde::str")]
    pub energy_import_kwh: Decimal,
    /// The amount so far, rounded once, half away from zero, to the currency's minor unit.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    pub currency: Currency,
    pub intervals_settled: u64,
    /// Time of the last settled transaction (leader-stamped), RFC 3339 UTC.
    pub as_of: String,
    /// The ledger index this bill reflects.
    pub ledger_index: u64,
}

impl Bill {
    /// Presents a committed account as a bill.
    pub fn from_account(account: &CustomerAccount) -> Bill {
        let money = Money { amount: account.amount, currency: account.currency };
        Bill {
            customer_id: account.customer_id.clone(),
            energy_import_kwh: Decimal::from(account.energy_import_wh) / Decimal::from(1000u32),
            amount: money.round_to_minor_unit().amount,
            currency: account.currency,
            intervals_settled: account.intervals_settled,
            as_of: chrono::DateTime::from_timestamp_millis(account.as_of_ms)
                .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default(),
            ledger_index: account.applied_index,
        }
    }
}

#[derive(Clone)]
struct Shared {
    config: BillingConfig,
    http: reqwest::Client,
    metrics: Arc<metrics::Metrics>,
}

/// A running billing service.
pub struct BillingHandle {
    pub address: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for BillingHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillingHandle").field("address", &self.address).finish()
    }
}

impl BillingHandle {
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let _ = (&mut self.server).await;
    }
}

/// Starts serving.
pub async fn start(config: BillingConfig) -> anyhow::Result<BillingHandle> {
    let shared = Shared {
        config: config.clone(),
        http: reqwest::Client::builder().timeout(LEDGER_REQUEST_TIMEOUT).build()?,
        metrics: Arc::default(),
    };
    let router = Router::new()
        .route("/v1/customers/{customer_id}/bill", get(bill))
        .route("/v1/customers/{customer_id}/statements", get(statements))
        .route("/v1/customers/{customer_id}/intervals", get(intervals))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(shared);
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let address = listener.local_addr()?;
    let (shutdown_sender, shutdown_receiver) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = shutdown_receiver.await;
        });
        if let Err(error) = serve.await {
            tracing::error!(%error, "billing server stopped");
        }
    });
    tracing::info!(%address, "billing serving");
    Ok(BillingHandle { address, shutdown: Some(shutdown_sender), server })
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(ErrorBody { code: code.to_string(), message: message.into() })).into_response()
}

/// GETs `path` from the ledger and parses it as `T`; an error is the answer to give the caller
/// (a `Response` as the error: it is returned at once, never carried around).
#[allow(clippy::result_large_err)]
async fn from_ledger<T: serde::de::DeserializeOwned>(
    shared: &Shared,
    customer_id: &CustomerId,
    path: &str,
) -> Result<T, Response> {
    let url = format!("{}{path}", shared.config.ledger_url);
    let started = std::time::Instant::now();
    let mut request = shared.http.get(url);
    if let Some(key) = &shared.config.ledger_key {
        let now_ms = domain::clock::wall_clock_now().0;
        for (name, value) in domain::client_read::sign_request(key, "GET", path, now_ms) {
            request = request.header(name, value);
        }
    }
    let response = request.send().await;
    shared.metrics.ledger_latency_seconds.observe(started.elapsed().as_secs_f64());
    let response = match response {
        Ok(response) => response,
        Err(reason) => {
            shared.metrics.ledger_error("unreachable");
            tracing::warn!(%reason, "ledger unreachable");
            return Err(error(StatusCode::BAD_GATEWAY, "ledger_unavailable", "the ledger did not answer; retry"));
        }
    };
    match response.status() {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => {
            return Err(error(StatusCode::NOT_FOUND, "unknown_customer", format!("no customer {customer_id}")))
        }
        status @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
            shared.metrics.ledger_error("refused");
            let body = response.text().await.unwrap_or_default();
            tracing::error!(%status, body, "the ledger refused billing's read: is billing's key registered as a reader?");
            return Err(error(StatusCode::BAD_GATEWAY, "ledger_refused", "the ledger refused billing's read"));
        }
        status => {
            shared.metrics.ledger_error("status");
            return Err(error(StatusCode::BAD_GATEWAY, "ledger_error", format!("the ledger answered {status}")));
        }
    }
    response.json::<T>().await.map_err(|reason| {
        shared.metrics.ledger_error("unparsable");
        tracing::error!(%reason, "ledger answer did not parse");
        error(StatusCode::BAD_GATEWAY, "ledger_error", "the ledger's answer did not parse")
    })
}

#[allow(clippy::result_large_err)]
fn customer(customer_id: String) -> Result<CustomerId, Response> {
    CustomerId::new(customer_id).map_err(|reason| error(StatusCode::BAD_REQUEST, "bad_customer_id", reason.to_string()))
}

/// The running total of the customer's interval charges, rounded once.
#[tracing::instrument(skip(shared))]
async fn bill(State(shared): State<Shared>, Path(customer_id): Path<String>) -> Response {
    let customer_id = match customer(customer_id) {
        Ok(id) => id,
        Err(response) => return response,
    };
    match from_ledger::<CustomerAccount>(&shared, &customer_id, &format!("/v1/customers/{customer_id}/account")).await {
        Ok(account) => {
            shared.metrics.bills_served.inc();
            Json(Bill::from_account(&account)).into_response()
        }
        Err(response) => response,
    }
}

/// The customer's statements as the ledger settled them: the open period (what its close would
/// state now: lines rounded once, VAT, total, completeness) and the closed ones.
#[tracing::instrument(skip(shared))]
async fn statements(State(shared): State<Shared>, Path(customer_id): Path<String>) -> Response {
    let customer_id = match customer(customer_id) {
        Ok(id) => id,
        Err(response) => return response,
    };
    let path = format!("/v1/customers/{customer_id}/statements");
    match from_ledger::<domain::api::CustomerStatements>(&shared, &customer_id, &path).await {
        Ok(statements) => Json(statements).into_response(),
        Err(response) => response,
    }
}

/// Usage and cost per 15-minute interval (`from`, `to`: UTC seconds, passed to the ledger).
#[tracing::instrument(skip(shared))]
async fn intervals(
    State(shared): State<Shared>,
    Path(customer_id): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let customer_id = match customer(customer_id) {
        Ok(id) => id,
        Err(response) => return response,
    };
    let query = query.filter(|query| query.bytes().all(|b| b.is_ascii_alphanumeric() || b"=&-".contains(&b)));
    let path = format!("/v1/customers/{customer_id}/intervals?{}", query.unwrap_or_default());
    match from_ledger::<Vec<domain::api::CustomerInterval>>(&shared, &customer_id, &path).await {
        Ok(intervals) => Json(intervals).into_response(),
        Err(response) => response,
    }
}

async fn healthz(State(shared): State<Shared>) -> Response {
    match shared.http.get(format!("{}/healthz", shared.config.ledger_url)).send().await {
        Ok(response) if response.status().is_success() => {
            (StatusCode::OK, Json(serde_json::json!({"ledger": "ok"}))).into_response()
        }
        _ => error(StatusCode::SERVICE_UNAVAILABLE, "ledger_unavailable", "the ledger is not healthy"),
    }
}

async fn metrics(State(shared): State<Shared>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, domain::api::OPENMETRICS_CONTENT_TYPE)], shared.metrics.render())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn bill_rounds_once_half_away_from_zero() {
        let account = CustomerAccount {
            customer_id: CustomerId::new("C1").expect("id"),
            currency: Currency::new("EUR").expect("EUR"),
            energy_import_wh: 250_000,
            energy_export_wh: 0,
            amount: Decimal::from_str("5.125").expect("decimal"),
            intervals_settled: 3,
            as_of_ms: 0,
            applied_index: 7,
        };
        let bill = Bill::from_account(&account);
        assert_eq!(bill.amount, Decimal::from_str("5.13").expect("decimal"));
        assert_eq!(bill.energy_import_kwh, Decimal::from(250));
    }
}
