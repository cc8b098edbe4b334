//! The running bill (`GET /v1/customers/{id}/bill`): the open period's statement as the ledger
//! settled it so far (lines rounded once by the ledger's close rules, VAT, totals), its
//! completeness, and the ledger position it reflects. Always provisional: the close states the
//! final figures. A customer settled at the flat price without billing periods (rules version 1)
//! is shown its account: the all-time interval charges, rounded once.

use std::collections::BTreeMap;

use domain::api::CustomerAccount;
use domain::ids::CustomerId;
use domain::money::{Currency, Money};
use domain::settle::{BillingPeriod, Statement};
use domain::tariff::Component;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::read_model::{IntervalRow, Position};

/// One line of the bill, as the customer reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BillLine {
    /// Stable key: `energy:{window}`, `energy:dynamic`, `standing`, `network`, `levy:{name}`,
    /// `export`, `netting`, `demand`, `tier:{block}`, `vat`.
    pub component: String,
    pub description: String,
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String)]
    pub quantity: Decimal,
    /// `kwh`, `kw`, `day` or `money` (VAT: the base).
    pub unit: String,
    /// `None` where the price varies over the period (dynamic energy).
    #[serde(with = "rust_decimal::serde::str_option")]
    #[schema(value_type = Option<String>)]
    pub unit_price: Option<Decimal>,
    /// What the customer is charged (negative: a credit), rounded once.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String)]
    pub amount: Decimal,
    /// A correction of an interval of an earlier, closed period.
    pub correction: bool,
}

/// How the period's value was obtained so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Completeness {
    pub intervals_in_period: u64,
    /// Intervals of the period that have begun by the bill's as-of time.
    pub intervals_elapsed: u64,
    /// Settled intervals, by how their value was obtained (`actual`, `estimated`, `corrected`,
    /// `gateway_attested`).
    pub by_quality: BTreeMap<String, u64>,
    /// Elapsed intervals without a value yet (late data may still arrive; the close estimates them).
    pub missing: u64,
}

/// The running bill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Bill {
    #[schema(value_type = String)]
    pub customer_id: CustomerId,
    /// Always true: figures change until the period closes.
    pub provisional: bool,
    #[schema(value_type = String)]
    pub currency: Currency,
    /// The tariff the open period is settled by (`GET /v1/tariffs` has its versions); `None` for
    /// a customer settled without billing periods.
    pub tariff: Option<String>,
    /// The open billing period; `None` for a customer settled without billing periods.
    #[schema(value_type = Option<crate::openapi::Period>)]
    pub period: Option<BillingPeriod>,
    pub lines: Vec<BillLine>,
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String)]
    pub net_total: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String)]
    pub vat_total: Decimal,
    /// What the customer owes so far (VAT included).
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String)]
    pub total: Decimal,
    /// Same as `total` (kept for clients of the first billing API).
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String)]
    pub amount: Decimal,
    /// Energy imported in the period so far, kWh, exact.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String)]
    pub energy_import_kwh: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String)]
    pub energy_export_kwh: Decimal,
    pub intervals_settled: u64,
    /// UTC start (seconds) of the latest interval settled in the period, if any.
    pub latest_interval_start: Option<i64>,
    pub completeness: Completeness,
    /// Leader time of the last ledger entry the bill reflects, RFC 3339 UTC.
    pub as_of: String,
    /// The ledger index the bill reflects (billing's feed position).
    pub ledger_index: u64,
}

/// A statement component as the customer reads it.
pub fn describe(component: &Component) -> String {
    match component {
        Component::Energy { window } if window == "dynamic" => "Energy at the dynamic price".into(),
        Component::Energy { window } if window == "flat" => "Energy".into(),
        Component::Energy { window } => format!("Energy, {window} window"),
        Component::Tier { block } => format!("Tier {} adjustment", block + 1),
        Component::Standing => "Standing charge".into(),
        Component::Demand => "Demand charge (highest 15-minute power)".into(),
        Component::Network => "Network charge".into(),
        Component::Levy { name } => format!("Levy: {name}"),
        Component::Export => "Export credit".into(),
        Component::Netting => "Netting credit".into(),
        Component::Vat => "VAT".into(),
        Component::Rounding => "Rounding".into(),
        Component::AccrualTransfer => "Accrual transfer".into(),
    }
}

