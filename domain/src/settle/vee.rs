//! VEE estimation of a missing interval, by a documented rule (docs/tariffs.md, "Estimation"):
//!
//! 1. `linear_registers`: when register samples are known before and after the interval, no
//!    more than `VEE_LINEAR_SPAN_SECONDS_MAX` (6 h) apart and without a reset, the interval gets
//!    the register difference pro rata to its 900 s of the span (whole Wh, rounded down).
//! 2. `same_interval_week_earlier`: else the same interval 7 × 24 h earlier, if known.
//! 3. Otherwise no estimate: the interval stays missing and the period is incomplete.
//!
//! Every interval keeps its quality and rule; an actual reading arriving later replaces an
//! estimate as a correction (quality `corrected`), settled in a later run.

use serde::{Deserialize, Serialize};

use crate::ids::UnixSeconds;
use crate::limits::{SETTLEMENT_INTERVAL_SECONDS, VEE_LINEAR_SPAN_SECONDS_MAX};
use crate::tariff::IntervalEnergy;

use super::mapping::RegisterSample;

/// How an interval's value was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    Actual,
    Estimated,
    /// An actual value that replaced an estimate after it had been settled.
    Corrected,
    /// An actual value from an unsigned legacy meter, signed by the gateway that read it
    /// (`RegisterAttestedMeter`): the gateway vouches for it, not the meter.
    GatewayAttested,
}

/// Which estimation rule produced a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EstimationRule {
    LinearRegisters,
    SameIntervalWeekEarlier,
}

/// An interval's energy with its quality and, for estimates, the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QualifiedInterval {
    pub energy: IntervalEnergy,
    pub quality: Quality,
    pub rule: Option<EstimationRule>,
}

const WEEK_SECONDS: i64 = 7 * 86_400;

/// Estimates the interval starting at `start` from the samples around it and the interval a
/// week earlier, by the rules above.
pub fn estimate_interval(
    start: UnixSeconds,
    before: Option<RegisterSample>,
    after: Option<RegisterSample>,
    week_earlier: Option<IntervalEnergy>,
) -> Option<QualifiedInterval> {
    let end = start.0 + SETTLEMENT_INTERVAL_SECONDS;
    if let (Some(before), Some(after)) = (before, after) {
        let span = after.at.0 - before.at.0;
        let encloses = before.at.0 <= start.0 && end <= after.at.0;
        let rising = after.import_wh >= before.import_wh && after.export_wh >= before.export_wh;
        if encloses && rising && span > 0 && span <= VEE_LINEAR_SPAN_SECONDS_MAX {
            let share = |delta: u64| (u128::from(delta) * SETTLEMENT_INTERVAL_SECONDS as u128 / span as u128) as u64;
            let energy = IntervalEnergy {
                start,
                import_wh: share(after.import_wh - before.import_wh),
                export_wh: share(after.export_wh - before.export_wh),
            };
            return Some(QualifiedInterval {
                energy,
                quality: Quality::Estimated,
                rule: Some(EstimationRule::LinearRegisters),
            });
        }
    }
    let week = week_earlier.filter(|earlier| earlier.start.0 == start.0 - WEEK_SECONDS)?;
    Some(QualifiedInterval {
        energy: IntervalEnergy { start, import_wh: week.import_wh, export_wh: week.export_wh },
        quality: Quality::Estimated,
        rule: Some(EstimationRule::SameIntervalWeekEarlier),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: i64, import_wh: u64) -> RegisterSample {
        RegisterSample { at: UnixSeconds(at), import_wh, export_wh: 0 }
    }

    /// Registers 1,000 at 00:00 and 1,370 at 01:00 (3,600 s): the 00:15 interval gets
    /// 370 × 900 / 3,600 = 92.5 → 92 Wh, by `linear_registers`.
    #[test]
    fn a_gap_between_known_registers_is_interpolated() {
        let estimate = estimate_interval(UnixSeconds(900), Some(sample(0, 1_000)), Some(sample(3_600, 1_370)), None)
            .expect("estimates");
        assert_eq!(estimate.energy.import_wh, 92);
        assert_eq!((estimate.quality, estimate.rule), (Quality::Estimated, Some(EstimationRule::LinearRegisters)));
    }

    /// 7 h between registers is beyond the 6 h bound: the week-earlier value (400 Wh) is used;
    /// without it there is no estimate.
    #[test]
    fn a_long_gap_falls_back_to_the_week_earlier_interval() {
        let start = UnixSeconds(WEEK_SECONDS + 900);
        let earlier = IntervalEnergy { start: UnixSeconds(900), import_wh: 400, export_wh: 3 };
        let (before, after) = (Some(sample(WEEK_SECONDS, 0)), Some(sample(WEEK_SECONDS + 7 * 3_600, 7_000)));
        let estimate = estimate_interval(start, before, after, Some(earlier)).expect("estimates");
        assert_eq!((estimate.energy.import_wh, estimate.energy.export_wh), (400, 3));
        assert_eq!(estimate.rule, Some(EstimationRule::SameIntervalWeekEarlier));
        assert_eq!(estimate_interval(start, before, after, None), None);
    }
}
