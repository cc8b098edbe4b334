//! The deterministic fleet: every reading any meter ever sends is a pure function of
//! (seed, meter, sequence, fault plan). Nothing is stored per reading, so the fleet keeps a few
//! bytes per meter, and a backfilled reading is byte-identical to the original (Ed25519
//! signatures are deterministic).

use std::collections::HashMap;

use domain::ids::{CustomerId, KeyId, MeterId, Sequence, UnixSeconds};
use domain::reading::{ClockStatus, FirmwareVersion, Reading, SignedReading, StatusFlags};
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};

use crate::faults::{Fault, FaultKind, FaultPlan};

/// Registers of simulated meters roll over at 10^12 Wh (a 9-digit kWh display).
pub const REGISTER_MODULUS_WH: u64 = domain::reading::REGISTER_MODULUS_WH_DEFAULT;
/// The key id every simulated meter signs with (no rotation yet).
pub const SIM_KEY_ID: KeyId = KeyId(1);
/// Firmware version 1.0.0.
pub const SIM_FIRMWARE: FirmwareVersion = FirmwareVersion(0x01_00_00);

/// A meter's secret key, derived from the fleet seed and the meter's index.
pub fn meter_key(seed: u64, index: u32) -> SigningKey {
    SigningKey::from_bytes(&derive(b"wattle.sim.meter-key", seed, index))
}

/// A key that is *not* the meter's: used by the wrong-key fault.
pub fn wrong_key(seed: u64, index: u32) -> SigningKey {
    SigningKey::from_bytes(&derive(b"wattle.sim.wrong-key", seed, index))
}

fn derive(label: &[u8], seed: u64, index: u32) -> [u8; 32] {
    Sha256::new()
        .chain_update(label)
        .chain_update(seed.to_be_bytes())
        .chain_update(index.to_be_bytes())
        .finalize()
        .into()
}

/// A meter's id: `WTL` and ten digits.
pub fn meter_id(index: u32) -> MeterId {
    MeterId::new(format!("WTL{index:010}")).expect("WTL + 10 digits is a valid meter id")
}

/// The index of a simulated meter's id, if it is one.
pub fn meter_index(id: &str) -> Option<u32> {
    let digits = id.strip_prefix("WTL")?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The customer a meter bills to: one customer per meter in the simulation.
pub fn customer_id(index: u32) -> CustomerId {
    CustomerId::new(format!("C{index:07}")).expect("C + 7 digits is a valid customer id")
}

pub(crate) fn mix(seed: u64, meter: u32, salt: i64) -> u64 {
    let digest = Sha256::new()
        .chain_update(b"wattle.sim.noise")
        .chain_update(seed.to_be_bytes())
        .chain_update(meter.to_be_bytes())
        .chain_update(salt.to_be_bytes())
        .finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// Energy a household meter imports over one interval: a daily shape (night trough, morning
/// and evening peaks) scaled per meter, with noise. Deterministic in (seed, meter, interval).
/// The realism issue replaces this with the BDEW profiles.
pub fn interval_import_wh(seed: u64, meter: u32, interval_start: UnixSeconds, interval_s: i64) -> u64 {
    let hour = interval_start.0.rem_euclid(86_400) / 3_600;
    // Watts per household, by hour of day (UTC treated as local for now).
    const SHAPE_W: [u64; 24] = [
        180, 150, 140, 140, 150, 200, 320, 480, 420, 350, 330, 360, 420, 380, 340, 350, 420, 560, 700, 680, 600, 480,
        350, 240,
    ];
    let scale_percent = 60 + (mix(seed, meter, -1) % 90); // 60..150 % of the mean household
    let noise_percent = 80 + (mix(seed, meter, interval_start.0) % 41); // 80..120 %
    let watts = SHAPE_W[hour as usize] * scale_percent / 100 * noise_percent / 100;
    watts * interval_s as u64 / 3_600
}

/// The fleet's shape and its fault plan.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub seed: u64,
    pub meters: u32,
    pub sites: u32,
    pub interval_s: i64,
    /// Start of sequence 1's interval, aligned to the interval length.
    pub epoch: UnixSeconds,
    pub plan: FaultPlan,
    faults: HashMap<u32, Vec<Fault>>,
}

/// What a meter sends live for one sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emission {
    pub reading: SignedReading,
    /// The bytes as put on the wire (differ from `reading` for a bit flip).
    pub envelope: domain::reading::Envelope,
}

impl Fleet {
    pub fn new(seed: u64, meters: u32, sites: u32, interval_s: i64, epoch: UnixSeconds, plan: FaultPlan) -> Fleet {
        let faults = plan.index();
        Fleet { seed, meters, sites: sites.max(1), interval_s, epoch, plan, faults }
    }

