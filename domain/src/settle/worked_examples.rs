//! Worked examples: whole periods settled and closed, with the figures worked out by hand in
//! the comments. Each also checks the books: balanced, customer billed = statement total,
//! customer accrual cleared.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::*;
use crate::ids::{PartyId, UnixSeconds};
use crate::tariff::tests::{d, example};
use crate::tariff::{Component, Flag, IntervalEnergy, Rounding, TariffVersion};

fn customer() -> PartyId {
    PartyId::new("cust-1").expect("id")
}

fn period(tariff: &TariffVersion, year: i32, month: u32) -> BillingPeriod {
    BillingPeriod::starting(tariff.time_zone.tz(), NaiveDate::from_ymd_opt(year, month, 1).expect("date"))
        .expect("period")
}

/// `count` consecutive intervals from `from` with the given energy.
fn run_of(from: UnixSeconds, count: i64, import_wh: u64, export_wh: u64) -> Vec<IntervalEnergy> {
    (0..count).map(|index| IntervalEnergy { start: UnixSeconds(from.0 + index * 900), import_wh, export_wh }).collect()
}

fn settle(
    tariff: &TariffVersion,
    period: &BillingPeriod,
    intervals: &[IntervalEnergy],
    prices: &BTreeMap<UnixSeconds, Decimal>,
) -> PeriodSettlement {
    let settled =
        settle_period(tariff, "WTL0000000001", &customer(), period, intervals, prices, Run(0)).expect("settles");
    let books = check_books(settled.postings()).expect("books balance");
    let statement = &settled.closed.statement;
    assert_eq!(books.balance(&Account::new(&customer(), AccountKind::Billed), tariff.currency), statement.total);
    assert_eq!(books.balance(&Account::new(&customer(), AccountKind::Accrued), tariff.currency), Decimal::ZERO);
    settled
}

/// Statement lines as (component key, quantity, rounded amount).
fn lines(settled: &PeriodSettlement) -> Vec<(String, Decimal, Decimal)> {
    settled.closed.statement.lines.iter().map(|line| (line.component.key(), line.quantity, line.amount)).collect()
}

/// ToU, October 2026 in Europe/Berlin, 100 Wh every quarter-hour (0.4 kW constant).
/// The period is 2026-10-01 00:00 CEST (09-30T22:00Z) to 11-01 00:00 CET (10-31T23:00Z):
/// 31 days + 1 hour = 2,980 quarter-hours, the 25th having 100.
/// Oct 2026 starts on a Thursday: 22 weekdays (1–2, 5–9, 12–16, 19–23, 26–30) and 9 weekend or
/// holiday days (3 = holiday and Saturday, 4, 10, 11, 17, 18, 24, 25, 31).
///   peak     07–21 on weekdays: 22 × 56 = 1,232 quarter-hours = 123.2 kWh × 0.35 = 43.12
///   off-peak 21–07 on weekdays: 22 × 40 =   880 quarter-hours =  88.0 kWh × 0.20 = 17.60
///   weekend: 8 × 96 + 100             =   868 quarter-hours =  86.8 kWh × 0.25 = 21.70
///   electricity tax: 298.0 kWh × 0.0205 = 6.109 → 6.11
/// Total 88.53; accrued 88.529, so the rounding posting is 0.001 from customer to supplier.
#[test]
fn a_time_of_use_month_across_the_october_dst_change() {
    let tariff = example("tou.toml");
    let period = period(&tariff, 2026, 10);
    assert_eq!((period.start, period.end), (UnixSeconds(1_790_805_600), UnixSeconds(1_793_487_600)));
    assert_eq!(period.intervals_count(), 2_980);
    let settled = settle(&tariff, &period, &run_of(period.start, 2_980, 100, 0), &BTreeMap::new());
    assert_eq!(
        lines(&settled),
        vec![
            ("energy:winter.offpeak".into(), d("88.0"), d("17.60")),
            ("energy:winter.peak".into(), d("123.2"), d("43.12")),
            ("energy:winter.weekend".into(), d("86.8"), d("21.70")),
            ("levy:electricity_tax".into(), d("298.0"), d("6.11")),
        ]
    );
    let statement = &settled.closed.statement;
    assert_eq!(
        (statement.total, statement.intervals_settled, statement.intervals_in_period),
        (d("88.53"), 2_980, 2_980)
    );
    let rounding =
        settled.closed.postings.iter().find(|posting| posting.component == Component::Rounding).expect("rounding");
    assert_eq!((rounding.amount, rounding.credit_account.kind), (d("0.001"), AccountKind::Rounding));
}

