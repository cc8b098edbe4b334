//! Named limits of the simulator.

use std::time::Duration;

/// Unacknowledged QoS 1 publishes in flight per connection (the MQTT receive maximum).
pub const MQTT_INFLIGHT_MAX: u16 = 100;
/// Publishes queued in the client before `publish` waits: bounds memory.
pub const MQTT_REQUEST_QUEUE_MAX: usize = 1_000;
/// How long to wait at the end for the broker to acknowledge every publish.
pub const ACK_WAIT_MAX: Duration = Duration::from_secs(30);
