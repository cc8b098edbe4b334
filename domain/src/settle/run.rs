//! The whole chain for one meter's period: price every interval, post it, close the period.
//! The ledger runs the same steps spread over apply (intervals) and the close transaction; this
//! function is what tests, billing's previews and a timing loop call.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use crate::ids::{PartyId, UnixSeconds};
use crate::tariff::{price_interval, IntervalEnergy, PricedInterval, PricingError, TariffVersion};

use super::close::{close_period, CloseError, Closed};
use super::period::BillingPeriod;
use super::posting::{interval_postings, Posting, Run};

/// A settled period: the priced intervals, their postings and the close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodSettlement {
    pub priced: Vec<PricedInterval>,
    pub interval_postings: Vec<Posting>,
    pub closed: Closed,
}

impl PeriodSettlement {
    /// Every posting of the period, interval postings first.
    pub fn postings(&self) -> impl Iterator<Item = &Posting> {
        self.interval_postings.iter().chain(&self.closed.postings)
    }
}

/// Why a period cannot be settled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    #[error(transparent)]
    Pricing(#[from] PricingError),
    #[error(transparent)]
    Close(#[from] CloseError),
}

/// Prices each interval (with its dynamic price from `prices`, if any), posts it under `run`,
/// and closes the period under the same run. Intervals may come in any order.
pub fn settle_period(
    tariff: &TariffVersion,
    meter: &str,
    customer: &PartyId,
    period: &BillingPeriod,
    intervals: &[IntervalEnergy],
    prices: &BTreeMap<UnixSeconds, Decimal>,
    run: Run,
) -> Result<PeriodSettlement, SettleError> {
    let mut priced = Vec::with_capacity(intervals.len());
    let mut postings = Vec::new();
    for energy in intervals {
        let interval = price_interval(tariff, customer, *energy, prices.get(&energy.start).copied())?;
        postings.extend(interval_postings(meter, customer, energy.start, run, &interval.lines, tariff.currency));
        priced.push(interval);
    }
    let closed = close_period(tariff, customer, period, &priced, run)?;
    Ok(PeriodSettlement { priced, interval_postings: postings, closed })
}
