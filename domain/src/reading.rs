//! The signed-reading format (`docs/reading-format.md` is its specification).
//!
//! A [`Reading`] is what a meter measured over one interval. Its canonical bytes (110, fixed
//! layout, big-endian, domain-separated) are what the meter signs with Ed25519. A
//! [`SignedReading`] is those exact bytes plus a signature, not yet checked; only
//! [`crate::verify`] turns it into a [`crate::verify::VerifiedReading`].

use std::fmt;

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::{EnergyWh, KeyId, MeterId, Sequence, UnixSeconds};
use crate::limits::{
    ENVELOPE_BYTES_MAX, ENVELOPE_FIELD_HEX_MAX, INTERVAL_SECONDS_MAX, METER_ID_BYTES_MAX, READING_BYTES,
};

/// Domain-separation tag that starts every reading's canonical bytes (15 bytes incl. the NUL).
pub const READING_TAG: &[u8; 15] = b"wattle.reading\0";
/// The only format version so far.
pub const FORMAT_VERSION: u8 = 1;
/// Algorithm id of Ed25519 under the ZIP-215 acceptance rule.
pub const ALGORITHM_ED25519: u8 = 1;

/// Clock-synchronisation status of the meter when it closed the interval (OCMF's S / I / U).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockStatus {
    /// Synchronised to a trusted time source.
    Synchronized = 0,
    /// Running free since its last sync, believed accurate.
    Informative = 1,
    /// Not synchronised: interval boundaries may be wrong.
    Unsynchronized = 2,
}

impl ClockStatus {
    fn from_byte(byte: u8) -> Result<Self, DecodeError> {
        match byte {
            0 => Ok(Self::Synchronized),
            1 => Ok(Self::Informative),
            2 => Ok(Self::Unsynchronized),
            other => Err(DecodeError::invalid("clock_status", format!("unknown value {other}"))),
        }
    }
}

/// Meter status bits. Undefined bits must be zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct StatusFlags(u32);

impl StatusFlags {
    /// Registers restarted from zero in this interval (meter replaced or firmware reset).
    pub const REGISTER_RESET: u32 = 1 << 0;
    /// The tamper contact (terminal cover, magnetic field) tripped during the interval.
    pub const TAMPER: u32 = 1 << 1;
    /// Supply was lost for part of the interval.
    pub const POWER_OUTAGE: u32 = 1 << 2;
    /// The meter's clock was set during the interval.
    pub const CLOCK_ADJUSTED: u32 = 1 << 3;
    /// A gateway-attested reading of an unsigned meter whose registers were read as IEEE-754
    /// float32 kWh (SDM630-style): converted to whole Wh, coarser than 1 Wh above 16,777 kWh.
    pub const FROM_FLOAT32: u32 = 1 << 4;
    /// Every defined bit.
    pub const DEFINED: u32 =
        Self::REGISTER_RESET | Self::TAMPER | Self::POWER_OUTAGE | Self::CLOCK_ADJUSTED | Self::FROM_FLOAT32;

    /// Flags from bits; undefined bits are refused.
    pub fn new(bits: u32) -> Result<Self, DecodeError> {
        if bits & !Self::DEFINED != 0 {
            return Err(DecodeError::invalid("status", format!("undefined bits {:#x}", bits & !Self::DEFINED)));
        }
        Ok(Self(bits))
    }
    /// The raw bits.
    pub fn bits(self) -> u32 {
        self.0
    }
    /// Whether every bit of `flag` is set.
    pub fn contains(self, flag: u32) -> bool {
        self.0 & flag == flag
    }
}

/// A meter's firmware version, `major.minor.patch` packed as `major << 16 | minor << 8 | patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FirmwareVersion(pub u32);

impl fmt::Display for FirmwareVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0 >> 16, (self.0 >> 8) & 0xff, self.0 & 0xff)
    }
}

