//! Tariff format and interval pricing tests. The examples in docs/tariffs/ are parsed here.

use std::collections::BTreeSet;
use std::str::FromStr;

use rust_decimal::Decimal;

use super::*;
use crate::ids::{PartyId, UnixSeconds};

pub(crate) const EXAMPLES: [(&str, &str); 6] = [
    ("flat.toml", include_str!("../../../docs/tariffs/flat.toml")),
    ("tou.toml", include_str!("../../../docs/tariffs/tou.toml")),
    ("dynamic.toml", include_str!("../../../docs/tariffs/dynamic.toml")),
    ("tiered.toml", include_str!("../../../docs/tariffs/tiered.toml")),
    ("pv-export.toml", include_str!("../../../docs/tariffs/pv-export.toml")),
    ("demand.toml", include_str!("../../../docs/tariffs/demand.toml")),
];

pub(crate) fn example(name: &str) -> TariffVersion {
    let (_, text) = EXAMPLES.iter().find(|(file, _)| *file == name).expect("known example");
    parse_toml(text).unwrap_or_else(|error| panic!("{name}: {error}"))
}

pub(crate) fn d(text: &str) -> Decimal {
    Decimal::from_str(text).expect("decimal")
}

fn customer() -> PartyId {
    PartyId::new("cust-1").expect("id")
}

#[test]
fn every_example_parses_and_round_trips_through_canonical_json() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/tariffs"))
        .expect("docs/tariffs")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".toml"))
        .collect();
    let tested: BTreeSet<String> = EXAMPLES.iter().map(|(name, _)| name.to_string()).collect();
    assert_eq!(on_disk, tested, "every example in docs/tariffs is tested");
    for (name, _) in EXAMPLES {
        let tariff = example(name);
        let json = tariff.to_canonical_json();
        assert_eq!(TariffVersion::from_canonical_json(&json).as_ref(), Ok(&tariff), "{name}");
    }
}

