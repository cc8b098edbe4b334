//! Billing's `/metrics`, in the Prometheus text format through the `prometheus-client` crate.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Why a ledger request failed.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LedgerErrorLabels {
    /// `unreachable`, `refused`, `not_found`, `status` (an unexpected answer) or `unparsable`.
    pub reason: &'static str,
}

/// Billing's counters and histograms, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub bills_served: Counter,
    pub ledger_errors: Family<LedgerErrorLabels, Counter>,
    pub ledger_latency_seconds: Histogram,
    pub feed_pages: Counter,
    pub customers_refreshed: Counter,
    /// Per feed page: reading the customers it names from the ledger, writing them to SQL.
    pub feed_read_seconds: Histogram,
    pub feed_write_seconds: Histogram,
    pub feed_page_customers: Histogram,
    pub rebuilds: Counter,
    pub requests_refused: Family<RefusedLabels, Counter>,
    pub streams_open: Gauge,
    pub stream_events: Family<EventLabels, Counter>,
}

/// What a live stream sent.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// `bill`, `intervals`, `reset` or `error`.
    pub event: &'static str,
}

/// Why billing refused a request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub code: &'static str,
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
            "Time the ledger took to answer one of billing's reads",
            ledger_latency_seconds.clone(),
        );
        let feed_pages = Counter::default();
        registry.register(
            "feed_pages",
            "Pages of the ledger's change stream applied to the read model",
            feed_pages.clone(),
        );
        let customers_refreshed = Counter::default();
        registry.register(
            "customers_refreshed",
            "Customers re-read from the ledger because the stream named them",
            customers_refreshed.clone(),
        );
        // 1 ms .. ~4 s, as the ledger's latency.
        let feed_read_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 13));
        registry.register(
            "feed_read_seconds",
            "Time a feed page spent re-reading the customers it names from the ledger",
            feed_read_seconds.clone(),
        );
        let feed_write_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 13));
        registry.register(
            "feed_write_seconds",
            "Time a feed page spent writing its customers and position in one SQL transaction",
            feed_write_seconds.clone(),
        );
        // 1 .. 4,096 customers.
        let feed_page_customers = Histogram::new(exponential_buckets(1.0, 2.0, 13));
        registry.register("feed_page_customers", "Customers a feed page re-read", feed_page_customers.clone());
        let rebuilds = Counter::default();
        registry.register(
            "rebuilds",
            "Read models emptied and rebuilt because they reflected another ledger",
            rebuilds.clone(),
        );
        let requests_refused = Family::<RefusedLabels, Counter>::default();
        registry.register("requests_refused", "Requests refused, by error code", requests_refused.clone());
        let streams_open = Gauge::default();
        registry.register("streams_open", "Live bill streams open (server-sent events)", streams_open.clone());
        let stream_events = Family::<EventLabels, Counter>::default();
        registry.register("stream_events", "Events sent on live bill streams, by event", stream_events.clone());
        Metrics {
            registry,
            bills_served,
            ledger_errors,
            ledger_latency_seconds,
            feed_pages,
            customers_refreshed,
            feed_read_seconds,
            feed_write_seconds,
            feed_page_customers,
            rebuilds,
            requests_refused,
            streams_open,
            stream_events,
        }
    }

    pub fn refused(&self, code: &'static str) {
        self.requests_refused.get_or_create(&RefusedLabels { code }).inc();
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
