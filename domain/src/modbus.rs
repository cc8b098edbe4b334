//! Modbus register maps (`docs/modbus.md` is their specification): the SunSpec image a signing
//! meter serves (common model 1, meter model 203, Wattle's signed-reading block 64900 and history
//! block 64901) and the Eastron SDM630 input registers of an unsigned legacy meter.
//!
//! Byte and word order, stated once for every map: a register is two bytes, high byte first (the
//! Modbus standard); values wider than one register put the most significant register first
//! ("big-endian word order", ABCD). SunSpec strings are ASCII, two characters per register, first
//! character in the high byte, padded with NUL.
//!
//! Everything here is pure: the simulator builds images with it and the gateway decodes replies
//! with it, so the two cannot drift apart; decoders return [`ModbusError`] with a reason code.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::limits::READING_BYTES;
use crate::reading::{SignedReading, StatusFlags};

/// The Modbus application protocol allows at most 125 registers in one read (functions 03, 04).
pub const REGISTERS_PER_READ_MAX: usize = 125;

/// First register of the SunSpec map ("SunS" marker), as a 0-based protocol address.
pub const SUNSPEC_BASE: u16 = 40_000;
/// "SunS" as two registers.
pub const SUNS_MARKER: [u16; 2] = [0x5375, 0x6E53];
/// Model id and length of the common model.
pub const COMMON_MODEL: (u16, u16) = (1, 66);
/// Model id and length of the three-phase wye meter model.
pub const METER_MODEL: (u16, u16) = (203, 105);
/// Wattle's vendor model: the latest signed reading.
pub const SIGNED_MODEL: (u16, u16) = (64_900, SIGNED_RECORD_REGISTERS as u16);
/// Wattle's vendor model: one remembered reading, chosen by writing its sequence.
pub const HISTORY_MODEL: (u16, u16) = (64_901, 4 + SIGNED_RECORD_REGISTERS as u16);
/// The id that ends the model chain (its length register is 0).
pub const END_MODEL_ID: u16 = 0xFFFF;

/// Registers of a signed record: sequence (4), byte length (1), canonical bytes (55),
/// signature (32), sequence again (4).
pub const SIGNED_RECORD_REGISTERS: usize = 4 + 1 + READING_BYTES / 2 + 32 + 4;

/// Addresses of the fixed layout this project serves (a client should still walk the chain).
pub const COMMON_ADDRESS: u16 = SUNSPEC_BASE + 2;
pub const METER_ADDRESS: u16 = COMMON_ADDRESS + 2 + COMMON_MODEL.1;
pub const SIGNED_ADDRESS: u16 = METER_ADDRESS + 2 + METER_MODEL.1;
pub const HISTORY_ADDRESS: u16 = SIGNED_ADDRESS + 2 + SIGNED_MODEL.1;
pub const END_ADDRESS: u16 = HISTORY_ADDRESS + 2 + HISTORY_MODEL.1;
/// Registers from the marker to the end model's length register, inclusive.
pub const SUNSPEC_IMAGE_REGISTERS: usize = (END_ADDRESS - SUNSPEC_BASE + 2) as usize;

/// Offsets of model-203 points from the model's first register (its id), as SunSpec counts them.
pub mod m203 {
    pub const W: u16 = 18;
    pub const W_SF: u16 = 22;
    pub const HZ: u16 = 16;
    pub const HZ_SF: u16 = 17;
    pub const TOT_WH_EXP: u16 = 38;
    pub const TOT_WH_IMP: u16 = 46;
    pub const TOT_WH_SF: u16 = 54;
    pub const EVT: u16 = 105;
    /// SunSpec meter event bits (model 203 `Evt`) and Wattle's use of the OEM bits.
    pub const EVT_POWER_FAILURE: u32 = 1 << 2;
    pub const EVT_OEM_REGISTER_RESET: u32 = 1 << 16;
    pub const EVT_OEM_TAMPER: u32 = 1 << 17;
    pub const EVT_OEM_CLOCK_ADJUSTED: u32 = 1 << 18;
}

/// "Not implemented" values of SunSpec point types.
pub const NOT_IMPLEMENTED_INT16: u16 = 0x8000;
pub const NOT_IMPLEMENTED_UINT16: u16 = 0xFFFF;

