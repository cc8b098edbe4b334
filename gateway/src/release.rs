//! Releasing quarantined readings (`POST /v1/quarantine/release`, `wattle quarantine release`):
//! held and unverified entries that match a filter are re-submitted through the ingest stage,
//! where they pass every check again with the gateway's current configuration and registry; the
//! entry is deleted in the same write that stores the reading's new fate. Unverified readings
//! are also released on their own whenever the registry learns a meter.

use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::ingest::{Incoming, Release};
use crate::limits::*;
use crate::mqtt::site_of;
use crate::quarantine::ReasonClass;
use crate::store::QuarantineEntry;
use crate::Shared;

/// Which entries to release; every given field must match.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseFilter {
    /// Reason code, e.g. `clock_future` or `ledger_no_tariff`.
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub meter: Option<String>,
    /// Inclusive sequence range.
    #[serde(default)]
    pub from_sequence: Option<u64>,
    #[serde(default)]
    pub to_sequence: Option<u64>,
    /// Only entries of this class (`held` or `unverified`).
    #[serde(default)]
    pub class: Option<ReasonClass>,
}

/// What a release did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReleaseReport {
    /// Ids of the entries re-submitted (each is deleted once its reading's new fate is stored).
    pub released: Vec<u64>,
    /// Entries that matched but cannot be released (final or garbage, or cut payloads).
    pub not_releasable: u64,
    /// Entries that matched but whose meter is still unknown (automatic releases only).
    pub waiting: u64,
    /// Entries looked at.
    pub scanned: u64,
    /// Whether the scan stopped at `RELEASE_SCAN_MAX` or the release at `RELEASE_ENTRIES_MAX`:
    /// ask again for the rest.
    pub more: bool,
}

impl ReleaseFilter {
    fn matches(&self, entry: &QuarantineEntry) -> bool {
        let sequence_in = |bound: Option<u64>, inside: fn(u64, u64) -> bool| {
            bound.is_none_or(|bound| entry.sequence.is_some_and(|sequence| inside(sequence, bound)))
        };
        self.reason.as_ref().is_none_or(|reason| &entry.reason == reason)
            && self.meter.as_ref().is_none_or(|meter| entry.meter.as_ref() == Some(meter))
            && self.class.is_none_or(|class| entry.class == class)
            && sequence_in(self.from_sequence, |sequence, from| sequence >= from)
            && sequence_in(self.to_sequence, |sequence, to| sequence <= to)
    }
}

/// Releases the matching entries: sends them into the ingest queue (waiting for room, so a
/// release never overruns it). `known` further filters by meter (the registry).
pub(crate) async fn release(
    shared: &Shared,
    filter: &ReleaseFilter,
    known: impl Fn(&str) -> bool,
) -> anyhow::Result<ReleaseReport> {
    let mut report = ReleaseReport::default();
    let mut from = 0u64;
    let mut chosen = Vec::new();
    'scan: loop {
        let store = shared.store.clone();
        let page = tokio::task::spawn_blocking(move || store.quarantine(from, QUARANTINE_PAGE_MAX)).await??;
        let Some(last) = page.last() else { break };
        from = last.id + 1;
        for entry in page {
            report.scanned += 1;
            if report.scanned as usize > RELEASE_SCAN_MAX {
                report.more = true;
                break 'scan;
            }
            if !filter.matches(&entry) {
                continue;
            }
            if !entry.meter.as_deref().is_none_or(&known) {
                report.waiting += 1;
                continue;
            }
            let class = entry.class;
            if !class.is_releasable() || !entry.whole {
                report.not_releasable += 1;
                continue;
            }
            if chosen.len() >= RELEASE_ENTRIES_MAX {
                report.more = true;
                break 'scan;
            }
            chosen.push((entry, class));
        }
    }
    for (entry, class) in chosen {
        // A reading the ledger refused was received on its meter's topic; its site is unknown
        // here, and gap recovery already knows the meter's site.
        let site = site_of(&entry.source).unwrap_or_default().to_string();
        let incoming = Incoming {
            source: entry.source.clone(),
            site,
            payload: entry.payload.into_bytes(),
            ack: None,
            rejected: None,
            release: Some(Release { id: entry.id, class }),
        };
        shared.ingest.send(incoming).await.map_err(|_| anyhow::anyhow!("the gateway is stopping"))?;
        report.released.push(entry.id);
    }
    if !report.released.is_empty() {
        tracing::info!(released = report.released.len(), ?filter, "quarantine entries released");
    }
    Ok(report)
}

/// Releases unverified readings whenever the registry learns a meter or key: a meter registered
/// after its first readings arrived loses none of them.
pub(crate) async fn release_loop(shared: Shared) {
    let filter = ReleaseFilter { class: Some(ReasonClass::Unverified), ..ReleaseFilter::default() };
    loop {
        // Readings stay unverified until their meter is registered; a registration after the
        // meter fell silent is found by asking the ledger now and then.
        let woken = tokio::time::timeout(REGISTRY_POLL_WHILE_UNVERIFIED, shared.registry_grew.notified()).await;
        if woken.is_err() {
            if shared.store.garbage_counts().unverified_waiting.load(Ordering::Relaxed) {
                if let Err(error) = crate::registry::refresh_registry(&shared).await {
                    tracing::warn!(%error, "registry refresh for unverified readings failed");
                }
            }
            continue;
        }
        let store = shared.store.clone();
        match tokio::task::spawn_blocking(move || store.retry_all_now()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "making retries due failed"),
            Err(error) => tracing::warn!(%error, "retry task failed"),
        }
        let known: std::collections::HashSet<String> = {
            let registry = shared.registry.lock().expect("registry lock is never poisoned");
            registry.meters.keys().map(|meter| meter.to_string()).collect()
        };
        match release(&shared, &filter, |meter| known.contains(meter)).await {
            Ok(report) => {
                shared.metrics.auto_releases.inc_by(report.released.len() as u64);
                if report.released.is_empty() && report.waiting == 0 && !report.more {
                    shared.store.garbage_counts().unverified_waiting.store(false, Ordering::Relaxed);
                }
                if report.more {
                    shared.registry_grew.notify_one();
                }
            }
            Err(error) => tracing::warn!(%error, "releasing unverified readings failed"),
        }
    }
}
