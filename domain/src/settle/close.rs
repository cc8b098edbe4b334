//! Period close: the period's priced intervals in, a `Statement` and the close postings out.
//!
//! Rules (docs/tariffs.md, "Period close"):
//! 1. Interval lines are grouped into statement lines by (component, unit, counter-party, unit
//!    price); dynamic energy is one line whose unit price varies (shown as none).
//! 2. Period lines are computed at full precision: tier adjustments (per block, kWh in block ×
//!    (block price − flat price)), netting credit, demand charge (highest 15-minute import ×
//!    4 / 1000 kW × price), standing charge (local days × price).
//! 3. Every line is rounded once to the currency's minor unit by the tariff's strategy.
//! 4. VAT = rate × (sum of the rounded lines in its base), rounded once.
//! 5. Postings: the customer's accrued balance moves to its billed account; each period line
//!    and VAT is posted rounded; one rounding posting (customer ↔ supplier's rounding account)
//!    carries Σ rounded interval lines − Σ accrued, so the billed balance equals the total.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::ids::{PartyId, TariffId, UnixSeconds};
use crate::money::Currency;
use crate::tariff::line::{add, kwh_of_wh, mul, overflow};
use crate::tariff::{Component, EnergyPrice, Export, Flag, Overflow, PricedInterval, TariffVersion, Unit};

use super::period::BillingPeriod;
use super::posting::{posting, Account, AccountKind, Posting, PostingId, Run};

/// One statement line. `amount` is what the customer is charged (negative for a credit),
/// rounded once; `amount_unrounded` is the full-precision sum behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementLine {
    pub component: Component,
    pub unit: Unit,
    #[serde(with = "rust_decimal::serde::str")]
    pub quantity: Decimal,
    /// `None` when the unit price varies over the period (dynamic energy).
    #[serde(with = "rust_decimal::serde::str_option")]
    pub unit_price: Option<Decimal>,
    #[serde(with = "rust_decimal::serde::str")]
    pub amount_unrounded: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// The other party of the line (the supplier, grid operator, levy recipient, tax authority).
    pub party: PartyId,
    /// A correction of an interval of an earlier, closed period (new − old value).
    #[serde(default)]
    pub correction: bool,
}

/// A late value for an interval of an earlier, closed period: its settled (`old`) and new
/// lines. Its postings are [`super::correction_postings`]; the next close states the
/// difference as correction lines. Period lines of the closed period (tiers, demand, standing)
/// are not recomputed: a correction after close adjusts interval-local lines only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correction {
    pub start: UnixSeconds,
    pub old: Vec<crate::tariff::Line>,
    pub new: Vec<crate::tariff::Line>,
}

/// A closed period's statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub customer: PartyId,
    pub tariff: TariffId,
    pub currency: Currency,
    pub period: BillingPeriod,
    pub run: Run,
    pub lines: Vec<StatementLine>,
    #[serde(with = "rust_decimal::serde::str")]
    pub net_total: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub vat_total: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub total: Decimal,
    /// Intervals settled, and of all the period's intervals (completeness).
    pub intervals_settled: u32,
    pub intervals_in_period: u32,
    /// How many intervals carry each flag.
    pub flags: BTreeMap<Flag, u32>,
}

/// A close: the statement and the postings that make the books agree with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    pub statement: Statement,
    pub postings: Vec<Posting>,
}

/// Why a period cannot be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseError {
    #[error("interval_outside_period: interval {0} is not in the period")]
    OutsidePeriod(i64),
    #[error("interval_duplicate: interval {0} appears twice")]
    Duplicate(i64),
    #[error("correction_not_before_period: interval {0} is not before the period; settle it in the period")]
    CorrectionNotBefore(i64),
    #[error("customer_is_tariff_party: the customer {0} is also a party of the tariff")]
    CustomerIsParty(PartyId),
    #[error(transparent)]
    Overflow(#[from] Overflow),
}

#[derive(Default)]
struct Group {
    quantity: Decimal,
    accrued: Decimal,
}

/// Closes `period` for `customer` over its priced intervals (any order, each interval once).
pub fn close_period(
    tariff: &TariffVersion,
    customer: &PartyId,
    period: &BillingPeriod,
    intervals: &[PricedInterval],
    run: Run,
) -> Result<Closed, CloseError> {
    close_period_with_corrections(tariff, customer, period, intervals, &[], run)
}