/// Eastron SDM630 input registers (function 04), float32, big-endian word order.
pub mod sdm630 {
    pub const PHASE_1_VOLTAGE: u16 = 0x0000;
    pub const TOTAL_POWER_W: u16 = 0x0034;
    pub const FREQUENCY_HZ: u16 = 0x0046;
    pub const IMPORT_KWH: u16 = 0x0048;
    pub const EXPORT_KWH: u16 = 0x004A;
    /// Registers served, from address 0: up to and including the export register.
    pub const REGISTERS: usize = 0x004C;
}

/// What a meter's nameplate says (common model 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nameplate {
    pub manufacturer: String,
    pub model: String,
    pub version: String,
    pub serial: String,
    pub device_address: u16,
}

/// Why registers could not be read as what the map says they are.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ModbusError {
    #[error("no SunSpec marker at {address}: read {found:04x?}")]
    NoMarker { address: u16, found: [u16; 2] },
    #[error("model {model} not found in the SunSpec chain")]
    ModelMissing { model: u16 },
    #[error("model {model} has length {length}, expected {expected}")]
    ModelLength { model: u16, length: u16, expected: u16 },
    #[error("the model chain does not end within {0} models")]
    ChainTooLong(usize),
    #[error("{expected} registers expected, {got} read")]
    ShortRead { expected: usize, got: usize },
    #[error("record torn across an update: sequence {first} at the start, {last} at the end")]
    Torn { first: u64, last: u64 },
    #[error("record holds no reading")]
    Empty,
    #[error("record length {0}, expected {READING_BYTES}")]
    RecordLength(u16),
    #[error("record sequence {outer} differs from the reading's sequence {inner}")]
    SequenceMismatch { outer: u64, inner: u64 },
    #[error("reading in the record does not decode: {0}")]
    Reading(String),
    #[error("{point} is not a valid value: {value}")]
    BadValue { point: &'static str, value: String },
}

impl ModbusError {
    /// A stable, machine-readable reason code (quarantine and metrics).
    pub fn code(&self) -> &'static str {
        match self {
            ModbusError::NoMarker { .. }
            | ModbusError::ModelMissing { .. }
            | ModbusError::ModelLength { .. }
            | ModbusError::ChainTooLong(_) => "modbus_map_mismatch",
            ModbusError::ShortRead { .. } => "modbus_short_read",
            ModbusError::Torn { .. } => "modbus_torn_read",
            ModbusError::Empty => "modbus_no_reading",
            ModbusError::RecordLength(_) | ModbusError::SequenceMismatch { .. } | ModbusError::Reading(_) => {
                "malformed_reading"
            }
            ModbusError::BadValue { .. } => "modbus_bad_value",
        }
    }
}

fn put_string(out: &mut [u16], text: &str) {
    let bytes = text.as_bytes();
    for (slot, register) in out.iter_mut().enumerate() {
        let high = bytes.get(slot * 2).copied().unwrap_or(0);
        let low = bytes.get(slot * 2 + 1).copied().unwrap_or(0);
        *register = u16::from_be_bytes([high, low]);
    }
}

