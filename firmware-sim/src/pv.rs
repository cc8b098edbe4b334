//! Rooftop PV: the sun's position (NOAA's formulas after Spencer, 1971), clear-sky irradiance on
//! an equator-facing module plane (Meinel's air-mass model with Kasten–Young air mass), a
//! performance ratio, and German weather drawn per (seed, site, day).
//!
//! Generation is constant within each UTC quarter-hour, evaluated at its midpoint. The weather
//! is a climate for central Germany whatever the site's coordinates: the monthly mix of
//! overcast, mixed and clear days is set so that a year's yield comes to about 1,000 kWh per
//! kWp at the default site, as German rooftop systems deliver.

use std::f64::consts::PI;

use chrono::{DateTime, Datelike, NaiveDate};
use domain::ids::UnixSeconds;

use crate::load::{draws, unit, QUARTER_HOUR_S};

/// Share of the plane-of-array energy at standard conditions that reaches the meter (losses in
/// the inverter, wiring, heat, soiling).
pub const PERFORMANCE_RATIO: f64 = 0.8;
/// Module tilt from horizontal; every roof faces the equator.
pub const TILT_DEG: f64 = 35.0;
/// Ground reflectance seen by the tilted modules.
pub const GROUND_ALBEDO: f64 = 0.2;
/// Smallest and largest PV system; sizes cluster in the middle (triangular).
pub const SYSTEM_KWP_MIN: f64 = 4.0;
pub const SYSTEM_KWP_MAX: f64 = 12.0;
/// Extraterrestrial irradiance at the mean Earth–Sun distance, as Meinel's model uses it.
const SOLAR_CONSTANT_W_PER_M2: f64 = 1_353.0;

/// A PV system's size from two uniform numbers in [0, 1): 4–12 kWp, mostly 6–10, to 0.1 kWp.
pub fn system_kwp(first: f64, second: f64) -> f64 {
    let kwp = SYSTEM_KWP_MIN + (SYSTEM_KWP_MAX - SYSTEM_KWP_MIN) * (first + second) / 2.0;
    (kwp * 10.0).round() / 10.0
}

/// Where the sun is, seen from a site at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SolarPosition {
    /// Angle above the horizon (negative at night), without refraction.
    pub elevation_deg: f64,
    pub declination_rad: f64,
    /// 0 at solar noon, positive in the afternoon.
    pub hour_angle_rad: f64,
    /// Apparent minus mean solar time.
    pub equation_of_time_min: f64,
    /// (mean distance / distance)², for irradiance.
    pub distance_factor: f64,
}

fn date_of_day(days_since_epoch: i64) -> NaiveDate {
    DateTime::from_timestamp(days_since_epoch * 86_400, 0).unwrap_or(DateTime::UNIX_EPOCH).date_naive()
}

/// NOAA's fractional year γ (radians) and the series that depend on it.
fn spencer(t: UnixSeconds) -> (f64, f64, f64) {
    let date = date_of_day(t.0.div_euclid(86_400));
    let days_in_year = if date.leap_year() { 366.0 } else { 365.0 };
    let hour = t.0.rem_euclid(86_400) as f64 / 3_600.0;
    let gamma = 2.0 * PI / days_in_year * (f64::from(date.ordinal()) - 1.0 + (hour - 12.0) / 24.0);
    let equation_of_time_min = 229.18
        * (0.000075 + 0.001868 * gamma.cos()
            - 0.032077 * gamma.sin()
            - 0.014615 * (2.0 * gamma).cos()
            - 0.040849 * (2.0 * gamma).sin());
    let declination_rad = 0.006918 - 0.399912 * gamma.cos() + 0.070257 * gamma.sin() - 0.006758 * (2.0 * gamma).cos()
        + 0.000907 * (2.0 * gamma).sin()
        - 0.002697 * (3.0 * gamma).cos()
        + 0.00148 * (3.0 * gamma).sin();
    (gamma, equation_of_time_min, declination_rad)
}

/// The sun's position at `t` (UTC) from a site.
pub fn solar_position(latitude_deg: f64, longitude_deg: f64, t: UnixSeconds) -> SolarPosition {
    let (gamma, equation_of_time_min, declination_rad) = spencer(t);
    let true_solar_min = t.0.rem_euclid(86_400) as f64 / 60.0 + equation_of_time_min + 4.0 * longitude_deg;
    let hour_angle_rad = (true_solar_min / 4.0 - 180.0).to_radians();
    let latitude_rad = latitude_deg.to_radians();
    let cos_zenith =
        latitude_rad.sin() * declination_rad.sin() + latitude_rad.cos() * declination_rad.cos() * hour_angle_rad.cos();
    let distance_factor = 1.000110
        + 0.034221 * gamma.cos()
        + 0.001280 * gamma.sin()
        + 0.000719 * (2.0 * gamma).cos()
        + 0.000077 * (2.0 * gamma).sin();
    SolarPosition {
        elevation_deg: 90.0 - cos_zenith.clamp(-1.0, 1.0).acos().to_degrees(),
        declination_rad,
        hour_angle_rad,
        equation_of_time_min,
        distance_factor,
    }
}

