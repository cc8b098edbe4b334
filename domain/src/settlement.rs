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
///
/// - 1: one flat price per kWh of import ([`settle_flat`]); export never credited.
/// - 2: tariff versions and bindings (issue 13, `crate::settle`): a bound meter's intervals are
///   priced by the tariff its binding names, posted double-entry among the parties, and closed
///   per billing period on ticks. A meter with no binding at all still settles at the flat price
///   if one is set (the walking skeleton's configuration; governance, issue 14, retires it).
/// - 3: settles as 2; a readings transaction's claims document is `wattle.claims.v2` (issue 16):
///   each reading settled by bindings lists the intervals it settled and their priced lines, so
///   a customer can rebuild an invoice line from the receipts of its readings
///   (docs/receipts.md). Entries of versions 1 and 2 keep the v1 document.
pub const RULES_VERSION: u32 = 3;

/// Rules versions this build can execute: every version it ever settled by, so a replay of an
/// old ledger gives the same money.
pub fn supports_rules_version(version: u32) -> bool {
    (1..=RULES_VERSION).contains(&version)
}

/// What one interval costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntervalCharge {
    pub energy_import: EnergyWh,
    pub energy_export: EnergyWh,
    /// Unrounded charge for the imported energy.
    pub amount: Money,
}

/// Why a reading cannot be settled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettlementError {
    /// The charge is beyond `Decimal`'s range (a price committed before prices were validated).
    #[error("settlement_overflow: {energy_wh} Wh at {per_kwh} per kWh is beyond the range of money")]
    Overflow { energy_wh: u64, per_kwh: Decimal },
}

/// Settles one verified reading at a flat price, with checked arithmetic: committed input never
/// panics a replica.
pub fn settle_flat(reading: &VerifiedReading, price: &UnitPrice) -> Result<IntervalCharge, SettlementError> {
    let energy_import = reading.reading().import_energy();
    let energy_export = reading.reading().export_energy();
    let overflow = || SettlementError::Overflow { energy_wh: energy_import.0, per_kwh: price.per_kwh };
    // Wh to kWh exactly: the same digits, three decimal places.
    let kwh = Decimal::try_from_i128_with_scale(i128::from(energy_import.0), 3).map_err(|_| overflow())?;
    let amount = kwh.checked_mul(price.per_kwh).ok_or_else(overflow)?;
    Ok(IntervalCharge { energy_import, energy_export, amount: Money { amount, currency: price.currency } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{KeyId, MeterId, Sequence, UnixSeconds};
    use crate::money::Currency;
    use crate::reading::Reading;
    use ed25519_dalek::SigningKey;

    fn verified(import_wh: u64) -> VerifiedReading {
        let key = SigningKey::from_bytes(&[9; 32]);
        let reading = Reading::import_interval(
            MeterId::new("M1").expect("id"),
            KeyId(1),
            Sequence(1),
            UnixSeconds(900),
            0,
            import_wh,
        );
        crate::verify::verify(reading.sign(&key).expect("valid"), &key.verifying_key().to_bytes()).expect("verifies")
    }

    #[test]
    fn a_flat_price_settles_at_full_precision() {
        let price = UnitPrice { per_kwh: Decimal::new(3127, 4), currency: Currency::new("EUR").expect("EUR") };
        let charge = settle_flat(&verified(1_001), &price).expect("in range");
        assert_eq!(charge.amount.amount, Decimal::new(3_130_127, 7));
    }

    /// Finding 5 of issue 12: a price beyond range is an error, never a panic.
    #[test]
    fn an_overflowing_charge_is_an_error() {
        let price = UnitPrice { per_kwh: Decimal::MAX, currency: Currency::new("EUR").expect("EUR") };
        let error = settle_flat(&verified(500_000), &price).expect_err("overflows");
        assert!(error.to_string().starts_with("settlement_overflow"), "{error}");
    }
}
