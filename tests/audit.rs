//! `wattle audit` cannot be fooled (issue 12, finding 4), with a real node process: a mistyped or
//! empty directory fails and nothing is created; the audit never writes to the store it reads;
//! it trusts only the keys on its command line, so a history whose admin transactions or
//! endorsements are signed by other keys (what a consistent rewrite under an attacker's keys
//! looks like) fails, naming the entry; an entry with an unknown rules version is named, without
//! a panic.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use domain::api::{SubmitReadings, SubmitReadingsResponse};
use domain::ids::GatewayId;
use domain::tx::{AdminAction, TxBody};
use ledger::entry::{decode_entry, encode_entry};
use ledger::kv::{Batch, Cf, Kv, RocksKv};
use ledger::store::HistoryRecord;
use openraft::EntryPayload;

use crate::support::{configure_ledger, open_sealed, poll_until, start_single_ledger, wattle, CLUSTER_SERIAL};
use crate::verifiable::{operator_public_key as public_key_of, reading, run};

const SEED: u64 = 12;
const METERS: u32 = 2;

/// A stranger's public key: valid hex, trusted by nobody.
const STRANGER: &str = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";

/// `wattle audit DIR --operator-key OPERATOR --service-key SERVICE`.
fn audit(data_dir: &Path, operator: &str, service: &str) -> anyhow::Result<(bool, String)> {
    run(wattle().arg("audit").arg(data_dir).args(["--operator-key", operator, "--service-key", service]))
}

/// Every file under `dir` with its length and modification time.
fn files(dir: &Path) -> anyhow::Result<BTreeMap<String, (u64, SystemTime)>> {
    let mut listing = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let metadata = entry.metadata()?;
        listing.insert(entry.file_name().to_string_lossy().into_owned(), (metadata.len(), metadata.modified()?));
    }
    Ok(listing)
}

