//! `wattle bench settle`: the settlement engine (`domain::settle`, issue 13) on one core. Each
//! meter's billing month (October 2026 in Europe/Berlin: the 25-hour day, 2,980 quarter-hours)
//! is priced interval by interval and closed, by one of the documented example tariffs, and the
//! rate is set against the bare arithmetic every interval needs at least (kWh x price, checked,
//! into a running sum) in the same run.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context;
use domain::ids::{PartyId, UnixSeconds};
use domain::settle::{settle_period, BillingPeriod, Run};
use domain::tariff::{kwh_of_wh, parse_toml, IntervalEnergy};
use rust_decimal::Decimal;

/// The example tariffs the bench can run (docs/tariffs/).
const TARIFFS: [(&str, &str); 6] = [
    ("flat", include_str!("../docs/tariffs/flat.toml")),
    ("tou", include_str!("../docs/tariffs/tou.toml")),
    ("dynamic", include_str!("../docs/tariffs/dynamic.toml")),
    ("tiered", include_str!("../docs/tariffs/tiered.toml")),
    ("pv-export", include_str!("../docs/tariffs/pv-export.toml")),
    ("demand", include_str!("../docs/tariffs/demand.toml")),
];

/// Options of `wattle bench settle`.
#[derive(Debug, clap::Args)]
pub struct SettleBenchArgs {
    /// Meters, each settled for one billing month.
    #[arg(long, default_value_t = 200)]
    meters: u32,
    /// Which example tariff (docs/tariffs/NAME.toml): flat, tou, dynamic, tiered, pv-export, demand.
    #[arg(long, default_value = "tou")]
    tariff: String,
}

pub fn settle(args: SettleBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.meters > 0, "--meters must be positive");
    let text = TARIFFS.iter().find(|(name, _)| *name == args.tariff).map(|(_, text)| *text).with_context(|| {
        format!("no example tariff {:?}; one of flat, tou, dynamic, tiered, pv-export, demand", args.tariff)
    })?;
    let tariff = parse_toml(text)?;
    let zone = tariff.time_zone.tz();
    let start_date = chrono::NaiveDate::from_ymd_opt(2026, 10, 1).context("a date")?;
    let period = BillingPeriod::starting(zone, start_date).context("a billing period")?;
    let starts: Vec<UnixSeconds> = (period.start.0..period.end.0).step_by(900).map(UnixSeconds).collect();
    // Prices for every interval (dynamic tariffs; ignored by the others), some negative.
    let prices: BTreeMap<UnixSeconds, Decimal> =
        starts.iter().enumerate().map(|(i, start)| (*start, Decimal::new(((i * 37) % 400) as i64 - 60, 3))).collect();
    // A household-like load: 20..420 Wh a quarter-hour, PV export at midday for every fifth meter.
    let energy = |meter: u32, i: usize| IntervalEnergy {
        start: starts[i],
        import_wh: 20 + ((i as u64 * 7_919 + u64::from(meter) * 104_729) % 400),
        export_wh: if meter % 5 == 0 && (40..56).contains(&(i % 96)) { 150 } else { 0 },
    };
    let intervals_total = u64::from(args.meters) * starts.len() as u64;
    println!(
        "bench settle: {} meters x {} intervals (October 2026, {}) = {intervals_total} intervals, tariff {}, one core",
        args.meters,
        starts.len(),
        zone,
        args.tariff
    );
    let meters: Vec<(String, PartyId, Vec<IntervalEnergy>)> = (0..args.meters)
        .map(|meter| {
            let customer = PartyId::new(format!("cust-{meter}")).expect("a valid party id");
            (format!("M{meter:06}"), customer, (0..starts.len()).map(|i| energy(meter, i)).collect())
        })
        .collect();

    let started = Instant::now();
    let mut postings = 0usize;
    let mut total = Decimal::ZERO;
    for (meter, customer, intervals) in &meters {
        let settled = settle_period(&tariff, meter, customer, &period, intervals, &prices, Run(0))?;
        postings += settled.postings().count();
        total += settled.closed.statement.total;
    }
    let engine_s = started.elapsed().as_secs_f64();

    // The floor: one checked kWh x price and a checked sum per interval, nothing else.
    let price = Decimal::new(3127, 4);
    let started = Instant::now();
    let mut floor_sum = Decimal::ZERO;
    for (_, _, intervals) in &meters {
        for interval in intervals {
            let amount = kwh_of_wh(interval.import_wh).checked_mul(price).context("in range")?;
            floor_sum = floor_sum.checked_add(amount).context("in range")?;
        }
    }
    let floor_s = started.elapsed().as_secs_f64().max(1e-9);
    std::hint::black_box(floor_sum);

    let rate = intervals_total as f64 / engine_s;
    let floor_rate = intervals_total as f64 / floor_s;
    println!(
        "engine: {rate:.0} intervals/s ({engine_s:.2} s; {postings} postings; {} statements, total {total})",
        args.meters
    );
    println!("bare checked kWh x price: {floor_rate:.0} intervals/s; engine/bare = {:.3}", rate / floor_rate);
    Ok(())
}
