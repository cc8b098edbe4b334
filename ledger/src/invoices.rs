//! Invoices on apply (issue 16): a period close marks the statement due for an invoice; the leader
//! then proposes one `IssueInvoice` transaction per due statement ([`due`], `ticker.rs`). Applying
//! it assigns the issuer's next number (gap-free: the counter moves only when an invoice is
//! issued, in log order), freezes the canonical invoice document, and returns it as the entry's
//! claims document, so the invoice's receipt binds its bytes. Sans-IO, like the rest of apply.
//!
//! A voided invoice whose void asked for a reissue (`credit_notes.rs`) makes its period due
//! again: the replacement carries the period's frozen statement under the next number, names the
//! invoice it replaces, and posts its lines again (the void's credit note took them back).
//!
//! State (private table):
//! - `invoices_due` statements closed but not invoiced yet (JSON set of (customer, start));
//! - `ir/{customer}\0{period start: i64 BE}` the voided invoice a due reissue replaces;
//! - `iq/{issuer}` the issuer's last invoice sequence;
//! - `ic/{customer}\0{period start: i64 BE}{sequence: u64 BE}` an issued invoice
//!   ([`IssuedInvoice`]); a period has more than one only after a void and reissue;
//! - `ix/{number}` the key of the invoice with that number.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, State};
use axum::Json;
use domain::api::IssuedInvoice;
use domain::ids::{PartyId, UnixSeconds};
use domain::settle::{document_postings, register_reads, InvoiceDocument, Issue, SettledInterval};
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
fn key_invoice(customer: &PartyId, start: UnixSeconds, sequence: u64) -> Vec<u8> {
    [invoice_prefix(customer).as_slice(), &start.0.to_be_bytes(), &sequence.to_be_bytes()].concat()
}
fn key_number(number: &str) -> Vec<u8> {
    [b"ix/".as_slice(), number.as_bytes()].concat()
}
fn key_reissue(customer: &PartyId, start: UnixSeconds) -> Vec<u8> {
    [b"ir/".as_slice(), customer.as_str().as_bytes(), b"\0", &start.0.to_be_bytes()].concat()
}

/// The issued invoice numbered `number`, and its customer.
pub(crate) fn by_number(state: &dyn StateRead, number: &str) -> Option<(PartyId, IssuedInvoice)> {
    let key = state.get(Table::Private, &key_number(number))?;
    let invoice: IssuedInvoice = get_json(state, Table::Private, &key)?;
    let document = InvoiceDocument::parse(invoice.document.as_bytes()).expect("a committed invoice parses");
    Some((document.customer, invoice))
}

/// The supply points of the period's meters' bindings to the customer that overlap the period.
fn supply_points(state: &dyn StateRead, customer: &PartyId, record: &crate::settle::PeriodRecord) -> Vec<String> {
    let (start, end) =
        (record.period.start_date.and_time(Default::default()), record.period.end_date.and_time(Default::default()));
    let mut points: Vec<String> = record
        .meters
        .iter()
        .flat_map(|meter| crate::settle::bindings_of(state, meter))
        .filter(|binding| &binding.customer == customer && binding.from < end && binding.to.is_none_or(|to| to > start))
        .map(|binding| binding.supply_point)
        .collect();
    points.sort();
    points.dedup();
    points
}

/// Called by a void with reissue: the period is invoiced again, replacing `replaces`.
pub(crate) fn mark_reissue(state: &mut Overlay<'_>, customer: &PartyId, start: UnixSeconds, replaces: &str) {
    put_json(state, Table::Private, key_reissue(customer, start), &Some(replaces));
    mark_due(state, customer, start);
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
    // (No deletes in state: a reissue done is recorded as `null`.)
    let replaces: Option<String> =
        get_json::<Option<String>>(state, Table::Private, &key_reissue(customer, start)).flatten();
    let (by_quality, registers) = match replaces.as_deref().and_then(|number| by_number(state, number)) {
        // A replacement states the completeness and reads the period closed with, as its
        // statement does (later data goes to the next invoice).
        Some((_, replaced)) => {
            let replaced = InvoiceDocument::parse(replaced.document.as_bytes()).expect("a committed invoice parses");
            (replaced.completeness.by_quality, replaced.registers)
        }
        None => {
            let intervals = crate::settle::period_intervals(state, customer, &record.period);
            let mut by_quality = BTreeMap::new();
            for (_, interval) in &intervals {
                *by_quality.entry(interval.quality).or_insert(0u32) += 1;
            }
            let settled: Vec<SettledInterval<'_>> = intervals
                .iter()
                .map(|(start, interval)| SettledInterval {
                    start: *start,
                    import_wh: interval.priced.energy.import_wh,
                    export_wh: interval.priced.energy.export_wh,
                    quality: interval.quality,
                    samples: &interval.samples,
                })
                .collect();
            (by_quality, register_reads(&record.period, &settled))
        }
    };
    let issued_at = chrono::DateTime::from_timestamp_millis(tx.time.0).unwrap_or_default();
    let document = InvoiceDocument::issue(
        statement,
        Issue {
            issuer: &tariff.supplier,
            sequence,
            issued_at,
            tariff_from: record.tariff_from,
            meters: record.meters.iter().cloned().collect(),
            supply_points: supply_points(state, customer, &record),
            registers,
            by_quality,
            replaces: replaces.clone(),
        },
    );
    if replaces.is_some() {
        // The void's credit note took the lines back from the books; the replacement posts them.
        let lines: Vec<_> =
            document.lines.iter().map(|line| (line.component.clone(), line.party.clone(), line.amount)).collect();
        let postings = document_postings("reissue", &document.number, customer, start, &lines, statement.currency);
        let balances = crate::settle::post(state, &postings).map_err(|result| result.code().to_string())?;
        for (key, balance) in balances {
            put_json(state, Table::Private, key, &balance);
        }
        put_json(state, Table::Private, key_reissue(customer, start), &None::<String>);
    }
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
    let key = key_invoice(customer, start, sequence);
    state.put(Table::Private, key_number(&issued.number), key.clone());
    put_json(state, Table::Private, key, &issued);
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
