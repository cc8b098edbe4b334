//! Named limits of the domain crate, each with the reason for its value.

/// Length of a reading's canonical bytes. Fixed layout, so one Modbus read of 125 registers holds
/// the reading, its 64-byte signature and two copies of the sequence.
pub const READING_BYTES: usize = 110;

/// Longest meter id: DIN 43863-5 meter ids are 14 characters; 16 leaves room for prefixes.
pub const METER_ID_BYTES_MAX: usize = 16;

/// Longest customer or gateway id: keeps ids printable in logs and fixed-bounded in the codec.
pub const ID_BYTES_MAX: usize = 32;

/// Most readings in one ledger transaction: bounds an entry to well under 1 MiB
/// (8,192 × ~180 bytes ≈ 1.5 MB worst case is too much for one raft append, 4,096 is ~0.7 MB).
pub const BATCH_READINGS_MAX: usize = 4_096;

/// Longest hex-encoded envelope field accepted from the wire (reading or signature); anything
/// longer cannot be a valid reading and is rejected before decoding.
pub const ENVELOPE_FIELD_HEX_MAX: usize = 512;

/// Largest MQTT/HTTP envelope payload in bytes, for the same reason.
pub const ENVELOPE_BYTES_MAX: usize = 2_048;

/// Largest canonical transaction accepted by the decoder (a full reading batch plus headroom).
pub const TRANSACTION_BYTES_MAX: usize = 2 * 1024 * 1024;

/// Longest interval a reading may cover: one day. Longer spans are not meter intervals.
pub const INTERVAL_SECONDS_MAX: i64 = 86_400;

/// Largest flat price per kWh an operator may set, in currency units. Retail prices are well
/// below 1 per kWh in every currency we bill in; 1,000 leaves room for any of them and keeps the
/// largest reading's charge (1 GWh at this price, 10^9 units) and every account sum far inside
/// `rust_decimal`'s range (about 7.9 × 10^28).
pub const PRICE_PER_KWH_MAX: u32 = 1_000;

/// Most decimal places of a price per kWh: 8 (a millionth of a cent). A reading's charge then has
/// at most 11 (energy is in Wh, 3 places of a kWh), well inside `rust_decimal`'s 28.
pub const PRICE_SCALE_MAX: u32 = 8;
