//! A ledger node's `/metrics`, in the Prometheus text format through the `prometheus-client`
//! crate: counters the API bumps as it answers, and gauges of the raft state read at scrape time.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Why a reading or admin transaction was refused (a stable reason code).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// Which in-flight bound a `429` answer hit (`overloaded`, `gateway_overloaded`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: &'static str,
}

/// What `/metrics` reads from the node when it is scraped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scrape {
    pub is_leader: bool,
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub submissions_in_flight: u64,
}

/// A node's counters, histograms and scrape-time gauges, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub readings_submitted: Counter,
    pub readings_accepted: Counter,
    pub readings_duplicate: Counter,
    pub readings_equivocation: Counter,
    pub transactions_proposed: Counter,
    /// Admin submissions recognised as a transaction already applied (retries).
    pub admin_retries: Counter,
    /// TLS handshakes that failed or timed out (plain HTTP to a TLS port, an untrusting client).
    pub tls_handshakes_failed: Counter,
    readings_rejected: Family<ReasonLabels, Counter>,
    submissions_busy: Family<CodeLabels, Counter>,
    admin_refused: Family<ReasonLabels, Counter>,
    /// Reading batches answered 401: the gateway is not registered, or did not sign with its key.
    gateway_batches_refused: Family<ReasonLabels, Counter>,
    /// Raft requests answered 401 (`peer_auth.rs`), by reason.
    raft_refused: Family<ReasonLabels, Counter>,
    /// Private reads refused (`client_auth.rs`), by reason.
    reads_refused: Family<ReasonLabels, Counter>,
    /// Private reads served, by the kind of caller (reader, member, node).
    private_reads: Family<ReasonLabels, Counter>,
    /// Readings per proposed reading batch.
    pub batch_readings: Histogram,
    /// Seconds from proposing a transaction to its commit, application and covering signature.
    pub commit_latency_seconds: Histogram,
    is_leader: Gauge,
    term: Gauge,
    last_log_index: Gauge,
    applied_index: Gauge,
    apply_lag: Gauge,
    submissions_in_flight: Gauge,
}

