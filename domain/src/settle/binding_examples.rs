//! Worked examples of bindings: a move-out in the middle of a period and a meter exchange inside
//! an interval, figures by hand in the comments.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::*;
use crate::ids::{MeterId, PartyId, TariffId, UnixSeconds};
use crate::tariff::tests::{d, example};
use crate::tariff::{IntervalEnergy, TariffVersion};

fn local(text: &str) -> chrono::NaiveDateTime {
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S").expect("local date-time")
}

fn binding(tariff: &TariffVersion, meter: &str, customer: &str, from: &str, to: Option<&str>) -> Binding {
    Binding {
        meter: MeterId::new(meter).expect("meter"),
        customer: PartyId::new(customer).expect("customer"),
        supply_point: "DE0001".into(),
        tariff: TariffId::new("de-flat-2026").expect("tariff"),
        billing_day: 1,
        time_zone: tariff.time_zone,
        from: local(from),
        to: to.map(local),
    }
}

fn date(day: u32, month: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, month, day).expect("date")
}

fn total(tariff: &TariffVersion, customer: &PartyId, period: &BillingPeriod, intervals: &[IntervalEnergy]) -> Decimal {
    let settled = settle_period(tariff, "M1", customer, period, intervals, &BTreeMap::new(), Run(0)).expect("settles");
    let books = check_books(settled.postings()).expect("books");
    assert_eq!(
        books.balance(&Account::new(customer, AccountKind::Billed), tariff.currency),
        settled.closed.statement.total
    );
    settled.closed.statement.total
}

/// Meter M1 (flat example), 100 Wh every quarter-hour of January 2026 in Berlin. Customer A
/// moves out at 2026-01-16 00:00 local, B moves in then.
/// A, 15 days, 1,440 quarter-hours = 144 kWh: energy 28.80, network 12.96,
///   tax 2.952 → 2.95, standing 15 × 0.40 = 6.00; VAT 19 % of 50.71 = 9.6349 → 9.63; total 60.34.
/// B, 16 days, 1,536 quarter-hours = 153.6 kWh: energy 30.72, network 13.824 → 13.82,
///   tax 3.1488 → 3.15, standing 6.40; VAT 19 % of 54.09 = 10.2771 → 10.28; total 64.37.
#[test]
fn a_move_out_in_the_middle_of_a_period() {
    let tariff = example("flat.toml");
    let zone = tariff.time_zone.tz();
    let mut bindings = Bindings::new();
    bindings.add(binding(&tariff, "M1", "cust-a", "2026-01-01T00:00:00", Some("2026-01-16T00:00:00"))).expect("binds");
    bindings.add(binding(&tariff, "M1", "cust-b", "2026-01-16T00:00:00", None)).expect("binds");
    assert_eq!(
        bindings.add(binding(&tariff, "M1", "cust-c", "2026-01-20T00:00:00", None)),
        Err(BindingError::Overlap(MeterId::new("M1").expect("meter")))
    );
    let month = BillingPeriod::starting(zone, date(1, 1)).expect("period");
    let meter = MeterId::new("M1").expect("meter");
    let mut by_customer: BTreeMap<PartyId, Vec<IntervalEnergy>> = BTreeMap::new();
    for index in 0..month.intervals_count() {
        let start = UnixSeconds(month.start.0 + index * 900);
        let bound = bindings.lookup(&meter, start).expect("bound");
        by_customer.entry(bound.customer.clone()).or_default().push(IntervalEnergy {
            start,
            import_wh: 100,
            export_wh: 0,
        });
    }
    let (a, b) = (PartyId::new("cust-a").expect("a"), PartyId::new("cust-b").expect("b"));
    assert_eq!((by_customer[&a].len(), by_customer[&b].len()), (1_440, 1_536));
    let final_period = BillingPeriod::between(zone, date(1, 1), date(16, 1)).expect("period");
    let first_period = BillingPeriod::between(zone, date(16, 1), date(1, 2)).expect("period");
    assert_eq!(total(&tariff, &a, &final_period, &by_customer[&a]), d("60.34"));
    assert_eq!(total(&tariff, &b, &first_period, &by_customer[&b]), d("64.37"));
    // Before the first binding, an interval waits with a reason; another meter has none.
    assert!(matches!(bindings.lookup(&meter, UnixSeconds(month.start.0 - 900)), Err(Unbound::OutsideBindings { .. })));
    let other = MeterId::new("M2").expect("meter");
    assert_eq!(bindings.lookup(&other, month.start), Err(Unbound::NoBinding(other)));
}

/// Meter exchange at 2026-01-10 10:07:30 local (09:07:30Z), inside the 09:00Z interval.
/// Old meter: 5,000 Wh at 09:00Z, final read 5,150 at 09:07:30Z → 150 Wh.
/// New meter: initial read 0 at 09:07:30Z, 130 at 09:15Z, 330 at 09:30Z → 130 and 200 Wh.
/// The supply point's 09:00Z interval is 150 + 130 = 280 Wh, the 09:15Z one 200 Wh: 0.48 kWh,
/// energy 0.096 → 0.10, network 0.0432 → 0.04, tax 0.00984 → 0.01, standing 31 × 0.40 = 12.40,
/// VAT 19 % of 12.55 = 2.3845 → 2.38; total 14.93.
#[test]
fn a_meter_exchange_inside_an_interval() {
    let tariff = example("flat.toml");
    let mut bindings = Bindings::new();
    bindings.add(binding(&tariff, "OLD", "cust-a", "2026-01-01T00:00:00", Some("2026-01-10T10:07:30"))).expect("binds");
    bindings.add(binding(&tariff, "NEW", "cust-a", "2026-01-10T10:07:30", None)).expect("binds");
    let at = |seconds: i64| UnixSeconds(1_768_035_600 + seconds); // 2026-01-10T09:00:00Z
    let sample = |seconds, import_wh| RegisterSample { at: at(seconds), import_wh, export_wh: 0 };
    let old = map_registers(&[sample(0, 5_000), sample(450, 5_150)]).expect("maps");
    let new = map_registers(&[sample(450, 0), sample(900, 130), sample(1_800, 330)]).expect("maps");
    for (meter, mapped) in [("OLD", &old), ("NEW", &new)] {
        for start in mapped.keys() {
            let bound = bindings.lookup(&MeterId::new(meter).expect("meter"), *start).expect("bound");
            assert_eq!(bound.customer.as_str(), "cust-a");
        }
    }
    let combined = combine(old.values().chain(new.values()).map(|interval| interval.energy)).expect("sums");
    let energy: Vec<(UnixSeconds, u64)> =
        combined.iter().map(|interval| (interval.start, interval.import_wh)).collect();
    assert_eq!(energy, vec![(at(0), 280), (at(900), 200)]);
    let period = BillingPeriod::starting(tariff.time_zone.tz(), date(1, 1)).expect("period");
    assert_eq!(total(&tariff, &PartyId::new("cust-a").expect("a"), &period, &combined), d("14.93"));
}
