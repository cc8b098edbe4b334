//! Invoices as billing presents them: the list of a customer's issued invoices and each
//! invoice's document, exactly the bytes whose SHA-256 the ledger's receipt binds (the customer
//! verifies with `wattle receipt verify RECEIPT --claims INVOICE.json`), plus a CSV export.

use serde::{Deserialize, Serialize};

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
    /// The ledger transaction that issued it, and where it sits.
    pub tx_id: String,
    pub ledger_index: u64,
    /// The document (`GET`): what the receipt's claims digest covers.
    pub document_url: String,
    /// The receipt (`GET`, JSON; the canonical bytes without `?format=json`).
    pub receipt_url: String,
}

impl InvoiceSummary {
    pub fn of(row: &InvoiceRow) -> InvoiceSummary {
        InvoiceSummary {
            number: row.number.clone(),
            customer_id: row.customer_id.clone(),
            period_start: row.period_start,
            period_end: row.period_end,
            issued_at: row.issued_at.clone(),
            total: row.total.clone(),
            currency: row.currency.clone(),
            tx_id: row.tx_id.clone(),
            ledger_index: row.ledger_index,
            document_url: format!("/v1/invoices/{}", row.number),
            receipt_url: format!("/v1/invoices/{}/receipt?format=json", row.number),
        }
    }
}

/// The invoice lines as CSV (RFC 4180): one row per line, then the totals.
pub fn csv(document: &domain::settle::InvoiceDocument) -> String {
    let mut out = String::from("number,period_start,period_end,component,quantity,unit,unit_price,amount,currency\n");
    let field = |text: &str| {
        if text.contains([',', '"', '\n']) {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text.to_string()
        }
    };
    let period = (document.period.start_date.to_string(), document.period.end_date.to_string());
    for line in &document.lines {
        let unit =
            serde_json::to_value(line.unit).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            field(&document.number),
            period.0,
            period.1,
            field(&line.component.key()),
            line.quantity,
            unit,
            line.unit_price.map(|price| price.to_string()).unwrap_or_default(),
            line.amount,
            document.currency
        ));
    }
    for (name, amount) in
        [("net_total", document.net_total), ("vat_total", document.vat_total), ("total", document.total)]
    {
        out.push_str(&format!(
            "{},{},{},{name},,,,{amount},{}\n",
            field(&document.number),
            period.0,
            period.1,
            document.currency
        ));
    }
    out
}
