//! The gateway's gap recovery with real processes: mosquitto (default configuration, so its
//! per-client queue limit of 1,000 messages drops readings), a ledger node, the gateway and the
//! fleet simulator.

use std::time::Duration;

use anyhow::Context;

use crate::support::{
    clock_args, configure_ledger, get_json, metric, poll_until, sim_published, spawn_sim_with, start_gateway,
    start_single_ledger, wattle, Mosquitto, Process, CLUSTER_SERIAL,
};

const METERS: u32 = 100;
const SEED: u64 = 23;
const EPOCH: &str = "2026-06-01T00:00:00Z";
/// 900 s intervals at 9,000x: ten intervals (1,000 readings) per second.
const SPEED: u32 = 9_000;
/// 130 intervals (13,000 readings, ~13 s); the gateway is stopped for 6.5 s of them (~6,500
/// readings), and the intervals after that reveal the gaps.
const INTERVALS: u64 = 130;

/// A ledger node with the fleet's registry, mosquitto and a gateway, on one accelerated clock.
struct Platform {
    dir: tempfile::TempDir,
    http: reqwest::Client,
    clock: Vec<String>,
    node: Process,
    ledger_url: String,
    broker: Mosquitto,
    gateway: Process,
    gateway_url: String,
}

impl Platform {
    async fn start(gateway_id: &str, gateway_extra: &[&str]) -> anyhow::Result<Platform> {
        let dir = tempfile::tempdir()?;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        let clock = clock_args(EPOCH, SPEED, domain::clock::wall_clock_now().0);
        let (node, ledger_url) = start_ledger(dir.path(), &clock).await?;
        let broker = Mosquitto::start(dir.path(), "").await?;
        let mut gateway_args = clock.clone();
        gateway_args.extend(gateway_extra.iter().map(|arg| arg.to_string()));
        let (gateway, gateway_url) =
            start_gateway(dir.path(), gateway_id, broker.port, std::slice::from_ref(&ledger_url), &gateway_args)
                .await?;
        Ok(Platform { dir, http, clock, node, ledger_url, broker, gateway, gateway_url })
    }
}

/// Starts a single ledger node with the fleet's registry; returns it and its URL.
async fn start_ledger(dir: &std::path::Path, clock: &[String]) -> anyhow::Result<(Process, String)> {
    configure_ledger(dir, METERS, SEED, "0.25")?;
    start_single_ledger(dir, clock).await
}

/// Waits until every meter's customer has `intervals` intervals settled (one meter per customer).
async fn every_sequence_settled(http: &reqwest::Client, ledger_url: &str, intervals: u64) -> anyhow::Result<()> {
    poll_until("every sequence settled", Duration::from_secs(120), || async move {
        for meter in 0..METERS {
            let customer = firmware_sim::customer_id(meter);
            let account = get_json(http, &format!("{ledger_url}/v1/customers/{customer}/account")).await?;
            if account["intervals_settled"].as_u64() != Some(intervals) {
                return None;
            }
        }
        Some(())
    })
    .await
}

/// SIGSTOP the gateway while 5,000+ readings are published: mosquitto acknowledges them all to
/// the meters and drops what exceeds its queue. After SIGCONT the gateway sees the gaps, asks
/// the meters on their backfill topics, and every sequence reaches the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_the_broker_dropped_reach_the_ledger_by_backfill() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    // A keepalive longer than the stop: the broker keeps the session open and queues for it.
    let Platform { dir, http, clock, node, ledger_url, broker, gateway, gateway_url } =
        Platform::start("gw-gaps", &["--mqtt-keepalive-s", "300"]).await?;

    let linger = ["--linger-s".to_string(), "120".to_string()];
    let sim = spawn_sim_with(dir.path(), broker.port, (METERS, SEED, INTERVALS), EPOCH, &clock, &linger)?;
    poll_until("the first readings stored", Duration::from_secs(30), || {
        let fetch = metric(&http, &gateway_url, "wattle_gateway_readings_accepted_total");
        async move { fetch.await.filter(|count| *count > 0) }
    })
    .await?;
    gateway.signal("STOP")?;
    let at_stop = sim_published(dir.path()).unwrap_or(0);
    let during_stop =
        poll_until("5,000 readings published while the gateway is stopped", Duration::from_secs(30), || {
            let published = sim_published(dir.path()).filter(|count| *count >= at_stop + 5_000);
            async move { published }
        })
        .await?
            - at_stop;
    gateway.signal("CONT")?;

    poll_until("gaps found", Duration::from_secs(60), || {
        let fetch = metric(&http, &gateway_url, "wattle_gateway_gap_sequences_opened_total");
        async move { fetch.await.filter(|count| *count > 0) }
    })
    .await
    .with_context(|| format!("gateway log:\n{}", gateway.log_tail()))?;
    // Every meter's every sequence is settled: each customer has one meter.
    every_sequence_settled(&http, &ledger_url, INTERVALS)
        .await
        .with_context(|| format!("gateway log:\n{}\nsim log:\n{}", gateway.log_tail(), sim.log_tail()))?;
    let opened = metric(&http, &gateway_url, "wattle_gateway_gap_sequences_opened_total").await.unwrap_or(0);
    let filled = metric(&http, &gateway_url, "wattle_gateway_gap_sequences_filled_total").await.unwrap_or(0);
    let open = metric(&http, &gateway_url, "wattle_gateway_gap_sequences_open").await.unwrap_or(u64::MAX);
    let requests = metric(&http, &gateway_url, "wattle_gateway_backfill_requests_total").await.unwrap_or(0);
    println!(
        "{during_stop} readings published while stopped; broker dropped {opened}; {filled} filled by backfill after \
         {requests} requests"
    );
    assert!(opened >= 1_000, "the broker dropped only {opened} readings: the test did not overflow its queue");
    assert_eq!(filled, opened, "every missing sequence was filled");
    assert_eq!(open, 0, "no sequence is still missing");
    drop(node);
    Ok(())
}