/// PV household, June 2026, net billing: 48 quarter-hours importing 250 Wh (12 kWh), then 41
/// exporting 500 Wh (20.5 kWh).
///   energy 12 × 0.30 = 3.60; export credit 20.5 × 0.0794 = 1.6277 → −1.63;
///   VAT 19 % on energy only: 3.60 × 0.19 = 0.684 → 0.68.  Total 3.60 − 1.63 + 0.68 = 2.65.
#[test]
fn a_pv_household_with_export() {
    let tariff = example("pv-export.toml");
    let period = period(&tariff, 2026, 6);
    let mut intervals = run_of(period.start, 48, 250, 0);
    intervals.extend(run_of(UnixSeconds(period.start.0 + 48 * 900), 41, 0, 500));
    let settled = settle(&tariff, &period, &intervals, &BTreeMap::new());
    assert_eq!(
        lines(&settled),
        vec![
            ("energy:flat".into(), d("12"), d("3.60")),
            ("export".into(), d("20.5"), d("-1.63")),
            ("vat".into(), d("3.60"), d("0.68")),
        ]
    );
    assert_eq!(settled.closed.statement.total, d("2.65"));
    // The export credit is posted from the supplier to the customer, never as a negative amount.
    let export =
        settled.interval_postings.iter().find(|posting| posting.component == Component::Export).expect("export");
    assert_eq!((export.debit_account.party.as_str(), export.credit_account.party.as_str()), ("supplier-a", "cust-1"));
}

/// A dynamic day, 2026-01-15 in Berlin (CET, local midnight = 01-14T23:00Z), 200 Wh every
/// quarter-hour (19.2 kWh), markup 0.03:
///   00–10 h: 40 × 0.2 = 8.0 kWh at 0.10 + 0.03 = 0.13            →  1.04
///   10–14 h: 16 × 0.2 = 3.2 kWh at −0.08 + 0.03 = −0.05 (negative) → −0.16
///   14–24 h: 39 × 0.2 = 7.8 kWh at 0.20 + 0.03 = 0.23             →  1.794
///            one price missing: 0.2 kWh at the fallback 0.30      →  0.06
///   energy (dynamic) 19.2 kWh: 2.734 → 2.73; network 19.2 × 0.09 = 1.728 → 1.73. Total 4.46.
#[test]
fn a_dynamic_price_day_with_negative_prices() {
    let tariff = example("dynamic.toml");
    let period = period(&tariff, 2026, 1);
    let day = UnixSeconds(1_768_431_600); // 2026-01-14T23:00:00Z
    let intervals = run_of(day, 96, 200, 0);
    let mut prices = BTreeMap::new();
    for (index, interval) in intervals.iter().enumerate() {
        let price = match index {
            0..=39 => d("0.10"),
            40..=55 => d("-0.08"),
            _ => d("0.20"),
        };
        prices.insert(interval.start, price);
    }
    prices.remove(&intervals[70].start);
    let settled = settle(&tariff, &period, &intervals, &prices);
    assert_eq!(
        lines(&settled),
        vec![("energy:dynamic".into(), d("19.2"), d("2.73")), ("network".into(), d("19.2"), d("1.73"))]
    );
    let statement = &settled.closed.statement;
    assert_eq!(statement.lines[0].unit_price, None, "the dynamic unit price varies");
    assert_eq!(statement.total, d("4.46"));
    assert_eq!(statement.flags, BTreeMap::from([(Flag::DynamicPriceFallback, 1)]));
    // Negative-price intervals post from the supplier to the customer.
    let negative =
        settled.interval_postings.iter().filter(|posting| posting.debit_account.party.as_str() == "supplier-b").count();
    assert_eq!(negative, 16);
}

