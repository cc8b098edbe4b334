//! The meter readings an invoice states: each meter's import and export registers at the start
//! and end of what the period settled, and how each value was obtained (issue 16; what law and
//! customers expect on an energy invoice).
//!
//! A register value comes from the readings the meter signed (the interval records keep every
//! register value read at an interval's edges). Where the period's first or last quarter-hours
//! were estimated (no reading), the value at the period's edge is the nearest value read, less or
//! plus the estimated energy in between, and says `estimated`. Only a period with one meter is
//! extended so; with a meter exchange each meter states the first and last values it was read at.
//! Sans-IO.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{MeterId, UnixSeconds};
use crate::limits::SETTLEMENT_INTERVAL_SECONDS;

use super::mapping::RegisterSample;
use super::period::BillingPeriod;
use super::vee::Quality;

/// One register value: import and export Wh at `at` (UTC seconds), and how it was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRead {
    pub at: i64,
    pub import_wh: u64,
    pub export_wh: u64,
    pub how: Quality,
}

/// A meter's first and last register values in the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterReads {
    pub meter: MeterId,
    pub start: RegisterRead,
    pub end: RegisterRead,
}

/// What the reads need of one settled interval of the period.
#[derive(Debug, Clone, Copy)]
pub struct SettledInterval<'a> {
    pub start: UnixSeconds,
    pub import_wh: u64,
    pub export_wh: u64,
    pub quality: Quality,
    /// Register values read at the interval's edges, per meter.
    pub samples: &'a BTreeMap<MeterId, Vec<RegisterSample>>,
}

