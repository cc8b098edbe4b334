//! Valid readings are never lost to a cause that goes away (issue 12, finding 1), with real
//! processes: a ledger node, mosquitto, the gateway and the fleet.
//!
//! - Readings of meters the ledger does not know yet wait (unverified, in the gateway's garbage
//!   store), and readings the ledger refuses for want of a price wait in the retry queue: meters
//!   registered after their readings started, one of them long after, and a price published
//!   after the first readings still end with every reading settled exactly once.
//! - A wrongly configured `--clock-ahead-s` holds every reading as `clock_future`, bytes kept; after
//!   the gateway restarts with the right value, `wattle quarantine release` sends them through the
//!   checks again and every reading is settled exactly once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use domain::api::MeterInfo;
use domain::ids::KeyId;
use domain::money::{Currency, UnitPrice};
use domain::tx::{AdminAction, SignedAdmin};

use crate::support::{
    clock_args, complete_truth, configure_ledger, get_json, ledger_readings, log_tails, metric, metrics, poll_until,
    spawn_sim_with, start_bare_ledger, start_gateway, start_gateway_with, wattle, Mosquitto, CLUSTER_SERIAL,
};

const SEED: u64 = 61;
const EPOCH: &str = "2026-11-01T00:00:00Z";
/// 900 s intervals at 3,600x: four intervals a second.
const SPEED: u32 = 3_600;

/// Signs admin transactions with the operator key, nonce after nonce.
struct Operator {
    key: ed25519_dalek::SigningKey,
    nonce: u64,
    http: reqwest::Client,
    ledger_url: String,
}

impl Operator {
    async fn submit(&mut self, action: AdminAction) -> anyhow::Result<()> {
        self.nonce += 1;
        let admin = SignedAdmin::sign(self.nonce, action, &self.key);
        let response = ledger::node::submit_admin_to(&self.http, &self.ledger_url, &admin).await?;
        anyhow::ensure!(response.refused.is_none(), "admin transaction refused: {:?}", response.refused);
        Ok(())
    }

    async fn register(&mut self, meter: &MeterInfo) -> anyhow::Result<()> {
        let public_key: [u8; 32] =
            hex::decode(&meter.public_key)?.try_into().map_err(|_| anyhow::anyhow!("a 32-byte key"))?;
        let currency = Currency::new("EUR")?;
        self.submit(AdminAction::RegisterCustomer { customer_id: meter.customer_id.clone(), currency }).await?;
        self.submit(AdminAction::RegisterMeter {
            meter_id: meter.meter_id.clone(),
            key_id: KeyId(meter.key_id),
            public_key,
            customer_id: meter.customer_id.clone(),
        })
        .await
    }
}

/// Waits until the gateway's counter `name` reaches `at_least`.
async fn counter_reaches(http: &reqwest::Client, gateway_url: &str, name: &str, at_least: u64) -> anyhow::Result<u64> {
    poll_until(&format!("{name} >= {at_least}"), Duration::from_secs(60), || {
        let fetch = metric(http, gateway_url, name);
        async move { fetch.await.filter(|value| *value >= at_least) }
    })
    .await
}

