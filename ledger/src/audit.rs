//! `wattle audit DATA_DIR --operator-key KEY --service-key KEY`: re-derive everything a node
//! holds from its history alone, trusting only the keys given on the command line, and name the
//! first entry (log index and transaction id) that does not match.
//!
//! The store is opened read-only ([`open_store`]): a mistyped path is an error, not a new empty
//! store, and nothing the audit reads is ever written. The history is not trusted for keys: every
//! admin transaction that took effect must be signed by the operator anchor, every endorsement
//! that took effect must be the service anchor's, and every root signature that took effect must
//! be by a node key the service anchor endorsed, so a history rewritten consistently under other
//! keys fails at its first foreign signature.
//!
//! From the first entry on, the audit decodes each history record, re-verifies every meter
//! signature against the meter registry as it stood at that point, re-executes the state machine
//! (settlement included) in memory, recomputes the claims document, the Merkle leaf and the root,
//! and checks every signature transaction's root and signature. Finally it compares the state it
//! rebuilt with the node's state key by key; a difference names the transaction that last wrote
//! the key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use domain::merkle::{self, Frontier};
use domain::tx::{AdminAction, TxBody};
use openraft::EntryPayload;

use crate::entry::decode_entry;
use crate::limits::{AUDIT_PAGE_ENTRIES, AUDIT_PROGRESS_ENTRIES};
use crate::state::{self, Overlay, StateRead, Table};
use crate::store::Store;

/// The keys an auditor trusts, from a source other than the store it audits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustAnchors {
    /// The operator's public key: every admin transaction that took effect is signed by it.
    pub operator_key: [u8; 32],
    /// The service's public key: every endorsement that took effect is its signature, and every
    /// root signature is by a node key it endorsed.
    pub service_key: [u8; 32],
}

/// A public key given on the command line: 64 hex characters, or the path of a file holding
/// them (surrounding whitespace ignored). Trust anchors never come from the store audited.
pub fn public_key_argument(argument: &str) -> Result<[u8; 32], KeyArgumentError> {
    let text = if is_key_hex(argument.trim()) {
        argument.trim().to_string()
    } else {
        std::fs::read_to_string(argument)
            .map_err(|error| KeyArgumentError::Unreadable { path: argument.to_string(), message: error.to_string() })?
            .trim()
            .to_string()
    };
    if !is_key_hex(&text) {
        return Err(KeyArgumentError::NotAKey(argument.to_string()));
    }
    let mut key = [0; 32];
    hex::decode_to_slice(&text, &mut key).map_err(|_| KeyArgumentError::NotAKey(argument.to_string()))?;
    Ok(key)
}

fn is_key_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|byte| byte.is_ascii_hexdigit())
}

/// Why a key argument is not a public key.
#[derive(Debug, thiserror::Error)]
pub enum KeyArgumentError {
    #[error("{0} is neither 64 hex characters nor a file holding them")]
    NotAKey(String),
    #[error("reading the key file {path}: {message}")]
    Unreadable { path: String, message: String },
}

/// Why a data directory cannot be audited at all.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0} does not exist (mistyped path?)")]
    Missing(PathBuf),
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("{0} holds no node database (no db/CURRENT): not a node's data directory")]
    NoDatabase(PathBuf),
    #[error("{0} holds no ledger secrets ({file}) to open its sealed database", file = crate::provision::SECRETS_FILE)]
    NoSecrets(PathBuf),
    #[error("opening the database in {path} read-only: {message}")]
    Database { path: PathBuf, message: String },
}

/// Opens a node's data directory for an audit: read-only, never creating a directory, a
/// database or a column family. The database is sealed: it opens with the node's own ledger
/// secrets (wrapped for its X25519 key in the same directory) unless `secrets` are given.
#[cfg(feature = "rocksdb")]
pub fn open_store(
    data_dir: &std::path::Path,
    secrets: Option<crate::secrets::LedgerSecrets>,
) -> Result<Store, OpenError> {
    let path = data_dir.to_path_buf();
    let metadata = std::fs::metadata(data_dir).map_err(|_| OpenError::Missing(path.clone()))?;
    if !metadata.is_dir() {
        return Err(OpenError::NotADirectory(path));
    }
    if !data_dir.join("db").join("CURRENT").is_file() {
        return Err(OpenError::NoDatabase(path));
    }
    let database = |error: anyhow::Error| OpenError::Database { path: path.clone(), message: format!("{error:#}") };
    let secrets = match secrets {
        Some(secrets) => secrets,
        None => crate::provision::load_local(data_dir)
            .map_err(database)?
            .ok_or_else(|| OpenError::NoSecrets(path.clone()))?,
    };
    Store::open_read_only(data_dir, std::sync::Arc::new(secrets)).map_err(database)
}

