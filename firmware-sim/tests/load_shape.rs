//! The shape of what simulated meters measure over 2025, through the fleet and the load model's
//! public API: households follow the dynamised BDEW H25 profile, PV yields what German roofs
//! yield and peaks at solar noon, and registers add up. Run with `--nocapture` for the figures
//! that docs/simulator.md quotes.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use domain::ids::UnixSeconds;
use firmware_sim::fleet::Registers;
use firmware_sim::load::{self, LoadConfig, Profile, QUARTER_HOUR_S};
use firmware_sim::pv::{self, Sky};
use firmware_sim::{Fault, FaultKind, FaultPlan, Fleet, REGISTER_MODULUS_WH};

/// 2025-01-01 00:00 in Berlin; the local year 2025 is exactly 35,040 quarter-hours long.
const YEAR_START: UnixSeconds = UnixSeconds(1_735_686_000);
const YEAR_QUARTERS: u64 = 35_040;
const SEED: u64 = 2025;

fn year_fleet(meters: u32, config: LoadConfig) -> Fleet {
    Fleet::new(SEED, meters, 1, QUARTER_HOUR_S, YEAR_START, FaultPlan::default()).with_model(config).expect("valid")
}

fn pearson(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let (mean_x, mean_y) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let covariance: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mean_x) * (y - mean_y)).sum();
    let spread_x: f64 = xs.iter().map(|x| (x - mean_x).powi(2)).sum();
    let spread_y: f64 = ys.iter().map(|y| (y - mean_y).powi(2)).sum();
    covariance / (spread_x * spread_y).sqrt()
}

#[test]
fn households_follow_the_dynamised_h25_profile() {
    let config = LoadConfig { pv_share: 0.0, ..LoadConfig::default() };
    let fleet = year_fleet(3, config);
    let is_winter = |date: NaiveDate| matches!(date.month(), 12 | 1 | 2);
    let is_summer = |date: NaiveDate| matches!(date.month(), 6..=8);
    for meter in 0..3 {
        let annual_kwh = fleet.model().premises(meter).annual_kwh;
        // (measured, profile) Wh per local date.
        let mut days: BTreeMap<NaiveDate, (f64, f64)> = BTreeMap::new();
        for sequence in 1..=YEAR_QUARTERS {
            let start = fleet.interval_start(sequence);
            let date = load::local_quarter(config.tz, start).date;
            let day = days.entry(date).or_default();
            day.0 += fleet.measured_wh(meter, sequence).0 as f64;
            day.1 += load::profile_energy_wh(Profile::H25, annual_kwh, config.tz, start, QUARTER_HOUR_S);
        }
        assert_eq!(days.len(), 365);
        let measured: Vec<f64> = days.values().map(|day| day.0).collect();
        let profile: Vec<f64> = days.values().map(|day| day.1).collect();
        let r = pearson(&measured, &profile);
        let season = |keep: &dyn Fn(NaiveDate) -> bool| {
            days.iter()
                .filter(|(date, _)| keep(**date))
                .fold((0.0, 0.0), |sum, (_, day)| (sum.0 + day.0, sum.1 + day.1))
        };
        let (winter, summer) = (season(&is_winter), season(&is_summer));
        let (measured_ratio, profile_ratio) = (winter.0 / summer.0, winter.1 / summer.1);
        let year_kwh = measured.iter().sum::<f64>() / 1_000.0;
        println!(
            "household {meter}: {annual_kwh:.0} kWh/a drawn, {year_kwh:.0} kWh measured; daily r = {r:.4}; \
             winter/summer (Dec-Feb / Jun-Aug) {measured_ratio:.4} measured vs {profile_ratio:.4} profile \
             ({:+.2} %)",
            (measured_ratio / profile_ratio - 1.0) * 100.0
        );
        assert!(r >= 0.95, "household {meter}: r = {r}");
        assert!(
            (measured_ratio / profile_ratio - 1.0).abs() <= 0.03,
            "household {meter}: {measured_ratio} vs {profile_ratio}"
        );
        assert!(profile_ratio > 1.2, "F(d) makes winter the high season: {profile_ratio}");
        assert!((year_kwh / annual_kwh - 1.0).abs() < 0.02, "household {meter}: {year_kwh} of {annual_kwh} kWh");
    }
}

