//! Interval mapping: cumulative register samples in, energy per 15-minute settlement interval out.
//!
//! Rule (docs/tariffs.md, "Interval mapping"):
//! - Energy is the difference of consecutive register samples (import and export separately).
//! - A span within one 15-minute interval adds to it whole (1- and 5-minute readings sum up).
//! - A span overlapping several intervals (30- and 60-minute readings, or a gap after an
//!   outage) is split pro rata to the seconds of overlap, in whole Wh rounded down, the
//!   remainder going to the last part; each part is flagged `split`, and `outage` when the
//!   span is longer than 60 minutes (the longest regular reading).
//! - A register that decreases is a counter reset: the later sample starts a new series, the
//!   span gets no energy (never a negative delta) and is flagged `counter_reset`, for VEE.
//! - An interval covered by samples for less than its 900 s is flagged `partial`.
//!
//! Samples may come in any order and any batches: they are sorted by instant; a repeated
//! sample is ignored, a conflicting one (same instant, other registers) refused.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ids::UnixSeconds;
use crate::limits::{REGISTER_SPAN_SECONDS_MAX, SETTLEMENT_INTERVAL_SECONDS};
use crate::tariff::{Flag, IntervalEnergy};

/// A meter's cumulative registers at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RegisterSample {
    pub at: UnixSeconds,
    pub import_wh: u64,
    pub export_wh: u64,
}

/// One settlement interval's mapped energy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappedInterval {
    pub energy: IntervalEnergy,
    pub flags: BTreeSet<Flag>,
    /// Seconds of the interval covered by register spans.
    pub covered_s: i64,
}

/// Why samples cannot be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("sample_conflict: two samples at {0} with different registers")]
    Conflict(i64),
    #[error("span_too_long: {seconds} s between samples at {from}, limit {REGISTER_SPAN_SECONDS_MAX}")]
    SpanTooLong { from: i64, seconds: i64 },
}

/// Maps register samples onto 15-minute intervals by the rule above.
pub fn map_registers(samples: &[RegisterSample]) -> Result<BTreeMap<UnixSeconds, MappedInterval>, MappingError> {
    let mut sorted: BTreeMap<UnixSeconds, RegisterSample> = BTreeMap::new();
    for sample in samples {
        if let Some(known) = sorted.insert(sample.at, *sample) {
            if known != *sample {
                return Err(MappingError::Conflict(sample.at.0));
            }
        }
    }
    let mut out: BTreeMap<UnixSeconds, MappedInterval> = BTreeMap::new();
    let ordered: Vec<RegisterSample> = sorted.into_values().collect();
    for pair in ordered.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let span = b.at.0 - a.at.0;
        if span > REGISTER_SPAN_SECONDS_MAX {
            return Err(MappingError::SpanTooLong { from: a.at.0, seconds: span });
        }
        let reset = b.import_wh < a.import_wh || b.export_wh < a.export_wh;
        let (import_wh, export_wh) =
            if reset { (0, 0) } else { (b.import_wh - a.import_wh, b.export_wh - a.export_wh) };
        let parts = overlaps(a.at.0, b.at.0);
        let split = parts.len() > 1;
        let import_parts = pro_rata(import_wh, span, &parts);
        let export_parts = pro_rata(export_wh, span, &parts);
        for (index, (start, seconds)) in parts.iter().enumerate() {
            let entry = out.entry(UnixSeconds(*start)).or_insert_with(|| MappedInterval {
                energy: IntervalEnergy { start: UnixSeconds(*start), import_wh: 0, export_wh: 0 },
                flags: BTreeSet::new(),
                covered_s: 0,
            });
            // Register differences are bounded by the registers (u64), and an interval's parts
            // sum to at most the span's difference, so these additions cannot overflow.
            entry.energy.import_wh += import_parts[index];
            entry.energy.export_wh += export_parts[index];
            entry.covered_s += seconds;
            if reset {
                entry.flags.insert(Flag::CounterReset);
            }
            if split {
                entry.flags.insert(Flag::Split);
            }
            if span > 3_600 {
                entry.flags.insert(Flag::Outage);
            }
        }
    }
    for interval in out.values_mut() {
        if interval.covered_s < SETTLEMENT_INTERVAL_SECONDS {
            interval.flags.insert(Flag::Partial);
        }
    }
    Ok(out)
}

