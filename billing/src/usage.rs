//! Usage and cost over `[from, to)` (`GET /v1/customers/{id}/usage`), grouped by interval, hour,
//! day or month in the customer's local time (the ledger stamps each interval with its local
//! start), with cursor pagination. Costs are the ledger's full-precision interval charges summed
//! per group, then rounded once for presentation (the unrounded sum is given too). Sans-IO.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::read_model::IntervalRow;

/// Groups one page returns by default and at most.
pub const PAGE_SIZE_DEFAULT: u32 = 500;
pub const PAGE_SIZE_MAX: u32 = 3_000;
/// Longest range one request may ask for: 366 days.
pub const RANGE_MAX_SECONDS: i64 = 366 * 86_400;
/// Most intervals one page reads: the longest range, 25-hour days included.
pub const INTERVALS_PER_PAGE_MAX: u64 = (RANGE_MAX_SECONDS as u64 / 900) + 400;

/// How intervals are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    #[default]
    Interval,
    Hour,
    Day,
    Month,
}

impl GroupBy {
    /// The group of an interval by its local start (`YYYY-MM-DDTHH:MM:SS`). An interval is its
    /// own group (by UTC start); an hour carries its UTC offset, so the hour a DST change repeats
    /// is two hours (`2026-10-25T02+02:00`, then `2026-10-25T02+01:00`), as the clock on the wall
    /// showed them.
    fn key(self, row: &IntervalRow) -> String {
        let local = row.local_start.as_str();
        match self {
            GroupBy::Interval => row.start_s.to_string(),
            GroupBy::Hour => format!("{}{}", local.get(..13).unwrap_or(local), utc_offset(row)),
            GroupBy::Day => local.get(..10).unwrap_or(local).to_string(),
            GroupBy::Month => local.get(..7).unwrap_or(local).to_string(),
        }
    }
}

/// The UTC offset of an interval's local start, `+HH:MM`, from its local and UTC starts.
fn utc_offset(row: &IntervalRow) -> String {
    let Ok(local) = chrono::NaiveDateTime::parse_from_str(&row.local_start, "%Y-%m-%dT%H:%M:%S") else {
        return String::new();
    };
    let minutes = (local.and_utc().timestamp() - row.start_s) / 60;
    let sign = if minutes < 0 { '-' } else { '+' };
    format!("{sign}{:02}:{:02}", minutes.abs() / 60, minutes.abs() % 60)
}

/// The query of the usage endpoint.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Inclusive start: RFC 3339 or UTC seconds.
    #[param(example = "2026-01-31T00:00:00Z")]
    pub from: Option<String>,
    /// Exclusive end: RFC 3339 or UTC seconds.
    #[param(example = "2026-02-02T00:00:00Z")]
    pub to: Option<String>,
    #[serde(default)]
    pub group_by: GroupBy,
    pub page_size: Option<u32>,
    /// From the previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// `csv` for CSV, `xml` for Green Button (ESPI) XML (15-minute intervals only), instead of JSON.
    pub format: Option<String>,
}

/// Why a usage query is refused (422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("bad_time: {0:?} is neither RFC 3339 nor UTC seconds")]
    BadTime(String),
    #[error("missing_range: give from and to")]
    MissingRange,
    #[error("empty_range: to must be after from")]
    EmptyRange,
    #[error("range_too_long: at most {} days per request", RANGE_MAX_SECONDS / 86_400)]
    RangeTooLong,
    #[error("page_size_out_of_range: 1 to {PAGE_SIZE_MAX}")]
    PageSize,
    #[error("bad_cursor: use next_cursor from the previous page")]
    BadCursor,
}

impl UsageError {
    pub fn code(&self) -> &'static str {
        match self {
            UsageError::BadTime(_) => "bad_time",
            UsageError::MissingRange => "missing_range",
            UsageError::EmptyRange => "empty_range",
            UsageError::RangeTooLong => "range_too_long",
            UsageError::PageSize => "page_size_out_of_range",
            UsageError::BadCursor => "bad_cursor",
        }
    }
}

fn parse_time(text: &str) -> Result<i64, UsageError> {
    if let Ok(seconds) = i64::from_str(text) {
        return Ok(seconds);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|time| time.timestamp())
        .map_err(|_| UsageError::BadTime(text.chars().take(64).collect()))
}

