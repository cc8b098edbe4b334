//! Crash and restart, exactly once, with real processes: while the fleet streams, the gateway is
//! SIGKILLed and restarted on its data directory; the ledger node is SIGKILLed, readings pile up
//! in the gateway's outbox, the gateway is killed again and restarts while the ledger is away
//! (its cached registry still verifies readings), and the ledger restarts on its data directory
//! and port; mosquitto is
//! restarted on its port while it holds readings for the gateway, which it forgets (no
//! persistence), so only gap recovery brings them back. In the end every reading the ground truth
//! marks good is in the ledger exactly once, and no other reading is.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use firmware_sim::{FaultKind, TruthRecord};

use crate::support::{
    clock_args, complete_truth, configure_ledger, free_port, get_json, ledger_reading_digests, ledger_readings,
    log_tails, metric, metrics, poll_until, sim_published, spawn_sim_with, start_gateway, start_single_ledger_on,
    Mosquitto, CLUSTER_SERIAL,
};

const METERS: u32 = 20;
const SEED: u64 = 47;
const PRICE: &str = "0.30";
const EPOCH: &str = "2026-10-01T00:00:00Z";
/// 900 s intervals at 3,600x: four intervals (80 readings) a second.
const SPEED: u32 = 3_600;
/// 30 s of streaming; the outages take the first 15 s or so, and the intervals after them reveal
/// every reading the broker lost.
const INTERVALS: u64 = 120;
/// A few faults mid-stream, so that "good" is the ground truth's word and not every reading.
const FAULTS: [&str; 4] = ["bit-flip@1:40", "sequence-gap@2:60", "duplicate@3:80", "impossible-jump@4:100"];
const GATEWAY: &str = "gw-restart";

/// Whether the meter's stored reading for a truth record belongs in the ledger: every fault kind
/// leaves it good except the impossible jump (docs/mqtt.md, the fault table).
fn good(record: &TruthRecord) -> bool {
    record.fault != Some(FaultKind::ImpossibleJump)
}

