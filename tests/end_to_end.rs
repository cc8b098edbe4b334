//! The walking skeleton end to end: mosquitto, a ledger node, a gateway and billing as real
//! processes; 20 simulated meters for 8 intervals in simulated time; every bill must equal what
//! this test computes from the ground truth on its own, to the cent; tampered readings end in
//! the quarantine with their reasons and never in the ledger.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use domain::ids::{KeyId, Sequence, UnixSeconds};
use domain::reading::Reading;
use rust_decimal::{Decimal, RoundingStrategy};

use crate::support::{
    clock_args, configure_ledger, ledger_reading_digests, poll_until, spawn_sim, start_gateway, wattle, Mosquitto,
    Process, CLUSTER_SERIAL,
};

const METERS: u32 = 20;
const INTERVALS: u64 = 8;
const SEED: u64 = 42;
const PRICE: &str = "0.2874";
const CLOCK_START: &str = "2026-03-02T00:00:00Z";
const CLOCK_SPEED: u32 = 1_800;

fn publish(port: u16, topic: &str, payload: &str) -> anyhow::Result<()> {
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", topic, "-m", payload])
        .status()
        .context("running mosquitto_pub")?;
    anyhow::ensure!(status.success(), "mosquitto_pub failed: {status}");
    Ok(())
}

