//! Credit notes on apply (issue 16): a `CreditInvoice` admin action (voted under governance)
//! is checked against the invoice and queued as a credit order; the leader then proposes one
//! `IssueCreditNote` per queued order (`ticker.rs`). Applying it numbers the credit note
//! gap-free per issuer (`{issuer}-CN-000001`), posts its lines (the customer's billed account
//! credited, each party's revenue debited), records what the invoice has had credited, and
//! returns the credit note document as the entry's claims, so its receipt binds its bytes. A
//! void with reissue makes the period due for a replacement invoice (`invoices.rs`). The rules
//! are `domain::settle::credit`'s. Sans-IO, like the rest of apply.
//!
//! State (private table):
//! - `credit_orders` the decided orders without a credit note yet (JSON map: order number →
//!   (customer, order)), `credit_order_count` the last order number;
//! - `icr/{invoice number}` what the invoice has had credited ([`Credited`]);
//! - `cq/{issuer}` the issuer's last credit note sequence;
//! - `cn/{customer}\0{order: u64 BE}` an issued credit note ([`IssuedInvoice`], the same record
//!   as an invoice's).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::Json;
use domain::api::IssuedInvoice;
use domain::ids::PartyId;
use domain::settle::{document_postings, CreditIssue, CreditNoteDocument, CreditOrder, Credited, InvoiceDocument};
use domain::tx::Transaction;

use crate::api::{ApiError, AppState};
use crate::settle::{get_json, put_json};
use crate::state::{Overlay, StateRead, Table};

const KEY_ORDERS: &[u8] = b"credit_orders";
const KEY_ORDER_COUNT: &[u8] = b"credit_order_count";
pub const CREDIT_NOTE_PREFIX: &[u8] = b"cn/";

/// Most `IssueCreditNote` transactions the leader proposes per tick round.
pub const CREDIT_NOTES_PER_ROUND_MAX: usize = 100;

type Orders = BTreeMap<u64, (PartyId, CreditOrder)>;

fn key_sequence(issuer: &PartyId) -> Vec<u8> {
    [b"cq/".as_slice(), issuer.as_str().as_bytes()].concat()
}
fn key_credited(invoice: &str) -> Vec<u8> {
    [b"icr/".as_slice(), invoice.as_bytes()].concat()
}
/// `cn/{customer}\0`: every credit note of a customer, in decision order.
pub fn credit_note_prefix(customer: &PartyId) -> Vec<u8> {
    [CREDIT_NOTE_PREFIX, customer.as_str().as_bytes(), b"\0"].concat()
}
fn key_credit_note(customer: &PartyId, order: u64) -> Vec<u8> {
    [credit_note_prefix(customer).as_slice(), &order.to_be_bytes()].concat()
}

fn orders(state: &dyn StateRead) -> Orders {
    get_json(state, Table::Private, KEY_ORDERS).unwrap_or_default()
}

/// Decided orders without a credit note, oldest first, at most `limit`.
pub fn due(state: &dyn StateRead, limit: usize) -> Vec<(u64, PartyId)> {
    orders(state).into_iter().take(limit).map(|(number, (customer, _))| (number, customer)).collect()
}

/// What an invoice has had credited.
pub(crate) fn credited(state: &dyn StateRead, invoice: &str) -> Credited {
    get_json(state, Table::Private, &key_credited(invoice)).unwrap_or_default()
}

/// Builds the credit note of `order` against the invoice as credited so far; `credited` is
/// advanced. Errors are `code: message`.
fn build(
    state: &dyn StateRead,
    order: &CreditOrder,
    credited: &mut Credited,
    sequence: u64,
    time_ms: i64,
) -> Result<(PartyId, InvoiceDocument, CreditNoteDocument), String> {
    let refuse = |error: domain::settle::CreditError| format!("{}: {error}", error.code());
    let (customer, invoice) = crate::invoices::by_number(state, &order.invoice)
        .ok_or_else(|| refuse(domain::settle::CreditError::UnknownInvoice(order.invoice.clone())))?;
    let document = InvoiceDocument::parse(invoice.document.as_bytes()).expect("a committed invoice parses");
    let tariff = crate::tariffs::version(state, &document.tariff, document.tariff_from)
        .ok_or_else(|| format!("no_tariff: {} from {} is not published", document.tariff, document.tariff_from))?;
    let note = CreditNoteDocument::issue(
        &document,
        credited,
        order,
        CreditIssue {
            sequence,
            issued_at: chrono::DateTime::from_timestamp_millis(time_ms).unwrap_or_default(),
            invoice_sha256: domain::merkle::sha256(invoice.document.as_bytes()),
            vat: tariff.vat.as_ref(),
            rounding: tariff.rounding,
        },
    )
    .map_err(refuse)?;
    Ok((customer, document, note))
}

