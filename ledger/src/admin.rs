//! `POST /v1/admin`: operator-signed admin transactions. Nothing that would be refused reaches
//! the log: the signature is checked on every node, and the leader runs the state machine's own
//! admin rule (operator key pin, nonce, the action's checks) against its committed state before
//! it proposes. A retry of signed bytes already applied is recognised by its transaction id
//! (`SignedAdmin::tx_id`, derived from the bytes) and answered as applied, never refused as stale.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::api::{SubmitAdmin, SubmitAdminResponse};
use domain::settlement::RULES_VERSION;
use domain::tx::{AdminAction, SignedAdmin, Transaction, TxBody};

use crate::api::{propose_as, wait_covered, ApiError, AppState};
use crate::entry::NodeId;
use crate::forward::{forward, route, Route};
use crate::limits::COMMIT_WAIT_MAX;
use crate::state::{self, Overlay};

/// `POST /v1/admin`: an operator-signed admin action (hex of its canonical bytes), proposed by
/// the leader; followers check its signature and forward it.
pub(crate) async fn submit_admin(
    State(app): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<SubmitAdmin>,
) -> Result<Response, ApiError> {
    let bytes = hex::decode(&request.admin)
        .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, "malformed_admin", error.to_string()))?;
    let admin = SignedAdmin::from_bytes(&bytes)
        .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, "malformed_admin", error.to_string()))?;
    // One verification, no state: checked before forwarding, so a forgery costs no leader work.
    if let Err(error) = admin.verify() {
        return Err(refusal(&app, format!("bad_operator_signature: {error}")));
    }
    let action = admin.action.clone();
    let tx_id = admin.tx_id();
    let submitted = match submit_checked(&app, &headers, "/v1/admin", &request, tx_id, TxBody::Admin(admin)).await? {
        Checked::Forwarded(response) => return Ok(response),
        Checked::Done(submitted) => submitted,
    };
    if submitted.refused.is_none() {
        change_membership(&app, &action).await?;
    }
    let Submitted { log_index, refused, retried } = submitted;
    Ok(Json(SubmitAdminResponse { log_index, refused, retried }).into_response())
}

/// What became of a checked submission on the leader.
pub(crate) struct Submitted {
    pub log_index: u64,
    pub refused: Option<String>,
    /// The same transaction id was applied before: this is its earlier outcome.
    pub retried: bool,
}

/// A follower's relay of the leader's answer, or the leader's own outcome.
pub(crate) enum Checked {
    Forwarded(Response),
    Done(Submitted),
}

/// The write path of a signed configuration or governance transaction: a follower forwards it;
/// the leader serialises such writes, confirms its leadership, recognises a retry by the
/// transaction id, runs the state machine's own rule against everything committed (what would
/// be refused never reaches the log) and proposes.
pub(crate) async fn submit_checked(
    app: &AppState,
    headers: &HeaderMap,
    path: &str,
    request: &(impl serde::Serialize + Sync),
    tx_id: domain::ids::TxId,
    body: TxBody,
) -> Result<Checked, ApiError> {
    if let Route::Leader(leader) = route(app)? {
        return Ok(Checked::Forwarded(forward(app, headers, &leader, path, request).await?));
    }
    let _serial = app.admin_serial.lock().await;
    // Check against everything committed, not a lagging view: a new leader may not have applied
    // its predecessor's last entries yet.
    match tokio::time::timeout(COMMIT_WAIT_MAX, app.raft.ensure_linearizable()).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_leader", error.to_string())),
        Err(_) => {
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_quorum", "leadership not confirmed in time"))
        }
    }
    if let Some((log_index, refused)) = state::transaction_outcome(&app.store.state(), &tx_id) {
        // The same signed content was applied before (the answer was lost, or the client gave
        // up waiting for the signature): answer as it was applied (or refused, if a leader
        // change let a refused one in), and let the caller finish what it started.
        app.metrics.admin_retries.inc();
        tracing::info!(%tx_id, log_index, ?refused, "signed transaction retried: already applied");
        wait_covered(app, log_index).await?;
        return Ok(Checked::Done(Submitted { log_index, refused, retried: true }));
    }
    let checked = Transaction { tx_id, rules_version: RULES_VERSION, time: app.clock.now(), body: body.clone() };
    if let Some(reason) = dry_run(app, &checked) {
        return Err(refusal(app, reason));
    }
    let (log_index, result) = propose_as(app, tx_id, body).await?;
    Ok(Checked::Done(Submitted { log_index, refused: result.admin_refused, retried: false }))
}

/// Applies `tx` to a throw-away overlay of the committed state with the state machine's own
/// rule; returns why it would be refused, if it would. The state machine is deterministic and
/// admin transactions are serialised here, so what passes is applied as checked (unless a leader
/// change lets an earlier leader's admin transaction in between).
pub(crate) fn dry_run(app: &AppState, tx: &Transaction) -> Option<String> {
    let view = app.store.state();
    let mut overlay = Overlay::new(&view);
    match state::apply(&mut overlay, app.store.applied_index() + 1, tx) {
        Ok(applied) => applied.result.admin_refused,
        Err(halt) => Some(format!("admin_refused: {halt}")),
    }
}

/// The answer to an admin or governance transaction refused before the log: the state
/// machine's reason (`code: detail`) with its code; `401` for a signature or key that is not the
/// operator's or a member's, `403` for a member the constitution gives no say, `404` for an
/// unknown proposal, `409` for a replay, a second ballot, a decided or expired proposal or a
/// stale nonce, `422` for an action the state refuses.
pub(crate) fn refusal(app: &AppState, reason: String) -> ApiError {
    let code = reason.split_once(':').map_or(reason.as_str(), |(code, _)| code).trim().to_string();
    let status = match code.as_str() {
        "bad_operator_signature" | "not_operator" | "bad_signature" | "not_member" => StatusCode::UNAUTHORIZED,
        "not_eligible" | "not_proposer" | "auditor_cannot_propose" | "governed" => StatusCode::FORBIDDEN,
        "unknown_proposal" => StatusCode::NOT_FOUND,
        "stale_nonce" | "replayed_proposal" | "already_voted" | "already_decided" | "expired" => StatusCode::CONFLICT,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    tracing::warn!(%reason, "signed transaction refused before the log");
    app.metrics.admin_refused(&code);
    ApiError::new(status, code, reason)
}

/// Carries out a committed membership action (operator-signed or voted) through openraft (idempotent: a
/// learner already added or voters already set change nothing).
pub(crate) async fn change_membership(app: &AppState, action: &AdminAction) -> Result<(), ApiError> {
    let failed = |error: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "membership_change_failed", error);
    match action {
        AdminAction::AddNode { node_id, address } => {
            tracing::info!(node_id, %address, "adding a learner");
            app.raft
                .add_learner(*node_id, openraft::BasicNode::new(address.clone()), true)
                .await
                .map_err(|error| failed(error.to_string()))?;
        }
        AdminAction::SetVoters { voters } => {
            tracing::info!(?voters, "changing the voters");
            let voters: std::collections::BTreeSet<NodeId> = voters.iter().copied().collect();
            app.raft.change_membership(voters, false).await.map_err(|error| failed(error.to_string()))?;
        }
        _ => {}
    }
    Ok(())
}