/// Solar noon (UTC) of a date at a longitude: 12:00 − 4 min per degree east − equation of time.
pub fn solar_noon(longitude_deg: f64, date: NaiveDate) -> UnixSeconds {
    let midnight = date.and_hms_opt(0, 0, 0).map_or(0, |midnight| midnight.and_utc().timestamp());
    let mut noon_min = 720.0 - 4.0 * longitude_deg;
    for _ in 0..2 {
        let (_, equation_of_time_min, _) = spencer(UnixSeconds(midnight + (noon_min * 60.0) as i64));
        noon_min = 720.0 - 4.0 * longitude_deg - equation_of_time_min;
    }
    UnixSeconds(midnight + (noon_min * 60.0).round() as i64)
}

/// Cloudless irradiance in W/m² on the module plane (tilted [`TILT_DEG`] towards the equator)
/// at `t`: Meinel's direct normal irradiance 1353 W/m² · 0.7^(AM^0.678) with the Kasten–Young air
/// mass, diffuse 10 % of it (isotropic sky), and ground reflection.
pub fn clear_sky_plane_w_per_m2(latitude_deg: f64, longitude_deg: f64, t: UnixSeconds) -> f64 {
    let sun = solar_position(latitude_deg, longitude_deg, t);
    if sun.elevation_deg <= 0.0 {
        return 0.0;
    }
    let zenith_deg = 90.0 - sun.elevation_deg;
    let cos_zenith = zenith_deg.to_radians().cos();
    let air_mass = 1.0 / (cos_zenith + 0.50572 * (96.07995 - zenith_deg).powf(-1.6364));
    let direct_normal = SOLAR_CONSTANT_W_PER_M2 * sun.distance_factor * 0.7f64.powf(air_mass.powf(0.678));
    let diffuse_horizontal = 0.1 * direct_normal;
    let global_horizontal = direct_normal * cos_zenith + diffuse_horizontal;
    // An equator-facing plane tilted by β sees the sun as a horizontal plane at latitude φ ∓ β.
    let tilt_rad = TILT_DEG.to_radians();
    let plane_latitude_rad = (latitude_deg - TILT_DEG.copysign(latitude_deg)).to_radians();
    let cos_incidence = sun.declination_rad.sin() * plane_latitude_rad.sin()
        + sun.declination_rad.cos() * plane_latitude_rad.cos() * sun.hour_angle_rad.cos();
    direct_normal * cos_incidence.max(0.0)
        + diffuse_horizontal * (1.0 + tilt_rad.cos()) / 2.0
        + global_horizontal * GROUND_ALBEDO * (1.0 - tilt_rad.cos()) / 2.0
}

/// A day's sky.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sky {
    Clear,
    Mixed,
    Overcast,
}

impl Sky {
    /// Range of the day's clearness (share of the clear-sky energy) and how much it varies from
    /// quarter-hour to quarter-hour (± this share, uniform, mean 1).
    fn clearness(self) -> (f64, f64, f64) {
        match self {
            Sky::Clear => (0.82, 0.97, 0.03),
            Sky::Mixed => (0.35, 0.75, 0.5),
            Sky::Overcast => (0.08, 0.30, 0.3),
        }
    }
}

/// Chances of an overcast and of a mixed day by month (the rest are clear): central German
/// climate, where most winter days are overcast.
const SKY_CHANCES: [(f64, f64); 12] = [
    (0.55, 0.33),
    (0.45, 0.35),
    (0.32, 0.38),
    (0.15, 0.38),
    (0.16, 0.40),
    (0.16, 0.40),
    (0.15, 0.39),
    (0.17, 0.40),
    (0.25, 0.40),
    (0.42, 0.36),
    (0.57, 0.31),
    (0.65, 0.27),
];

/// A site's weather on one day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DayWeather {
    pub sky: Sky,
    /// Share of the clear-sky energy that gets through on average.
    pub clearness: f64,
}

/// The day a PV system counts in: days since 1970-01-01 in local mean solar time, so a day's
/// generation never straddles two days.
pub fn solar_day(longitude_deg: f64, t: UnixSeconds) -> i64 {
    (t.0 + (longitude_deg * 240.0) as i64).div_euclid(86_400)
}

