//! Faults on demand: a recorded, replayable plan of what goes wrong for which meter at which
//! sequence. Because readings are regenerated from (seed, meter, sequence) rather than stored,
//! every fault that changes later readings (a counter reset, a clock skew, a rollover) must come
//! from this plan, so a backfilled reading is byte-identical to the original.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What can go wrong, on the wire or in the meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// One bit of the signed bytes flipped in transit (the meter's stored reading is intact).
    BitFlip,
    /// Signed with a key that is not the meter's registered key.
    WrongKey,
    /// Besides the real reading, a second one with the same sequence and other bytes, validly signed.
    Equivocation,
    /// The same reading delivered twice.
    Duplicate,
    /// The reading is never sent live (recoverable by backfill).
    SequenceGap,
    /// From this sequence on, the meter's clock is off by `param` seconds (default +420).
    ClockSkew,
    /// For `param` intervals (default 4) the meter reports an unsynchronised clock.
    UnsyncedClock,
    /// The registers restart from zero (meter swapped or firmware reset), with the reset flag.
    CounterReset,
    /// The import register passes its modulus during this interval.
    Rollover,
    /// The import register jumps by an impossible amount (`param` Wh, default 50,000,000).
    ImpossibleJump,
    /// The meter is offline for `param` intervals (default 4), then sends its backlog.
    Offline,
}

/// Every fault kind, in a stable order (its index is the truth file's fault code minus one).
pub const ALL_FAULTS: [FaultKind; 11] = [
    FaultKind::BitFlip,
    FaultKind::WrongKey,
    FaultKind::Equivocation,
    FaultKind::Duplicate,
    FaultKind::SequenceGap,
    FaultKind::ClockSkew,
    FaultKind::UnsyncedClock,
    FaultKind::CounterReset,
    FaultKind::Rollover,
    FaultKind::ImpossibleJump,
    FaultKind::Offline,
];

impl FaultKind {
    /// Code in the truth file: 0 is "no fault".
    pub fn code(self) -> u8 {
        ALL_FAULTS.iter().position(|kind| *kind == self).expect("listed") as u8 + 1
    }
    /// The kind of a truth-file code.
    pub fn from_code(code: u8) -> Option<FaultKind> {
        ALL_FAULTS.get(usize::from(code).checked_sub(1)?).copied()
    }
    /// The parameter used when none is given.
    pub fn default_param(self) -> i64 {
        match self {
            FaultKind::ClockSkew => 420,
            FaultKind::UnsyncedClock | FaultKind::Offline => 4,
            FaultKind::ImpossibleJump => 50_000_000,
            _ => 0,
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(text.trim_matches('"'))
    }
}

impl FromStr for FaultKind {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> anyhow::Result<Self> {
        serde_json::from_str(&format!("\"{text}\"")).with_context(|| {
            let kinds: Vec<String> = ALL_FAULTS.iter().map(ToString::to_string).collect();
            format!("unknown fault {text:?}; known: {}", kinds.join(", "))
        })
    }
}

/// One planned fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub meter: u32,
    pub sequence: u64,
    pub kind: FaultKind,
    pub param: i64,
}

/// A fault request from the command line: `KIND:SHARE` (a share of the fleet, e.g.
/// `bit-flip:0.01`) or `KIND@METER:SEQUENCE[:PARAM]` (a named meter index).
#[derive(Debug, Clone, PartialEq)]
pub enum FaultRequest {
    Share { kind: FaultKind, share: f64 },
    Named(Fault),
}

