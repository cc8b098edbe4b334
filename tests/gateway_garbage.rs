//! Garbage cannot starve the gateway (issue 12, finding 2), with real processes: while the fleet
//! streams, a client floods the broker (which has no credentials) with oversized garbage on a
//! reading topic — `FLOOD_MESSAGES` messages just under the gateway's packet limit, a gigabyte.
//! The gateway keeps its garbage in a bounded store of its own, outside the disk budget of its
//! outbox: it stays under the budget, drops the oldest garbage past the bound and counts it, and
//! every good reading is settled.

use std::time::{Duration, Instant};

use anyhow::Context;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, QoS};

use crate::support::{
    clock_args, complete_truth, configure_ledger, get_json, metrics, poll_until, spawn_sim_with, start_gateway_with,
    start_single_ledger, Mosquitto, CLUSTER_SERIAL,
};

const METERS: u32 = 10;
const SEED: u64 = 71;
const EPOCH: &str = "2026-12-01T00:00:00Z";
const SPEED: u32 = 3_600;
/// 20 s of streaming at four intervals a second.
const INTERVALS: u64 = 80;
/// 4,096 messages of just under 256 KiB: one gigabyte (the figure).
const FLOOD_MESSAGES: usize = 4_096;
const FLOOD_BYTES: usize = 255 * 1024;
/// The garbage store's bound for this test: the flood passes it twenty times over.
const GARBAGE_MAX: u64 = 200;
/// The disk budget (MiB): far below what the flood's quarantine entries alone would take (each
/// keeps 4 KiB of its payload, about 17 MiB for the flood), far above the fleet's outbox.
const BUDGET_MB: u64 = 8;

/// Publishes the flood at QoS 1 and returns once the broker acknowledged every message.
async fn flood(port: u16, topic: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut options = MqttOptions::new("flooder", "127.0.0.1", port);
    options.set_max_packet_size(FLOOD_BYTES + 1024, FLOOD_BYTES + 1024);
    options.set_inflight(64);
    let (client, mut event_loop) = AsyncClient::new(options, 64);
    let topic = topic.to_string();
    let publisher = tokio::spawn(async move {
        for index in 0..FLOOD_MESSAGES {
            let payload = vec![b'a' + (index % 26) as u8; FLOOD_BYTES];
            client.publish(&topic, QoS::AtLeastOnce, false, payload).await?;
        }
        anyhow::Ok(client)
    });
    let mut acknowledged = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    while acknowledged < FLOOD_MESSAGES {
        anyhow::ensure!(Instant::now() < deadline, "the flood did not finish: {acknowledged} acknowledged");
        match tokio::time::timeout(Duration::from_secs(30), event_loop.poll()).await {
            Ok(Ok(Event::Incoming(rumqttc::Packet::PubAck(_)))) => acknowledged += 1,
            Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => anyhow::bail!("disconnected"),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => anyhow::bail!("flood connection failed after {acknowledged}: {error}"),
            Err(_) => anyhow::bail!("the broker went silent after {acknowledged} acknowledgements"),
        }
    }
    let client = publisher.await??;
    let _ = client.disconnect().await;
    Ok(started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_of_garbage_leaves_the_gateway_under_budget_with_every_reading_settled() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let clock = clock_args(EPOCH, SPEED, domain::clock::wall_clock_now().0);
    configure_ledger(dir.path(), METERS, SEED, "0.30")?;
    let (node, ledger_url) = start_single_ledger(dir.path(), &clock).await?;
    let broker = Mosquitto::start(dir.path(), "").await?;
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, format!("garbage_entries_max = {GARBAGE_MAX}\ndisk_budget_mb = {BUDGET_MB}\n"))?;
    let extra = ["--config".to_string(), config.display().to_string()];
    let (gateway, gateway_url) =
        start_gateway_with(dir.path(), "gw-flood", broker.port, std::slice::from_ref(&ledger_url), &clock, &extra)
            .await?;
    let linger = ["--linger-s".to_string(), "300".to_string()];
    let sim = spawn_sim_with(dir.path(), broker.port, (METERS, SEED, INTERVALS), EPOCH, &clock, &linger)?;
    let diagnostics = || crate::support::log_tails(&[&gateway, &node, &sim]) + &broker.log_tail();
    let topic = format!("wattle/v1/site-0/{}/reading", firmware_sim::meter_id(0));
    let took = flood(broker.port, &topic).await.with_context(diagnostics)?;
    println!("{FLOOD_MESSAGES} messages of {FLOOD_BYTES} bytes published in {took:?}");
    // The gateway has taken what the broker kept for it (the broker drops past its queue limit).
    let received = poll_until("the flood taken", Duration::from_secs(300), || async {
        let counters = metrics(&http, &gateway_url).await?;
        let garbage = counters.get("wattle_gateway_readings_rejected_total{reason=\"payload_too_large\"}")?;
        let depth = get_json(&http, &format!("{gateway_url}/healthz")).await?;
        // Nothing of the flood is still in flight once no message waits in the broker for us.
        (*garbage >= GARBAGE_MAX * 5 && depth["mqtt_connected"] == true).then_some(*garbage)
    })
    .await
    .with_context(diagnostics)?;
    let truth = complete_truth(dir.path(), METERS, INTERVALS).await.with_context(diagnostics)?;
    let expected = truth.records.len();
    poll_until("every good reading settled", Duration::from_secs(180), || async {
        let mut settled = 0;
        for meter in 0..METERS {
            let customer = firmware_sim::customer_id(meter);
            let account = get_json(&http, &format!("{ledger_url}/v1/customers/{customer}/account")).await?;
            settled += account["intervals_settled"].as_u64()?;
        }
        (settled == expected as u64).then_some(())
    })
    .await
    .with_context(diagnostics)?;
    let counters = metrics(&http, &gateway_url).await.context("metrics")?;
    let counter = |name: &str| counters.get(name).copied().unwrap_or(0);
    let received_all = counter("wattle_gateway_readings_rejected_total{reason=\"payload_too_large\"}");
    let dropped = counter("wattle_gateway_garbage_dropped_total{class=\"garbage\"}");
    let kept = counter("wattle_gateway_garbage_entries");
    println!(
        "garbage: {received_all} received (first look: {received}), {dropped} dropped past the bound, {kept} kept in \
         {} bytes; outbox database {} bytes of a {} byte budget; {} readings deferred over the budget",
        counter("wattle_gateway_garbage_bytes"),
        counter("wattle_gateway_disk_bytes"),
        counter("wattle_gateway_disk_budget_bytes"),
        counter("wattle_gateway_readings_deferred_disk_budget_total"),
    );
    assert!(kept <= GARBAGE_MAX, "the garbage store holds {kept} entries, bound {GARBAGE_MAX}");
    assert_eq!(dropped + kept, received_all, "every garbage entry is kept or counted as dropped");
    assert_eq!(counter("wattle_gateway_readings_deferred_disk_budget_total"), 0, "{}", diagnostics());
    let health = get_json(&http, &format!("{gateway_url}/healthz")).await.context("healthz")?;
    assert_eq!(health["over_disk_budget"], false, "{health}");
    let operator = crate::support::gateway_client(dir.path())?;
    let quarantine =
        get_json(&operator, &format!("{gateway_url}/v1/quarantine?limit=1000")).await.context("quarantine")?;
    let listed = quarantine["entries"].as_array().context("entries")?.len() as u64;
    assert_eq!(listed, kept, "the listing shows what the store keeps");
    Ok(())
}
