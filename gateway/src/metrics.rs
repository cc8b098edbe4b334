//! The gateway's counters and their Prometheus exposition on `/metrics`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::{tracker, Shared};

/// Counters exported on `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub(crate) readings_in: AtomicU64,
    pub(crate) readings_accepted: AtomicU64,
    pub(crate) readings_forwarded: AtomicU64,
    pub(crate) readings_duplicate_at_ledger: AtomicU64,
    pub(crate) forward_failures: AtomicU64,
    pub(crate) forward_latency_ms_last: AtomicU64,
    pub(crate) rejected_by_reason: Mutex<HashMap<String, u64>>,
    pub(crate) mqtt_connected: AtomicBool,
    pub(crate) mqtt_subscribed: AtomicBool,
    pub(crate) duplicates_dropped: AtomicU64,
    pub(crate) gap_sequences_opened: AtomicU64,
    pub(crate) gap_sequences_filled: AtomicU64,
    pub(crate) gap_sequences_quarantined: AtomicU64,
    pub(crate) gap_sequences_unfilled: AtomicU64,
    pub(crate) backfill_requests: AtomicU64,
    pub(crate) modbus_polls: AtomicU64,
    pub(crate) modbus_errors_by_reason: Mutex<HashMap<String, u64>>,
    pub(crate) readings_attested: AtomicU64,
    pub(crate) readings_deferred_disk: AtomicU64,
    pub(crate) disk_bytes: AtomicU64,
    pub(crate) over_disk_budget: AtomicBool,
    pub(crate) readings_released: AtomicU64,
    pub(crate) auto_releases: AtomicU64,
    pub(crate) ledger_retries: AtomicU64,
    pub(crate) garbage_bytes: AtomicU64,
}

impl Metrics {
    pub(crate) fn modbus_error(&self, reason: &str) {
        *self
            .modbus_errors_by_reason
            .lock()
            .expect("metrics lock is never poisoned")
            .entry(reason.to_string())
            .or_default() += 1;
    }

    pub(crate) fn reject(&self, reason: &str) {
        *self
            .rejected_by_reason
            .lock()
            .expect("metrics lock is never poisoned")
            .entry(reason.to_string())
            .or_default() += 1;
    }
}

/// The Prometheus exposition of every counter.
pub(crate) fn render(shared: &Shared) -> String {
    let m = &shared.metrics;
    let mut out = String::new();
    let mut line = |name: &str, help: &str, kind: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    line(
        "wattle_gateway_readings_in_total",
        "Messages received from MQTT.",
        "counter",
        m.readings_in.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_readings_accepted_total",
        "Readings verified and stored in the outbox.",
        "counter",
        m.readings_accepted.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_readings_forwarded_total",
        "Readings the ledger reported final.",
        "counter",
        m.readings_forwarded.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_duplicates_total",
        "Readings the ledger had already committed.",
        "counter",
        m.readings_duplicate_at_ledger.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_forward_failures_total",
        "Failed forwards (retried with backoff).",
        "counter",
        m.forward_failures.load(Ordering::Relaxed),
    );
    line("wattle_gateway_outbox_depth", "Readings waiting for the ledger.", "gauge", shared.store.outbox_depth());
    line(
        "wattle_gateway_duplicates_dropped_total",
        "Readings received again with the same signed bytes (dropped at the gateway).",
        "counter",
        m.duplicates_dropped.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_gap_sequences_opened_total",
        "Sequences found missing (a later sequence arrived first).",
        "counter",
        m.gap_sequences_opened.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_gap_sequences_filled_total",
        "Missing sequences that arrived later (backfill).",
        "counter",
        m.gap_sequences_filled.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_gap_sequences_quarantined_total",
        "Missing sequences whose reading arrived but was quarantined (backfill cannot bring other bytes).",
        "counter",
        m.gap_sequences_quarantined.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_gap_sequences_unfilled_total",
        "Missing sequences given up after the last backfill request.",
        "counter",
        m.gap_sequences_unfilled.load(Ordering::Relaxed),
    );
    let open: u64 = shared.tracker.lock().expect("tracker lock").values().map(tracker::MeterState::missing_count).sum();
    line("wattle_gateway_gap_sequences_open", "Sequences missing right now.", "gauge", open);
    line(
        "wattle_gateway_backfill_requests_total",
        "Backfill commands published to meters.",
        "counter",
        m.backfill_requests.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_forward_latency_ms",
        "Latency of the last forward to the ledger.",
        "gauge",
        m.forward_latency_ms_last.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_modbus_polls_total",
        "Modbus polls answered.",
        "counter",
        m.modbus_polls.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_readings_attested_total",
        "Readings of unsigned meters attested (signed) by this gateway.",
        "counter",
        m.readings_attested.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_readings_deferred_disk_budget_total",
        "Messages not taken because the database reached its disk budget (recovered by gap recovery).",
        "counter",
        m.readings_deferred_disk.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_disk_bytes",
        "Bytes of the gateway's database.",
        "gauge",
        m.disk_bytes.load(Ordering::Relaxed),
    );
    line("wattle_gateway_disk_budget_bytes", "The configured disk budget.", "gauge", shared.config.disk_budget_bytes);
    line(
        "wattle_gateway_retry_depth",
        "Readings the ledger refused for a cause that may go away, waiting to be submitted again.",
        "gauge",
        shared.store.retry_depth(),
    );
    line(
        "wattle_gateway_ledger_retries_total",
        "Refusals by the ledger that put a reading into the retry queue (or back into it).",
        "counter",
        m.ledger_retries.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_readings_released_total",
        "Quarantine entries re-submitted through the checks (operator releases and automatic ones).",
        "counter",
        m.readings_released.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_readings_released_automatically_total",
        "Unverified readings released because the registry learned their meter.",
        "counter",
        m.auto_releases.load(Ordering::Relaxed),
    );
    let garbage = shared.store.garbage_counts();
    line(
        "wattle_gateway_garbage_entries",
        "Entries in the bounded garbage store (garbage and unverified readings).",
        "gauge",
        garbage.entries.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_garbage_bytes",
        "Bytes of the garbage database (outside the disk budget).",
        "gauge",
        m.garbage_bytes.load(Ordering::Relaxed),
    );
    let _ = writeln!(
        out,
        "# HELP wattle_gateway_garbage_dropped_total Garbage-store entries dropped, oldest first, past the bound \
         or the retention, by class.\n# TYPE wattle_gateway_garbage_dropped_total counter\n\
         wattle_gateway_garbage_dropped_total{{class=\"garbage\"}} {}\n\
         wattle_gateway_garbage_dropped_total{{class=\"unverified\"}} {}",
        garbage.dropped_garbage.load(Ordering::Relaxed),
        garbage.dropped_unverified.load(Ordering::Relaxed)
    );
    labelled(
        &mut out,
        "wattle_gateway_modbus_errors_total",
        "Modbus polls that failed or returned invalid data, by reason.",
        &m.modbus_errors_by_reason,
    );
    labelled(
        &mut out,
        "wattle_gateway_readings_rejected_total",
        "Readings quarantined, by reason.",
        &m.rejected_by_reason,
    );
    out
}

/// A counter with one line per reason, sorted.
pub(crate) fn labelled(out: &mut String, name: &str, help: &str, counts: &Mutex<HashMap<String, u64>>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    let mut reasons: Vec<(String, u64)> =
        counts.lock().expect("metrics lock is never poisoned").iter().map(|(k, v)| (k.clone(), *v)).collect();
    reasons.sort();
    for (reason, count) in reasons {
        let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {count}");
    }
}
