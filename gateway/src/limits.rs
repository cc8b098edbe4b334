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
/// Timeout of one request to the ledger.
pub const LEDGER_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Least time between registry refreshes triggered by unknown meters.
pub const REGISTRY_REFRESH_MIN: Duration = Duration::from_secs(1);
/// Unacknowledged QoS 1 messages the broker may send us at once.
pub const MQTT_INFLIGHT_MAX: u16 = 1_000;
/// Most quarantine entries returned by one listing.
pub const QUARANTINE_PAGE_MAX: usize = 1_000;
/// Longest payload kept verbatim in the quarantine (longer ones are cut, with their length noted).
pub const QUARANTINE_PAYLOAD_BYTES_MAX: usize = 4_096;