/// Waits until the gateway's counter `name` reaches `at_least`.
async fn counter_reaches(http: &reqwest::Client, gateway_url: &str, name: &str, at_least: u64) -> anyhow::Result<u64> {
    poll_until(&format!("{name} >= {at_least}"), Duration::from_secs(30), || {
        let fetch = metric(http, gateway_url, name);
        async move { fetch.await.filter(|value| *value >= at_least) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_ledger_and_broker_restarts_lose_and_double_nothing() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let clock = clock_args(EPOCH, SPEED, domain::clock::wall_clock_now().0);
    configure_ledger(dir.path(), METERS, SEED, PRICE)?;
    let ledger_port = free_port();
    let (mut ledger, ledger_url) = start_single_ledger_on(dir.path(), ledger_port, &clock).await?;
    let ledger_urls = [ledger_url.clone()];
    let mut broker = Mosquitto::start(dir.path(), "").await?;
    let (mut gateway, mut gateway_url) = start_gateway(dir.path(), GATEWAY, broker.port, &ledger_urls, &clock).await?;
    let mut extra: Vec<String> = FAULTS.iter().flat_map(|fault| ["--fault".to_string(), fault.to_string()]).collect();
    extra.extend(["--linger-s".to_string(), "300".to_string()]);
    let sim = spawn_sim_with(dir.path(), broker.port, (METERS, SEED, INTERVALS), EPOCH, &clock, &extra)?;
    let accepted = "wattle_gateway_readings_accepted_total";

    let outages = async {
        // The gateway dies mid-stream; unacknowledged readings wait in its broker session, stored
        // ones in its outbox.
        counter_reaches(&http, &gateway_url, accepted, 200).await?;
        gateway.kill()?;
        let killed_at = Instant::now();
        (gateway, gateway_url) = start_gateway(dir.path(), GATEWAY, broker.port, &ledger_urls, &clock).await?;
        println!("gateway SIGKILLed and back after {:?}", killed_at.elapsed());

        // The ledger dies; readings pile up in the gateway's outbox until it is back.
        counter_reaches(&http, &gateway_url, accepted, 200).await?;
        ledger.kill()?;
        let killed_at = Instant::now();
        // 480 readings: six seconds of the fleet.
        counter_reaches(&http, &gateway_url, "wattle_gateway_outbox_depth", 480).await?;
        // The gateway dies too, and restarts while the ledger is still away: it verifies with
        // the registry it cached, instead of quarantining every reading as unknown_meter.
        gateway.kill()?;
        (gateway, gateway_url) = start_gateway(dir.path(), GATEWAY, broker.port, &ledger_urls, &clock).await?;
        counter_reaches(&http, &gateway_url, accepted, 80).await?;
        (ledger, _) = start_single_ledger_on(dir.path(), ledger_port, &clock).await?;
        println!("ledger SIGKILLed and back after {:?}", killed_at.elapsed());
        let forwarded = metric(&http, &gateway_url, "wattle_gateway_readings_forwarded_total").await.unwrap_or(0);
        counter_reaches(&http, &gateway_url, "wattle_gateway_readings_forwarded_total", forwarded + 1).await?;

        // The broker restarts while it queues readings for the stopped gateway, and forgets them.
        gateway.signal("STOP")?;
        let at_stop = sim_published(dir.path()).unwrap_or(0);
        poll_until("readings queued for the stopped gateway", Duration::from_secs(30), || {
            let published = sim_published(dir.path()).filter(|count| *count >= at_stop + 100);
            async move { published }
        })
        .await?;
        broker.restart(dir.path()).await?;
        gateway.signal("CONT")?;
        let remaining = (u64::from(METERS) * INTERVALS).saturating_sub(sim_published(dir.path()).unwrap_or(0));
        println!("broker restarted at {:?}; about {remaining} readings still to stream", started.elapsed());
        anyhow::ensure!(remaining > 0, "the stream ended before the broker restarted: later readings must reveal gaps");
        anyhow::Ok(())
    };
    outages.await.with_context(|| log_tails(&[&gateway, &ledger, &sim]) + &broker.log_tail())?;

    let truth = complete_truth(dir.path(), METERS, INTERVALS).await.with_context(|| log_tails(&[&sim]))?;
    // The digest of what the meter stored, for every good (meter, sequence).
    let expected: BTreeMap<(u32, u64), String> = truth
        .records
        .iter()
        .filter(|record| good(record))
        .map(|record| {
            let digest = truth.fleet.stored_reading(record.meter, record.sequence).digest().to_string();
            ((record.meter, record.sequence), digest)
        })
        .collect();
    assert_eq!(expected.len() as u64, u64::from(METERS) * INTERVALS - 1, "one impossible jump");

    let settled = poll_until("every good reading in the ledger", Duration::from_secs(60), || {
        let http = http.clone();
        let (gateway_url, ledger_url, expected) = (gateway_url.clone(), ledger_url.clone(), &expected);
        async move {
            let counters = metrics(&http, &gateway_url).await?;
            if counters.get("wattle_gateway_outbox_depth") != Some(&0)
                || counters.get("wattle_gateway_gap_sequences_open") != Some(&0)
            {
                return None;
            }
            let digests: BTreeSet<String> = ledger_reading_digests(&http, &ledger_url).await?.into_iter().collect();
            expected.values().all(|digest| digests.contains(digest)).then_some(())
        }
    })
    .await;
    let diagnostics = || log_tails(&[&gateway, &ledger, &sim]) + &broker.log_tail();
    if let Err(error) = settled {
        let digests = ledger_reading_digests(&http, &ledger_url).await.unwrap_or_default();
        let missing: Vec<&(u32, u64)> =
            expected.iter().filter(|(_, digest)| !digests.contains(digest)).map(|(at, _)| at).collect();
        let counters = metrics(&http, &gateway_url).await;
        anyhow::bail!("{error:#}\nmissing (meter, sequence): {missing:?}\ngateway: {counters:?}\n{}", diagnostics());
    }

    // The ledger's content per (meter, sequence): the digests it settled, against the ground truth.
    let logged = ledger_readings(&http, &ledger_url).await.context("the ledger's readings")?;
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
    let others: Vec<&(u32, u64)> = settled.keys().filter(|at| !expected.contains_key(at)).collect();
    assert!(others.is_empty(), "settled but not good in the ground truth: {others:?}\n{}", diagnostics());
    let again = logged.iter().filter(|reading| reading.result == "duplicate").count();

    // Settlement agrees: each customer's account holds its meter's good intervals once.
    for meter in 0..METERS {
        let good_records = truth.records.iter().filter(|record| record.meter == meter && good(record));
        let (count, import_wh) = good_records.fold((0, 0), |(count, wh), record| (count + 1, wh + record.import_wh));
        let customer = firmware_sim::customer_id(meter);
        let account = get_json(&http, &format!("{ledger_url}/v1/customers/{customer}/account"))
            .await
            .with_context(|| format!("account of {customer}"))?;
        assert_eq!(account["intervals_settled"].as_u64(), Some(count), "{customer}: {account}");
        assert_eq!(account["energy_import_wh"].as_u64(), Some(import_wh), "{customer}: {account}");
    }

    let counters = metrics(&http, &gateway_url).await.context("the gateway's metrics")?;
    let counter = |name: &str| counters.get(name).copied().unwrap_or(0);
    let opened = counter("wattle_gateway_gap_sequences_opened_total");
    println!(
        "after the broker restart: {opened} sequences missing, {} filled by backfill; {again} readings submitted \
         again and logged as duplicates by the ledger; {:?} in all",
        counter("wattle_gateway_gap_sequences_filled_total"),
        started.elapsed()
    );
    // The restarted gateway's counters start after the broker lost what it queued for it.
    assert!(opened > 0, "the broker restart lost no reading: gap recovery was not exercised\n{}", diagnostics());
    assert_eq!(counter("wattle_gateway_gap_sequences_unfilled_total"), 0, "{}", diagnostics());
    let unknown = counter("wattle_gateway_readings_rejected_total{reason=\"unknown_meter\"}");
    assert_eq!(unknown, 0, "readings quarantined as unknown_meter\n{}", diagnostics());
    for process in [&mut gateway, &mut ledger] {
        assert!(process.try_wait().is_none(), "{} exited:\n{}", process.name, process.log_tail());
    }
    Ok(())
}