/// A reading of meter `index` outside the simulated run's sequences.
fn stray_reading(index: u32, key_id: u32) -> Reading {
    let meter = firmware_sim::meter_id(index);
    let reading =
        Reading::import_interval(meter, KeyId(key_id), Sequence(1_000_000), UnixSeconds(1_772_409_600), 10_000, 250);
    Reading { firmware: firmware_sim::SIM_FIRMWARE, ..reading }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_readings_become_bills_equal_to_ground_truth() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name);
    let http = reqwest::Client::new();
    let anchor_ms = domain::clock::wall_clock_now().0;
    let clock = clock_args(CLOCK_START, CLOCK_SPEED, anchor_ms);

    configure_ledger(dir.path(), METERS, SEED, PRICE)?;

    let broker = Mosquitto::start(dir.path(), "").await?;

    let mut command = wattle();
    command
        .args(["node", "--node-id", "1", "--listen", "127.0.0.1:0", "--bootstrap"])
        .arg("--data-dir")
        .arg(path("node-1"))
        .arg("--admin-config")
        .arg(path("ledger.toml"))
        .arg("--operator-key")
        .arg(path("operator.key"))
        .arg("--ready-file")
        .arg(path("node.ready"))
        .args(&clock);
    let mut node = Process::spawn("node-1", dir.path(), command)?;
    let ledger_url = format!("http://{}", node.ready_address(&path("node.ready")).await?);
    let meters: Vec<serde_json::Value> = http.get(format!("{ledger_url}/v1/meters")).send().await?.json().await?;
    assert_eq!(meters.len(), METERS as usize, "the registry is committed before the node reports ready");

    let (mut gateway, gateway_url) =
        start_gateway(dir.path(), "gw-e2e", broker.port, std::slice::from_ref(&ledger_url), &clock).await?;

    let mut command = wattle();
    command
        .args(["billing", "--listen", "127.0.0.1:0", "--ledger", &ledger_url])
        .args(["--database", &format!("sqlite://{}?mode=rwc", path("billing.sqlite").display())])
        .arg("--tokens")
        .arg(path("billing-tokens.json"))
        .arg("--ready-file")
        .arg(path("billing.ready"));
    let mut billing = Process::spawn("billing", dir.path(), command)?;
    let billing_url = format!("http://{}", billing.ready_address(&path("billing.ready")).await?);
    let billing_http =
        crate::support::bearer_client(&crate::support::issue_token(&path("billing-tokens.json"), &["--operator"])?)?;

    // Tampered readings, published by the test itself.
    let key_zero = firmware_sim::meter_key(SEED, 0);
    let signed = stray_reading(0, 1).sign(&key_zero)?;
    let mut flipped_bytes = signed.bytes().to_vec();
    flipped_bytes[76] ^= 0x01; // one bit of import_end_wh
    let flipped = domain::reading::SignedReading::from_parts(flipped_bytes, *signed.signature())?;
    let flipped_digest = flipped.digest().to_string();
    let topic_zero = firmware_sim::reading_topic("site-0", &firmware_sim::meter_id(0));
    publish(broker.port, &topic_zero, &serde_json::to_string(&flipped.to_envelope(false))?)?;

    let stranger = ed25519_dalek::SigningKey::from_bytes(&[0x5a; 32]);
    let foreign = stray_reading(1, 1).sign(&stranger)?;
    let foreign_digest = foreign.digest().to_string();
    let topic_one = firmware_sim::reading_topic("site-0", &firmware_sim::meter_id(1));
    publish(broker.port, &topic_one, &serde_json::to_string(&foreign.to_envelope(false))?)?;

    let unknown_key_id = stray_reading(2, 9).sign(&stranger)?;
    let unknown_key_digest = unknown_key_id.digest().to_string();
    let topic_two = firmware_sim::reading_topic("site-0", &firmware_sim::meter_id(2));
    publish(broker.port, &topic_two, &serde_json::to_string(&unknown_key_id.to_envelope(false))?)?;
    publish(broker.port, &topic_two, "this is not a reading")?;

    // The fleet: 20 meters, 8 intervals of 15 simulated minutes (0.5 s each at 1,800x).
    let mut sim = spawn_sim(dir.path(), broker.port, (METERS, SEED, INTERVALS), CLOCK_START, &clock)?;
    let status = sim.wait(Duration::from_secs(120)).await?;
    anyhow::ensure!(status.success(), "sim failed:\n{}", sim.log_tail());

    // What each bill must be, computed here from the ground truth alone.
    let truth = firmware_sim::Truth::read(&path("truth.bin"))?;
    assert_eq!(truth.records.len() as u64, u64::from(METERS) * INTERVALS);
    let price = Decimal::from_str(PRICE)?;
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for record in &truth.records {
        *expected.entry(firmware_sim::customer_id(record.meter).to_string()).or_default() += record.import_wh;
    }
    for (customer, import_wh) in &expected {
        let bill: serde_json::Value =
            poll_until(&format!("bill of {customer} settled"), Duration::from_secs(60), || {
                let request = billing_http.get(format!("{billing_url}/v1/customers/{customer}/bill")).send();
                async move {
                    let bill: serde_json::Value = request.await.ok()?.json().await.ok()?;
                    (bill["intervals_settled"].as_u64() == Some(INTERVALS)).then_some(bill)
                }
            })
            .await
            .with_context(|| format!("gateway log:\n{}\nnode log:\n{}", gateway.log_tail(), node.log_tail()))?;
        let kwh = Decimal::from(*import_wh) / Decimal::from(1000);
        let amount = (kwh * price).round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
        assert_eq!(Decimal::from_str(bill["amount"].as_str().context("amount")?)?, amount, "{customer}: {bill}");
        assert_eq!(Decimal::from_str(bill["energy_import_kwh"].as_str().context("energy")?)?, kwh, "{customer}");
        assert_eq!(bill["currency"], "EUR");
    }

    // The tampered readings sit in the quarantine with their reasons.
    let operator = crate::support::gateway_client(dir.path())?;
    let quarantine: serde_json::Value =
        operator.get(format!("{gateway_url}/v1/quarantine")).send().await?.error_for_status()?.json().await?;
    let entries = quarantine["entries"].as_array().context("entries")?;
    let reason_of = |digest: &str| {
        entries
            .iter()
            .find(|entry| entry["digest"] == digest)
            .and_then(|entry| entry["reason"].as_str())
            .map(str::to_string)
    };
    assert_eq!(reason_of(&flipped_digest).as_deref(), Some("bad_signature"), "{quarantine}");
    assert_eq!(reason_of(&foreign_digest).as_deref(), Some("bad_signature"), "{quarantine}");
    assert_eq!(reason_of(&unknown_key_digest).as_deref(), Some("unknown_key"), "{quarantine}");
    assert!(entries.iter().any(|entry| entry["reason"] == "malformed_envelope"), "{quarantine}");

    // Every good reading is in the ledger exactly once; no bad one is in it at all.
    let digests = ledger_reading_digests(&http, &ledger_url).await.context("reading the ledger's transactions")?;
    let unique: BTreeSet<&String> = digests.iter().collect();
    assert_eq!(unique.len(), digests.len(), "no reading appears twice in the ledger");
    let truth_digests: Vec<String> = truth
        .records
        .iter()
        .map(|record| truth.fleet.stored_reading(record.meter, record.sequence).digest().to_string())
        .collect();
    let truth_digests: BTreeSet<&String> = truth_digests.iter().collect();
    assert_eq!(unique, truth_digests, "the ledger holds exactly the ground truth's readings");
    for bad in [&flipped_digest, &foreign_digest, &unknown_key_digest] {
        assert!(!unique.contains(bad), "a tampered reading reached the ledger");
    }

    // Submitting without waiting returns a transaction id at once; its status becomes committed,
    // and a long-poll on the transaction stream returns it.
    let applied_before: serde_json::Value = http.get(format!("{ledger_url}/healthz")).send().await?.json().await?;
    let next_index = applied_before["applied_index"].as_u64().context("applied index")? + 1;
    let late = stray_reading(0, 1).sign(&key_zero)?;
    let request = serde_json::json!({ "gateway_id": "test", "readings": [late.to_envelope(false)] });
    let answer: serde_json::Value =
        http.post(format!("{ledger_url}/v1/readings?wait=false")).json(&request).send().await?.json().await?;
    assert_eq!(answer["outcomes"][0]["status"], "pending", "{answer}");
    let tx_id = answer["tx_id"].as_str().context("tx id")?.to_string();
    let streamed: serde_json::Value =
        http.get(format!("{ledger_url}/v1/transactions?from={next_index}&wait_ms=10000")).send().await?.json().await?;
    let streamed = streamed["transactions"].as_array().context("transactions")?;
    assert!(streamed.iter().any(|t| t["tx_id"] == tx_id.as_str()), "the long-poll returns the new transaction");
    // Applied at once; committed for clients once a signature transaction covers it (≤ ~50 ms).
    poll_until("the transaction is committed", Duration::from_secs(10), || {
        let request = http.get(format!("{ledger_url}/v1/transactions/{tx_id}")).send();
        async move {
            let status: serde_json::Value = request.await.ok()?.json().await.ok()?;
            (status["status"] == "committed").then_some(())
        }
    })
    .await?;
    let unknown: serde_json::Value =
        http.get(format!("{ledger_url}/v1/transactions/{}", "0".repeat(32))).send().await?.json().await?;
    assert_eq!(unknown["status"], "unknown");

    let metrics = http.get(format!("{gateway_url}/metrics")).send().await?.text().await?;
    assert!(metrics.contains("wattle_gateway_readings_rejected_total{reason=\"bad_signature\"} 2"), "{metrics}");
    for process in [&mut node, &mut gateway, &mut billing] {
        assert!(process.try_wait().is_none(), "{} exited early:\n{}", process.name, process.log_tail());
    }
    Ok(())
}
