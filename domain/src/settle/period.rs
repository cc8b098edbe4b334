//! Billing periods: monthly, from a customer's billing day at local midnight to the same day of
//! the next month. Billing days are 1 to 28 so that every month has one (no "31st of February"
//! rule to document). The period's instants are UTC; its standing-charge days are local days,
//! so a period across a DST change still has one standing charge per calendar day.

use chrono::{Datelike, Months, NaiveDate};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::ids::UnixSeconds;
use crate::tariff::calendar::{local_time, utc_of_local};

/// One billing period: local dates `[start_date, end_date)` and their UTC instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BillingPeriod {
    pub start_date: NaiveDate,
    pub end_date: NaiveDate,
    /// UTC instant of local midnight starting `start_date` (inclusive).
    pub start: UnixSeconds,
    /// UTC instant of local midnight starting `end_date` (exclusive).
    pub end: UnixSeconds,
}

/// Why a period cannot be formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error("billing_day_invalid: {0} is not a day from 1 to 28")]
    BillingDay(u32),
    #[error("period_out_of_range: no local time for {0}")]
    OutOfRange(i64),
}

impl BillingPeriod {
    /// The period containing instant `at` for a customer billed on `billing_day` in `zone`.
    pub fn containing(zone: Tz, billing_day: u32, at: UnixSeconds) -> Result<BillingPeriod, PeriodError> {
        if !(1..=28).contains(&billing_day) {
            return Err(PeriodError::BillingDay(billing_day));
        }
        let out = || PeriodError::OutOfRange(at.0);
        let local = local_time(zone, at).ok_or_else(out)?.date();
        let this_month = NaiveDate::from_ymd_opt(local.year(), local.month(), billing_day).ok_or_else(out)?;
        let start_date = if local >= this_month {
            this_month
        } else {
            this_month.checked_sub_months(Months::new(1)).ok_or_else(out)?
        };
        Self::starting(zone, start_date).ok_or_else(out)
    }

    /// The period starting on local date `start_date`, one month long.
    pub fn starting(zone: Tz, start_date: NaiveDate) -> Option<BillingPeriod> {
        let end_date = start_date.checked_add_months(Months::new(1))?;
        Some(BillingPeriod {
            start_date,
            end_date,
            start: utc_of_local(zone, start_date.and_hms_opt(0, 0, 0)?)?,
            end: utc_of_local(zone, end_date.and_hms_opt(0, 0, 0)?)?,
        })
    }

    /// A period over local dates `[start_date, end_date)`: a customer's first period after a
    /// move-in or final period up to a move-out, shorter than a month.
    pub fn between(zone: Tz, start_date: NaiveDate, end_date: NaiveDate) -> Option<BillingPeriod> {
        if end_date <= start_date {
            return None;
        }
        Some(BillingPeriod {
            start_date,
            end_date,
            start: utc_of_local(zone, start_date.and_hms_opt(0, 0, 0)?)?,
            end: utc_of_local(zone, end_date.and_hms_opt(0, 0, 0)?)?,
        })
    }

    /// The following period.
    pub fn next(&self, zone: Tz) -> Option<BillingPeriod> {
        Self::starting(zone, self.end_date)
    }

    /// Local calendar days in the period (the standing charge's quantity).
    pub fn local_days(&self) -> u32 {
        // A month is 28 to 31 days.
        (self.end_date - self.start_date).num_days() as u32
    }

    /// Whether a UTC instant lies in `[start, end)`.
    pub fn contains(&self, at: UnixSeconds) -> bool {
        self.start <= at && at < self.end
    }

    /// Number of 15-minute intervals in the period (2,976 in a 31-day month without DST change).
    pub fn intervals_count(&self) -> i64 {
        (self.end.0 - self.start.0) / crate::limits::SETTLEMENT_INTERVAL_SECONDS
    }
}
