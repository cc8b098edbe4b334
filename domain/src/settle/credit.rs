//! Credit notes: how an issued invoice is corrected without being changed (issue 16).
//!
//! An issued invoice is immutable. The rules (docs/billing.md, "Corrections"):
//! 1. A late reading of a closed period is settled into its interval and stated as a correction
//!    line on the customer's next statement, hence on the next invoice (automatic; `close.rs`).
//! 2. An amount the supplier takes back (a disputed line, a goodwill credit) is a **partial
//!    credit note**: named lines of the invoice, each by at most what is left of it, with the VAT
//!    on the credited base recomputed at the invoice's rate and rounded once.
//! 3. An invoice withdrawn as a whole is **voided**: a credit note for everything not credited yet
//!    (every line's remainder and the VAT's), after which the invoice takes no more credits. With
//!    `reissue`, the period's frozen statement is invoiced again under the issuer's next number,
//!    the new document naming the one it `replaces`.
//!
//! A [`CreditOrder`] is an admin action (voted under governance); the ledger then issues the
//! credit note in its own transaction, numbering it gap-free per issuer (`{issuer}-CN-000001`),
//! and the credit note document is that transaction's claims, as an invoice's is.
//!
//! Sans-IO: the ledger supplies the invoice, what was credited before, the tariff's VAT and the
//! number and time; this module checks and computes.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::ids::{PartyId, UnixSeconds};
use crate::limits::CREDIT_ORDER_JSON_BYTES_MAX;
use crate::money::Currency;
use crate::tariff::{Component, Rounding, Unit, Vat};

use super::invoice::InvoiceDocument;
use super::period::BillingPeriod;
use super::posting::{posting, Account, AccountKind, Posting, PostingId, Run};

/// First field of every credit note document.
pub const CREDIT_NOTE_FORMAT: &str = "wattle.credit_note.v1";
/// Longest reason on a credit order, in characters.
pub const CREDIT_REASON_CHARS_MAX: usize = 500;
/// Most lines one partial credit names.
pub const CREDIT_LINES_MAX: usize = 64;

/// What the consortium decided to credit (the `CreditInvoice` admin action's document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditOrder {
    /// The invoice number, e.g. `supplier-a-000001`.
    pub invoice: String,
    /// Why, as the customer will read it on the credit note.
    pub reason: String,
    pub scope: CreditScope,
}

/// A whole invoice or some of its lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CreditScope {
    /// Credit everything not credited yet; with `reissue`, invoice the period again.
    Void { reissue: bool },
    /// Credit these lines by these amounts (VAT follows its base).
    Lines { lines: Vec<LineCredit> },
}

/// How much of one invoice line to take back, in the line's own sign (a 15.00 charge credited
/// by 2.50 is `"2.50"`; a −3.20 export credit reduced by 1.00 is `"-1.00"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineCredit {
    /// The line's position in the invoice's `lines`, from 0.
    pub line: u32,
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
}

impl CreditOrder {
    /// The canonical JSON an admin action carries.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a credit order serialises")
    }

    /// Parses and checks what can be checked without the invoice.
    pub fn parse(bytes: &[u8]) -> Result<CreditOrder, CreditError> {
        if bytes.len() > CREDIT_ORDER_JSON_BYTES_MAX {
            return Err(CreditError::Malformed(format!("over {CREDIT_ORDER_JSON_BYTES_MAX} bytes")));
        }
        let order: CreditOrder =
            serde_json::from_slice(bytes).map_err(|error| CreditError::Malformed(error.to_string()))?;
        let reason = order.reason.trim();
        if reason.is_empty() || order.reason.chars().count() > CREDIT_REASON_CHARS_MAX {
            return Err(CreditError::BadReason(format!("1 to {CREDIT_REASON_CHARS_MAX} characters")));
        }
        if order.reason.chars().any(char::is_control) {
            return Err(CreditError::BadReason("no control characters".into()));
        }
        if let CreditScope::Lines { lines } = &order.scope {
            if lines.is_empty() || lines.len() > CREDIT_LINES_MAX {
                return Err(CreditError::Malformed(format!("a partial credit names 1 to {CREDIT_LINES_MAX} lines")));
            }
        }
        Ok(order)
    }
}

