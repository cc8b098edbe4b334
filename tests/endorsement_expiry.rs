//! A node key's endorsement holds for a period (issue 15): receipts of roots signed inside it
//! verify offline and show it; once it lapses the node's new roots get no receipt until the key
//! is endorsed again; the renewal leaves older receipts their own endorsement; and a receipt whose
//! root was signed after its endorsement ended is refused by `wattle receipt verify`.
//!
//! One node on simulated time at 7,200× (a day passes in 12 real seconds), endorsed for one day.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use domain::api::{SubmitReadings, SubmitReadingsResponse};
use domain::ids::GatewayId;
use domain::receipt::Receipt;
use ed25519_dalek::Signer;

use crate::support::{clock_args, configure_ledger, poll_until, start_single_ledger, wattle, CLUSTER_SERIAL};
use crate::verifiable::{reading, run};

const SEED: u64 = 15;
const METERS: u32 = 2;

async fn submit(http: &reqwest::Client, url: &str, sequence: u64) -> anyhow::Result<String> {
    let readings = (0..METERS)
        .map(|meter| {
            reading(meter, sequence).sign(&firmware_sim::meter_key(SEED, meter)).expect("valid").to_envelope(false)
        })
        .collect();
    let request = SubmitReadings { gateway_id: GatewayId::new("gw-expiry")?, readings, gateway_signature: None };
    let response: SubmitReadingsResponse =
        http.post(format!("{url}/v1/readings")).json(&request).send().await?.error_for_status()?.json().await?;
    Ok(response.tx_id.context("a transaction id")?.to_string())
}

/// The receipt of `tx_id`, once served.
async fn receipt(http: &reqwest::Client, url: &str, tx_id: &str) -> anyhow::Result<Receipt> {
    poll_until(&format!("receipt of {tx_id}"), Duration::from_secs(30), || async {
        let response = http.get(format!("{url}/v1/receipts/{tx_id}?format=json")).send().await.ok()?;
        if response.status().is_success() {
            return Receipt::from_json(&response.bytes().await.ok()?).ok();
        }
        None
    })
    .await
}

/// Polls until the receipt endpoint refuses `tx_id` with `code`.
async fn refused_with(http: &reqwest::Client, url: &str, tx_id: &str, code: &str) -> anyhow::Result<()> {
    poll_until(&format!("receipt of {tx_id} refused with {code}"), Duration::from_secs(30), || async {
        let response = http.get(format!("{url}/v1/receipts/{tx_id}?format=json")).send().await.ok()?;
        let body: serde_json::Value = response.json().await.ok()?;
        (body["code"] == code).then_some(())
    })
    .await
}

fn verify(dir: &Path, receipt: &Receipt, service: &str, name: &str) -> anyhow::Result<(bool, String)> {
    let file = dir.join(name);
    std::fs::write(&file, receipt.to_json())?;
    run(wattle().args(["receipt", "verify"]).arg(&file).args(["--service-key", service]))
}

fn endorse(dir: &Path, url: &str, days: &str) -> anyhow::Result<()> {
    let (ok, output) = run(wattle()
        .args(["node", "endorse", "--ledger", url, "--node", url, "--valid-days", days])
        .arg("--service-key")
        .arg(dir.join("service.key"))
        .arg("--operator-key")
        .arg(dir.join("operator.key")))?;
    anyhow::ensure!(ok, "endorse failed: {output}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_hold_only_inside_their_endorsement_and_a_renewal_keeps_old_ones_valid() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build()?;
    configure_ledger(dir.path(), METERS, SEED, "0.25")?;
    let clock = clock_args("2026-01-05T06:00:00Z", 7_200, domain::clock::wall_clock_now().0);
    let (_node, url) = start_single_ledger(dir.path(), &clock).await?;
    let (ok, service) = run(wattle().arg("keygen").arg("--out").arg(dir.path().join("service.key")))?;
    anyhow::ensure!(ok, "keygen failed: {service}");
    let service = service.trim().to_string();

    // Endorsed for one day of the ledger's clock: the receipt shows the period, and verifies.
    endorse(dir.path(), &url, "1")?;
    let first_tx = submit(&http, &url, 1).await?;
    let first = receipt(&http, &url, &first_tx).await?;
    let period = first.endorsement_validity.context("the receipt names its endorsement's period")?;
    let signed_at = first.signed_at.context("the receipt names when its root was signed")?;
    assert!(period.covers(signed_at), "{period:?} {signed_at}");
    assert_eq!(period.not_after - period.not_before, 2 * 86_400_000, "a day before the ledger's time, a day after");
    let (ok, output) = verify(dir.path(), &first, &service, "first.json")?;
    assert!(ok && output.contains("inside its endorsement"), "{output}");

    // Stretching the period or moving the signing time breaks a signature.
    let mut stretched = first.clone();
    stretched.endorsement_validity =
        Some(domain::receipt::Validity { not_after: period.not_after + 86_400_000, ..period });
    let (ok, output) = verify(dir.path(), &stretched, &service, "stretched.json")?;
    assert!(!ok && output.contains("not endorsed by the given service key"), "{output}");
    let mut moved = first.clone();
    moved.signed_at = Some(signed_at + 1);
    let (ok, output) = verify(dir.path(), &moved, &service, "moved.json")?;
    assert!(!ok && output.contains("root signature does not verify"), "{output}");

    // A root the node signs after its endorsement ended: made here with the node's own key (the
    // ledger serves no receipt for it, below), it is refused offline as signed by an expired key.
    let node_key = ledger::node::read_signing_key(&dir.path().join("node-1").join("node.key"))?;
    let late = period.not_after + 1;
    let mut expired = first.clone();
    expired.signed_at = Some(late);
    expired.signature =
        node_key.sign(&domain::receipt::root_message_at(first.tree_size, &first.root, Some(late))).to_bytes();
    let (ok, output) = verify(dir.path(), &expired, &service, "expired.json")?;
    assert!(!ok && output.contains("the key had expired"), "{output}");

    // The ledger's clock passes the period's end: the node's new roots get no receipt.
    poll_until("the endorsement lapsed on the ledger's clock", Duration::from_secs(60), || async {
        let health: serde_json::Value = http.get(format!("{url}/healthz")).send().await.ok()?.json().await.ok()?;
        (health["clock_ms"].as_i64()? > period.not_after).then_some(())
    })
    .await?;
    let second_tx = submit(&http, &url, 2).await?;
    refused_with(&http, &url, &second_tx, "not_endorsed").await?;

    // Renewed: the new root's receipt carries the new endorsement; the old receipt keeps the one
    // that held when its root was signed, and both verify.
    endorse(dir.path(), &url, "30")?;
    let second = receipt(&http, &url, &second_tx).await?;
    let renewed = second.endorsement_validity.context("a period")?;
    assert!(renewed.not_after > period.not_after && renewed.covers(second.signed_at.context("a time")?));
    let (ok, output) = verify(dir.path(), &second, &service, "second.json")?;
    assert!(ok, "{output}");
    let again = receipt(&http, &url, &first_tx).await?;
    assert_eq!(again.endorsement_validity, Some(period), "the old receipt keeps its own endorsement");
    let (ok, output) = verify(dir.path(), &again, &service, "again.json")?;
    assert!(ok, "{output}");
    Ok(())
}
