//! The simulation's clients and what they learned. Clients call a node's real API (its axum
//! router, in-process): a gateway's `POST /v1/readings` (verification by the leader, forwarding
//! by a follower, the wait for the covering signature, or `?wait=false` and a status poll), and an
//! operator's `POST /v1/admin`. The model records what they were told, for the invariants.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use domain::api::{ErrorBody, OutcomeStatus, ReadingOutcome, SubmitAdmin, SubmitAdminResponse, SubmitReadings};
use domain::api::{SubmitReadingsResponse, TransactionStatus};
use domain::ids::{GatewayId, MeterId};
use domain::reading::ReadingDigest;
use domain::tx::{BatchReading, SignedAdmin};
use tower::ServiceExt as _;

use crate::limits::REQUEST_BYTES_MAX;

/// What clients learned, shared with their tasks.
#[derive(Default)]
pub(super) struct Model {
    /// Per reading (meter, sequence): the digest and log index a client saw it accepted with.
    pub(super) accepted: BTreeMap<(MeterId, u64), (ReadingDigest, u64)>,
    /// Per reading a client was told is a duplicate (its sequence already settled, by this content
    /// or another): an index at which it is settled (the entry's, or for a duplicate answered
    /// without proposing, the highest index any replica had applied when the answer came).
    pub(super) duplicates: BTreeMap<(MeterId, u64), u64>,
    /// Per client result, in completion order (for the trace).
    pub(super) results: Vec<String>,
    pub(super) violation: Option<String>,
    /// Waited-for submissions answered through a follower (forwarded to the leader).
    pub(super) forwarded: u64,
    /// Submissions that did not wait.
    pub(super) not_waiting: u64,
    /// Readings answered as duplicates without a proposal.
    pub(super) duplicates_unproposed: u64,
}

pub(super) fn model_lock(model: &Mutex<Model>) -> std::sync::MutexGuard<'_, Model> {
    model.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Model {
    /// Records the answer to a waited-for submission of `batch`. `settled_by` bounds from above
    /// the index at which a duplicate answered without a proposal was settled.
    pub(super) fn record(&mut self, batch: &[BatchReading], answer: &SubmitReadingsResponse, settled_by: u64) {
        if answer.outcomes.len() != batch.len() {
            self.violation = Some(format!("{} outcomes for {} readings", answer.outcomes.len(), batch.len()));
            return;
        }
        for (item, outcome) in batch.iter().zip(&answer.outcomes) {
            let reading = item.reading.reading();
            let key = (reading.meter_id.clone(), reading.sequence.0);
            let digest = item.reading.digest();
            if outcome.digest.as_deref() != Some(digest.to_string().as_str()) {
                self.violation =
                    Some(format!("{} #{}: answered for other bytes", reading.meter_id, reading.sequence.0));
                return;
            }
            match outcome.status {
                OutcomeStatus::Duplicate => {
                    self.duplicates_unproposed += u64::from(answer.log_index.is_none());
                    self.duplicates.entry(key).or_insert(answer.log_index.unwrap_or(settled_by));
                }
                OutcomeStatus::Accepted => {
                    let Some(index) = answer.log_index else {
                        self.violation = Some(format!("{} #{} accepted without a log index", key.0, key.1));
                        return;
                    };
                    match self.accepted.get(&key) {
                        Some((existing, _)) if *existing != digest => {
                            self.violation =
                                Some(format!("{} sequence {} accepted with two different contents", key.0, key.1));
                        }
                        Some(_) => {}
                        None => {
                            self.accepted.insert(key, (digest, index));
                        }
                    }
                }
                OutcomeStatus::Pending => {
                    self.violation = Some(format!("{} #{}: pending in a waited-for answer", key.0, key.1));
                }
                OutcomeStatus::Equivocation | OutcomeStatus::Rejected => {}
            }
        }
    }
}

/// One HTTP exchange with a node's router.
pub(super) async fn call(router: Router, request: Request<Body>) -> (StatusCode, Vec<u8>) {
    let response = match router.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), REQUEST_BYTES_MAX).await.map(|bytes| bytes.to_vec());
    (status, body.unwrap_or_default())
}

fn post_json(path: &str, body: &impl serde::Serialize) -> Request<Body> {
    let json = serde_json::to_vec(body).expect("client requests serialise");
    Request::post(path).header(header::CONTENT_TYPE, "application/json").body(Body::from(json)).expect("valid request")
}

/// The error code of a refused request, for the trace.
fn refusal(status: StatusCode, body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(error) => format!("{} {}", status.as_u16(), error.code),
        Err(_) => format!("{}", status.as_u16()),
    }
}

/// What a gateway's submission was answered.
pub(super) enum Submitted {
    Answered(SubmitReadingsResponse),
    Refused(String),
}

/// A gateway's `POST /v1/readings` of `batch`.
pub(super) async fn submit_readings(router: Router, batch: &[BatchReading], wait: bool) -> Submitted {
    let request = SubmitReadings {
        gateway_id: GatewayId::new("gw-sim").expect("valid id"),
        readings: batch.iter().map(|item| item.reading.signed().to_envelope(item.backfill)).collect(),
        gateway_signature: None,
    };
    let path = if wait { "/v1/readings" } else { "/v1/readings?wait=false" };
    let (status, body) = call(router, post_json(path, &request)).await;
    if status != StatusCode::OK {
        return Submitted::Refused(refusal(status, &body));
    }
    match serde_json::from_slice::<SubmitReadingsResponse>(&body) {
        Ok(answer) => Submitted::Answered(answer),
        Err(error) => Submitted::Refused(format!("unreadable answer: {error}")),
    }
}

/// Polls `GET /v1/transactions/{tx_id}` until it is committed (covered by a signature) or
/// `within` passes; the last status seen.
pub(super) async fn poll_status(router: Router, tx_id: &str, within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    let mut last = String::from("never answered");
    while tokio::time::Instant::now() < deadline {
        let request = Request::get(format!("/v1/transactions/{tx_id}")).body(Body::empty()).expect("valid request");
        let (status, body) = call(router.clone(), request).await;
        last = match serde_json::from_slice::<TransactionStatus>(&body) {
            Ok(answer) if status == StatusCode::OK => match answer.log_index {
                Some(index) => format!("{} at {index}", answer.status),
                None => answer.status,
            },
            _ => refusal(status, &body),
        };
        if last.starts_with("committed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}

/// An operator's `POST /v1/admin`: the answer, or the refusal's code.
pub(super) async fn submit_admin(router: Router, admin: &SignedAdmin) -> Result<SubmitAdminResponse, String> {
    let request = SubmitAdmin { admin: hex::encode(admin.to_bytes()) };
    let (status, body) = call(router, post_json("/v1/admin", &request)).await;
    if status != StatusCode::OK {
        return Err(refusal(status, &body));
    }
    serde_json::from_slice(&body).map_err(|error| format!("unreadable answer: {error}"))
}

/// The outcome codes of an answer, for the trace.
pub(super) fn codes(outcomes: &[ReadingOutcome]) -> Vec<String> {
    outcomes
        .iter()
        .map(|outcome| match &outcome.reason {
            Some(reason) => format!("{:?}:{reason}", outcome.status).to_lowercase(),
            None => format!("{:?}", outcome.status).to_lowercase(),
        })
        .collect()
}