/// A demand charge, February 2026 (28 days) in Europe/London, GBP, half-even by contract:
/// 100 quarter-hours at 1,000 Wh (4 kW) and one peak of 3,122 Wh (12.488 kW).
///   energy 103.122 kWh × 0.24 = 24.74928 → 24.75
///   demand 12.488 kW × 8.50 = 106.148 → 106.15 (to the DNO)
///   standing 28 days × 0.50 = 14.00
///   VAT 5 % of 144.90 = 7.245 → 7.24 half-even (half away from zero would give 7.25)
///   Total 24.75 + 106.15 + 14.00 + 7.24 = 152.14.
#[test]
fn a_demand_charge_on_the_highest_quarter_hour() {
    let tariff = example("demand.toml");
    assert_eq!(tariff.rounding, Rounding::HalfEven);
    let period = period(&tariff, 2026, 2);
    let mut intervals = run_of(period.start, 100, 1_000, 0);
    intervals.push(IntervalEnergy { start: UnixSeconds(period.start.0 + 500 * 900), import_wh: 3_122, export_wh: 0 });
    let settled = settle(&tariff, &period, &intervals, &BTreeMap::new());
    assert_eq!(
        lines(&settled),
        vec![
            ("energy:flat".into(), d("103.122"), d("24.75")),
            ("demand".into(), d("12.488"), d("106.15")),
            ("standing".into(), d("28"), d("14.00")),
            ("vat".into(), d("144.90"), d("7.24")),
        ]
    );
    let demand = &settled.closed.statement.lines[1];
    assert_eq!(demand.party.as_str(), "dno-uk");
    assert_eq!(settled.closed.statement.total, d("152.14"));
}

/// Tiers, January 2026: 350 quarter-hours of 1,000 Wh = 350 kWh, priced per interval at the
/// flat 0.30 (105.00), re-priced at close by blocks:
///   block 0: 100 kWh × (0.25 − 0.30) = −5.00
///   block 1: 200 kWh × (0.30 − 0.30) =  0.00
///   block 2:  50 kWh × (0.35 − 0.30) = +2.50
/// Total 102.50 = 100 × 0.25 + 200 × 0.30 + 50 × 0.35.
#[test]
fn tiers_re_price_the_period_by_blocks() {
    let tariff = example("tiered.toml");
    let period = period(&tariff, 2026, 1);
    let settled = settle(&tariff, &period, &run_of(period.start, 350, 1_000, 0), &BTreeMap::new());
    assert_eq!(
        lines(&settled),
        vec![
            ("energy:flat".into(), d("350"), d("105.00")),
            ("tier:0".into(), d("100"), d("-5.00")),
            ("tier:1".into(), d("200"), d("0.00")),
            ("tier:2".into(), d("50"), d("2.50")),
        ]
    );
    assert_eq!(settled.closed.statement.total, d("102.50"));
}

/// A counter reset, January 2026, flat example: registers 1,000 → 1,400 → 50 (reset) → 300.
/// Energy is 400 + 250 = 650 Wh, never 400 − 1,350.
///   energy 0.65 × 0.20 = 0.13; network 0.65 × 0.09 = 0.0585 → 0.06;
///   tax 0.65 × 0.0205 = 0.013325 → 0.01; standing 31 × 0.40 = 12.40;
///   VAT 19 % of (0.13 + 0.06 + 0.01 + 12.40 = 12.60) = 2.394 → 2.39.  Total 14.99.
#[test]
fn a_counter_reset_bills_only_real_energy() {
    let tariff = example("flat.toml");
    let period = period(&tariff, 2026, 1);
    let at = |quarter: i64| UnixSeconds(period.start.0 + quarter * 900);
    let samples = [
        RegisterSample { at: at(0), import_wh: 1_000, export_wh: 0 },
        RegisterSample { at: at(1), import_wh: 1_400, export_wh: 0 },
        RegisterSample { at: at(2), import_wh: 50, export_wh: 0 },
        RegisterSample { at: at(3), import_wh: 300, export_wh: 0 },
    ];
    let mapped = map_registers(&samples).expect("maps");
    assert!(mapped[&at(1)].flags.contains(&Flag::CounterReset));
    let intervals: Vec<IntervalEnergy> = mapped.values().map(|interval| interval.energy).collect();
    let settled = settle(&tariff, &period, &intervals, &BTreeMap::new());
    assert_eq!(
        lines(&settled),
        vec![
            ("energy:flat".into(), d("0.65"), d("0.13")),
            ("network".into(), d("0.65"), d("0.06")),
            ("levy:electricity_tax".into(), d("0.65"), d("0.01")),
            ("standing".into(), d("31"), d("12.40")),
            ("vat".into(), d("12.60"), d("2.39")),
        ]
    );
    assert_eq!(settled.closed.statement.total, d("14.99"));
}

