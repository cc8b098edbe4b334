//! Named limits of the simulator.

use std::time::Duration;

/// Unacknowledged QoS 1 publishes in flight per connection (the MQTT receive maximum).
pub const MQTT_INFLIGHT_MAX: u16 = 200;
/// Publishes queued in a client before `publish` waits: bounds memory per connection.
pub const MQTT_REQUEST_QUEUE_MAX: usize = 256;
/// Largest MQTT packet a site connection accepts (backfill commands are tiny).
pub const MQTT_PACKET_BYTES_MAX: usize = 64 * 1024;
/// How long to wait at the end for the broker to acknowledge every publish.
pub const ACK_WAIT_MAX: Duration = Duration::from_secs(120);
/// Most sequences one backfill command may ask for (40 days of 15-minute readings is 3,840).
pub const BACKFILL_RANGE_MAX: u64 = 4_096;
/// Backfill commands waiting per connection; more are dropped and counted.
pub const COMMAND_QUEUE_MAX: usize = 1_024;
/// How long a meter keeps its readings for backfill, by default (real meters: weeks).
pub const MEMORY_DAYS_DEFAULT: u32 = 40;
