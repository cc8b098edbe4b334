//! How a follower hands a client's write to the leader: once, relaying the leader's answer
//! (status, body and `Retry-After`). Over HTTP in production; in the deterministic simulation
//! through the leader's own router in the same process ([`Forwarder::InProcess`]), so the
//! simulated clients run the very handlers production clients do.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceExt as _;

use crate::api::{ApiError, AppState};
use crate::limits::REQUEST_BYTES_MAX;

/// Header marking a request a follower forwarded, so it is never forwarded twice.
pub(crate) const FORWARDED_HEADER: &str = "x-wattle-forwarded";

/// Where writes must go: this node, or the leader's address.
pub(crate) enum Route {
    Here,
    Leader(String),
}

/// The router serving an address, if the (simulated) network reaches it now.
pub type Reach = Arc<dyn Fn(&str) -> Option<Router> + Send + Sync>;

/// The way to the leader's API.
#[derive(Clone)]
pub enum Forwarder {
    /// HTTP to the leader's advertised address.
    Http(reqwest::Client),
    /// In-process, through the leader's router ([`Reach`]).
    InProcess(Reach),
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Forwarder::Http(_) => "Forwarder::Http",
            Forwarder::InProcess(_) => "Forwarder::InProcess",
        })
    }
}

/// This node, or the leader's address; `503 no_leader` while there is none.
pub(crate) fn route(app: &AppState) -> Result<Route, ApiError> {
    let metrics = app.raft.metrics().borrow().clone();
    match metrics.current_leader {
        Some(leader) if leader == app.node_id => Ok(Route::Here),
        Some(leader) => match metrics.membership_config.membership().get_node(&leader) {
            Some(node) => Ok(Route::Leader(node.addr.clone())),
            None => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_leader",
                format!("leader {leader} has no address"),
            )),
        },
        None => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_leader", "no leader elected yet")),
    }
}

fn unreachable(error: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "leader_unreachable", error.to_string())
}

/// Forwards a write to the leader once and relays its answer.
pub(crate) async fn forward<T: serde::Serialize>(
    app: &AppState,
    headers: &HeaderMap,
    leader: &str,
    path: &str,
    body: &T,
) -> Result<Response, ApiError> {
    if headers.contains_key(FORWARDED_HEADER) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_leader",
            "forwarded to a node that does not lead",
        ));
    }
    let (status, retry_after, bytes) = match &app.forwarder {
        Forwarder::Http(http) => {
            let response = http
                .post(app.peer.url(leader, path))
                .header(FORWARDED_HEADER, "1")
                .json(body)
                .send()
                .await
                .map_err(unreachable)?;
            let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            // A leader's `429` tells the client when to come back; keep that when relaying it.
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| HeaderValue::from_bytes(value.as_bytes()).ok());
            (status, retry_after, response.bytes().await.map_err(unreachable)?)
        }
        Forwarder::InProcess(reach) => {
            let router = reach(leader).ok_or_else(|| unreachable(format!("{leader} is unreachable")))?;
            let json = serde_json::to_vec(body).map_err(unreachable)?;
            let request = Request::post(path)
                .header(header::CONTENT_TYPE, "application/json")
                .header(FORWARDED_HEADER, "1")
                .body(Body::from(json))
                .map_err(unreachable)?;
            let response = router.oneshot(request).await.map_err(unreachable)?;
            let status = response.status();
            let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
            let bytes = axum::body::to_bytes(response.into_body(), REQUEST_BYTES_MAX).await.map_err(unreachable)?;
            (status, retry_after, bytes)
        }
    };
    let mut relayed = (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response();
    if let Some(retry_after) = retry_after {
        relayed.headers_mut().insert(header::RETRY_AFTER, retry_after);
    }
    Ok(relayed)
}
