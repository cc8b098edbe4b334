//! Governance over the client API (issue 14): `POST /v1/gov` takes a member's signed proposal,
//! ballot or withdrawal; `GET /v1/gov/proposals`, `/v1/gov/proposals/{id}` and
//! `/v1/gov/constitution` show what was proposed, who voted for what, and the rules in force.
//! Everything here is public: governance is the consortium's shared record.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::gov::{Constitution, Decision, GovAct, Member, ProposalId, SignedGov};
use serde::{Deserialize, Serialize};

use crate::admin::{change_membership, submit_checked, Checked, Submitted};
use crate::api::{ApiError, AppState};
use crate::governance::{self, ProposalRecord, Status};
use crate::limits::PROPOSALS_PER_PAGE_MAX;

/// `POST /v1/gov` body: hex of a [`SignedGov`]'s canonical bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitGov {
    pub gov: String,
}

/// The answer: where the act landed and the proposal as it now stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitGovResponse {
    pub log_index: u64,
    /// Set only if the state machine refused it after all (a race across a leader change);
    /// refusals found before the log are HTTP errors with the reason.
    pub refused: Option<String>,
    pub retried: bool,
    pub proposal: Option<ProposalView>,
}

/// A proposal as the API shows it: the record, its tally now, and `expired` if its expiry
/// passed while open (by this node's clock; the ledger refuses ballots by leader-stamped time).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProposalView {
    #[serde(flatten)]
    pub record: ProposalRecord,
    pub tally: Decision,
    pub expired: bool,
}

/// `GET /v1/gov/constitution`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConstitutionView {
    pub governed: bool,
    /// The ledger's time (ms since the epoch, this node's clock): proposals expire by it.
    pub ledger_time_ms: i64,
    pub version: Option<u32>,
    pub constitution: Option<Constitution>,
    pub members: Vec<Member>,
}

/// `GET /v1/gov/proposals` query: newest first, `limit` at most [`PROPOSALS_PER_PAGE_MAX`],
/// `before` a position from an earlier page's `next_before`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub before: Option<u64>,
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProposalPage {
    pub proposals: Vec<ProposalView>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next_before: Option<u64>,
}

/// A proposal as the API shows it. `hide_private`: the caller is not entitled to private data,
/// so the households its actions name appear as keyed-hash ids (the same ids `/v1/meters`
/// shows such callers).
fn view(app: &AppState, mut record: ProposalRecord, hide_private: bool) -> ProposalView {
    let state = app.store.state();
    let tally = governance::tally(&state, &record);
    let now_s = app.clock.now().0.div_euclid(1_000);
    let expired = record.status == Status::Open && now_s >= record.expires_at;
    let secrets = app.store.secrets().cloned();
    for action in &mut record.actions {
        for id in std::mem::take(&mut action.private_ids) {
            if let (true, Some(secrets)) = (hide_private, &secrets) {
                action.summary = action.summary.replace(&id, &crate::api::keyed_id(secrets, &id));
            }
        }
    }
    ProposalView { record, tally, expired }
}

/// Whether a request's caller sees households as keyed-hash ids (a node that authenticates, a
/// caller it does not entitle to private data).
fn hides_private(app: &AppState, request: &axum::extract::Request) -> bool {
    app.peer_trust.is_some() && crate::api::entitled_caller(app, request).is_err()
}

