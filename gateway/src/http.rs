//! The gateway's operations endpoints: `/healthz`, `/metrics` (open), `/v1/quarantine` and
//! `POST /v1/quarantine/release` (an operator's token, `access`; docs/gateway.md).

use std::sync::atomic::Ordering;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use crate::access::Operator;
use crate::limits::*;
use crate::Shared;

/// Every error the operations API answers: a status and a JSON body with a stable code and a
/// reason for people, `{"code": "...", "message": "..."}`; never internals.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Refusal { status, code, message: message.into() }
    }

    /// The stable error code.
    pub(crate) fn code(&self) -> &'static str {
        self.code
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({"code": self.code, "message": self.message}))).into_response()
    }
}

/// `/metrics` with the OpenMetrics content type (as billing's): the exposition is OpenMetrics
/// text, and Prometheus then reads the counters' `_total` samples under their `# TYPE` names.
pub(crate) async fn metrics(State(shared): State<Shared>) -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, domain::api::OPENMETRICS_CONTENT_TYPE)], crate::metrics::render(&shared))
}

pub(crate) async fn healthz(State(shared): State<Shared>) -> impl IntoResponse {
    let connected = shared.metrics.mqtt_connected.load(Ordering::Relaxed);
    let subscribed = shared.metrics.mqtt_subscribed.load(Ordering::Relaxed);
    let body = serde_json::json!({
        "mqtt_connected": connected,
        "mqtt_subscribed": subscribed,
        "outbox_depth": shared.store.outbox_depth(),
        "retry_depth": shared.store.retry_depth(),
        "over_disk_budget": shared.metrics.over_disk_budget.load(Ordering::Relaxed),
        "modbus_devices": shared.config.modbus.len(),
        "registry_meters": shared.registry.lock().expect("registry lock is never poisoned").meters.len(),
    });
    let status = if connected && subscribed { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body))
}

#[derive(Debug, Deserialize)]
pub(crate) struct QuarantineQuery {
    #[serde(default)]
    from: u64,
    limit: Option<usize>,
}

pub(crate) async fn list_quarantine(
    operator: Operator,
    State(shared): State<Shared>,
    Query(query): Query<QuarantineQuery>,
) -> Result<Response, Refusal> {
    let limit = query.limit.unwrap_or(QUARANTINE_PAGE_MAX).clamp(1, QUARANTINE_PAGE_MAX);
    tracing::info!(target: "gateway::access", token = %operator.token_id, from = query.from, limit, "quarantine listed");
    match shared.store.quarantine(query.from, limit) {
        Ok(entries) => Ok((StatusCode::OK, Json(serde_json::json!({ "entries": entries }))).into_response()),
        Err(error) => {
            tracing::error!(%error, "reading the quarantine failed");
            Err(Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", "quarantine unreadable"))
        }
    }
}

/// Re-submits held and unverified entries matching the filter (JSON body) through the checks.
pub(crate) async fn release_quarantine(
    operator: Operator,
    State(shared): State<Shared>,
    Json(filter): Json<crate::release::ReleaseFilter>,
) -> Result<Response, Refusal> {
    tracing::info!(target: "gateway::access", token = %operator.token_id, ?filter, "quarantine release");
    match crate::release::release(&shared, &filter, |_| true).await {
        Ok(report) => Ok((StatusCode::OK, Json(serde_json::json!(report))).into_response()),
        Err(error) => {
            tracing::error!(%error, "releasing quarantine entries failed");
            Err(Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "release_failed", "quarantine release failed"))
        }
    }
}
