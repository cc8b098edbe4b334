//! Invoices and credit notes as billing presents them: a customer's issued invoices (each with
//! what credit notes did to it: credited, voided, replaced) and credit notes, and each document,
//! exactly the bytes whose SHA-256 the ledger's receipt binds (the customer verifies with
//! `wattle receipt verify RECEIPT --claims DOCUMENT.json`), plus CSV and printable exports.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::ids::CustomerId;
use domain::settle::{CreditNoteDocument, InvoiceDocument};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::api::{checked, internal, known_customer, path_param, refuse, with_position, Refusal, Shared};
use crate::read_model::InvoiceRow;

/// One entry of `GET /v1/customers/{id}/invoices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InvoiceSummary {
    pub number: String,
    pub customer_id: String,
    /// UTC seconds of the invoiced period, `[start, end)`.
    pub period_start: i64,
    pub period_end: i64,
    pub issued_at: String,
    pub total: String,
    pub currency: String,
    /// `issued`, `credited` (a credit note took part of it back) or `voided`.
    pub status: String,
    /// The sum of its credit notes' totals (negative: money back; `0` without any).
    pub credited: String,
    /// What the invoice still asks for: `total` + `credited`.
    pub balance: String,
    /// Its credit notes' numbers, in issue order.
    pub credit_notes: Vec<String>,
    /// The voided invoice this one replaces, and the invoice that replaced this one.
    pub replaces: Option<String>,
    pub replaced_by: Option<String>,
    /// The ledger transaction that issued it, and where it sits.
    pub tx_id: String,
    pub ledger_index: u64,
    /// The document (`GET`): what the receipt's claims digest covers.
    pub document_url: String,
    /// The receipt (`GET`, JSON; the canonical bytes without `?format=json`).
    pub receipt_url: String,
}

impl InvoiceSummary {
    /// The summary of `row`, given the customer's credit notes and invoices.
    pub fn of(row: &InvoiceRow, notes: &[CreditNoteDocument], invoices: &[InvoiceDocument]) -> InvoiceSummary {
        let own: Vec<&CreditNoteDocument> = notes.iter().filter(|note| note.invoice == row.number).collect();
        let credited: Decimal = own.iter().map(|note| note.total).sum();
        let total: Decimal = row.total.parse().unwrap_or_default();
        let status = if own.iter().any(|note| note.kind == domain::settle::CreditKind::Void) {
            "voided"
        } else if own.is_empty() {
            "issued"
        } else {
            "credited"
        };
        let replaces = invoices.iter().find(|invoice| invoice.number == row.number).and_then(|i| i.replaces.clone());
        let replaced_by = invoices
            .iter()
            .find(|invoice| invoice.replaces.as_deref() == Some(row.number.as_str()))
            .map(|invoice| invoice.number.clone());
        InvoiceSummary {
            number: row.number.clone(),
            customer_id: row.customer_id.clone(),
            period_start: row.period_start,
            period_end: row.period_end,
            issued_at: row.issued_at.clone(),
            total: row.total.clone(),
            currency: row.currency.clone(),
            status: status.to_string(),
            credited: credited.to_string(),
            balance: (total + credited).to_string(),
            credit_notes: own.iter().map(|note| note.number.clone()).collect(),
            replaces,
            replaced_by,
            tx_id: row.tx_id.clone(),
            ledger_index: row.ledger_index,
            document_url: format!("/v1/invoices/{}", row.number),
            receipt_url: format!("/v1/invoices/{}/receipt?format=json", row.number),
        }
    }
}

/// One entry of `GET /v1/customers/{id}/credit-notes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreditNoteSummary {
    pub number: String,
    pub customer_id: String,
    /// The invoice it credits.
    pub invoice: String,
    /// `void` (everything left of the invoice) or `partial` (named lines).
    pub kind: String,
    /// Whether the voided invoice's period was invoiced again.
    pub reissue: bool,
    pub reason: String,
    pub issued_at: String,
    /// Negative: money back to the customer.
    pub total: String,
    pub currency: String,
    pub tx_id: String,
    pub ledger_index: u64,
    pub document_url: String,
    pub receipt_url: String,
}

