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
use tokio::sync::{broadcast, watch};

use crate::ledger_client::{LedgerClient, LedgerError};
use crate::read_model::{Anchor, CustomerData, Position, ReadModel};

/// How long one long-poll of the stream waits for a new signed entry.
pub const FEED_WAIT: Duration = Duration::from_secs(5);
/// Customers the feed reads from the ledger at once.
pub const FETCH_CONCURRENCY: usize = 8;
/// Pages of changes kept for live streams that have not caught up (`stream.rs`); a stream that
/// falls further behind re-reads its customer.
pub const CHANGES_BUFFERED: usize = 1_024;
/// Pause after a failed read of the ledger before the next try.
pub const FEED_RETRY: Duration = Duration::from_millis(500);
/// Most intervals the ledger returns per page (`ledger::statements::INTERVALS_PER_PAGE_MAX`).
const LEDGER_INTERVALS_PAGE: usize = 2_980;
/// A feed page whose reads and write take this long is logged (`slow feed page`, with the split).
const SLOW_PAGE: Duration = Duration::from_millis(100);

/// How the feed is doing, for `/healthz` and for answers that must not pretend.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FeedStatus {
    /// `starting`, `following`, `behind` (the ledger has not yet reached the model's position:
    /// a node catching up), `refused` (the ledger no longer serves billing), `unreachable`,
    /// `error` (the database failed).
    pub state: String,
    pub message: Option<String>,
    /// The highest signed ledger index the last page reported.
    pub ledger_signed_index: u64,
    /// The position the read model reflects.
    pub ledger_index: u64,
    pub as_of_ms: i64,
}

/// What one page of the feed changed, for live streams (`stream.rs`).
#[derive(Debug, Clone)]
pub struct Changed {
    pub position: Position,
    /// Customers whose data the page rewrote.
    pub customers: Arc<BTreeSet<String>>,
    /// The model was emptied to be rebuilt from another ledger: every stream starts again.
    pub reset: bool,
}

/// The feed's status, shared with the API; `position` wakes watchers on every page, `changes`
/// tells live streams which customers each page rewrote.
#[derive(Clone)]
pub struct FeedHandle {
    status: Arc<Mutex<FeedStatus>>,
    position: watch::Sender<Position>,
    changes: broadcast::Sender<Changed>,
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
            changes: broadcast::channel(CHANGES_BUFFERED).0,
        }
    }
    pub fn status(&self) -> FeedStatus {
        self.status.lock().expect("feed status lock is never poisoned").clone()
    }
    /// Wakes on every position the read model reaches.
    pub fn subscribe(&self) -> watch::Receiver<Position> {
        self.position.subscribe()
    }
    /// Every page's changes from now on.
    pub fn subscribe_changes(&self) -> broadcast::Receiver<Changed> {
        self.changes.subscribe()
    }
    fn announce(&self, position: Position, customers: BTreeSet<String>, reset: bool) {
        self.position.send_replace(position);
        // No receiver (no live stream open) is not an error.
        let _ = self.changes.send(Changed { position, customers: Arc::new(customers), reset });
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
    documents: bool,
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
    // Invoices and credit notes are only ever added (the model inserts, never rewrites them):
    // read them only when the page may have added one.
    let (invoices, credit_notes): (Vec<IssuedInvoice>, Vec<IssuedInvoice>) = if documents {
        (ledger.get(&format!("{base}/invoices")).await?, ledger.get(&format!("{base}/credit-notes")).await?)
    } else {
        (Vec::new(), Vec::new())
    };
    Ok(Some(CustomerData { account, intervals, statements, invoices, credit_notes }))
}

/// Every customer with a registered meter.
async fn all_customers(ledger: &LedgerClient) -> Result<BTreeSet<CustomerId>, LedgerError> {
    let meters: Vec<MeterInfo> = ledger.get("/v1/meters").await?;
    Ok(meters.into_iter().map(|meter| meter.customer_id).filter(|id| !id.as_str().starts_with("h-")).collect())
}

/// Whether the ledger billing reads is the one its read model was built from.
enum Identity {
    Same,
    /// The ledger has not reached the model's anchor yet (a node catching up): wait.
    Behind(String),
    /// Another ledger, one that lost the history the model reflects, or one that holds less than
    /// the model's first change: rebuild.
    Foreign(String),
}

