//! What a simulated meter measures: consumption from the BDEW 2025 standard load profiles
//! (`data/load-profiles/`, CC0 copy of BDEW's tables), netted against rooftop PV ([`crate::pv`]).
//!
//! The model is a pure function of (seed, meter, site, time): there is no state, so a backfilled
//! interval is identical to the live one. Power is constant within each UTC quarter-hour, and each
//! quarter-hour's import and export are whole watt-hours (rounded without bias); an interval of
//! any length takes its share of the quarter-hours it covers by integer arithmetic. So a register
//! driven by 60 s intervals ends each quarter-hour exactly where one driven by 900 s intervals
//! does, and the per-interval energies add up to the quarter-hour energies exactly.
//!
//! Time zones and DST: the tables are in local wall-clock time. Each UTC quarter-hour takes the
//! profile value of the local quarter-hour it starts in (month, day type and F(d) of its local
//! date). On the spring-forward day the four skipped local quarter-hours (02:00–02:45 in Berlin)
//! get no energy, so the day has 92 quarter-hours; on the fall-back day the repeated ones are
//! used twice, so it has 100.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use chrono::{DateTime, Datelike, NaiveDate, Offset, TimeZone};
use chrono_tz::Tz;
use domain::ids::UnixSeconds;
use sha2::{Digest, Sha256};

use crate::pv;

/// Length of one profile step.
pub const QUARTER_HOUR_S: i64 = 900;
/// Profile steps in a (96-quarter-hour) table day.
pub const QUARTER_HOURS_PER_DAY: usize = 96;
/// Per-quarter-hour noise on consumption: uniform in 1 ± this, so its mean is 1.
pub const LOAD_NOISE_AMPLITUDE: f64 = 0.18;

const PROFILES_CSV: &str = include_str!("../data/load-profiles/slp_2025_bdew.csv");
const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// A BDEW 2025 standard load profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// Household (dynamised with F(d)).
    H25,
    /// Commerce, general (not dynamised).
    G25,
}

impl Profile {
    /// Every profile the simulator offers.
    pub const ALL: [Profile; 2] = [Profile::H25, Profile::G25];

    /// The profile's code in the BDEW tables.
    pub fn code(self) -> &'static str {
        match self {
            Profile::H25 => "H25",
            Profile::G25 => "G25",
        }
    }

    /// Whether BDEW prescribes the dynamisation factor F(d) for this profile.
    pub fn is_dynamised(self) -> bool {
        match self {
            Profile::H25 => true,
            Profile::G25 => false,
        }
    }

    fn index(self) -> usize {
        match self {
            Profile::H25 => 0,
            Profile::G25 => 1,
        }
    }

    /// Annual consumption of a typical customer: (median, spread as sigma of its logarithm,
    /// lowest, highest) in kWh/a. Households mostly use 2,500–3,500 kWh/a; small businesses
    /// on a standard profile use a few MWh to a few tens of MWh.
    fn annual_kwh_spread(self) -> (f64, f64, f64, f64) {
        match self {
            Profile::H25 => (3_000.0, 0.25, 1_500.0, 6_000.0),
            Profile::G25 => (10_000.0, 0.6, 3_000.0, 50_000.0),
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Profile {
    type Err = LoadConfigError;
    fn from_str(text: &str) -> Result<Profile, LoadConfigError> {
        Profile::ALL
            .into_iter()
            .find(|profile| profile.code().eq_ignore_ascii_case(text))
            .ok_or_else(|| LoadConfigError::UnknownProfile(text.to_string()))
    }
}

/// BDEW day type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DayType {
    Workday,
    Saturday,
    /// Sundays and public holidays.
    Sunday,
}

impl DayType {
    fn index(self) -> usize {
        match self {
            DayType::Workday => 0,
            DayType::Saturday => 1,
            DayType::Sunday => 2,
        }
    }
}

/// Watts per 1,000 kWh/a, indexed by profile, month (0–11), day type and quarter-hour.
type Tables = [[[[f64; QUARTER_HOURS_PER_DAY]; 3]; 12]; 2];

static TABLES: LazyLock<Tables> = LazyLock::new(|| parse_tables(PROFILES_CSV));

/// Parses the embedded CSV. The file is part of the build, so a malformed one is a bug caught by
/// the first test that touches a profile, not a runtime condition.
fn parse_tables(csv: &str) -> Tables {
    let mut tables = [[[[f64::NAN; QUARTER_HOURS_PER_DAY]; 3]; 12]; 2];
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("profile_id,period,day,timestamp,watts"), "BDEW table header");
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), 5, "BDEW table row {line:?}");
        let Some(profile) = Profile::ALL.into_iter().find(|profile| profile.code() == fields[0]) else {
            continue; // L25, P25, S25: not offered
        };
        let month = MONTHS.iter().position(|month| *month == fields[1]).expect("BDEW table month");
        let day_type = match fields[2] {
            "workday" => DayType::Workday,
            "saturday" => DayType::Saturday,
            "sunday" => DayType::Sunday,
            other => panic!("BDEW table day type {other:?}"),
        };
        let (hours, minutes) = fields[3].split_once(':').expect("BDEW table timestamp HH:MM");
        let minute_of_day: usize =
            hours.parse::<usize>().expect("BDEW hours") * 60 + minutes.parse::<usize>().expect("BDEW minutes");
        assert_eq!(minute_of_day % 15, 0, "BDEW timestamps start quarter-hours: {line:?}");
        let watts: f64 = fields[4].parse().expect("BDEW watts");
        assert!(watts.is_finite() && watts >= 0.0, "BDEW watts {line:?}");
        let cell = &mut tables[profile.index()][month][day_type.index()][minute_of_day / 15];
        assert!(cell.is_nan(), "BDEW table row repeated: {line:?}");
        *cell = watts;
    }
    assert!(tables.iter().flatten().flatten().flatten().all(|watts| !watts.is_nan()), "BDEW table incomplete");
    tables
}