/// Random bytes, a truncated envelope, an oversized message, JSON of the wrong shape and bad hex,
/// all on a reading topic: each is quarantined with its reason, and the gateway keeps running and
/// still accepts a good reading afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_mqtt_input_is_quarantined_and_the_gateway_keeps_running() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let clock = clock_args(EPOCH, SPEED, domain::clock::wall_clock_now().0);
    let (_node, ledger_url) = start_ledger(dir.path(), &clock).await?;
    let broker = Mosquitto::start(dir.path(), "").await?;
    let (gateway, gateway_url) =
        start_gateway(dir.path(), "gw-garbage", broker.port, std::slice::from_ref(&ledger_url), &clock).await?;
    let topic = format!("wattle/v1/site-0/{}/reading", firmware_sim::meter_id(0));
    let key = firmware_sim::meter_key(SEED, 0);
    let good = domain::reading::Reading::import_interval(
        firmware_sim::meter_id(0),
        domain::ids::KeyId(1),
        domain::ids::Sequence(1),
        // EPOCH, 2026-06-01T00:00:00Z: the first interval of the simulated clock.
        domain::ids::UnixSeconds(1_780_272_000),
        1_000,
        120,
    )
    .sign(&key)?
    .to_envelope(false);
    let good_json = serde_json::to_string(&good)?;
    let random: Vec<u8> = (0..300u32).map(|index| (index.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("malformed_envelope", random),
        ("malformed_envelope", good_json.as_bytes()[..good_json.len() / 2].to_vec()),
        ("payload_too_large", vec![b'a'; 64 * 1024]),
        ("malformed_envelope", br#"{"v":1,"reading":12,"signature":[]}"#.to_vec()),
        ("malformed_envelope", good_json.replace(&good.signature[..4], "zzzz").into_bytes()),
        (
            "malformed_reading",
            serde_json::to_vec(&domain::reading::Envelope { reading: "00".repeat(20), ..good.clone() })?,
        ),
    ];
    for (_, payload) in &inputs {
        let path = dir.path().join("payload.bin");
        std::fs::write(&path, payload)?;
        let status = std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1", "-t", &topic, "-f"])
            .arg(&path)
            .status()?;
        anyhow::ensure!(status.success(), "mosquitto_pub failed");
    }
    let count = inputs.len();
    let operator = crate::support::gateway_client(dir.path())?;
    let quarantine = poll_until("every input quarantined", Duration::from_secs(30), || {
        let request = operator.get(format!("{gateway_url}/v1/quarantine")).send();
        async move {
            let page: serde_json::Value = request.await.ok()?.json().await.ok()?;
            let entries = page["entries"].as_array()?.clone();
            (entries.len() >= count).then_some(entries)
        }
    })
    .await
    .with_context(|| format!("gateway log:\n{}", gateway.log_tail()))?;
    let reasons: Vec<&str> = quarantine.iter().filter_map(|entry| entry["reason"].as_str()).collect();
    let expected: Vec<&str> = inputs.iter().map(|(reason, _)| *reason).collect();
    assert_eq!(reasons, expected, "each input quarantined in order with its reason");
    // Still running: a good reading is accepted and reaches the ledger.
    let path = dir.path().join("good.json");
    std::fs::write(&path, &good_json)?;
    let status = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1", "-t", &topic, "-f"])
        .arg(&path)
        .status()?;
    anyhow::ensure!(status.success(), "mosquitto_pub failed");
    let customer = firmware_sim::customer_id(0);
    poll_until("the good reading settled", Duration::from_secs(30), || {
        let request = http.get(format!("{ledger_url}/v1/customers/{customer}/account")).send();
        async move {
            let account: serde_json::Value = request.await.ok()?.json().await.ok()?;
            (account["intervals_settled"].as_u64() == Some(1)).then_some(())
        }
    })
    .await
    .with_context(|| format!("gateway log:\n{}", gateway.log_tail()))?;
    let health = http.get(format!("{gateway_url}/healthz")).send().await?;
    assert!(health.status().is_success(), "the gateway is healthy after the garbage");
    // The operator's view: `wattle quarantine`, filtered by reason, as JSON lines and as a table.
    // The operator's token from the environment, then from --token.
    let token = crate::support::gateway_token(dir.path())?;
    let listed = wattle()
        .args(["quarantine", "--gateway", &gateway_url, "--reason", "malformed_envelope", "--json"])
        .env("WATTLE_GATEWAY_TOKEN", &token)
        .output()?;
    anyhow::ensure!(listed.status.success(), "wattle quarantine failed: {}", String::from_utf8_lossy(&listed.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(listed.stdout)?.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), expected.iter().filter(|reason| **reason == "malformed_envelope").count());
    assert!(lines.iter().all(|entry| entry["reason"] == "malformed_envelope" && entry["source"] == topic.as_str()));
    let table = wattle().args(["quarantine", "--gateway", &gateway_url, "--token", &token]).output()?;
    let table = String::from_utf8(table.stdout)?;
    assert!(table.contains("payload_too_large") && table.contains(&format!("{count} entries")), "{table}");
    Ok(())
}

/// A gateway whose database reaches its disk budget (the ledger is away, so the outbox grows)
/// stops taking readings, gives the space back once the outbox drains, and recovers every
/// reading it did not take from the meters by gap recovery: every sequence is settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_disk_budget_the_gateway_pauses_and_recovers_every_reading_by_backfill() -> anyhow::Result<()> {
    const INTERVALS: u64 = 70;
    let _serial = CLUSTER_SERIAL.lock().await;
    let Platform { dir, http, clock, node, ledger_url, broker, gateway, gateway_url } =
        Platform::start("gw-disk", &["--disk-budget-mb", "2"]).await?;
    // The ledger goes away: nothing leaves the outbox.
    node.signal("STOP")?;
    let linger = ["--linger-s".to_string(), "120".to_string()];
    let sim = spawn_sim_with(dir.path(), broker.port, (METERS, SEED, INTERVALS), EPOCH, &clock, &linger)?;
    let deferred = poll_until("the disk budget reached", Duration::from_secs(30), || {
        let fetch = metric(&http, &gateway_url, "wattle_gateway_readings_deferred_disk_budget_total");
        async move { fetch.await.filter(|count| *count >= 200) }
    })
    .await
    .with_context(|| format!("gateway log:\n{}", gateway.log_tail()))?;
    let health = get_json(&http, &format!("{gateway_url}/healthz")).await.context("healthz")?;
    assert_eq!(health["over_disk_budget"], true, "{health}");
    node.signal("CONT")?;
    poll_until("below the budget again", Duration::from_secs(60), || async {
        let health = get_json(&http, &format!("{gateway_url}/healthz")).await?;
        (health["over_disk_budget"] == false).then_some(())
    })
    .await
    .with_context(|| format!("gateway log:\n{}", gateway.log_tail()))?;
    every_sequence_settled(&http, &ledger_url, INTERVALS)
        .await
        .with_context(|| format!("gateway log:\n{}\nsim log:\n{}", gateway.log_tail(), sim.log_tail()))?;
    let filled = metric(&http, &gateway_url, "wattle_gateway_gap_sequences_filled_total").await.unwrap_or(0);
    let deferred_total =
        metric(&http, &gateway_url, "wattle_gateway_readings_deferred_disk_budget_total").await.unwrap_or(0);
    println!(
        "{deferred_total} readings not taken over the budget (first check: {deferred}); {filled} recovered by backfill"
    );
    assert!(filled > 0, "readings not taken were recovered by gap recovery");
    Ok(())
}
