//! Prints one simulated day of a household with rooftop PV as a chart, hour by hour (local time):
//! consumption, PV generation, and what the meter imports and exports.
//!
//! `cargo run --profile ci -p firmware-sim --example day_profile -- [SEED] [YYYY-MM-DD]`

use chrono::{NaiveDate, TimeZone};
use firmware_sim::load::{LoadConfig, LoadModel};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let seed: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1);
    let date: NaiveDate =
        args.next().map(|s| s.parse()).transpose()?.unwrap_or(NaiveDate::from_ymd_opt(2026, 6, 21).expect("date"));
    let config = LoadConfig::default();
    let model = LoadModel::new(seed, config)?;
    let meter = (0..1_000).find(|meter| model.premises(*meter).pv_kwp.is_some()).expect("a PV meter among 1,000");
    let premises = model.premises(meter);
    let midnight =
        config.tz.from_local_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight")).single().expect("unambiguous");
    let first_quarter = midnight.timestamp().div_euclid(900);
    let hours: Vec<Vec<_>> =
        (0..24).map(|hour| (0..4).map(|q| model.quarter(meter, 0, first_quarter + hour * 4 + q)).collect()).collect();
    let sum = |flows: &[firmware_sim::load::QuarterFlows], f: fn(&firmware_sim::load::QuarterFlows) -> f64| {
        flows.iter().map(f).sum::<f64>()
    };
    // One scale for both bars: the day's largest hour fills 40 characters (in steps of 25 Wh).
    let largest = hours.iter().map(|h| sum(h, |f| f.load_wh).max(sum(h, |f| f.pv_wh))).fold(0.0, f64::max);
    let per_char = ((largest / 40.0 / 25.0).ceil() * 25.0).max(25.0);
    println!(
        "meter {meter} (seed {seed}): {:.0} kWh/a, {:.1} kWp PV; {date}, {} local time; one character = {per_char} Wh in the hour",
        premises.annual_kwh,
        premises.pv_kwp.unwrap_or(0.0),
        config.tz
    );
    println!("hour  {:<40}  {:<40}  import    export", "load (#)", "PV (*)");
    let (mut day_import, mut day_export) = (0u64, 0u64);
    for (hour, flows) in hours.iter().enumerate() {
        let import: u64 = flows.iter().map(|f| f.import_wh).sum();
        let export: u64 = flows.iter().map(|f| f.export_wh).sum();
        day_import += import;
        day_export += export;
        let bar = |wh: f64, c: &str| c.repeat((wh / per_char).round() as usize);
        let (load, pv) = (bar(sum(flows, |f| f.load_wh), "#"), bar(sum(flows, |f| f.pv_wh), "*"));
        println!("{hour:02}    {load:<40}  {pv:<40}  {import:>5} Wh  {export:>5} Wh");
    }
    println!("day: {day_import} Wh imported, {day_export} Wh exported");
    Ok(())
}