/// A checked query: the UTC range to read (from the cursor on), the grouping and page size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: i64,
    pub to: i64,
    pub read_from: i64,
    pub group_by: GroupBy,
    pub page_size: u32,
}

pub fn check(query: &UsageQuery) -> Result<Range, UsageError> {
    let (Some(from), Some(to)) = (&query.from, &query.to) else { return Err(UsageError::MissingRange) };
    let (from, to) = (parse_time(from)?, parse_time(to)?);
    if to <= from {
        return Err(UsageError::EmptyRange);
    }
    if to - from > RANGE_MAX_SECONDS {
        return Err(UsageError::RangeTooLong);
    }
    let page_size = query.page_size.unwrap_or(PAGE_SIZE_DEFAULT);
    if !(1..=PAGE_SIZE_MAX).contains(&page_size) {
        return Err(UsageError::PageSize);
    }
    let read_from = match &query.cursor {
        None => from,
        Some(cursor) => {
            let at = cursor.strip_prefix('s').and_then(|s| i64::from_str(s).ok()).ok_or(UsageError::BadCursor)?;
            if at < from || at >= to {
                return Err(UsageError::BadCursor);
            }
            at
        }
    };
    Ok(Range { from, to, read_from, group_by: query.group_by, page_size })
}

/// One group of intervals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageGroup {
    /// The group: UTC start seconds (interval), `YYYY-MM-DDTHH±HH:MM` (hour, with its UTC
    /// offset), `YYYY-MM-DD` (day) or `YYYY-MM` (month), local time.
    pub key: String,
    /// UTC start of the group's first interval and local start of it.
    pub start: i64,
    pub local_start: String,
    pub intervals: u32,
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String)]
    pub import_kwh: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String)]
    pub export_kwh: Decimal,
    /// Net cost (negative: a credit), rounded once, half away from zero, to 2 places.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String)]
    pub cost: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String)]
    pub cost_unrounded: Decimal,
    /// Intervals by how their value was obtained.
    pub quality: std::collections::BTreeMap<String, u32>,
    /// Whether every interval of the group is covered by readings in full.
    pub complete: bool,
    /// The tariff windows that priced the group's imported energy (`flat`, `dynamic`, or
    /// `SEASON.WINDOW` of a time-of-use tariff), in order of first use.
    pub windows: Vec<String>,
    /// Price per kWh of imported energy: the one price if every interval had the same, else the
    /// mean weighted by the energy imported (unweighted if none was), to 5 places. `None` if no
    /// interval of the group has an energy price.
    #[serde(with = "rust_decimal::serde::str_option")]
    #[schema(value_type = Option<String>)]
    pub energy_price: Option<Decimal>,
}

/// A page of usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsagePage {
    pub customer_id: String,
    pub from: i64,
    pub to: i64,
    pub group_by: GroupBy,
    pub currency: String,
    pub groups: Vec<UsageGroup>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
    pub ledger_index: u64,
    pub as_of: String,
}

/// Groups `rows` (in start order, all from `range.read_from` to `range.to`): at most
/// `range.page_size` groups, and the cursor of the next group if more follow.
pub fn group(rows: &[IntervalRow], range: &Range, minor_digits: u32) -> (Vec<UsageGroup>, Option<String>) {
    let mut groups: Vec<UsageGroup> = Vec::new();
    // Per group: each interval's energy price and the Wh it priced.
    let mut prices: Vec<Vec<(Decimal, u64)>> = Vec::new();
    let mut last_key = String::new();
    for row in rows {
        let key = range.group_by.key(row);
        if groups.is_empty() || key != last_key {
            if groups.len() == range.page_size as usize {
                return (finish(groups, &prices, minor_digits), Some(format!("s{}", row.start_s)));
            }
            groups.push(UsageGroup {
                key: key.clone(),
                start: row.start_s,
                local_start: row.local_start.clone(),
                intervals: 0,
                import_kwh: Decimal::ZERO,
                export_kwh: Decimal::ZERO,
                cost: Decimal::ZERO,
                cost_unrounded: Decimal::ZERO,
                quality: Default::default(),
                complete: true,
                windows: Vec::new(),
                energy_price: None,
            });
            prices.push(Vec::new());
            last_key = key;
        }
        let group = groups.last_mut().expect("a group was just pushed");
        group.intervals += 1;
        group.import_kwh += Decimal::from(row.import_wh) / Decimal::from(1000u32);
        group.export_kwh += Decimal::from(row.export_wh) / Decimal::from(1000u32);
        group.cost_unrounded += row.charge;
        *group.quality.entry(row.quality.clone()).or_default() += 1;
        group.complete &= row.complete;
        if let Some(window) = &row.energy_window {
            if !group.windows.contains(window) {
                group.windows.push(window.clone());
            }
        }
        if let (Some(price), Some(group_prices)) = (row.energy_price, prices.last_mut()) {
            group_prices.push((price, row.import_wh));
        }
    }
    (finish(groups, &prices, minor_digits), None)
}

