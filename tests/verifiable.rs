//! The verifiable ledger (issue 7) with a real node process: a receipt verifies offline with the
//! CLI and fails once changed; `wattle audit` passes on an untouched node and names the
//! transaction when a settled amount, or a transaction in the history, is changed through the
//! RocksDB API (so RocksDB's own checksums stay valid).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use domain::api::{SubmitReadings, SubmitReadingsResponse};
use domain::ids::{GatewayId, KeyId, Sequence, UnixSeconds};
use domain::reading::Reading;
use ledger::history::SettledReading;
use ledger::kv::{Batch, Cf, Kv, RocksKv};
use ledger::store::HistoryRecord;
use rust_decimal::Decimal;

use crate::support::{configure_ledger, open_sealed, poll_until, start_single_ledger, wattle, CLUSTER_SERIAL};

const SEED: u64 = 11;
const METERS: u32 = 3;

pub(crate) fn reading(meter: u32, sequence: u64) -> Reading {
    let start = 1_767_571_200 + 900 * sequence as i64;
    Reading::import_interval(
        firmware_sim::meter_id(meter),
        KeyId(1),
        Sequence(sequence),
        UnixSeconds(start),
        10_000 * sequence,
        250 + u64::from(meter),
    )
}

/// Runs a wattle command to completion; returns (success, stdout + stderr).
pub(crate) fn run(command: &mut Command) -> anyhow::Result<(bool, String)> {
    let output = command.output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    Ok((output.status.success(), text))
}

/// `wattle audit` under the node's own anchors: `anchors` is (operator key, service key).
fn audit(data_dir: &Path, anchors: &(String, String)) -> anyhow::Result<(bool, String)> {
    run(wattle().arg("audit").arg(data_dir).args(["--operator-key", &anchors.0, "--service-key", &anchors.1]))
}

/// The public key (hex) of a secret key file written by `wattle keygen`.
pub(crate) fn operator_public_key(secret_file: &Path) -> anyhow::Result<String> {
    let secret: [u8; 32] = hex::decode(std::fs::read_to_string(secret_file)?.trim())?
        .try_into()
        .map_err(|_| anyhow::anyhow!("a secret key is 32 bytes"))?;
    Ok(hex::encode(ed25519_dalek::SigningKey::from_bytes(&secret).verifying_key().to_bytes()))
}

