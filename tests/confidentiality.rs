//! Issue 15: a household's data never rests in clear on a ledger node. The sandbox (three
//! authenticated nodes, governance, the simulated fleet; RocksDB compression is compiled out)
//! settles a few intervals; then every file under every node's data directory (WAL, SSTs,
//! MANIFEST, the raft log, snapshots, the history, keys) is searched for every customer id, every
//! meter id and the signed bytes and signature of readings the nodes hold, in raw, hex and
//! base64 form. None may be there. The readings searched for are read back through the node's
//! own ledger secrets, so the test also shows the data is there, only sealed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use domain::tx::TxBody;
use ledger::kv::{Cf, Kv};
use ledger::store::HistoryRecord;
use openraft::EntryPayload;

use crate::support::{open_sealed, wattle, Process, CLUSTER_SERIAL};

const METERS: u32 = 6;

fn every_file(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            every_file(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

/// The forms a secret could take on disk: raw, hex (both cases), and base64 (standard and URL
/// alphabets) at each of the three alignments it can have inside a longer base64 text.
fn forms(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut forms = vec![secret.to_vec(), hex::encode(secret).into_bytes(), hex::encode_upper(secret).into_bytes()];
    for engine in [&base64::engine::general_purpose::STANDARD_NO_PAD, &base64::engine::general_purpose::URL_SAFE_NO_PAD]
    {
        for offset in 0..3usize {
            let padded = [vec![0u8; offset], secret.to_vec()].concat();
            let text = engine.encode(&padded);
            // Characters that mix the padding's bits with the secret's depend on the neighbours.
            let skip = (offset * 8).div_ceil(6);
            let keep = (secret.len() * 8) / 6 - 1;
            forms.push(text.as_bytes()[skip..skip + keep].to_vec());
        }
    }
    forms
}

fn readings_held(node_dir: &Path) -> anyhow::Result<Vec<(Vec<u8>, [u8; 64])>> {
    let kv = open_sealed(node_dir)?;
    let mut readings = Vec::new();
    let mut failure = None;
    kv.scan(Cf::History, &[], &mut |_, value| match HistoryRecord::decode(value)
        .map_err(anyhow::Error::from)
        .and_then(|record| Ok(ledger::entry::decode_entry(&record.entry)?))
    {
        Ok(entry) => {
            if let EntryPayload::Normal(tx) = &entry.payload {
                if let TxBody::Readings(batch) = &tx.body {
                    for item in &batch.readings {
                        let signed = item.reading.signed();
                        readings.push((signed.bytes().to_vec(), *signed.signature()));
                    }
                }
            }
            true
        }
        Err(error) => {
            failure = Some(error);
            false
        }
    })?;
    if let Some(error) = failure {
        return Err(error);
    }
    Ok(readings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_file_of_any_node_holds_a_customer_id_a_meter_id_or_a_reading_in_clear() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("sandbox");
    let mut command = wattle();
    command.arg("sandbox").args(["--meters", &METERS.to_string(), "--exit-after-intervals", "3"]);
    // Small snapshots, so snapshot files (and a purged log) are among the files searched.
    command.args(["--snapshot-after-entries", "20"]);
    command.arg("--data-dir").arg(&data);
    let mut sandbox = Process::spawn("sandbox", dir.path(), command)?;
    let status = sandbox.wait(Duration::from_secs(300)).await?;
    anyhow::ensure!(status.success(), "the sandbox failed ({status}):\n{}", sandbox.log_tail());

    let node_dirs: Vec<PathBuf> = (1..=3).map(|id| data.join(format!("node-{id}"))).collect();
    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
    for index in 0..METERS {
        let meter = firmware_sim::meter_id(index);
        let customer = firmware_sim::customer_id(index);
        secrets.push((format!("meter id {}", meter.as_str()), meter.as_str().as_bytes().to_vec()));
        secrets.push((format!("customer id {}", customer.as_str()), customer.as_str().as_bytes().to_vec()));
    }
    let readings = readings_held(&node_dirs[0])?;
    anyhow::ensure!(readings.len() >= METERS as usize * 2, "the nodes hold only {} readings", readings.len());
    for (number, (bytes, signature)) in readings.iter().enumerate() {
        secrets.push((format!("signed bytes of reading {number}"), bytes.clone()));
        // A legacy meter's readings carry no signature of their own (the gateway attests them).
        if signature != &[0; 64] {
            secrets.push((format!("signature of reading {number}"), signature.to_vec()));
        }
    }
    let patterns: Vec<(String, Vec<u8>)> = secrets
        .iter()
        .flat_map(|(what, secret)| forms(secret).into_iter().map(move |form| (what.clone(), form)))
        .collect();

    let mut files = Vec::new();
    for node_dir in &node_dirs {
        every_file(node_dir, &mut files)?;
    }
    let names: Vec<String> = files.iter().filter_map(|path| path.file_name()?.to_str().map(str::to_owned)).collect();
    for kind in [".log", ".sst", "MANIFEST-", "ledger_secrets.wrapped"] {
        anyhow::ensure!(names.iter().any(|name| name.contains(kind)), "no {kind} file was scanned: {names:?}");
    }
    anyhow::ensure!(
        files.iter().any(|path| path.components().any(|part| part.as_os_str() == "snapshots")),
        "no snapshot was scanned"
    );
    let searcher = aho_corasick::AhoCorasick::new(patterns.iter().map(|(_, pattern)| pattern))?;
    let mut bytes_scanned = 0usize;
    let mut found = Vec::new();
    for path in &files {
        let content = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        bytes_scanned += content.len();
        for hit in searcher.find_overlapping_iter(&content) {
            found.push(format!(
                "{} at byte {} of {}",
                patterns[hit.pattern().as_usize()].0,
                hit.start(),
                path.display()
            ));
        }
    }
    anyhow::ensure!(found.is_empty(), "found in clear:\n{}", found.join("\n"));
    println!(
        "scanned {} files ({bytes_scanned} bytes) of 3 nodes for {} secrets in {} forms: none found",
        files.len(),
        secrets.len(),
        patterns.len()
    );
    Ok(())
}