/// [`close_period`], also stating corrections of earlier periods' intervals as correction lines
/// (grouped like interval lines, quantity and amount new − old).
pub fn close_period_with_corrections(
    tariff: &TariffVersion,
    customer: &PartyId,
    period: &BillingPeriod,
    intervals: &[PricedInterval],
    corrections: &[Correction],
    run: Run,
) -> Result<Closed, CloseError> {
    check_parties(tariff, customer)?;
    let mut by_start: BTreeMap<UnixSeconds, &PricedInterval> = BTreeMap::new();
    for interval in intervals {
        let start = interval.energy.start;
        if !period.contains(start) {
            return Err(CloseError::OutsidePeriod(start.0));
        }
        if by_start.insert(start, interval).is_some() {
            return Err(CloseError::Duplicate(start.0));
        }
    }
    // 1. Interval lines grouped; totals for the period lines.
    let mut groups: BTreeMap<GroupKey, Group> = BTreeMap::new();
    let (mut import_wh, mut export_wh, mut peak_wh) = (0u64, 0u64, 0u64);
    let mut flags: BTreeMap<Flag, u32> = BTreeMap::new();
    for interval in by_start.values() {
        import_wh = import_wh.checked_add(interval.energy.import_wh).ok_or_else(|| overflow("period import"))?;
        export_wh = export_wh.checked_add(interval.energy.export_wh).ok_or_else(|| overflow("period export"))?;
        peak_wh = peak_wh.max(interval.energy.import_wh);
        for flag in &interval.flags {
            *flags.entry(*flag).or_default() += 1;
        }
        for line in &interval.lines {
            group_line(&mut groups, customer, line, false, Decimal::ONE)?;
        }
    }
    for correction in corrections {
        if correction.start >= period.start {
            return Err(CloseError::CorrectionNotBefore(correction.start.0));
        }
        for line in &correction.old {
            group_line(&mut groups, customer, line, true, Decimal::NEGATIVE_ONE)?;
        }
        for line in &correction.new {
            group_line(&mut groups, customer, line, true, Decimal::ONE)?;
        }
    }
    let digits = tariff.currency.minor_unit_digits();
    let round = |amount: Decimal| tariff.rounding.round(amount, digits);
    let mut lines = Vec::new();
    let mut accrued_total = Decimal::ZERO;
    let mut rounded_interval_total = Decimal::ZERO;
    for ((correction, component, unit, party, unit_price), group) in groups {
        accrued_total = add(accrued_total, group.accrued, "accrued total")?;
        let amount = round(group.accrued);
        rounded_interval_total = add(rounded_interval_total, amount, "rounded total")?;
        lines.push(StatementLine {
            component,
            unit,
            quantity: group.quantity,
            unit_price,
            amount_unrounded: group.accrued,
            amount,
            party,
            correction,
        });
    }
    // 2–3. Period lines.
    let period_lines = period_lines(tariff, period, import_wh, export_wh, peak_wh)?;
    let first_period_line = lines.len();
    for (component, unit, quantity, unit_price, amount, party) in period_lines {
        lines.push(StatementLine {
            component,
            unit,
            quantity,
            unit_price: Some(unit_price),
            amount_unrounded: amount,
            amount: round(amount),
            party,
            correction: false,
        });
    }
    // 4. VAT on its base.
    let mut net_total = Decimal::ZERO;
    let mut vat_base = Decimal::ZERO;
    for line in &lines {
        net_total = add(net_total, line.amount, "net total")?;
        let in_base = line
            .component
            .vat_base()
            .is_some_and(|base| tariff.vat.as_ref().is_some_and(|vat| vat.base.contains(&base)));
        if in_base {
            vat_base = add(vat_base, line.amount, "VAT base")?;
        }
    }
    let mut vat_total = Decimal::ZERO;
    if let Some(vat) = &tariff.vat {
        let amount = mul(vat_base, vat.rate, "VAT")?;
        vat_total = round(amount);
        lines.push(StatementLine {
            component: Component::Vat,
            unit: Unit::Money,
            quantity: vat_base,
            unit_price: Some(vat.rate),
            amount_unrounded: amount,
            amount: vat_total,
            party: vat.authority.clone(),
            correction: false,
        });
    }
    let total = add(net_total, vat_total, "total")?;
    // 5. Postings.
    let currency = tariff.currency;
    let billed = Account::new(customer, AccountKind::Billed);
    let id = |component: &Component, party: &PartyId| {
        PostingId::derive("close", customer.as_str(), period.start, run, component, [customer, party])
    };
    let mut postings = vec![posting(
        id(&Component::AccrualTransfer, customer),
        billed.clone(),
        Account::new(customer, AccountKind::Accrued),
        accrued_total,
        currency,
        Component::AccrualTransfer,
    )];
    for line in &lines[first_period_line..] {
        postings.push(posting(
            id(&line.component, &line.party),
            billed.clone(),
            Account::new(&line.party, AccountKind::Revenue),
            line.amount,
            currency,
            line.component.clone(),
        ));
    }
    let rounding = rounded_interval_total.checked_sub(accrued_total).ok_or_else(|| overflow("rounding"))?;
    postings.push(posting(
        id(&Component::Rounding, &tariff.supplier),
        billed,
        Account::new(&tariff.supplier, AccountKind::Rounding),
        rounding,
        currency,
        Component::Rounding,
    ));
    let statement = Statement {
        customer: customer.clone(),
        tariff: tariff.id.clone(),
        currency,
        period: *period,
        run,
        lines,
        net_total,
        vat_total,
        total,
        intervals_settled: by_start.len() as u32,
        intervals_in_period: period.intervals_count() as u32,
        flags,
    };
    Ok(Closed { statement, postings })
}

