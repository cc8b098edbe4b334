//! Gap recovery: asks meters for the sequences they are missing.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use domain::ids::MeterId;
use rumqttc::{AsyncClient, QoS};

use crate::limits::*;
use crate::Shared;

/// A backfill command (docs/mqtt.md).
#[derive(Debug, serde::Serialize)]
pub(crate) struct BackfillCommand {
    pub(crate) from: u64,
    pub(crate) to: u64,
}

/// Gap recovery: asks meters with missing sequences to send them again on their backfill topics.
/// Each round (every `GAP_RETRY_INTERVAL`) asks for at most `BACKFILL_SEQUENCES_PER_ROUND`
/// sequences, so the answers fit the broker's queue for us (mosquitto's default: 1,000) next to
/// live traffic; rounds continue where the last one stopped. A meter is asked again only
/// `GAP_RETRY_AFTER` after its last request (answers take time on a loaded link), and a meter whose
/// whole missing set was asked for `GAP_REQUESTS_MAX` times without arriving is reported
/// unfillable (logged, counted) and no longer asked for.
pub(crate) async fn gap_loop(shared: Shared, client: AsyncClient) {
    let mut cursor: Option<MeterId> = None;
    let mut last_asked: HashMap<MeterId, Instant> = HashMap::new();
    loop {
        tokio::time::sleep(GAP_RETRY_INTERVAL).await;
        if shared.metrics.over_disk_budget.load(Ordering::Relaxed) {
            // The answers could not be taken: asking would only use up the attempts.
            continue;
        }
        let mut requests = Vec::new();
        let mut changed = Vec::new();
        // Bookkeeping is staged on copies, written, and only then installed (the tracker's
        // memory never runs ahead of its disk); the lock is released before publishing, which
        // waits on the MQTT loop, which may wait on ingest, which waits on this lock.
        let writer = shared.tracker_write.lock().await;
        {
            let tracked = shared.tracker.lock().expect("tracker lock is never poisoned");
            let mut budget = BACKFILL_SEQUENCES_PER_ROUND;
            let start = cursor.clone();
            let (after, before): (Vec<MeterId>, Vec<MeterId>) = tracked
                .iter()
                .filter(|(_, state)| !state.missing.is_empty())
                .map(|(meter, _)| meter.clone())
                .filter(|meter| last_asked.get(meter).is_none_or(|at| at.elapsed() >= GAP_RETRY_AFTER))
                .partition(|meter| start.as_ref().is_none_or(|start| meter >= start));
            for meter in after.into_iter().chain(before) {
                if budget == 0 {
                    cursor = Some(meter);
                    break;
                }
                let mut state = tracked.get(&meter).expect("listed above").clone();
                if state.requests >= GAP_REQUESTS_MAX {
                    let unfilled = state.missing_count();
                    tracing::warn!(%meter, unfilled, ranges = ?state.missing, "missing readings not recovered by backfill");
                    shared.metrics.gap_sequences_unfilled.inc_by(unfilled);
                    state.missing.clear();
                    state.requests = 0;
                    changed.push((meter.clone(), state.clone()));
                    continue;
                }
                // A Modbus meter is asked through its device's history model; an MQTT one on its
                // site's backfill topic.
                let topic = if state.site.starts_with("modbus://") {
                    state.site.clone()
                } else {
                    format!("wattle/v1/{}/{meter}/cmd/backfill", state.site)
                };
                let mut whole = true;
                'ranges: for &(from, to) in &state.missing {
                    let mut next = from;
                    while next <= to {
                        if budget == 0 {
                            whole = false;
                            break 'ranges;
                        }
                        let end = to.min(next + BACKFILL_SPAN_MAX.min(budget) - 1);
                        requests.push((topic.clone(), BackfillCommand { from: next, to: end }));
                        budget -= end - next + 1;
                        next = end + 1;
                    }
                }
                last_asked.insert(meter.clone(), Instant::now());
                if whole {
                    state.requests += 1;
                    changed.push((meter.clone(), state.clone()));
                } else {
                    cursor = Some(meter.clone());
                }
            }
            if budget > 0 {
                cursor = None;
            }
            last_asked.retain(|meter, _| tracked.get(meter).is_some_and(|state| !state.missing.is_empty()));
        }
        if !changed.is_empty() {
            let (store, tracker) = (shared.store.clone(), shared.tracker.clone());
            let written = tokio::task::spawn_blocking(move || {
                store.put_meters(&changed)?;
                tracker.lock().expect("tracker lock is never poisoned").extend(changed);
                anyhow::Ok(())
            })
            .await;
            match written {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "gap bookkeeping not stored"),
                Err(error) => tracing::warn!(%error, "gap bookkeeping task failed"),
            }
        }
        drop(writer);
        for (topic, command) in requests {
            if let Some(device) = shared.modbus_backfill.get(&topic) {
                if device.try_send((command.from, command.to)).is_ok() {
                    shared.metrics.backfill_requests.inc();
                }
                continue;
            }
            let payload = serde_json::to_vec(&command).expect("a command serialises");
            match client.publish(&topic, QoS::AtLeastOnce, false, payload).await {
                Ok(()) => {
                    shared.metrics.backfill_requests.inc();
                }
                Err(error) => tracing::warn!(%error, %topic, "backfill request not sent"),
            }
        }
    }
}