/// The static profile value in W per 1,000 kWh/a (before F(d)), for `month` 1–12 and
/// `quarter_hour` 0–95 (local wall-clock time).
pub fn profile_watts(profile: Profile, month: u32, day_type: DayType, quarter_hour: usize) -> f64 {
    assert!((1..=12).contains(&month) && quarter_hour < QUARTER_HOURS_PER_DAY, "month {month}, quarter {quarter_hour}");
    TABLES[profile.index()][month as usize - 1][day_type.index()][quarter_hour]
}

/// BDEW dynamisation factor for day of the year `day_of_year` (1 on 1 January).
pub fn dynamisation(day_of_year: u32) -> f64 {
    let d = f64::from(day_of_year);
    ((((-3.92e-10 * d + 3.20e-7) * d - 7.02e-5) * d + 2.10e-3) * d) + 1.24
}

/// Easter Sunday of a Gregorian year (the anonymous Gregorian algorithm, Meeus/Jones/Butcher).
pub fn easter_sunday(year: i32) -> NaiveDate {
    let a = year.rem_euclid(19);
    let b = year.div_euclid(100);
    let c = year.rem_euclid(100);
    let h = (19 * a + b - b / 4 - (b - (b + 8) / 25 + 1) / 3 + 15).rem_euclid(30);
    let l = (32 + 2 * (b % 4) + 2 * (c / 4) - h - c % 4).rem_euclid(7);
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    // Always 22 March to 25 April of a year chrono can represent.
    NaiveDate::from_ymd_opt(year, month as u32, day as u32).expect("Easter falls on a real date")
}

/// Whether `date` is one of the nine nationwide German public holidays.
pub fn is_nationwide_holiday(date: NaiveDate) -> bool {
    match (date.month(), date.day()) {
        (1, 1) | (5, 1) | (10, 3) | (12, 25) | (12, 26) => return true,
        _ => {}
    }
    let from_easter = date.signed_duration_since(easter_sunday(date.year())).num_days();
    // Good Friday, Easter Monday, Ascension Day, Whit Monday.
    matches!(from_easter, -2 | 1 | 39 | 50)
}

