//! Dynamic price series: a dynamic tariff's price per kWh for each 15-minute interval, published
//! as its own admin transaction (`PublishPrices`), as a day-ahead market publishes its results.
//! Prices may be negative. An interval whose price is missing when its reading settles is priced
//! at the tariff's `fallback_per_kwh` and flagged `dynamic_price_fallback` (docs/tariffs.md).

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::ids::TariffId;
use crate::limits::{
    DYNAMIC_PRICE_PER_KWH_MIN, PRICE_PER_KWH_MAX, PRICE_SERIES_POINTS_MAX, SETTLEMENT_INTERVAL_SECONDS,
};

/// Prices of one dynamic tariff: UTC interval start (seconds, a multiple of 900) → price per kWh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSeries {
    pub tariff: TariffId,
    /// Decimal text per start; `BTreeMap` so the JSON is in start order.
    pub prices: BTreeMap<i64, PricePoint>,
}

/// One price, as decimal text (exact, never a float).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PricePoint(#[serde(with = "rust_decimal::serde::str")] pub Decimal);

/// Why a price series was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeriesError {
    #[error("bad_prices: {0}")]
    Document(String),
    #[error("prices_empty: a price series needs at least one price")]
    Empty,
    #[error("prices_too_many: {0} prices, limit {PRICE_SERIES_POINTS_MAX}")]
    TooMany(usize),
    #[error("price_not_aligned: {0} is not the start of a 15-minute interval")]
    NotAligned(i64),
    #[error(
        "price_out_of_range: {price} at {start} is outside {DYNAMIC_PRICE_PER_KWH_MIN}..={PRICE_PER_KWH_MAX} per kWh"
    )]
    OutOfRange { start: i64, price: Decimal },
}

impl PriceSeries {
    /// The bytes a `PublishPrices` transaction carries.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a price series serialises")
    }

    /// Decodes and validates [`Self::to_canonical_json`]; refuses any other encoding.
    pub fn from_canonical_json(bytes: &[u8]) -> Result<PriceSeries, SeriesError> {
        let series: PriceSeries =
            serde_json::from_slice(bytes).map_err(|error| SeriesError::Document(error.to_string()))?;
        series.validate()?;
        if series.to_canonical_json() != bytes {
            return Err(SeriesError::Document("not canonical JSON (order, spacing or decimal form differs)".into()));
        }
        Ok(series)
    }

    /// Every start aligned, every price in range, 1 to `PRICE_SERIES_POINTS_MAX` prices.
    pub fn validate(&self) -> Result<(), SeriesError> {
        if self.prices.is_empty() {
            return Err(SeriesError::Empty);
        }
        if self.prices.len() > PRICE_SERIES_POINTS_MAX {
            return Err(SeriesError::TooMany(self.prices.len()));
        }
        for (start, PricePoint(price)) in &self.prices {
            if start.rem_euclid(SETTLEMENT_INTERVAL_SECONDS) != 0 {
                return Err(SeriesError::NotAligned(*start));
            }
            if *price < Decimal::from(DYNAMIC_PRICE_PER_KWH_MIN) || *price > Decimal::from(PRICE_PER_KWH_MAX) {
                return Err(SeriesError::OutOfRange { start: *start, price: *price });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(points: &[(i64, &str)]) -> PriceSeries {
        PriceSeries {
            tariff: "dyn".parse().expect("id"),
            prices: points.iter().map(|(start, price)| (*start, PricePoint(price.parse().expect("decimal")))).collect(),
        }
    }

    #[test]
    fn a_series_round_trips_and_negative_prices_are_allowed() {
        let series = series(&[(0, "0.1234"), (900, "-0.0500")]);
        let json = series.to_canonical_json();
        assert_eq!(
            std::str::from_utf8(&json).expect("utf-8"),
            r#"{"tariff":"dyn","prices":{"0":"0.1234","900":"-0.0500"}}"#
        );
        assert_eq!(PriceSeries::from_canonical_json(&json), Ok(series));
    }

    #[test]
    fn misaligned_out_of_range_and_non_canonical_series_are_refused() {
        assert_eq!(series(&[(60, "0.1")]).validate(), Err(SeriesError::NotAligned(60)));
        assert!(matches!(series(&[(0, "1000.01")]).validate(), Err(SeriesError::OutOfRange { .. })));
        assert_eq!(series(&[]).validate(), Err(SeriesError::Empty));
        let spaced = br#"{"tariff": "dyn","prices":{"0":"0.1"}}"#;
        assert!(matches!(PriceSeries::from_canonical_json(spaced), Err(SeriesError::Document(_))));
    }
}
