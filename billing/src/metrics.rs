//! Billing's `/metrics`, in the Prometheus text format through the `prometheus-client` crate.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Why a ledger request failed.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LedgerErrorLabels {
    /// `unreachable`, `status` (an unexpected answer) or `unparsable`.
    pub reason: &'static str,
}

/// Billing's counters and histograms, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub bills_served: Counter,
    pub ledger_errors: Family<LedgerErrorLabels, Counter>,
    pub ledger_latency_seconds: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wattle_billing");
        let bills_served = Counter::default();
        registry.register("bills_served", "Bills served", bills_served.clone());
        let ledger_errors = Family::<LedgerErrorLabels, Counter>::default();
        registry.register("ledger_errors", "Failed ledger requests, by reason", ledger_errors.clone());
        // 1 ms .. ~4 s.
        let ledger_latency_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 13));
        registry.register(
            "ledger_latency_seconds",
            "Time the ledger took to answer an account request",
            ledger_latency_seconds.clone(),
        );
        Metrics { registry, bills_served, ledger_errors, ledger_latency_seconds }
    }

    pub fn ledger_error(&self, reason: &'static str) {
        self.ledger_errors.get_or_create(&LedgerErrorLabels { reason }).inc();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
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
