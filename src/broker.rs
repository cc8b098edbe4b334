//! The sandbox's embedded MQTT broker: rumqttd on a loopback port of its own, behind a small
//! front that lets standard clients connect without a client id.
//!
//! MQTT 3.1.1 (§3.1.3.1) lets a client send a zero-length client id with a clean session and the
//! server assign one; mosquitto's own clients do that by default (`mosquitto_sub -t '#'`).
//! rumqttd 0.19 refuses such a connection (its only switch, `allow-duplicate-clientid`, also
//! turns off the take-over of a client id by a new connection, which the gateway's persistent
//! session relies on). So the front reads each connection's CONNECT packet, gives an empty id of a
//! clean session a generated one (`wattle-auto-N`), and then copies bytes both ways unchanged.
//! Everything else (an empty id with a persistent session, MQTT 5, malformed packets) goes to
//! rumqttd as it came, so rumqttd answers it as it would.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The largest CONNECT packet the front reads whole (client id, will, user name and password);
/// a larger one is passed through untouched.
const CONNECT_BYTES_MAX: usize = 64 * 1024;
/// How long a new connection may take to send its CONNECT before the front passes on what it has.
const CONNECT_WAIT_MAX: Duration = Duration::from_secs(10);
/// Connections the front carries at once (rumqttd's own limit is set higher).
const CONNECTIONS_MAX: usize = 10_000;

/// Starts rumqttd on a free internal port and the front on `port`; returns once both listen.
pub async fn start(port: u16) -> anyhow::Result<()> {
    let internal = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    start_rumqttd(internal)?;
    let listener = TcpListener::bind(("127.0.0.1", port)).await.context("binding the MQTT broker's port")?;
    let generated = Arc::new(AtomicU64::new(0));
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    tokio::spawn(async move {
        loop {
            let (client, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "MQTT front: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(limit = CONNECTIONS_MAX, "MQTT front: connection refused, at its limit");
                continue;
            };
            let generated = generated.clone();
            tokio::spawn(async move {
                if let Err(error) = relay(client, internal, &generated).await {
                    tracing::debug!(%error, "MQTT front: connection ended");
                }
                drop(slot);
            });
        }
    });
    Ok(())
}

/// Starts rumqttd on 127.0.0.1 in its own thread (its `start()` blocks).
fn start_rumqttd(port: u16) -> anyhow::Result<()> {
    let config = format!(
        r#"
id = 0
[router]
max_connections = 10010
max_outgoing_packet_count = 2000
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 20480
max_inflight_count = 1000
dynamic_filters = true
"#
    );
    let config: rumqttd::Config = toml::from_str(&config).context("embedded broker configuration")?;
    std::thread::Builder::new().name("rumqttd".into()).spawn(move || {
        let mut broker = rumqttd::Broker::new(config);
        if let Err(error) = broker.start() {
            tracing::error!(%error, "embedded MQTT broker stopped");
        }
    })?;
    Ok(())
}

async fn relay(mut client: TcpStream, internal: u16, generated: &AtomicU64) -> anyhow::Result<()> {
    client.set_nodelay(true)?;
    let first = tokio::time::timeout(CONNECT_WAIT_MAX, read_packet(&mut client)).await.unwrap_or(Ok(Vec::new()))?;
    let first = match assign_client_id(&first, || format!("wattle-auto-{}", generated.fetch_add(1, Ordering::Relaxed)))
    {
        Some(rewritten) => rewritten,
        None => first,
    };
    let mut broker = connect_internal(internal).await?;
    broker.set_nodelay(true)?;
    broker.write_all(&first).await?;
    tokio::io::copy_bidirectional(&mut client, &mut broker).await?;
    Ok(())
}