/// Stops the single node started in `dir` and runs `wattle audit` on its data directory under
/// the operator key in `dir/operator.key` and the service public key `service`.
pub(crate) async fn audit_stopped_node(
    node: &mut crate::support::Process,
    dir: &Path,
    service: &str,
) -> anyhow::Result<(bool, String)> {
    node.kill()?;
    let data_dir = dir.join("node-1");
    crate::support::poll_until("the node released its database", std::time::Duration::from_secs(20), || {
        let data_dir = data_dir.clone();
        async move { ledger::kv::RocksKv::open(&data_dir.join("db")).ok().map(drop) }
    })
    .await?;
    let operator = operator_public_key(&dir.join("operator.key"))?;
    run(wattle().arg("audit").arg(&data_dir).args(["--operator-key", &operator, "--service-key", service.trim()]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_verify_offline_and_audit_names_tampered_transactions() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build()?;
    configure_ledger(dir.path(), METERS, SEED, "0.3127")?;
    let (mut node, url) = start_single_ledger(dir.path(), &[]).await?;

    // The service key endorses the node's signing key.
    let (ok, service_public) = run(wattle().arg("keygen").arg("--out").arg(path("service.key")))?;
    anyhow::ensure!(ok, "keygen failed: {service_public}");
    let service_public = service_public.trim().to_string();
    let (ok, output) = run(wattle()
        .args(["node", "endorse", "--ledger", &url, "--node", &url])
        .arg("--service-key")
        .arg(path("service.key"))
        .arg("--operator-key")
        .arg(path("operator.key")))?;
    anyhow::ensure!(ok, "endorse failed: {output}");

    // Two batches of signed readings, each committed (and signed) before the response.
    let mut tx_ids = Vec::new();
    for sequence in 1..=2 {
        let readings = (0..METERS)
            .map(|meter| {
                let key = firmware_sim::meter_key(SEED, meter);
                reading(meter, sequence).sign(&key).expect("valid reading").to_envelope(false)
            })
            .collect();
        let request = SubmitReadings { gateway_id: GatewayId::new("gw-test")?, readings, gateway_signature: None };
        let response: SubmitReadingsResponse =
            http.post(format!("{url}/v1/readings")).json(&request).send().await?.error_for_status()?.json().await?;
        tx_ids.push(response.tx_id.context("a transaction id")?);
    }
    let status: serde_json::Value =
        http.get(format!("{url}/v1/transactions/{}", tx_ids[0])).send().await?.json().await?;
    assert_eq!(status["status"], "committed", "a transaction is committed once a signature covers it");

    // The receipt verifies offline, with its claims document.
    let tx_id = &tx_ids[0];
    let receipt = http.get(format!("{url}/v1/receipts/{tx_id}")).send().await?.error_for_status()?.bytes().await?;
    let claims =
        http.get(format!("{url}/v1/transactions/{tx_id}/claims")).send().await?.error_for_status()?.text().await?;
    let readings = claims.lines().skip(1).filter(|line| !line.starts_with(' ')).count();
    assert!(claims.starts_with("wattle.claims.v2\n") && readings == METERS as usize, "{claims}");
    std::fs::write(path("receipt.bin"), &receipt)?;
    std::fs::write(path("claims.txt"), &claims)?;
    let verify = |file: &str, claims: &str| {
        run(wattle()
            .args(["receipt", "verify"])
            .arg(path(file))
            .args(["--service-key", &service_public])
            .arg("--claims")
            .arg(path(claims)))
    };
    let (ok, output) = verify("receipt.bin", "claims.txt")?;
    assert!(ok, "the receipt does not verify: {output}");
    assert!(output.contains(tx_id.as_str()), "{output}");
    // The JSON form the API serves verifies too, and fails with a changed leaf index.
    let json: serde_json::Value =
        http.get(format!("{url}/v1/receipts/{tx_id}?format=json")).send().await?.error_for_status()?.json().await?;
    std::fs::write(path("receipt.json"), serde_json::to_vec_pretty(&json)?)?;
    let (ok, output) = verify("receipt.json", "claims.txt")?;
    assert!(ok, "the JSON receipt does not verify: {output}");
    let mut changed_json = json.clone();
    changed_json["leaf_index"] = serde_json::json!(json["leaf_index"].as_u64().context("leaf_index")? ^ 4);
    std::fs::write(path("changed.json"), serde_json::to_vec(&changed_json)?)?;
    assert!(!verify("changed.json", "claims.txt")?.0, "a JSON receipt with a changed leaf index verified");
    // Any changed byte fails (the property test covers every position; here the CLI end to end).
    let mut changed = receipt.to_vec();
    let middle = changed.len() / 2;
    changed[middle] ^= 0x01;
    std::fs::write(path("changed.bin"), &changed)?;
    assert!(!verify("changed.bin", "claims.txt")?.0, "a changed receipt verified");
    std::fs::write(path("other-claims.txt"), claims.replace("accepted", "duplicate"))?;
    assert!(!verify("receipt.bin", "other-claims.txt")?.0, "other claims verified");
    let (ok, _) =
        run(wattle().args(["receipt", "verify"]).arg(path("receipt.bin")).args(["--service-key", &"ab".repeat(32)]))?;
    assert!(!ok, "a receipt verified under a stranger's service key");

    // Stop the node; the audit passes on its untouched data.
    node.kill()?;
    let data_dir = path("node-1");
    poll_until("the node released its database", Duration::from_secs(20), || {
        let data_dir = data_dir.clone();
        async move { RocksKv::open(&data_dir.join("db")).ok().map(drop) }
    })
    .await?;
    let anchors = (operator_public_key(&path("operator.key"))?, service_public.clone());
    let (ok, output) = audit(&data_dir, &anchors)?;
    assert!(ok, "audit of an untouched node failed: {output}");

    // Tamper with one settled amount (a settlement line, kept in the history's index): the audit
    // names the transaction that settled it.
    {
        let kv = open_sealed(&data_dir)?;
        let mut settled = Vec::new();
        kv.scan(Cf::Readings, &[], &mut |key, value| {
            settled.push((key.to_vec(), value.to_vec()));
            true
        })?;
        let (key, original) = settled.last().cloned().context("settled readings on disk")?;
        let mut line = SettledReading::decode(&original)?;
        line.amount += Decimal::new(1, 2);
        let mut batch = Batch::default();
        batch.put(Cf::Readings, key.clone(), line.encode());
        kv.write(batch)?;
        drop(kv);
        let (ok, output) = audit(&data_dir, &anchors)?;
        println!("changed settled amount: {output}");
        assert!(!ok, "audit passed over a changed settled amount");
        assert!(output.contains(&tx_ids[1]), "audit did not name transaction {}: {output}", tx_ids[1]);
        let kv = open_sealed(&data_dir)?;
        let mut batch = Batch::default();
        batch.put(Cf::Readings, key, original);
        kv.write(batch)?;
    }
    assert!(audit(&data_dir, &anchors)?.0, "audit failed after restoring the amount");

    // Tamper with one transaction in the history: flip a bit of a reading's signature.
    {
        let kv = open_sealed(&data_dir)?;
        let mut target = None;
        let wanted = hex::decode(&tx_ids[0])?;
        kv.scan(Cf::History, &[], &mut |key, value| {
            let record = HistoryRecord::decode(value).expect("history decodes");
            if record.entry.windows(wanted.len()).any(|window| window == wanted.as_slice()) {
                target = Some((key.to_vec(), record));
                return false;
            }
            true
        })?;
        let (key, mut record) = target.context("the first readings transaction in the history")?;
        // The entry's last bytes: the last reading's signature, then its backfill flag.
        let position = record.entry.len() - 2;
        record.entry[position] ^= 0x01;
        let mut batch = Batch::default();
        batch.put(Cf::History, key, record.encode());
        kv.write(batch)?;
    }
    let (ok, output) = audit(&data_dir, &anchors)?;
    println!("changed history: {output}");
    assert!(!ok, "audit passed over a changed history");
    assert!(output.contains(&tx_ids[0]), "audit did not name transaction {}: {output}", tx_ids[0]);
    Ok(())
}
