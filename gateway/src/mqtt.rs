//! The MQTT stage: the event loop (persistent session, manual acknowledgements) that feeds the
//! ingest queue, and the acknowledgement task.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, Publish, QoS};
use tokio::sync::mpsc;

use crate::ingest::Incoming;
use crate::metrics::Metrics;
use crate::READING_TOPIC_FILTER;

pub(crate) async fn mqtt_loop(
    client: AsyncClient,
    mut event_loop: rumqttc::EventLoop,
    sender: mpsc::Sender<Incoming>,
    metrics: Arc<Metrics>,
) {
    let mut failures = 0u32;
    loop {
        match event_loop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                failures = 0;
                metrics.mqtt_connected.store(true, Ordering::Relaxed);
                tracing::info!(session_present = ack.session_present, "connected to the broker");
                if let Err(error) = client.subscribe(READING_TOPIC_FILTER, QoS::AtLeastOnce).await {
                    tracing::error!(%error, "subscribe request failed");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                metrics.mqtt_subscribed.store(true, Ordering::Relaxed);
                tracing::info!(filter = READING_TOPIC_FILTER, "subscribed");
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                // A full queue blocks here, so we stop reading from the broker (back-pressure).
                let incoming = Incoming {
                    source: publish.topic.clone(),
                    site: site_of(&publish.topic).unwrap_or_default().to_string(),
                    payload: publish.payload.to_vec(),
                    ack: Some(publish),
                    rejected: None,
                    release: None,
                };
                if sender.send(incoming).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(error) => {
                metrics.mqtt_connected.store(false, Ordering::Relaxed);
                metrics.mqtt_subscribed.store(false, Ordering::Relaxed);
                failures += 1;
                let backoff = Duration::from_millis((100u64 << failures.min(6)).min(5_000));
                tracing::warn!(%error, failures, ?backoff, "MQTT connection lost; reconnecting");
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

/// Sends the acknowledgements of stored messages. Its own task, because `ack` waits for room in
/// rumqttc's request queue, which only the MQTT loop drains, and the MQTT loop may itself be
/// waiting for room in the ingest queue: awaiting acks in the ingest loop deadlocked a gateway
/// under a backlog (mosquitto sends past `max_inflight_messages` to a subscriber that
/// acknowledges in bursts). The channel holds at most what the broker has in flight to us.
pub(crate) async fn ack_loop(client: AsyncClient, mut acks: mpsc::UnboundedReceiver<Publish>) {
    while let Some(publish) = acks.recv().await {
        if let Err(error) = client.ack(&publish).await {
            tracing::warn!(%error, "acknowledgement not sent; the broker will redeliver");
        }
    }
}

/// The site in a reading topic `wattle/v1/{site}/{meter}/reading`.
pub(crate) fn site_of(topic: &str) -> Option<&str> {
    let mut parts = topic.split('/');
    (parts.next() == Some("wattle") && parts.next() == Some("v1")).then(|| parts.next()).flatten()
}