/// The BDEW day type of a local date: holidays count as Sunday; 24 and 31 December as
/// Saturday unless they fall on a Sunday.
pub fn day_type(date: NaiveDate) -> DayType {
    let weekday = date.weekday().number_from_monday();
    if weekday == 7 || is_nationwide_holiday(date) {
        DayType::Sunday
    } else if weekday == 6 || (date.month() == 12 && matches!(date.day(), 24 | 31)) {
        DayType::Saturday
    } else {
        DayType::Workday
    }
}

/// Where a UTC instant falls on the local wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalQuarter {
    pub date: NaiveDate,
    /// 0–95: the local quarter-hour the instant falls in.
    pub quarter_hour: usize,
}

/// The local date and wall-clock quarter-hour of `utc` in `tz`. Instants outside chrono's range
/// (hundreds of thousands of years away) are taken as 1970-01-01.
pub fn local_quarter(tz: Tz, utc: UnixSeconds) -> LocalQuarter {
    let instant = DateTime::from_timestamp(utc.0, 0).unwrap_or(DateTime::UNIX_EPOCH);
    let offset_s = i64::from(tz.offset_from_utc_datetime(&instant.naive_utc()).fix().local_minus_utc());
    let local_s = instant.timestamp() + offset_s;
    let date = DateTime::from_timestamp(local_s.div_euclid(86_400) * 86_400, 0).unwrap_or(DateTime::UNIX_EPOCH);
    LocalQuarter { date: date.date_naive(), quarter_hour: (local_s.rem_euclid(86_400) / QUARTER_HOUR_S) as usize }
}

/// The profile's mean power in W during a local quarter-hour for a customer with `annual_kwh`
/// (dynamised if the profile is). No noise.
pub fn profile_power_w(profile: Profile, annual_kwh: f64, local: LocalQuarter) -> f64 {
    let watts = profile_watts(profile, local.date.month(), day_type(local.date), local.quarter_hour);
    let factor = if profile.is_dynamised() { dynamisation(local.date.ordinal()) } else { 1.0 };
    watts * factor * annual_kwh / 1_000.0
}

/// The profile's energy in Wh from `start` for `duration_s` (UTC), without noise: the integral
/// of [`profile_power_w`] under the DST rule of this module.
pub fn profile_energy_wh(profile: Profile, annual_kwh: f64, tz: Tz, start: UnixSeconds, duration_s: i64) -> f64 {
    let end = start.0 + duration_s.max(0);
    let mut energy_wh = 0.0;
    let mut at = start.0;
    while at < end {
        let piece_end = end.min((at.div_euclid(QUARTER_HOUR_S) + 1) * QUARTER_HOUR_S);
        let power_w = profile_power_w(profile, annual_kwh, local_quarter(tz, UnixSeconds(at)));
        energy_wh += power_w * (piece_end - at) as f64 / 3_600.0;
        at = piece_end;
    }
    energy_wh
}

/// The model's parameters: what the command line can set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadConfig {
    /// Consumption profile of every meter.
    pub profile: Profile,
    /// Share of meters (0–1) with rooftop PV.
    pub pv_share: f64,
    /// Site latitude in degrees, north positive (the sun's position and so PV depend on it).
    pub latitude_deg: f64,
    /// Site longitude in degrees, east positive.
    pub longitude_deg: f64,
    /// Time zone of the load profiles' wall clock.
    pub tz: Tz,
}

impl Default for LoadConfig {
    /// Households (H25), 20 % with PV, in Kassel (central Germany), on Berlin time.
    fn default() -> LoadConfig {
        LoadConfig {
            profile: Profile::H25,
            pv_share: 0.2,
            latitude_deg: 51.3,
            longitude_deg: 9.5,
            tz: Tz::Europe__Berlin,
        }
    }
}

/// A [`LoadConfig`] the model cannot run with.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadConfigError {
    PvShare(f64),
    Latitude(f64),
    Longitude(f64),
    UnknownProfile(String),
}