/// What a meter measured over one interval: self-contained, so its energy is known from it alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reading {
    pub meter_id: MeterId,
    pub key_id: KeyId,
    pub sequence: Sequence,
    /// Start of the interval (inclusive), UTC.
    pub interval_start: UnixSeconds,
    /// End of the interval (exclusive), UTC.
    pub interval_end: UnixSeconds,
    /// Import register (OBIS 1-0:1.8.0) at the interval's start, Wh.
    pub import_start_wh: u64,
    /// Import register at the interval's end, Wh.
    pub import_end_wh: u64,
    /// Export register (OBIS 1-0:2.8.0) at the interval's start, Wh.
    pub export_start_wh: u64,
    /// Export register at the interval's end, Wh.
    pub export_end_wh: u64,
    /// Registers count modulo this value (a 9-digit kWh display rolls over at 10^12 Wh).
    pub register_modulus_wh: u64,
    pub clock_status: ClockStatus,
    pub status: StatusFlags,
    pub firmware: FirmwareVersion,
}

/// Why a reading's fields are inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidReading {
    #[error("interval end {end} is not after start {start}")]
    EmptyInterval { start: i64, end: i64 },
    #[error("interval of {seconds} s exceeds the limit of {limit} s")]
    IntervalTooLong { seconds: i64, limit: i64 },
    #[error("register modulus is zero")]
    ZeroModulus,
    #[error("register {register} = {value} Wh is not below the modulus {modulus}")]
    RegisterOutOfRange { register: &'static str, value: u64, modulus: u64 },
}

/// The register modulus of a meter with a 9-digit kWh display (rolls over at 10^12 Wh).
pub const REGISTER_MODULUS_WH_DEFAULT: u64 = 1_000_000_000_000;

/// Length of the settlement interval, in seconds.
pub const INTERVAL_SECONDS: i64 = 900;

impl Reading {
    /// The common reading: one 15-minute interval from `interval_start`, `import_wh` imported
    /// from a register at `import_start_wh`, no export, clock synchronised, no status flags,
    /// firmware 1 (simulations, benchmarks and tests build theirs from it).
    pub fn import_interval(
        meter_id: MeterId,
        key_id: KeyId,
        sequence: Sequence,
        interval_start: UnixSeconds,
        import_start_wh: u64,
        import_wh: u64,
    ) -> Reading {
        Reading {
            meter_id,
            key_id,
            sequence,
            interval_start,
            interval_end: UnixSeconds(interval_start.0 + INTERVAL_SECONDS),
            import_start_wh,
            import_end_wh: import_start_wh + import_wh,
            export_start_wh: 0,
            export_end_wh: 0,
            register_modulus_wh: REGISTER_MODULUS_WH_DEFAULT,
            clock_status: ClockStatus::Synchronized,
            status: StatusFlags::default(),
            firmware: FirmwareVersion(1),
        }
    }

    /// Checks the invariants every encoded reading satisfies.
    pub fn validate(&self) -> Result<(), InvalidReading> {
        let (start, end) = (self.interval_start.0, self.interval_end.0);
        if end <= start {
            return Err(InvalidReading::EmptyInterval { start, end });
        }
        // Widened: `end - start` overflows i64 for extreme timestamps (found by cargo fuzz).
        let length = i128::from(end) - i128::from(start);
        if length > i128::from(INTERVAL_SECONDS_MAX) {
            return Err(InvalidReading::IntervalTooLong {
                seconds: i64::try_from(length).unwrap_or(i64::MAX),
                limit: INTERVAL_SECONDS_MAX,
            });
        }
        let modulus = self.register_modulus_wh;
        if modulus == 0 {
            return Err(InvalidReading::ZeroModulus);
        }
        for (register, value) in [
            ("import_start_wh", self.import_start_wh),
            ("import_end_wh", self.import_end_wh),
            ("export_start_wh", self.export_start_wh),
            ("export_end_wh", self.export_end_wh),
        ] {
            if value >= modulus {
                return Err(InvalidReading::RegisterOutOfRange { register, value, modulus });
            }
        }
        Ok(())
    }

    /// Energy imported over the interval, allowing for one register rollover.
    pub fn import_energy(&self) -> EnergyWh {
        EnergyWh(register_delta(self.import_start_wh, self.import_end_wh, self.register_modulus_wh))
    }

    /// Energy exported over the interval, allowing for one register rollover.
    pub fn export_energy(&self) -> EnergyWh {
        EnergyWh(register_delta(self.export_start_wh, self.export_end_wh, self.register_modulus_wh))
    }