/// What an audit found when everything matched.
#[derive(Debug, Clone, Default)]
pub struct AuditReport {
    pub entries: u64,
    pub transactions: u64,
    pub readings_verified: u64,
    pub signatures_checked: u64,
    /// Admin transactions that took effect, each checked against the operator anchor.
    pub admin_checked: u64,
    /// Endorsements that took effect, each checked against the service anchor.
    pub endorsements_checked: u64,
    /// Members' proposals, ballots and withdrawals that took effect, each re-decided by the
    /// replay under the constitution version its proposal was made under.
    pub governance_acts: u64,
    /// Proposals the replay found accepted (their actions re-executed).
    pub proposals_accepted: u64,
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

/// A root signature met in the replay: (log index, tx id, node id, node key, signing time).
type RootSigner = (u64, String, u64, [u8; 32], Option<i64>);

/// Audits a node's store against the trust anchors; `progress(done, total)` is called every
/// [`AUDIT_PROGRESS_ENTRIES`] entries.
pub fn audit(
    store: &Store,
    anchors: &TrustAnchors,
    mut progress: impl FnMut(u64, u64),
) -> Result<AuditReport, AuditFailure> {
    let applied = store.applied_index();
    let fail = |index: u64, tx_id: &str, reason: String| AuditFailure { index, tx_id: tx_id.to_string(), reason };
    match store.history_start() {
        Ok(Some(0)) => {}
        // An empty ledger proves nothing: more likely the wrong directory than a ledger.
        Ok(None) => return Err(fail(0, "-", "the store holds no history: nothing to audit".into())),
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
    // Root signatures that took effect: (log index, tx id, node id, node key), checked against
    // the endorsements once the whole history is replayed (a node signs before it is endorsed).
    let mut root_signers: Vec<RootSigner> = Vec::new();
    // The settlement lines re-execution produces, to compare with the history's index.
    let mut lines = BTreeMap::new();
    let mut report = AuditReport::default();
    let mut index = 0;
    while index <= applied {
        let records =
            store.history_range(index, AUDIT_PAGE_ENTRIES).map_err(|error| fail(index, "-", error.to_string()))?;
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
                    if !domain::settlement::supports_rules_version(tx.rules_version) {
                        return Err(fail(
                            at,
                            &tx_id,
                            format!(
                                "unknown_rules_version: the entry needs rules version {}, which this build cannot \
                                 execute (it executes {})",
                                tx.rules_version,
                                domain::settlement::RULES_VERSION
                            ),
                        ));
                    }
                    if let TxBody::Readings(batch) = &tx.body {
                        for item in &batch.readings {
                            let reading = item.reading.reading();
                            let Some(meter) = state::meter(&replay, &reading.meter_id) else { continue };
                            // A key not valid for the interval is refused by the state machine
                            // (unknown_key, key_not_yet_valid, key_retired): nothing settled.
                            let Ok(public_key) = meter.keys.key_for(reading.key_id, reading.interval_start) else {
                                continue;
                            };
                            if domain::verify::verify(item.reading.signed().clone(), &public_key).is_err() {
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
                    // Only what took effect is trusted configuration; a refused transaction
                    // changed nothing but its own record.
                    if applied.result.admin_refused.is_none() {
                        check_anchors(anchors, tx, &mut report).map_err(|reason| fail(at, &tx_id, reason))?;
                        if let TxBody::Signature(signature) = &tx.body {
                            root_signers.push((
                                at,
                                tx_id.clone(),
                                signature.node_id,
                                signature.node_key,
                                signature.signed_at,
                            ));
                        }
                    }
                    let root = check_leaf(store, &mut frontier, at, &record, &tx.tx_id.0, applied.claims)
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
                    check_leaf(store, &mut frontier, at, &record, &[0; 16], None)
                        .map_err(|reason| fail(at, &tx_id, reason))?;
                    tx_id
                }
            };
            tx_ids.insert(at, tx_id);
            report.entries += 1;
            index = at + 1;
            if report.entries % AUDIT_PROGRESS_ENTRIES == 0 {
                progress(report.entries, applied + 1);
            }
        }
    }
    report.root = frontier.root();
    for (at, tx_id, node_id, node_key, signed_at) in &root_signers {
        // Endorsements are recorded only when the service anchor signed them (checked above);
        // a root names the time it was signed, which an endorsement's period must cover.
        if crate::endorsements::endorsement_at(&replay, *node_id, node_key, *signed_at).is_none() {
            return Err(fail(
                *at,
                tx_id,
                format!(
                    "unendorsed_signer: node {node_id} signed a root with key {}{}, which the trusted service key \
                     never endorsed for that time",
                    hex::encode(node_key),
                    signed_at.map_or(String::new(), |at| format!(" at {at} ms"))
                ),
            ));
        }
    }
    // Endorsements voted through governance are checked by the key they pinned: every
    // endorsement verifies against the pinned service key, so it must be the trusted one.
    if let Some(pinned) = state::service_key(&replay) {
        if pinned != anchors.service_key {
            let at = replay.writers.get(&(Table::Public, b"service_key".to_vec())).copied().unwrap_or_default();
            let tx_id = tx_ids.get(&at).cloned().unwrap_or_default();
            return Err(fail(
                at,
                &tx_id,
                format!(
                    "foreign_service_key: nodes are endorsed by {}, not the trusted service key {}",
                    hex::encode(pinned),
                    hex::encode(anchors.service_key)
                ),
            ));
        }
    }
    report.proposals_accepted = crate::governance::proposal_ids(&replay, None, usize::MAX)
        .iter()
        .filter_map(|(_, id)| crate::governance::proposal(&replay, id))
        .filter(|record| record.status == crate::governance::Status::Accepted)
        .count() as u64;
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

/// Checks a transaction that took effect against the trust anchors.
fn check_anchors(anchors: &TrustAnchors, tx: &domain::tx::Transaction, report: &mut AuditReport) -> Result<(), String> {
    if let TxBody::Gov(_) = &tx.body {
        report.governance_acts += 1;
    }
    let TxBody::Admin(admin) = &tx.body else { return Ok(()) };
    if admin.operator_key != anchors.operator_key {
        return Err(format!(
            "foreign_operator_key: the admin transaction is signed by {}, not the trusted operator key {}",
            hex::encode(admin.operator_key),
            hex::encode(anchors.operator_key)
        ));
    }
    report.admin_checked += 1;
    if let AdminAction::EndorseNode { service_key, node_id, .. } = &admin.action {
        if *service_key != anchors.service_key {
            return Err(format!(
                "foreign_service_key: node {node_id} is endorsed by {}, not the trusted service key {}",
                hex::encode(service_key),
                hex::encode(anchors.service_key)
            ));
        }
        report.endorsements_checked += 1;
    }
    Ok(())
}

/// Checks an entry's re-executed claims, its leaf and the root after it against the stored
/// record, and appends the leaf; every perfect subtree the leaf completes must match the one
/// stored for receipts, if one is (receipts are built from those). Returns the root.
fn check_leaf(
    store: &Store,
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
    let mut mismatch = None;
    frontier.append_with(leaf, |subtree, hash| {
        if mismatch.is_none() {
            match store.merkle_subtree(subtree) {
                Ok(Some(stored)) if stored != *hash => {
                    mismatch = Some(format!(
                        "the stored Merkle subtree at level {} index {} (used by receipts) differs from the history",
                        subtree.level, subtree.index
                    ));
                }
                Ok(_) => {}
                Err(error) => mismatch = Some(format!("reading a stored Merkle subtree: {error}")),
            }
        }
    });
    if let Some(reason) = mismatch {
        return Err(reason);
    }
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
