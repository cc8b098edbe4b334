//! `wattle audit DATA_DIR`: re-derive everything a node holds from its history alone and name the
//! first transaction that does not match.
//!
//! From the first entry on, the audit decodes each history record, re-verifies every meter
//! signature against the meter registry as it stood at that point, re-executes the state machine
//! (settlement included) in memory, recomputes the claims document, the Merkle leaf and the root,
//! and checks every signature transaction's root and signature. Finally it compares the state it
//! rebuilt with the node's state key by key; a difference names the transaction that last wrote
//! the key.

use std::collections::BTreeMap;

use domain::merkle::{self, Frontier};
use domain::tx::TxBody;
use openraft::EntryPayload;

use crate::entry::decode_entry;
use crate::state::{self, Overlay, StateRead, Table};
use crate::store::Store;

/// What an audit found when everything matched.
#[derive(Debug, Clone, Default)]
pub struct AuditReport {
    pub entries: u64,
    pub transactions: u64,
    pub readings_verified: u64,
    pub signatures_checked: u64,
    pub state_keys_compared: u64,
    pub root: Option<merkle::Hash>,
}

/// The first mismatch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit failed at log index {index}, transaction {tx_id}: {reason}")]
pub struct AuditFailure {
    pub index: u64,
    /// The transaction id in hex, or `raft entry` for openraft's own entries.
    pub tx_id: String,
    pub reason: String,
}

/// State rebuilt in memory.
#[derive(Default)]
struct Replay {
    tables: BTreeMap<(Table, Vec<u8>), Vec<u8>>,
    /// The log index of the transaction that last wrote each key.
    writers: BTreeMap<(Table, Vec<u8>), u64>,
}

impl StateRead for Replay {
    fn get(&self, table: Table, key: &[u8]) -> Option<Vec<u8>> {
        self.tables.get(&(table, key.to_vec())).cloned()
    }
}