/// A SunSpec string point: ASCII up to the first NUL.
pub fn read_string(registers: &[u16]) -> String {
    let bytes: Vec<u8> = registers.iter().flat_map(|r| r.to_be_bytes()).take_while(|b| *b != 0).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn put_u32(out: &mut [u16], value: u32) {
    out[0] = (value >> 16) as u16;
    out[1] = value as u16;
}

/// A 32-bit value in big-endian word order.
pub fn read_u32(registers: &[u16]) -> u32 {
    (u32::from(registers[0]) << 16) | u32::from(registers[1])
}

fn put_u64(out: &mut [u16], value: u64) {
    for (slot, register) in out.iter_mut().take(4).enumerate() {
        *register = (value >> (48 - 16 * slot)) as u16;
    }
}

fn read_u64(registers: &[u16]) -> u64 {
    registers.iter().take(4).fold(0u64, |acc, r| (acc << 16) | u64::from(*r))
}

fn put_bytes(out: &mut [u16], bytes: &[u8]) {
    for (register, pair) in out.iter_mut().zip(bytes.chunks(2)) {
        *register = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
    }
}

/// The signed record of `reading` (all zero when there is none yet).
pub fn signed_record(reading: Option<&SignedReading>) -> [u16; SIGNED_RECORD_REGISTERS] {
    let mut out = [0u16; SIGNED_RECORD_REGISTERS];
    if let Some(signed) = reading {
        let sequence = signed.reading().sequence.0;
        put_u64(&mut out[0..4], sequence);
        out[4] = signed.bytes().len() as u16;
        put_bytes(&mut out[5..5 + READING_BYTES / 2], signed.bytes());
        put_bytes(&mut out[5 + READING_BYTES / 2..SIGNED_RECORD_REGISTERS - 4], signed.signature());
        put_u64(&mut out[SIGNED_RECORD_REGISTERS - 4..], sequence);
    }
    out
}

/// Decodes a signed record (the body of model 64900, or of 64901 after its 4 selector registers).
/// Refuses a record whose two sequence copies differ (the meter updated it mid-read) or that
/// disagree with the sequence inside the signed bytes. The signature is not checked here.
pub fn decode_signed_record(registers: &[u16]) -> Result<SignedReading, ModbusError> {
    if registers.len() < SIGNED_RECORD_REGISTERS {
        return Err(ModbusError::ShortRead { expected: SIGNED_RECORD_REGISTERS, got: registers.len() });
    }
    let first = read_u64(&registers[0..4]);
    let last = read_u64(&registers[SIGNED_RECORD_REGISTERS - 4..SIGNED_RECORD_REGISTERS]);
    if first != last {
        return Err(ModbusError::Torn { first, last });
    }
    let length = registers[4];
    if first == 0 && length == 0 {
        return Err(ModbusError::Empty);
    }
    if usize::from(length) != READING_BYTES {
        return Err(ModbusError::RecordLength(length));
    }
    let bytes: Vec<u8> = registers[5..5 + READING_BYTES / 2].iter().flat_map(|r| r.to_be_bytes()).collect();
    let signature: Vec<u8> =
        registers[5 + READING_BYTES / 2..SIGNED_RECORD_REGISTERS - 4].iter().flat_map(|r| r.to_be_bytes()).collect();
    let signature: [u8; 64] = signature.try_into().map_err(|_| ModbusError::RecordLength(length))?;
    let signed =
        SignedReading::from_parts(bytes, signature).map_err(|error| ModbusError::Reading(error.to_string()))?;
    let inner = signed.reading().sequence.0;
    if inner != first {
        return Err(ModbusError::SequenceMismatch { outer: first, inner });
    }
    Ok(signed)
}

/// Mean power over the reading's interval in W (import positive, export negative).
pub fn mean_power_w(signed: &SignedReading) -> i64 {
    let reading = signed.reading();
    let seconds = (reading.interval_end.0 - reading.interval_start.0).max(1);
    let net_wh = reading.import_energy().0 as i64 - reading.export_energy().0 as i64;
    net_wh * 3_600 / seconds
}

/// `value` as (int16, scale factor) with the smallest non-negative scale factor that fits.
fn scaled_i16(value: i64) -> (u16, i16) {
    let mut scaled = value;
    let mut sf = 0i16;
    while !(-32_767..=32_767).contains(&scaled) {
        scaled /= 10;
        sf += 1;
    }
    (scaled as i16 as u16, sf)
}

fn events(status: StatusFlags) -> u32 {
    let mut evt = 0;
    if status.contains(StatusFlags::POWER_OUTAGE) {
        evt |= m203::EVT_POWER_FAILURE;
    }
    if status.contains(StatusFlags::REGISTER_RESET) {
        evt |= m203::EVT_OEM_REGISTER_RESET;
    }
    if status.contains(StatusFlags::TAMPER) {
        evt |= m203::EVT_OEM_TAMPER;
    }
    if status.contains(StatusFlags::CLOCK_ADJUSTED) {
        evt |= m203::EVT_OEM_CLOCK_ADJUSTED;
    }
    evt
}

/// The whole SunSpec image from the marker (address [`SUNSPEC_BASE`]) to the end model,
/// for a meter whose latest closed interval is `latest`. The history block shows `selected`.
pub fn sunspec_image(
    nameplate: &Nameplate,
    latest: Option<&SignedReading>,
    selected: (u64, Option<&SignedReading>),
) -> Vec<u16> {
    let mut image = vec![0u16; SUNSPEC_IMAGE_REGISTERS];
    let at = |address: u16| usize::from(address - SUNSPEC_BASE);
    image[0..2].copy_from_slice(&SUNS_MARKER);
    // Model 1, common.
    let common = at(COMMON_ADDRESS);
    image[common] = COMMON_MODEL.0;
    image[common + 1] = COMMON_MODEL.1;
    put_string(&mut image[common + 2..common + 18], &nameplate.manufacturer);
    put_string(&mut image[common + 18..common + 34], &nameplate.model);
    // Opt (8 registers) left empty.
    put_string(&mut image[common + 42..common + 50], &nameplate.version);
    put_string(&mut image[common + 50..common + 66], &nameplate.serial);
    image[common + 66] = nameplate.device_address;
    image[common + 67] = NOT_IMPLEMENTED_INT16; // Pad
                                                // Model 203: every point "not implemented" except frequency, power, energies and events.
    let meter = at(METER_ADDRESS);
    image[meter] = METER_MODEL.0;
    image[meter + 1] = METER_MODEL.1;
    for point in &mut image[meter + 2..meter + 2 + usize::from(METER_MODEL.1)] {
        *point = NOT_IMPLEMENTED_INT16;
    }
    let point = |offset: u16| meter + usize::from(offset);
    image[point(m203::HZ)] = 5_000;
    image[point(m203::HZ_SF)] = (-2i16) as u16;
    // Accumulators: TotWh_SF 0, so the acc32 is the register in Wh modulo 2^32 (acc32 wraps).
    image[point(m203::TOT_WH_SF)] = 0;
    match latest {
        Some(signed) => {
            let reading = signed.reading();
            let (w, w_sf) = scaled_i16(mean_power_w(signed));
            image[point(m203::W)] = w;
            image[point(m203::W_SF)] = w_sf as u16;
            put_u32(&mut image[point(m203::TOT_WH_EXP)..], reading.export_end_wh as u32);
            put_u32(&mut image[point(m203::TOT_WH_IMP)..], reading.import_end_wh as u32);
            put_u32(&mut image[point(m203::EVT)..], events(reading.status));
        }
        None => {
            put_u32(&mut image[point(m203::TOT_WH_EXP)..], 0);
            put_u32(&mut image[point(m203::TOT_WH_IMP)..], 0);
            put_u32(&mut image[point(m203::EVT)..], 0);
        }
    }
    // Model 64900, the latest signed reading.
    let signed_at = at(SIGNED_ADDRESS);
    image[signed_at] = SIGNED_MODEL.0;
    image[signed_at + 1] = SIGNED_MODEL.1;
    image[signed_at + 2..signed_at + 2 + SIGNED_RECORD_REGISTERS].copy_from_slice(&signed_record(latest));
    // Model 64901, history: the selected sequence, then its record (zeros if not remembered).
    let history = at(HISTORY_ADDRESS);
    image[history] = HISTORY_MODEL.0;
    image[history + 1] = HISTORY_MODEL.1;
    put_u64(&mut image[history + 2..history + 6], selected.0);
    image[history + 6..history + 6 + SIGNED_RECORD_REGISTERS].copy_from_slice(&signed_record(selected.1));
    let end = at(END_ADDRESS);
    image[end] = END_MODEL_ID;
    image[end + 1] = 0;
    image
}

/// Model 203 values a poll reads, raw and scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterValues {
    pub import_wh: u64,
    pub export_wh: u64,
    pub power_w: i64,
    pub events: u32,
}

