//! The feed: follows the ledger's committed stream (`GET /v1/changes`, long-polled, only entries
//! a signature covers) and writes, per page, what the ledger now holds for every customer the page
//! names into the read model, with the ledger position it reflects. Never polls totals: it reads a
//! customer only when the stream says the customer changed. A fresh or lost database starts at
//! position 0 and rebuilds everything from the ledger.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use domain::api::{ChangePage, CustomerAccount, CustomerInterval, CustomerStatements, IssuedInvoice, MeterInfo};
use domain::ids::CustomerId;
use domain::limits::SETTLEMENT_INTERVAL_SECONDS;
use serde::Serialize;
use tokio::sync::watch;

use crate::ledger_client::{LedgerClient, LedgerError};
use crate::read_model::{CustomerData, Position, ReadModel};

/// How long one long-poll of the stream waits for a new signed entry.
pub const FEED_WAIT: Duration = Duration::from_secs(5);
/// Pause after a failed read of the ledger before the next try.
pub const FEED_RETRY: Duration = Duration::from_millis(500);
/// Most intervals the ledger returns per page (`ledger::statements::INTERVALS_PER_PAGE_MAX`).
const LEDGER_INTERVALS_PAGE: usize = 2_980;

/// How the feed is doing, for `/healthz` and for answers that must not pretend.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FeedStatus {
    /// `starting`, `following`, `refused` (the ledger no longer serves billing), `unreachable`,
    /// `error` (the database failed).
    pub state: String,
    pub message: Option<String>,
    /// The highest signed ledger index the last page reported.
    pub ledger_signed_index: u64,
    /// The position the read model reflects.
    pub ledger_index: u64,
    pub as_of_ms: i64,
}

/// The feed's status, shared with the API; `position` wakes watchers (live bills) on every page.
#[derive(Clone)]
pub struct FeedHandle {
    status: Arc<Mutex<FeedStatus>>,
    position: watch::Sender<Position>,
}

impl FeedHandle {
    pub fn new(position: Position) -> Self {
        FeedHandle {
            status: Arc::new(Mutex::new(FeedStatus {
                state: "starting".into(),
                message: None,
                ledger_signed_index: 0,
                ledger_index: position.ledger_index,
                as_of_ms: position.as_of_ms,
            })),
            position: watch::channel(position).0,
        }
    }
    pub fn status(&self) -> FeedStatus {
        self.status.lock().expect("feed status lock is never poisoned").clone()
    }
    /// Wakes on every position the read model reaches.
    pub fn subscribe(&self) -> watch::Receiver<Position> {
        self.position.subscribe()
    }
    fn set(&self, state: &str, message: Option<String>, update: impl FnOnce(&mut FeedStatus)) {
        let mut status = self.status.lock().expect("feed status lock is never poisoned");
        status.state = state.to_string();
        status.message = message;
        update(&mut status);
    }
}

/// Everything the ledger holds for `customer`: account, intervals from `since` (all if `None`),
/// statements and invoices. `None`: the ledger does not know the customer (yet).
async fn fetch_customer(
    ledger: &LedgerClient,
    customer: &CustomerId,
    since: Option<i64>,
) -> Result<Option<CustomerData>, LedgerError> {
    let base = format!("/v1/customers/{customer}");
    let account: CustomerAccount = match ledger.get(&format!("{base}/account")).await {
        Ok(account) => account,
        Err(LedgerError::NotFound(_)) => return Ok(None),
        Err(error) => return Err(error),
    };
    let mut intervals: Vec<CustomerInterval> = Vec::new();
    let mut from = since.unwrap_or(0);
    loop {
        let page: Vec<CustomerInterval> = match ledger.get(&format!("{base}/intervals?from={from}")).await {
            Ok(page) => page,
            // A customer settled at the flat price has no intervals endpoint data.
            Err(LedgerError::NotFound(_)) => Vec::new(),
            Err(error) => return Err(error),
        };
        let full = page.len() >= LEDGER_INTERVALS_PAGE;
        if let Some(last) = page.last() {
            from = last.start + SETTLEMENT_INTERVAL_SECONDS;
        }
        intervals.extend(page);
        if !full {
            break;
        }
    }
    let statements: CustomerStatements = ledger.get(&format!("{base}/statements")).await?;
    let invoices: Vec<IssuedInvoice> = ledger.get(&format!("{base}/invoices")).await?;
    Ok(Some(CustomerData { account, intervals, statements, invoices }))
}