/// `POST /v1/gov`.
pub(crate) async fn submit_gov(
    State(app): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<SubmitGov>,
) -> Result<Response, ApiError> {
    let malformed = |error: String| ApiError::new(StatusCode::BAD_REQUEST, "malformed_gov", error);
    let bytes = hex::decode(&request.gov).map_err(|error| malformed(error.to_string()))?;
    let gov = SignedGov::from_bytes(&bytes).map_err(|error| malformed(error.to_string()))?;
    let proposal_id = match &gov.act {
        GovAct::Propose(proposal) => proposal.id(&gov.member),
        GovAct::Vote { proposal, .. } | GovAct::Withdraw { proposal } => *proposal,
    };
    let verb = gov.act.verb();
    // A proposer sent the actions itself; a ballot or withdrawal (which anyone holding its signed
    // bytes could replay) is answered with households as keyed-hash ids.
    let hide = app.peer_trust.is_some() && !matches!(gov.act, GovAct::Propose(_));
    let member = gov.member.clone();
    let tx_id = gov.tx_id();
    let submitted =
        match submit_checked(&app, &headers, "/v1/gov", &request, tx_id, domain::tx::TxBody::Gov(gov)).await? {
            Checked::Forwarded(response) => return Ok(response),
            Checked::Done(submitted) => submitted,
        };
    let Submitted { log_index, refused, retried } = submitted;
    let record = governance::proposal(&app.store.state(), &proposal_id);
    tracing::info!(%member, verb, proposal = %proposal_id, log_index, status = ?record.as_ref().map(|r| r.status), "governance act");
    // The ballot that accepted a proposal carries out its membership actions through openraft.
    if let Some(record) = record
        .as_ref()
        .filter(|record| record.status == Status::Accepted && (record.decided_at == Some(log_index) || retried))
    {
        for action in accepted_actions(&app, record) {
            change_membership(&app, &action).await?;
        }
    }
    let proposal = record.map(|record| view(&app, record, hide));
    Ok(Json(SubmitGovResponse { log_index, refused, retried, proposal }).into_response())
}

/// The actions of an accepted proposal, from the history's proposing transaction.
fn accepted_actions(app: &AppState, record: &ProposalRecord) -> Vec<domain::tx::AdminAction> {
    let Ok(Some(history)) = app.store.history(record.proposed_at) else {
        return Vec::new();
    };
    match crate::entry::decode_entry(&history.entry).map(|entry| entry.payload) {
        Ok(openraft::EntryPayload::Normal(tx)) => match tx.body {
            domain::tx::TxBody::Gov(SignedGov { act: GovAct::Propose(proposal), .. }) => proposal.actions,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// `GET /v1/gov/proposals`.
pub(crate) async fn list_proposals(
    State(app): State<AppState>,
    Query(query): Query<ListQuery>,
    request: axum::extract::Request,
) -> Result<Json<ProposalPage>, ApiError> {
    let hide = hides_private(&app, &request);
    let limit = query.limit.unwrap_or(PROPOSALS_PER_PAGE_MAX);
    if limit == 0 || limit > PROPOSALS_PER_PAGE_MAX {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_limit",
            format!("limit is 1 to {PROPOSALS_PER_PAGE_MAX}"),
        ));
    }
    let state = app.store.state();
    let ids = governance::proposal_ids(&state, query.before, limit + 1);
    let next_before = (ids.len() > limit).then(|| ids[limit - 1].0);
    let proposals = ids
        .into_iter()
        .take(limit)
        .filter_map(|(_, id)| governance::proposal(&state, &id))
        .map(|record| view(&app, record, hide))
        .collect();
    Ok(Json(ProposalPage { proposals, next_before }))
}

/// `GET /v1/gov/proposals/{id}`.
pub(crate) async fn show_proposal(
    State(app): State<AppState>,
    Path(id): Path<String>,
    request: axum::extract::Request,
) -> Result<Json<ProposalView>, ApiError> {
    let hide = hides_private(&app, &request);
    let id: ProposalId =
        id.parse().map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, "bad_proposal_id", error))?;
    let record = governance::proposal(&app.store.state(), &id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unknown_proposal", format!("no proposal {id}")))?;
    Ok(Json(view(&app, record, hide)))
}

/// `GET /v1/gov/constitution`.
pub(crate) async fn show_constitution(State(app): State<AppState>) -> Json<ConstitutionView> {
    let state = app.store.state();
    let current = governance::constitution(&state);
    Json(ConstitutionView {
        governed: governance::is_governed(&state),
        ledger_time_ms: app.clock.now().0,
        version: current.as_ref().map(|(version, _)| *version),
        constitution: current.map(|(_, constitution)| constitution),
        members: governance::members(&state),
    })
}