impl fmt::Display for LoadConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadConfigError::PvShare(share) => write!(f, "PV share must be between 0 and 1, got {share}"),
            LoadConfigError::Latitude(degrees) => {
                write!(f, "latitude must be between -90 and 90 degrees, got {degrees}")
            }
            LoadConfigError::Longitude(degrees) => {
                write!(f, "longitude must be between -180 and 180 degrees, got {degrees}")
            }
            LoadConfigError::UnknownProfile(text) => write!(f, "unknown load profile {text:?}; known: H25, G25"),
        }
    }
}

impl std::error::Error for LoadConfigError {}

/// What a meter's premises are: fixed per (seed, meter).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Premises {
    /// Annual consumption the profile is scaled to.
    pub annual_kwh: f64,
    /// Peak power of the rooftop PV system, if there is one.
    pub pv_kwp: Option<f64>,
}

/// One meter's quarter-hour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuarterFlows {
    /// Consumption, noise included.
    pub load_wh: f64,
    /// PV generation (0 without PV).
    pub pv_wh: f64,
    /// Net drawn from the grid, rounded to whole Wh.
    pub import_wh: u64,
    /// Net fed into the grid, rounded to whole Wh.
    pub export_wh: u64,
}

/// What one meter measured over an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IntervalFlows {
    pub import_wh: u64,
    pub export_wh: u64,
}

/// The fleet's load and PV model: a validated [`LoadConfig`] and the fleet seed.
#[derive(Debug, Clone)]
pub struct LoadModel {
    seed: u64,
    config: LoadConfig,
}

impl LoadModel {
    /// Checks the configuration's ranges.
    pub fn new(seed: u64, config: LoadConfig) -> Result<LoadModel, LoadConfigError> {
        if !(0.0..=1.0).contains(&config.pv_share) {
            return Err(LoadConfigError::PvShare(config.pv_share));
        }
        if !(-90.0..=90.0).contains(&config.latitude_deg) {
            return Err(LoadConfigError::Latitude(config.latitude_deg));
        }
        if !(-180.0..=180.0).contains(&config.longitude_deg) {
            return Err(LoadConfigError::Longitude(config.longitude_deg));
        }
        Ok(LoadModel { seed, config })
    }

    pub fn config(&self) -> &LoadConfig {
        &self.config
    }

    /// A meter's annual consumption and PV system, drawn from (seed, meter).
    pub fn premises(&self, meter: u32) -> Premises {
        let uniforms = units(draws(b"wattle.sim.load.premises", self.seed, u64::from(meter), 0));
        let (median_kwh, sigma, lowest_kwh, highest_kwh) = self.config.profile.annual_kwh_spread();
        // Irwin-Hall: the sum of four uniforms, centred and scaled, is close to a standard normal.
        let normal = (uniforms[0] + uniforms[1] + uniforms[2] + uniforms[3] - 2.0) * 3f64.sqrt();
        let annual_kwh = (median_kwh * (sigma * normal).exp()).clamp(lowest_kwh, highest_kwh);
        let has_pv = uniforms[4] < self.config.pv_share;
        Premises { annual_kwh, pv_kwp: has_pv.then(|| pv::system_kwp(uniforms[5], uniforms[6])) }
    }

    /// One meter's flows in UTC quarter-hour number `quarter` (Unix seconds / 900); `site`
    /// selects the weather.
    pub fn quarter(&self, meter: u32, site: u32, quarter: i64) -> QuarterFlows {
        self.quarter_for(&self.premises(meter), meter, site, quarter)
    }

    fn quarter_for(&self, premises: &Premises, meter: u32, site: u32, quarter: i64) -> QuarterFlows {
        let start = UnixSeconds(quarter * QUARTER_HOUR_S);
        let draws = draws(b"wattle.sim.load.quarter", self.seed, u64::from(meter), quarter);
        let noise = 1.0 + LOAD_NOISE_AMPLITUDE * (2.0 * unit(draws[0]) - 1.0);
        let local = local_quarter(self.config.tz, start);
        let load_wh = profile_power_w(self.config.profile, premises.annual_kwh, local) * noise / 4.0;
        let pv_wh = premises.pv_kwp.map_or(0.0, |kwp| {
            pv::quarter_generation_wh(
                kwp,
                self.config.latitude_deg,
                self.config.longitude_deg,
                self.seed,
                site,
                quarter,
            )
        });
        // Unbiased rounding: floor(x + u) with u uniform has mean x.
        let round = |energy_wh: f64, draw: u64| (energy_wh.max(0.0) + unit(draw)).floor() as u64;
        QuarterFlows {
            load_wh,
            pv_wh,
            import_wh: round(load_wh - pv_wh, draws[1]),
            export_wh: round(pv_wh - load_wh, draws[2]),
        }
    }

