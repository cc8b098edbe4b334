//! Invoices: a closed period's statement issued under a gap-free number. The invoice document is
//! canonical JSON (field order as declared here, no whitespace, decimals as strings): its SHA-256
//! is the claims digest of the transaction that issued it, so the customer who holds the document
//! checks it against the ledger's receipt offline (`docs/receipts.md`, "Invoices").
//!
//! Sans-IO: the ledger assigns the number and the time; this module only builds and encodes.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::ids::{MeterId, PartyId, TariffId};
use crate::money::Currency;

use super::close::{Statement, StatementLine};
use super::period::BillingPeriod;
use super::registers::MeterReads;
use super::vee::Quality;

/// First field of every invoice document.
pub const INVOICE_FORMAT: &str = "wattle.invoice.v1";

/// An issued invoice, as the customer holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceDocument {
    /// Always [`INVOICE_FORMAT`].
    pub format: String,
    /// `{issuer}-{sequence:06}`: per issuer, gap-free from 1.
    pub number: String,
    pub sequence: u64,
    /// The supplier that issues it.
    pub issuer: PartyId,
    pub customer: PartyId,
    /// Leader-stamped time of the issuing transaction, RFC 3339 UTC, seconds.
    pub issued_at: String,
    pub period: BillingPeriod,
    pub tariff: TariffId,
    pub tariff_from: NaiveDateTime,
    pub currency: Currency,
    /// The meters whose readings the period settled.
    pub meters: Vec<MeterId>,
    /// The supply points (German MaLo, UK MPAN) those meters served the customer at in the
    /// period, from their bindings; absent where none is known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supply_points: Vec<String>,
    /// Each meter's register values at the start and end of the period, and how each was
    /// obtained (`registers.rs`); absent where none was read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registers: Vec<MeterReads>,
    pub lines: Vec<StatementLine>,
    #[serde(with = "rust_decimal::serde::str")]
    pub net_total: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub vat_total: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub total: Decimal,
    pub completeness: Completeness,
    /// The voided invoice this one replaces (void and reissue, `credit.rs`); absent otherwise,
    /// so documents that replace nothing keep their form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

/// How the period's intervals were obtained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completeness {
    pub intervals_in_period: u32,
    /// Intervals settled, by how their value was obtained.
    pub by_quality: BTreeMap<Quality, u32>,
    /// Intervals of the period with no value at close.
    pub missing: u32,
}

/// What the ledger knows when it issues an invoice, besides the statement.
#[derive(Debug, Clone)]
pub struct Issue<'a> {
    pub issuer: &'a PartyId,
    pub sequence: u64,
    pub issued_at: chrono::DateTime<chrono::Utc>,
    pub tariff_from: NaiveDateTime,
    pub meters: Vec<MeterId>,
    pub supply_points: Vec<String>,
    pub registers: Vec<MeterReads>,
    pub by_quality: BTreeMap<Quality, u32>,
    /// The voided invoice a reissue replaces.
    pub replaces: Option<String>,
}

/// The invoice number of an issuer's `sequence`-th invoice.
pub fn invoice_number(issuer: &PartyId, sequence: u64) -> String {
    format!("{issuer}-{sequence:06}")
}

impl InvoiceDocument {
    /// The invoice of a closed period's statement.
    pub fn issue(statement: &Statement, issue: Issue<'_>) -> InvoiceDocument {
        let settled: u32 = issue.by_quality.values().sum();
        InvoiceDocument {
            format: INVOICE_FORMAT.to_string(),
            number: invoice_number(issue.issuer, issue.sequence),
            sequence: issue.sequence,
            issuer: issue.issuer.clone(),
            customer: statement.customer.clone(),
            issued_at: issue.issued_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            period: statement.period,
            tariff: statement.tariff.clone(),
            tariff_from: issue.tariff_from,
            currency: statement.currency,
            meters: issue.meters,
            supply_points: issue.supply_points,
            registers: issue.registers,
            lines: statement.lines.clone(),
            net_total: statement.net_total,
            vat_total: statement.vat_total,
            total: statement.total,
            completeness: Completeness {
                intervals_in_period: statement.intervals_in_period,
                by_quality: issue.by_quality,
                missing: statement.intervals_in_period.saturating_sub(settled),
            },
            replaces: issue.replaces,
        }
    }

    /// The canonical bytes: what the claims digest is taken over.
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an invoice document serialises")
    }

    /// Parses a document; `canonical()` of the result equals the input exactly when the input
    /// was canonical.
    pub fn parse(bytes: &[u8]) -> Result<InvoiceDocument, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settle::Run;

    fn statement() -> Statement {
        let zone: chrono_tz::Tz = "Europe/Berlin".parse().expect("zone");
        let period =
            BillingPeriod::starting(zone, chrono::NaiveDate::from_ymd_opt(2026, 11, 1).expect("date")).expect("period");
        Statement {
            customer: "C0000001".parse().expect("id"),
            tariff: "t-home".parse().expect("id"),
            currency: Currency::new("EUR").expect("EUR"),
            period,
            run: Run(0),
            lines: Vec::new(),
            net_total: Decimal::new(1234, 2),
            vat_total: Decimal::new(234, 2),
            total: Decimal::new(1468, 2),
            intervals_settled: 2,
            intervals_in_period: 2880,
            flags: BTreeMap::new(),
        }
    }

    #[test]
    fn the_document_is_canonical_and_round_trips() {
        let issuer: PartyId = "supplier".parse().expect("id");
        let document = InvoiceDocument::issue(
            &statement(),
            Issue {
                issuer: &issuer,
                sequence: 7,
                issued_at: chrono::DateTime::from_timestamp(1_764_547_200, 0).expect("time"),
                tariff_from: chrono::NaiveDate::from_ymd_opt(2026, 1, 1).expect("d").and_hms_opt(0, 0, 0).expect("t"),
                meters: vec!["WTL0000000001".parse().expect("id")],
                supply_points: Vec::new(),
                registers: Vec::new(),
                by_quality: BTreeMap::from([(Quality::Actual, 1), (Quality::Estimated, 1)]),
                replaces: None,
            },
        );
        assert_eq!(document.number, "supplier-000007");
        assert_eq!(document.completeness.missing, 2878);
        let bytes = document.canonical();
        let text = std::str::from_utf8(&bytes).expect("utf-8");
        assert!(text.starts_with("{\"format\":\"wattle.invoice.v1\",\"number\":\"supplier-000007\""), "{text}");
        assert!(text.contains("\"total\":\"14.68\""), "{text}");
        assert!(text.contains("\"issued_at\":\"2025-12-01T00:00:00Z\""), "{text}");
        assert_eq!(InvoiceDocument::parse(&bytes).expect("parses").canonical(), bytes);
    }
}
