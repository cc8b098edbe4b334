//! The gateway's gap recovery with real processes: mosquitto (default configuration, so its
//! per-client queue limit of 1,000 messages drops readings), a ledger node, the gateway and the
//! fleet simulator.

use std::time::Duration;

use anyhow::Context;

use crate::support::{
    clock_args, configure_ledger, free_port, poll_until, start_gateway, wattle, Mosquitto, Process, CLUSTER_SERIAL,
};

const METERS: u32 = 100;
const SEED: u64 = 23;
const EPOCH: &str = "2026-06-01T00:00:00Z";
/// 900 s intervals at 9,000x: ten intervals (1,000 readings) per second.
const SPEED: u32 = 9_000;
/// 130 intervals (13,000 readings, ~13 s); the gateway is stopped for 6.5 s of them (~6,500
/// readings), and the intervals after that reveal the gaps.
const INTERVALS: u64 = 130;

async fn metric(http: &reqwest::Client, url: &str, name: &str) -> Option<u64> {
    let text = http.get(format!("{url}/metrics")).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|line| line.strip_prefix(&format!("{name} ")).and_then(|value| value.parse().ok()))
}

/// SIGSTOP the gateway while 5,000+ readings are published: mosquitto acknowledges them all to
/// the meters and drops what exceeds its queue. After SIGCONT the gateway sees the gaps, asks
/// the meters on their backfill topics, and every sequence reaches the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_the_broker_dropped_reach_the_ledger_by_backfill() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let clock = clock_args(EPOCH, SPEED, domain::clock::wall_clock_now().0);
    configure_ledger(dir.path(), METERS, SEED, "0.25")?;
    let port = free_port();
    let ledger_url = format!("http://127.0.0.1:{port}");
    let mut command = wattle();
    command
        .args(["node", "--node-id", "1", "--bootstrap", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(path("node-1"))
        .arg("--ready-file")
        .arg(path("node-1.ready"))
        .arg("--admin-config")
        .arg(path("ledger.toml"))
        .arg("--operator-key")
        .arg(path("operator.key"))
        .args(&clock);
    let mut node = Process::spawn("node-1", dir.path(), command)?;
    node.ready_address(&path("node-1.ready")).await?;
    let broker = Mosquitto::start(dir.path(), "").await?;
    // A keepalive longer than the stop: the broker keeps the session open and queues for it.
    let mut gateway_args = clock.clone();
    gateway_args.extend(["--mqtt-keepalive-s".to_string(), "300".to_string()]);
    let (gateway, gateway_url) =
        start_gateway(dir.path(), "gw-gaps", broker.port, std::slice::from_ref(&ledger_url), &gateway_args).await?;

    let mut command = wattle();
    command
        .args(["sim", "--meters", &METERS.to_string(), "--seed", &SEED.to_string()])
        .args(["--intervals", &INTERVALS.to_string(), "--epoch", EPOCH, "--linger-s", "120"])
        .args(["--broker", &format!("127.0.0.1:{}", broker.port)])
        .args(&clock);
    let _sim = Process::spawn("sim", dir.path(), command)?;
    poll_until("the first readings stored", Duration::from_secs(30), || {
        let fetch = metric(&http, &gateway_url, "wattle_gateway_readings_accepted_total");
        async move { fetch.await.filter(|count| *count > 0) }
    })
    .await?;
    gateway.signal("STOP")?;
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    gateway.signal("CONT")?;

    poll_until("gaps found", Duration::from_secs(60), || {
        let fetch = metric(&http, &gateway_url, "wattle_gateway_gap_sequences_opened_total");
        async move { fetch.await.filter(|count| *count > 0) }
    })
    .await
    .with_context(|| format!("gateway log:\n{}", gateway.log_tail()))?;
    // Every meter's every sequence is settled: each customer has one meter.
    poll_until("every sequence settled", Duration::from_secs(120), || {
        let http = http.clone();
        let ledger_url = ledger_url.clone();
        async move {
            for meter in 0..METERS {
                let customer = firmware_sim::customer_id(meter);
                let account: serde_json::Value = http
                    .get(format!("{ledger_url}/v1/customers/{customer}/account"))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                if account["intervals_settled"].as_u64() != Some(INTERVALS) {
                    return None;
                }
            }
            Some(())
        }
    })
    .await
    .with_context(|| format!("gateway log:\n{}", gateway.log_tail()))?;
    let opened = metric(&http, &gateway_url, "wattle_gateway_gap_sequences_opened_total").await.unwrap_or(0);
    let filled = metric(&http, &gateway_url, "wattle_gateway_gap_sequences_filled_total").await.unwrap_or(0);
    let open = metric(&http, &gateway_url, "wattle_gateway_gap_sequences_open").await.unwrap_or(u64::MAX);
    let requests = metric(&http, &gateway_url, "wattle_gateway_backfill_requests_total").await.unwrap_or(0);
    println!("broker dropped {opened} readings; {filled} filled by backfill after {requests} requests");
    assert!(opened >= 1_000, "the broker dropped only {opened} readings: the test did not overflow its queue");
    assert_eq!(filled, opened, "every missing sequence was filled");
    assert_eq!(open, 0, "no sequence is still missing");
    drop(node);
    Ok(())
}
