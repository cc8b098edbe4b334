//! The sandbox's tariff (issue 13): tariff `sandbox` in Europe/Berlin, time-of-use with one
//! dynamic-price day, PV feed-in, network charge, electricity tax, a standing charge and VAT, in
//! three versions; and the smoke check's own reckoning of a customer's interval charges from
//! the ground truth, written out here without the settlement engine.
//!
//! | version from (local)  | energy                                                     |
//! |-----------------------|------------------------------------------------------------|
//! | 2026-01-01 00:00      | weekdays 07–21 h 0.3500, 21–07 h 0.2000; weekends 0.2500    |
//! | 2026-01-06 12:00      | dynamic: published price + 0.0300 (fallback 0.3000)         |
//! | 2026-01-07 12:00      | time-of-use as the first                                   |
//!
//! Every version: network 0.0900 (grid-op), electricity tax 0.0205 (customs-de) per kWh
//! imported, feed-in 0.0794 per kWh exported, standing charge 0.40 a day, VAT 19 % on all.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{Datelike, NaiveDateTime, TimeZone, Timelike};
use chrono_tz::Europe::Berlin;
use rust_decimal::Decimal;

/// Tariff id of every version.
pub const TARIFF_ID: &str = "sandbox";

const COMMON: &str = r#"
id = "sandbox"
currency = "EUR"
supplier = "supplier-a"
time_zone = "Europe/Berlin"
rounding = "half_away_from_zero"
standing_charge_per_day = "0.40"

[network]
per_kwh = "0.0900"
operator = "grid-op"

[[levies]]
name = "electricity_tax"
per_kwh = "0.0205"
recipient = "customs-de"

[export]
kind = "feed_in"
per_kwh = "0.0794"

[vat]
rate = "0.19"
base = ["energy", "standing", "network", "levies"]
authority = "tax-de"
"#;

const TIME_OF_USE: &str = r#"
[energy]
kind = "time_of_use"

[[energy.seasons]]
name = "year"
from = "01-01"
to = "12-31"

[[energy.seasons.windows]]
name = "peak"
days = ["weekday"]
from = "07:00"
to = "21:00"
per_kwh = "0.3500"

[[energy.seasons.windows]]
name = "offpeak"
days = ["weekday"]
from = "21:00"
to = "07:00"
per_kwh = "0.2000"

[[energy.seasons.windows]]
name = "weekend"
days = ["weekend", "holiday"]
from = "00:00"
to = "24:00"
per_kwh = "0.2500"
"#;

const DYNAMIC: &str = r#"
[energy]
kind = "dynamic"
markup_per_kwh = "0.0300"
fallback_per_kwh = "0.3000"
"#;

const DYNAMIC_FROM: &str = "2026-01-06T12:00:00";
const DYNAMIC_TO: &str = "2026-01-07T12:00:00";

/// Writes the three versions and the dynamic day's prices into `dir`; returns the tariff files
/// and the price file, relative to `dir`.
pub fn write(dir: &Path) -> anyhow::Result<(Vec<String>, String)> {
    let versions = [
        (
            "sandbox-1.toml",
            format!("valid_from = \"2026-01-01T00:00:00\"\nvalid_to = \"{DYNAMIC_FROM}\"\n{COMMON}{TIME_OF_USE}"),
        ),
        ("sandbox-2.toml", format!("valid_from = \"{DYNAMIC_FROM}\"\nvalid_to = \"{DYNAMIC_TO}\"\n{COMMON}{DYNAMIC}")),
        ("sandbox-3.toml", format!("valid_from = \"{DYNAMIC_TO}\"\n{COMMON}{TIME_OF_USE}")),
    ];
    let mut files = Vec::new();
    for (name, text) in versions {
        // Fails here, with the reason, rather than in the ledger.
        domain::tariff::parse_toml(&text).map_err(|error| anyhow::anyhow!("{name}: {error}"))?;
        std::fs::write(dir.join(name), text)?;
        files.push(name.to_string());
    }
    let series = domain::tariff::PriceSeries {
        tariff: TARIFF_ID.parse()?,
        prices: dynamic_prices().into_iter().map(|(start, price)| (start, domain::tariff::PricePoint(price))).collect(),
    };
    std::fs::write(dir.join("sandbox-prices.json"), series.to_canonical_json())?;
    Ok((files, "sandbox-prices.json".into()))
}