/// The weather over `site` on `solar_day` (see [`solar_day`]): the same for every meter of the site.
pub fn day_weather(seed: u64, site: u32, solar_day: i64) -> DayWeather {
    let draws = draws(b"wattle.sim.pv.day", seed, u64::from(site), solar_day);
    let (overcast_chance, mixed_chance) = SKY_CHANCES[date_of_day(solar_day).month0() as usize];
    let pick = unit(draws[0]);
    let sky = if pick < overcast_chance {
        Sky::Overcast
    } else if pick < overcast_chance + mixed_chance {
        Sky::Mixed
    } else {
        Sky::Clear
    };
    let (lowest, highest, _) = sky.clearness();
    DayWeather { sky, clearness: lowest + (highest - lowest) * unit(draws[1]) }
}

/// PV energy in Wh of a `kwp` system in UTC quarter-hour number `quarter`.
pub fn quarter_generation_wh(
    kwp: f64,
    latitude_deg: f64,
    longitude_deg: f64,
    seed: u64,
    site: u32,
    quarter: i64,
) -> f64 {
    let midpoint = UnixSeconds(quarter * QUARTER_HOUR_S + QUARTER_HOUR_S / 2);
    let irradiance_w_per_m2 = clear_sky_plane_w_per_m2(latitude_deg, longitude_deg, midpoint);
    if irradiance_w_per_m2 <= 0.0 {
        return 0.0;
    }
    let weather = day_weather(seed, site, solar_day(longitude_deg, midpoint));
    let (_, _, variability) = weather.sky.clearness();
    let passing = unit(draws(b"wattle.sim.pv.quarter", seed, u64::from(site), quarter)[0]);
    let clearness = (weather.clearness * (1.0 + variability * (2.0 * passing - 1.0))).clamp(0.0, 1.0);
    // 1 kWp delivers 1 kW at 1,000 W/m²; a quarter-hour is a quarter of an hour.
    kwp * irradiance_w_per_m2 * PERFORMANCE_RATIO * clearness / 4.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> UnixSeconds {
        UnixSeconds(DateTime::parse_from_rfc3339(text).expect("RFC 3339").timestamp())
    }

    #[test]
    fn the_sun_is_where_the_almanac_says() {
        // Kassel at the June solstice: noon elevation 90 − 51.3 + 23.44 = 62.1°.
        let noon = solar_noon(9.5, NaiveDate::from_ymd_opt(2025, 6, 21).expect("date"));
        let sun = solar_position(51.3, 9.5, noon);
        assert!((sun.elevation_deg - 62.1).abs() < 0.3, "{sun:?}");
        assert!(sun.hour_angle_rad.abs() < 0.002, "hour angle 0 at solar noon: {sun:?}");
        // 11:22 UTC mean solar noon at 9.5° E, plus 1.7 minutes of equation of time in June.
        let expected = at("2025-06-21T11:23:40Z").0;
        assert!((noon.0 - expected).abs() < 60, "solar noon {}", noon.0 - expected);
        // Equation of time: about −14.2 min on 11 February, +16.4 min on 3 November.
        assert!((solar_position(0.0, 0.0, at("2025-02-11T12:00:00Z")).equation_of_time_min + 14.2).abs() < 0.5);
        assert!((solar_position(0.0, 0.0, at("2025-11-03T12:00:00Z")).equation_of_time_min - 16.4).abs() < 0.5);
        // Night is dark; a clear noon in June gives about 1 kW/m² on a 35° roof.
        assert_eq!(clear_sky_plane_w_per_m2(51.3, 9.5, at("2025-06-21T23:00:00Z")), 0.0);
        let june_noon = clear_sky_plane_w_per_m2(51.3, 9.5, noon);
        assert!((850.0..=1_100.0).contains(&june_noon), "{june_noon} W/m²");
    }

    #[test]
    fn winters_are_mostly_overcast() {
        let count = |month: u32, sky: Sky| {
            (0..3_650)
                .filter(|day| {
                    let date = date_of_day(*day);
                    date.month() == month && day_weather(3, 0, *day).sky == sky
                })
                .count() as f64
        };
        let december_overcast =
            count(12, Sky::Overcast) / (count(12, Sky::Overcast) + count(12, Sky::Mixed) + count(12, Sky::Clear));
        let june_clear = count(6, Sky::Clear) / (count(6, Sky::Overcast) + count(6, Sky::Mixed) + count(6, Sky::Clear));
        assert!(december_overcast > 0.55, "{december_overcast}");
        assert!((0.3..0.6).contains(&june_clear), "{june_clear}");
    }
}