#[test]
fn pv_yields_like_a_german_roof_and_peaks_at_solar_noon() {
    let config = LoadConfig { pv_share: 1.0, ..LoadConfig::default() };
    let model = year_fleet(1, config).model().clone();
    let first_quarter = YEAR_START.0 / QUARTER_HOUR_S;
    let kwp = model.premises(0).pv_kwp.expect("every meter has PV at share 1");
    for site in 0..4 {
        let mut year_wh = 0.0;
        let mut exported_wh = 0u64;
        // Generation by UTC date and quarter-hour of the UTC day.
        let mut days: BTreeMap<NaiveDate, [f64; 96]> = BTreeMap::new();
        for quarter in first_quarter..first_quarter + YEAR_QUARTERS as i64 {
            let flows = model.quarter(0, site, quarter);
            year_wh += flows.pv_wh;
            exported_wh += flows.export_wh;
            let start = quarter * QUARTER_HOUR_S;
            let date = chrono::DateTime::from_timestamp(start, 0).expect("2025").date_naive();
            days.entry(date).or_insert([0.0; 96])[(start.rem_euclid(86_400) / QUARTER_HOUR_S) as usize] += flows.pv_wh;
        }
        let yield_kwh_per_kwp = year_wh / 1_000.0 / kwp;
        // Each clear day's peak quarter-hour (its midpoint) against that day's solar noon.
        let mut clear_offsets_s = Vec::new();
        let mut average = [0.0; 96];
        let mut noon_sum_s = 0i64;
        let full_days: Vec<_> = days.iter().filter(|(date, _)| date.year() == 2025).collect();
        for (date, profile) in &full_days {
            let noon = pv::solar_noon(config.longitude_deg, **date);
            noon_sum_s += noon.0.rem_euclid(86_400);
            for (slot, energy_wh) in profile.iter().enumerate() {
                average[slot] += energy_wh / full_days.len() as f64;
            }
            if pv::day_weather(SEED, site, pv::solar_day(config.longitude_deg, noon)).sky == Sky::Clear {
                let peak = (0..96).max_by(|a, b| profile[*a].total_cmp(&profile[*b])).expect("96 slots");
                let midnight = noon.0 - noon.0.rem_euclid(86_400);
                clear_offsets_s.push(midnight + peak as i64 * QUARTER_HOUR_S + QUARTER_HOUR_S / 2 - noon.0);
            }
        }
        let mean_noon_s = noon_sum_s / full_days.len() as i64;
        let average_peak = (0..96).max_by(|a, b| average[*a].total_cmp(&average[*b])).expect("96 slots");
        let average_offset_s = average_peak as i64 * QUARTER_HOUR_S + QUARTER_HOUR_S / 2 - mean_noon_s;
        let clear_mean_s = clear_offsets_s.iter().sum::<i64>() as f64 / clear_offsets_s.len() as f64;
        let clear_within_hour =
            clear_offsets_s.iter().filter(|offset| offset.abs() <= 3_600).count() as f64 / clear_offsets_s.len() as f64;
        println!(
            "PV site {site}: {kwp} kWp, {yield_kwh_per_kwp:.0} kWh/kWp, {:.0} kWh exported; peak of the average day \
             {:+.1} min from mean solar noon ({:02}:{:02} UTC); {} clear days: mean peak offset {:+.1} min, \
             {:.0} % within 1 h",
            exported_wh as f64 / 1_000.0,
            average_offset_s as f64 / 60.0,
            mean_noon_s / 3_600,
            mean_noon_s % 3_600 / 60,
            clear_offsets_s.len(),
            clear_mean_s / 60.0,
            clear_within_hour * 100.0
        );
        assert!((850.0..=1_150.0).contains(&yield_kwh_per_kwp), "site {site}: {yield_kwh_per_kwp} kWh/kWp");
        assert!(average_offset_s.abs() <= 3_600, "site {site}: average day peaks {average_offset_s} s from noon");
        assert!(clear_mean_s.abs() <= 3_600.0, "site {site}: clear days peak {clear_mean_s} s from noon");
        assert!(clear_offsets_s.len() > 40, "site {site}: {} clear days", clear_offsets_s.len());
        assert!(exported_wh > 0, "a PV household exports");
    }
}