    /// What a meter measures from `start` for `interval_s`: each quarter-hour the interval
    /// covers contributes its share of that quarter-hour's whole watt-hours, so intervals that
    /// partition time partition the energy exactly, whatever their length.
    pub fn interval(&self, meter: u32, site: u32, start: UnixSeconds, interval_s: i64) -> IntervalFlows {
        let premises = self.premises(meter);
        let end = start.0 + interval_s.max(0);
        let mut flows = IntervalFlows::default();
        let mut at = start.0;
        while at < end {
            let quarter = at.div_euclid(QUARTER_HOUR_S);
            let quarter_start = quarter * QUARTER_HOUR_S;
            let piece_end = end.min(quarter_start + QUARTER_HOUR_S);
            let whole = self.quarter_for(&premises, meter, site, quarter);
            // Energy up to `offset_s` into the quarter-hour, in whole Wh (offsets are 0..=900).
            let share = |energy_wh: u64, offset_s: i64| energy_wh * offset_s as u64 / QUARTER_HOUR_S as u64;
            flows.import_wh +=
                share(whole.import_wh, piece_end - quarter_start) - share(whole.import_wh, at - quarter_start);
            flows.export_wh +=
                share(whole.export_wh, piece_end - quarter_start) - share(whole.export_wh, at - quarter_start);
            at = piece_end;
        }
        flows
    }
}

/// Four independent 64-bit draws for (label, seed, key, index): SHA-256, so that distinct
/// labels never share randomness.
pub(crate) fn draws(label: &[u8], seed: u64, key: u64, index: i64) -> [u64; 4] {
    let digest = Sha256::new()
        .chain_update(label)
        .chain_update(seed.to_be_bytes())
        .chain_update(key.to_be_bytes())
        .chain_update(index.to_be_bytes())
        .finalize();
    std::array::from_fn(|lane| u64::from_be_bytes(digest[lane * 8..lane * 8 + 8].try_into().expect("8 of 32 bytes")))
}

/// A draw as a uniform number in [0, 1) (its top 53 bits).
pub(crate) fn unit(draw: u64) -> f64 {
    (draw >> 11) as f64 / (1u64 << 53) as f64
}