/// Waits until every reading the fleet sent (no faults: all good) is settled in the ledger, then
/// checks each (meter, sequence) was settled exactly once with the bytes the meter stored, and
/// each customer's account holds its meter's intervals once.
async fn assert_every_reading_settled_once(
    http: &reqwest::Client,
    ledger_url: &str,
    truth: &firmware_sim::Truth,
    meters: u32,
    diagnostics: impl Fn() -> String,
) -> anyhow::Result<()> {
    let expected: BTreeMap<(u32, u64), String> = truth
        .records
        .iter()
        .map(|record| {
            let digest = truth.fleet.stored_reading(record.meter, record.sequence).digest().to_string();
            ((record.meter, record.sequence), digest)
        })
        .collect();
    let settled = poll_until("every reading settled", Duration::from_secs(120), || async {
        let logged = ledger_readings(http, ledger_url).await?;
        let accepted = logged.iter().filter(|reading| reading.result == "accepted").count();
        (accepted >= expected.len()).then_some(logged)
    })
    .await;
    let logged = match settled {
        Ok(logged) => logged,
        Err(error) => {
            let logged = ledger_readings(http, ledger_url).await.unwrap_or_default();
            let accepted = logged.iter().filter(|reading| reading.result == "accepted").count();
            anyhow::bail!("{error:#}: {accepted} of {} accepted\n{}", expected.len(), diagnostics());
        }
    };
    let mut settled: BTreeMap<(u32, u64), Vec<&str>> = BTreeMap::new();
    for reading in logged.iter().filter(|reading| reading.result == "accepted") {
        let meter = firmware_sim::meter_index(&reading.meter).context("a simulated meter")?;
        settled.entry((meter, reading.sequence)).or_default().push(&reading.digest);
    }
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(at, digest)| settled.get(at).map(Vec::as_slice) != Some(&[digest.as_str()]))
        .map(|(at, _)| (at, settled.get(at)))
        .collect();
    assert!(wrong.is_empty(), "not settled exactly once as the meter stored it: {wrong:?}\n{}", diagnostics());
    assert_eq!(settled.len(), expected.len(), "settled but never sent\n{}", diagnostics());
    for meter in 0..meters {
        let records = truth.records.iter().filter(|record| record.meter == meter);
        let (count, import_wh) = records.fold((0, 0), |(count, wh), record| (count + 1, wh + record.import_wh));
        let customer = firmware_sim::customer_id(meter);
        let account = get_json(http, &format!("{ledger_url}/v1/customers/{customer}/account"))
            .await
            .with_context(|| format!("account of {customer}"))?;
        assert_eq!(account["intervals_settled"].as_u64(), Some(count), "{customer}: {account}");
        assert_eq!(account["energy_import_wh"].as_u64(), Some(import_wh), "{customer}: {account}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meters_registered_and_a_price_published_after_the_readings_started_lose_nothing() -> anyhow::Result<()> {
    const METERS: u32 = 6;
    /// 30 s of streaming at four intervals a second.
    const INTERVALS: u64 = 120;
    let _serial = CLUSTER_SERIAL.lock().await;
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let clock = clock_args(EPOCH, SPEED, domain::clock::wall_clock_now().0);
    // The operator key and the fleet's registry; the ledger starts without either.
    configure_ledger(dir.path(), METERS, SEED, "0.30")?;
    let registry: Vec<MeterInfo> = serde_json::from_slice(&std::fs::read(dir.path().join("meters.json"))?)?;
    let (node, ledger_url) = start_bare_ledger(dir.path(), &clock).await?;
    let key = ledger::node::read_signing_key(&dir.path().join("operator.key"))?;
    let mut operator = Operator { key, nonce: 0, http: http.clone(), ledger_url: ledger_url.clone() };
    let broker = Mosquitto::start(dir.path(), "").await?;
    let (gateway, gateway_url) =
        start_gateway(dir.path(), "gw-late", broker.port, std::slice::from_ref(&ledger_url), &clock).await?;
    let linger = ["--linger-s".to_string(), "300".to_string()];
    let sim = spawn_sim_with(dir.path(), broker.port, (METERS, SEED, INTERVALS), EPOCH, &clock, &linger)?;
    let diagnostics = || log_tails(&[&gateway, &node, &sim]);
    let late = METERS - 1;

    let configure = async {
        // Every meter is unknown: its readings wait in the garbage store, unverified.
        let unknown = "wattle_gateway_readings_rejected_total{reason=\"unknown_meter\"}";
        counter_reaches(&http, &gateway_url, unknown, u64::from(METERS) * 8).await?;
        for meter in &registry[..late as usize] {
            operator.register(meter).await?;
        }
        println!("meters 0..{late} registered after {:?}", started.elapsed());
        // Released on their own, verified, forwarded, and refused for want of a price.
        let no_tariff = "wattle_ledger_readings_rejected_total{reason=\"no_tariff\"}";
        counter_reaches(&http, &ledger_url, no_tariff, u64::from(METERS) * 8).await?;
        operator
            .submit(AdminAction::SetFlatPrice(UnitPrice { per_kwh: "0.30".parse()?, currency: Currency::new("EUR")? }))
            .await?;
        println!("price published after {:?}", started.elapsed());
        // The last meter stays unknown for two thirds of the stream (20 of 30 s).
        poll_until("two thirds of the stream", Duration::from_secs(60), || async {
            (started.elapsed() >= Duration::from_secs(20)).then_some(())
        })
        .await?;
        operator.register(&registry[late as usize]).await?;
        println!("meter {late} registered after {:?}", started.elapsed());
        anyhow::Ok(())
    };
    configure.await.with_context(diagnostics)?;
    let truth = complete_truth(dir.path(), METERS, INTERVALS).await.with_context(diagnostics)?;
    assert_every_reading_settled_once(&http, &ledger_url, &truth, METERS, diagnostics).await?;
    let counters = metrics(&http, &gateway_url).await.context("the gateway's metrics")?;
    let counter = |name: &str| counters.get(name).copied().unwrap_or(0);
    println!(
        "{} unverified readings released automatically, {} ledger refusals retried; {:?} in all",
        counter("wattle_gateway_readings_released_automatically_total"),
        counter("wattle_gateway_ledger_retries_total"),
        started.elapsed()
    );
    assert_eq!(counter("wattle_gateway_retry_depth"), 0, "{counters:?}");
    assert_eq!(counter("wattle_gateway_garbage_dropped_total{class=\"unverified\"}"), 0, "{counters:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_clock_window_holds_readings_until_they_are_released() -> anyhow::Result<()> {
    const METERS: u32 = 4;
    /// 20 s of streaming.
    const INTERVALS: u64 = 80;
    const GATEWAY: &str = "gw-clock";
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let clock = clock_args(EPOCH, SPEED, domain::clock::wall_clock_now().0);
    configure_ledger(dir.path(), METERS, SEED, "0.30")?;
    let (node, ledger_url) = crate::support::start_single_ledger(dir.path(), &clock).await?;
    let ledger_urls = [ledger_url.clone()];
    let broker = Mosquitto::start(dir.path(), "").await?;
    // The operator typed the window with the wrong sign: every interval "ends in the future".
    let mut wrong = clock.clone();
    wrong.push("--clock-ahead-s=-3600".to_string());
    let (mut gateway, gateway_url) =
        start_gateway_with(dir.path(), GATEWAY, broker.port, &ledger_urls, &wrong, &[]).await?;
    let linger = ["--linger-s".to_string(), "300".to_string()];
    let sim = spawn_sim_with(dir.path(), broker.port, (METERS, SEED, INTERVALS), EPOCH, &clock, &linger)?;
    let held = "wattle_gateway_readings_rejected_total{reason=\"clock_future\"}";
    counter_reaches(&http, &gateway_url, held, u64::from(METERS) * 10)
        .await
        .with_context(|| log_tails(&[&gateway, &node, &sim]))?;
    // The fix: the gateway restarts on its data with the right window.
    gateway.kill()?;
    let (mut gateway, gateway_url) = start_gateway(dir.path(), GATEWAY, broker.port, &ledger_urls, &clock).await?;
    let truth = complete_truth(dir.path(), METERS, INTERVALS).await.with_context(|| log_tails(&[&sim]))?;
    let token = crate::support::gateway_token(dir.path())?;
    let released = wattle()
        .args(["quarantine", "release", "--gateway", &gateway_url, "--reason", "clock_future", "--token", &token])
        .output()?;
    anyhow::ensure!(
        released.status.success(),
        "wattle quarantine release failed: {}",
        String::from_utf8_lossy(&released.stderr)
    );
    let report = String::from_utf8(released.stdout)?;
    println!("{}", report.trim());
    let count: u64 = report.split(' ').next().and_then(|count| count.parse().ok()).context("a count")?;
    assert!(count >= u64::from(METERS) * 10, "{report}");
    let diagnostics = || log_tails(&[&gateway, &node, &sim]);
    assert_every_reading_settled_once(&http, &ledger_url, &truth, METERS, diagnostics).await?;
    let operator = crate::support::gateway_client(dir.path())?;
    let page = get_json(&operator, &format!("{gateway_url}/v1/quarantine")).await.context("quarantine")?;
    let left: Vec<&serde_json::Value> = page["entries"]
        .as_array()
        .context("entries")?
        .iter()
        .filter(|entry| entry["reason"] == "clock_future")
        .collect();
    assert!(left.is_empty(), "held entries left after the release: {left:?}");
    assert!(gateway.try_wait().is_none(), "the gateway exited:\n{}", gateway.log_tail());
    Ok(())
}