fn scale(raw: u64, sf: i16, point: &'static str) -> Result<u64, ModbusError> {
    if !(-10..=10).contains(&sf) {
        return Err(ModbusError::BadValue { point, value: format!("scale factor {sf}") });
    }
    if sf >= 0 {
        raw.checked_mul(10u64.pow(sf as u32))
            .ok_or(ModbusError::BadValue { point, value: format!("{raw} × 10^{sf} overflows") })
    } else {
        Ok(raw / 10u64.pow(sf.unsigned_abs() as u32))
    }
}

/// Decodes model 203's points from the model's registers (starting at its id register).
pub fn decode_meter_model(registers: &[u16]) -> Result<MeterValues, ModbusError> {
    let needed = 2 + usize::from(METER_MODEL.1);
    if registers.len() < needed {
        return Err(ModbusError::ShortRead { expected: needed, got: registers.len() });
    }
    if registers[0] != METER_MODEL.0 || registers[1] != METER_MODEL.1 {
        return Err(ModbusError::ModelLength { model: registers[0], length: registers[1], expected: METER_MODEL.1 });
    }
    let at = |offset: u16| usize::from(offset);
    let wh_sf = registers[at(m203::TOT_WH_SF)] as i16;
    if registers[at(m203::TOT_WH_SF)] == NOT_IMPLEMENTED_INT16 {
        return Err(ModbusError::BadValue { point: "TotWh_SF", value: "not implemented".into() });
    }
    let import = read_u32(&registers[at(m203::TOT_WH_IMP)..]);
    let export = read_u32(&registers[at(m203::TOT_WH_EXP)..]);
    let w_raw = registers[at(m203::W)];
    let w_sf = registers[at(m203::W_SF)] as i16;
    let power_w = if w_raw == NOT_IMPLEMENTED_INT16 || !(-10..=10).contains(&w_sf) {
        0
    } else {
        let w = i64::from(w_raw as i16);
        if w_sf >= 0 {
            w * 10i64.pow(w_sf as u32)
        } else {
            w / 10i64.pow(w_sf.unsigned_abs() as u32)
        }
    };
    Ok(MeterValues {
        import_wh: scale(u64::from(import), wh_sf, "TotWhImp")?,
        export_wh: scale(u64::from(export), wh_sf, "TotWhExp")?,
        power_w,
        events: read_u32(&registers[at(m203::EVT)..]),
    })
}

