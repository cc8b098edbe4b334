//! The gateway's counters and their exposition on `/metrics`, in the OpenMetrics text format
//! through the `prometheus-client` crate (as billing's).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::store::GarbageCounts;
use crate::{tracker, Shared};

/// A gauge of a count or a size: never negative, so `u64` like the values it reports.
pub(crate) type GaugeU64 = Gauge<u64, AtomicU64>;

/// Why a reading was quarantined, or a Modbus poll failed.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabels {
    /// A reason code (`bad_signature`, `modbus_timeout`, `ledger_...`): some are built at run time.
    pub(crate) reason: String,
}

/// Which class of garbage-store entry was dropped.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ClassLabels {
    /// `garbage` or `unverified`.
    pub(crate) class: &'static str,
}

/// Why an operator call was refused.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RefusalLabels {
    /// One of `access::REFUSAL_CODES`.
    pub(crate) code: &'static str,
}

/// The gateway's metrics, registered once. Counters are incremented where things happen; the
/// values other parts own (outbox depth, open gaps, garbage-store counts: the private fields) are
/// copied in by `render` just before encoding, so a scrape reports them as they are now.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub(crate) readings_in: Counter,
    pub(crate) readings_accepted: Counter,
    pub(crate) readings_forwarded: Counter,
    pub(crate) readings_duplicate_at_ledger: Counter,
    pub(crate) forward_failures: Counter,
    outbox_depth: GaugeU64,
    pub(crate) duplicates_dropped: Counter,
    pub(crate) gap_sequences_opened: Counter,
    pub(crate) gap_sequences_filled: Counter,
    pub(crate) gap_sequences_quarantined: Counter,
    pub(crate) gap_sequences_unfilled: Counter,
    gap_sequences_open: GaugeU64,
    pub(crate) backfill_requests: Counter,
    pub(crate) forward_latency_ms_last: GaugeU64,
    pub(crate) modbus_polls: Counter,
    pub(crate) readings_attested: Counter,
    pub(crate) readings_deferred_disk: Counter,
    pub(crate) disk_bytes: GaugeU64,
    disk_budget_bytes: GaugeU64,
    retry_depth: GaugeU64,
    pub(crate) ledger_retries: Counter,
    pub(crate) readings_released: Counter,
    pub(crate) auto_releases: Counter,
    garbage_entries: GaugeU64,
    pub(crate) garbage_bytes: GaugeU64,
    /// The garbage store counts its drops (`GarbageCounts`); this copies them.
    garbage_dropped: Family<ClassLabels, Counter>,
    pub(crate) modbus_errors_by_reason: Family<ReasonLabels, Counter>,
    pub(crate) rejected_by_reason: Family<ReasonLabels, Counter>,
    requests_refused: Family<RefusalLabels, Counter>,
    /// State, not exported: `/healthz` reports these.
    pub(crate) mqtt_connected: AtomicBool,
    pub(crate) mqtt_subscribed: AtomicBool,
    pub(crate) over_disk_budget: AtomicBool,
}

