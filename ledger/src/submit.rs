//! `POST /v1/readings`: a gateway's batch at the front door. Bounded before any work
//! (`admission.rs`), the gateway's batch signature checked, forwarded by a follower, and on the
//! leader: each reading decoded, its meter and key looked up, an exact duplicate of a settled
//! reading answered from the history index without verifying or proposing it, a validly signed
//! equivocation refused with an alarm, every other signature verified by the leader itself, and
//! the new readings proposed as one transaction, answered once a signature covers it (or at once
//! with `?wait=false`). Outcomes stay in request order.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::api::{OutcomeStatus, ReadingOutcome, SubmitReadings, SubmitReadingsResponse};
use domain::ids::{KeyId, MeterId, Sequence};
use domain::reading::{ReadingDigest, SignedReading};
use domain::tx::{BatchReading, ReadingBatch, TxBody};
use domain::verify::verify_batch;
use serde::Deserialize;

use crate::api::{propose_as, ApiError, AppState};
use crate::forward::{forward, route, Route};
use crate::limits::SUBMIT_READINGS_MAX;
use crate::registry::{gateway_standing, GatewayStanding};
use crate::state::{self, ReadingResult};

/// `?wait=false`: answer once verified and proposed, without waiting for commit.
#[derive(Debug, Deserialize)]
pub(crate) struct SubmitQuery {
    #[serde(default = "default_true")]
    wait: bool,
}

fn default_true() -> bool {
    true
}

fn rejected(reason: &str) -> ReadingOutcome {
    ReadingOutcome { digest: None, status: OutcomeStatus::Rejected, reason: Some(reason.to_string()) }
}

/// The digest of the reading settled for (meter, key id, sequence), if one is, from this node's
/// history index (state keeps only the dedup ranges). The one place the API asks this.
/// The planted dedup bug (`danger`) turns this check off too, so the simulation still sees it.
fn settled_digest(app: &AppState, meter_id: &MeterId, key_id: KeyId, sequence: Sequence) -> Option<ReadingDigest> {
    if crate::danger::dedup_off() {
        return None;
    }
    app.store.settled_digest(meter_id, key_id, sequence)
}

/// A reading that passed the cheap checks and goes on to signature verification.
struct Candidate {
    position: usize,
    signed: SignedReading,
    public_key: [u8; 32],
    backfill: bool,
    /// The digest settled for its (meter, key id, sequence), which differs from its own: once
    /// its signature verifies, it is an equivocation.
    conflicts_with: Option<ReadingDigest>,
}

/// Who vouches for a batch. With the registry closed (`registry.rs`) the gateway must be
/// registered and sign with its registered key; the key in the request only has to match it.
/// `Err` is the 401 reason code and a sentence.
fn check_gateway(app: &AppState, request: &SubmitReadings) -> Result<(), (&'static str, String)> {
    let gateway = &request.gateway_id;
    let verify = |signature: &domain::api::GatewaySignature| {
        signature.verify(gateway, &request.readings).map_err(|error| ("bad_gateway_signature", error))
    };
    match gateway_standing(&app.store.state(), gateway) {
        GatewayStanding::RegistryOpen => {
            request.gateway_signature.as_ref().map_or(Ok(()), |signature| verify(signature).map(drop))
        }
        GatewayStanding::Unregistered => {
            Err(("unregistered_gateway", format!("gateway {gateway} is not registered with the ledger")))
        }
        GatewayStanding::Revoked => {
            Err(("revoked_gateway", format!("gateway {gateway} was revoked by the consortium")))
        }
        GatewayStanding::Registered(key) => {
            let signature = request
                .gateway_signature
                .as_ref()
                .ok_or(("missing_gateway_signature", format!("gateway {gateway} must sign its batches")))?;
            if signature.public_key != hex::encode(key) {
                return Err((
                    "foreign_gateway_key",
                    format!("the batch is signed with a key other than gateway {gateway}'s registered key"),
                ));
            }
            verify(signature).map(drop)
        }
    }
}

