//! What pricing produces: lines naming a component, a quantity, a unit price, an amount and who
//! owes whom. Interval lines are full precision; statement lines are rounded once.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::ids::PartyId;

use super::decimal_text::dec;
use super::model::VatBase;

/// What a line charges for. Ordered, so lines group in a `BTreeMap` deterministically.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Component {
    /// Imported energy; `window` is `flat`, `dynamic`, or `SEASON.WINDOW` of a time-of-use tariff.
    Energy {
        window: String,
    },
    /// Tier adjustment of block `block` (0-based), posted at period close.
    Tier {
        block: u32,
    },
    Standing,
    Demand,
    Network,
    Levy {
        name: String,
    },
    /// Feed-in credit for exported energy (net billing), per interval.
    Export,
    /// Net-metering credit at period close.
    Netting,
    Vat,
    /// The one posting per statement that makes the postings sum to the rounded statement.
    Rounding,
    /// Moves the customer's accrued interval charges into the billed account at close.
    AccrualTransfer,
}

impl Component {
    /// Stable text key, part of posting ids: never change an existing key.
    pub fn key(&self) -> String {
        match self {
            Component::Energy { window } => format!("energy:{window}"),
            Component::Tier { block } => format!("tier:{block}"),
            Component::Standing => "standing".into(),
            Component::Demand => "demand".into(),
            Component::Network => "network".into(),
            Component::Levy { name } => format!("levy:{name}"),
            Component::Export => "export".into(),
            Component::Netting => "netting".into(),
            Component::Vat => "vat".into(),
            Component::Rounding => "rounding".into(),
            Component::AccrualTransfer => "accrual_transfer".into(),
        }
    }
    /// Which VAT base entry covers this component, if any can.
    pub fn vat_base(&self) -> Option<VatBase> {
        match self {
            Component::Energy { .. } => Some(VatBase::Energy),
            Component::Tier { .. } => Some(VatBase::Tiers),
            Component::Standing => Some(VatBase::Standing),
            Component::Demand => Some(VatBase::Demand),
            Component::Network => Some(VatBase::Network),
            Component::Levy { .. } => Some(VatBase::Levies),
            Component::Export | Component::Netting => Some(VatBase::Export),
            Component::Vat | Component::Rounding | Component::AccrualTransfer => None,
        }
    }
}

/// The unit of a line's quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Kwh,
    Kw,
    Day,
    /// A money base (VAT's quantity is the base amount, its unit price the rate).
    Money,
}

/// One priced line: `amount = quantity × unit_price`, owed by `debtor` to `creditor`. The amount
/// may be negative (a negative dynamic price): then the creditor owes the debtor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub component: Component,
    pub unit: Unit,
    #[serde(with = "dec")]
    pub quantity: Decimal,
    #[serde(with = "dec")]
    pub unit_price: Decimal,
    #[serde(with = "dec")]
    pub amount: Decimal,
    pub debtor: PartyId,
    pub creditor: PartyId,
}

impl Line {
    /// What this line charges `customer`: the amount if the customer is the debtor, its
    /// negation if the customer is the creditor, zero otherwise.
    pub fn customer_charge(&self, customer: &PartyId) -> Decimal {
        if &self.debtor == customer {
            self.amount
        } else if &self.creditor == customer {
            -self.amount
        } else {
            Decimal::ZERO
        }
    }
}

/// Why an interval's numbers are not plain actual readings: kept with the interval and shown on
/// the statement (§40a EnWG: the bill says how each value was obtained).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// The dynamic price series had no price; the tariff's fallback price was used.
    DynamicPriceFallback,
    /// Energy of a register span covering more than this interval was split pro rata.
    Split,
    /// The span was longer than the longest regular reading (60 min): an outage, split.
    Outage,
    /// A register decreased: a new register series starts; the span's energy is unknown.
    CounterReset,
    /// Only part of the interval is covered by register samples so far.
    Partial,
}

/// Errors of checked arithmetic: an overflow is a value, never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("settlement_overflow: {what} is beyond the range of money")]
pub struct Overflow {
    pub what: String,
}

pub(crate) fn overflow(what: impl Into<String>) -> Overflow {
    Overflow { what: what.into() }
}

/// Whole Wh as kWh, exactly (three decimal places).
pub fn kwh_of_wh(wh: u64) -> Decimal {
    // Any u64 fits a Decimal's 96-bit mantissa; scale 3 is within 28.
    Decimal::from_i128_with_scale(i128::from(wh), 3)
}

/// `a × b` or an overflow naming `what`.
pub(crate) fn mul(a: Decimal, b: Decimal, what: &str) -> Result<Decimal, Overflow> {
    a.checked_mul(b).ok_or_else(|| overflow(what))
}

/// `a + b` or an overflow naming `what`.
pub(crate) fn add(a: Decimal, b: Decimal, what: &str) -> Result<Decimal, Overflow> {
    a.checked_add(b).ok_or_else(|| overflow(what))
}
