//! Named limits of the gateway, each with its reason.

use std::time::Duration;

/// Readings verified and stored together: one batch verification and one fsync per batch.
pub const INGEST_BATCH_MAX: usize = 512;
/// Messages buffered between the MQTT event loop and the verifier; bounds memory, and while it
/// is full the event loop stops reading, so the broker holds the messages (unacknowledged).
pub const INGEST_QUEUE_MAX: usize = 4_096;
/// Readings per request to the ledger (at most the ledger's batch limit).
pub const FORWARD_BATCH_MAX: usize = 1_000;
/// Backoff between failed forwards: doubles from the first to the last value.
pub const FORWARD_BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const FORWARD_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Longest wait a ledger's `Retry-After` can impose on the forward loop (a larger value, or a
/// date, is capped here: a misconfigured node must not stall a substation for an hour).
pub const LEDGER_RETRY_AFTER_MAX: Duration = Duration::from_secs(60);
/// Timeout of one request to the ledger.
pub const LEDGER_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// While no registry was ever loaded, how often the ledger is asked for it.
pub const REGISTRY_WAIT_RETRY: Duration = Duration::from_secs(1);
/// Least time between registry refreshes triggered by unknown meters.
pub const REGISTRY_REFRESH_MIN: Duration = Duration::from_secs(1);
/// Unacknowledged QoS 1 messages the broker may send us at once.
pub const MQTT_INFLIGHT_MAX: u16 = 1_000;
/// Most quarantine entries returned by one listing.
pub const QUARANTINE_PAGE_MAX: usize = 1_000;
/// Longest payload kept verbatim in the quarantine (longer ones are cut, with their length noted).
pub const QUARANTINE_PAYLOAD_BYTES_MAX: usize = 4_096;
/// How often the gap-recovery round runs.
pub const GAP_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// How long after asking a meter for missing readings the gateway asks it again.
pub const GAP_RETRY_AFTER: Duration = Duration::from_secs(5);
/// Requests per gap before it is reported unfillable (the meter no longer remembers it, or is gone).
pub const GAP_REQUESTS_MAX: u32 = 5;
/// Most sequences in one backfill command (docs/mqtt.md).
pub const BACKFILL_SPAN_MAX: u64 = 4_096;
/// Default maximum power of a metering point: 1 MW (a large commercial connection).
pub const MAX_POWER_W_DEFAULT: u64 = 1_000_000;
/// Default: how far past the gateway's clock an interval may end (two intervals).
pub const CLOCK_AHEAD_S_MAX_DEFAULT: i64 = 1_800;
/// Sequences per meter whose accepted digest the gateway keeps, to tell a duplicate from an
/// equivocation: 40 days of 15-minute intervals, longer than meters remember for backfill.
pub const SEEN_WINDOW_SEQUENCES: u64 = 40 * 96;
/// Largest MQTT packet the gateway accepts. Envelopes are at most 2 KiB; anything up to this size
/// is received and quarantined as `payload_too_large`. Set the broker's `max_packet_size` to this
/// or less: a larger packet would fail the connection and be redelivered.
pub const MQTT_PACKET_BYTES_MAX: usize = 256 * 1024;
/// Most sequences asked for in one gap-recovery round: their answers must fit the broker's
/// queue for the gateway (mosquitto's default `max_queued_messages` is 1,000) beside live traffic.
pub const BACKFILL_SEQUENCES_PER_ROUND: u64 = 500;
/// Backfill requests queued per Modbus device (the gap loop drops further ones until the next round).
pub const MODBUS_BACKFILL_QUEUE_MAX: usize = 16;
/// Sequences read from a Modbus device's history per backfill request: each is one round trip,
/// so live polling of the device waits at most this many requests.
pub const MODBUS_BACKFILL_PER_REQUEST_MAX: u64 = 64;
/// Backoff between Modbus reconnects: doubles from the first to the last value.
pub const MODBUS_BACKOFF_MIN: Duration = Duration::from_millis(200);
pub const MODBUS_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Least time between two reclaims of disk space while over the budget (a flush and a compaction
/// of the outbox: seconds of I/O on a large database).
pub const DISK_RECLAIM_INTERVAL: Duration = Duration::from_secs(3);
/// Over the disk budget, readings are taken again once the database is below this many tenths of
/// it (hysteresis: no flapping at the edge).
pub const DISK_RESUME_TENTHS: u64 = 9;
/// How often the database's size is checked against the disk budget.
pub const DISK_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Default disk budget of the gateway's database: 8 GiB (40 days of 100,000 meters' outbox
/// would need far less; the budget guards a substation box's small disk).
pub const DISK_BUDGET_BYTES_DEFAULT: u64 = 8 * 1024 * 1024 * 1024;
/// Default interval of gateway-attested readings of unsigned meters (seconds).
pub const ATTEST_INTERVAL_S_DEFAULT: i64 = 900;
/// Default most entries in the garbage store (garbage and unverified readings, `DATA_DIR/garbage`):
/// each holds at most `QUARANTINE_PAYLOAD_BYTES_MAX` of payload and `QUARANTINE_DETAIL_BYTES_MAX`
/// of detail, so the store stays near 50 MiB, outside the disk budget; past it the oldest go first.
pub const GARBAGE_ENTRIES_MAX_DEFAULT: u64 = 10_000;
/// Default retention of garbage entries (on the gateway's clock): a week to look at an attack.
pub const GARBAGE_RETENTION_DEFAULT: Duration = Duration::from_secs(7 * 24 * 3_600);
/// How often garbage past its retention is dropped (and the garbage database compacted).
pub const GARBAGE_PRUNE_INTERVAL: Duration = Duration::from_secs(10);
/// Longest detail text kept in a quarantine entry (parser messages can quote their input).
pub const QUARANTINE_DETAIL_BYTES_MAX: usize = 512;
/// Backoff of a reading the ledger refused for a cause that may go away (`unknown_meter`,
/// `no_tariff`, ...): doubles from the first to the last value, on the wall clock.
pub const RETRY_BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Default retry horizon: past it (counted from the first refusal) a refused reading is held in
/// the quarantine, bytes kept, for `wattle quarantine release`. A day covers an operator's
/// reaction to a missing registration or price.
pub const RETRY_HORIZON_DEFAULT: Duration = Duration::from_secs(24 * 3_600);
/// Retries submitted per forward round, beside the outbox head (so neither starves the other).
pub const FORWARD_RETRIES_MAX: usize = 250;
/// Most quarantine entries one release request re-submits (the command pages through more).
pub const RELEASE_ENTRIES_MAX: usize = 1_000;
/// Most quarantine entries one release request looks at to find them.
pub const RELEASE_SCAN_MAX: usize = 100_000;
/// Most release requests `wattle quarantine release` makes in one run (each releases at most
/// `RELEASE_ENTRIES_MAX`).
pub const RELEASE_ROUNDS_MAX: usize = 1_000;
/// Memtable size of the garbage database: small, so its write-ahead log is flushed and recycled
/// every few megabytes of garbage instead of growing to RocksDB's default 64 MiB.
pub const GARBAGE_WRITE_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// While unverified readings wait for their meter, how often the registry is fetched even if no
/// new reading of an unknown meter triggers it (a meter registered after it fell silent).
pub const REGISTRY_POLL_WHILE_UNVERIFIED: Duration = Duration::from_secs(30);
