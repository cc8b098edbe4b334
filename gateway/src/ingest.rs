//! The ingest stage: batches from MQTT, Modbus and quarantine releases are decoded, verified
//! against the registry (one batch verification), checked by the tracker, and stored in one
//! synced write before their messages are acknowledged. The tracker's in-memory state changes
//! only once that write succeeded.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use domain::ids::MeterId;
use domain::reading::{Envelope, Reading, SignedReading};
use domain::verify::verify_batch;
use rumqttc::Publish;
use tokio::sync::mpsc;

use crate::limits::*;
use crate::quarantine::{gateway_reason_class, ReasonClass};
use crate::registry::{refresh_registry, registry_missing};
use crate::store::{QuarantineEntry, Released, Tracking};
use crate::{tracker, Shared};

/// A message for the pipeline, from MQTT, Modbus or a quarantine release.
pub(crate) struct Incoming {
    /// MQTT topic, or `modbus://HOST:PORT/UNIT`.
    pub(crate) source: String,
    /// Where gap recovery asks: the MQTT site, or the Modbus source.
    pub(crate) site: String,
    pub(crate) payload: Vec<u8>,
    /// The MQTT message to acknowledge once the batch is durable.
    pub(crate) ack: Option<Publish>,
    /// Rejected by the input already (reason code, detail): quarantined as is.
    pub(crate) rejected: Option<(&'static str, String)>,
    /// Re-submitted from the quarantine entry with this id (deleted in the batch's write).
    pub(crate) release: Option<Release>,
}

/// Where a released message came from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Release {
    pub(crate) id: u64,
    pub(crate) class: ReasonClass,
}

/// A quarantine entry for a message rejected with `reason` (its class decides where it is kept).
pub(crate) fn quarantine_entry(
    shared: &Shared,
    source: &str,
    (reason, class): (&str, ReasonClass),
    detail: String,
    reading: Option<(&Reading, String)>,
    payload: &[u8],
) -> QuarantineEntry {
    shared.metrics.reject(reason);
    let kept = &payload[..payload.len().min(QUARANTINE_PAYLOAD_BYTES_MAX)];
    let mut text = String::from_utf8_lossy(kept).into_owned();
    let whole = payload.len() == kept.len() && std::str::from_utf8(kept).is_ok();
    if payload.len() > kept.len() {
        let _ = write!(text, "... ({} bytes in all)", payload.len());
    }
    let mut detail = detail;
    if detail.len() > QUARANTINE_DETAIL_BYTES_MAX {
        let mut cut = QUARANTINE_DETAIL_BYTES_MAX;
        while !detail.is_char_boundary(cut) {
            cut -= 1;
        }
        detail.truncate(cut);
        detail.push_str("...");
    }
    tracing::warn!(source, reason, class = class.as_str(), %detail, "reading quarantined");
    QuarantineEntry {
        id: 0,
        received_ms: shared.config.clock.now().0,
        source: source.to_string(),
        reason: reason.to_string(),
        class,
        detail,
        digest: reading.as_ref().map(|(_, digest)| digest.clone()),
        meter: reading.as_ref().map(|(reading, _)| reading.meter_id.to_string()),
        sequence: reading.as_ref().map(|(reading, _)| reading.sequence.0),
        payload: text,
        whole,
    }
}

/// The class of a reason the gateway gives itself.
fn own(reason: &str) -> (&str, ReasonClass) {
    (reason, gateway_reason_class(reason))
}

pub(crate) async fn ingest_loop(
    shared: Shared,
    acks: mpsc::UnboundedSender<Publish>,
    mut receiver: mpsc::Receiver<Incoming>,
) {
    let mut batch = Vec::with_capacity(INGEST_BATCH_MAX);
    loop {
        if receiver.recv_many(&mut batch, INGEST_BATCH_MAX).await == 0 {
            return;
        }
        // A gateway that has never seen the registry cannot tell an unknown meter from one it
        // has not heard of yet: readings wait for it (back-pressure on MQTT; Modbus polls wait
        // too) rather than be quarantined as unknown_meter. Garbage needs no registry.
        if registry_missing(&shared) {
            let (garbage, readings): (Vec<Incoming>, Vec<Incoming>) = batch.drain(..).partition(|incoming| {
                incoming.rejected.is_some()
                    || Envelope::parse_json(&incoming.payload).and_then(|envelope| envelope.open()).is_err()
            });
            take(&shared, &acks, garbage).await;
            batch = readings;
            while !batch.is_empty() && registry_missing(&shared) {
                if refresh_registry(&shared).await.is_err() {
                    tokio::time::sleep(REGISTRY_WAIT_RETRY).await;
                }
            }
        }
        take(&shared, &acks, std::mem::take(&mut batch)).await;
    }
}