impl CreditNoteSummary {
    fn of(row: &InvoiceRow, note: &CreditNoteDocument) -> CreditNoteSummary {
        CreditNoteSummary {
            number: row.number.clone(),
            customer_id: row.customer_id.clone(),
            invoice: note.invoice.clone(),
            kind: match note.kind {
                domain::settle::CreditKind::Void => "void",
                domain::settle::CreditKind::Partial => "partial",
            }
            .to_string(),
            reissue: note.reissue,
            reason: note.reason.clone(),
            issued_at: row.issued_at.clone(),
            total: row.total.clone(),
            currency: row.currency.clone(),
            tx_id: row.tx_id.clone(),
            ledger_index: row.ledger_index,
            document_url: format!("/v1/credit-notes/{}", row.number),
            receipt_url: format!("/v1/credit-notes/{}/receipt?format=json", row.number),
        }
    }
}

/// The invoice lines as CSV (RFC 4180): one row per line, then the totals.
pub fn csv(document: &InvoiceDocument) -> String {
    let lines = document
        .lines
        .iter()
        .map(|line| (line.component.key(), line.quantity.to_string(), line.unit, line.unit_price, line.amount));
    lines_csv(
        &document.number,
        &document.period,
        document.currency,
        lines,
        [document.net_total, document.vat_total, document.total],
    )
}

/// A credit note's lines as CSV, like an invoice's (no quantity or unit price: a credit names
/// amounts; negative where money goes back).
pub fn credit_note_csv(note: &CreditNoteDocument) -> String {
    let lines = note.lines.iter().map(|line| (line.component.key(), String::new(), line.unit, None, line.amount));
    lines_csv(&note.number, &note.period, note.currency, lines, [note.net_total, note.vat_total, note.total])
}

/// (component, quantity, unit, unit price, amount) rows, then net, VAT and total.
fn lines_csv(
    number: &str,
    period: &domain::settle::BillingPeriod,
    currency: domain::money::Currency,
    lines: impl Iterator<Item = (String, String, domain::tariff::Unit, Option<Decimal>, Decimal)>,
    [net_total, vat_total, total]: [Decimal; 3],
) -> String {
    let mut out = String::from("number,period_start,period_end,component,quantity,unit,unit_price,amount,currency\n");
    let field = |text: &str| {
        if text.contains([',', '"', '\n']) {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text.to_string()
        }
    };
    let number = field(number);
    let (start, end) = (period.start_date, period.end_date);
    for (component, quantity, unit, unit_price, amount) in lines {
        let unit = serde_json::to_value(unit).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let price = unit_price.map(|price| price.to_string()).unwrap_or_default();
        out.push_str(&format!(
            "{number},{start},{end},{},{quantity},{unit},{price},{amount},{currency}\n",
            field(&component)
        ));
    }
    for (name, amount) in [("net_total", net_total), ("vat_total", vat_total), ("total", total)] {
        out.push_str(&format!("{number},{start},{end},{name},,,,{amount},{currency}\n"));
    }
    out
}