/// What earlier credit notes took from an invoice (the ledger keeps one per invoice).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credited {
    /// Per line index, the amount credited so far, in the line's sign.
    #[serde(default)]
    pub lines: BTreeMap<u32, Decimal>,
    /// VAT credited so far, in the VAT line's sign.
    #[serde(default)]
    pub vat: Decimal,
    /// The credit notes, in issue order.
    #[serde(default)]
    pub notes: Vec<String>,
    /// The credit note that voided the invoice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voided_by: Option<String>,
    /// The invoice that replaced it (void with reissue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<String>,
}

/// Why a credit cannot be made. `code()` is the stable reason code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreditError {
    #[error("malformed credit order: {0}")]
    Malformed(String),
    #[error("reason: {0}")]
    BadReason(String),
    #[error("no issued invoice is numbered {0}")]
    UnknownInvoice(String),
    #[error("invoice {0} is void: it takes no more credits")]
    Voided(String),
    #[error("the invoice has no line {0}")]
    UnknownLine(u32),
    #[error("line {0} is VAT: VAT is credited with the lines of its base")]
    VatLine(u32),
    #[error("line {0} is named twice")]
    DuplicateLine(u32),
    #[error("line {line}: {detail}")]
    BadAmount { line: u32, detail: String },
    #[error("line {line}: crediting {amount} after {credited} exceeds the line's {invoiced}")]
    OverCredit { line: u32, amount: Decimal, credited: Decimal, invoiced: Decimal },
    #[error("the amounts overflow")]
    Overflow,
}

impl CreditError {
    pub fn code(&self) -> &'static str {
        match self {
            CreditError::Malformed(_) => "bad_credit_order",
            CreditError::BadReason(_) => "bad_reason",
            CreditError::UnknownInvoice(_) => "unknown_invoice",
            CreditError::Voided(_) => "invoice_voided",
            CreditError::UnknownLine(_) => "unknown_line",
            CreditError::VatLine(_) => "vat_line",
            CreditError::DuplicateLine(_) => "duplicate_line",
            CreditError::BadAmount { .. } => "bad_amount",
            CreditError::OverCredit { .. } => "over_credit",
            CreditError::Overflow => "settlement_overflow",
        }
    }
}

/// Whether a credit note voids its invoice or credits some lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditKind {
    Void,
    Partial,
}

/// One credited line: `amount` is what the customer is charged by it, so a credit of a charge is
/// negative (and a reduced export credit positive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditNoteLine {
    /// The invoice line it credits (its position in the invoice's `lines`).
    pub line: u32,
    pub component: Component,
    pub unit: Unit,
    pub party: PartyId,
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
}

/// A credit note, as the customer holds it: canonical JSON, field order as declared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditNoteDocument {
    /// Always [`CREDIT_NOTE_FORMAT`].
    pub format: String,
    /// `{issuer}-CN-{sequence:06}`: per issuer, gap-free from 1.
    pub number: String,
    pub sequence: u64,
    pub issuer: PartyId,
    pub customer: PartyId,
    /// Leader-stamped time of the issuing transaction, RFC 3339 UTC, seconds.
    pub issued_at: String,
    /// The invoice it credits, and the SHA-256 (hex) of that invoice's document.
    pub invoice: String,
    pub invoice_sha256: String,
    pub kind: CreditKind,
    /// Whether the period is invoiced again (void only).
    pub reissue: bool,
    pub reason: String,
    pub period: BillingPeriod,
    pub currency: Currency,
    pub lines: Vec<CreditNoteLine>,
    #[serde(with = "rust_decimal::serde::str")]
    pub net_total: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub vat_total: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub total: Decimal,
}

