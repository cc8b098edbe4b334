//! The forward stage: the outbox head and the due retries to the ledger's `POST /v1/readings`,
//! signed with the gateway's key. Each outcome is final (removed), retryable (into the retry
//! queue with backoff, beside the outbox so the readings behind it keep flowing; held in the
//! quarantine, bytes kept, past the retry horizon) or held (quarantined, bytes kept).

use std::time::{Duration, Instant};

use domain::api::{OutcomeStatus, ReadingOutcome, SubmitReadings, SubmitReadingsResponse};
use domain::reading::Envelope;

use crate::ingest::quarantine_entry;
use crate::limits::*;
use crate::quarantine::{ledger_reason_class, ReasonClass};
use crate::store::{Completion, RetryEntry};
use crate::Shared;

pub(crate) async fn forward_loop(shared: Shared) {
    let mut backoff = FORWARD_BACKOFF_MIN;
    loop {
        match forward_once(&shared).await {
            Ok(0) => {
                backoff = FORWARD_BACKOFF_MIN;
                let _ = tokio::time::timeout(Duration::from_millis(200), shared.outbox_ready.notified()).await;
            }
            Ok(_) => backoff = FORWARD_BACKOFF_MIN,
            Err(error) => {
                let refusal = error.downcast_ref::<LedgerRefused>();
                let (wait, rotate) = after_failure(refusal, backoff);
                if rotate {
                    shared.next_ledger();
                }
                shared.metrics.forward_failures.inc();
                tracing::warn!(%error, ?wait, "forwarding to the ledger failed; retrying");
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(FORWARD_BACKOFF_MAX);
            }
        }
    }
}

/// A ledger's answer other than `200` to a batch: its status, the `Retry-After` it asked for (in
/// seconds; capped by [`LEDGER_RETRY_AFTER_MAX`]) and its body.
#[derive(Debug, thiserror::Error)]
#[error("ledger answered {status}: {body}")]
pub(crate) struct LedgerRefused {
    status: reqwest::StatusCode,
    retry_after: Option<Duration>,
    body: String,
}

/// How long to wait after a failed batch, and whether to try the next ledger URL. A `429` means
/// the leader is busy (every node forwards to it): wait as long as it asked, on the same node. A
/// node that asks for time otherwise (`503 installing_snapshot`) is left for the next one, after
/// at least the time it asked. Anything else (unreachable, timeouts) backs off and moves on.
fn after_failure(refusal: Option<&LedgerRefused>, backoff: Duration) -> (Duration, bool) {
    match refusal {
        Some(LedgerRefused { status, retry_after: Some(asked), .. }) => {
            (backoff.max(*asked).min(LEDGER_RETRY_AFTER_MAX), *status != reqwest::StatusCode::TOO_MANY_REQUESTS)
        }
        _ => (backoff, true),
    }
}

/// The backoff after the `attempts`-th refusal: doubling from the first value to the last.
pub fn retry_backoff(attempts: u32) -> Duration {
    RETRY_BACKOFF_MIN.saturating_mul(1u32 << attempts.saturating_sub(1).min(16)).min(RETRY_BACKOFF_MAX)
}

/// Where one forwarded reading came from.
enum Origin {
    Outbox(u64),
    Retry(Vec<u8>, RetryEntry),
}