/// `GET /v1/customers/{id}/invoices`.
#[utoipa::path(
    get,
    path = "/v1/customers/{customer_id}/invoices",
    tag = "customers",
    summary = "The customer's issued invoices",
    params(("customer_id" = String, Path, description = "The customer's id", example = "C0000000")),
    responses(
        crate::openapi::CustomerRefusals,
        (status = 200, description = "Issued invoices, oldest period first", body = crate::openapi::InvoiceList,
         headers(("wattle-ledger-index" = u64, description = "The ledger index the answer reflects"))),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn customer_invoices(
    State(shared): State<Shared>,
    headers: HeaderMap,
    customer_id: Result<Path<String>, PathRejection>,
) -> Response {
    let customer_id = match path_param(customer_id) {
        Ok(customer_id) => customer_id,
        Err(refusal) => return refuse(&shared, refusal),
    };
    let result = async {
        let (customer, position, _) = known_customer(&shared, &headers, customer_id, "invoices").await?;
        let rows = shared.model.invoices_of(customer.as_str()).await.map_err(internal)?;
        let documents: Vec<InvoiceDocument> = parsed(&rows, InvoiceDocument::parse)?;
        let notes = parsed(
            &shared.model.credit_notes_of(customer.as_str()).await.map_err(internal)?,
            CreditNoteDocument::parse,
        )?;
        let invoices: Vec<_> = rows.iter().map(|row| InvoiceSummary::of(row, &notes, &documents)).collect();
        Ok::<_, Refusal>((invoices, position))
    }
    .await;
    match result {
        Ok((invoices, position)) => with_position(
            Json(serde_json::json!({ "invoices": invoices, "ledger_index": position.ledger_index })).into_response(),
            position,
        ),
        Err(refusal) => refuse(&shared, refusal),
    }
}

/// `?format=` of the invoice endpoints.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct FormatQuery {
    /// `csv` (the document's lines) or `html` (the printable invoice) for
    /// `GET /v1/invoices/{number}`; `json` for the receipt.
    format: Option<String>,
}

/// Which kind of issued document a number names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Issued {
    Invoice,
    CreditNote,
}

impl Issued {
    fn name(self) -> &'static str {
        match self {
            Issued::Invoice => "invoice",
            Issued::CreditNote => "credit note",
        }
    }
}

/// Longest invoice or credit note number billing looks up.
const NUMBER_BYTES_MAX: usize = 200;

/// Parses every stored document of `rows` (a stored document that does not parse is a 500).
fn parsed<T>(rows: &[InvoiceRow], parse: fn(&[u8]) -> Result<T, serde_json::Error>) -> Result<Vec<T>, Refusal> {
    rows.iter()
        .map(|row| {
            parse(row.document.as_bytes())
                .map_err(|error| internal(anyhow::anyhow!("stored document {} does not parse: {error}", row.number)))
        })
        .collect()
}

/// The invoice or credit note `number` if the caller may read it: another customer's is
/// answered as unknown, so numbers tell nothing of other customers. Logs the access.
async fn document_row(
    shared: &Shared,
    headers: &HeaderMap,
    kind: Issued,
    number: &str,
    what: &str,
) -> Result<InvoiceRow, Refusal> {
    let caller = shared.gate.caller(headers)?;
    let (bad, unknown_code) = match kind {
        Issued::Invoice => ("bad_invoice_number", "unknown_invoice"),
        Issued::CreditNote => ("bad_credit_note_number", "unknown_credit_note"),
    };
    if number.len() > NUMBER_BYTES_MAX {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            bad,
            format!(
                "a{} {} number is at most {NUMBER_BYTES_MAX} bytes",
                if kind == Issued::Invoice { "n" } else { "" },
                kind.name()
            ),
        ));
    }
    let unknown = || Refusal::new(StatusCode::NOT_FOUND, unknown_code, format!("no {} {number}", kind.name()));
    let row = match kind {
        Issued::Invoice => shared.model.invoice(number).await,
        Issued::CreditNote => shared.model.credit_note(number).await,
    }
    .map_err(internal)?
    .ok_or_else(unknown)?;
    let customer = CustomerId::new(row.customer_id.as_str()).map_err(|error| internal(error.into()))?;
    if !caller.may_read(&customer) {
        return Err(unknown());
    }
    crate::auth::log_access(&caller, customer.as_str(), what);
    Ok(row)
}