/// DOMAIN.md: tax on 250 kWh at 2.05 ct = 512.5 ct → €5.13, rounded once on the statement line
/// although the 1,000 intervals of 250 Wh each accrue 0.005125 (per-interval rounding would give
/// 1,000 × 0.01 = €10.00). Half-even would give €5.12.
#[test]
fn the_domain_rounding_example_rounds_once_per_line() {
    let mut tariff = example("flat.toml");
    tariff.network = None;
    tariff.vat = None;
    tariff.standing_charge_per_day = None;
    let period = period(&tariff, 2026, 3);
    let intervals = run_of(period.start, 1_000, 250, 0);
    let settled = settle(&tariff, &period, &intervals, &BTreeMap::new());
    let tax = &settled.closed.statement.lines[1];
    assert_eq!(
        (tax.component.key(), tax.amount_unrounded, tax.amount),
        ("levy:electricity_tax".into(), d("5.125"), d("5.13"))
    );
    tariff.rounding = Rounding::HalfEven;
    let settled = settle(&tariff, &period, &intervals, &BTreeMap::new());
    assert_eq!(settled.closed.statement.lines[1].amount, d("5.12"));
}

/// A retried run posts nothing twice; a second run of the same interval is a new posting.
#[test]
fn a_retry_cannot_post_twice() {
    let tariff = example("flat.toml");
    let period = period(&tariff, 2026, 1);
    let intervals = run_of(period.start, 4, 500, 0);
    let settled = settle(&tariff, &period, &intervals, &BTreeMap::new());
    let mut books = check_books(settled.postings()).expect("books");
    let before = books.clone();
    for posting in settled.postings() {
        assert!(!books.apply(posting).expect("a repeat is accepted"), "nothing posted twice");
    }
    assert_eq!(books, before);
    let mut changed = settled.interval_postings[0].clone();
    changed.amount += d("0.01");
    assert_eq!(books.apply(&changed), Err(BooksError::Conflict(changed.id)));
    let rerun = settle_period(&tariff, "WTL0000000001", &customer(), &period, &intervals, &BTreeMap::new(), Run(1))
        .expect("settles");
    assert_ne!(rerun.interval_postings[0].id, settled.interval_postings[0].id);
}

#[test]
fn billing_periods_follow_the_billing_day_in_local_time() {
    let zone = example("flat.toml").time_zone.tz();
    // 2026-03-14T23:30Z is 00:30 on 03-15 in Berlin: with billing day 15 the period starts 03-15.
    let period = BillingPeriod::containing(zone, 15, UnixSeconds(1_773_531_000)).expect("period");
    assert_eq!(
        (period.start_date, period.end_date),
        (NaiveDate::from_ymd_opt(2026, 3, 15).expect("d"), NaiveDate::from_ymd_opt(2026, 4, 15).expect("d"))
    );
    // It spans the March change (29th): 31 days less one hour = 2,972 quarter-hours.
    assert_eq!((period.local_days(), period.intervals_count()), (31, 2_972));
    assert_eq!(BillingPeriod::containing(zone, 29, UnixSeconds(0)), Err(PeriodError::BillingDay(29)));
}

