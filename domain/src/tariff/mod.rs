//! Tariff versions and interval pricing (issue 13): the tariff model, its TOML format
//! (docs/tariffs.md), validation, local-time classification and per-interval pricing.
//!
//! Sans-IO and deterministic: no clock, no floats, no hash-map order; integer Wh and checked
//! `rust_decimal` arithmetic (an overflow is an error value). Local time comes from chrono-tz's
//! compiled tz database, named by [`TZDB_VERSION`].

pub mod calendar;
mod decimal_text;
pub mod line;
pub mod model;
pub mod price;
pub mod series;
pub mod validate;

pub use line::{kwh_of_wh, Component, Flag, Line, Overflow, Unit};
pub use model::{
    ClockTime, DayKind, DemandCharge, EnergyPrice, Export, Levy, MonthDay, NetworkCharge, Rounding, Season,
    TariffVersion, Tier, TimeZone, Vat, VatBase, Window, TZDB_VERSION,
};
pub use price::{price_interval, IntervalEnergy, PricedInterval, PricingError};
pub use series::{PricePoint, PriceSeries, SeriesError};
pub use validate::{parse_toml, TariffError};

#[cfg(test)]
pub(crate) mod tests;