#[test]
fn canonical_json_is_normalised_and_refuses_other_spellings() {
    let tariff = example("flat.toml");
    let json = String::from_utf8(tariff.to_canonical_json()).expect("utf-8");
    assert!(json.contains(r#""per_kwh":"0.2""#), "{json}");
    let spaced = json.replacen(r#""per_kwh":"0.2""#, r#""per_kwh": "0.2000""#, 1);
    let error = TariffVersion::from_canonical_json(spaced.as_bytes()).expect_err("not canonical");
    assert_eq!(error.field, "document");
}

#[test]
fn the_pinned_tz_database_is_named() {
    assert_eq!(TZDB_VERSION.len(), 5, "{TZDB_VERSION}");
    assert!(TZDB_VERSION.starts_with("20"), "{TZDB_VERSION}");
}

/// Each refusal names the field and the reason.
#[test]
fn invalid_tariffs_are_refused_with_field_and_reason() {
    let flat = EXAMPLES[0].1;
    let tou = EXAMPLES[1].1;
    let cases: [(String, &str, &str); 9] = [
        (flat.replace(r#"per_kwh = "0.2000""#, r#"per_kwh = "-0.2""#), "energy.per_kwh", "below zero"),
        (flat.replace(r#"per_kwh = "0.0900""#, r#"per_kwh = "1000.5""#), "network.per_kwh", "above 1000"),
        (flat.replace(r#"per_kwh = "0.0205""#, r#"per_kwh = "0.000000001""#), "levies[0].per_kwh", "decimal places"),
        (flat.replace(r#"rate = "0.19""#, r#"rate = "1.19""#), "vat.rate", "fraction"),
        (
            flat.replace(r#"valid_to = "2027-01-01T00:00:00""#, r#"valid_to = "2025-01-01T00:00:00""#),
            "valid_to",
            "not after",
        ),
        (
            tou.replace(r#"to = "21:00""#, r#"to = "20:00""#),
            "energy.seasons[0].windows",
            "Weekday 20:00 is in 0 windows",
        ),
        (tou.replace(r#"to = "09-30""#, r#"to = "09-29""#), "energy.seasons", "09-30 is in 0 seasons"),
        (tou.replace(r#"[[levies]]"#, "[export]\nkind = \"netting\"\n[[levies]]"), "export.kind", "not flat"),
        (EXAMPLES[3].1.replace("up_to_kwh = 300", "up_to_kwh = 50"), "tiers[1].up_to_kwh", "does not ascend"),
    ];
    for (text, field, reason) in cases {
        let error = parse_toml(&text).expect_err(field);
        assert_eq!(error.field, field, "{error}");
        assert!(error.reason.contains(reason), "{field}: {error}");
    }
}

/// Format errors (serde's) still say where and why: an unquoted float price, an unknown field,
/// an unknown time zone, a window off the quarter-hour.
#[test]
fn malformed_documents_are_refused_with_a_reason() {
    let flat = EXAMPLES[0].1;
    for (text, reason) in [
        (flat.replace(r#"per_kwh = "0.2000""#, "per_kwh = 0.2"), "invalid type: floating point"),
        (flat.replace("rounding =", "colour = \"red\"\nrounding ="), "unknown field `colour`"),
        (flat.replace("Europe/Berlin", "Europe/Atlantis"), "not an IANA time zone"),
        (EXAMPLES[1].1.replace(r#"from = "07:00""#, r#"from = "07:10""#), "quarter-hour"),
    ] {
        let error = parse_toml(&text).expect_err(reason);
        assert!(error.reason.contains(reason), "{error}");
        assert!(error.field.starts_with("bytes "), "{error}");
    }
}

/// The October DST change in Europe/Berlin: 2026-10-25 (a Sunday) has 25 hours, 100
/// quarter-hours, from 2026-10-24T22:00Z to 2026-10-25T23:00Z; the repeated local hour 02:00
/// appears twice and all 100 are priced by the `winter.weekend` window.
#[test]
fn the_october_dst_day_has_one_hundred_quarter_hours_priced_in_local_time() {
    let tariff = example("tou.toml");
    let zone = tariff.time_zone.tz();
    let day_start = calendar::utc_of_local(
        zone,
        chrono::NaiveDate::from_ymd_opt(2026, 10, 25).expect("date").and_hms_opt(0, 0, 0).expect("time"),
    )
    .expect("utc");
    let next_day = calendar::utc_of_local(
        zone,
        chrono::NaiveDate::from_ymd_opt(2026, 10, 26).expect("date").and_hms_opt(0, 0, 0).expect("time"),
    )
    .expect("utc");
    assert_eq!(day_start, UnixSeconds(1_792_879_200)); // 2026-10-24T22:00:00Z
    assert_eq!((next_day.0 - day_start.0) / 900, 100);
    let mut two_am = 0;
    for index in 0..100 {
        let energy = IntervalEnergy { start: UnixSeconds(day_start.0 + index * 900), import_wh: 100, export_wh: 0 };
        let priced = price_interval(&tariff, &customer(), energy, None).expect("priced");
        assert_eq!(priced.lines[0].component, Component::Energy { window: "winter.weekend".into() });
        assert_eq!(priced.lines[0].amount, d("0.025"));
        if priced.local_start.format("%H:%M").to_string() == "02:00" {
            two_am += 1;
        }
    }
    assert_eq!(two_am, 2, "the repeated hour is priced twice");
    // Monday 2026-10-26 07:00 local is CET (UTC+1) again: 06:00Z is peak, 05:45Z off-peak.
    let peak = IntervalEnergy { start: UnixSeconds(next_day.0 + 7 * 3_600), import_wh: 1_000, export_wh: 0 };
    let priced = price_interval(&tariff, &customer(), peak, None).expect("priced");
    assert_eq!(priced.lines[0].component, Component::Energy { window: "winter.peak".into() });
    let before = IntervalEnergy { start: UnixSeconds(next_day.0 + 7 * 3_600 - 900), ..peak };
    let priced = price_interval(&tariff, &customer(), before, None).expect("priced");
    assert_eq!(priced.lines[0].component, Component::Energy { window: "winter.offpeak".into() });
}

/// The March change: 2026-03-29 has 92 quarter-hours.
#[test]
fn the_march_dst_day_has_ninety_two_quarter_hours() {
    let zone = example("tou.toml").time_zone.tz();
    let at = |day| {
        calendar::utc_of_local(
            zone,
            chrono::NaiveDate::from_ymd_opt(2026, 3, day).expect("date").and_hms_opt(0, 0, 0).expect("time"),
        )
        .expect("utc")
    };
    assert_eq!((at(30).0 - at(29).0) / 900, 92);
}

/// One interval of the flat example, every interval-local line: 1,234 Wh.
/// energy 1.234 × 0.20 = 0.2468; network 1.234 × 0.09 = 0.11106; tax 1.234 × 0.0205 = 0.025297.
#[test]
fn an_interval_gets_energy_network_and_levy_lines_at_full_precision() {
    let tariff = example("flat.toml");
    let energy = IntervalEnergy { start: UnixSeconds(1_767_225_600 + 900 * 40), import_wh: 1_234, export_wh: 0 };
    let priced = price_interval(&tariff, &customer(), energy, None).expect("priced");
    let amounts: Vec<(String, Decimal, String)> =
        priced.lines.iter().map(|line| (line.component.key(), line.amount, line.creditor.to_string())).collect();
    assert_eq!(
        amounts,
        vec![
            ("energy:flat".into(), d("0.2468"), "supplier-a".into()),
            ("network".into(), d("0.11106"), "grid-op".into()),
            ("levy:electricity_tax".into(), d("0.025297"), "customs-de".into()),
        ]
    );
    assert!(priced.lines.iter().all(|line| line.debtor == customer() && line.quantity == d("1.234")));
}

#[test]
fn intervals_outside_validity_or_unaligned_are_refused() {
    let tariff = example("flat.toml");
    // 2025-12-31T22:45Z is 23:45 local on 2025-12-31, before valid_from.
    let early = IntervalEnergy { start: UnixSeconds(1_767_221_100), import_wh: 1, export_wh: 0 };
    assert!(matches!(price_interval(&tariff, &customer(), early, None), Err(PricingError::OutsideValidity { .. })));
    let odd = IntervalEnergy { start: UnixSeconds(1_767_225_601), import_wh: 1, export_wh: 0 };
    assert_eq!(price_interval(&tariff, &customer(), odd, None), Err(PricingError::NotAligned(1_767_225_601)));
}

#[test]
fn a_missing_dynamic_price_falls_back_and_is_flagged_and_a_wild_one_is_refused() {
    let tariff = example("dynamic.toml");
    let energy = IntervalEnergy { start: UnixSeconds(1_767_225_600), import_wh: 1_000, export_wh: 0 };
    let priced = price_interval(&tariff, &customer(), energy, None).expect("priced");
    assert_eq!(priced.lines[0].unit_price, d("0.30"));
    assert_eq!(priced.flags, BTreeSet::from([Flag::DynamicPriceFallback]));
    let priced = price_interval(&tariff, &customer(), energy, Some(d("-0.12"))).expect("priced");
    assert_eq!(priced.lines[0].amount, d("-0.09"), "(-0.12 + 0.03) × 1 kWh");
    assert!(priced.flags.is_empty());
    assert_eq!(
        price_interval(&tariff, &customer(), energy, Some(d("-1000.01"))),
        Err(PricingError::DynamicPriceInvalid(d("-1000.01")))
    );
}

#[test]
fn rounding_strategies_are_named_and_differ_at_the_midpoint() {
    assert_eq!(Rounding::HalfAwayFromZero.round(d("5.125"), 2), d("5.13"));
    assert_eq!(Rounding::HalfEven.round(d("5.125"), 2), d("5.12"));
    assert_eq!(Rounding::HalfAwayFromZero.round(d("-5.125"), 2), d("-5.13"));
    assert_eq!(Rounding::default(), Rounding::HalfAwayFromZero);
}

/// A tariff built without validation (fields are public for the ledger's decoder and tests)
/// cannot panic pricing: the gap is an error value. A customer that is a tariff party is refused.
#[test]
fn an_unvalidated_tariff_or_a_customer_party_is_an_error_not_a_panic() {
    let mut tariff = example("tou.toml");
    if let EnergyPrice::TimeOfUse { seasons, .. } = &mut tariff.energy {
        seasons[0].windows.pop();
    }
    // 2026-01-03 is a Saturday: the removed window was the winter weekend one.
    let energy = IntervalEnergy { start: UnixSeconds(1_767_398_400), import_wh: 1, export_wh: 0 };
    assert_eq!(
        price_interval(&tariff, &customer(), energy, None),
        Err(PricingError::Unvalidated("no window covers the quarter-hour"))
    );
    assert!(tariff.validate().is_err());
    let supplier = PartyId::new("supplier-a").expect("id");
    assert_eq!(
        price_interval(&example("tou.toml"), &supplier, energy, None),
        Err(PricingError::CustomerIsParty(supplier))
    );
}