/// Stores a batch (outbox and quarantine, synced), then acknowledges its MQTT messages.
pub(crate) async fn take(shared: &Shared, acks: &mpsc::UnboundedSender<Publish>, batch: Vec<Incoming>) {
    if batch.is_empty() {
        return;
    }
    let result = if shared.metrics.over_disk_budget.load(Ordering::Relaxed) {
        // Over the disk budget: take nothing. The readings are acknowledged so the broker
        // does not queue (and then drop) them for us; the meters still hold them, and the
        // first reading taken after the pause opens the gap that recovers them.
        shared.metrics.readings_deferred_disk.inc_by(batch.len() as u64);
        Ok(())
    } else {
        process_batch(shared, &batch).await
    };
    match result {
        Ok(()) => {
            for publish in batch.into_iter().filter_map(|incoming| incoming.ack) {
                // Only fails once the gateway stops; the broker then redelivers.
                let _ = acks.send(publish);
            }
            shared.outbox_ready.notify_one();
        }
        Err(error) => {
            // Nothing was acknowledged: the broker redelivers after reconnect.
            tracing::error!(%error, "storing a batch failed; readings not acknowledged");
            tokio::time::sleep(FORWARD_BACKOFF_MAX).await;
        }
    }
}

#[tracing::instrument(skip_all, fields(messages = batch.len()))]
pub(crate) async fn process_batch(shared: &Shared, batch: &[Incoming]) -> anyhow::Result<()> {
    shared.metrics.readings_in.inc_by(batch.iter().filter(|incoming| incoming.release.is_none()).count() as u64);
    let mut rejected = Vec::new();
    let mut released = Vec::new();
    let mut opened: Vec<(usize, Envelope, SignedReading)> = Vec::new();
    for (index, publish) in batch.iter().enumerate() {
        let topic = publish.source.as_str();
        if let Some(release) = publish.release {
            // Released twice (two requests at once): the first release took it.
            if shared.store.quarantine_entry(release.id)?.is_none() {
                continue;
            }
            released.push(Released { id: release.id, bounded: release.class.is_bounded() });
            shared.metrics.readings_released.inc();
        }
        if let Some((reason, detail)) = &publish.rejected {
            rejected.push(quarantine_entry(shared, topic, own(reason), detail.clone(), None, &publish.payload));
            continue;
        }
        match Envelope::parse_json(&publish.payload)
            .and_then(|envelope| envelope.open().map(|signed| (envelope, signed)))
        {
            Ok((envelope, signed)) => opened.push((index, envelope, signed)),
            Err(error) => rejected.push(quarantine_entry(
                shared,
                topic,
                own(error.code()),
                error.to_string(),
                None,
                &publish.payload,
            )),
        }
    }
    let needs_refresh = {
        let registry = shared.registry.lock().expect("registry lock is never poisoned");
        let stale = registry.refreshed.is_none_or(|at| at.elapsed() >= REGISTRY_REFRESH_MIN);
        stale && opened.iter().any(|(_, _, signed)| !registry.meters.contains_key(&signed.reading().meter_id))
    };
    if needs_refresh {
        if let Err(error) = refresh_registry(shared).await {
            tracing::warn!(%error, "registry refresh failed");
        }
    }
    let mut candidates = Vec::new();
    let mut candidate_envelopes = Vec::new();
    {
        let registry = shared.registry.lock().expect("registry lock is never poisoned");
        for (index, envelope, signed) in opened {
            let topic = batch[index].source.as_str();
            let reading = signed.reading();
            let unverified = match registry.meters.get(&reading.meter_id) {
                None => Some(("unknown_meter", format!("meter {} is not registered", reading.meter_id))),
                Some(entry) => match entry.keys.key_for(reading.key_id, reading.interval_start) {
                    Ok(public_key) => {
                        candidates.push((signed.clone(), public_key));
                        candidate_envelopes.push((index, envelope));
                        None
                    }
                    Err(refusal) => Some((
                        refusal.code(),
                        format!(
                            "meter {} key {} does not sign the interval from {}: {refusal}",
                            reading.meter_id, reading.key_id.0, reading.interval_start.0
                        ),
                    )),
                },
            };
            if let Some((reason, detail)) = unverified {
                rejected.push(quarantine_entry(
                    shared,
                    topic,
                    own(reason),
                    detail,
                    Some((reading, signed.digest().to_string())),
                    &batch[index].payload,
                ));
            }
        }
    }
    let outcomes = tokio::task::spawn_blocking(move || verify_batch(candidates, &mut rand::thread_rng())).await?;
    let mut verified = Vec::new();
    for ((index, envelope), outcome) in candidate_envelopes.into_iter().zip(outcomes) {
        match outcome {
            Ok(reading) => verified.push((index, envelope, reading)),
            Err(refused) => rejected.push(quarantine_entry(
                shared,
                &batch[index].source,
                own("bad_signature"),
                format!(
                    "meter {} sequence {}: {}",
                    refused.signed.reading().meter_id,
                    refused.signed.reading().sequence,
                    refused.error
                ),
                Some((refused.signed.reading(), refused.signed.digest().to_string())),
                &batch[index].payload,
            )),
        }
    }
    // Sequence, register, energy and clock checks, against copies of the tracking state: one
    // batch at a time is staged and committed, and memory changes only after the write.
    let _writer = shared.tracker_write.lock().await;
    let now_s = shared.config.clock.now().0.div_euclid(1_000);
    let limits = shared.config.limits();
    let mut accepted = Vec::new();
    let mut tracking = Tracking::default();
    let mut staged = tracker::Staged::default();
    let mut changed: BTreeSet<MeterId> = BTreeSet::new();
    let mut in_batch: HashMap<(MeterId, u64), domain::reading::ReadingDigest> = HashMap::new();
    for (index, envelope, verified_reading) in verified {
        let reading = verified_reading.reading();
        let digest = verified_reading.digest();
        let key = (reading.meter_id.clone(), reading.sequence.0);
        let state = staged.state(&shared.tracker, &reading.meter_id);
        let mut seen = match in_batch.get(&key) {
            Some(digest) => Some(*digest),
            // Above the highest sequence settled nothing can have been seen: no lookup.
            None if reading.sequence.0 > state.highest => None,
            None => shared.store.seen(&reading.meter_id, reading.sequence.0)?,
        };
        // A held reading released: its own bytes settled its sequence when it was held, so they
        // are not a duplicate of themselves; it goes through the checks again.
        let held_release = batch[index].release.is_some_and(|release| release.class == ReasonClass::Held);
        if held_release && seen == Some(digest) && !in_batch.contains_key(&key) {
            seen = None;
        }
        if state.site.is_empty() {
            state.site = batch[index].site.clone();
            changed.insert(reading.meter_id.clone());
        }
        let verdict = tracker::check(state, seen, reading, digest, now_s, limits);
        if let tracker::Verdict::Accept { gap_opened, .. } | tracker::Verdict::Reject { gap_opened, .. } = &verdict {
            // The sequence is settled, accepted or held: the same signed bytes again are a
            // duplicate (never quarantined twice), other bytes an equivocation.
            shared.metrics.gap_sequences_opened.inc_by(*gap_opened);
            in_batch.insert(key.clone(), digest);
            tracking.seen.push((key.0, key.1, digest));
            changed.insert(reading.meter_id.clone());
        }
        let (reason, detail) = match verdict {
            tracker::Verdict::Accept { filled, .. } => {
                if filled {
                    shared.metrics.gap_sequences_filled.inc();
                }
                accepted.push(envelope);
                continue;
            }
            tracker::Verdict::Duplicate => {
                shared.metrics.duplicates_dropped.inc();
                continue;
            }
            tracker::Verdict::Equivocation { detail } => ("equivocation", detail),
            tracker::Verdict::Reject { reason, detail, was_missing, .. } => {
                if was_missing {
                    shared.metrics.gap_sequences_quarantined.inc();
                }
                (reason, detail)
            }
        };
        rejected.push(quarantine_entry(
            shared,
            &batch[index].source,
            own(reason),
            detail,
            Some((reading, digest.to_string())),
            &batch[index].payload,
        ));
    }
    staged.retain(|meter| changed.contains(meter));
    let count = accepted.len() as u64;
    let (store, tracker) = (shared.store.clone(), shared.tracker.clone());
    tokio::task::spawn_blocking(move || {
        tracker::commit_durably(&tracker, staged, |meters| {
            tracking.meters = meters;
            store.store_batch(&accepted, rejected, tracking, &released)
        })
    })
    .await??;
    shared.metrics.readings_accepted.inc_by(count);
    Ok(())
}
