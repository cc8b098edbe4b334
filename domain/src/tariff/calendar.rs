//! Local time of a settlement interval: its local start (chrono-tz, the pinned tzdb), its day
//! kind, season and time-of-use window.
//!
//! Rule: an interval is classified by the local date-time of its UTC start. On the autumn DST
//! day the repeated local hour (02:00–03:00 in Europe/Berlin) is priced twice by the same
//! window, giving 100 quarter-hours; on the spring day the skipped hour has no intervals (92).

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Timelike, Weekday};
use chrono_tz::Tz;

use crate::ids::UnixSeconds;

use super::model::{DayKind, MonthDay, Season, Window};

/// The local date-time of a UTC instant in a zone; `None` beyond chrono's range.
pub fn local_time(zone: Tz, at: UnixSeconds) -> Option<NaiveDateTime> {
    DateTime::from_timestamp(at.0, 0).map(|utc| utc.with_timezone(&zone).naive_local())
}

/// The UTC instant of a local date-time. An ambiguous local time (the repeated autumn hour) is
/// its earlier instant; a skipped one (the spring gap) is the first instant after the gap,
/// found by stepping forward a quarter-hour at a time (gaps are at most a few hours).
pub fn utc_of_local(zone: Tz, local: NaiveDateTime) -> Option<UnixSeconds> {
    use chrono::TimeZone as _;
    let mut probe = local;
    for _ in 0..=16 {
        if let Some(instant) = zone.from_local_datetime(&probe).earliest() {
            return Some(UnixSeconds(instant.timestamp()));
        }
        probe = probe.checked_add_signed(chrono::Duration::minutes(15))?;
    }
    None
}

/// The day kind of a local date: a listed holiday, else Saturday/Sunday, else a weekday.
pub fn day_kind(date: NaiveDate, holidays: &std::collections::BTreeSet<NaiveDate>) -> DayKind {
    if holidays.contains(&date) {
        DayKind::Holiday
    } else if matches!(date.weekday(), Weekday::Sat | Weekday::Sun) {
        DayKind::Weekend
    } else {
        DayKind::Weekday
    }
}

/// Whether a month-day is in a season's inclusive range (which may wrap the year end).
pub fn in_season(season: &Season, day: MonthDay) -> bool {
    if season.from <= season.to {
        season.from <= day && day <= season.to
    } else {
        day >= season.from || day <= season.to
    }
}

/// The season of a month-day (validation guarantees exactly one).
pub fn season_index(seasons: &[Season], day: MonthDay) -> Option<usize> {
    seasons.iter().position(|season| in_season(season, day))
}

/// Whether a window covers the quarter-hour starting at `minute_of_day` on a day kind.
pub fn window_covers(window: &Window, kind: DayKind, minute_of_day: u32) -> bool {
    if !window.days.contains(&kind) {
        return false;
    }
    let (from, to) = (window.from.minute_of_day(), window.to.minute_of_day());
    if from < to {
        from <= minute_of_day && minute_of_day < to
    } else {
        minute_of_day >= from || minute_of_day < to
    }
}

/// The window of a season covering a quarter-hour (validation guarantees exactly one).
pub fn window_index(season: &Season, kind: DayKind, minute_of_day: u32) -> Option<usize> {
    season.windows.iter().position(|window| window_covers(window, kind, minute_of_day))
}

/// Month-day and minute of day of a local date-time.
pub fn month_day_minute(local: NaiveDateTime) -> (MonthDay, u32) {
    (MonthDay { month: local.month(), day: local.day() }, local.hour() * 60 + local.minute())
}