/// Registers only rise, by exactly what was measured, for households with and without PV, and
/// 60 s intervals reach the same registers as 900 s ones at every quarter-hour.
#[test]
fn registers_rise_by_the_measured_energy() {
    let june = UnixSeconds(1_750_377_600); // 2025-06-20 00:00 UTC
    let config = LoadConfig { pv_share: 0.5, ..LoadConfig::default() };
    let coarse = Fleet::new(SEED, 6, 2, 900, june, FaultPlan::default()).with_model(config).expect("valid");
    let fine = Fleet::new(SEED, 6, 2, 60, june, FaultPlan::default()).with_model(config).expect("valid");
    let mut pv_meters = 0;
    for meter in 0..6 {
        let has_pv = coarse.model().premises(meter).pv_kwp.is_some();
        pv_meters += u32::from(has_pv);
        let start = coarse.registers_before(meter, 1);
        assert_eq!(start, fine.registers_before(meter, 1), "the same meter");
        assert_eq!(start.export_wh > 0, has_pv, "PV meters start with an export register");
        let (mut registers, mut fine_registers) = (start, start);
        let (mut imported_wh, mut exported_wh) = (0u64, 0u64);
        for sequence in 1..=2 * 96 {
            let reading = coarse.step(meter, sequence, registers);
            let (import_wh, export_wh) = coarse.measured_wh(meter, sequence);
            assert_eq!((reading.import_start_wh, reading.export_start_wh), (registers.import_wh, registers.export_wh));
            assert_eq!(reading.import_energy().0, import_wh, "meter {meter}, sequence {sequence}");
            assert_eq!(reading.export_energy().0, export_wh, "meter {meter}, sequence {sequence}");
            (imported_wh, exported_wh) = (imported_wh + import_wh, exported_wh + export_wh);
            registers = Registers::after(&reading);
            for minute in 1..=15 {
                fine_registers = Registers::after(&fine.step(meter, (sequence - 1) * 15 + minute, fine_registers));
            }
            assert_eq!(fine_registers, registers, "meter {meter}: 60 s and 900 s registers at quarter {sequence}");
        }
        assert_eq!(registers, coarse.registers_before(meter, 2 * 96 + 1), "regenerated registers agree");
        assert_eq!((registers.import_wh + REGISTER_MODULUS_WH - start.import_wh) % REGISTER_MODULUS_WH, imported_wh);
        assert_eq!((registers.export_wh + REGISTER_MODULUS_WH - start.export_wh) % REGISTER_MODULUS_WH, exported_wh);
        assert_eq!(exported_wh > 0, has_pv, "meter {meter} exports {exported_wh} Wh in two June days");
        assert!(imported_wh > 2_000, "meter {meter} imports {imported_wh} Wh in two days");
    }
    assert!(pv_meters > 0 && pv_meters < 6, "{pv_meters} of 6 with PV at a 50 % share");
}

/// A rollover planned while a PV meter only exports rolls its export register.
#[test]
fn rollover_at_noon_rolls_the_export_register() {
    let june_noon = UnixSeconds(1_750_420_800); // 2025-06-20 12:00 UTC
    let config = LoadConfig { pv_share: 1.0, ..LoadConfig::default() };
    let plain = Fleet::new(SEED, 8, 1, 900, june_noon, FaultPlan::default()).with_model(config).expect("valid");
    let meter = (0..8)
        .find(|meter| {
            let (import_wh, export_wh) = plain.measured_wh(*meter, 3);
            import_wh == 0 && export_wh > 0
        })
        .expect("some PV meter only exports at noon in June");
    let fault = Fault { meter, sequence: 3, kind: FaultKind::Rollover, param: 0 };
    let fleet =
        Fleet::new(SEED, 8, 1, 900, june_noon, FaultPlan { faults: vec![fault] }).with_model(config).expect("valid");
    let reading = fleet.stored_reading(meter, 3);
    let reading = reading.reading();
    assert!(reading.export_end_wh < reading.export_start_wh, "{reading:?}");
    assert_eq!(reading.export_energy().0, fleet.measured_wh(meter, 3).1);
}
