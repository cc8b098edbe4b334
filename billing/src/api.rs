//! Billing's HTTP API (axum, JSON, under `/v1`): served from the read model, every answer with the
//! ledger position it reflects (`ledger_index` in the body and the `Wattle-Ledger-Index` header).
//! Errors are `{"code", "message"}` with 400/401/403/404/413/422/429/502/503.
//!
//! Who may call what (`auth.rs`): customer endpoints need a bearer token, a customer's for that
//! customer only or an operator's; token endpoints need an operator token; `/healthz` and
//! `/metrics` are open (they name no customer).

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use domain::api::ErrorBody;
use domain::ids::CustomerId;

use crate::auth::Gate;
use crate::feed::FeedHandle;
use crate::ledger_client::LedgerClient;
use crate::metrics::Metrics;
use crate::read_model::{Position, ReadModel};
use crate::usage::{UsagePage, UsageQuery};

/// Header carrying the ledger index an answer reflects.
pub const LEDGER_INDEX_HEADER: &str = "wattle-ledger-index";
/// Header carrying the next page's cursor where the body has no room for it (Green Button XML).
pub const NEXT_CURSOR_HEADER: &str = "wattle-next-cursor";

#[derive(Clone)]
pub struct Shared {
    pub model: ReadModel,
    pub ledger: LedgerClient,
    pub feed: FeedHandle,
    pub metrics: Arc<Metrics>,
    pub gate: Arc<Gate>,
    pub streams: Arc<crate::stream::Streams>,
    pub tariffs: Arc<crate::tariffs::TariffCache>,
}

/// Largest request body billing reads (`POST /v1/tokens`); larger ones are answered 413.
pub const REQUEST_BODY_BYTES_MAX: usize = 16 * 1024;

pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/v1/customers/{customer_id}/bill", get(bill))
        .route("/v1/customers/{customer_id}/bill/stream", get(crate::stream::bill_stream))
        .route("/v1/customers/{customer_id}/usage", get(usage))
        .route("/v1/customers/{customer_id}/invoices", get(crate::invoices::customer_invoices))
        .route("/v1/invoices/{number}", get(crate::invoices::invoice))
        .route("/v1/invoices/{number}/receipt", get(crate::invoices::invoice_receipt))
        .route("/v1/customers/{customer_id}/credit-notes", get(crate::invoices::customer_credit_notes))
        .route("/v1/credit-notes/{number}", get(crate::invoices::credit_note))
        .route("/v1/credit-notes/{number}/receipt", get(crate::invoices::credit_note_receipt))
        .route("/v1/tokens", get(crate::tokens_api::list_tokens).post(crate::tokens_api::issue_token))
        .route("/v1/tokens/{token_id}", delete(crate::tokens_api::revoke_token))
        .route("/v1/me", get(crate::tokens_api::me))
        .route("/v1/tariffs", get(crate::tariffs::list))
        .layer(DefaultBodyLimit::max(REQUEST_BODY_BYTES_MAX))
        .route("/openapi.json", get(openapi_json))
        .route("/healthz", get(healthz))
        .merge(crate::page::routes())
        .route("/metrics", get(metrics))
        .with_state(shared)
}

/// An error answer, counted by code.
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds to wait before retrying (`Retry-After`, with 429).
    retry_after_s: Option<u64>,
}