/// Each meter's start and end reads over `period`'s settled `intervals` (any order), in meter
/// order. Meters without any register value read in the period are not listed.
pub fn register_reads(period: &BillingPeriod, intervals: &[SettledInterval<'_>]) -> Vec<MeterReads> {
    let mut by_meter: BTreeMap<&MeterId, Vec<(RegisterSample, Quality)>> = BTreeMap::new();
    for interval in intervals {
        for (meter, samples) in interval.samples {
            by_meter.entry(meter).or_default().extend(samples.iter().map(|sample| (*sample, interval.quality)));
        }
    }
    let single = by_meter.len() == 1;
    let by_start: BTreeMap<i64, &SettledInterval<'_>> =
        intervals.iter().map(|interval| (interval.start.0, interval)).collect();
    by_meter
        .into_iter()
        .filter_map(|(meter, samples)| {
            let first = samples.iter().min_by_key(|(sample, _)| sample.at)?;
            let last = samples.iter().max_by_key(|(sample, _)| sample.at)?;
            let read = |(sample, how): &(RegisterSample, Quality)| RegisterRead {
                at: sample.at.0,
                import_wh: sample.import_wh,
                export_wh: sample.export_wh,
                how: *how,
            };
            let (mut start, mut end) = (read(first), read(last));
            if single {
                if let Some((import_wh, export_wh)) = estimated_between(&by_start, period.start.0, start.at) {
                    start = RegisterRead {
                        at: period.start.0,
                        import_wh: start.import_wh.saturating_sub(import_wh),
                        export_wh: start.export_wh.saturating_sub(export_wh),
                        how: Quality::Estimated,
                    };
                }
                if let Some((import_wh, export_wh)) = estimated_between(&by_start, end.at, period.end.0) {
                    end = RegisterRead {
                        at: period.end.0,
                        import_wh: end.import_wh.saturating_add(import_wh),
                        export_wh: end.export_wh.saturating_add(export_wh),
                        how: Quality::Estimated,
                    };
                }
            }
            Some(MeterReads { meter: meter.clone(), start, end })
        })
        .collect()
}

/// The energy of the intervals in `[from, to)` if there are any and every one of them is settled
/// and estimated (a gap, or a value read, and the edge is not extended).
fn estimated_between(by_start: &BTreeMap<i64, &SettledInterval<'_>>, from: i64, to: i64) -> Option<(u64, u64)> {
    if from >= to
        || from.rem_euclid(SETTLEMENT_INTERVAL_SECONDS) != 0
        || to.rem_euclid(SETTLEMENT_INTERVAL_SECONDS) != 0
    {
        return None;
    }
    let (mut import_wh, mut export_wh) = (0u64, 0u64);
    let mut at = from;
    while at < to {
        let interval = by_start.get(&at)?;
        if interval.quality != Quality::Estimated {
            return None;
        }
        import_wh = import_wh.checked_add(interval.import_wh)?;
        export_wh = export_wh.checked_add(interval.export_wh)?;
        at += SETTLEMENT_INTERVAL_SECONDS;
    }
    Some((import_wh, export_wh))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter(id: &str) -> MeterId {
        MeterId::new(id).expect("id")
    }
    fn sample(at: i64, import_wh: u64) -> RegisterSample {
        RegisterSample { at: UnixSeconds(at), import_wh, export_wh: 0 }
    }
    fn period() -> BillingPeriod {
        let zone: chrono_tz::Tz = "UTC".parse().expect("zone");
        BillingPeriod::starting(zone, chrono::NaiveDate::from_ymd_opt(2026, 1, 1).expect("date")).expect("period")
    }

    #[test]
    fn read_edges_are_actual_and_estimated_edges_extend_by_the_estimates() {
        let p = period();
        let q = SETTLEMENT_INTERVAL_SECONDS;
        let (s0, s1, s2, s3) = (p.start.0, p.start.0 + q, p.end.0 - 2 * q, p.end.0 - q);
        let none = BTreeMap::new();
        let read =
            |at: i64, from: u64, to: u64| BTreeMap::from([(meter("M1"), vec![sample(at, from), sample(at + q, to)])]);
        let (first, last) = (read(s1, 1_000, 1_200), read(s2, 5_000, 5_300));
        let intervals = [
            // The first quarter-hour estimated (150 Wh), the last too (100 Wh).
            SettledInterval {
                start: UnixSeconds(s0),
                import_wh: 150,
                export_wh: 0,
                quality: Quality::Estimated,
                samples: &none,
            },
            SettledInterval {
                start: UnixSeconds(s1),
                import_wh: 200,
                export_wh: 0,
                quality: Quality::Actual,
                samples: &first,
            },
            SettledInterval {
                start: UnixSeconds(s2),
                import_wh: 300,
                export_wh: 0,
                quality: Quality::Corrected,
                samples: &last,
            },
            SettledInterval {
                start: UnixSeconds(s3),
                import_wh: 100,
                export_wh: 0,
                quality: Quality::Estimated,
                samples: &none,
            },
        ];
        let reads = register_reads(&p, &intervals);
        assert_eq!(
            reads,
            [MeterReads {
                meter: meter("M1"),
                start: RegisterRead { at: s0, import_wh: 850, export_wh: 0, how: Quality::Estimated },
                end: RegisterRead { at: p.end.0, import_wh: 5_400, export_wh: 0, how: Quality::Estimated },
            }]
        );
        // Without the estimates the reads are the values the meter signed, at their times.
        let reads = register_reads(&p, &intervals[1..3]);
        assert_eq!(reads[0].start, RegisterRead { at: s1, import_wh: 1_000, export_wh: 0, how: Quality::Actual });
        assert_eq!(reads[0].end, RegisterRead { at: s3, import_wh: 5_300, export_wh: 0, how: Quality::Corrected });
    }

    #[test]
    fn a_meter_exchange_lists_each_meter_at_its_own_reads() {
        let p = period();
        let q = SETTLEMENT_INTERVAL_SECONDS;
        let old = BTreeMap::from([(meter("OLD"), vec![sample(p.start.0, 90_000), sample(p.start.0 + q, 90_400)])]);
        let new = BTreeMap::from([(meter("NEW"), vec![sample(p.start.0 + 2 * q, 0), sample(p.start.0 + 3 * q, 250)])]);
        let none = BTreeMap::new();
        let intervals = [
            SettledInterval { start: p.start, import_wh: 400, export_wh: 0, quality: Quality::Actual, samples: &old },
            SettledInterval {
                start: UnixSeconds(p.start.0 + q),
                import_wh: 100,
                export_wh: 0,
                quality: Quality::Estimated,
                samples: &none,
            },
            SettledInterval {
                start: UnixSeconds(p.start.0 + 2 * q),
                import_wh: 250,
                export_wh: 0,
                quality: Quality::GatewayAttested,
                samples: &new,
            },
        ];
        let reads = register_reads(&p, &intervals);
        let names: Vec<&str> = reads.iter().map(|read| read.meter.as_str()).collect();
        assert_eq!(names, ["NEW", "OLD"]);
        assert_eq!(
            (reads[0].start.import_wh, reads[0].end.import_wh, reads[0].end.how),
            (0, 250, Quality::GatewayAttested)
        );
        assert_eq!(
            (reads[1].start.at, reads[1].end.import_wh),
            (p.start.0, 90_400),
            "not extended across the exchange"
        );
    }
}
