//! Billing's token endpoints (operators only; `auth.rs` keeps the tokens): `POST /v1/tokens`
//! issues a customer's or an operator's token (the answer is the only place it appears), `GET
//! /v1/tokens` lists the records, `DELETE /v1/tokens/{id}` revokes one at once.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::ids::CustomerId;
use serde::Deserialize;

use crate::api::{internal, path_param, refuse, Refusal, Shared, REQUEST_BODY_BYTES_MAX};
use crate::auth::{Caller, Role};

/// `POST /v1/tokens` body: a customer's token (`customer_id`) or an operator's (`operator: true`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct IssueRequest {
    customer_id: Option<String>,
    #[serde(default)]
    operator: bool,
    #[serde(default)]
    label: String,
}

fn operator(shared: &Shared, headers: &HeaderMap) -> Result<Caller, Refusal> {
    let caller = shared.gate.caller(headers)?;
    caller.check_operator()?;
    Ok(caller)
}

fn token_error(error: domain::token::TokenError) -> Refusal {
    use domain::token::TokenError;
    match error {
        TokenError::Unknown(_) => Refusal::new(StatusCode::NOT_FOUND, "unknown_token_id", error.to_string()),
        TokenError::Full => Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, "too_many_tokens", error.to_string()),
        TokenError::LabelTooLong => Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, "label_too_long", error.to_string()),
        TokenError::Read { .. } | TokenError::Write { .. } => internal(error.into()),
    }
}

/// A body that is not the JSON asked for: 413 over the size limit, 422 otherwise.
fn body_refusal(rejection: JsonRejection) -> Refusal {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("a request body is at most {REQUEST_BODY_BYTES_MAX} bytes"),
        )
    } else {
        Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_body", rejection.body_text())
    }
}

/// `POST /v1/tokens` (operators): issues a token; the answer is the only place it appears.
#[utoipa::path(
    post,
    path = "/v1/tokens",
    tag = "tokens",
    summary = "Issue a customer's or an operator's token",
    request_body = IssueRequest,
    responses(
        crate::openapi::TokenRefusals,
        (status = 201, description = "The token, shown only here, and its record", body = crate::openapi::IssuedToken),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn issue_token(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Result<Json<IssueRequest>, JsonRejection>,
) -> Response {
    let result = (|| {
        let caller = operator(&shared, &headers)?;
        let Json(request) = body.map_err(body_refusal)?;
        let role = match (request.customer_id, request.operator) {
            (Some(customer_id), false) => Role::Customer {
                customer_id: CustomerId::new(customer_id).map_err(|reason| {
                    Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_customer_id", reason.to_string())
                })?,
            },
            (None, true) => Role::Operator,
            _ => {
                return Err(Refusal::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "bad_body",
                    "give either customer_id or operator: true",
                ))
            }
        };
        let (token, record) = shared.gate.tokens.issue(role, &request.label).map_err(token_error)?;
        tracing::info!(target: "billing::access", by = %caller.token_id, token = %record.id, "token issued");
        Ok::<_, Refusal>((token, record))
    })();
    match result {
        Ok((token, record)) => {
            (StatusCode::CREATED, Json(serde_json::json!({ "token": token, "record": record }))).into_response()
        }
        Err(refusal) => refuse(&shared, refusal),
    }
}

/// `GET /v1/tokens` (operators): every token's record (hashes, never tokens).
#[utoipa::path(
    get,
    path = "/v1/tokens",
    tag = "tokens",
    summary = "Every token's record",
    responses(
        crate::openapi::TokenRefusals,
        (status = 200, description = "Records, oldest first", body = crate::openapi::TokenList),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_tokens(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    let result = operator(&shared, &headers).and_then(|_| shared.gate.tokens.list().map_err(token_error));
    match result {
        Ok(tokens) => Json(serde_json::json!({ "tokens": tokens })).into_response(),
        Err(refusal) => refuse(&shared, refusal),
    }
}

/// `DELETE /v1/tokens/{id}` (operators): revokes a token, at once.
#[utoipa::path(
    delete,
    path = "/v1/tokens/{token_id}",
    tag = "tokens",
    summary = "Revoke a token",
    params(("token_id" = String, Path, description = "The token's id")),
    responses(
        crate::openapi::TokenRefusals,
        (status = 200, description = "The revoked token's record", body = crate::openapi::TokenRecord),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn revoke_token(
    State(shared): State<Shared>,
    headers: HeaderMap,
    token_id: Result<Path<String>, PathRejection>,
) -> Response {
    let token_id = match path_param(token_id) {
        Ok(token_id) => token_id,
        Err(refusal) => return refuse(&shared, refusal),
    };
    let result = operator(&shared, &headers).and_then(|caller| {
        let record = shared.gate.tokens.revoke(&token_id).map_err(token_error)?;
        tracing::info!(target: "billing::access", by = %caller.token_id, token = %record.id, "token revoked");
        Ok(record)
    });
    match result {
        Ok(record) => Json(record).into_response(),
        Err(refusal) => refuse(&shared, refusal),
    }
}

/// `GET /v1/me`: who the presented token (or identity-provider token) is.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Me {
    /// The token's id (a JWT: `issuer#subject`).
    token_id: String,
    /// `customer` or `operator`.
    role: &'static str,
    /// The customer a customer's token reads.
    customer_id: Option<String>,
}

/// `GET /v1/me` (any token): the caller's role and, for a customer, whose data it reads (the
/// customer's page asks this after sign-in).
#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "tokens",
    summary = "Who the presented token is: its role and customer",
    responses(
        crate::openapi::TokenRefusals,
        (status = 200, description = "The caller", body = Me),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn me(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    match shared.gate.caller(&headers) {
        Ok(caller) => Json(Me {
            role: caller.role_name(),
            customer_id: match &caller.role {
                Role::Customer { customer_id } => Some(customer_id.to_string()),
                Role::Operator => None,
            },
            token_id: caller.token_id,
        })
        .into_response(),
        Err(refusal) => refuse(&shared, refusal),
    }
}