/// Checks the SunSpec marker and walks the model chain in `image` (registers from the marker on),
/// returning (model id, address of its id register, length) for each model.
pub fn walk_models(image: &[u16]) -> Result<Vec<(u16, u16, u16)>, ModbusError> {
    const MODELS_MAX: usize = 64;
    if image.len() < 2 || image[0..2] != SUNS_MARKER {
        let found = [image.first().copied().unwrap_or(0), image.get(1).copied().unwrap_or(0)];
        return Err(ModbusError::NoMarker { address: SUNSPEC_BASE, found });
    }
    let mut models = Vec::new();
    let mut offset = 2usize;
    loop {
        let (Some(&id), Some(&length)) = (image.get(offset), image.get(offset + 1)) else {
            return Err(ModbusError::ShortRead { expected: offset + 2, got: image.len() });
        };
        if id == END_MODEL_ID {
            return Ok(models);
        }
        if models.len() == MODELS_MAX {
            return Err(ModbusError::ChainTooLong(MODELS_MAX));
        }
        models.push((id, SUNSPEC_BASE + offset as u16, length));
        offset += 2 + usize::from(length);
    }
}

/// The SDM630 input registers (0x0000 up to and including 0x004B) of a legacy meter.
pub fn sdm630_image(import_wh: u64, export_wh: u64, power_w: f32) -> Vec<u16> {
    let mut image = vec![0u16; sdm630::REGISTERS];
    let mut put = |address: u16, value: f32| put_u32(&mut image[usize::from(address)..], value.to_bits());
    for phase in 0..3 {
        put(sdm630::PHASE_1_VOLTAGE + 2 * phase, 230.0);
    }
    put(sdm630::TOTAL_POWER_W, power_w);
    put(sdm630::FREQUENCY_HZ, 50.0);
    put(sdm630::IMPORT_KWH, import_wh as f32 / 1_000.0);
    put(sdm630::EXPORT_KWH, export_wh as f32 / 1_000.0);
    image
}