    /// Which site a meter belongs to (contiguous blocks of meters).
    pub fn site_of(&self, meter: u32) -> u32 {
        let per_site = self.meters.div_ceil(self.sites).max(1);
        meter / per_site
    }

    /// A site's name, used in topics.
    pub fn site_name(site: u32) -> String {
        format!("site-{site}")
    }

    /// Start of the interval that sequence `sequence` (1-based) covers, on the true clock.
    pub fn interval_start(&self, sequence: u64) -> UnixSeconds {
        UnixSeconds(self.epoch.0 + (sequence as i64 - 1) * self.interval_s)
    }

    /// How many intervals have ended at `now_s`.
    pub fn sequences_ended_by(&self, now_s: i64) -> u64 {
        u64::try_from((now_s - self.epoch.0).div_euclid(self.interval_s)).unwrap_or(0)
    }

    fn fault_at(&self, meter: u32, sequence: u64, kind: FaultKind) -> Option<&Fault> {
        self.faults.get(&meter)?.iter().find(|fault| fault.kind == kind && fault.sequence == sequence)
    }

    /// The fault that explains what happened to (meter, sequence), for the ground truth.
    pub fn fault_covering(&self, meter: u32, sequence: u64) -> Option<FaultKind> {
        let faults = self.faults.get(&meter)?;
        faults
            .iter()
            .find(|fault| fault.sequence == sequence)
            .or_else(|| {
                faults.iter().find(|fault| match fault.kind {
                    FaultKind::UnsyncedClock | FaultKind::Offline => {
                        fault.sequence <= sequence && sequence < fault.sequence + fault.param.max(1) as u64
                    }
                    FaultKind::ClockSkew => fault.sequence <= sequence,
                    _ => false,
                })
            })
            .map(|fault| fault.kind)
    }

    /// What the meter measured over the interval of `sequence` (import, export) in Wh.
    pub fn measured_wh(&self, meter: u32, sequence: u64) -> (u64, u64) {
        (interval_import_wh(self.seed, meter, self.interval_start(sequence), self.interval_s), 0)
    }

    fn initial_import_wh(&self, meter: u32) -> u64 {
        let base = mix(self.seed, meter, -2) % 50_000_000;
        let Some(rollover) =
            self.faults.get(&meter).and_then(|faults| faults.iter().find(|f| f.kind == FaultKind::Rollover))
        else {
            return base;
        };
        // Choose the start so that the register passes the modulus during the faulty interval.
        let mut register = 0u64;
        for sequence in 1..rollover.sequence {
            register = self.step(meter, sequence, register).import_end_wh;
        }
        let half = self.measured_wh(meter, rollover.sequence).0 / 2;
        let target = REGISTER_MODULUS_WH - half - 1;
        (target + REGISTER_MODULUS_WH - register) % REGISTER_MODULUS_WH
    }

    /// The reading a meter stores for `sequence`, given its import register before it.
    pub fn step(&self, meter: u32, sequence: u64, import_before_wh: u64) -> Reading {
        let (energy, _) = self.measured_wh(meter, sequence);
        let mut status = StatusFlags::default();
        let (import_start_wh, import_end_wh) = if self.fault_at(meter, sequence, FaultKind::CounterReset).is_some() {
            status = StatusFlags::new(StatusFlags::REGISTER_RESET).expect("defined bit");
            (0, energy % REGISTER_MODULUS_WH)
        } else if let Some(jump) = self.fault_at(meter, sequence, FaultKind::ImpossibleJump) {
            (import_before_wh, (import_before_wh + energy + jump.param.unsigned_abs()) % REGISTER_MODULUS_WH)
        } else {
            (import_before_wh, (import_before_wh + energy) % REGISTER_MODULUS_WH)
        };
        let faults = self.faults.get(&meter);
        let skew_s = faults
            .and_then(|faults| {
                faults.iter().rfind(|f| f.kind == FaultKind::ClockSkew && f.sequence <= sequence).map(|f| f.param)
            })
            .unwrap_or(0);
        let unsynced = faults.is_some_and(|faults| {
            faults.iter().any(|f| {
                f.kind == FaultKind::UnsyncedClock
                    && f.sequence <= sequence
                    && sequence < f.sequence + f.param.max(1) as u64
            })
        });
        let start = self.interval_start(sequence).0 + skew_s;
        Reading {
            meter_id: meter_id(meter),
            key_id: SIM_KEY_ID,
            sequence: Sequence(sequence),
            interval_start: UnixSeconds(start),
            interval_end: UnixSeconds(start + self.interval_s),
            import_start_wh,
            import_end_wh,
            export_start_wh: 0,
            export_end_wh: 0,
            register_modulus_wh: REGISTER_MODULUS_WH,
            clock_status: if unsynced { ClockStatus::Unsynchronized } else { ClockStatus::Synchronized },
            status,
            firmware: SIM_FIRMWARE,
        }
    }

