//! Property tests of the engine against a deliberately simple second implementation written
//! here: no grouping structures, no shared helpers beyond chrono-tz for local time, one loop
//! over intervals and one `match` per component.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Weekday};
use proptest::prelude::*;
use rust_decimal::Decimal;

use super::*;
use crate::ids::{PartyId, UnixSeconds};
use crate::tariff::tests::{example, EXAMPLES};
use crate::tariff::{price_interval, Component, EnergyPrice, Export, IntervalEnergy, TariffVersion, VatBase};

fn customer() -> PartyId {
    PartyId::new("cust-1").expect("id")
}

fn kwh(wh: u64) -> Decimal {
    Decimal::from(wh) / Decimal::from(1000)
}

/// The reference: the customer's unrounded charge per component key (VAT excluded).
fn reference(
    tariff: &TariffVersion,
    period: &BillingPeriod,
    intervals: &[IntervalEnergy],
    prices: &BTreeMap<UnixSeconds, Decimal>,
) -> BTreeMap<String, Decimal> {
    let mut out: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut add = |key: String, amount: Decimal| *out.entry(key).or_default() += amount;
    let (mut total_import, mut total_export, mut peak) = (0u64, 0u64, 0u64);
    for interval in intervals {
        total_import += interval.import_wh;
        total_export += interval.export_wh;
        peak = peak.max(interval.import_wh);
        let local = DateTime::from_timestamp(interval.start.0, 0)
            .expect("instant")
            .with_timezone(&tariff.time_zone.tz())
            .naive_local();
        if interval.import_wh > 0 {
            let (name, price) = match &tariff.energy {
                EnergyPrice::Flat { per_kwh } => ("flat".to_string(), *per_kwh),
                EnergyPrice::Dynamic { markup_per_kwh, fallback_per_kwh } => match prices.get(&interval.start) {
                    Some(price) => ("dynamic".to_string(), price + markup_per_kwh),
                    None => ("dynamic".to_string(), *fallback_per_kwh),
                },
                EnergyPrice::TimeOfUse { holidays, seasons } => {
                    let today = local.month() * 100 + local.day();
                    let kind = if holidays.contains(&local.date()) {
                        crate::tariff::DayKind::Holiday
                    } else if local.weekday() == Weekday::Sat || local.weekday() == Weekday::Sun {
                        crate::tariff::DayKind::Weekend
                    } else {
                        crate::tariff::DayKind::Weekday
                    };
                    let minute = local.hour() * 60 + local.minute();
                    let mut found = None;
                    for season in seasons {
                        let (from, to) =
                            (season.from.month * 100 + season.from.day, season.to.month * 100 + season.to.day);
                        let in_season =
                            if from <= to { from <= today && today <= to } else { today >= from || today <= to };
                        for window in season.windows.iter().filter(|_| in_season) {
                            let (a, b) = (window.from.minute_of_day(), window.to.minute_of_day());
                            let in_window = if a < b { a <= minute && minute < b } else { minute >= a || minute < b };
                            if in_window && window.days.contains(&kind) {
                                found = Some((format!("{}.{}", season.name, window.name), window.per_kwh));
                            }
                        }
                    }
                    found.expect("a window")
                }
            };
            add(format!("energy:{name}"), kwh(interval.import_wh) * price);
            if let Some(network) = &tariff.network {
                add("network".into(), kwh(interval.import_wh) * network.per_kwh);
            }
            for levy in &tariff.levies {
                add(format!("levy:{}", levy.name), kwh(interval.import_wh) * levy.per_kwh);
            }
        }
        if let Some(Export::FeedIn { per_kwh }) = &tariff.export {
            if interval.export_wh > 0 {
                add("export".into(), -(kwh(interval.export_wh) * per_kwh));
            }
        }
    }
    if let EnergyPrice::Flat { per_kwh: flat } = tariff.energy {
        let mut below = 0u64;
        for (block, tier) in tariff.tiers.iter().enumerate() {
            let top = tier.up_to_kwh.map_or(u64::MAX, |kwh| kwh * 1000);
            let inside = if total_import > below { total_import.min(top) - below } else { 0 };
            below = top;
            if inside > 0 {
                add(format!("tier:{block}"), kwh(inside) * (tier.per_kwh - flat));
            }
        }
        if tariff.export == Some(Export::Netting) && total_import.min(total_export) > 0 {
            add("netting".into(), -(kwh(total_import.min(total_export)) * flat));
        }
    }
    if let Some(demand) = &tariff.demand {
        add("demand".into(), kwh(peak * 4) * demand.per_kw);
    }
    if let Some(per_day) = tariff.standing_charge_per_day {
        add("standing".into(), Decimal::from((period.end_date - period.start_date).num_days()) * per_day);
    }
    out
}

