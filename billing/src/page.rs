//! The customer's page (issue 17), served by billing itself: one HTML document, a stylesheet and
//! a script (`billing/assets/`), compiled into the binary: no CDN, no framework, no build step.
//! The page signs in with a bearer token (an operator-issued token, or a JWT from the utility's
//! identity provider, `oidc.rs`) kept in the tab's session storage, and reads everything through
//! the same API as any client (`/v1/me`, `/v1/customers/{id}/bill`, `.../usage`, `.../invoices`,
//! `/v1/tariffs`), staying live through `.../bill/stream` (`stream.rs`).
//!
//! The documents carry no customer data, so they are served without a token; a strict
//! Content-Security-Policy allows only billing's own script, style and API.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::HeaderName;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::api::Shared;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

/// Only billing's own script, style and API; no framing, no inline code.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The page's routes: `/` (sign in, then the signed-in customer's page), `/customers/{id}` (a
/// customer's page; an operator's token may open any) and the two assets.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/", get(index))
        .route("/customers/{customer_id}", get(index))
        .route("/assets/app.js", get(script))
        .route("/assets/app.css", get(style))
}

fn document(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, content_type),
            // The assets change with the binary: revalidate rather than serve a stale script.
            (CACHE_CONTROL, "no-cache"),
            (HeaderName::from_static("content-security-policy"), CONTENT_SECURITY_POLICY),
            (HeaderName::from_static("x-content-type-options"), "nosniff"),
            (HeaderName::from_static("referrer-policy"), "no-referrer"),
        ],
        body,
    )
}

async fn index() -> impl IntoResponse {
    document("text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> impl IntoResponse {
    document("text/javascript; charset=utf-8", APP_JS)
}

async fn style() -> impl IntoResponse {
    document("text/css; charset=utf-8", APP_CSS)
}