    /// The import register before `sequence` (O(sequence): used to resume and to backfill).
    pub fn import_before_wh(&self, meter: u32, sequence: u64) -> u64 {
        let mut register = self.initial_import_wh(meter);
        for earlier in 1..sequence {
            register = self.step(meter, earlier, register).import_end_wh;
        }
        register
    }

    /// The signed reading a meter stores for `sequence` (what backfill returns).
    pub fn stored_reading(&self, meter: u32, sequence: u64) -> SignedReading {
        let reading = self.step(meter, sequence, self.import_before_wh(meter, sequence));
        reading.sign(&meter_key(self.seed, meter)).expect("simulated readings are valid")
    }

    /// What goes on the wire live for `stored` (the meter's own reading of `sequence`), given
    /// the fault plan; `backlog` supplies older stored readings for an offline meter's return.
    pub fn emissions(
        &self,
        meter: u32,
        stored: &SignedReading,
        backlog: impl Fn(u64) -> SignedReading,
    ) -> Vec<Emission> {
        let sequence = stored.reading().sequence.0;
        let plain =
            |reading: &SignedReading| Emission { reading: reading.clone(), envelope: reading.to_envelope(false) };
        if let Some(offline) = self.faults.get(&meter).and_then(|faults| {
            faults.iter().find(|f| {
                f.kind == FaultKind::Offline && f.sequence <= sequence && sequence <= f.sequence + f.param.max(1) as u64
            })
        }) {
            let back_at = offline.sequence + offline.param.max(1) as u64;
            if sequence < back_at {
                return Vec::new();
            }
            let mut out: Vec<Emission> = (offline.sequence..back_at).map(|earlier| plain(&backlog(earlier))).collect();
            out.push(plain(stored));
            return out;
        }
        if self.fault_at(meter, sequence, FaultKind::BitFlip).is_some() {
            let mut bytes = stored.bytes().to_vec();
            let bit = mix(self.seed, meter, sequence as i64) % (bytes.len() as u64 * 8 - 15 * 8) + 15 * 8;
            bytes[(bit / 8) as usize] ^= 1 << (bit % 8);
            let mut envelope = stored.to_envelope(false);
            envelope.reading = hex::encode(&bytes);
            return vec![Emission { reading: stored.clone(), envelope }];
        }
        if self.fault_at(meter, sequence, FaultKind::WrongKey).is_some() {
            let signed = stored.reading().sign(&wrong_key(self.seed, meter)).expect("valid");
            return vec![plain(&signed)];
        }
        if self.fault_at(meter, sequence, FaultKind::Equivocation).is_some() {
            let mut other = stored.reading().clone();
            other.import_end_wh = (other.import_end_wh + 1) % REGISTER_MODULUS_WH;
            let other = other.sign(&meter_key(self.seed, meter)).expect("valid");
            return vec![plain(stored), plain(&other)];
        }
        if self.fault_at(meter, sequence, FaultKind::Duplicate).is_some() {
            return vec![plain(stored), plain(stored)];
        }
        if self.fault_at(meter, sequence, FaultKind::SequenceGap).is_some() {
            return Vec::new();
        }
        vec![plain(stored)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet_with(fault: Fault) -> Fleet {
        Fleet::new(9, 4, 2, 900, UnixSeconds(1_767_225_600), FaultPlan { faults: vec![fault] })
    }

    #[test]
    fn stored_readings_are_a_chain_and_regenerate_identically() {
        let fleet = fleet_with(Fault { meter: 1, sequence: 3, kind: FaultKind::CounterReset, param: 0 });
        let mut register = fleet.import_before_wh(1, 1);
        for sequence in 1..8 {
            let reading = fleet.step(1, sequence, register);
            assert_eq!(reading.import_start_wh, if sequence == 3 { 0 } else { register });
            assert_eq!(fleet.stored_reading(1, sequence).reading(), &reading, "regeneration is exact");
            register = reading.import_end_wh;
        }
    }

    #[test]
    fn rollover_passes_the_modulus_in_its_interval() {
        let fleet = fleet_with(Fault { meter: 2, sequence: 5, kind: FaultKind::Rollover, param: 0 });
        let reading = fleet.stored_reading(2, 5);
        assert!(reading.reading().import_end_wh < reading.reading().import_start_wh, "{:?}", reading.reading());
        assert_eq!(reading.reading().import_energy().0, fleet.measured_wh(2, 5).0);
    }

    #[test]
    fn meter_ids_round_trip() {
        assert_eq!(meter_index(meter_id(123).as_str()), Some(123));
        assert_eq!(meter_index("WTL12"), None);
    }
}