/// The credit note number of an issuer's `sequence`-th credit note.
pub fn credit_note_number(issuer: &PartyId, sequence: u64) -> String {
    format!("{issuer}-CN-{sequence:06}")
}

/// What the ledger knows when it issues a credit note, besides the order and the invoice.
#[derive(Debug, Clone)]
pub struct CreditIssue<'a> {
    pub sequence: u64,
    pub issued_at: chrono::DateTime<chrono::Utc>,
    /// SHA-256 of the invoice document.
    pub invoice_sha256: [u8; 32],
    /// The VAT terms of the invoice's tariff version and its rounding.
    pub vat: Option<&'a Vat>,
    pub rounding: Rounding,
}

impl CreditNoteDocument {
    /// Checks `order` against `invoice` and what was `credited` before, and builds the credit
    /// note. `credited` is updated to include it (the caller stores it only if it issues).
    pub fn issue(
        invoice: &InvoiceDocument,
        credited: &mut Credited,
        order: &CreditOrder,
        issue: CreditIssue<'_>,
    ) -> Result<CreditNoteDocument, CreditError> {
        if credited.voided_by.is_some() {
            return Err(CreditError::Voided(invoice.number.clone()));
        }
        let vat_index = invoice.lines.iter().position(|line| line.component == Component::Vat);
        let vat_invoiced = vat_index.map_or(Decimal::ZERO, |index| invoice.lines[index].amount);
        // (line index, amount taken back in the line's sign)
        let mut taken: Vec<(u32, Decimal)> = Vec::new();
        let vat_taken = match &order.scope {
            CreditScope::Void { .. } => {
                for (index, line) in invoice.lines.iter().enumerate() {
                    let index = index as u32;
                    if line.component == Component::Vat {
                        continue;
                    }
                    let before = credited.lines.get(&index).copied().unwrap_or_default();
                    let left = line.amount.checked_sub(before).ok_or(CreditError::Overflow)?;
                    if !left.is_zero() {
                        taken.push((index, left));
                    }
                }
                vat_invoiced.checked_sub(credited.vat).ok_or(CreditError::Overflow)?
            }
            CreditScope::Lines { lines } => {
                let digits = invoice.currency.minor_unit_digits();
                let mut base = Decimal::ZERO;
                for credit in lines {
                    let line = invoice.lines.get(credit.line as usize).ok_or(CreditError::UnknownLine(credit.line))?;
                    if line.component == Component::Vat {
                        return Err(CreditError::VatLine(credit.line));
                    }
                    if taken.iter().any(|(index, _)| *index == credit.line) {
                        return Err(CreditError::DuplicateLine(credit.line));
                    }
                    let bad = |detail: &str| CreditError::BadAmount { line: credit.line, detail: detail.to_string() };
                    if credit.amount.is_zero() {
                        return Err(bad("zero"));
                    }
                    if credit.amount.is_sign_negative() != line.amount.is_sign_negative() || line.amount.is_zero() {
                        return Err(bad("must have the sign of the line's amount"));
                    }
                    if credit.amount.normalize().scale() > digits {
                        return Err(bad(&format!("more than {digits} decimal places")));
                    }
                    let before = credited.lines.get(&credit.line).copied().unwrap_or_default();
                    let after = before.checked_add(credit.amount).ok_or(CreditError::Overflow)?;
                    if after.abs() > line.amount.abs() {
                        return Err(CreditError::OverCredit {
                            line: credit.line,
                            amount: credit.amount,
                            credited: before,
                            invoiced: line.amount,
                        });
                    }
                    let in_base = line
                        .component
                        .vat_base()
                        .is_some_and(|component| issue.vat.is_some_and(|vat| vat.base.contains(&component)));
                    if in_base {
                        base = base.checked_add(credit.amount).ok_or(CreditError::Overflow)?;
                    }
                    taken.push((credit.line, credit.amount));
                }
                let vat = match issue.vat {
                    Some(vat) if vat_index.is_some() => {
                        issue.rounding.round(base.checked_mul(vat.rate).ok_or(CreditError::Overflow)?, digits)
                    }
                    _ => Decimal::ZERO,
                };
                // Never more VAT back than is left of the invoice's (roundings of many partial
                // credits could otherwise add up past it).
                let left = vat_invoiced.checked_sub(credited.vat).ok_or(CreditError::Overflow)?;
                if vat.abs() > left.abs() {
                    left
                } else {
                    vat
                }
            }
        };
        let mut lines = Vec::new();
        let mut net_total = Decimal::ZERO;
        for (index, amount) in &taken {
            let line = &invoice.lines[*index as usize];
            net_total = net_total.checked_sub(*amount).ok_or(CreditError::Overflow)?;
            lines.push(CreditNoteLine {
                line: *index,
                component: line.component.clone(),
                unit: line.unit,
                party: line.party.clone(),
                amount: -*amount,
            });
            let entry = credited.lines.entry(*index).or_default();
            *entry = entry.checked_add(*amount).ok_or(CreditError::Overflow)?;
        }
        if let (Some(index), false) = (vat_index, vat_taken.is_zero()) {
            let line = &invoice.lines[index];
            lines.push(CreditNoteLine {
                line: index as u32,
                component: Component::Vat,
                unit: line.unit,
                party: line.party.clone(),
                amount: -vat_taken,
            });
            credited.vat = credited.vat.checked_add(vat_taken).ok_or(CreditError::Overflow)?;
        }
        let vat_total = -vat_taken;
        let total = net_total.checked_add(vat_total).ok_or(CreditError::Overflow)?;
        let number = credit_note_number(&invoice.issuer, issue.sequence);
        let (kind, reissue) = match order.scope {
            CreditScope::Void { reissue } => {
                credited.voided_by = Some(number.clone());
                (CreditKind::Void, reissue)
            }
            CreditScope::Lines { .. } => (CreditKind::Partial, false),
        };
        credited.notes.push(number.clone());
        Ok(CreditNoteDocument {
            format: CREDIT_NOTE_FORMAT.to_string(),
            number,
            sequence: issue.sequence,
            issuer: invoice.issuer.clone(),
            customer: invoice.customer.clone(),
            issued_at: issue.issued_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            invoice: invoice.number.clone(),
            invoice_sha256: hex::encode(issue.invoice_sha256),
            kind,
            reissue,
            reason: order.reason.clone(),
            period: invoice.period,
            currency: invoice.currency,
            lines,
            net_total,
            vat_total,
            total,
        })
    }

    /// The canonical bytes: what the claims digest is taken over.
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a credit note serialises")
    }

    /// Parses a document (billing); `canonical()` of the result equals canonical input.
    pub fn parse(bytes: &[u8]) -> Result<CreditNoteDocument, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The postings of a document's lines between the customer's billed account and each line's
/// party: a charge (positive) debits the customer, a credit (negative) credits it. `scope` is
/// `credit_note` or `reissue`, `number` the document's number; each line's id includes its
/// position, so two lines of one component and party post twice, not once.
pub fn document_postings(
    scope: &str,
    number: &str,
    customer: &PartyId,
    period_start: UnixSeconds,
    lines: &[(Component, PartyId, Decimal)],
    currency: Currency,
) -> Vec<Posting> {
    let billed = Account::new(customer, AccountKind::Billed);
    lines
        .iter()
        .enumerate()
        .map(|(index, (component, party, amount))| {
            let id = PostingId::derive(
                scope,
                &format!("{number}#{index}"),
                period_start,
                Run(0),
                component,
                [customer, party],
            );
            posting(id, billed.clone(), Account::new(party, AccountKind::Revenue), *amount, currency, component.clone())
        })
        .collect()
}

#[cfg(test)]
#[path = "credit_tests.rs"]
mod tests;