/// (correction, component, unit, counter-party, unit price or `None` for dynamic energy).
type GroupKey = (bool, Component, Unit, PartyId, Option<Decimal>);

/// Adds `sign` × a line to its statement group.
fn group_line(
    groups: &mut BTreeMap<GroupKey, Group>,
    customer: &PartyId,
    line: &crate::tariff::Line,
    correction: bool,
    sign: Decimal,
) -> Result<(), Overflow> {
    let party = if &line.debtor == customer { line.creditor.clone() } else { line.debtor.clone() };
    let price = match line.component {
        Component::Energy { ref window } if window == "dynamic" => None,
        _ => Some(line.unit_price.normalize()),
    };
    let group = groups.entry((correction, line.component.clone(), line.unit, party, price)).or_default();
    group.quantity = add(group.quantity, mul(sign, line.quantity, "line quantity")?, "line quantity")?;
    group.accrued = add(group.accrued, mul(sign, line.customer_charge(customer), "line amount")?, "line amount")?;
    Ok(())
}

type PeriodLine = (Component, Unit, Decimal, Decimal, Decimal, PartyId);

/// Tier adjustments, netting, demand and standing charge, full precision, as customer charges.
fn period_lines(
    tariff: &TariffVersion,
    period: &BillingPeriod,
    import_wh: u64,
    export_wh: u64,
    peak_wh: u64,
) -> Result<Vec<PeriodLine>, Overflow> {
    let mut lines = Vec::new();
    let flat = match tariff.energy {
        EnergyPrice::Flat { per_kwh } => Some(per_kwh),
        _ => None,
    };
    if let (Some(flat), false) = (flat, tariff.tiers.is_empty()) {
        let mut lower_wh = 0u64;
        for (block, tier) in tariff.tiers.iter().enumerate() {
            let upper_wh = match tier.up_to_kwh {
                Some(kwh) => kwh.checked_mul(1000).ok_or_else(|| overflow("tier bound"))?,
                None => u64::MAX,
            };
            let in_block_wh = import_wh.min(upper_wh).saturating_sub(lower_wh);
            lower_wh = upper_wh;
            if in_block_wh == 0 {
                continue;
            }
            let quantity = kwh_of_wh(in_block_wh);
            let delta = tier.per_kwh.checked_sub(flat).ok_or_else(|| overflow("tier price"))?;
            let amount = mul(quantity, delta, "tier")?;
            lines.push((
                Component::Tier { block: block as u32 },
                Unit::Kwh,
                quantity,
                delta,
                amount,
                tariff.supplier.clone(),
            ));
        }
    }
    if let (Some(flat), Some(Export::Netting)) = (flat, &tariff.export) {
        let netted_wh = import_wh.min(export_wh);
        if netted_wh > 0 {
            let quantity = kwh_of_wh(netted_wh);
            let amount = -mul(quantity, flat, "netting")?;
            lines.push((Component::Netting, Unit::Kwh, quantity, -flat, amount, tariff.supplier.clone()));
        }
    }
    if let Some(demand) = &tariff.demand {
        // Highest 15-minute average power: Wh per quarter-hour × 4 = W; / 1000 = kW.
        let peak_kw = kwh_of_wh(peak_wh.checked_mul(4).ok_or_else(|| overflow("peak"))?);
        let amount = mul(peak_kw, demand.per_kw, "demand")?;
        let party = demand.recipient.clone().unwrap_or_else(|| tariff.supplier.clone());
        lines.push((Component::Demand, Unit::Kw, peak_kw, demand.per_kw, amount, party));
    }
    if let Some(per_day) = tariff.standing_charge_per_day {
        let days = Decimal::from(period.local_days());
        let amount = mul(days, per_day, "standing charge")?;
        lines.push((Component::Standing, Unit::Day, days, per_day, amount, tariff.supplier.clone()));
    }
    Ok(lines)
}

/// The customer must not be one of the tariff's parties: its accounts would post to themselves.
fn check_parties(tariff: &TariffVersion, customer: &PartyId) -> Result<(), CloseError> {
    if tariff.parties().contains(customer) {
        return Err(CloseError::CustomerIsParty(customer.clone()));
    }
    Ok(())
}
