//! Billing's HTTP API (axum, JSON, under `/v1`): served from the read model, every answer with the
//! ledger position it reflects (`ledger_index` in the body and the `Wattle-Ledger-Index` header).
//! Errors are `{"code", "message"}` with 400/404/422/502/503.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use domain::api::ErrorBody;
use domain::ids::CustomerId;
use serde::Deserialize;

use crate::feed::FeedHandle;
use crate::ledger_client::LedgerClient;
use crate::metrics::Metrics;
use crate::read_model::{Position, ReadModel};
use crate::usage::{UsagePage, UsageQuery};

/// Header carrying the ledger index an answer reflects.
pub const LEDGER_INDEX_HEADER: &str = "wattle-ledger-index";

#[derive(Clone)]
pub struct Shared {
    pub model: ReadModel,
    pub ledger: LedgerClient,
    pub feed: FeedHandle,
    pub metrics: Arc<Metrics>,
}

pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/v1/customers/{customer_id}/bill", get(bill))
        .route("/v1/customers/{customer_id}/usage", get(usage))
        .route("/v1/customers/{customer_id}/invoices", get(customer_invoices))
        .route("/v1/invoices/{number}", get(invoice))
        .route("/v1/invoices/{number}/receipt", get(invoice_receipt))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

/// An error answer, counted by code.
pub struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Refusal { status, code, message: message.into() }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { code: self.code.to_string(), message: self.message })).into_response()
    }
}

fn internal(error: anyhow::Error) -> Refusal {
    tracing::error!(error = format!("{error:#}"), "billing's database failed a read");
    Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable", "billing's database failed; retry")
}

fn refuse(shared: &Shared, refusal: Refusal) -> Response {
    shared.metrics.refused(refusal.code);
    refusal.into_response()
}

/// A query string that does not parse (a number that is not one, say) is a 422 with the reason,
/// in the same JSON body as every other refusal.
fn checked<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, Refusal> {
    query
        .map(|Query(query)| query)
        .map_err(|rejection| Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_query", rejection.body_text()))
}

fn with_position(mut response: Response, position: Position) -> Response {
    if let Ok(value) = HeaderValue::from_str(&position.ledger_index.to_string()) {
        response.headers_mut().insert(LEDGER_INDEX_HEADER, value);
    }
    response
}

/// Checks the id, that the ledger still serves billing, and that the model knows the customer.
async fn known_customer(shared: &Shared, customer_id: String) -> Result<(CustomerId, Position), Refusal> {
    let customer = CustomerId::new(customer_id)
        .map_err(|reason| Refusal::new(StatusCode::BAD_REQUEST, "bad_customer_id", reason.to_string()))?;
    let status = shared.feed.status();
    if status.state == "refused" {
        return Err(Refusal::new(
            StatusCode::BAD_GATEWAY,
            "ledger_refused",
            "the ledger no longer serves billing's reads (is its reader key revoked?); nothing is shown",
        ));
    }
    let position = shared.model.position().await.map_err(internal)?;
    if shared.model.account(customer.as_str()).await.map_err(internal)?.is_none() {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "unknown_customer",
            format!("no customer {customer} as of ledger index {}", position.ledger_index),
        ));
    }
    Ok((customer, position))
}

/// `GET /v1/customers/{id}/bill`: the running bill of the open period.
#[tracing::instrument(skip(shared))]
async fn bill(State(shared): State<Shared>, Path(customer_id): Path<String>) -> Response {
    let result = async {
        let (customer, position) = known_customer(&shared, customer_id).await?;
        let bill = match shared.model.open_statement(customer.as_str()).await.map_err(internal)? {
            Some(statement) => {
                let intervals = shared
                    .model
                    .intervals(customer.as_str(), statement.period.start.0, statement.period.end.0, 3_000)
                    .await
                    .map_err(internal)?;
                crate::bill::from_statement(&statement, &intervals, position)
            }
            None => {
                let account = shared.model.account(customer.as_str()).await.map_err(internal)?;
                crate::bill::from_account(&account.expect("known_customer checked it"), position)
            }
        };
        Ok::<_, Refusal>((bill, position))
    }
    .await;
    match result {
        Ok((bill, position)) => {
            shared.metrics.bills_served.inc();
            with_position(Json(bill).into_response(), position)
        }
        Err(refusal) => refuse(&shared, refusal),
    }
}

