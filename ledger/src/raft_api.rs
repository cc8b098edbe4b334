//! The raft RPC endpoints (`/raft/append`, `/raft/vote`, `/raft/snapshot`) and the secret
//! handover (`/raft/secrets`): each request authenticated as an admitted node when this node
//! requires it (`peer_auth.rs`), its body opened (`raft_channel.rs`) and decoded, and only then
//! given to openraft or answered.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

use crate::api::{ApiError, AppState};
use crate::entry::{NodeId, TypeConfig};

/// Authenticates a raft request when this node requires it (`peer_auth.rs`), decodes its body
/// and checks the raft message names the authenticated node as its sender.
fn raft_request<T: serde::de::DeserializeOwned>(
    app: &AppState,
    path: &str,
    headers: &axum::http::HeaderMap,
    body: &[u8],
    sender: impl FnOnce(&T) -> NodeId,
) -> Result<T, ApiError> {
    let authenticated = match &app.peer_trust {
        None => None,
        Some(service_key) => {
            let now_ms = domain::clock::wall_clock_now().0;
            let refused = |refusal: crate::peer_auth::Refusal| {
                app.metrics.raft_refused(refusal.code);
                tracing::warn!(path, reason = refusal.code, message = %refusal.message, "raft request refused");
                ApiError::new(StatusCode::UNAUTHORIZED, refusal.code, refusal.message)
            };
            let state = app.store.state();
            let revoked = |node_id, key: &[u8; 32]| crate::registry::node_revoked(&state, node_id, key);
            let node_id =
                crate::peer_auth::authenticate(service_key, revoked, app.node_id, now_ms, path, headers, body)
                    .map_err(refused)?;
            let (signature, time_ms) = crate::peer_auth::signature_of(headers).expect("an authenticated request");
            app.replay_guard
                .lock()
                .expect("the replay guard is never poisoned")
                .admit(signature, time_ms, now_ms)
                .map_err(refused)?;
            Some(node_id)
        }
    };
    // An authenticated node's raft messages arrive sealed (`raft_channel.rs`); the secret
    // handover cannot be, the asking node holds no secret yet.
    let opened;
    let body = match authenticated {
        Some(sender) if path != crate::provision::SECRETS_PATH => {
            let unsealed = |message: String| {
                app.metrics.raft_refused("unsealed_raft_message");
                tracing::warn!(path, sender, %message, "raft request refused");
                ApiError::new(StatusCode::UNAUTHORIZED, "unsealed_raft_message", message)
            };
            let secrets = app.store.secrets().ok_or_else(|| unsealed("this node holds no ledger secrets".into()))?;
            let (time_ms, nonce) = crate::peer_auth::stamp_of(headers).expect("an authenticated request");
            let envelope = crate::raft_channel::Envelope { path, sender, target: app.node_id, time_ms, nonce };
            opened = crate::raft_channel::open(secrets, envelope, body)
                .map_err(|error| unsealed(format!("the body is not sealed under this ledger's secret: {error}")))?;
            opened.as_slice()
        }
        _ => body,
    };
    let request: T = serde_json::from_slice(body)
        .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, "malformed_raft_request", error.to_string()))?;
    if let Some(node_id) = authenticated {
        crate::peer_auth::same_sender(node_id, sender(&request)).map_err(|refusal| {
            app.metrics.raft_refused(refusal.code);
            ApiError::new(StatusCode::UNAUTHORIZED, refusal.code, refusal.message)
        })?;
    }
    Ok(request)
}

pub(crate) async fn raft_append(
    State(app): State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: AppendEntriesRequest<TypeConfig> =
        raft_request(&app, "append", &headers, &body, |request: &AppendEntriesRequest<TypeConfig>| {
            request.vote.leader_id().voted_for().unwrap_or_default()
        })?;
    Ok(Json(app.raft.append_entries(request).await).into_response())
}

pub(crate) async fn raft_vote(
    State(app): State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: VoteRequest<NodeId> = raft_request(&app, "vote", &headers, &body, |request: &VoteRequest<NodeId>| {
        request.vote.leader_id().voted_for().unwrap_or_default()
    })?;
    Ok(Json(app.raft.vote(request).await).into_response())
}

pub(crate) async fn raft_snapshot(
    State(app): State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: InstallSnapshotRequest<TypeConfig> =
        raft_request(&app, "snapshot", &headers, &body, |request: &InstallSnapshotRequest<TypeConfig>| {
            request.vote.leader_id().voted_for().unwrap_or_default()
        })?;
    Ok(Json(app.raft.install_snapshot(request).await).into_response())
}

/// A joining node asks for the ledger secrets (`provision.rs`): answered, wrapped for the X25519
/// key in its signed request, only when it authenticates as an admitted node.
pub(crate) async fn raft_secrets(
    State(app): State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: crate::provision::SecretsRequest = raft_request(
        &app,
        crate::provision::SECRETS_PATH,
        &headers,
        &body,
        |request: &crate::provision::SecretsRequest| request.node_id,
    )?;
    let Some(secrets) = app.store.secrets() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_ledger_secrets",
            "this node holds no ledger secrets",
        ));
    };
    // An authenticated request's node key is the one its signature verified under.
    if app.peer_trust.is_some() && crate::peer_auth::node_key_of(&headers) != Some(request.node_key.as_str()) {
        app.metrics.raft_refused("impersonation");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "impersonation",
            "the request names another node key than it is signed with",
        ));
    }
    let state = app.store.state();
    let answer = crate::provision::answer(secrets, &request, |measurement| {
        crate::registry::measurement_accepted(&state, measurement, &app.measurement)
    })
    .map_err(|refusal| {
        app.metrics.raft_refused(refusal.code());
        tracing::warn!(node_id = request.node_id, reason = refusal.code(), %refusal, "ledger secrets refused");
        let status = match refusal {
            crate::provision::HandoverRefusal::MeasurementNotAccepted(_) => StatusCode::FORBIDDEN,
            crate::provision::HandoverRefusal::BadAttestation(_) => StatusCode::UNAUTHORIZED,
            crate::provision::HandoverRefusal::Malformed(_) => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, refusal.code(), refusal.to_string())
    })?;
    tracing::info!(node_id = request.node_id, "handed the ledger secrets to a node");
    Ok(Json(answer).into_response())
}
