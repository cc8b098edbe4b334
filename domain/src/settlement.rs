//! Settlement of one interval into money: deterministic, sans-IO, full precision.
//!
//! Rules version 1 (the walking skeleton): one flat price per kWh for imported energy; the
//! charge is a transfer from the customer's account to the supplier's accrual account, unrounded.
//! Rounding happens once, when a bill or invoice line is presented.

use rust_decimal::Decimal;

use crate::ids::EnergyWh;
use crate::money::{Money, UnitPrice};
use crate::verify::VerifiedReading;

/// The rules version this build settles by. Every ledger entry carries the version that settles
/// it, so replaying the ledger after an upgrade gives the same money.
pub const RULES_VERSION: u32 = 1;

/// Rules versions this build can execute.
pub fn supports_rules_version(version: u32) -> bool {
    version == RULES_VERSION
}

/// What one interval costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntervalCharge {
    pub energy_import: EnergyWh,
    pub energy_export: EnergyWh,
    /// Unrounded charge for the imported energy.
    pub amount: Money,
}

/// Settles one verified reading at a flat price.
pub fn settle_flat(reading: &VerifiedReading, price: &UnitPrice) -> IntervalCharge {
    let energy_import = reading.reading().import_energy();
    let energy_export = reading.reading().export_energy();
    let kwh = Decimal::from(energy_import.0) / Decimal::from(1000u32);
    IntervalCharge {
        energy_import,
        energy_export,
        amount: Money { amount: kwh * price.per_kwh, currency: price.currency },
    }
}