/// Most decimal places of a group's mean energy price.
const PRICE_PLACES: u32 = 5;

fn mean_price(prices: &[(Decimal, u64)]) -> Option<Decimal> {
    let (first, _) = prices.first()?;
    if prices.iter().all(|(price, _)| price == first) {
        return Some(first.normalize());
    }
    let wh: u64 = prices.iter().map(|(_, wh)| wh).sum();
    let mean = if wh > 0 {
        prices.iter().map(|(price, wh)| price * Decimal::from(*wh)).sum::<Decimal>() / Decimal::from(wh)
    } else {
        prices.iter().map(|(price, _)| price).sum::<Decimal>() / Decimal::from(prices.len())
    };
    Some(mean.round_dp_with_strategy(PRICE_PLACES, rust_decimal::RoundingStrategy::MidpointAwayFromZero).normalize())
}

fn finish(mut groups: Vec<UsageGroup>, prices: &[Vec<(Decimal, u64)>], minor_digits: u32) -> Vec<UsageGroup> {
    for (group, group_prices) in groups.iter_mut().zip(prices) {
        group.energy_price = mean_price(group_prices);
        group.cost = group
            .cost_unrounded
            .round_dp_with_strategy(minor_digits, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
        group.cost_unrounded = group.cost_unrounded.normalize();
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(start_s: i64, local: &str, import_wh: u64, charge: &str) -> IntervalRow {
        IntervalRow {
            start_s,
            local_start: local.into(),
            import_wh,
            export_wh: 0,
            quality: "actual".into(),
            complete: true,
            charge: Decimal::from_str(charge).expect("decimal"),
            ..IntervalRow::default()
        }
    }

    fn query(from: &str, to: &str, group_by: GroupBy) -> UsageQuery {
        UsageQuery { from: Some(from.into()), to: Some(to.into()), group_by, ..UsageQuery::default() }
    }

    #[test]
    fn groups_sum_exactly_and_round_once() {
        // 25 October 2026, Europe/Berlin: 02:00–03:00 local happens twice (CEST, then CET).
        let rows = [
            row(1_792_886_400, "2026-10-25T02:00:00", 100, "0.0305"),
            row(1_792_887_300, "2026-10-25T02:15:00", 100, "0.0305"),
            row(1_792_890_000, "2026-10-25T02:00:00", 100, "0.0305"),
            row(1_792_890_900, "2026-10-25T02:15:00", 100, "0.0305"),
            row(1_792_900_800, "2026-10-25T05:00:00", 50, "-0.004"),
        ];
        let range = check(&query("2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z", GroupBy::Hour)).expect("range");
        let (groups, next) = group(&rows, &range, 2);
        assert_eq!(next, None);
        assert_eq!(groups.len(), 3, "the hour the clocks repeat is two hours");
        assert_eq!((groups[0].intervals, groups[0].cost_unrounded), (2, Decimal::from_str("0.061").expect("d")));
        assert_eq!(groups[0].cost, Decimal::from_str("0.06").expect("d"));
        assert_eq!((groups[0].key.as_str(), groups[1].key.as_str()), ("2026-10-25T02+02:00", "2026-10-25T02+01:00"));
        let (day, _) = group(&rows, &check(&query("1792879200", "1792965600", GroupBy::Day)).expect("range"), 2);
        // One rounding of the day's full-precision sum, 0.118.
        assert_eq!(
            (day.len(), day[0].cost, day[0].import_kwh),
            (1, Decimal::from_str("0.12").expect("d"), Decimal::from_str("0.45").expect("d"))
        );
        let (intervals, _) = group(&rows, &check(&query("1792879200", "1792965600", GroupBy::Interval)).expect("r"), 2);
        assert_eq!(intervals.len(), 5, "by interval, the repeated hour's intervals stay apart");
    }

    #[test]
    fn groups_name_their_windows_and_price_energy_by_the_kwh_it_priced() {
        let priced = |start_s: i64, import_wh: u64, window: &str, price: &str| IntervalRow {
            energy_window: Some(window.into()),
            energy_price: Some(Decimal::from_str(price).expect("decimal")),
            ..row(start_s, "", import_wh, "0")
        };
        let rows = [
            priced(1_767_225_600, 300, "winter.peak", "0.30"),
            priced(1_767_226_500, 100, "winter.off", "0.10"),
            priced(1_767_227_400, 0, "winter.off", "0.10"),
        ];
        let range = check(&query("1767225600", "1767312000", GroupBy::Day)).expect("range");
        let (day, _) = group(&rows, &range, 2);
        assert_eq!(day[0].windows, ["winter.peak", "winter.off"]);
        // (0.30 × 300 + 0.10 × 100 + 0.10 × 0) / 400 Wh = 0.25.
        assert_eq!(day[0].energy_price, Some(Decimal::from_str("0.25").expect("d")));
        let (intervals, _) = group(&rows, &check(&query("1767225600", "1767312000", GroupBy::Interval)).expect("r"), 2);
        assert_eq!(
            intervals[2].energy_price,
            Some(Decimal::from_str("0.1").expect("d")),
            "unweighted: nothing imported"
        );
        let unpriced = [row(1_767_225_600, "", 100, "0")];
        assert_eq!(group(&unpriced, &range, 2).0[0].energy_price, None);
    }

    #[test]
    fn pages_resume_at_the_cursor_without_gaps() {
        let rows: Vec<IntervalRow> =
            (0..10).map(|i| row(1_000_800 + i * 900, &format!("1970-01-12T14:{:02}:00", i), 10, "0.01")).collect();
        let mut range =
            check(&UsageQuery { page_size: Some(4), ..query("1000800", "1009800", GroupBy::Interval) }).expect("range");
        let (first, next) = group(&rows, &range, 2);
        assert_eq!(first.len(), 4);
        let cursor = next.expect("more follow");
        range = check(&UsageQuery {
            page_size: Some(4),
            cursor: Some(cursor.clone()),
            ..query("1000800", "1009800", GroupBy::Interval)
        })
        .expect("cursor");
        assert_eq!(range.read_from, 1_000_800 + 4 * 900);
        let rest: Vec<IntervalRow> = rows.iter().filter(|r| r.start_s >= range.read_from).cloned().collect();
        let (second, _) = group(&rest, &range, 2);
        assert_eq!(second[0].start, 1_000_800 + 4 * 900);
    }

    #[test]
    fn bad_queries_are_refused_with_a_reason() {
        let code = |q: UsageQuery| check(&q).err().map(|e| e.code());
        assert_eq!(code(UsageQuery::default()), Some("missing_range"));
        assert_eq!(code(query("yesterday", "1", GroupBy::Day)), Some("bad_time"));
        assert_eq!(code(query("10", "10", GroupBy::Day)), Some("empty_range"));
        assert_eq!(code(query("0", "40000000", GroupBy::Day)), Some("range_too_long"));
        assert_eq!(
            code(UsageQuery { page_size: Some(0), ..query("0", "10", GroupBy::Day) }),
            Some("page_size_out_of_range")
        );
        assert_eq!(code(UsageQuery { cursor: Some("x".into()), ..query("0", "10", GroupBy::Day) }), Some("bad_cursor"));
        assert_eq!(
            code(UsageQuery { cursor: Some("s99".into()), ..query("0", "10", GroupBy::Day) }),
            Some("bad_cursor")
        );
    }
}
