//! Who may call the gateway's operations API. `/healthz` and `/metrics` are open: they carry
//! counts and reason codes, never a meter or a customer. `GET /v1/quarantine` (meter ids and
//! their signed readings) and `POST /v1/quarantine/release` need an operator's bearer token,
//! issued with `wattle gateway token issue` into the gateway's token file (`--tokens`, or
//! `tokens` in `--config`), which keeps only its SHA-256 hash (`domain::token`, the format
//! billing's tokens have). A gateway without a token file refuses every operator call: never
//! open by default. The file is re-read when it changes, so a revocation takes effect on the
//! next request.
//!
//! Every served call is logged under the `gateway::access` target (token id, what); every
//! refusal is logged there too and counted in `wattle_gateway_requests_refused_total{code}`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use crate::http::Refusal;
use crate::Shared;

/// What a gateway token entitles its bearer to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "role")]
pub enum Role {
    /// Lists and releases the quarantine.
    Operator,
}

/// One issued gateway token, as the token file keeps it.
pub type TokenRecord = domain::token::TokenRecord<Role>;

/// The gateway's token file: issued by the CLI, checked on every operator call.
pub type TokenStore = domain::token::TokenStore<Role>;

/// Every code an operator call is refused with (each is a series of the refusal counter from the
/// start, so a dashboard sees it before the first refusal).
pub(crate) const REFUSAL_CODES: [&str; 5] =
    ["missing_token", "malformed_token", "unknown_token", "revoked_token", "tokens_not_configured"];

/// How the gateway admits operator calls.
#[derive(Debug)]
pub(crate) enum Access {
    /// Bearer tokens of this file.
    Tokens(TokenStore),
    /// No token file configured: every operator call is refused.
    Unconfigured,
}

/// An admitted operator call's caller.
#[derive(Debug, Clone)]
pub(crate) struct Operator {
    /// The token's id (never the token), for the access log.
    pub(crate) token_id: String,
}

impl Access {
    /// The operator calling with `headers`: a bearer token of the file, known, not revoked.
    pub(crate) fn operator(&self, headers: &HeaderMap) -> Result<Operator, Refusal> {
        let tokens = match self {
            Access::Tokens(tokens) => tokens,
            Access::Unconfigured => {
                return Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "tokens_not_configured",
                    "this gateway has no operator token file: start it with --tokens FILE (or tokens = \"FILE\" \
                     in --config) and issue a token with `wattle gateway token issue --tokens FILE`",
                ))
            }
        };
        let token = domain::token::bearer(headers.get(axum::http::header::AUTHORIZATION).map(|value| value.as_bytes()))
            .map_err(|(code, message)| unauthorized(code, format!("{message} (`wattle gateway token issue`)")))?;
        let record = tokens.lookup(token).map_err(|refusal| unauthorized(refusal.code(), refusal.to_string()))?;
        match record.role {
            Role::Operator => Ok(Operator { token_id: record.id }),
        }
    }
}

fn unauthorized(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal::new(StatusCode::UNAUTHORIZED, code, message)
}

impl FromRequestParts<Shared> for Operator {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, shared: &Shared) -> Result<Self, Self::Rejection> {
        shared.access.operator(&parts.headers).inspect_err(|refusal| {
            shared.metrics.refuse(refusal.code());
            tracing::info!(
                target: "gateway::access",
                code = refusal.code(),
                method = %parts.method,
                path = parts.uri.path(),
                "operator call refused"
            );
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(axum::http::header::AUTHORIZATION, value.parse().expect("ascii"));
        headers
    }

    #[test]
    fn only_a_live_operator_token_is_admitted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("gateway-tokens.json");
        let access = Access::Tokens(TokenStore::open(&path).expect("open"));
        let Access::Tokens(tokens) = &access else { unreachable!() };
        let (token, record) = tokens.issue(Role::Operator, "ops").expect("issue");
        let code =
            |headers: &HeaderMap| access.operator(headers).map(|operator| operator.token_id).map_err(|r| r.code());
        assert_eq!(code(&headers(&format!("Bearer {token}"))), Ok(record.id.clone()));
        assert_eq!(code(&HeaderMap::new()), Err("missing_token"));
        assert_eq!(code(&headers(&token)), Err("malformed_token"), "no Bearer");
        assert_eq!(code(&headers("Bearer garbage")), Err("malformed_token"));
        assert_eq!(code(&headers(&format!("Bearer {token}0"))), Err("unknown_token"));
        TokenStore::open(&path).expect("open again").revoke(&record.id).expect("revoke");
        assert_eq!(code(&headers(&format!("Bearer {token}"))), Err("revoked_token"));
        let refusal = Access::Unconfigured.operator(&headers(&format!("Bearer {token}"))).expect_err("refused");
        assert_eq!(refusal.code(), "tokens_not_configured");
    }
}