/// Every customer with a registered meter.
async fn all_customers(ledger: &LedgerClient) -> Result<BTreeSet<CustomerId>, LedgerError> {
    let meters: Vec<MeterInfo> = ledger.get("/v1/meters").await?;
    Ok(meters.into_iter().map(|meter| meter.customer_id).filter(|id| !id.as_str().starts_with("h-")).collect())
}

/// One step: reads the next page of the stream and applies it. `Ok(false)`: nothing new.
async fn step(
    model: &ReadModel,
    ledger: &LedgerClient,
    feed: &FeedHandle,
    metrics: &crate::metrics::Metrics,
) -> Result<bool, StepError> {
    let position = model.position().await.map_err(StepError::Database)?;
    let path = format!("/v1/changes?from={}&wait_ms={}", position.ledger_index + 1, FEED_WAIT.as_millis());
    let page: ChangePage = ledger.get_waiting(&path, FEED_WAIT).await.map_err(StepError::Ledger)?;
    feed.set("following", None, |status| status.ledger_signed_index = page.signed_index);
    if page.next <= position.ledger_index + 1 {
        return Ok(false);
    }
    // Per customer, the earliest interval any change touched (`None`: refresh all of it).
    let mut touched: std::collections::BTreeMap<CustomerId, Option<i64>> = Default::default();
    let mut everyone = false;
    let mut as_of_ms = position.as_of_ms;
    for change in &page.changes {
        as_of_ms = as_of_ms.max(change.time_ms);
        everyone |= change.all_customers;
        for customer in &change.customers {
            let since = touched.entry(customer.clone()).or_insert(change.since_s);
            *since = match (*since, change.since_s) {
                (Some(a), Some(b)) => Some(a.min(b)),
                _ => None,
            };
        }
    }
    if everyone {
        let mut customers = all_customers(ledger).await.map_err(StepError::Ledger)?;
        for known in model.customers().await.map_err(StepError::Database)? {
            customers.extend(CustomerId::new(known).ok());
        }
        for customer in customers {
            touched.insert(customer, None);
        }
    }
    let mut data = Vec::with_capacity(touched.len());
    for (customer, since) in &touched {
        if let Some(customer_data) = fetch_customer(ledger, customer, *since).await.map_err(StepError::Ledger)? {
            data.push(customer_data);
        }
    }
    let next = Position { ledger_index: page.next - 1, as_of_ms };
    model.apply(&data, next).await.map_err(StepError::Database)?;
    metrics.feed_pages.inc();
    metrics.customers_refreshed.inc_by(data.len() as u64);
    feed.set("following", None, |status| {
        status.ledger_index = next.ledger_index;
        status.as_of_ms = next.as_of_ms;
    });
    feed.position.send_replace(next);
    Ok(true)
}

enum StepError {
    Ledger(LedgerError),
    Database(anyhow::Error),
}

/// Follows the stream until the task is dropped.
pub async fn follow(model: ReadModel, ledger: LedgerClient, feed: FeedHandle, metrics: Arc<crate::metrics::Metrics>) {
    loop {
        match step(&model, &ledger, &feed, &metrics).await {
            Ok(_) => {}
            Err(StepError::Ledger(error)) => {
                let state = match error {
                    LedgerError::Refused { .. } => "refused",
                    LedgerError::Unreachable(_) => "unreachable",
                    _ => "error",
                };
                if feed.status().state != state {
                    tracing::error!(%error, "billing's feed stopped at the ledger");
                }
                feed.set(state, Some(error.to_string()), |_| {});
                tokio::time::sleep(FEED_RETRY).await;
            }
            Err(StepError::Database(error)) => {
                tracing::error!(error = format!("{error:#}"), "billing's database failed");
                feed.set("error", Some(format!("database: {error:#}")), |_| {});
                tokio::time::sleep(FEED_RETRY).await;
            }
        }
    }
}