fn local(text: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S").expect("a fixed local time")
}

fn utc_of(local_time: NaiveDateTime) -> i64 {
    Berlin.from_local_datetime(&local_time).single().expect("no DST change on the dynamic day").timestamp()
}

/// The dynamic day's price per 15-minute interval (UTC start → price): a day-ahead-like curve,
/// negative from 12:00 to 14:00 local (midday solar surplus); the last interval is not
/// published, so it takes the fallback price.
pub fn dynamic_prices() -> BTreeMap<i64, Decimal> {
    let first = utc_of(local(DYNAMIC_FROM));
    (0..95i64)
        .map(|index| {
            let hour = (12 + index / 4) % 24;
            let price = if (12..14).contains(&hour) {
                Decimal::new(-200 - 10 * (index % 4), 4)
            } else {
                Decimal::new(800 + 25 * ((index * 7) % 20), 4)
            };
            (first + index * 900, price)
        })
        .collect()
}

/// The customer's charge for one interval's energy, full precision: energy by the version in
/// force at the local start, plus network and tax per kWh imported, less the feed-in credit.
pub fn interval_charge(start_utc: i64, import_wh: u64, export_wh: u64, prices: &BTreeMap<i64, Decimal>) -> Decimal {
    let at = Berlin.timestamp_opt(start_utc, 0).single().expect("an instant has one local time").naive_local();
    let energy = if at >= local(DYNAMIC_FROM) && at < local(DYNAMIC_TO) {
        prices.get(&start_utc).map_or(Decimal::new(3000, 4), |price| price + Decimal::new(300, 4))
    } else {
        let weekend = at.weekday().number_from_monday() >= 6;
        match (weekend, at.hour()) {
            (true, _) => Decimal::new(2500, 4),
            (false, 7..=20) => Decimal::new(3500, 4),
            (false, _) => Decimal::new(2000, 4),
        }
    };
    let per_kwh_imported = energy + Decimal::new(900, 4) + Decimal::new(205, 4);
    let kwh = |wh: u64| Decimal::from(wh) / Decimal::from(1_000u32);
    kwh(import_wh) * per_kwh_imported - kwh(export_wh) * Decimal::new(794, 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 11:30 local on Tuesday 6 January is peak: 1 kWh × (0.35 + 0.09 + 0.0205) = 0.4605; at
    /// 12:00 the dynamic day starts at −0.0200 + 0.03 = 0.01 → 0.1205; 2 kWh exported then
    /// credits 0.1588.
    #[test]
    fn the_check_prices_by_the_version_in_force() {
        let prices = dynamic_prices();
        let peak = utc_of(local("2026-01-06T11:30:00"));
        let dynamic = utc_of(local("2026-01-06T12:00:00"));
        assert_eq!(interval_charge(peak, 1_000, 0, &prices), Decimal::new(4605, 4));
        assert_eq!(interval_charge(dynamic, 1_000, 2_000, &prices), Decimal::new(1205, 4) - Decimal::new(1588, 4));
        let last = utc_of(local("2026-01-07T11:45:00"));
        assert_eq!(interval_charge(last, 1_000, 0, &prices), Decimal::new(4105, 4), "fallback 0.30");
    }

    #[test]
    fn the_versions_are_valid_tariffs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (files, prices) = write(dir.path()).expect("written");
        assert_eq!(files.len(), 3);
        let bytes = std::fs::read(dir.path().join(prices)).expect("prices");
        let series: domain::tariff::PriceSeries = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(domain::tariff::PriceSeries::from_canonical_json(&bytes).expect("canonical"), series);
    }
}
