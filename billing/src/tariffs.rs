//! `GET /v1/tariffs`: the tariff versions the consortium approved, as the ledger publishes them
//! (public data: ids, validity, time zone, windows and prices). The customer's page reads them to
//! show when energy is cheap and to lay out days in the tariff's time zone. Billing keeps the
//! ledger's answer for [`TARIFFS_FRESH`], so callers cannot turn billing into a load on the ledger.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::Mutex;

use crate::api::{refuse, Refusal, Shared};
use crate::ledger_client::LedgerClient;

/// How long billing serves the ledger's tariff list before reading it again.
pub const TARIFFS_FRESH: Duration = Duration::from_secs(30);

/// The ledger's tariff list, read at most once per [`TARIFFS_FRESH`].
#[derive(Debug, Default)]
pub struct TariffCache {
    cached: Mutex<Option<(Instant, Arc<Vec<u8>>)>>,
}

impl TariffCache {
    async fn get(&self, ledger: &LedgerClient) -> Result<Arc<Vec<u8>>, crate::ledger_client::LedgerError> {
        let mut cached = self.cached.lock().await;
        if let Some((read_at, body)) = cached.as_ref() {
            if read_at.elapsed() < TARIFFS_FRESH {
                return Ok(body.clone());
            }
        }
        let body = Arc::new(ledger.get_bytes("/v1/tariffs", Duration::ZERO).await?);
        *cached = Some((Instant::now(), body.clone()));
        Ok(body)
    }
}

/// `GET /v1/tariffs` (any token).
#[utoipa::path(
    get,
    path = "/v1/tariffs",
    tag = "tariffs",
    summary = "The approved tariff versions, as the ledger publishes them",
    responses(
        crate::openapi::TokenRefusals,
        (status = 200, description = "Every tariff version: `id`, `valid_from`, `valid_to`, `sha256` of its canonical \
                                      JSON and the `tariff` itself (time zone, energy windows and prices, charges, VAT)",
         body = Vec<Object>),
        (status = 502, description = "The ledger did not answer", body = crate::openapi::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(refusal) = shared.gate.caller(&headers) {
        return refuse(&shared, refusal);
    }
    match shared.tariffs.get(&shared.ledger).await {
        Ok(body) => ([(axum::http::header::CONTENT_TYPE, "application/json")], body.as_ref().clone()).into_response(),
        Err(error) => refuse(
            &shared,
            Refusal::new(
                StatusCode::BAD_GATEWAY,
                "ledger_unavailable",
                format!("the tariffs could not be read: {error}"),
            ),
        ),
    }
}