/// The VAT base entry of a component key, spelled out independently of `Component::vat_base`.
fn vat_base_of(key: &str) -> VatBase {
    match key.split(':').next().expect("a prefix") {
        "energy" => VatBase::Energy,
        "tier" => VatBase::Tiers,
        "standing" => VatBase::Standing,
        "demand" => VatBase::Demand,
        "network" => VatBase::Network,
        "levy" => VatBase::Levies,
        "export" | "netting" => VatBase::Export,
        other => panic!("unexpected component {other}"),
    }
}

/// October 2026: the autumn DST change (100 quarter-hours on the 25th) is inside the period.
fn october(tariff: &TariffVersion) -> BillingPeriod {
    BillingPeriod::starting(tariff.time_zone.tz(), NaiveDate::from_ymd_opt(2026, 10, 1).expect("date")).expect("period")
}

type Generated = (usize, Vec<(i64, u64, u64, Option<i64>)>);

fn inputs() -> impl Strategy<Value = Generated> {
    (
        0..EXAMPLES.len(),
        prop::collection::btree_map(
            0i64..2_980,
            (0u64..4_000, 0u64..4_000, prop::option::of(-50_000i64..100_000)),
            0..120,
        )
        .prop_map(|map| map.into_iter().map(|(slot, (i, e, p))| (slot, i, e, p)).collect::<Vec<_>>())
        .prop_shuffle(),
    )
}