/// The settlement intervals `[from, to)` overlaps, with seconds of overlap each.
fn overlaps(from: i64, to: i64) -> Vec<(i64, i64)> {
    let step = SETTLEMENT_INTERVAL_SECONDS;
    let mut parts = Vec::new();
    let mut start = from.div_euclid(step) * step;
    while start < to {
        let overlap = (start + step).min(to) - start.max(from);
        if overlap > 0 {
            parts.push((start, overlap));
        }
        start += step;
    }
    parts
}

/// Splits `energy_wh` over parts pro rata to their seconds, rounding down; the last part takes
/// the remainder, so the parts sum to `energy_wh` exactly.
fn pro_rata(energy_wh: u64, span_s: i64, parts: &[(i64, i64)]) -> Vec<u64> {
    let mut shares: Vec<u64> = parts
        .iter()
        .map(|(_, seconds)| {
            // u128: energy (< 2^64) × seconds (< 2^22) cannot overflow; the share ≤ energy_wh.
            (u128::from(energy_wh) * (*seconds as u128) / (span_s as u128)) as u64
        })
        .collect();
    if let Some(last) = shares.len().checked_sub(1) {
        let others: u64 = shares[..last].iter().sum();
        shares[last] = energy_wh - others;
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: i64, import_wh: u64) -> RegisterSample {
        RegisterSample { at: UnixSeconds(at), import_wh, export_wh: 0 }
    }

    #[test]
    fn five_minute_readings_sum_into_their_quarter_hour() {
        let mapped = map_registers(&[sample(0, 10), sample(300, 13), sample(600, 20), sample(900, 22)]).expect("maps");
        assert_eq!(mapped.len(), 1);
        let interval = &mapped[&UnixSeconds(0)];
        assert_eq!(interval.energy.import_wh, 12);
        assert!(interval.flags.is_empty(), "{:?}", interval.flags);
    }

    /// A 60-minute reading of 1,001 Wh: 250 + 250 + 250 and the remainder 251 to the last part.
    #[test]
    fn an_hourly_reading_splits_pro_rata_with_the_remainder_last() {
        let mapped = map_registers(&[sample(3_600, 5_000), sample(7_200, 6_001)]).expect("maps");
        let parts: Vec<u64> = mapped.values().map(|interval| interval.energy.import_wh).collect();
        assert_eq!(parts, vec![250, 250, 250, 251]);
        assert!(mapped.values().all(|interval| interval.flags == BTreeSet::from([Flag::Split])));
    }

    /// An outage of 3 h 10 min, 00:50 to 04:00 (11,400 s), 1,140 Wh: the first part covers
    /// 00:50–01:00 (600 s → 60 Wh), twelve full quarter-hours 90 Wh each (1,080), total 1,140.
    #[test]
    fn an_outage_span_is_split_and_flagged() {
        let mapped = map_registers(&[sample(3_000, 0), sample(14_400, 1_140)]).expect("maps");
        assert_eq!(mapped.len(), 13);
        assert_eq!(mapped[&UnixSeconds(2_700)].energy.import_wh, 60);
        assert!(mapped[&UnixSeconds(2_700)].flags.contains(&Flag::Partial));
        assert!(mapped.values().skip(1).all(|interval| interval.energy.import_wh == 90));
        assert!(mapped.values().all(|interval| interval.flags.contains(&Flag::Outage)));
        assert_eq!(mapped.values().map(|interval| interval.energy.import_wh).sum::<u64>(), 1_140);
    }

    /// Register 10,000 → 10,100 → 40 (reset) → 90: the reset span has no energy, never −10,060.
    #[test]
    fn a_counter_reset_starts_a_new_series() {
        let mapped = map_registers(&[sample(0, 10_000), sample(900, 10_100), sample(1_800, 40), sample(2_700, 90)])
            .expect("maps");
        let energy: Vec<u64> = mapped.values().map(|interval| interval.energy.import_wh).collect();
        assert_eq!(energy, vec![100, 0, 50]);
        assert_eq!(mapped[&UnixSeconds(900)].flags, BTreeSet::from([Flag::CounterReset]));
    }

    #[test]
    fn samples_in_any_order_and_repeated_map_alike_and_conflicts_are_refused() {
        let forward = [sample(0, 0), sample(600, 7), sample(1_800, 30), sample(2_700, 31)];
        let mut shuffled = vec![forward[2], forward[0], forward[3], forward[1], forward[2]];
        assert_eq!(map_registers(&forward), map_registers(&shuffled));
        shuffled.push(sample(600, 8));
        assert_eq!(map_registers(&shuffled), Err(MappingError::Conflict(600)));
    }
}