/// Four draws as eight independent uniform numbers in [0, 1), 32 bits each.
pub(crate) fn units(draws: [u64; 4]) -> [f64; 8] {
    std::array::from_fn(|k| {
        let half = if k % 2 == 0 { draws[k / 2] >> 32 } else { draws[k / 2] & 0xFFFF_FFFF };
        half as f64 / (1u64 << 32) as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> UnixSeconds {
        UnixSeconds(DateTime::parse_from_rfc3339(text).expect("RFC 3339").timestamp())
    }

    fn date(year: i32, month: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(year, month, day).expect("valid date")
    }

    #[test]
    fn calendar_matches_the_bdew_figures_for_2025() {
        assert_eq!(easter_sunday(2024), date(2024, 3, 31));
        assert_eq!(easter_sunday(2025), date(2025, 4, 20));
        assert_eq!(easter_sunday(2026), date(2026, 4, 5));
        assert_eq!(easter_sunday(2038), date(2038, 4, 25));
        assert_eq!(day_type(date(2025, 4, 18)), DayType::Sunday, "Good Friday");
        assert_eq!(day_type(date(2025, 5, 29)), DayType::Sunday, "Ascension");
        assert_eq!(day_type(date(2025, 6, 9)), DayType::Sunday, "Whit Monday");
        assert_eq!(day_type(date(2025, 12, 24)), DayType::Saturday, "Christmas Eve, a Wednesday");
        assert_eq!(day_type(date(2028, 12, 31)), DayType::Sunday, "31 December on a Sunday");
        let mut counts = [0; 3];
        let mut day = date(2025, 1, 1);
        while day.year() == 2025 {
            counts[day_type(day).index()] += 1;
            day = day.succ_opt().expect("next day");
        }
        assert_eq!(counts, [250, 54, 61], "workdays, Saturdays, Sundays and holidays");
    }

    #[test]
    fn dynamisation_and_annual_sums_match_the_readme() {
        for (day, factor) in [(1, 1.24203), (100, 1.02880), (200, 0.78480), (365, 1.25722)] {
            assert!((dynamisation(day) - factor).abs() < 5e-6, "F({day}) = {}", dynamisation(day));
        }
        for (profile, expected_kwh) in [(Profile::H25, 999.91), (Profile::G25, 1000.35)] {
            let mut total_wh = 0.0;
            let mut day = date(2025, 1, 1);
            while day.year() == 2025 {
                for quarter_hour in 0..QUARTER_HOURS_PER_DAY {
                    total_wh += profile_power_w(profile, 1_000.0, LocalQuarter { date: day, quarter_hour }) / 4.0;
                }
                day = day.succ_opt().expect("next day");
            }
            assert!((total_wh / 1_000.0 - expected_kwh).abs() < 0.01, "{profile}: {} kWh", total_wh / 1_000.0);
        }
    }

    /// The DST rule: the 23-hour day lacks the 02:00–02:45 quarter-hours, the 25-hour day has
    /// them twice.
    #[test]
    fn dst_days_skip_or_repeat_the_changed_hour() {
        let tz = Tz::Europe__Berlin;
        let annual_kwh = 3_000.0;
        let table_day_wh = |day: NaiveDate, quarter_hours: std::ops::Range<usize>| -> f64 {
            quarter_hours
                .map(|quarter_hour| profile_power_w(Profile::H25, annual_kwh, LocalQuarter { date: day, quarter_hour }))
                .sum::<f64>()
                / 4.0
        };
        // 30 March 2025: local midnight is 23:00 UTC the day before, the next one 22:00 UTC.
        let spring = date(2025, 3, 30);
        let start = utc("2025-03-29T23:00:00Z");
        let length_s = utc("2025-03-30T22:00:00Z").0 - start.0;
        assert_eq!(length_s, 23 * 3_600);
        let model_wh = profile_energy_wh(Profile::H25, annual_kwh, tz, start, length_s);
        let expected_wh = table_day_wh(spring, 0..96) - table_day_wh(spring, 8..12);
        assert!((model_wh - expected_wh).abs() < 1e-9, "spring: {model_wh} vs {expected_wh}");
        assert!(table_day_wh(spring, 8..12) > 100.0, "the skipped hour holds energy");
        // 26 October 2025: from 22:00 UTC the day before to 23:00 UTC.
        let autumn = date(2025, 10, 26);
        let start = utc("2025-10-25T22:00:00Z");
        let length_s = utc("2025-10-26T23:00:00Z").0 - start.0;
        assert_eq!(length_s, 25 * 3_600);
        let model_wh = profile_energy_wh(Profile::H25, annual_kwh, tz, start, length_s);
        let expected_wh = table_day_wh(autumn, 0..96) + table_day_wh(autumn, 8..12);
        assert!((model_wh - expected_wh).abs() < 1e-9, "autumn: {model_wh} vs {expected_wh}");
        // Quarter-hour by quarter-hour: 92 distinct local quarter-hours, then 96 with 4 twice.
        let quarters = |start: UnixSeconds, count: i64| -> Vec<usize> {
            (0..count).map(|k| local_quarter(tz, UnixSeconds(start.0 + k * QUARTER_HOUR_S)).quarter_hour).collect()
        };
        let spring_quarters = quarters(utc("2025-03-29T23:00:00Z"), 92);
        assert_eq!(spring_quarters, (0..8).chain(12..96).collect::<Vec<_>>());
        let autumn_quarters = quarters(utc("2025-10-25T22:00:00Z"), 100);
        assert_eq!(autumn_quarters, (0..12).chain(8..96).collect::<Vec<_>>());
    }

    #[test]
    fn intervals_of_any_length_partition_the_energy_exactly() {
        let config = LoadConfig { pv_share: 1.0, ..LoadConfig::default() };
        let model = LoadModel::new(5, config).expect("valid config");
        let start = utc("2025-06-21T08:00:00Z");
        for meter in 0..4 {
            let whole = model.interval(meter, 0, start, 4 * 3_600);
            for interval_s in [1, 8, 45, 60, 900, 1_800, 3_600] {
                let mut sum = IntervalFlows::default();
                for k in 0..(4 * 3_600 / interval_s) {
                    let part = model.interval(meter, 0, UnixSeconds(start.0 + k * interval_s), interval_s);
                    sum.import_wh += part.import_wh;
                    sum.export_wh += part.export_wh;
                }
                assert_eq!(sum, whole, "meter {meter}, {interval_s} s intervals");
            }
            assert!(whole.export_wh > 0, "a PV meter exports on a June morning: {whole:?}");
        }
    }

    #[test]
    fn commerce_works_on_workdays_and_is_not_dynamised() {
        let config = LoadConfig { profile: Profile::G25, pv_share: 0.0, ..LoadConfig::default() };
        let model = LoadModel::new(3, config).expect("valid config");
        let annual_kwh = model.premises(0).annual_kwh;
        assert!((3_000.0..=50_000.0).contains(&annual_kwh), "{annual_kwh}");
        let day_wh = |start: &str| model.interval(0, 0, utc(start), 86_400).import_wh as f64;
        // Wednesday and Sunday 12 and 16 March 2025 (local midnight is 23:00 UTC).
        let (workday_wh, sunday_wh) = (day_wh("2025-03-11T23:00:00Z"), day_wh("2025-03-15T23:00:00Z"));
        assert!(sunday_wh < 0.6 * workday_wh, "Sunday {sunday_wh} Wh vs workday {workday_wh} Wh");
        let noon = LocalQuarter { date: date(2025, 1, 15), quarter_hour: 48 };
        let july_noon = LocalQuarter { date: date(2025, 7, 16), ..noon };
        let ratio = profile_power_w(Profile::G25, 1_000.0, noon) / profile_watts(Profile::G25, 1, DayType::Workday, 48);
        assert_eq!(ratio, 1.0, "G25 is not dynamised");
        assert_ne!(
            profile_power_w(Profile::H25, 1_000.0, july_noon),
            profile_watts(Profile::H25, 7, DayType::Workday, 48)
        );
    }

    #[test]
    fn configs_out_of_range_are_refused() {
        assert_eq!("g25".parse::<Profile>(), Ok(Profile::G25));
        assert!("L25".parse::<Profile>().is_err());
        let refused = |config: LoadConfig| LoadModel::new(1, config).is_err();
        assert!(refused(LoadConfig { pv_share: 1.5, ..LoadConfig::default() }));
        assert!(refused(LoadConfig { latitude_deg: 91.0, ..LoadConfig::default() }));
        assert!(refused(LoadConfig { longitude_deg: f64::NAN, ..LoadConfig::default() }));
        assert!(LoadModel::new(1, LoadConfig::default()).is_ok());
    }

    #[test]
    fn annual_consumption_spreads_around_three_megawatt_hours() {
        let model = LoadModel::new(11, LoadConfig::default()).expect("valid config");
        let mut annual: Vec<f64> = (0..2_000).map(|meter| model.premises(meter).annual_kwh).collect();
        annual.sort_by(f64::total_cmp);
        assert!(annual[0] >= 1_500.0 && annual[1_999] <= 6_000.0);
        let typical = annual.iter().filter(|kwh| (2_500.0..=3_500.0).contains(*kwh)).count();
        assert!((850..=1_150).contains(&typical), "{typical} of 2,000 between 2,500 and 3,500 kWh/a");
        let with_pv = (0..2_000).filter(|meter| model.premises(*meter).pv_kwp.is_some()).count();
        assert!((300..=500).contains(&with_pv), "{with_pv} of 2,000 with PV at a 20 % share");
    }
}