fn build(generated: &Generated) -> (TariffVersion, BillingPeriod, Vec<IntervalEnergy>, BTreeMap<UnixSeconds, Decimal>) {
    let tariff = example(EXAMPLES[generated.0].0);
    let period = october(&tariff);
    let mut intervals = Vec::new();
    let mut prices = BTreeMap::new();
    for (slot, import_wh, export_wh, price) in &generated.1 {
        let start = UnixSeconds(period.start.0 + slot * 900);
        intervals.push(IntervalEnergy { start, import_wh: *import_wh, export_wh: *export_wh });
        if let Some(price) = price {
            prices.insert(start, Decimal::new(*price, 5));
        }
    }
    (tariff, period, intervals, prices)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// The customer's charge per component equals the simple implementation's; VAT is the rate
    /// on the rounded base lines; the total is the sum of rounded lines.
    #[test]
    fn the_engine_agrees_with_a_simple_second_implementation(generated in inputs()) {
        let (tariff, period, intervals, prices) = build(&generated);
        let settled = settle_period(&tariff, "M1", &customer(), &period, &intervals, &prices, Run(0)).expect("settles");
        let statement = &settled.closed.statement;
        let mut engine: BTreeMap<String, Decimal> = BTreeMap::new();
        for line in statement.lines.iter().filter(|line| line.component != Component::Vat) {
            *engine.entry(line.component.key()).or_default() += line.amount_unrounded;
        }
        let expected = reference(&tariff, &period, &intervals, &prices);
        prop_assert_eq!(&engine, &expected);
        let round = |amount: Decimal| tariff.rounding.round(amount, 2);
        let mut net = Decimal::ZERO;
        let mut base = Decimal::ZERO;
        for (key, amount) in &expected {
            net += round(*amount);
            let in_base = tariff.vat.as_ref().is_some_and(|vat| vat.base.contains(&vat_base_of(key)));
            if in_base { base += round(*amount); }
        }
        let vat = tariff.vat.as_ref().map_or(Decimal::ZERO, |vat| round(base * vat.rate));
        prop_assert_eq!(statement.vat_total, vat);
        prop_assert_eq!(statement.total, net + vat);
    }

    /// Per component, what the parties are credited equals what the customer is debited; the
    /// books balance; every balance is the sum of its postings; the customer's billed balance is
    /// the statement total.
    #[test]
    fn parties_are_credited_what_the_customer_is_debited(generated in inputs()) {
        let (tariff, period, intervals, prices) = build(&generated);
        let settled = settle_period(&tariff, "M1", &customer(), &period, &intervals, &prices, Run(0)).expect("settles");
        let books = check_books(settled.postings()).expect("books balance");
        let mut customer_side: BTreeMap<String, Decimal> = BTreeMap::new();
        let mut party_side: BTreeMap<String, Decimal> = BTreeMap::new();
        let mut sums: BTreeMap<Account, Decimal> = BTreeMap::new();
        for posting in settled.postings() {
            *sums.entry(posting.debit_account.clone()).or_default() += posting.amount;
            *sums.entry(posting.credit_account.clone()).or_default() -= posting.amount;
            if posting.component == Component::AccrualTransfer { continue; }
            for (account, sign) in [(&posting.debit_account, Decimal::ONE), (&posting.credit_account, -Decimal::ONE)] {
                let side = if account.party == customer() { &mut customer_side } else { &mut party_side };
                *side.entry(posting.component.key()).or_default() += sign * posting.amount;
            }
        }
        for (key, debit) in &customer_side {
            prop_assert_eq!(-party_side.get(key).copied().unwrap_or_default(), *debit, "{}", key);
        }
        for (account, sum) in &sums {
            prop_assert_eq!(books.balance(account, tariff.currency), *sum);
        }
        prop_assert_eq!(books.balance(&Account::new(&customer(), AccountKind::Billed), tariff.currency), settled.closed.statement.total);
    }

    /// Pricing intervals in any order and in any batches gives the same statement and books.
    #[test]
    fn results_do_not_depend_on_order_or_batches(generated in inputs(), batch in 1usize..17) {
        let (tariff, period, intervals, prices) = build(&generated);
        let whole = settle_period(&tariff, "M1", &customer(), &period, &intervals, &prices, Run(0)).expect("settles");
        let mut sorted = intervals.clone();
        sorted.sort();
        let mut priced = Vec::new();
        let mut postings = Vec::new();
        for chunk in sorted.rchunks(batch) {
            for energy in chunk {
                let interval = price_interval(&tariff, &customer(), *energy, prices.get(&energy.start).copied()).expect("priced");
                postings.extend(interval_postings("M1", &customer(), energy.start, Run(0), &interval.lines, tariff.currency));
                priced.push(interval);
            }
        }
        let closed = close_period(&tariff, &customer(), &period, &priced, Run(0)).expect("closes");
        postings.extend(closed.postings.iter().cloned());
        prop_assert_eq!(&closed.statement, &whole.closed.statement);
        let batched = check_books(&postings).expect("books");
        let unbatched = check_books(whole.postings()).expect("books");
        prop_assert_eq!(batched.balances().collect::<Vec<_>>(), unbatched.balances().collect::<Vec<_>>());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// After any sequence of corrections (each interval re-settled any number of times), every
    /// balance equals the sum of its postings and equals the balances of settling the final
    /// values directly.
    #[test]
    fn corrections_leave_the_books_as_if_the_final_values_were_settled(
        generated in inputs(),
        corrections in prop::collection::vec((0usize..1_000, 0u64..4_000, 0u64..4_000), 0..40),
    ) {
        let (tariff, period, intervals, prices) = build(&generated);
        prop_assume!(!intervals.is_empty());
        let first = settle_period(&tariff, "M1", &customer(), &period, &intervals, &prices, Run(0)).expect("settles");
        let mut current: BTreeMap<UnixSeconds, crate::tariff::PricedInterval> =
            first.priced.iter().map(|priced| (priced.energy.start, priced.clone())).collect();
        let mut postings = first.interval_postings.clone();
        for (run, (index, import_wh, export_wh)) in corrections.iter().enumerate() {
            let start = intervals[index % intervals.len()].start;
            let energy = IntervalEnergy { start, import_wh: *import_wh, export_wh: *export_wh };
            let new = price_interval(&tariff, &customer(), energy, prices.get(&start).copied()).expect("priced");
            let old = &current[&start];
            postings.extend(correction_postings("M1", &customer(), start, Run(run as u32 + 1), &old.lines, &new.lines, tariff.currency));
            current.insert(start, new);
        }
        let finals: Vec<IntervalEnergy> = current.values().map(|priced| priced.energy).collect();
        let priced: Vec<_> = current.into_values().collect();
        let closed = close_period(&tariff, &customer(), &period, &priced, Run(0)).expect("closes");
        postings.extend(closed.postings.iter().cloned());
        let direct = settle_period(&tariff, "M1", &customer(), &period, &finals, &prices, Run(0)).expect("settles");
        prop_assert_eq!(&closed.statement, &direct.closed.statement);
        let corrected = check_books(&postings).expect("books balance");
        let direct_books = check_books(direct.postings()).expect("books balance");
        prop_assert_eq!(corrected.balances().collect::<Vec<_>>(), direct_books.balances().collect::<Vec<_>>());
    }
}