/// `GET /v1/invoices/{number}`: the invoice document, byte for byte as issued (`?format=csv`:
/// its lines as CSV; `?format=html`: the printable invoice).
#[utoipa::path(
    get,
    path = "/v1/invoices/{number}",
    tag = "invoices",
    summary = "An invoice document, byte for byte as the ledger issued it",
    params(("number" = String, Path, description = "The invoice number", example = "supplier-a-000001"), FormatQuery),
    responses(
        crate::openapi::InvoiceRefusals,
        (status = 200, description = "The canonical invoice document (its SHA-256 is the receipt's claims digest); `format=csv`: its lines; `format=html`: the printable invoice", content(
            (Object = "application/json"),
            (String = "text/csv"),
            (String = "text/html")
        )),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn invoice(
    State(shared): State<Shared>,
    headers: HeaderMap,
    number: Result<Path<String>, PathRejection>,
    query: Result<Query<FormatQuery>, QueryRejection>,
) -> Response {
    let result = async {
        let number = path_param(number)?;
        let query = checked(query)?;
        let row = document_row(&shared, &headers, Issued::Invoice, &number, "invoice").await?;
        let Some(format) = query.format.as_deref().filter(|format| matches!(*format, "csv" | "html")) else {
            return Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], row.document).into_response());
        };
        let document = parsed(std::slice::from_ref(&row), InvoiceDocument::parse)?.remove(0);
        Ok(match format {
            "csv" => ([(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv(&document)).into_response(),
            _ => {
                // The customer's other invoices (last year's comparison) and credit notes.
                let others = parsed(
                    &shared.model.invoices_of(&row.customer_id).await.map_err(internal)?,
                    InvoiceDocument::parse,
                )?;
                let notes = parsed(
                    &shared.model.credit_notes_of(&row.customer_id).await.map_err(internal)?,
                    CreditNoteDocument::parse,
                )?;
                let last_year = crate::invoice_html::same_period_last_year(&document, &others);
                let summary = InvoiceSummary::of(&row, &notes, &others);
                (
                    [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    crate::invoice_html::render(&document, row.document.as_bytes(), &row.tx_id, last_year, &summary),
                )
                    .into_response()
            }
        })
    }
    .await;
    result.unwrap_or_else(|refusal: Refusal| refuse(&shared, refusal))
}

/// `GET /v1/invoices/{number}/receipt[?format=json]`: the ledger's receipt of the issuing
/// transaction, passed through as the ledger gave it.
#[utoipa::path(
    get,
    path = "/v1/invoices/{number}/receipt",
    tag = "invoices",
    summary = "The ledger's receipt of the transaction that issued the invoice",
    params(("number" = String, Path, description = "The invoice number", example = "supplier-a-000001"), FormatQuery),
    responses(
        crate::openapi::InvoiceRefusals,
        (status = 200, description = "The receipt: canonical bytes (`wattle receipt verify`), or JSON with `format=json`", content(
            (Vec<u8> = "application/octet-stream"),
            (Object = "application/json")
        )),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn invoice_receipt(
    State(shared): State<Shared>,
    headers: HeaderMap,
    number: Result<Path<String>, PathRejection>,
    query: Result<Query<FormatQuery>, QueryRejection>,
) -> Response {
    receipt(shared, headers, Issued::Invoice, number, query).await
}

/// The receipt of the transaction that issued an invoice or credit note, from the ledger.
async fn receipt(
    shared: Shared,
    headers: HeaderMap,
    kind: Issued,
    number: Result<Path<String>, PathRejection>,
    query: Result<Query<FormatQuery>, QueryRejection>,
) -> Response {
    let result = async {
        let number = path_param(number)?;
        let query = checked(query)?;
        let what = match kind {
            Issued::Invoice => "invoice_receipt",
            Issued::CreditNote => "credit_note_receipt",
        };
        let row = document_row(&shared, &headers, kind, &number, what).await?;
        let json = query.format.as_deref() == Some("json");
        let path = format!("/v1/receipts/{}{}", row.tx_id, if json { "?format=json" } else { "" });
        let bytes = shared.ledger.get_bytes(&path, std::time::Duration::ZERO).await.map_err(|error| {
            Refusal::new(
                StatusCode::BAD_GATEWAY,
                "ledger_unavailable",
                format!("the receipt could not be fetched: {error}"),
            )
        })?;
        let content_type = if json { "application/json" } else { "application/octet-stream" };
        Ok(([(axum::http::header::CONTENT_TYPE, content_type)], bytes).into_response())
    }
    .await;
    result.unwrap_or_else(|refusal: Refusal| refuse(&shared, refusal))
}

/// `GET /v1/customers/{id}/credit-notes`.
#[utoipa::path(
    get,
    path = "/v1/customers/{customer_id}/credit-notes",
    tag = "customers",
    summary = "The customer's credit notes",
    params(("customer_id" = String, Path, description = "The customer's id", example = "C0000000")),
    responses(
        crate::openapi::CustomerRefusals,
        (status = 200, description = "Credit notes, in the order the ledger issued them", body = crate::openapi::CreditNoteList,
         headers(("wattle-ledger-index" = u64, description = "The ledger index the answer reflects"))),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn customer_credit_notes(
    State(shared): State<Shared>,
    headers: HeaderMap,
    customer_id: Result<Path<String>, PathRejection>,
) -> Response {
    let result = async {
        let customer_id = path_param(customer_id)?;
        let (customer, position, _) = known_customer(&shared, &headers, customer_id, "credit_notes").await?;
        let rows = shared.model.credit_notes_of(customer.as_str()).await.map_err(internal)?;
        let notes = parsed(&rows, CreditNoteDocument::parse)?;
        let summaries: Vec<_> = rows.iter().zip(&notes).map(|(row, note)| CreditNoteSummary::of(row, note)).collect();
        Ok::<_, Refusal>(with_position(
            Json(serde_json::json!({ "credit_notes": summaries, "ledger_index": position.ledger_index }))
                .into_response(),
            position,
        ))
    }
    .await;
    result.unwrap_or_else(|refusal| refuse(&shared, refusal))
}

/// `GET /v1/credit-notes/{number}`: the credit note document, byte for byte as issued
/// (`?format=csv`: its lines).
#[utoipa::path(
    get,
    path = "/v1/credit-notes/{number}",
    tag = "invoices",
    summary = "A credit note document, byte for byte as the ledger issued it",
    params(("number" = String, Path, description = "The credit note number", example = "supplier-a-CN-000001"), FormatQuery),
    responses(
        crate::openapi::InvoiceRefusals,
        (status = 200, description = "The canonical credit note document (its SHA-256 is the receipt's claims digest); `format=csv`: its lines", content(
            (Object = "application/json"),
            (String = "text/csv")
        )),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn credit_note(
    State(shared): State<Shared>,
    headers: HeaderMap,
    number: Result<Path<String>, PathRejection>,
    query: Result<Query<FormatQuery>, QueryRejection>,
) -> Response {
    let result = async {
        let number = path_param(number)?;
        let query = checked(query)?;
        let row = document_row(&shared, &headers, Issued::CreditNote, &number, "credit_note").await?;
        if query.format.as_deref() != Some("csv") {
            return Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], row.document).into_response());
        }
        let note = parsed(std::slice::from_ref(&row), CreditNoteDocument::parse)?.remove(0);
        Ok(([(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")], credit_note_csv(&note)).into_response())
    }
    .await;
    result.unwrap_or_else(|refusal: Refusal| refuse(&shared, refusal))
}

/// `GET /v1/credit-notes/{number}/receipt[?format=json]`.
#[utoipa::path(
    get,
    path = "/v1/credit-notes/{number}/receipt",
    tag = "invoices",
    summary = "The ledger's receipt of the transaction that issued the credit note",
    params(("number" = String, Path, description = "The credit note number", example = "supplier-a-CN-000001"), FormatQuery),
    responses(
        crate::openapi::InvoiceRefusals,
        (status = 200, description = "The receipt: canonical bytes (`wattle receipt verify`), or JSON with `format=json`", content(
            (Vec<u8> = "application/octet-stream"),
            (Object = "application/json")
        )),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn credit_note_receipt(
    State(shared): State<Shared>,
    headers: HeaderMap,
    number: Result<Path<String>, PathRejection>,
    query: Result<Query<FormatQuery>, QueryRejection>,
) -> Response {
    receipt(shared, headers, Issued::CreditNote, number, query).await
}