    /// The canonical bytes (what is signed). Fails only if the reading is inconsistent.
    pub fn encode(&self) -> Result<Vec<u8>, InvalidReading> {
        self.validate()?;
        let mut meter = [0u8; METER_ID_BYTES_MAX];
        meter[..self.meter_id.as_str().len()].copy_from_slice(self.meter_id.as_str().as_bytes());
        let mut writer = Writer::with_capacity(READING_BYTES);
        writer
            .fixed(READING_TAG)
            .u8(FORMAT_VERSION)
            .u8(ALGORITHM_ED25519)
            .fixed(&meter)
            .u32(self.key_id.0)
            .u64(self.sequence.0)
            .i64(self.interval_start.0)
            .i64(self.interval_end.0)
            .u64(self.import_start_wh)
            .u64(self.import_end_wh)
            .u64(self.export_start_wh)
            .u64(self.export_end_wh)
            .u64(self.register_modulus_wh)
            .u8(self.clock_status as u8)
            .u32(self.status.bits())
            .u32(self.firmware.0);
        let bytes = writer.finish();
        debug_assert_eq!(bytes.len(), READING_BYTES);
        Ok(bytes)
    }

    /// Decodes canonical bytes; rejects anything that [`Reading::encode`] would not produce.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > READING_BYTES {
            return Err(DecodeError::TrailingBytes { count: bytes.len() - READING_BYTES });
        }
        let mut reader = Reader::new(bytes);
        if reader.take(READING_TAG.len())? != READING_TAG {
            return Err(DecodeError::BadTag);
        }
        let version = reader.u8()?;
        if version != FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let algorithm = reader.u8()?;
        if algorithm != ALGORITHM_ED25519 {
            return Err(DecodeError::UnsupportedAlgorithm(algorithm));
        }
        let meter_id = decode_padded_meter_id(reader.take(METER_ID_BYTES_MAX)?)?;
        let reading = Reading {
            meter_id,
            key_id: KeyId(reader.u32()?),
            sequence: Sequence(reader.u64()?),
            interval_start: UnixSeconds(reader.i64()?),
            interval_end: UnixSeconds(reader.i64()?),
            import_start_wh: reader.u64()?,
            import_end_wh: reader.u64()?,
            export_start_wh: reader.u64()?,
            export_end_wh: reader.u64()?,
            register_modulus_wh: reader.u64()?,
            clock_status: ClockStatus::from_byte(reader.u8()?)?,
            status: StatusFlags::new(reader.u32()?)?,
            firmware: FirmwareVersion(reader.u32()?),
        };
        reader.finish()?;
        reading.validate().map_err(|error| DecodeError::invalid("reading", error.to_string()))?;
        Ok(reading)
    }

    /// Encodes and signs: what a meter does at the end of each interval.
    pub fn sign(&self, key: &SigningKey) -> Result<SignedReading, InvalidReading> {
        let bytes = self.encode()?;
        let signature = key.sign(&bytes).to_bytes();
        Ok(SignedReading { reading: self.clone(), bytes, signature })
    }
}

fn register_delta(start: u64, end: u64, modulus: u64) -> u64 {
    if end >= start {
        end - start
    } else {
        // One rollover: the register passed modulus - 1 and restarted at 0.
        modulus - start + end
    }
}

fn decode_padded_meter_id(raw: &[u8]) -> Result<MeterId, DecodeError> {
    let length = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    if raw[length..].iter().any(|&b| b != 0) {
        return Err(DecodeError::invalid("meter_id", "non-zero byte after the NUL padding"));
    }
    let text = std::str::from_utf8(&raw[..length]).map_err(|_| DecodeError::invalid("meter_id", "not ASCII"))?;
    MeterId::new(text).map_err(|error| DecodeError::invalid("meter_id", error.to_string()))
}

/// SHA-256 of a reading's canonical bytes: identifies the reading (duplicates share it;
/// equivocations share meter and sequence but not the digest).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadingDigest(pub [u8; 32]);

impl ReadingDigest {
    /// The digest of canonical bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }
}
impl fmt::Debug for ReadingDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReadingDigest({})", hex::encode(self.0))
    }
}
impl fmt::Display for ReadingDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// A decoded reading with the exact bytes it came in and a signature that has not been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedReading {
    reading: Reading,
    bytes: Vec<u8>,
    signature: [u8; 64],
}