/// Sends the due retries and the head of the outbox to the ledger; returns how many readings
/// were answered.
async fn forward_once(shared: &Shared) -> anyhow::Result<usize> {
    let store = shared.store.clone();
    let wall_ms = domain::clock::wall_clock_now().0;
    let (retries, head) = tokio::task::spawn_blocking(move || {
        let retries = store.retry_due(wall_ms, FORWARD_RETRIES_MAX)?;
        let head = store.outbox_head(FORWARD_BATCH_MAX - retries.len())?;
        anyhow::Ok((retries, head))
    })
    .await??;
    let items: Vec<(Origin, Envelope)> = retries
        .into_iter()
        .map(|item| (Origin::Retry(item.key, item.entry.clone()), item.entry.envelope))
        .chain(head.into_iter().map(|(id, envelope)| (Origin::Outbox(id), envelope)))
        .collect();
    if items.is_empty() {
        return Ok(0);
    }
    let started = Instant::now();
    let readings: Vec<Envelope> = items.iter().map(|(_, envelope)| envelope.clone()).collect();
    let gateway_signature =
        Some(domain::api::GatewaySignature::sign(&shared.key, &shared.config.gateway_id, &readings));
    let request = SubmitReadings { gateway_id: shared.config.gateway_id.clone(), readings, gateway_signature };
    let response = shared.http.post(format!("{}/v1/readings", shared.ledger_url())).json(&request).send().await?;
    let status = response.status();
    if !status.is_success() {
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(|seconds| Duration::from_secs(seconds).min(LEDGER_RETRY_AFTER_MAX));
        let body = response.text().await.unwrap_or_default();
        return Err(LedgerRefused { status, retry_after, body }.into());
    }
    let response: SubmitReadingsResponse = response.json().await?;
    anyhow::ensure!(
        response.outcomes.len() == items.len(),
        "ledger answered {} outcomes for {} readings",
        response.outcomes.len(),
        items.len()
    );
    let mut completion = Completion::default();
    let horizon_ms = i64::try_from(shared.config.quarantine.retry_horizon.as_millis()).unwrap_or(i64::MAX);
    let mut final_count = 0u64;
    for ((origin, envelope), outcome) in items.into_iter().zip(&response.outcomes) {
        let class = match outcome.status {
            OutcomeStatus::Accepted => None,
            OutcomeStatus::Duplicate => {
                shared.metrics.readings_duplicate_at_ledger.inc();
                None
            }
            OutcomeStatus::Pending => anyhow::bail!("the ledger answered without waiting for commit"),
            OutcomeStatus::Equivocation => Some(ReasonClass::Final),
            OutcomeStatus::Rejected => Some(ledger_reason_class(reason_of(outcome))),
        };
        let reason = reason_of(outcome).to_string();
        let (attempts, first_refused_ms) = match &origin {
            Origin::Outbox(id) => {
                completion.outbox_done.push(*id);
                (1, wall_ms)
            }
            Origin::Retry(key, entry) => {
                completion.retry_done.push(key.clone());
                (entry.attempts.saturating_add(1), entry.first_refused_ms)
            }
        };
        let quarantine_as = match class {
            None => {
                final_count += 1;
                continue;
            }
            Some(ReasonClass::Retryable) if wall_ms.saturating_sub(first_refused_ms) < horizon_ms => {
                shared.metrics.ledger_retries.inc();
                let due_ms = wall_ms.saturating_add(retry_backoff(attempts).as_millis() as i64);
                completion.retry_again.push((due_ms, RetryEntry { envelope, reason, attempts, first_refused_ms }));
                continue;
            }
            // Past the horizon: held, bytes kept, for `wattle quarantine release`.
            Some(ReasonClass::Retryable) => ReasonClass::Held,
            Some(class) => class,
        };
        final_count += u64::from(quarantine_as == ReasonClass::Final);
        let payload = serde_json::to_vec(&envelope)?;
        let reading = envelope.open().ok();
        completion.quarantined.push(quarantine_entry(
            shared,
            "ledger",
            (&format!("ledger_{reason}"), quarantine_as),
            format!("{:?} after {attempts} submission(s)", outcome.status),
            reading.as_ref().map(|signed| (signed.reading(), signed.digest().to_string())),
            &payload,
        ));
    }
    let count = response.outcomes.len();
    let store = shared.store.clone();
    tokio::task::spawn_blocking(move || store.complete(completion)).await??;
    shared.metrics.readings_forwarded.inc_by(final_count);
    shared.metrics.forward_latency_ms_last.set(started.elapsed().as_millis() as u64);
    tracing::debug!(count, log_index = ?response.log_index, "forwarded to the ledger");
    Ok(count)
}

fn reason_of(outcome: &ReadingOutcome) -> &str {
    outcome.reason.as_deref().unwrap_or("rejected")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review of issue 12: the gateway ignored the ledger's `Retry-After` and came back after its
    /// own 100 ms backoff, and moved on to the next node even when every node forwards to the
    /// same busy leader.
    #[test]
    fn a_busy_ledger_is_left_alone_as_long_as_it_asks() {
        let refused = |status: u16, retry_after: Option<u64>| LedgerRefused {
            status: reqwest::StatusCode::from_u16(status).expect("a status"),
            retry_after: retry_after.map(Duration::from_secs),
            body: String::new(),
        };
        let backoff = FORWARD_BACKOFF_MIN;
        assert_eq!(after_failure(Some(&refused(429, Some(2))), backoff), (Duration::from_secs(2), false));
        assert_eq!(after_failure(Some(&refused(503, Some(1))), backoff), (Duration::from_secs(1), true));
        assert_eq!(after_failure(Some(&refused(429, Some(3_600))), backoff), (LEDGER_RETRY_AFTER_MAX, false));
        assert_eq!(after_failure(Some(&refused(500, None)), backoff), (backoff, true));
        assert_eq!(after_failure(None, FORWARD_BACKOFF_MAX), (FORWARD_BACKOFF_MAX, true));
    }

    #[test]
    fn retry_backoff_doubles_up_to_its_limit() {
        assert_eq!(retry_backoff(1), RETRY_BACKOFF_MIN);
        assert_eq!(retry_backoff(2), RETRY_BACKOFF_MIN * 2);
        assert_eq!(retry_backoff(40), RETRY_BACKOFF_MAX);
        assert_eq!(retry_backoff(u32::MAX), RETRY_BACKOFF_MAX);
    }
}