/// A late reading replacing an estimate after close (PV example: energy 0.30, VAT 19 % on
/// energy). January 2026: one interval, estimated by the week-earlier rule at 400 Wh:
///   energy 0.4 × 0.30 = 0.12; VAT 0.0228 → 0.02; January total 0.14 (closed).
/// In February the real value arrives, 600 Wh: correction postings under run 1 (reverse 0.12,
/// post 0.18). February has 10 intervals of 1,000 Wh:
///   energy 10 × 0.30 = 3.00; correction energy +0.2 kWh × 0.30 = +0.06;
///   VAT 19 % of 3.06 = 0.5814 → 0.58; February total 3.64.
/// After both closes the customer's billed balance is 0.14 + 3.64 = 3.78, accrued zero.
#[test]
fn a_late_reading_replaces_an_estimate_after_close() {
    let tariff = example("pv-export.toml");
    let (january, february) = (period(&tariff, 2026, 1), period(&tariff, 2026, 2));
    let start = UnixSeconds(january.start.0 + 20 * 96 * 900); // 2026-01-21 00:00 local
    let week_earlier = IntervalEnergy { start: UnixSeconds(start.0 - 7 * 86_400), import_wh: 400, export_wh: 0 };
    let estimate = estimate_interval(start, None, None, Some(week_earlier)).expect("estimates");
    assert_eq!((estimate.quality, estimate.rule), (Quality::Estimated, Some(EstimationRule::SameIntervalWeekEarlier)));
    let first = settle(&tariff, &january, &[estimate.energy], &BTreeMap::new());
    assert_eq!(first.closed.statement.total, d("0.14"));
    let actual = IntervalEnergy { start, import_wh: 600, export_wh: 0 };
    let replaced = crate::tariff::price_interval(&tariff, &customer(), actual, None).expect("priced");
    let mut postings: Vec<Posting> = first.postings().cloned().collect();
    postings.extend(correction_postings(
        "WTL0000000001",
        &customer(),
        start,
        Run(1),
        &first.priced[0].lines,
        &replaced.lines,
        tariff.currency,
    ));
    let intervals = run_of(february.start, 10, 1_000, 0);
    let priced: Vec<_> = intervals
        .iter()
        .map(|energy| crate::tariff::price_interval(&tariff, &customer(), *energy, None).expect("priced"))
        .collect();
    for interval in &priced {
        postings.extend(interval_postings(
            "WTL0000000001",
            &customer(),
            interval.energy.start,
            Run(0),
            &interval.lines,
            tariff.currency,
        ));
    }
    let correction = Correction { start, old: first.priced[0].lines.clone(), new: replaced.lines.clone() };
    let closed =
        close_period_with_corrections(&tariff, &customer(), &february, &priced, &[correction], Run(0)).expect("closes");
    let statement = &closed.statement;
    let shown: Vec<(String, bool, Decimal, Decimal)> = statement
        .lines
        .iter()
        .map(|line| (line.component.key(), line.correction, line.quantity, line.amount))
        .collect();
    assert_eq!(
        shown,
        vec![
            ("energy:flat".into(), false, d("10"), d("3.00")),
            ("energy:flat".into(), true, d("0.2"), d("0.06")),
            ("vat".into(), false, d("3.06"), d("0.58")),
        ]
    );
    assert_eq!(statement.total, d("3.64"));
    postings.extend(closed.postings.iter().cloned());
    let books = check_books(&postings).expect("books balance");
    assert_eq!(books.balance(&Account::new(&customer(), AccountKind::Billed), tariff.currency), d("3.78"));
    assert_eq!(books.balance(&Account::new(&customer(), AccountKind::Accrued), tariff.currency), Decimal::ZERO);
    // A correction inside the open period is settled there, not as a correction line.
    let inside = Correction { start: february.start, old: vec![], new: vec![] };
    assert_eq!(
        close_period_with_corrections(&tariff, &customer(), &february, &priced, &[inside], Run(0)),
        Err(CloseError::CorrectionNotBefore(february.start.0))
    );
}