/// Registers `metric` under `name` (after the `wattle_gateway_` prefix) and returns it; a metric
/// is a handle, so the returned copy and the registered one count together.
fn register<M: prometheus_client::registry::Metric + Clone + Default>(
    registry: &mut Registry,
    name: &str,
    help: &str,
) -> M {
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wattle_gateway");
        let r = &mut registry;
        // Fields are initialised in the order written, which is the exposition's order.
        // prometheus-client appends `_total` to a counter's name and a full stop to each help.
        let metrics = Metrics {
            readings_in: register(r, "readings_in", "Messages received from MQTT"),
            readings_accepted: register(r, "readings_accepted", "Readings verified and stored in the outbox"),
            readings_forwarded: register(r, "readings_forwarded", "Readings the ledger reported final"),
            readings_duplicate_at_ledger: register(r, "duplicates", "Readings the ledger had already committed"),
            forward_failures: register(r, "forward_failures", "Failed forwards (retried with backoff)"),
            outbox_depth: register(r, "outbox_depth", "Readings waiting for the ledger"),
            duplicates_dropped: register(
                r,
                "duplicates_dropped",
                "Readings received again with the same signed bytes (dropped at the gateway)",
            ),
            gap_sequences_opened: register(
                r,
                "gap_sequences_opened",
                "Sequences found missing (a later sequence arrived first)",
            ),
            gap_sequences_filled: register(
                r,
                "gap_sequences_filled",
                "Missing sequences that arrived later (backfill)",
            ),
            gap_sequences_quarantined: register(
                r,
                "gap_sequences_quarantined",
                "Missing sequences whose reading arrived but was quarantined (backfill cannot bring other bytes)",
            ),
            gap_sequences_unfilled: register(
                r,
                "gap_sequences_unfilled",
                "Missing sequences given up after the last backfill request",
            ),
            gap_sequences_open: register(r, "gap_sequences_open", "Sequences missing right now"),
            backfill_requests: register(r, "backfill_requests", "Backfill commands published to meters"),
            forward_latency_ms_last: register(r, "forward_latency_ms", "Latency of the last forward to the ledger"),
            modbus_polls: register(r, "modbus_polls", "Modbus polls answered"),
            readings_attested: register(
                r,
                "readings_attested",
                "Readings of unsigned meters attested (signed) by this gateway",
            ),
            readings_deferred_disk: register(
                r,
                "readings_deferred_disk_budget",
                "Messages not taken because the database reached its disk budget (recovered by gap recovery)",
            ),
            disk_bytes: register(r, "disk_bytes", "Bytes of the gateway's database"),
            disk_budget_bytes: register(r, "disk_budget_bytes", "The configured disk budget"),
            retry_depth: register(
                r,
                "retry_depth",
                "Readings the ledger refused for a cause that may go away, waiting to be submitted again",
            ),
            ledger_retries: register(
                r,
                "ledger_retries",
                "Refusals by the ledger that put a reading into the retry queue (or back into it)",
            ),
            readings_released: register(
                r,
                "readings_released",
                "Quarantine entries re-submitted through the checks (operator releases and automatic ones)",
            ),
            auto_releases: register(
                r,
                "readings_released_automatically",
                "Unverified readings released because the registry learned their meter",
            ),
            garbage_entries: register(
                r,
                "garbage_entries",
                "Entries in the bounded garbage store (garbage and unverified readings)",
            ),
            garbage_bytes: register(r, "garbage_bytes", "Bytes of the garbage database (outside the disk budget)"),
            garbage_dropped: register(
                r,
                "garbage_dropped",
                "Garbage-store entries dropped, oldest first, past the bound or the retention, by class",
            ),
            modbus_errors_by_reason: register(
                r,
                "modbus_errors",
                "Modbus polls that failed or returned invalid data, by reason",
            ),
            rejected_by_reason: register(r, "readings_rejected", "Readings quarantined, by reason"),
            requests_refused: register(
                r,
                "requests_refused",
                "Calls of the operator endpoints refused (no, a bad or a revoked token; no token file), by code",
            ),
            mqtt_connected: AtomicBool::new(false),
            mqtt_subscribed: AtomicBool::new(false),
            over_disk_budget: AtomicBool::new(false),
            registry,
        };
        for code in crate::access::REFUSAL_CODES {
            let _ = metrics.requests_refused.get_or_create(&RefusalLabels { code });
        }
        metrics
    }

    /// Counts an operator call refused with `code` (one of `access::REFUSAL_CODES`).
    pub(crate) fn refuse(&self, code: &'static str) {
        self.requests_refused.get_or_create(&RefusalLabels { code }).inc();
    }

    pub(crate) fn modbus_error(&self, reason: &str) {
        self.modbus_errors_by_reason.get_or_create(&ReasonLabels { reason: reason.to_string() }).inc();
    }

    pub(crate) fn reject(&self, reason: &str) {
        self.rejected_by_reason.get_or_create(&ReasonLabels { reason: reason.to_string() }).inc();
    }

    /// Copies the garbage store's drop counts, both classes (zero included, so a dashboard sees
    /// the series before the first drop).
    fn copy_garbage_counts(&self, counts: &GarbageCounts) {
        self.garbage_entries.set(counts.entries.load(Ordering::Relaxed));
        for (class, dropped) in [("garbage", &counts.dropped_garbage), ("unverified", &counts.dropped_unverified)] {
            // The store's count only grows; `fetch_max` keeps this counter from going back when
            // two scrapes race (a plain store could write the older value last).
            self.garbage_dropped
                .get_or_create(&ClassLabels { class })
                .inner()
                .fetch_max(dropped.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// The text exposition, as it stands.
    fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The exposition of every metric, with the values other parts own read now.
pub(crate) fn render(shared: &Shared) -> String {
    let metrics = &shared.metrics;
    metrics.outbox_depth.set(shared.store.outbox_depth());
    let open: u64 = shared.tracker.lock().expect("tracker lock").values().map(tracker::MeterState::missing_count).sum();
    metrics.gap_sequences_open.set(open);
    metrics.disk_budget_bytes.set(shared.config.disk_budget_bytes);
    metrics.retry_depth.set(shared.store.retry_depth());
    metrics.copy_garbage_counts(shared.store.garbage_counts());
    metrics.encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample lines of an exposition (what Prometheus stores), without HELP/TYPE/EOF lines.
    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|line| !line.starts_with('#')).collect()
    }

    #[test]
    fn counters_and_labelled_counters_are_exposed_with_their_values() {
        let metrics = Metrics::new();
        metrics.readings_accepted.inc_by(7);
        metrics.reject("bad_signature");
        metrics.reject("bad_signature");
        metrics.reject("ledger_unknown \"meter\"");
        metrics.modbus_error("modbus_timeout");
        metrics.disk_bytes.set(4096);
        metrics.refuse("missing_token");
        let text = metrics.encode();
        let samples = samples(&text);
        for expected in [
            "wattle_gateway_readings_accepted_total 7",
            "wattle_gateway_readings_in_total 0",
            "wattle_gateway_readings_rejected_total{reason=\"bad_signature\"} 2",
            "wattle_gateway_readings_rejected_total{reason=\"ledger_unknown \\\"meter\\\"\"} 1",
            "wattle_gateway_modbus_errors_total{reason=\"modbus_timeout\"} 1",
            "wattle_gateway_disk_bytes 4096",
            "wattle_gateway_requests_refused_total{code=\"missing_token\"} 1",
            "wattle_gateway_requests_refused_total{code=\"unknown_token\"} 0",
        ] {
            assert!(samples.contains(&expected), "{expected:?} missing from:\n{text}");
        }
        assert!(text.contains("# TYPE wattle_gateway_readings_rejected counter\n"), "{text}");
        assert!(text.contains("# TYPE wattle_gateway_disk_bytes gauge\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn garbage_drops_are_copied_by_class_and_never_go_back() {
        let metrics = Metrics::new();
        let counts = GarbageCounts::default();
        metrics.copy_garbage_counts(&counts);
        let text = metrics.encode();
        for expected in [
            "wattle_gateway_garbage_dropped_total{class=\"garbage\"} 0",
            "wattle_gateway_garbage_dropped_total{class=\"unverified\"} 0",
        ] {
            assert!(samples(&text).contains(&expected), "{expected:?} missing from:\n{text}");
        }
        counts.entries.store(5, Ordering::Relaxed);
        counts.dropped_garbage.store(3, Ordering::Relaxed);
        metrics.copy_garbage_counts(&counts);
        // A racing scrape that read the older count copies it last.
        metrics.copy_garbage_counts(&GarbageCounts::default());
        let text = metrics.encode();
        for expected in [
            "wattle_gateway_garbage_dropped_total{class=\"garbage\"} 3",
            "wattle_gateway_garbage_dropped_total{class=\"unverified\"} 0",
            "wattle_gateway_garbage_entries 0",
        ] {
            assert!(samples(&text).contains(&expected), "{expected:?} missing from:\n{text}");
        }
    }

    #[test]
    fn every_metric_keeps_its_name() {
        let metrics = Metrics::new();
        // A family shows only once it has a member.
        metrics.modbus_error("modbus_timeout");
        metrics.reject("bad_signature");
        metrics.copy_garbage_counts(&GarbageCounts::default());
        let text = metrics.encode();
        let types: Vec<&str> = text.lines().filter_map(|line| line.strip_prefix("# TYPE ")).collect();
        // Counters' samples carry `_total`, as the hand-written exposition named them.
        let expected = [
            "wattle_gateway_readings_in counter",
            "wattle_gateway_readings_accepted counter",
            "wattle_gateway_readings_forwarded counter",
            "wattle_gateway_duplicates counter",
            "wattle_gateway_forward_failures counter",
            "wattle_gateway_outbox_depth gauge",
            "wattle_gateway_duplicates_dropped counter",
            "wattle_gateway_gap_sequences_opened counter",
            "wattle_gateway_gap_sequences_filled counter",
            "wattle_gateway_gap_sequences_quarantined counter",
            "wattle_gateway_gap_sequences_unfilled counter",
            "wattle_gateway_gap_sequences_open gauge",
            "wattle_gateway_backfill_requests counter",
            "wattle_gateway_forward_latency_ms gauge",
            "wattle_gateway_modbus_polls counter",
            "wattle_gateway_readings_attested counter",
            "wattle_gateway_readings_deferred_disk_budget counter",
            "wattle_gateway_disk_bytes gauge",
            "wattle_gateway_disk_budget_bytes gauge",
            "wattle_gateway_retry_depth gauge",
            "wattle_gateway_ledger_retries counter",
            "wattle_gateway_readings_released counter",
            "wattle_gateway_readings_released_automatically counter",
            "wattle_gateway_garbage_entries gauge",
            "wattle_gateway_garbage_bytes gauge",
            "wattle_gateway_garbage_dropped counter",
            "wattle_gateway_modbus_errors counter",
            "wattle_gateway_readings_rejected counter",
            "wattle_gateway_requests_refused counter",
        ];
        assert_eq!(types, expected, "{text}");
        assert!(text.contains("# HELP wattle_gateway_readings_in Messages received from MQTT.\n"), "{text}");
    }
}