impl Refusal {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Refusal { status, code, message: message.into(), retry_after_s: None }
    }

    /// The same refusal with a `Retry-After` header.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }

    /// The stable error code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The reason, for people.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, Json(ErrorBody { code: self.code.to_string(), message: self.message })).into_response();
        if let Some(seconds) = self.retry_after_s {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

pub(crate) fn internal(error: anyhow::Error) -> Refusal {
    tracing::error!(error = format!("{error:#}"), "billing's database failed a read");
    Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable", "billing's database failed; retry")
}

pub(crate) fn refuse(shared: &Shared, refusal: Refusal) -> Response {
    shared.metrics.refused(refusal.code);
    refusal.into_response()
}

/// A query string that does not parse (a number that is not one, say) is a 422 with the reason,
/// in the same JSON body as every other refusal.
pub(crate) fn checked<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, Refusal> {
    query
        .map(|Query(query)| query)
        .map_err(|rejection| Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_query", rejection.body_text()))
}

/// A path parameter that does not decode (invalid percent-encoding) is a 400 with the reason.
pub(crate) fn path_param(path: Result<Path<String>, PathRejection>) -> Result<String, Refusal> {
    path.map(|Path(value)| value)
        .map_err(|rejection| Refusal::new(StatusCode::BAD_REQUEST, "bad_path", rejection.body_text()))
}

pub(crate) fn with_position(mut response: Response, position: Position) -> Response {
    if let Ok(value) = HeaderValue::from_str(&position.ledger_index.to_string()) {
        response.headers_mut().insert(LEDGER_INDEX_HEADER, value);
    }
    response
}

/// Checks the caller's token, the id, the caller's entitlement to the customer, that the ledger
/// still serves billing, and that the model knows the customer; logs the access.
pub(crate) async fn known_customer(
    shared: &Shared,
    headers: &HeaderMap,
    customer_id: String,
    what: &str,
) -> Result<(CustomerId, Position, domain::api::CustomerAccount), Refusal> {
    let caller = shared.gate.caller(headers)?;
    let (customer, position, account) = known_customer_of(shared, &caller, customer_id, what).await?;
    Ok((customer, position, account))
}

/// [`known_customer`] for a caller already admitted.
pub(crate) async fn known_customer_of(
    shared: &Shared,
    caller: &crate::auth::Caller,
    customer_id: String,
    what: &str,
) -> Result<(CustomerId, Position, domain::api::CustomerAccount), Refusal> {
    let customer = CustomerId::new(customer_id)
        .map_err(|reason| Refusal::new(StatusCode::BAD_REQUEST, "bad_customer_id", reason.to_string()))?;
    caller.check_customer(&customer)?;
    crate::auth::log_access(caller, customer.as_str(), what);
    let status = shared.feed.status();
    if status.state == "refused" {
        return Err(Refusal::new(
            StatusCode::BAD_GATEWAY,
            "ledger_refused",
            "the ledger no longer serves billing's reads (is its reader key revoked?); nothing is shown",
        ));
    }
    let position = shared.model.position().await.map_err(internal)?;
    let Some(account) = shared.model.account(customer.as_str()).await.map_err(internal)? else {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "unknown_customer",
            format!("no customer {customer} as of ledger index {}", position.ledger_index),
        ));
    };
    Ok((customer, position, account))
}

