//! VEE at period close (issue 13; the rules are `domain::settle::estimate_interval`, documented in
//! docs/tariffs.md, "Estimation"). Before a period closes, each of its intervals still without a
//! value is estimated: linearly between the registers a meter read at the nearest edges before
//! and after it (at most 6 h apart), else as the same interval a week earlier if that one was
//! read (estimates are not chained); otherwise it stays
//! missing and the statement says how complete it is. An estimate is priced and posted like an
//! actual value (postings of subject `estimate/{customer}`, run 0) and keeps its quality and rule.
//! An actual reading arriving later replaces it: `settle.rs` reverses the estimate under run 1
//! and records the value as `corrected`, on the next statement if the period has closed.

use std::collections::BTreeMap;

use domain::ids::UnixSeconds;
use domain::limits::{SETTLEMENT_INTERVAL_SECONDS, VEE_LINEAR_SPAN_SECONDS_MAX};
use domain::settle::{estimate_interval, interval_postings, Quality, RegisterSample, Run};
use domain::tariff::{price_interval, EnergyPrice};

use crate::settle::{
    dynamic_price, estimate_subject, get_json, key_interval, post, put_json, IntervalRecord, PeriodRecord,
};
use crate::state::{Overlay, Table};
use crate::tariffs;

/// Estimates every interval of `record`'s period that has no value yet; returns how many. Reads
/// the customer's records from a week before the period to 6 h after it once (a state read per
/// interval, ~3,700 for a month), then works in memory.
pub(crate) fn estimate_missing(state: &mut Overlay<'_>, record: &PeriodRecord) -> Result<u32, String> {
    let customer = &record.customer;
    let Some(first) = tariffs::version(state, &record.tariff, record.tariff_from) else {
        return Err(format!("no_tariff: {} from {} is not published", record.tariff, record.tariff_from));
    };
    let zone = first.time_zone.tz();
    let mut known: BTreeMap<i64, IntervalRecord> = BTreeMap::new();
    let mut at = record.period.start.0 - WEEK_SECONDS;
    while at < record.period.end.0 + VEE_LINEAR_SPAN_SECONDS_MAX {
        if let Some(interval) =
            get_json::<IntervalRecord>(state, Table::Private, &key_interval(customer, UnixSeconds(at)))
        {
            known.insert(at, interval);
        }
        at += SETTLEMENT_INTERVAL_SECONDS;
    }
    let mut postings = Vec::new();
    let mut estimated = 0;
    let mut start = record.period.start.0;
    while start < record.period.end.0 {
        let at = UnixSeconds(start);
        start += SETTLEMENT_INTERVAL_SECONDS;
        if known.contains_key(&at.0) {
            continue;
        }
        let (before, after) = edges(&known, at);
        // A week earlier, if that value was read (an estimate is never the base of another).
        let week = known
            .get(&(at.0 - WEEK_SECONDS))
            .filter(|earlier| earlier.quality != Quality::Estimated)
            .map(|earlier| earlier.priced.energy);
        let Some(value) = estimate_interval(at, before, after, week) else { continue };
        let Some(local) = domain::tariff::calendar::local_time(zone, at) else { continue };
        let Some(tariff) = tariffs::version_at(state, &record.tariff, local) else { continue };
        let price = match tariff.energy {
            EnergyPrice::Dynamic { .. } => dynamic_price(state, &tariff.id, at),
            _ => None,
        };
        let priced = price_interval(&tariff, customer, value.energy, price).map_err(|error| error.to_string())?;
        postings.extend(interval_postings(
            &estimate_subject(customer),
            customer,
            at,
            Run(0),
            &priced.lines,
            tariff.currency,
        ));
        let estimate = IntervalRecord {
            priced,
            meters: Default::default(),
            covered_s: 0,
            readings: 0,
            quality: Quality::Estimated,
            rule: value.rule,
            tariff: tariff.id.clone(),
            tariff_from: tariff.valid_from,
            period_start: record.period.start,
            samples: Default::default(),
        };
        put_json(state, Table::Private, key_interval(customer, at), &estimate);
        known.insert(at.0, estimate);
        estimated += 1;
    }
    let balances = post(state, &postings).map_err(|result| result.code().to_string())?;
    for (key, balance) in balances {
        put_json(state, Table::Private, key, &balance);
    }
    Ok(estimated)
}

const WEEK_SECONDS: i64 = 7 * 86_400;

/// One meter's nearest register reads before and after the interval at `at`, within the linear
/// rule's span, from the actual records around it (estimates carry no reads).
fn edges(known: &BTreeMap<i64, IntervalRecord>, at: UnixSeconds) -> (Option<RegisterSample>, Option<RegisterSample>) {
    let end = at.0 + SETTLEMENT_INTERVAL_SECONDS;
    let actual = |(_, record): &(&i64, &IntervalRecord)| record.quality != Quality::Estimated;
    let Some((_, earlier)) = known.range(at.0 - VEE_LINEAR_SPAN_SECONDS_MAX..at.0).rev().find(actual) else {
        return (None, None);
    };
    for (meter, samples) in &earlier.samples {
        let Some(before) = samples.iter().filter(|sample| sample.at.0 <= at.0).max_by_key(|sample| sample.at) else {
            continue;
        };
        let after = known
            .range(end..=before.at.0 + VEE_LINEAR_SPAN_SECONDS_MAX)
            .filter(|entry| actual(entry))
            .find_map(|(_, later)| {
                later
                    .samples
                    .get(meter)?
                    .iter()
                    .filter(|sample| sample.at.0 >= end)
                    .min_by_key(|sample| sample.at)
                    .copied()
            });
        if let Some(after) = after {
            return (Some(*before), Some(after));
        }
    }
    (None, None)
}