/// Batch sizes: 1, 2, 4 .. 4,096 readings.
const BATCH_BUCKETS: u16 = 13;
/// Commit latency: 1 ms, 2 ms .. ~16 s.
const LATENCY_BUCKETS: u16 = 15;

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wattle_ledger");
        let mut counter = |name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let readings_submitted = counter("readings_submitted", "Readings submitted");
        let readings_accepted = counter("readings_accepted", "Readings committed and settled");
        let readings_duplicate = counter("readings_duplicate", "Exact duplicates answered without a change");
        let readings_equivocation = counter("readings_equivocation", "Equivocations refused");
        let transactions_proposed = counter("transactions_proposed", "Transactions proposed");
        let admin_retries = counter("admin_retries", "Admin submissions recognised as a transaction already applied");
        let tls_handshakes_failed =
            counter("tls_handshakes_failed", "TLS handshakes that failed or timed out (authenticated nodes serve TLS)");
        let readings_rejected = Family::<ReasonLabels, Counter>::default();
        registry.register("readings_rejected", "Readings refused, by reason", readings_rejected.clone());
        let submissions_busy = Family::<CodeLabels, Counter>::default();
        registry.register("submissions_busy", "Reading submissions answered 429, by code", submissions_busy.clone());
        let admin_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "admin_refused",
            "Admin transactions refused before the log, by reason",
            admin_refused.clone(),
        );
        let gateway_batches_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "gateway_batches_refused",
            "Reading batches answered 401 (unregistered gateway, missing, foreign or bad signature), by reason",
            gateway_batches_refused.clone(),
        );
        let raft_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "raft_requests_refused",
            "Raft requests answered 401 (no credentials, not admitted, stale, bad signature, impersonation), by reason",
            raft_refused.clone(),
        );
        let reads_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "private_reads_refused",
            "Private reads answered 401/403 (no credentials, stale, bad signature, not entitled), by reason",
            reads_refused.clone(),
        );
        let private_reads = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "private_reads",
            "Private reads served to entitled callers, by caller kind (reader, member, node)",
            private_reads.clone(),
        );
        let batch_readings = Histogram::new(exponential_buckets(1.0, 2.0, BATCH_BUCKETS));
        registry.register("batch_readings", "Readings per proposed batch", batch_readings.clone());
        let commit_latency_seconds = Histogram::new(exponential_buckets(0.001, 2.0, LATENCY_BUCKETS));
        registry.register(
            "commit_latency_seconds",
            "Propose to commit, apply and covering signature",
            commit_latency_seconds.clone(),
        );
        let mut gauge = |name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let is_leader = gauge("is_leader", "1 if this node leads");
        let term = gauge("term", "Current raft term");
        let last_log_index = gauge("last_log_index", "Last log index");
        let applied_index = gauge("applied_index", "Last applied index");
        let apply_lag = gauge("apply_lag", "Log entries not yet applied");
        let submissions_in_flight = gauge("submissions_in_flight", "Reading submissions in flight at this node");
        Metrics {
            registry,
            readings_submitted,
            readings_accepted,
            readings_duplicate,
            readings_equivocation,
            transactions_proposed,
            admin_retries,
            tls_handshakes_failed,
            readings_rejected,
            submissions_busy,
            admin_refused,
            gateway_batches_refused,
            raft_refused,
            reads_refused,
            private_reads,
            batch_readings,
            commit_latency_seconds,
            is_leader,
            term,
            last_log_index,
            applied_index,
            apply_lag,
            submissions_in_flight,
        }
    }

    pub(crate) fn reject(&self, reason: &str) {
        self.readings_rejected.get_or_create(&ReasonLabels { reason: reason.to_string() }).inc();
    }

    pub(crate) fn gateway_refused(&self, reason: &str) {
        self.gateway_batches_refused.get_or_create(&ReasonLabels { reason: reason.to_string() }).inc();
    }

    pub(crate) fn raft_refused(&self, reason: &str) {
        self.raft_refused.get_or_create(&ReasonLabels { reason: reason.to_string() }).inc();
    }

    pub(crate) fn read_refused(&self, reason: &str) {
        self.reads_refused.get_or_create(&ReasonLabels { reason: reason.to_string() }).inc();
    }

    pub(crate) fn private_read(&self, caller: &str) {
        self.private_reads.get_or_create(&ReasonLabels { reason: caller.to_string() }).inc();
    }

    pub(crate) fn busy(&self, code: &'static str) {
        self.submissions_busy.get_or_create(&CodeLabels { code }).inc();
    }

    pub(crate) fn admin_refused(&self, code: &str) {
        self.admin_refused.get_or_create(&ReasonLabels { reason: code.to_string() }).inc();
    }

    /// The text exposition, with the gauges set from `scrape`.
    pub fn render(&self, scrape: Scrape) -> String {
        let as_gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.is_leader.set(i64::from(scrape.is_leader));
        self.term.set(as_gauge(scrape.term));
        self.last_log_index.set(as_gauge(scrape.last_log_index));
        self.applied_index.set(as_gauge(scrape.applied_index));
        self.apply_lag.set(as_gauge(scrape.last_log_index.saturating_sub(scrape.applied_index)));
        self.submissions_in_flight.set(as_gauge(scrape.submissions_in_flight));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_carries_counters_labels_and_scrape_gauges() {
        let metrics = Metrics::new();
        metrics.readings_accepted.inc_by(3);
        metrics.reject("no_tariff");
        metrics.reject("no_tariff");
        metrics.busy("overloaded");
        metrics.commit_latency_seconds.observe(0.004);
        let text = metrics.render(Scrape {
            is_leader: true,
            term: 7,
            last_log_index: 12,
            applied_index: 10,
            ..Scrape::default()
        });
        for line in [
            "wattle_ledger_readings_accepted_total 3",
            "wattle_ledger_readings_rejected_total{reason=\"no_tariff\"} 2",
            "wattle_ledger_submissions_busy_total{code=\"overloaded\"} 1",
            "wattle_ledger_is_leader 1",
            "wattle_ledger_term 7",
            "wattle_ledger_apply_lag 2",
            "wattle_ledger_commit_latency_seconds_count 1",
        ] {
            assert!(text.lines().any(|got| got == line), "missing {line:?} in\n{text}");
        }
    }
}