/// Applies a `CreditInvoice` admin action: checks the order against the invoice as it will
/// stand once the orders queued before it are issued, then queues it.
pub(crate) fn order(state: &mut Overlay<'_>, order_json: &[u8]) -> Result<(), String> {
    let order = CreditOrder::parse(order_json).map_err(|error| format!("{}: {error}", error.code()))?;
    let mut queued = orders(state);
    let mut credited = credited(state, &order.invoice);
    for (_, earlier) in queued.values().filter(|(_, earlier)| earlier.invoice == order.invoice) {
        // An earlier order that will be refused at issue leaves the invoice as it is.
        let mut after = credited.clone();
        if build(state, earlier, &mut after, 0, 0).is_ok() {
            credited = after;
        }
    }
    let (customer, _, _) = build(state, &order, &mut credited, 0, 0)?;
    let number = get_json::<u64>(state, Table::Private, KEY_ORDER_COUNT).unwrap_or(0) + 1;
    queued.insert(number, (customer, order));
    put_json(state, Table::Private, KEY_ORDER_COUNT.to_vec(), &number);
    put_json(state, Table::Private, KEY_ORDERS.to_vec(), &queued);
    Ok(())
}

/// Applies `IssueCreditNote`: the credit note document (the entry's claims), or why not. An
/// order refused here (the invoice changed since it was decided) leaves the queue all the same.
pub(crate) fn issue(
    state: &mut Overlay<'_>,
    log_index: u64,
    tx: &Transaction,
    customer: &PartyId,
    order_number: u64,
) -> Result<Vec<u8>, String> {
    let mut queued = orders(state);
    let Some((ordered_for, order)) = queued.remove(&order_number) else {
        return Err(format!("credit_not_due: no decided credit order {order_number} waits for its credit note"));
    };
    if &ordered_for != customer {
        return Err(format!("wrong_customer: credit order {order_number} is for {ordered_for}"));
    }
    put_json(state, Table::Private, KEY_ORDERS.to_vec(), &queued);
    let mut credited = credited(state, &order.invoice);
    let issuer = crate::invoices::by_number(state, &order.invoice)
        .map(|(_, invoice)| invoice.issuer)
        .ok_or_else(|| format!("unknown_invoice: no issued invoice is numbered {}", order.invoice))?;
    let sequence = get_json::<u64>(state, Table::Private, &key_sequence(&issuer)).unwrap_or(0) + 1;
    let (_, invoice, note) = build(state, &order, &mut credited, sequence, tx.time.0)?;
    let lines: Vec<_> =
        note.lines.iter().map(|line| (line.component.clone(), line.party.clone(), line.amount)).collect();
    let postings =
        document_postings("credit_note", &note.number, customer, invoice.period.start, &lines, note.currency);
    let balances = crate::settle::post(state, &postings).map_err(|result| result.code().to_string())?;
    for (key, balance) in balances {
        put_json(state, Table::Private, key, &balance);
    }
    if note.reissue {
        crate::invoices::mark_reissue(state, customer, invoice.period.start, &invoice.number);
    }
    let bytes = note.canonical();
    let issued = IssuedInvoice {
        number: note.number.clone(),
        issuer: issuer.clone(),
        sequence,
        period_start: invoice.period.start.0,
        tx_id: tx.tx_id.to_string(),
        ledger_index: log_index,
        document: String::from_utf8(bytes.clone()).expect("JSON is UTF-8"),
    };
    put_json(state, Table::Private, key_sequence(&issuer), &sequence);
    put_json(state, Table::Private, key_credited(&order.invoice), &credited);
    put_json(state, Table::Private, key_credit_note(customer, order_number), &issued);
    Ok(bytes)
}

/// `GET /v1/customers/{id}/credit-notes`: the customer's credit notes, in decision order (private).
pub async fn customer_credit_notes(
    State(app): State<AppState>,
    Path(customer_id): Path<String>,
) -> Result<Json<Vec<IssuedInvoice>>, ApiError> {
    let (_, party) = crate::statements::customer_party(&app, &customer_id)?;
    let notes = app
        .store
        .scan_prefix(Table::Private, &credit_note_prefix(&party))
        .into_iter()
        .filter_map(|(_, bytes)| serde_json::from_slice::<IssuedInvoice>(&bytes).ok())
        .collect();
    Ok(Json(notes))
}
