//! Interval pricing: one 15-minute interval's import and export energy, priced by a tariff
//! version into interval-local lines at full precision (energy, network charge, each levy,
//! export credit). What depends on the whole period (tiers, demand, standing charge, netting,
//! VAT) is left to period close.

use std::collections::BTreeSet;

use chrono::NaiveDateTime;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::ids::{PartyId, UnixSeconds};
use crate::limits::{DYNAMIC_PRICE_PER_KWH_MIN, PRICE_PER_KWH_MAX, SETTLEMENT_INTERVAL_SECONDS};

use super::calendar::{day_kind, local_time, month_day_minute, season_index, window_index};
use super::line::{add, kwh_of_wh, mul, Component, Flag, Line, Overflow, Unit};
use super::model::{EnergyPrice, Export, TariffVersion};

/// One settlement interval's energy: UTC start (a multiple of 15 minutes), whole Wh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IntervalEnergy {
    pub start: UnixSeconds,
    pub import_wh: u64,
    pub export_wh: u64,
}

/// A priced interval: its energy, local start, interval-local lines and flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedInterval {
    pub energy: IntervalEnergy,
    pub local_start: NaiveDateTime,
    pub lines: Vec<Line>,
    pub flags: BTreeSet<Flag>,
}

impl PricedInterval {
    /// The customer's net charge over all lines, full precision.
    pub fn customer_charge(&self, customer: &PartyId) -> Result<Decimal, Overflow> {
        self.lines
            .iter()
            .try_fold(Decimal::ZERO, |sum, line| add(sum, line.customer_charge(customer), "interval total"))
    }
}

/// Why an interval cannot be priced by this tariff version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error("interval_not_aligned: start {0} is not a multiple of 900 s")]
    NotAligned(i64),
    #[error("interval_out_of_range: start {0} has no local time")]
    OutOfRange(i64),
    #[error("tariff_not_valid: local start {local} is outside the tariff's validity")]
    OutsideValidity { local: NaiveDateTime },
    #[error("dynamic_price_invalid: {0} per kWh is outside the dynamic price limits")]
    DynamicPriceInvalid(Decimal),
    /// The tariff breaks an invariant `TariffVersion::validate` checks (it was built without
    /// validation): an error value, so unvalidated input cannot panic a replica.
    #[error("tariff_unvalidated: {0}")]
    Unvalidated(&'static str),
    #[error("customer_is_tariff_party: the customer {0} is also a party of the tariff")]
    CustomerIsParty(PartyId),
    #[error(transparent)]
    Overflow(#[from] Overflow),
}

/// Prices one interval for `customer`. `dynamic_price` is the price series' price per kWh for
/// this interval, used only by a dynamic tariff; when it is `None` the tariff's fallback price
/// applies and the interval is flagged [`Flag::DynamicPriceFallback`]. Zero-energy components
/// produce no line.
pub fn price_interval(
    tariff: &TariffVersion,
    customer: &PartyId,
    energy: IntervalEnergy,
    dynamic_price: Option<Decimal>,
) -> Result<PricedInterval, PricingError> {
    let start = energy.start.0;
    if start.rem_euclid(SETTLEMENT_INTERVAL_SECONDS) != 0 {
        return Err(PricingError::NotAligned(start));
    }
    if tariff.parties().contains(customer) {
        return Err(PricingError::CustomerIsParty(customer.clone()));
    }
    let zone = tariff.time_zone.tz();
    let local = local_time(zone, energy.start).ok_or(PricingError::OutOfRange(start))?;
    if local < tariff.valid_from || tariff.valid_to.is_some_and(|to| local >= to) {
        return Err(PricingError::OutsideValidity { local });
    }
    let mut flags = BTreeSet::new();
    let mut lines = Vec::new();
    let import_kwh = kwh_of_wh(energy.import_wh);
    let supplier = &tariff.supplier;
    let mut line =
        |component: Component, quantity: Decimal, unit_price: Decimal, debtor: &PartyId, creditor: &PartyId| {
            let amount = mul(quantity, unit_price, &component.key())?;
            lines.push(Line {
                component,
                unit: Unit::Kwh,
                quantity,
                unit_price,
                amount,
                debtor: debtor.clone(),
                creditor: creditor.clone(),
            });
            Ok::<(), Overflow>(())
        };
    if energy.import_wh > 0 {
        let (window, unit_price) = energy_price(tariff, local, dynamic_price, &mut flags)?;
        line(Component::Energy { window }, import_kwh, unit_price, customer, supplier)?;
        if let Some(network) = &tariff.network {
            line(Component::Network, import_kwh, network.per_kwh, customer, &network.operator)?;
        }
        for levy in &tariff.levies {
            line(Component::Levy { name: levy.name.clone() }, import_kwh, levy.per_kwh, customer, &levy.recipient)?;
        }
    } else if matches!(tariff.energy, EnergyPrice::Dynamic { .. }) && dynamic_price.is_none() {
        flags.insert(Flag::DynamicPriceFallback);
    }
    if let (Some(Export::FeedIn { per_kwh }), true) = (&tariff.export, energy.export_wh > 0) {
        line(Component::Export, kwh_of_wh(energy.export_wh), *per_kwh, supplier, customer)?;
    }
    Ok(PricedInterval { energy, local_start: local, lines, flags })
}

/// The energy window name and price per kWh at a local start.
fn energy_price(
    tariff: &TariffVersion,
    local: NaiveDateTime,
    dynamic_price: Option<Decimal>,
    flags: &mut BTreeSet<Flag>,
) -> Result<(String, Decimal), PricingError> {
    match &tariff.energy {
        EnergyPrice::Flat { per_kwh } => Ok(("flat".into(), *per_kwh)),
        EnergyPrice::Dynamic { markup_per_kwh, fallback_per_kwh } => match dynamic_price {
            Some(price) => {
                if price < Decimal::from(DYNAMIC_PRICE_PER_KWH_MIN) || price > Decimal::from(PRICE_PER_KWH_MAX) {
                    return Err(PricingError::DynamicPriceInvalid(price));
                }
                Ok(("dynamic".into(), add(price, *markup_per_kwh, "dynamic price")?))
            }
            None => {
                flags.insert(Flag::DynamicPriceFallback);
                Ok(("dynamic".into(), *fallback_per_kwh))
            }
        },
        EnergyPrice::TimeOfUse { holidays, seasons } => {
            let (month_day, minute) = month_day_minute(local);
            let kind = day_kind(local.date(), holidays);
            // Validation guarantees exactly one season per month-day and one window per
            // quarter-hour and day kind.
            let season = season_index(seasons, month_day)
                .map(|index| &seasons[index])
                .ok_or(PricingError::Unvalidated("no season covers the day"))?;
            let window = window_index(season, kind, minute)
                .map(|index| &season.windows[index])
                .ok_or(PricingError::Unvalidated("no window covers the quarter-hour"))?;
            Ok((format!("{}.{}", season.name, window.name), window.per_kwh))
        }
    }
}