/// Whether the ledger holds `anchor` where the model took it (the same change at the same index,
/// stamped at the same time): `None` if it does, the reason if not.
async fn holds(ledger: &LedgerClient, anchor: &Anchor) -> Result<Option<String>, StepError> {
    let path = format!("/v1/changes?from={}&limit=1", anchor.index);
    let page: ChangePage = ledger.get(&path).await.map_err(StepError::Ledger)?;
    Ok(match page.changes.first() {
        Some(change)
            if change.index == anchor.index && change.tx_id == anchor.tx_id && change.time_ms == anchor.time_ms =>
        {
            None
        }
        Some(change) if change.index == anchor.index => Some(format!(
            "at index {} the ledger holds transaction {} of {} ms, the model took {} of {} ms",
            anchor.index, change.tx_id, change.time_ms, anchor.tx_id, anchor.time_ms
        )),
        _ => Some(format!(
            "the ledger holds no change at index {} (the model took {} there)",
            anchor.index, anchor.tx_id
        )),
    })
}

/// Checks the model's anchors against the ledger (`signed_index`: the ledger's, from a page): the
/// last change the model took if the ledger has reached it, else the first (a ledger that holds
/// the model's first change but not yet its last is the same ledger, catching up; one that holds
/// less than the first is treated as another).
async fn identity(model: &ReadModel, ledger: &LedgerClient, signed_index: u64) -> Result<Identity, StepError> {
    let Some((first, anchor)) = model.anchors().await.map_err(StepError::Database)? else {
        let position = model.position().await.map_err(StepError::Database)?;
        // A model that took no change holds no customer: starting again from the ledger's first
        // entry costs nothing and skips nothing.
        return Ok(if position.ledger_index == 0 {
            Identity::Same
        } else {
            Identity::Foreign(format!("the model took no change up to index {}", position.ledger_index))
        });
    };
    let checked = if signed_index >= anchor.index { &anchor } else { &first };
    if signed_index < checked.index {
        // Holding less than the model's very first change, the ledger cannot show it is the same
        // one: rebuilding from it is safe (the model is rebuildable by design), waiting might be
        // forever.
        return Ok(Identity::Foreign(format!(
            "the ledger's signed index {signed_index} is below the read model's first change {}",
            first.index
        )));
    }
    Ok(match holds(ledger, checked).await? {
        Some(reason) => Identity::Foreign(reason),
        None if checked.index < anchor.index => Identity::Behind(format!(
            "the ledger's signed index {signed_index} is below the read model's last change {} (a node catching up?)",
            anchor.index
        )),
        None => Identity::Same,
    })
}