/// `GET /v1/customers/{id}/usage?from=&to=&group_by=&page_size=&cursor=&format=csv`.
#[tracing::instrument(skip(shared))]
async fn usage(
    State(shared): State<Shared>,
    Path(customer_id): Path<String>,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Response {
    let query = match checked(query) {
        Ok(query) => query,
        Err(refusal) => return refuse(&shared, refusal),
    };
    let result = async {
        let (customer, position) = known_customer(&shared, customer_id).await?;
        let range = crate::usage::check(&query)
            .map_err(|error| Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, error.code(), error.to_string()))?;
        let account = shared.model.account(customer.as_str()).await.map_err(internal)?.expect("known customer");
        let rows = shared
            .model
            .intervals(customer.as_str(), range.read_from, range.to, crate::usage::INTERVALS_PER_PAGE_MAX)
            .await
            .map_err(internal)?;
        let (groups, next_cursor) = crate::usage::group(&rows, &range, account.currency.minor_unit_digits());
        let page = UsagePage {
            customer_id: customer.to_string(),
            from: range.from,
            to: range.to,
            group_by: range.group_by,
            currency: account.currency.to_string(),
            groups,
            next_cursor,
            ledger_index: position.ledger_index,
            as_of: chrono::DateTime::from_timestamp_millis(position.as_of_ms)
                .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default(),
        };
        Ok::<_, Refusal>((page, position))
    }
    .await;
    match result {
        Ok((page, position)) if query.format.as_deref() == Some("csv") => {
            let mut csv =
                String::from("key,start,local_start,intervals,import_kwh,export_kwh,cost,cost_unrounded,currency\n");
            for group in &page.groups {
                csv.push_str(&format!(
                    "{},{},{},{},{},{},{},{},{}\n",
                    group.key,
                    group.start,
                    group.local_start,
                    group.intervals,
                    group.import_kwh,
                    group.export_kwh,
                    group.cost,
                    group.cost_unrounded,
                    page.currency
                ));
            }
            with_position(
                ([(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response(),
                position,
            )
        }
        Ok((page, position)) => with_position(Json(page).into_response(), position),
        Err(refusal) => refuse(&shared, refusal),
    }
}

/// `GET /v1/customers/{id}/invoices`.
async fn customer_invoices(State(shared): State<Shared>, Path(customer_id): Path<String>) -> Response {
    let result = async {
        let (customer, position) = known_customer(&shared, customer_id).await?;
        let rows = shared.model.invoices_of(customer.as_str()).await.map_err(internal)?;
        let invoices: Vec<_> = rows.iter().map(crate::invoices::InvoiceSummary::of).collect();
        Ok::<_, Refusal>((invoices, position))
    }
    .await;
    match result {
        Ok((invoices, position)) => with_position(
            Json(serde_json::json!({ "invoices": invoices, "ledger_index": position.ledger_index })).into_response(),
            position,
        ),
        Err(refusal) => refuse(&shared, refusal),
    }
}

#[derive(Debug, Deserialize)]
struct FormatQuery {
    format: Option<String>,
}

async fn invoice_row(shared: &Shared, number: &str) -> Result<crate::read_model::InvoiceRow, Refusal> {
    if number.len() > 200 {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_invoice_number",
            "an invoice number is at most 200 bytes",
        ));
    }
    shared
        .model
        .invoice(number)
        .await
        .map_err(internal)?
        .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, "unknown_invoice", format!("no invoice {number}")))
}

/// `GET /v1/invoices/{number}`: the invoice document, byte for byte as issued (`?format=csv`:
/// its lines as CSV).
async fn invoice(
    State(shared): State<Shared>,
    Path(number): Path<String>,
    query: Result<Query<FormatQuery>, QueryRejection>,
) -> Response {
    let query = match checked(query) {
        Ok(query) => query,
        Err(refusal) => return refuse(&shared, refusal),
    };
    match invoice_row(&shared, &number).await {
        Ok(row) if query.format.as_deref() == Some("csv") => {
            match domain::settle::InvoiceDocument::parse(row.document.as_bytes()) {
                Ok(document) => {
                    ([(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")], crate::invoices::csv(&document))
                        .into_response()
                }
                Err(error) => {
                    internal(anyhow::anyhow!("stored invoice {number} does not parse: {error}")).into_response()
                }
            }
        }
        Ok(row) => ([(axum::http::header::CONTENT_TYPE, "application/json")], row.document).into_response(),
        Err(refusal) => refuse(&shared, refusal),
    }
}

/// `GET /v1/invoices/{number}/receipt[?format=json]`: the ledger's receipt of the issuing
/// transaction, passed through as the ledger gave it.
async fn invoice_receipt(
    State(shared): State<Shared>,
    Path(number): Path<String>,
    query: Result<Query<FormatQuery>, QueryRejection>,
) -> Response {
    let query = match checked(query) {
        Ok(query) => query,
        Err(refusal) => return refuse(&shared, refusal),
    };
    let row = match invoice_row(&shared, &number).await {
        Ok(row) => row,
        Err(refusal) => return refuse(&shared, refusal),
    };
    let json = query.format.as_deref() == Some("json");
    let path = format!("/v1/receipts/{}{}", row.tx_id, if json { "?format=json" } else { "" });
    match shared.ledger.get_bytes(&path, std::time::Duration::ZERO).await {
        Ok(bytes) => {
            let content_type = if json { "application/json" } else { "application/octet-stream" };
            ([(axum::http::header::CONTENT_TYPE, content_type)], bytes).into_response()
        }
        Err(error) => refuse(
            &shared,
            Refusal::new(
                StatusCode::BAD_GATEWAY,
                "ledger_unavailable",
                format!("the receipt could not be fetched: {error}"),
            ),
        ),
    }
}

/// `GET /healthz`: 200 while the feed follows the ledger, with how far the model is behind it.
async fn healthz(State(shared): State<Shared>) -> Response {
    let status = shared.feed.status();
    let behind = status.ledger_signed_index.saturating_sub(status.ledger_index);
    let body = serde_json::json!({
        "feed": status.state,
        "message": status.message,
        "ledger_index": status.ledger_index,
        "ledger_signed_index": status.ledger_signed_index,
        "entries_behind": behind,
        "as_of_ms": status.as_of_ms,
    });
    let code = if status.state == "following" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

async fn metrics(State(shared): State<Shared>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, domain::api::OPENMETRICS_CONTENT_TYPE)], shared.metrics.render())
        .into_response()
}
