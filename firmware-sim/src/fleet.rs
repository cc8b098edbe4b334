//! The deterministic fleet: every reading any meter ever sends is a pure function of
//! (seed, load model, meter, sequence, fault plan). Nothing is stored per reading, so the fleet
//! keeps a few bytes per meter, and a backfilled reading is byte-identical to the original
//! (Ed25519 signatures are deterministic). What meters measure comes from [`crate::load`].

use std::collections::HashMap;

use domain::ids::{CustomerId, KeyId, MeterId, Sequence, UnixSeconds};
use domain::reading::{ClockStatus, FirmwareVersion, Reading, SignedReading, StatusFlags};
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};

use crate::faults::{Fault, FaultKind, FaultPlan};
use crate::load::{LoadConfig, LoadConfigError, LoadModel};

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

/// A meter's two registers, in Wh modulo [`REGISTER_MODULUS_WH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Registers {
    pub import_wh: u64,
    pub export_wh: u64,
}

impl Registers {
    /// The registers at the end of a reading's interval.
    pub fn after(reading: &Reading) -> Registers {
        Registers { import_wh: reading.import_end_wh, export_wh: reading.export_end_wh }
    }
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
    model: LoadModel,
}

/// What a meter sends live for one sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emission {
    pub reading: SignedReading,
    /// The bytes as put on the wire (differ from `reading` for a bit flip).
    pub envelope: domain::reading::Envelope,
}

impl Fleet {
    /// A fleet of households with the default [`LoadConfig`] (see [`Fleet::with_model`]).
    pub fn new(seed: u64, meters: u32, sites: u32, interval_s: i64, epoch: UnixSeconds, plan: FaultPlan) -> Fleet {
        let faults = plan.index();
        let model = LoadModel::new(seed, LoadConfig::default()).expect("the default load config is valid");
        Fleet { seed, meters, sites: sites.max(1), interval_s, epoch, plan, faults, model }
    }

    /// The same fleet measuring with another load and PV model.
    pub fn with_model(self, config: LoadConfig) -> Result<Fleet, LoadConfigError> {
        Ok(Fleet { model: LoadModel::new(self.seed, config)?, ..self })
    }

    /// The load and PV model the meters measure.
    pub fn model(&self) -> &LoadModel {
        &self.model
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
        let flows = self.model.interval(meter, self.site_of(meter), self.interval_start(sequence), self.interval_s);
        (flows.import_wh, flows.export_wh)
    }

    fn initial_registers(&self, meter: u32) -> Registers {
        let has_pv = self.model.premises(meter).pv_kwp.is_some();
        let base = Registers {
            import_wh: mix(self.seed, meter, -2) % 50_000_000,
            export_wh: if has_pv { mix(self.seed, meter, -3) % 20_000_000 } else { 0 },
        };
        let Some(rollover) =
            self.faults.get(&meter).and_then(|faults| faults.iter().find(|f| f.kind == FaultKind::Rollover))
        else {
            return base;
        };
        // Choose the start so that a register passes the modulus during the faulty interval: the
        // import register, or the export register if the meter only exports then (PV at noon).
        let mut from_zero = Registers::default();
        for sequence in 1..rollover.sequence {
            from_zero = Registers::after(&self.step(meter, sequence, from_zero));
        }
        let start_for = |energy_wh: u64, register_wh: u64| {
            let target = REGISTER_MODULUS_WH - energy_wh / 2 - 1;
            (target + REGISTER_MODULUS_WH - register_wh) % REGISTER_MODULUS_WH
        };
        match self.measured_wh(meter, rollover.sequence) {
            (0, export_wh) if export_wh > 0 => {
                Registers { export_wh: start_for(export_wh, from_zero.export_wh), ..base }
            }
            (import_wh, _) => Registers { import_wh: start_for(import_wh, from_zero.import_wh), ..base },
        }
    }

    /// The reading a meter stores for `sequence`, given its registers before it.
    pub fn step(&self, meter: u32, sequence: u64, before: Registers) -> Reading {
        let (import_wh, export_wh) = self.measured_wh(meter, sequence);
        let mut status = StatusFlags::default();
        let advance = |register_wh: u64, energy_wh: u64| (register_wh + energy_wh) % REGISTER_MODULUS_WH;
        let (import_start_wh, import_end_wh, export_start_wh, export_end_wh) =
            if self.fault_at(meter, sequence, FaultKind::CounterReset).is_some() {
                status = StatusFlags::new(StatusFlags::REGISTER_RESET).expect("defined bit");
                (0, advance(0, import_wh), 0, advance(0, export_wh))
            } else if let Some(jump) = self.fault_at(meter, sequence, FaultKind::ImpossibleJump) {
                let jumped_wh = advance(before.import_wh, import_wh + jump.param.unsigned_abs());
                (before.import_wh, jumped_wh, before.export_wh, advance(before.export_wh, export_wh))
            } else {
                let import_end_wh = advance(before.import_wh, import_wh);
                (before.import_wh, import_end_wh, before.export_wh, advance(before.export_wh, export_wh))
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
            export_start_wh,
            export_end_wh,
            register_modulus_wh: REGISTER_MODULUS_WH,
            clock_status: if unsynced { ClockStatus::Unsynchronized } else { ClockStatus::Synchronized },
            status,
            firmware: SIM_FIRMWARE,
        }
    }

    /// The registers before `sequence` (O(sequence): used to resume and to backfill).
    pub fn registers_before(&self, meter: u32, sequence: u64) -> Registers {
        let mut registers = self.initial_registers(meter);
        for earlier in 1..sequence {
            registers = Registers::after(&self.step(meter, earlier, registers));
        }
        registers
    }

    /// The import register before `sequence` (O(sequence)).
    pub fn import_before_wh(&self, meter: u32, sequence: u64) -> u64 {
        self.registers_before(meter, sequence).import_wh
    }

    /// The signed reading a meter stores for `sequence` (what backfill returns).
    pub fn stored_reading(&self, meter: u32, sequence: u64) -> SignedReading {
        let reading = self.step(meter, sequence, self.registers_before(meter, sequence));
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
        let mut registers = fleet.registers_before(1, 1);
        for sequence in 1..8 {
            let reading = fleet.step(1, sequence, registers);
            assert_eq!(reading.import_start_wh, if sequence == 3 { 0 } else { registers.import_wh });
            assert_eq!(fleet.stored_reading(1, sequence).reading(), &reading, "regeneration is exact");
            registers = Registers::after(&reading);
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
