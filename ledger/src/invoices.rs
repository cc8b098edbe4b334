//! Invoices on apply (issue 16): a period close marks the statement due for an invoice; the leader
//! then proposes one `IssueInvoice` transaction per due statement ([`due`], `ticker.rs`). Applying
//! it assigns the issuer's next number (gap-free: the counter moves only when an invoice is
//! issued, in log order), freezes the canonical invoice document, and returns it as the entry's
//! claims document, so the invoice's receipt binds its bytes. Sans-IO, like the rest of apply.
//!
//! State (private table):
//! - `invoices_due` statements closed but not invoiced yet (JSON set of (customer, start));
//! - `iq/{issuer}` the issuer's last invoice sequence;
//! - `ic/{customer}\0{period start: i64 BE}` the issued invoice ([`IssuedInvoice`]).

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, State};
use axum::Json;
use domain::api::IssuedInvoice;
use domain::ids::{PartyId, UnixSeconds};
use domain::settle::{InvoiceDocument, Issue};
use domain::tx::Transaction;

use crate::api::{ApiError, AppState};
use crate::settle::{get_json, put_json};
use crate::state::{Overlay, StateRead, Table};

const KEY_DUE: &[u8] = b"invoices_due";
pub const INVOICE_PREFIX: &[u8] = b"ic/";

/// Most `IssueInvoice` transactions the leader proposes per tick round.
pub const INVOICES_PER_ROUND_MAX: usize = 100;

fn key_sequence(issuer: &PartyId) -> Vec<u8> {
    [b"iq/".as_slice(), issuer.as_str().as_bytes()].concat()
}
/// `ic/{customer}\0`: every invoice of a customer, in period order.
pub fn invoice_prefix(customer: &PartyId) -> Vec<u8> {
    [INVOICE_PREFIX, customer.as_str().as_bytes(), b"\0"].concat()
}
fn key_invoice(customer: &PartyId, start: UnixSeconds) -> Vec<u8> {
    [invoice_prefix(customer).as_slice(), &start.0.to_be_bytes()].concat()
}

fn due_set(state: &dyn StateRead) -> BTreeSet<(PartyId, UnixSeconds)> {
    get_json(state, Table::Private, KEY_DUE).unwrap_or_default()
}

/// Called by the close: the period's statement is frozen and waits for its invoice.
pub(crate) fn mark_due(state: &mut Overlay<'_>, customer: &PartyId, start: UnixSeconds) {
    let mut due = due_set(state);
    due.insert((customer.clone(), start));
    put_json(state, Table::Private, KEY_DUE.to_vec(), &due);
}

/// Closed statements without an invoice, in (customer, start) order, at most `limit`.
pub fn due(state: &dyn StateRead, limit: usize) -> Vec<(PartyId, UnixSeconds)> {
    due_set(state).into_iter().take(limit).collect()
}

/// Applies `IssueInvoice`: the canonical invoice document (the entry's claims), or why not.
pub(crate) fn issue(
    state: &mut Overlay<'_>,
    log_index: u64,
    tx: &Transaction,
    customer: &PartyId,
    start: UnixSeconds,
) -> Result<Vec<u8>, String> {
    let mut due = due_set(state);
    if !due.remove(&(customer.clone(), start)) {
        return Err(format!("invoice_not_due: no closed, uninvoiced period of {customer} starts at {}", start.0));
    }
    let record = crate::settle::period_record(state, customer, start)
        .ok_or_else(|| format!("unknown_period: {customer} has no period starting at {}", start.0))?;
    let statement = record.statement.as_ref().ok_or_else(|| "period_not_closed".to_string())?;
    let tariff = crate::tariffs::version(state, &record.tariff, record.tariff_from)
        .ok_or_else(|| format!("no_tariff: {} from {} is not published", record.tariff, record.tariff_from))?;
    let sequence = get_json::<u64>(state, Table::Private, &key_sequence(&tariff.supplier)).unwrap_or(0) + 1;
    let mut by_quality = BTreeMap::new();
    for (_, interval) in crate::settle::period_intervals(state, customer, &record.period) {
        *by_quality.entry(interval.quality).or_insert(0u32) += 1;
    }
    let issued_at = chrono::DateTime::from_timestamp_millis(tx.time.0).unwrap_or_default();
    let document = InvoiceDocument::issue(
        statement,
        Issue {
            issuer: &tariff.supplier,
            sequence,
            issued_at,
            tariff_from: record.tariff_from,
            meters: record.meters.iter().cloned().collect(),
            by_quality,
        },
    );
    let bytes = document.canonical();
    let issued = IssuedInvoice {
        number: document.number.clone(),
        issuer: tariff.supplier.clone(),
        sequence,
        period_start: start.0,
        tx_id: tx.tx_id.to_string(),
        ledger_index: log_index,
        document: String::from_utf8(bytes.clone()).expect("JSON is UTF-8"),
    };
    put_json(state, Table::Private, key_sequence(&tariff.supplier), &sequence);
    put_json(state, Table::Private, key_invoice(customer, start), &issued);
    put_json(state, Table::Private, KEY_DUE.to_vec(), &due);
    Ok(bytes)
}

/// `GET /v1/customers/{id}/invoices`: the customer's issued invoices, oldest first (private).
pub async fn customer_invoices(
    State(app): State<AppState>,
    Path(customer_id): Path<String>,
) -> Result<Json<Vec<IssuedInvoice>>, ApiError> {
    let (_, party) = crate::statements::customer_party(&app, &customer_id)?;
    let invoices = app
        .store
        .scan_prefix(Table::Private, &invoice_prefix(&party))
        .into_iter()
        .filter_map(|(_, bytes)| serde_json::from_slice::<IssuedInvoice>(&bytes).ok())
        .collect();
    Ok(Json(invoices))
}
