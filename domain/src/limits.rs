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

/// Most negative dynamic price per kWh: day-ahead prices went to −0.50 €/kWh in 2023–2025
/// (the harmonised floor is −500 €/MWh); −1,000 bounds them as `PRICE_PER_KWH_MAX` bounds prices.
pub const DYNAMIC_PRICE_PER_KWH_MIN: i32 = -1_000;

/// Largest standing charge per local day or demand price per kW, in currency units: real ones
/// are below 10 (a daily standing charge) or 30 (a monthly kW price); 1,000 keeps a period's
/// charge far inside `rust_decimal`'s range.
pub const TARIFF_CHARGE_MAX: u32 = 1_000;

/// Most time-of-use windows over all seasons, tiers, levies, seasons and holidays in one tariff
/// version: bounds the work of validating and pricing an interval, and an admin transaction's size.
pub const TARIFF_WINDOWS_MAX: usize = 96;
pub const TARIFF_TIERS_MAX: usize = 16;
pub const TARIFF_LEVIES_MAX: usize = 16;
pub const TARIFF_SEASONS_MAX: usize = 12;
pub const TARIFF_HOLIDAYS_MAX: usize = 1_000;

/// Largest TOML tariff document: a full tariff is a few kB.
pub const TARIFF_TOML_BYTES_MAX: usize = 64 * 1024;

/// Largest canonical JSON of a credit order in an admin transaction (`CreditInvoice`).
pub const CREDIT_ORDER_JSON_BYTES_MAX: usize = 16 * 1024;
/// Largest canonical JSON of a tariff version in an admin transaction (`PublishTariff`).
pub const TARIFF_JSON_BYTES_MAX: usize = 64 * 1024;

/// Largest canonical JSON of a binding in an admin transaction (`Bind`): a binding is ~300 bytes.
pub const BINDING_JSON_BYTES_MAX: usize = 4 * 1024;

/// Most prices in one `PublishPrices` transaction: 31 days of 15-minute intervals (2,976) and the
/// four of a 25-hour day.
pub const PRICE_SERIES_POINTS_MAX: usize = 2_980;

/// Largest canonical JSON of a price series: ~40 bytes a point.
pub const PRICE_SERIES_JSON_BYTES_MAX: usize = 160 * 1024;

/// How long after a billing period ends its close waits for late readings (the grace window),
/// measured in leader-stamped time: the first tick at or after `end + grace` closes it. Readings
/// of its intervals arriving later are corrections on the next statement.
pub const PERIOD_CLOSE_GRACE_SECONDS: i64 = 86_400;

/// How often the leader proposes a tick transaction (the state machine's only notion of time
/// passing when no readings arrive).
pub const TICK_INTERVAL_MS: u64 = 10_000;

/// Settlement interval: 15 minutes (EU imbalance settlement period, DOMAIN.md §6).
pub const SETTLEMENT_INTERVAL_SECONDS: i64 = 900;

/// Longest span between two register samples the mapping splits: 35 days (a month-long outage
/// plus a grace window). A longer span is refused, not spread thinly over a month.
pub const REGISTER_SPAN_SECONDS_MAX: i64 = 35 * 86_400;

/// Longest span a missing interval may be interpolated linearly over (VEE): 6 hours. Beyond
/// it, a straight line says nothing about the load shape; the week-earlier rule applies.
pub const VEE_LINEAR_SPAN_SECONDS_MAX: i64 = 6 * 3_600;

/// Most members a consortium has (founders, parties that joined, auditors).
pub const MEMBERS_MAX: usize = 32;
/// Most actions one proposal carries: enough for a fleet's registry in a few proposals, small
/// enough that a proposal stays far under `TRANSACTION_BYTES_MAX`.
pub const PROPOSAL_ACTIONS_MAX: usize = 512;
/// Longest proposal title, in bytes.
pub const PROPOSAL_TITLE_BYTES_MAX: usize = 200;
/// Longest a proposal may stay open: its expiry is at most this far after it is proposed.
pub const PROPOSAL_LIFETIME_SECONDS_MAX: i64 = 90 * 86_400;
/// Largest governance document (genesis, member, constitution) as canonical JSON.
pub const GOV_DOCUMENT_JSON_BYTES_MAX: usize = 16 * 1024;

/// Most keys one meter keeps over its life (`keyring`): rotations beyond this need a new meter id.
pub const METER_KEYS_MAX: usize = 16;

/// Most tokens one token file holds (billing's, the gateway's): the file is read whole on every
/// change.
pub const TOKEN_RECORDS_MAX: usize = 100_000;

/// Longest label a token may carry.
pub const TOKEN_LABEL_BYTES_MAX: usize = 200;