fn unit_name(unit: domain::tariff::Unit) -> String {
    serde_json::to_value(unit).ok().and_then(|value| value.as_str().map(str::to_string)).unwrap_or_default()
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn kwh(wh: u64) -> Decimal {
    Decimal::from(wh) / Decimal::from(1000u32)
}

/// The bill of an open period's statement, its intervals so far and the feed position.
pub fn from_statement(statement: &Statement, intervals: &[IntervalRow], position: Position) -> Bill {
    let period = statement.period;
    let mut completeness =
        Completeness { intervals_in_period: statement.intervals_in_period.into(), ..Completeness::default() };
    let as_of_s = position.as_of_ms.div_euclid(1000);
    let elapsed_until = as_of_s.clamp(period.start.0, period.end.0);
    completeness.intervals_elapsed = ((elapsed_until - period.start.0 + domain::limits::SETTLEMENT_INTERVAL_SECONDS
        - 1)
        / domain::limits::SETTLEMENT_INTERVAL_SECONDS)
        .max(0) as u64;
    let (mut import_wh, mut export_wh) = (0u64, 0u64);
    let mut elapsed_settled = 0u64;
    for interval in intervals {
        *completeness.by_quality.entry(interval.quality.clone()).or_default() += 1;
        import_wh = import_wh.saturating_add(interval.import_wh);
        export_wh = export_wh.saturating_add(interval.export_wh);
        elapsed_settled += u64::from(interval.start_s < elapsed_until);
    }
    completeness.missing = completeness.intervals_elapsed.saturating_sub(elapsed_settled);
    let lines = statement
        .lines
        .iter()
        .map(|line| BillLine {
            component: line.component.key(),
            description: describe(&line.component),
            quantity: line.quantity,
            unit: unit_name(line.unit),
            unit_price: line.unit_price,
            amount: line.amount,
            correction: line.correction,
        })
        .collect();
    Bill {
        customer_id: CustomerId::new(statement.customer.as_str()).expect("a statement's customer is a customer id"),
        provisional: true,
        currency: statement.currency,
        tariff: Some(statement.tariff.to_string()),
        period: Some(period),
        lines,
        net_total: statement.net_total,
        vat_total: statement.vat_total,
        total: statement.total,
        amount: statement.total,
        energy_import_kwh: kwh(import_wh),
        energy_export_kwh: kwh(export_wh),
        intervals_settled: intervals.len() as u64,
        latest_interval_start: intervals.iter().map(|interval| interval.start_s).max(),
        completeness,
        as_of: rfc3339(position.as_of_ms),
        ledger_index: position.ledger_index,
    }
}

/// The bill of a customer settled without billing periods: its account, rounded once.
pub fn from_account(account: &CustomerAccount, position: Position) -> Bill {
    let total = Money { amount: account.amount, currency: account.currency }.round_to_minor_unit().amount;
    Bill {
        customer_id: account.customer_id.clone(),
        provisional: true,
        currency: account.currency,
        tariff: None,
        period: None,
        lines: Vec::new(),
        net_total: total,
        vat_total: Decimal::ZERO,
        total,
        amount: total,
        energy_import_kwh: kwh(account.energy_import_wh),
        energy_export_kwh: kwh(account.energy_export_wh),
        intervals_settled: account.intervals_settled,
        latest_interval_start: None,
        completeness: Completeness::default(),
        as_of: rfc3339(position.as_of_ms),
        ledger_index: position.ledger_index,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn an_account_bill_rounds_once_half_away_from_zero() {
        let account = CustomerAccount {
            customer_id: CustomerId::new("C1").expect("id"),
            currency: Currency::new("EUR").expect("EUR"),
            energy_import_wh: 250_000,
            energy_export_wh: 0,
            amount: Decimal::from_str("5.125").expect("decimal"),
            intervals_settled: 3,
            as_of_ms: 0,
            applied_index: 7,
        };
        let bill = from_account(&account, Position { ledger_index: 9, as_of_ms: 1_000 });
        assert_eq!(bill.amount, Decimal::from_str("5.13").expect("decimal"));
        assert_eq!(bill.energy_import_kwh, Decimal::from(250));
        assert_eq!((bill.ledger_index, bill.as_of.as_str()), (9, "1970-01-01T00:00:01Z"));
    }
}