/// Audits a node's store; `progress(done, total)` is called every 10,000 entries.
pub fn audit(store: &Store, mut progress: impl FnMut(u64, u64)) -> Result<AuditReport, AuditFailure> {
    let applied = store.applied_index();
    let fail = |index: u64, tx_id: &str, reason: String| AuditFailure { index, tx_id: tx_id.to_string(), reason };
    match store.history_start() {
        Ok(Some(0)) => {}
        Ok(None) if applied == 0 => return Ok(AuditReport::default()),
        Ok(start) => {
            return Err(fail(
                0,
                "-",
                format!("history starts at {start:?}, not 0: the node has not fetched it all yet"),
            ))
        }
        Err(error) => return Err(fail(0, "-", format!("reading history: {error}"))),
    }
    let mut replay = Replay::default();
    let mut frontier = Frontier::default();
    let mut tx_ids: BTreeMap<u64, String> = BTreeMap::new();
    // The settlement lines re-execution produces, to compare with the history's index.
    let mut lines = BTreeMap::new();
    let mut report = AuditReport::default();
    let mut index = 0;
    const PAGE: u64 = 1_000;
    while index <= applied {
        let records = store.history_range(index, PAGE).map_err(|error| fail(index, "-", error.to_string()))?;
        if records.is_empty() {
            return Err(fail(index, "-", format!("history ends before the applied index {applied}")));
        }
        for (at, record) in records {
            let entry = decode_entry(&record.entry)
                .map_err(|error| fail(at, "-", format!("entry does not decode: {error}")))?;
            if entry.log_id.index != at {
                return Err(fail(at, "-", format!("history record holds the entry of index {}", entry.log_id.index)));
            }
            let tx_id = match &entry.payload {
                EntryPayload::Normal(tx) => {
                    let tx_id = tx.tx_id.to_string();
                    report.transactions += 1;
                    if let TxBody::Readings(batch) = &tx.body {
                        for item in &batch.readings {
                            let reading = item.reading.reading();
                            let Some(meter) = state::meter(&replay, &reading.meter_id) else { continue };
                            if meter.key_id != reading.key_id {
                                continue; // refused by the state machine as unknown_key; nothing settled
                            }
                            if domain::verify::verify(item.reading.signed().clone(), &meter.public_key).is_err() {
                                return Err(fail(
                                    at,
                                    &tx_id,
                                    format!(
                                        "the meter signature of {} #{} does not verify",
                                        reading.meter_id, reading.sequence.0
                                    ),
                                ));
                            }
                            report.readings_verified += 1;
                        }
                    }
                    if matches!(tx.body, TxBody::Signature(_)) {
                        report.signatures_checked += 1;
                    }
                    let mut overlay = Overlay::new(&replay);
                    let applied =
                        state::apply(&mut overlay, at, tx).map_err(|halt| fail(at, &tx_id, halt.reason.clone()))?;
                    let root = check_leaf(&mut frontier, at, &record, &tx.tx_id.0, applied.claims)
                        .map_err(|reason| fail(at, &tx_id, reason))?;
                    // The root this entry leads to, recorded for a marker's signature step.
                    state::record_marker_root(&mut overlay, at, root);
                    let settled = crate::history::settled_lines(at, tx, record.claims.as_deref())
                        .map_err(|reason| fail(at, &tx_id, reason))?;
                    lines.extend(settled);
                    let writes = overlay.writes.puts;
                    for (key, value) in writes {
                        replay.writers.insert(key.clone(), at);
                        replay.tables.insert(key, value);
                    }
                    tx_id
                }
                _ => {
                    let tx_id = "raft entry".to_string();
                    check_leaf(&mut frontier, at, &record, &[0; 16], None)
                        .map_err(|reason| fail(at, &tx_id, reason))?;
                    tx_id
                }
            };
            tx_ids.insert(at, tx_id);
            report.entries += 1;
            index = at + 1;
            if report.entries % 10_000 == 0 {
                progress(report.entries, applied + 1);
            }
        }
    }
    report.root = frontier.root();
    // The node's state must be exactly what its history produces.
    for table in [Table::Public, Table::Private] {
        let on_disk: BTreeMap<Vec<u8>, Vec<u8>> = store.scan_prefix(table, b"").into_iter().collect();
        let rebuilt: BTreeMap<&Vec<u8>, &Vec<u8>> =
            replay.tables.iter().filter(|((t, _), _)| *t == table).map(|((_, key), value)| (key, value)).collect();
        for (key, value) in &on_disk {
            report.state_keys_compared += 1;
            if rebuilt.get(key).copied() != Some(value) {
                let writer = replay.writers.get(&(table, key.clone())).copied();
                let (at, tx_id) = match writer {
                    Some(at) => (at, tx_ids.get(&at).cloned().unwrap_or_default()),
                    None => (applied, "-".to_string()),
                };
                return Err(fail(
                    at,
                    &tx_id,
                    format!("{table:?} state key {} differs from what the history produces", printable(key)),
                ));
            }
        }
        if let Some(key) = rebuilt.keys().find(|key| !on_disk.contains_key(**key)) {
            let at = replay.writers.get(&(table, (*key).clone())).copied().unwrap_or(applied);
            let tx_id = tx_ids.get(&at).cloned().unwrap_or_default();
            return Err(fail(at, &tx_id, format!("{table:?} state key {} is missing", printable(key))));
        }
    }
    let compared = crate::history::compare_settled_lines(store.kv().as_ref(), &lines)
        .map_err(|(at, reason)| fail(at, &tx_ids.get(&at).cloned().unwrap_or_else(|| "-".to_string()), reason))?;
    report.state_keys_compared += compared;
    Ok(report)
}

/// Checks an entry's re-executed claims, its leaf and the root after it against the stored
/// record, and appends the leaf; returns the root.
fn check_leaf(
    frontier: &mut Frontier,
    at: u64,
    record: &crate::store::HistoryRecord,
    tx_id: &[u8; 16],
    claims: Option<Vec<u8>>,
) -> Result<merkle::Hash, String> {
    if claims != record.claims {
        return Err("the stored claims document differs from re-executed settlement".into());
    }
    let leaf = crate::store::entry_leaf(tx_id, &record.entry, claims.as_deref());
    if leaf != record.leaf {
        return Err("the stored Merkle leaf does not match the entry".into());
    }
    frontier.append(leaf);
    let root = frontier.root().expect("a leaf was appended");
    if root != record.root {
        return Err(format!("the stored Merkle root after entry {at} does not match the history up to it"));
    }
    Ok(root)
}

fn printable(key: &[u8]) -> String {
    key.iter()
        .map(|&byte| if byte.is_ascii_graphic() { (byte as char).to_string() } else { format!("\\x{byte:02x}") })
        .collect()
}