impl SignedReading {
    /// Decodes the canonical bytes; keeps them exactly as received.
    pub fn from_parts(bytes: Vec<u8>, signature: [u8; 64]) -> Result<Self, DecodeError> {
        let reading = Reading::decode(&bytes)?;
        Ok(Self { reading, bytes, signature })
    }
    pub fn reading(&self) -> &Reading {
        &self.reading
    }
    /// The canonical bytes exactly as signed.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }
    pub fn digest(&self) -> ReadingDigest {
        ReadingDigest::of(&self.bytes)
    }
    /// The JSON envelope that carries this reading over MQTT and HTTP.
    pub fn to_envelope(&self, backfill: bool) -> Envelope {
        Envelope {
            version: FORMAT_VERSION,
            reading: hex::encode(&self.bytes),
            signature: hex::encode(self.signature),
            backfill,
        }
    }
}

/// The JSON envelope of a reading on the wire. The signed bytes travel as hex, exactly as
/// signed, so no verifier re-serialises anything; `backfill` is outside the signed bytes, so a
/// re-sent reading is still an exact duplicate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Envelope version, currently 1.
    #[serde(rename = "v")]
    pub version: u8,
    /// Canonical reading bytes, lowercase hex.
    pub reading: String,
    /// 64-byte Ed25519 signature, lowercase hex.
    pub signature: String,
    /// True when the meter re-sends an older reading on request.
    #[serde(default)]
    pub backfill: bool,
}

/// Why an envelope could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EnvelopeError {
    #[error("payload of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("not a JSON envelope: {0}")]
    Json(String),
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u8),
    #[error("field {field} is not valid hex: {reason}")]
    Hex { field: &'static str, reason: String },
    #[error("signature is {0} bytes, expected 64")]
    SignatureLength(usize),
    #[error("reading does not decode: {0}")]
    Reading(#[from] DecodeError),
}

impl EnvelopeError {
    /// A stable, machine-readable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            EnvelopeError::TooLarge { .. } => "payload_too_large",
            EnvelopeError::Json(_) => "malformed_envelope",
            EnvelopeError::UnsupportedVersion(_) => "unsupported_envelope_version",
            EnvelopeError::Hex { .. } => "malformed_envelope",
            EnvelopeError::SignatureLength(_) => "malformed_signature",
            EnvelopeError::Reading(_) => "malformed_reading",
        }
    }
}

impl Envelope {
    /// Parses an MQTT payload (JSON) into an envelope, within the size limit.
    pub fn parse_json(payload: &[u8]) -> Result<Self, EnvelopeError> {
        if payload.len() > ENVELOPE_BYTES_MAX {
            return Err(EnvelopeError::TooLarge { size: payload.len(), limit: ENVELOPE_BYTES_MAX });
        }
        serde_json::from_slice(payload).map_err(|error| EnvelopeError::Json(error.to_string()))
    }

    /// Decodes the hex fields and the reading.
    pub fn open(&self) -> Result<SignedReading, EnvelopeError> {
        if self.version != FORMAT_VERSION {
            return Err(EnvelopeError::UnsupportedVersion(self.version));
        }
        let bytes = decode_hex("reading", &self.reading)?;
        let signature = decode_hex("signature", &self.signature)?;
        let signature: [u8; 64] =
            signature.as_slice().try_into().map_err(|_| EnvelopeError::SignatureLength(signature.len()))?;
        Ok(SignedReading::from_parts(bytes, signature)?)
    }
}

fn decode_hex(field: &'static str, text: &str) -> Result<Vec<u8>, EnvelopeError> {
    if text.len() > ENVELOPE_FIELD_HEX_MAX {
        return Err(EnvelopeError::Hex {
            field,
            reason: format!("{} characters, limit {ENVELOPE_FIELD_HEX_MAX}", text.len()),
        });
    }
    // One spelling per value: the wire format is lower-case hex (docs/reading-format.md).
    if let Some(upper) = text.chars().find(char::is_ascii_uppercase) {
        return Err(EnvelopeError::Hex {
            field,
            reason: format!("upper-case {upper:?}; the envelope is lower-case hex"),
        });
    }
    hex::decode(text).map_err(|error| EnvelopeError::Hex { field, reason: error.to_string() })
}