/// Every history record, by log index.
fn history(kv: &dyn Kv) -> anyhow::Result<Vec<(Vec<u8>, HistoryRecord)>> {
    let mut records = Vec::new();
    let mut failure = None;
    kv.scan(Cf::History, &[], &mut |key, value| match HistoryRecord::decode(value) {
        Ok(record) => {
            records.push((key.to_vec(), record));
            true
        }
        Err(error) => {
            failure = Some(error);
            false
        }
    })?;
    match failure {
        Some(error) => Err(error.into()),
        None => Ok(records),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_refuses_a_mistyped_or_empty_directory_and_creates_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mistyped = dir.path().join("node-1-mistyped");
    let (ok, output) = audit(&mistyped, STRANGER, STRANGER)?;
    assert!(!ok, "the audit of a missing directory passed: {output}");
    assert!(output.contains("does not exist"), "no clear error: {output}");
    assert!(!mistyped.exists(), "the audit created the directory it was asked to audit");

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty)?;
    let (ok, output) = audit(&empty, STRANGER, STRANGER)?;
    assert!(!ok, "the audit of an empty directory passed: {output}");
    assert!(output.contains("no node database"), "no clear error: {output}");
    assert_eq!(std::fs::read_dir(&empty)?.count(), 0, "the audit wrote into an empty directory");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_trusts_only_its_anchors_never_writes_and_names_unknown_rules_versions() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build()?;
    configure_ledger(dir.path(), METERS, SEED, "0.25")?;
    let (mut node, url) = start_single_ledger(dir.path(), &[]).await?;
    let (ok, service) = run(wattle().arg("keygen").arg("--out").arg(path("service.key")))?;
    anyhow::ensure!(ok, "keygen failed: {service}");
    let service = service.trim().to_string();
    let operator = public_key_of(&path("operator.key"))?;
    let (ok, output) = run(wattle()
        .args(["node", "endorse", "--ledger", &url, "--node", &url])
        .arg("--service-key")
        .arg(path("service.key"))
        .arg("--operator-key")
        .arg(path("operator.key")))?;
    anyhow::ensure!(ok, "endorse failed: {output}");
    let readings = (0..METERS)
        .map(|meter| reading(meter, 1).sign(&firmware_sim::meter_key(SEED, meter)).expect("valid").to_envelope(false))
        .collect();
    let request = SubmitReadings { gateway_id: GatewayId::new("gw-audit")?, readings, gateway_signature: None };
    let response: SubmitReadingsResponse =
        http.post(format!("{url}/v1/readings")).json(&request).send().await?.error_for_status()?.json().await?;
    let readings_tx = response.tx_id.context("a transaction id")?;

    node.kill()?;
    let data_dir = path("node-1");
    poll_until("the node released its database", Duration::from_secs(20), || {
        let data_dir = data_dir.clone();
        async move { RocksKv::open(&data_dir.join("db")).ok().map(drop) }
    })
    .await?;

    // Where the first admin transaction and the endorsement sit, read from the history.
    let (first_admin, endorsement) = {
        let kv = open_sealed(&data_dir)?;
        let mut first_admin = None;
        let mut endorsement = None;
        for (_, record) in history(&kv)? {
            let entry = decode_entry(&record.entry)?;
            if let EntryPayload::Normal(tx) = &entry.payload {
                if let TxBody::Admin(admin) = &tx.body {
                    let at = (entry.log_id.index, tx.tx_id.to_string());
                    first_admin.get_or_insert(at.clone());
                    if matches!(admin.action, AdminAction::EndorseNode { .. }) {
                        endorsement.get_or_insert(at);
                    }
                }
            }
        }
        (first_admin.context("an admin transaction")?, endorsement.context("an endorsement")?)
    };

    // With the right anchors the audit passes, and leaves the database exactly as it was.
    let before = files(&data_dir.join("db"))?;
    let (ok, output) = audit(&data_dir, &operator, &service)?;
    assert!(ok, "the audit of an untouched node under its own anchors failed: {output}");
    assert_eq!(files(&data_dir.join("db"))?, before, "the audit changed the database it audited");
    // Anchors may also be files holding the public key.
    std::fs::write(path("operator.pub"), format!("{operator}\n"))?;
    std::fs::write(path("service.pub"), &service)?;
    let (ok, output) = run(wattle()
        .arg("audit")
        .arg(&data_dir)
        .arg("--operator-key")
        .arg(path("operator.pub"))
        .arg("--service-key")
        .arg(path("service.pub")))?;
    assert!(ok, "the audit with key files failed: {output}");

    // The same history audited by someone whose operator is someone else: the first admin
    // transaction is named, by log index and transaction id.
    let (ok, output) = audit(&data_dir, STRANGER, &service)?;
    assert!(!ok, "a history under a foreign operator key passed");
    assert!(output.contains(&format!("log index {}, transaction {}", first_admin.0, first_admin.1)), "{output}");
    assert!(output.contains("foreign_operator_key"), "{output}");
    // ... and whose service key is someone else's: the endorsement is named.
    let (ok, output) = audit(&data_dir, &operator, STRANGER)?;
    assert!(!ok, "a history under a foreign service key passed");
    assert!(output.contains(&format!("log index {}, transaction {}", endorsement.0, endorsement.1)), "{output}");
    assert!(output.contains("foreign_service_key"), "{output}");

    // A stored Merkle subtree (what receipts are built from) rewritten: named, though every
    // history record is intact (review of issue 12: the audit did not look at them).
    {
        let kv = open_sealed(&data_dir)?;
        let subtree = domain::merkle::Subtree { level: 1, index: 0 };
        let stored = kv.get(Cf::Tree, &subtree.key())?.context("the first level-1 subtree is stored")?;
        let mut batch = Batch::default();
        batch.put(Cf::Tree, subtree.key(), vec![0x5a; 32]);
        kv.write(batch)?;
        drop(kv);
        let (ok, output) = audit(&data_dir, &operator, &service)?;
        assert!(!ok, "a rewritten Merkle subtree passed the audit");
        assert!(output.contains("Merkle subtree at level 1 index 0"), "{output}");
        let kv = open_sealed(&data_dir)?;
        let mut batch = Batch::default();
        batch.put(Cf::Tree, subtree.key(), stored);
        kv.write(batch)?;
    }

    // An entry that needs rules version 99: named, with the version, and no panic.
    let rewritten_at = {
        let kv = open_sealed(&data_dir)?;
        let (key, mut record, index) = history(&kv)?
            .into_iter()
            .find_map(|(key, record)| {
                let entry = decode_entry(&record.entry).ok()?;
                match &entry.payload {
                    EntryPayload::Normal(tx) if tx.tx_id.to_string() == readings_tx => {
                        Some((key, record, entry.log_id.index))
                    }
                    _ => None,
                }
            })
            .context("the readings transaction in the history")?;
        let mut entry = decode_entry(&record.entry)?;
        if let EntryPayload::Normal(tx) = &mut entry.payload {
            tx.rules_version = 99;
        }
        record.entry = encode_entry(&entry);
        let mut batch = Batch::default();
        batch.put(Cf::History, key, record.encode());
        kv.write(batch)?;
        index
    };
    let (ok, output) = audit(&data_dir, &operator, &service)?;
    assert!(!ok, "an entry with an unknown rules version passed");
    assert!(!output.contains("panicked"), "the audit panicked: {output}");
    assert!(output.contains(&format!("log index {rewritten_at}, transaction {readings_tx}")), "{output}");
    assert!(output.contains("rules version 99"), "{output}");
    Ok(())
}