/// An energy register of an SDM630 (float32 kWh) in Wh, rounded to the nearest Wh. float32 has a
/// 24-bit mantissa, so above ~16,777 kWh a step exceeds 1 Wh: callers record the source encoding.
pub fn sdm630_energy_wh(registers: &[u16], point: &'static str) -> Result<u64, ModbusError> {
    if registers.len() < 2 {
        return Err(ModbusError::ShortRead { expected: 2, got: registers.len() });
    }
    let kwh = f32::from_bits(read_u32(registers));
    if !kwh.is_finite() || kwh < 0.0 || f64::from(kwh) * 1_000.0 >= crate::reading::REGISTER_MODULUS_WH_DEFAULT as f64 {
        return Err(ModbusError::BadValue { point, value: format!("{kwh} kWh") });
    }
    Ok((f64::from(kwh) * 1_000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::ids::{KeyId, MeterId, Sequence, UnixSeconds};
    use crate::reading::{ClockStatus, FirmwareVersion, Reading};

    fn signed(sequence: u64) -> SignedReading {
        let start = 1_767_225_600 + 900 * sequence as i64;
        Reading {
            meter_id: MeterId::new("WTL0000000007".to_string()).expect("valid"),
            key_id: KeyId(1),
            sequence: Sequence(sequence),
            interval_start: UnixSeconds(start),
            interval_end: UnixSeconds(start + 900),
            import_start_wh: 5_000_000_000 + sequence * 100,
            import_end_wh: 5_000_000_000 + sequence * 100 + 250,
            export_start_wh: 1_000,
            export_end_wh: 1_040,
            register_modulus_wh: crate::reading::REGISTER_MODULUS_WH_DEFAULT,
            clock_status: ClockStatus::Synchronized,
            status: StatusFlags::new(StatusFlags::POWER_OUTAGE).expect("defined"),
            firmware: FirmwareVersion(0x01_00_00),
        }
        .sign(&SigningKey::from_bytes(&[7; 32]))
        .expect("valid")
    }

    fn nameplate() -> Nameplate {
        Nameplate {
            manufacturer: "Wattle".into(),
            model: "WTL-SIM-203".into(),
            version: "1.0.0".into(),
            serial: "WTL0000000007".into(),
            device_address: 8,
        }
    }

    #[test]
    fn the_image_walks_and_round_trips() {
        let latest = signed(42);
        let old = signed(40);
        let image = sunspec_image(&nameplate(), Some(&latest), (40, Some(&old)));
        let models = walk_models(&image).expect("walks");
        assert_eq!(
            models,
            vec![
                (1, COMMON_ADDRESS, 66),
                (203, METER_ADDRESS, 105),
                (64_900, SIGNED_ADDRESS, SIGNED_MODEL.1),
                (64_901, HISTORY_ADDRESS, HISTORY_MODEL.1)
            ]
        );
        let at = |address: u16| usize::from(address - SUNSPEC_BASE);
        assert_eq!(read_string(&image[at(COMMON_ADDRESS) + 50..at(COMMON_ADDRESS) + 66]), "WTL0000000007");
        let values = decode_meter_model(&image[at(METER_ADDRESS)..]).expect("decodes");
        assert_eq!(values.import_wh, (latest.reading().import_end_wh % (1 << 32)));
        assert_eq!(values.export_wh, 1_040);
        assert_eq!(values.power_w, (250 - 40) * 4);
        assert_eq!(values.events, m203::EVT_POWER_FAILURE);
        let record = &image[at(SIGNED_ADDRESS) + 2..];
        assert_eq!(decode_signed_record(record).expect("decodes"), latest);
        let history = &image[at(HISTORY_ADDRESS) + 2..];
        assert_eq!(read_u64(history), 40);
        assert_eq!(decode_signed_record(&history[4..]).expect("decodes"), old);
        // One function-03 request reads the signed model's header and body.
        const { assert!(2 + SIGNED_RECORD_REGISTERS <= REGISTERS_PER_READ_MAX) };
    }

    #[test]
    fn torn_empty_and_short_records_are_refused() {
        let mut record = signed_record(Some(&signed(9)));
        assert_eq!(decode_signed_record(&record[..50]).expect_err("refused").code(), "modbus_short_read");
        record[SIGNED_RECORD_REGISTERS - 1] = 10;
        assert_eq!(decode_signed_record(&record).expect_err("refused"), ModbusError::Torn { first: 9, last: 10 });
        assert_eq!(decode_signed_record(&signed_record(None)).expect_err("refused"), ModbusError::Empty);
        let mut other = signed_record(Some(&signed(9)));
        put_u64(&mut other[0..4], 8);
        put_u64(&mut other[SIGNED_RECORD_REGISTERS - 4..], 8);
        assert_eq!(decode_signed_record(&other).expect_err("refused").code(), "malformed_reading");
    }

    #[test]
    fn sdm630_energy_round_trips_to_the_watt_hour_in_range() {
        let image = sdm630_image(12_345_678, 9_876, -1_500.0);
        let import = sdm630_energy_wh(&image[usize::from(sdm630::IMPORT_KWH)..], "import").expect("valid");
        // float32 above 8,388 kWh has a step of 1 Wh or more: within half a step.
        assert!(import.abs_diff(12_345_678) <= 1, "{import}");
        assert_eq!(sdm630_energy_wh(&image[usize::from(sdm630::EXPORT_KWH)..], "export"), Ok(9_876));
        let nan = f32::NAN.to_bits();
        let bad = [(nan >> 16) as u16, nan as u16];
        assert_eq!(sdm630_energy_wh(&bad, "import").expect_err("refused").code(), "modbus_bad_value");
    }

    #[test]
    fn a_chain_without_marker_or_end_is_refused() {
        assert_eq!(walk_models(&[0, 0, 1, 2]).expect_err("refused").code(), "modbus_map_mismatch");
        assert_eq!(walk_models(&[0x5375, 0x6E53, 1, 66]).expect_err("refused").code(), "modbus_short_read");
    }
}