impl FromStr for FaultRequest {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> anyhow::Result<Self> {
        if let Some((kind, rest)) = text.split_once('@') {
            let kind: FaultKind = kind.parse()?;
            let parts: Vec<&str> = rest.split(':').collect();
            if !(2..=3).contains(&parts.len()) {
                bail!("expected KIND@METER:SEQUENCE[:PARAM], got {text:?}");
            }
            let meter = parts[0].parse().with_context(|| format!("meter index in {text:?}"))?;
            let sequence: u64 = parts[1].parse().with_context(|| format!("sequence in {text:?}"))?;
            if sequence == 0 {
                bail!("sequences start at 1");
            }
            let param = match parts.get(2) {
                Some(param) => param.parse().with_context(|| format!("parameter in {text:?}"))?,
                None => kind.default_param(),
            };
            return Ok(FaultRequest::Named(Fault { meter, sequence, kind, param }));
        }
        let (kind, share) = text
            .split_once(':')
            .with_context(|| format!("expected KIND:SHARE or KIND@METER:SEQUENCE, got {text:?}"))?;
        let share: f64 = share.parse().with_context(|| format!("share in {text:?}"))?;
        if !(0.0..=1.0).contains(&share) {
            bail!("share must be between 0 and 1, got {share}");
        }
        Ok(FaultRequest::Share { kind: kind.parse()?, share })
    }
}

/// The whole plan, indexed by meter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultPlan {
    pub faults: Vec<Fault>,
}

impl FaultPlan {
    /// Expands requests into a plan: a share picks meters and sequences (within the first
    /// `intervals` sequences) deterministically from the seed.
    pub fn build(seed: u64, meters: u32, intervals: u64, requests: &[FaultRequest]) -> FaultPlan {
        let mut faults = Vec::new();
        for (request_index, request) in requests.iter().enumerate() {
            match request {
                FaultRequest::Named(fault) => faults.push(fault.clone()),
                FaultRequest::Share { kind, share } => {
                    for meter in 0..meters {
                        let draw = pick(seed, request_index as u64, u64::from(meter));
                        if (draw % 1_000_000) as f64 / 1_000_000.0 < *share {
                            // Never the first sequence: it is each meter's baseline.
                            let sequence = 2 + (draw >> 20) % intervals.saturating_sub(1).max(1);
                            faults.push(Fault { meter, sequence, kind: *kind, param: kind.default_param() });
                        }
                    }
                }
            }
        }
        faults.sort_by_key(|fault| (fault.meter, fault.sequence, fault.kind));
        FaultPlan { faults }
    }

    /// Faults per meter, for lookups while generating readings.
    pub fn index(&self) -> HashMap<u32, Vec<Fault>> {
        let mut map: HashMap<u32, Vec<Fault>> = HashMap::new();
        for fault in &self.faults {
            map.entry(fault.meter).or_default().push(fault.clone());
        }
        map
    }
}

fn pick(seed: u64, request: u64, meter: u64) -> u64 {
    let digest = Sha256::new()
        .chain_update(b"wattle.sim.fault")
        .chain_update(seed.to_be_bytes())
        .chain_update(request.to_be_bytes())
        .chain_update(meter.to_be_bytes())
        .finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_plans_are_deterministic() {
        let named: FaultRequest = "clock-skew@3:5:-60".parse().expect("parses");
        assert_eq!(named, FaultRequest::Named(Fault { meter: 3, sequence: 5, kind: FaultKind::ClockSkew, param: -60 }));
        assert!("bit-flip:1.5".parse::<FaultRequest>().is_err());
        assert!("melted:0.1".parse::<FaultRequest>().is_err());
        let requests = vec!["bit-flip:0.1".parse().expect("parses"), named];
        let plan = FaultPlan::build(7, 1_000, 96, &requests);
        assert_eq!(plan, FaultPlan::build(7, 1_000, 96, &requests));
        let flips = plan.faults.iter().filter(|fault| fault.kind == FaultKind::BitFlip).count();
        assert!((60..=140).contains(&flips), "about 10 % of 1,000 meters, got {flips}");
        assert!(plan.faults.iter().all(|fault| (2..=96).contains(&fault.sequence) || fault.meter == 3));
        for kind in ALL_FAULTS {
            assert_eq!(FaultKind::from_code(kind.code()), Some(kind));
            assert_eq!(kind.to_string().parse::<FaultKind>().expect("round trip"), kind);
        }
    }
}