/// One step: reads the next page of the stream and applies it. `Ok(false)`: nothing new.
/// `checked`: the ledger's identity was confirmed (once after start, again whenever the ledger
/// reports less than the model holds).
async fn step(
    model: &ReadModel,
    ledger: &LedgerClient,
    feed: &FeedHandle,
    metrics: &crate::metrics::Metrics,
    checked: &mut bool,
) -> Result<bool, StepError> {
    let position = model.position().await.map_err(StepError::Database)?;
    let path = format!("/v1/changes?from={}&wait_ms={}", position.ledger_index + 1, FEED_WAIT.as_millis());
    let wait = if *checked { FEED_WAIT } else { Duration::ZERO };
    let path = if *checked { path } else { format!("/v1/changes?from={}&limit=1", position.ledger_index + 1) };
    let page: ChangePage = ledger.get_waiting(&path, wait).await.map_err(StepError::Ledger)?;
    if !*checked || page.signed_index < position.ledger_index {
        match identity(model, ledger, page.signed_index).await? {
            // Confirmed: the next step long-polls from the model's position.
            Identity::Same if !*checked => {
                *checked = true;
                return Ok(true);
            }
            // The same ledger, not yet where the model is (a node catching up): wait for it.
            Identity::Same | Identity::Behind(_) if page.signed_index < position.ledger_index => {
                let message = format!(
                    "the ledger's signed index {} is below the read model's position {}",
                    page.signed_index, position.ledger_index
                );
                feed.set("behind", Some(message), |status| status.ledger_signed_index = page.signed_index);
                tokio::time::sleep(FEED_RETRY).await;
                return Ok(false);
            }
            Identity::Same => *checked = true,
            Identity::Behind(message) => {
                feed.set("behind", Some(message), |status| status.ledger_signed_index = page.signed_index);
                tokio::time::sleep(FEED_RETRY).await;
                return Ok(false);
            }
            Identity::Foreign(reason) => {
                tracing::warn!(
                    %reason,
                    ledger = ledger.base_url(),
                    "the read model was built from another ledger: rebuilding it from this one"
                );
                model.reset().await.map_err(StepError::Database)?;
                metrics.rebuilds.inc();
                let start = Position::default();
                feed.set("starting", Some(format!("rebuilding: {reason}")), |status| {
                    status.ledger_index = start.ledger_index;
                    status.as_of_ms = start.as_of_ms;
                });
                feed.announce(start, BTreeSet::new(), true);
                *checked = true;
                return Ok(true);
            }
        }
    }
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
    // Only these changes (and a page that re-reads everyone) can add an invoice or credit note.
    let documents =
        everyone || page.changes.iter().any(|change| matches!(change.kind.as_str(), "invoice" | "credit_note"));
    let read_started = std::time::Instant::now();
    let mut data = Vec::with_capacity(touched.len());
    // Customers are read `FETCH_CONCURRENCY` at a time: a page that names the whole fleet (every
    // meter publishes at the interval boundary) would otherwise cost its reads in sequence.
    let mut pending = touched.iter();
    let mut reads = tokio::task::JoinSet::new();
    loop {
        while reads.len() < FETCH_CONCURRENCY {
            let Some((customer, since)) = pending.next() else { break };
            let (ledger, customer, since) = (ledger.clone(), customer.clone(), *since);
            reads.spawn(async move { fetch_customer(&ledger, &customer, since, documents).await });
        }
        let Some(read) = reads.join_next().await else { break };
        let read = read.map_err(|error| StepError::Database(anyhow::anyhow!("a customer read panicked: {error}")))?;
        if let Some(customer_data) = read.map_err(StepError::Ledger)? {
            data.push(customer_data);
        }
    }
    // The SQL transaction writes customers in id order, whatever order the reads finished in.
    data.sort_by(|a, b| a.account.customer_id.cmp(&b.account.customer_id));
    let next = Position { ledger_index: page.next - 1, as_of_ms };
    let anchor = page.changes.last().map(|change| Anchor {
        tx_id: change.tx_id.clone(),
        index: change.index,
        time_ms: change.time_ms,
    });
    let write_started = std::time::Instant::now();
    model.apply(&data, next, anchor.as_ref()).await.map_err(StepError::Database)?;
    let (read, write) = (write_started - read_started, write_started.elapsed());
    metrics.feed_read_seconds.observe(read.as_secs_f64());
    metrics.feed_write_seconds.observe(write.as_secs_f64());
    metrics.feed_page_customers.observe(data.len() as f64);
    if read + write >= SLOW_PAGE {
        tracing::info!(
            customers = data.len(),
            everyone,
            changes = page.changes.len(),
            read_ms = read.as_millis() as u64,
            write_ms = write.as_millis() as u64,
            "slow feed page"
        );
    }
    metrics.feed_pages.inc();
    metrics.customers_refreshed.inc_by(data.len() as u64);
    feed.set("following", None, |status| {
        status.ledger_index = next.ledger_index;
        status.as_of_ms = next.as_of_ms;
    });
    feed.announce(next, data.iter().map(|customer| customer.account.customer_id.to_string()).collect(), false);
    Ok(true)
}

enum StepError {
    Ledger(LedgerError),
    Database(anyhow::Error),
}

/// Follows the stream until the task is dropped.
pub async fn follow(model: ReadModel, ledger: LedgerClient, feed: FeedHandle, metrics: Arc<crate::metrics::Metrics>) {
    let mut checked = false;
    loop {
        match step(&model, &ledger, &feed, &metrics, &mut checked).await {
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