/// `GET /v1/customers/{id}/bill`: the running bill of the open period.
#[utoipa::path(
    get,
    path = "/v1/customers/{customer_id}/bill",
    tag = "customers",
    summary = "The running bill of the open period (provisional)",
    params(("customer_id" = String, Path, description = "The customer's id", example = "C0000000")),
    responses(
        crate::openapi::CustomerRefusals,
        (status = 200, description = "The running bill", body = crate::bill::Bill,
         headers(("wattle-ledger-index" = u64, description = "The ledger index the answer reflects"))),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn bill(
    State(shared): State<Shared>,
    headers: HeaderMap,
    customer_id: Result<Path<String>, PathRejection>,
) -> Response {
    let customer_id = match path_param(customer_id) {
        Ok(customer_id) => customer_id,
        Err(refusal) => return refuse(&shared, refusal),
    };
    let result = async {
        let (customer, position, account) = known_customer(&shared, &headers, customer_id, "bill").await?;
        let bill = running_bill(&shared, &customer, &account, position).await?;
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

/// The running bill of `customer` (whose account is `account`) at `position`.
pub(crate) async fn running_bill(
    shared: &Shared,
    customer: &CustomerId,
    account: &domain::api::CustomerAccount,
    position: Position,
) -> Result<crate::bill::Bill, Refusal> {
    Ok(match shared.model.open_statement(customer.as_str()).await.map_err(internal)? {
        Some(statement) => {
            let intervals = shared
                .model
                .intervals(customer.as_str(), statement.period.start.0, statement.period.end.0, 3_000)
                .await
                .map_err(internal)?;
            crate::bill::from_statement(&statement, &intervals, position)
        }
        None => crate::bill::from_account(account, position),
    })
}

/// `GET /v1/customers/{id}/usage?from=&to=&group_by=&page_size=&cursor=&format=csv`.
#[utoipa::path(
    get,
    path = "/v1/customers/{customer_id}/usage",
    tag = "customers",
    summary = "Energy and cost over [from, to), grouped by interval, hour, day or month",
    params(("customer_id" = String, Path, description = "The customer's id", example = "C0000000"), crate::usage::UsageQuery),
    responses(
        crate::openapi::CustomerRefusals,
        (status = 200, description = "A page of groups (`format=csv`: CSV; `format=xml`: Green Button (ESPI) \
                                      Atom XML of the page's intervals, the next cursor in `wattle-next-cursor`)", content(
            (crate::usage::UsagePage = "application/json"),
            (String = "text/csv"),
            (String = "application/atom+xml")
        ), headers(
            ("wattle-ledger-index" = u64, description = "The ledger index the answer reflects"),
            ("wattle-next-cursor" = String, description = "XML only: the next page's cursor, if more follow")
        )),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn usage(
    State(shared): State<Shared>,
    headers: HeaderMap,
    customer_id: Result<Path<String>, PathRejection>,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Response {
    let customer_id = match path_param(customer_id) {
        Ok(customer_id) => customer_id,
        Err(refusal) => return refuse(&shared, refusal),
    };
    let query = match checked(query) {
        Ok(query) => query,
        Err(refusal) => return refuse(&shared, refusal),
    };
    let result = async {
        let (customer, position, account) = known_customer(&shared, &headers, customer_id, "usage").await?;
        let range = crate::usage::check(&query)
            .map_err(|error| Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, error.code(), error.to_string()))?;
        if query.format.as_deref() == Some("xml") && range.group_by != crate::usage::GroupBy::Interval {
            return Err(Refusal::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "xml_needs_intervals",
                "Green Button XML carries 15-minute intervals: leave group_by out or set it to interval",
            ));
        }
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
        Ok::<_, Refusal>((page, position, rows))
    }
    .await;
    match result {
        Ok((page, position, rows)) if query.format.as_deref() == Some("xml") => {
            let starts: std::collections::BTreeSet<i64> = page.groups.iter().map(|group| group.start).collect();
            let rows: Vec<_> = rows.into_iter().filter(|row| starts.contains(&row.start_s)).collect();
            let xml = crate::green_button::render(
                &page.customer_id,
                &page.currency,
                &rows,
                (page.from, page.to),
                position.as_of_ms.div_euclid(1000),
            );
            let mut response =
                ([(axum::http::header::CONTENT_TYPE, "application/atom+xml; charset=utf-8")], xml).into_response();
            if let Some(cursor) = page.next_cursor.as_deref().and_then(|cursor| HeaderValue::from_str(cursor).ok()) {
                response.headers_mut().insert(NEXT_CURSOR_HEADER, cursor);
            }
            with_position(response, position)
        }
        Ok((page, position, _)) if query.format.as_deref() == Some("csv") => {
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
        Ok((page, position, _)) => with_position(Json(page).into_response(), position),
        Err(refusal) => refuse(&shared, refusal),
    }
}

/// `GET /healthz`: 200 while the feed follows the ledger, with how far the model is behind it.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "Whether the read model follows the ledger, and how far behind it is",
    responses(
        (status = 200, description = "Following", body = crate::openapi::Health),
        (status = 503, description = "Not following, with the reason", body = crate::openapi::Health),
    )
)]
pub(crate) async fn healthz(State(shared): State<Shared>) -> Response {
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

/// `GET /metrics`: OpenMetrics text.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Counters and histograms in the OpenMetrics text format",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String))
)]
pub(crate) async fn metrics(State(shared): State<Shared>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, domain::api::OPENMETRICS_CONTENT_TYPE)], shared.metrics.render())
        .into_response()
}

/// `GET /openapi.json`: the document generated from the handlers above (`openapi.rs`).
async fn openapi_json() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], crate::openapi::document()).into_response()
}