/// rumqttd listens a moment after its thread starts: retry briefly.
async fn connect_internal(port: u16) -> anyhow::Result<TcpStream> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(stream) => return Ok(stream),
            Err(error) if tokio::time::Instant::now() >= deadline => {
                return Err(error).context("connecting to the embedded rumqttd")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Reads one MQTT packet (fixed header, remaining length, body), or what arrived of it if the
/// stream ends, the length is malformed, or the packet exceeds [`CONNECT_BYTES_MAX`].
async fn read_packet(stream: &mut TcpStream) -> anyhow::Result<Vec<u8>> {
    let mut packet = vec![0u8; 1];
    if stream.read(&mut packet).await? == 0 {
        return Ok(Vec::new());
    }
    let mut length = 0usize;
    for shift in 0..4 {
        let byte = stream.read_u8().await?;
        packet.push(byte);
        length |= usize::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            if length <= CONNECT_BYTES_MAX {
                let start = packet.len();
                packet.resize(start + length, 0);
                stream.read_exact(&mut packet[start..]).await?;
            }
            return Ok(packet);
        }
    }
    Ok(packet)
}

/// If `packet` is an MQTT 3.1.1 CONNECT with a clean session and an empty client id, the same
/// packet with the id `make_id()` in its place.
fn assign_client_id(packet: &[u8], make_id: impl FnOnce() -> String) -> Option<Vec<u8>> {
    const CONNECT: u8 = 0x10;
    const CLEAN_SESSION: u8 = 0x02;
    if packet.first() != Some(&CONNECT) {
        return None;
    }
    let mut index = 1;
    let mut length = 0usize;
    for shift in 0..4 {
        let byte = *packet.get(index)?;
        index += 1;
        length |= usize::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            break;
        }
    }
    let body = packet.get(index..)?;
    if body.len() != length {
        return None;
    }
    // Variable header: protocol name "MQTT", level 4, flags, keep-alive; then the client id.
    let (name, level, flags) = (body.get(0..6)?, *body.get(6)?, *body.get(7)?);
    if name != b"\x00\x04MQTT" || level != 4 || flags & CLEAN_SESSION == 0 || body.get(10..12)? != [0, 0] {
        return None;
    }
    let id = make_id();
    let id_length = u16::try_from(id.len()).ok()?;
    let mut new_body = Vec::with_capacity(body.len() + id.len());
    new_body.extend_from_slice(&body[..10]);
    new_body.extend_from_slice(&id_length.to_be_bytes());
    new_body.extend_from_slice(id.as_bytes());
    new_body.extend_from_slice(&body[12..]);
    let mut rewritten = vec![CONNECT];
    let mut remaining = new_body.len();
    loop {
        let mut byte = (remaining % 128) as u8;
        remaining /= 128;
        if remaining > 0 {
            byte |= 0x80;
        }
        rewritten.push(byte);
        if remaining == 0 {
            break;
        }
    }
    rewritten.extend_from_slice(&new_body);
    Some(rewritten)
}

#[cfg(test)]
mod tests {
    use super::assign_client_id;

    fn connect(flags: u8, id: &str) -> Vec<u8> {
        let mut body = b"\x00\x04MQTT\x04".to_vec();
        body.push(flags);
        body.extend_from_slice(&60u16.to_be_bytes());
        body.extend_from_slice(&(id.len() as u16).to_be_bytes());
        body.extend_from_slice(id.as_bytes());
        let mut packet = vec![0x10, body.len() as u8];
        packet.extend_from_slice(&body);
        packet
    }

    #[test]
    fn an_empty_id_of_a_clean_session_is_assigned_one() {
        let rewritten = assign_client_id(&connect(0x02, ""), || "wattle-auto-7".into()).expect("rewritten");
        assert_eq!(rewritten, connect(0x02, "wattle-auto-7"));
    }

    #[test]
    fn other_connects_pass_unchanged() {
        assert_eq!(assign_client_id(&connect(0x02, "gw"), || "x".into()), None, "an id of its own");
        assert_eq!(assign_client_id(&connect(0x00, ""), || "x".into()), None, "a persistent session");
        assert_eq!(assign_client_id(&[0x30, 0x00], || "x".into()), None, "not a CONNECT");
        assert_eq!(assign_client_id(&connect(0x02, "")[..8], || "x".into()), None, "truncated");
    }
}