#[tracing::instrument(skip_all, fields(gateway = %request.gateway_id, readings = request.readings.len()))]
pub(crate) async fn submit_readings(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<SubmitQuery>,
    Json(request): Json<SubmitReadings>,
) -> Result<Response, ApiError> {
    if request.readings.len() > SUBMIT_READINGS_MAX {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("{} readings, limit {SUBMIT_READINGS_MAX}", request.readings.len()),
        ));
    }
    // Admitted before any verification, so a flood costs a counter check per request. Held until
    // answered, or by the background proposal of a `?wait=false` submission until it finishes.
    let permit = app.admission.admit(&request.gateway_id).map_err(|busy| {
        app.metrics.busy(busy.code());
        ApiError::busy(busy)
    })?;
    if let Err((reason, detail)) = check_gateway(&app, &request) {
        app.metrics.gateway_refused(reason);
        tracing::warn!(gateway = %request.gateway_id, reason, %detail, "reading batch refused");
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, reason, detail));
    }
    if let Route::Leader(leader) = route(&app)? {
        let path = if query.wait { "/v1/readings" } else { "/v1/readings?wait=false" };
        return forward(&app, &headers, &leader, path, &request).await;
    }
    let count = request.readings.len();
    app.metrics.readings_submitted.inc_by(count as u64);
    let mut outcomes: Vec<Option<ReadingOutcome>> = vec![None; count];
    let mut candidates: Vec<Candidate> = Vec::new();
    for (position, envelope) in request.readings.iter().enumerate() {
        let signed = match envelope.open() {
            Ok(signed) => signed,
            Err(error) => {
                outcomes[position] = Some(rejected(error.code()));
                continue;
            }
        };
        let reading = signed.reading();
        let public_key = match state::meter(&app.store.state(), &reading.meter_id) {
            None => {
                outcomes[position] = Some(rejected("unknown_meter"));
                continue;
            }
            Some(record) => match record.keys.key_for(reading.key_id, reading.interval_start) {
                Ok(public_key) => public_key,
                Err(refusal) => {
                    outcomes[position] = Some(rejected(refusal.code()));
                    continue;
                }
            },
        };
        let digest = signed.digest();
        // An exact duplicate of a settled reading is answered from state and never proposed: a
        // replayed history grows nothing. Its bytes are those the leader verified before, so its
        // signature is not checked again.
        let conflicts_with = match settled_digest(&app, &reading.meter_id, reading.key_id, reading.sequence) {
            Some(settled) if settled == digest => {
                outcomes[position] = Some(ReadingOutcome {
                    digest: Some(digest.to_string()),
                    status: OutcomeStatus::Duplicate,
                    reason: None,
                });
                continue;
            }
            // Settled before the history this node holds (it joined from a snapshot and has not
            // fetched the older history yet): the state's ranges still know the sequence, and
            // the state machine would answer `duplicate` whatever the bytes. Nothing to propose.
            None if !crate::danger::dedup_off()
                && state::sequence_settled(&app.store.state(), &reading.meter_id, reading.key_id, reading.sequence) =>
            {
                outcomes[position] = Some(ReadingOutcome {
                    digest: Some(digest.to_string()),
                    status: OutcomeStatus::Duplicate,
                    reason: None,
                });
                continue;
            }
            other => other,
        };
        candidates.push(Candidate { position, signed, public_key, backfill: envelope.backfill, conflicts_with });
    }
    // The leader verifies every signature itself before proposing (DESIGN.md, trust model).
    let items: Vec<(SignedReading, [u8; 32])> =
        candidates.iter().map(|candidate| (candidate.signed.clone(), candidate.public_key)).collect();
    let verified = if items.is_empty() {
        Vec::new()
    } else if app.verify_inline {
        // Seeded from the node's generator: fixed by the simulation's seed, entropy otherwise.
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_rng(crate::runtime::ThreadRng)
            .map_err(|error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", error.to_string()))?;
        verify_batch(items, &mut rng)
    } else {
        tokio::task::spawn_blocking(move || verify_batch(items, &mut rand::thread_rng()))
            .await
            .map_err(|error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", error.to_string()))?
    };
    let mut batch = Vec::new();
    let mut batch_positions = Vec::new();
    for (candidate, outcome) in candidates.into_iter().zip(verified) {
        let digest = candidate.signed.digest().to_string();
        match (outcome, candidate.conflicts_with) {
            (Ok(_), Some(settled)) => {
                // Validly signed by the meter, other bytes than the settled reading: the meter
                // equivocates. Refused with an alarm and never proposed, so a replayed
                // equivocation grows nothing either.
                let meter = app.log_id(candidate.signed.reading().meter_id.as_str());
                tracing::error!(%meter, %digest, settled = %settled, "equivocation: same meter and sequence, different bytes");
                outcomes[candidate.position] = Some(ReadingOutcome {
                    digest: Some(digest),
                    status: OutcomeStatus::Equivocation,
                    reason: Some(ReadingResult::Equivocation.code().to_string()),
                });
            }
            (Ok(reading), None) => {
                batch_positions.push((candidate.position, digest));
                batch.push(BatchReading { reading, backfill: candidate.backfill });
            }
            (Err(refused), _) => {
                let meter = app.log_id(refused.signed.reading().meter_id.as_str());
                tracing::info!(%meter, error = %refused.error, "reading refused by the leader");
                outcomes[candidate.position] =
                    Some(ReadingOutcome { digest: Some(digest), ..rejected("bad_signature") });
            }
        }
    }
    let mut tx_id = None;
    let mut log_index = None;
    if !batch.is_empty() && !query.wait {
        // Answer at once with the transaction id; the client asks GET /v1/transactions/{tx_id}.
        let id = crate::runtime::new_tx_id();
        tx_id = Some(id.to_string());
        app.pending.lock().expect("pending lock is never poisoned").insert(id);
        let body = TxBody::Readings(ReadingBatch { gateway_id: request.gateway_id.clone(), readings: batch });
        let background = app.clone();
        tokio::spawn(async move {
            // The proposal keeps the submission's place in the in-flight bounds until it ends.
            let _permit = permit;
            if let Err(error) = propose_as(&background, id, body).await {
                tracing::warn!(tx_id = %id, ?error, "proposal without waiting failed");
            }
            background.pending.lock().expect("pending lock is never poisoned").remove(&id);
        });
        for (position, digest) in batch_positions {
            outcomes[position] =
                Some(ReadingOutcome { digest: Some(digest), status: OutcomeStatus::Pending, reason: None });
        }
    } else if !batch.is_empty() {
        let id = crate::runtime::new_tx_id();
        let (index, result) = propose_as(
            &app,
            id,
            TxBody::Readings(ReadingBatch { gateway_id: request.gateway_id.clone(), readings: batch }),
        )
        .await?;
        log_index = Some(index);
        tx_id = Some(id.to_string());
        for ((position, digest), result) in batch_positions.into_iter().zip(result.readings) {
            let (status, reason) = match result {
                ReadingResult::Accepted => (OutcomeStatus::Accepted, None),
                ReadingResult::Duplicate => (OutcomeStatus::Duplicate, None),
                ReadingResult::Equivocation => {
                    tracing::error!(%digest, "equivocation: same meter and sequence, different bytes");
                    (OutcomeStatus::Equivocation, Some(result.code().to_string()))
                }
                other => (OutcomeStatus::Rejected, Some(other.code().to_string())),
            };
            outcomes[position] = Some(ReadingOutcome { digest: Some(digest), status, reason });
        }
    }
    let outcomes: Vec<ReadingOutcome> =
        outcomes.into_iter().map(|outcome| outcome.expect("every reading gets an outcome")).collect();
    for outcome in &outcomes {
        match outcome.status {
            OutcomeStatus::Accepted => app.metrics.readings_accepted.inc(),
            OutcomeStatus::Duplicate => app.metrics.readings_duplicate.inc(),
            OutcomeStatus::Equivocation => app.metrics.readings_equivocation.inc(),
            OutcomeStatus::Rejected => {
                app.metrics.reject(outcome.reason.as_deref().unwrap_or("unknown"));
                0
            }
            OutcomeStatus::Pending => 0,
        };
    }
    Ok(Json(SubmitReadingsResponse { tx_id, log_index, outcomes }).into_response())
}
