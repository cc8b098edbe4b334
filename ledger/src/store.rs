//! Storage for openraft: the raft log (`RaftLogStorage`) and the state machine
//! (`RaftStateMachine`), over one [`Kv`] per node (RocksDB on disk; memory in the simulation)
//! with a column family each for the log, raft's own metadata, the state machine's metadata, and
//! the public and private tables. Snapshots are files (`snapshot.rs`).
//!
//! A batch of applied entries, its state writes, `last_applied` and the membership go to disk in
//! one atomic, synced batch, so a crash can never apply an entry twice.

// openraft's storage traits fix the error type (`StorageError`, ~224 bytes); boxing it in our
// helpers would only add conversions at every trait boundary.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use domain::codec::{DecodeError, Reader, Writer};
use domain::tx::TxBody;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership, Vote,
};
use sha2::{Digest, Sha256};

use crate::entry::{
    decode_entry, decode_optional_log_id, decode_stored_membership, decode_vote, encode_entry, encode_optional_log_id,
    encode_stored_membership, encode_vote, NodeId, TypeConfig,
};
use crate::history::{self, SettledReading};
#[cfg(feature = "rocksdb")]
use crate::kv::RocksKv;
use crate::kv::{Batch, Cf, Kv, MemoryKv};
#[cfg(feature = "rocksdb")]
use crate::sealed_kv::SealedKv;
use crate::secrets::LedgerSecrets;
use crate::snapshot::{decode_pointer, for_each_record, Meta, SnapshotFile, SnapshotWriter, FAMILIES};
use crate::state::{self, Overlay, StateRead, Table, TxResult};
use domain::ids::{KeyId, MeterId, Sequence};
use domain::merkle;
use domain::reading::ReadingDigest;

const KEY_VOTE: &[u8] = b"vote";
pub(crate) const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
pub(crate) const KEY_LAST_APPLIED: &[u8] = b"last_applied";
pub(crate) const KEY_MEMBERSHIP: &[u8] = b"membership";
const KEY_AS_OF: &[u8] = b"as_of_ms";
const KEY_FRONTIER: &[u8] = b"merkle_frontier";

/// The metadata file naming the current snapshot.
pub(crate) const SNAPSHOT_CURRENT: &str = "current";

pub(crate) type StorageResult<T> = Result<T, StorageError<NodeId>>;

pub(crate) fn io_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    error: impl std::error::Error + 'static,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::new(&error)).into()
}
pub(crate) fn read_error(error: impl std::error::Error + 'static) -> StorageError<NodeId> {
    io_error(ErrorSubject::Store, ErrorVerb::Read, error)
}
pub(crate) fn write_error(error: impl std::error::Error + 'static) -> StorageError<NodeId> {
    io_error(ErrorSubject::Store, ErrorVerb::Write, error)
}

/// A node's database and snapshot directory. Clone to share.
#[derive(Clone)]
pub struct Store {
    pub(crate) kv: Arc<dyn Kv>,
    /// The ledger secrets the database is sealed under; `None` for the simulation's memory store.
    pub(crate) secrets: Option<Arc<LedgerSecrets>>,
    pub(crate) snapshot_dir: PathBuf,
    /// The highest log index covered by a committed signature (clients wait on it).
    signed: Arc<tokio::sync::watch::Sender<u64>>,
    /// Only for openraft's storage suite, which applies non-contiguous indexes.
    allow_log_gaps: bool,
    /// Most snapshot records per write batch when installing (`limits`; tests lower it).
    pub(crate) install_batch_records: usize,
    /// Held while a snapshot is built (scan to publish) and while one is installed: openraft
    /// builds in a task of its own, and a build that scanned before an install and published
    /// after it would make an older snapshot current than the state it replaced.
    pub(crate) snapshot_lock: Arc<std::sync::Mutex<()>>,
    /// Set while a streamed install has replaced part of the state: readers answer `503` then,
    /// never from a state that is half old, half new.
    pub(crate) installing: Arc<std::sync::atomic::AtomicBool>,
    /// Where a rotated ledger secret this node did not draw comes from: its peers' rings, over
    /// the secret handover (`provision.rs`); set once the node runs.
    secret_source: Arc<std::sync::OnceLock<crate::provision::SecretSource>>,
}

pub use crate::history::{entry_leaf, HistoryRecord};

impl Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("snapshot_dir", &self.snapshot_dir).finish()
    }
}

/// Creates `path` (and its parents) readable by its owner only (0700): a node's database, log,
/// snapshots and history hold every customer's data.
pub fn create_private_dir(path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(path)?;
    #[cfg(unix)]
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    Ok(())
}

impl Store {
    /// Opens (or creates) the RocksDB database and snapshot directory under `data_dir`, in the
    /// clear: only for measuring what sealing costs (`wattle bench ledger --confidentiality`).
    #[cfg(feature = "rocksdb")]
    /// The node still holds `secrets` (to hand them to peers), it only does not seal with them.
    pub fn open_unsealed(data_dir: &Path, secrets: Arc<LedgerSecrets>) -> anyhow::Result<Self> {
        create_private_dir(data_dir)?;
        let kv = RocksKv::open(&data_dir.join("db"))?;
        let mut store = Self::with_kv(Arc::new(kv), data_dir.join("snapshots"))?;
        store.secrets = Some(secrets);
        Ok(store)
    }

    /// Opens (or creates) the RocksDB database and snapshot directory under `data_dir`.
    /// Everything it stores is sealed under `secrets` (`sealed_kv.rs`).
    #[cfg(feature = "rocksdb")]
    pub fn open(data_dir: &Path, secrets: Arc<LedgerSecrets>) -> anyhow::Result<Self> {
        create_private_dir(data_dir)?;
        let kv = RocksKv::open(&data_dir.join("db"))?;
        let mut store =
            Self::with_kv(Arc::new(SealedKv::new(Arc::new(kv), secrets.clone())), data_dir.join("snapshots"))?;
        store.secrets = Some(secrets);
        Ok(store)
    }

    /// Opens an existing node's database read-only, touching neither it nor the snapshot
    /// directory (`wattle audit`); writes through this store fail.
    #[cfg(feature = "rocksdb")]
    pub fn open_read_only(data_dir: &Path, secrets: Arc<LedgerSecrets>) -> anyhow::Result<Self> {
        let kv = RocksKv::open_read_only(&data_dir.join("db"))?;
        let mut store = Store {
            kv: Arc::new(SealedKv::new(Arc::new(kv), secrets.clone())),
            secrets: Some(secrets),
            snapshot_dir: data_dir.join("snapshots"),
            signed: Arc::new(tokio::sync::watch::channel(0).0),
            allow_log_gaps: false,
            install_batch_records: crate::limits::SNAPSHOT_INSTALL_BATCH_RECORDS,
            snapshot_lock: Arc::default(),
            installing: Arc::default(),
            secret_source: Arc::default(),
        };
        store.signed = Arc::new(tokio::sync::watch::channel(store.signed_index()).0);
        Ok(store)
    }

    /// A store over an in-memory database (the deterministic simulation).
    pub fn in_memory(kv: Arc<MemoryKv>, snapshot_dir: PathBuf) -> anyhow::Result<Self> {
        Self::with_kv(kv, snapshot_dir)
    }

    fn with_kv(kv: Arc<dyn Kv>, snapshot_dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&snapshot_dir)?;
        // Leftovers of a snapshot being built or received when the node stopped.
        for entry in std::fs::read_dir(&snapshot_dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|extension| extension == "part") {
                std::fs::remove_file(&path)?;
            }
        }
        let mut store = Store {
            kv,
            secrets: None,
            snapshot_dir,
            signed: Arc::new(tokio::sync::watch::channel(0).0),
            allow_log_gaps: false,
            install_batch_records: crate::limits::SNAPSHOT_INSTALL_BATCH_RECORDS,
            snapshot_lock: Arc::default(),
            installing: Arc::default(),
            secret_source: Arc::default(),
        };
        store.finish_interrupted_install()?;
        store.signed = Arc::new(tokio::sync::watch::channel(store.signed_index()).0);
        Ok(store)
    }

    /// Adopts a rotation's new ledger secret (`rotation.rs`, `provision::adopt_rotation`): this
    /// node's own draw or a peer's, recognised by the rotation's payload; adds it to the ring and
    /// keeps the ring, wrapped for this node's key, in its data directory. Waits until some node
    /// hands it over. The memory store holds no ring.
    async fn adopt_secret(&self, version: u32, sealed: &[u8]) -> anyhow::Result<()> {
        let Some(secrets) = &self.secrets else { return Ok(()) };
        crate::provision::adopt_rotation(self.data_dir()?, secrets, &self.secret_source, version, sealed).await
    }

    /// The node's data directory (the snapshot directory's parent).
    pub fn data_dir(&self) -> anyhow::Result<&Path> {
        self.snapshot_dir.parent().context("the snapshot directory lies in the data directory")
    }

    /// Where rotated secrets this node did not draw come from (set once, when the node runs).
    pub fn set_secret_source(&self, source: crate::provision::SecretSource) {
        let _ = self.secret_source.set(source);
    }

    /// The ledger secrets the database is sealed under (none in the simulation).
    pub fn secrets(&self) -> Option<&Arc<LedgerSecrets>> {
        self.secrets.as_ref()
    }

    /// Whether a snapshot install is replacing the state right now (readers must not use it).
    pub fn installing(&self) -> bool {
        self.installing.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The highest log index a committed signature covers (0 before the first).
    pub fn signed_index(&self) -> u64 {
        state::last_signed(&self.state()).map_or(0, |(marker, _)| marker)
    }

    /// Waits until a committed signature covers `index`; `false` if `limit` passed first.
    pub async fn wait_signed(&self, index: u64, limit: std::time::Duration) -> bool {
        let mut receiver = self.signed.subscribe();
        tokio::time::timeout(limit, receiver.wait_for(|signed| *signed >= index))
            .await
            .is_ok_and(|result| result.is_ok())
    }

    /// The history record at a log index, if this node holds it.
    pub fn history(&self, index: u64) -> StorageResult<Option<HistoryRecord>> {
        match self.kv.get(Cf::History, &index.to_be_bytes()).map_err(read_error)? {
            None => Ok(None),
            Some(bytes) => Ok(Some(HistoryRecord::decode(&bytes).map_err(read_error)?)),
        }
    }

    /// History records from `from`, at most `limit`, in index order (stops at the first gap).
    pub fn history_range(&self, from: u64, limit: u64) -> StorageResult<Vec<(u64, HistoryRecord)>> {
        let mut raw = Vec::new();
        self.kv
            .scan(Cf::History, &from.to_be_bytes(), &mut |key, value| {
                let index = u64::from_be_bytes(key.try_into().expect("history keys are 8 bytes"));
                let next = from + raw.len() as u64;
                if index != next || raw.len() as u64 >= limit {
                    return false;
                }
                raw.push((index, value.to_vec()));
                true
            })
            .map_err(read_error)?;
        raw.into_iter().map(|(index, bytes)| Ok((index, HistoryRecord::decode(&bytes).map_err(read_error)?))).collect()
    }

    /// The root of a complete perfect subtree of the Merkle tree (a leaf at level 0), if stored.
    pub fn merkle_subtree(&self, subtree: merkle::Subtree) -> StorageResult<Option<merkle::Hash>> {
        match self.kv.get(Cf::Tree, &subtree.key()).map_err(read_error)? {
            None => Ok(None),
            Some(bytes) => Ok(Some(bytes.as_slice().try_into().map_err(|_| {
                read_error(std::io::Error::other(format!("Merkle subtree {subtree:?} is not 32 bytes")))
            })?)),
        }
    }

    /// The settlement line of a reading, if this node's history holds it (a node that joined from
    /// a snapshot lacks older lines until it has fetched the history before it).
    pub fn settled_line(
        &self,
        meter: &MeterId,
        key_id: KeyId,
        sequence: Sequence,
    ) -> StorageResult<Option<SettledReading>> {
        match self.kv.get(Cf::Readings, &history::reading_key(meter, key_id, sequence)).map_err(read_error)? {
            None => Ok(None),
            Some(bytes) => Ok(Some(SettledReading::decode(&bytes).map_err(read_error)?)),
        }
    }

    /// The digest of the reading settled at (meter, key id, sequence), from this node's history:
    /// the same digest is an exact duplicate, another one equivocation. `None`: not settled, or
    /// settled before the history this node holds (the state's ranges still refuse it).
    pub fn settled_digest(&self, meter: &MeterId, key_id: KeyId, sequence: Sequence) -> Option<ReadingDigest> {
        self.settled_line(meter, key_id, sequence).expect("history database readable").map(|line| line.digest)
    }

    /// Every settled line of one (meter, key id) in this node's history, in sequence order.
    pub fn settled_lines(&self, meter: &MeterId, key_id: KeyId) -> StorageResult<Vec<(u64, SettledReading)>> {
        let prefix = history::readings_prefix(meter, key_id);
        let mut raw = Vec::new();
        self.kv
            .scan(Cf::Readings, &prefix, &mut |key, value| {
                let inside = key.starts_with(&prefix) && key.len() == prefix.len() + 8;
                if inside {
                    let sequence = u64::from_be_bytes(key[prefix.len()..].try_into().expect("8 bytes"));
                    raw.push((sequence, value.to_vec()));
                }
                inside
            })
            .map_err(read_error)?;
        raw.into_iter()
            .map(|(sequence, bytes)| Ok((sequence, SettledReading::decode(&bytes).map_err(read_error)?)))
            .collect()
    }

    /// Each (meter, key id)'s totals in state equal the sum of its settlement lines in the
    /// history. Only meaningful on a node whose history is complete from index 0.
    pub fn check_settled_lines(&self) -> Result<(), String> {
        let private = self.scan_prefix(Table::Private, b"");
        for (meter, key_id, summary) in state::summaries(&private)? {
            let lines = self.settled_lines(&meter, key_id).map_err(|error| error.to_string())?;
            let amount: rust_decimal::Decimal = lines.iter().map(|(_, line)| line.amount).sum();
            let import_wh: u64 = lines.iter().map(|(_, line)| line.energy_import_wh).sum();
            let sequences: Vec<u64> = lines.iter().map(|(sequence, _)| *sequence).collect();
            let in_ranges = sequences.iter().all(|sequence| summary.ranges.contains(*sequence));
            if lines.len() as u64 != summary.readings_settled
                || amount != summary.amount
                || import_wh != summary.energy_import_wh
                || !in_ranges
            {
                return Err(format!(
                    "{meter} key {}: state holds {} readings ({} Wh, {}), the history {} lines ({import_wh} Wh, {amount})",
                    key_id.0,
                    summary.readings_settled,
                    summary.energy_import_wh,
                    summary.amount,
                    lines.len()
                ));
            }
        }
        Ok(())
    }

    /// The first key (and value) at or after `from` that starts with `prefix`.
    pub fn first_from(&self, table: Table, from: &[u8], prefix: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut found = None;
        self.kv
            .scan(table_cf(table), from, &mut |key, value| {
                if key.starts_with(prefix) {
                    found = Some((key.to_vec(), value.to_vec()));
                }
                false
            })
            .expect("state database readable");
        found
    }

    /// Stores history records fetched from a peer (below what this node applied itself).
    pub fn put_history(&self, records: &[(u64, HistoryRecord)]) -> StorageResult<()> {
        let mut batch = Batch::default();
        for (index, record) in records {
            batch.put(Cf::History, index.to_be_bytes(), record.encode());
        }
        // The indexes of what was fetched, in the same batch.
        history::derived_writes(records, &mut batch).map_err(|error| write_error(std::io::Error::other(error)))?;
        self.kv.write(batch).map_err(write_error)
    }

    /// The lowest log index this node holds history for.
    pub fn history_start(&self) -> StorageResult<Option<u64>> {
        let mut first = None;
        self.kv
            .scan(Cf::History, &[], &mut |key, _| {
                first = Some(u64::from_be_bytes(key.try_into().expect("history keys are 8 bytes")));
                false
            })
            .map_err(read_error)?;
        Ok(first)
    }

    /// The Merkle frontier after the last applied entry.
    pub fn frontier(&self) -> StorageResult<merkle::Frontier> {
        match self.kv.get(Cf::SmMeta, KEY_FRONTIER).map_err(read_error)? {
            None => Ok(merkle::Frontier::default()),
            Some(bytes) => merkle::Frontier::decode(&bytes).map_err(read_error),
        }
    }

    /// Direct access to the database, for `wattle audit` and its tests.
    pub fn kv(&self) -> &Arc<dyn Kv> {
        &self.kv
    }

    /// The raft log half.
    pub fn log_store(&self) -> LogStore {
        LogStore { store: self.clone() }
    }

    /// The state-machine half.
    pub fn state_machine(&self) -> StateMachineStore {
        StateMachineStore { store: self.clone(), snapshot_counter: Arc::new(AtomicU64::new(0)) }
    }

    /// A read view of committed state.
    pub fn state(&self) -> KvState<'_> {
        KvState { store: self }
    }

    /// Leader-stamped time of the last applied transaction, in ms.
    pub fn as_of_ms(&self) -> i64 {
        self.kv
            .get(Cf::SmMeta, KEY_AS_OF)
            .expect("state database readable")
            .map_or(0, |bytes| i64::from_be_bytes(bytes.as_slice().try_into().expect("8 bytes")))
    }

    /// Index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        self.read_last_applied().ok().flatten().map_or(0, |log_id| log_id.index)
    }

    /// Every key and value of a table with the given prefix (for listings).
    pub fn scan_prefix(&self, table: Table, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut items = Vec::new();
        self.kv
            .scan(table_cf(table), prefix, &mut |key, value| {
                let inside = key.starts_with(prefix);
                if inside {
                    items.push((key.to_vec(), value.to_vec()));
                }
                inside
            })
            .expect("state database readable");
        items
    }

    /// Every key in `[from, until)` under `prefix`, in key order: one seek, then a walk.
    pub fn scan_between(&self, table: Table, prefix: &[u8], from: &[u8], until: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut items = Vec::new();
        self.kv
            .scan(table_cf(table), from, &mut |key, value| {
                let inside = key.starts_with(prefix) && key < until;
                if inside {
                    items.push((key.to_vec(), value.to_vec()));
                }
                inside
            })
            .expect("state database readable");
        items
    }

    /// SHA-256 over every key and value of the public and private tables: equal state, equal digest.
    pub fn state_digest(&self) -> StorageResult<[u8; 32]> {
        let mut hasher = Sha256::new();
        self.kv
            .scan_consistent(&[Cf::Public, Cf::Private], &mut |cf, key, value| {
                hasher.update([cf as u8]);
                hasher.update((key.len() as u32).to_be_bytes());
                hasher.update(key);
                hasher.update((value.len() as u32).to_be_bytes());
                hasher.update(value);
                Ok(())
            })
            .map_err(read_error)?;
        Ok(hasher.finalize().into())
    }

    fn read_last_applied(&self) -> StorageResult<Option<LogId<NodeId>>> {
        match self.kv.get(Cf::SmMeta, KEY_LAST_APPLIED).map_err(read_error)? {
            None => Ok(None),
            Some(bytes) => decode_all(&bytes, decode_optional_log_id).map_err(read_error),
        }
    }

    fn read_membership(&self) -> StorageResult<StoredMembership<NodeId, openraft::BasicNode>> {
        match self.kv.get(Cf::SmMeta, KEY_MEMBERSHIP).map_err(read_error)? {
            None => Ok(StoredMembership::default()),
            Some(bytes) => decode_all(&bytes, decode_stored_membership).map_err(read_error),
        }
    }
}

fn table_cf(table: Table) -> Cf {
    match table {
        Table::Public => Cf::Public,
        Table::Private => Cf::Private,
    }
}

fn decode_all<T>(
    bytes: &[u8],
    decode: impl FnOnce(&mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    let mut reader = Reader::new(bytes);
    let value = decode(&mut reader)?;
    reader.finish()?;
    Ok(value)
}

/// Committed state read straight from the database.
pub struct KvState<'a> {
    store: &'a Store,
}

impl StateRead for KvState<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Option<Vec<u8>> {
        self.store.kv.get(table_cf(table), key).expect("state database readable")
    }
}

// ---- log ----------------------------------------------------------------------------------------

/// The raft log, keyed by big-endian index, values in the canonical entry codec.
#[derive(Clone, Debug)]
pub struct LogStore {
    store: Store,
}

impl LogStore {
    fn read_meta_log_id(&self, key: &[u8]) -> StorageResult<Option<LogId<NodeId>>> {
        match self.store.kv.get(Cf::Raft, key).map_err(read_error)? {
            None => Ok(None),
            Some(bytes) => decode_all(&bytes, decode_optional_log_id).map_err(read_error),
        }
    }
    fn write_meta(&self, key: &[u8], value: Vec<u8>) -> StorageResult<()> {
        let mut batch = Batch::default();
        batch.put(Cf::Raft, key, value);
        self.store.kv.write(batch).map_err(write_error)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<openraft::Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(&index) => index,
            Bound::Excluded(&index) => index + 1,
            Bound::Unbounded => 0,
        };
        let mut encoded = Vec::new();
        self.store
            .kv
            .scan(Cf::Log, &start.to_be_bytes(), &mut |key, value| {
                let index = u64::from_be_bytes(key.try_into().expect("log keys are 8 bytes"));
                let inside = range.contains(&index);
                if inside {
                    encoded.push(value.to_vec());
                }
                inside
            })
            .map_err(read_error)?;
        encoded.iter().map(|bytes| decode_entry(bytes).map_err(read_error)).collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id = self.read_meta_log_id(KEY_LAST_PURGED)?;
        let last_log_id = match self.store.kv.last(Cf::Log).map_err(read_error)? {
            None => last_purged_log_id,
            Some((_, value)) => Some(decode_entry(&value).map_err(read_error)?.log_id),
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.write_meta(KEY_VOTE, encode_vote(vote))
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        match self.store.kv.get(Cf::Raft, KEY_VOTE).map_err(read_error)? {
            None => Ok(None),
            Some(bytes) => Ok(Some(decode_vote(&bytes).map_err(read_error)?)),
        }
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        let mut writer = Writer::new();
        encode_optional_log_id(&mut writer, &committed);
        self.write_meta(KEY_COMMITTED, writer.finish())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        self.read_meta_log_id(KEY_COMMITTED)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut batch = Batch::default();
        for entry in entries {
            batch.put(Cf::Log, entry.log_id.index.to_be_bytes(), encode_entry(&entry));
        }
        let result = self.store.kv.write(batch);
        let reported =
            result.as_ref().map(|_| ()).map_err(|error| std::io::Error::new(error.kind(), error.to_string()));
        callback.log_io_completed(reported);
        result.map_err(write_error)
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut batch = Batch::default();
        batch.delete_range(Cf::Log, log_id.index.to_be_bytes(), u64::MAX.to_be_bytes());
        batch.delete(Cf::Log, u64::MAX.to_be_bytes());
        self.store.kv.write(batch).map_err(write_error)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut writer = Writer::new();
        encode_optional_log_id(&mut writer, &Some(log_id));
        let mut batch = Batch::default();
        batch.put(Cf::Raft, KEY_LAST_PURGED, writer.finish());
        batch.delete_range(Cf::Log, 0u64.to_be_bytes(), (log_id.index + 1).to_be_bytes());
        self.store.kv.write(batch).map_err(write_error)
    }
}

// ---- state machine ------------------------------------------------------------------------------

/// The state machine; the logic is [`crate::state`].
#[derive(Clone, Debug)]
pub struct StateMachineStore {
    store: Store,
    snapshot_counter: Arc<AtomicU64>,
}

pub(crate) fn snapshot_error(
    meta: Option<&SnapshotMeta<NodeId, openraft::BasicNode>>,
    verb: ErrorVerb,
) -> impl Fn(std::io::Error) -> StorageError<NodeId> {
    let subject = ErrorSubject::Snapshot(meta.map(SnapshotMeta::signature));
    move |error| io_error(subject.clone(), verb, error)
}

impl StateMachineStore {
    fn fresh_part(&self, purpose: &str) -> PathBuf {
        let counter = self.snapshot_counter.fetch_add(1, Ordering::Relaxed);
        self.store.snapshot_path(&format!("{purpose}-{counter}.part"))
    }

    /// Makes the data file `part` the current snapshot.
    fn publish_snapshot(&self, meta: &Meta, part: &Path) -> StorageResult<PathBuf> {
        let data_name = self.store.place_snapshot_data(meta, part)?;
        self.store.publish_current(meta, &data_name, &self.fresh_part("current"))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let failed = snapshot_error(None, ErrorVerb::Write);
        let _serial = self.store.snapshot_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let part = self.fresh_part("build");
        let mut writer = SnapshotWriter::create(&part).map_err(&failed)?;
        let mut last_applied = None;
        let mut membership = StoredMembership::default();
        let undecodable = |error: DecodeError| std::io::Error::new(std::io::ErrorKind::InvalidData, error.to_string());
        // As stored: a snapshot of sealed tables stays sealed on disk and on the wire.
        self.store
            .kv
            .scan_consistent_stored(&FAMILIES, &mut |cf, key, value| {
                if cf == Cf::SmMeta && key == KEY_LAST_APPLIED {
                    last_applied = decode_all(value, decode_optional_log_id).map_err(undecodable)?;
                } else if cf == Cf::SmMeta && key == KEY_MEMBERSHIP {
                    membership = decode_all(value, decode_stored_membership).map_err(undecodable)?;
                }
                writer.record(cf, key, value)
            })
            .map_err(&failed)?;
        writer.finish(self.store.kv.durable()).map_err(&failed)?;
        let counter = self.snapshot_counter.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match &last_applied {
            Some(log_id) => {
                format!("{}-{}-{}-{counter}", log_id.leader_id.term, log_id.leader_id.node_id, log_id.index)
            }
            None => format!("empty-{counter}"),
        };
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
        let data_path = self.publish_snapshot(&meta, &part)?;
        let file = SnapshotFile::open(&data_path).map_err(snapshot_error(Some(&meta), ErrorVerb::Read))?;
        Ok(Snapshot { meta, snapshot: Box::new(file) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, openraft::BasicNode>)> {
        Ok((self.store.read_last_applied()?, self.store.read_membership()?))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<TxResult>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let base = self.store.state();
        let mut overlay = Overlay::new(&base);
        let mut results = Vec::new();
        let mut last_applied = None;
        let mut membership = None;
        let mut as_of = None;
        let mut frontier = self.store.frontier()?;
        let mut history = Vec::new();
        let mut indexes = Batch::default();
        // Levels 1 and up: a leaf (level 0) is in its history record already.
        let mut record_subtree = |subtree: merkle::Subtree, hash: &merkle::Hash| {
            if subtree.level > 0 {
                indexes.put(Cf::Tree, subtree.key(), hash.to_vec());
            }
        };
        let mut lines = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            // openraft starts a cluster's log at index 0 and applies contiguously, so leaf i is
            // entry i. openraft's storage suite applies arbitrary indexes; for it alone, missing
            // indexes get empty leaves.
            while self.store.allow_log_gaps && frontier.size() < index {
                let empty = merkle::leaf_hash(&[0; 16], &merkle::sha256(&[]), &merkle::NO_CLAIMS);
                frontier.append_with(empty, &mut record_subtree);
            }
            if frontier.size() != index {
                return Err(write_error(std::io::Error::other(format!(
                    "Merkle tree holds {} leaves but the next entry is {index}",
                    frontier.size()
                ))));
            }
            let bytes = encode_entry(&entry);
            last_applied = Some(entry.log_id);
            let (tx_id, claims) = match entry.payload {
                EntryPayload::Blank => {
                    results.push(TxResult::default());
                    ([0; 16], None)
                }
                EntryPayload::Normal(tx) => {
                    as_of = Some(tx.time.0);
                    let applied = state::apply(&mut overlay, index, &tx)
                        .map_err(|halt| write_error(std::io::Error::other(halt.to_string())))?;
                    if let TxBody::RotateSecret { version, sealed } = &tx.body {
                        // Before this batch's writes are sealed: they, and all after, use it.
                        if applied.result.admin_refused.is_none() {
                            self.store
                                .adopt_secret(*version, sealed)
                                .await
                                .map_err(|error| write_error(std::io::Error::other(format!("{error:#}"))))?;
                        }
                    }
                    let settled = history::settled_lines(index, &tx, applied.claims.as_deref())
                        .map_err(|error| write_error(std::io::Error::other(error)))?;
                    lines.extend(settled);
                    results.push(applied.result);
                    (tx.tx_id.0, applied.claims)
                }
                EntryPayload::Membership(config) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), config));
                    results.push(TxResult::default());
                    ([0; 16], None)
                }
            };
            let leaf = entry_leaf(&tx_id, &bytes, claims.as_deref());
            frontier.append_with(leaf, &mut record_subtree);
            let root = frontier.root().expect("a leaf was just appended");
            state::record_marker_root(&mut overlay, index, root);
            history.push((index, HistoryRecord { entry: bytes, claims, leaf, root }));
        }
        let Some(last_applied) = last_applied else {
            return Ok(results);
        };
        let mut batch = Batch::default();
        for ((table, key), value) in overlay.writes.puts {
            batch.put(table_cf(table), key, value);
        }
        let mut writer = Writer::new();
        encode_optional_log_id(&mut writer, &Some(last_applied));
        batch.put(Cf::SmMeta, KEY_LAST_APPLIED, writer.finish());
        if let Some(membership) = membership {
            let mut writer = Writer::new();
            encode_stored_membership(&mut writer, &membership);
            batch.put(Cf::SmMeta, KEY_MEMBERSHIP, writer.finish());
        }
        if let Some(as_of) = as_of {
            batch.put(Cf::SmMeta, KEY_AS_OF, as_of.to_be_bytes().to_vec());
        }
        batch.put(Cf::SmMeta, KEY_FRONTIER, frontier.encode());
        for (index, record) in history {
            batch.put(Cf::History, index.to_be_bytes(), record.encode());
        }
        for (key, line) in lines {
            batch.put(Cf::Readings, key, line.encode());
        }
        batch.ops.extend(indexes.ops);
        self.store.kv.write(batch).map_err(write_error)?;
        self.store.signed.send_replace(self.store.signed_index());
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<SnapshotFile>> {
        let part = self.fresh_part("receive");
        Ok(Box::new(SnapshotFile::create(&part).map_err(snapshot_error(None, ErrorVerb::Write))?))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<SnapshotFile>,
    ) -> StorageResult<()> {
        let part = snapshot.path().to_path_buf();
        let mut file = snapshot.into_file();
        // Verified whole (streaming, nothing kept) before anything is replaced.
        for_each_record(&mut file, &mut |_, _, _| Ok(())).map_err(snapshot_error(Some(meta), ErrorVerb::Read))?;
        if self.store.kv.durable() {
            file.sync_all().map_err(snapshot_error(Some(meta), ErrorVerb::Write))?;
        }
        drop(file);
        let _serial = self.store.snapshot_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let data_name = self.store.place_snapshot_data(meta, &part)?;
        self.store.install_from(meta, &data_name, false, &self.fresh_part("current"))?;
        self.store.signed.send_replace(self.store.signed_index());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let failed = snapshot_error(None, ErrorVerb::Read);
        let bytes = match std::fs::read(self.store.snapshot_path(SNAPSHOT_CURRENT)) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(failed(error)),
        };
        let (meta, data_name) = decode_pointer(&bytes)?;
        let file = SnapshotFile::open(&self.store.snapshot_path(&data_name))
            .map_err(snapshot_error(Some(&meta), ErrorVerb::Read))?;
        Ok(Some(Snapshot { meta, snapshot: Box::new(file) }))
    }
}

#[cfg(test)]
mod tests {
    fn test_secrets() -> std::sync::Arc<crate::secrets::LedgerSecrets> {
        std::sync::Arc::new(crate::secrets::LedgerSecrets::new([1; 32], [2; 32]))
    }
    use anyhow::Context;
    use openraft::testing::{StoreBuilder, Suite};

    use super::*;

    /// Opens fresh stores in a temporary directory (kept alive by the returned guard).
    struct RocksBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RocksBuilder {
        async fn build(&self) -> StorageResult<(tempfile::TempDir, LogStore, StateMachineStore)> {
            let dir = tempfile::tempdir().map_err(write_error)?;
            let mut store = Store::open(dir.path(), test_secrets())
                .map_err(|error| write_error(std::io::Error::other(error.to_string())))?;
            store.allow_log_gaps = true;
            Ok((dir, store.log_store(), store.state_machine()))
        }
    }

    /// openraft's own storage test suite, against the RocksDB log and state machine.
    #[test]
    fn openraft_storage_suite() -> StorageResult<()> {
        Suite::test_all(RocksBuilder)
    }

    /// Counts every record the store reads through the `Kv` seam.
    #[derive(Debug, Default)]
    struct CountingKv {
        inner: MemoryKv,
        reads: AtomicU64,
    }

    impl Kv for CountingKv {
        fn get(&self, cf: Cf, key: &[u8]) -> crate::kv::KvResult<Option<Vec<u8>>> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.inner.get(cf, key)
        }
        fn scan(&self, cf: Cf, from: &[u8], visit: &mut crate::kv::Visit<'_>) -> crate::kv::KvResult<()> {
            self.inner.scan(cf, from, &mut |key, value| {
                self.reads.fetch_add(1, Ordering::Relaxed);
                visit(key, value)
            })
        }
        fn last(&self, cf: Cf) -> crate::kv::KvResult<Option<(Vec<u8>, Vec<u8>)>> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.inner.last(cf)
        }
        fn write(&self, batch: Batch) -> crate::kv::KvResult<()> {
            self.inner.write(batch)
        }
        fn scan_consistent(&self, cfs: &[Cf], visit: &mut crate::kv::VisitAll<'_>) -> crate::kv::KvResult<()> {
            self.inner.scan_consistent(cfs, &mut |cf, key, value| {
                self.reads.fetch_add(1, Ordering::Relaxed);
                visit(cf, key, value)
            })
        }
        fn durable(&self) -> bool {
            false
        }
    }

    /// Records read to build the receipt of leaf 0 once `entries` entries are signed.
    async fn receipt_reads(entries: u64) -> anyhow::Result<u64> {
        let dir = tempfile::tempdir()?;
        let kv = Arc::new(CountingKv::default());
        let store = Store::with_kv(kv.clone(), dir.path().join("snapshots"))?;
        let mut driver = crate::driver::Driver::new(store.clone()).await?;
        driver.configure(1, rust_decimal::Decimal::new(30, 2)).await?;
        driver.apply(vec![crate::driver::readings_body(&[(0, crate::driver::reading(0, 1, 500))])]).await?;
        while driver.next_index() < entries {
            let count = (entries - driver.next_index()).min(1_000);
            driver.apply((0..count).map(|_| domain::tx::TxBody::Tick).collect()).await?;
        }
        driver.sign().await?;
        let service_key = driver.service_public_key();
        kv.reads.store(0, Ordering::Relaxed);
        let receipt = crate::receipts::build(&store, 0).map_err(|error| anyhow::anyhow!("{error:?}"))?;
        let reads = kv.reads.load(Ordering::Relaxed);
        println!("receipt of leaf 0 over {entries} entries: {reads} records read");
        receipt.verify(&service_key, None).map_err(|error| anyhow::anyhow!("{error}"))?;
        assert_eq!(receipt.tree_size, entries + 1, "the signature covers every entry and its marker");
        Ok(reads)
    }

    /// Finding 7 of issue 12: a receipt costs O(log n) reads, not O(ledger size).
    #[tokio::test]
    async fn a_receipt_reads_logarithmically_many_records() -> anyhow::Result<()> {
        let small = receipt_reads(500).await?;
        let large = receipt_reads(20_000).await?;
        // log2(20,002) is about 14.3: a path of 15 siblings, each at most a few reads.
        assert!(large <= 80, "a receipt over 20,001 entries read {large} records (501 entries: {small})");
        Ok(())
    }

    /// The private table's key count and bytes, and the size of a snapshot's data file.
    async fn state_size(driver: &Driver) -> anyhow::Result<(usize, usize, u64)> {
        let private = driver.store.scan_prefix(Table::Private, b"");
        let bytes = private.iter().map(|(key, value)| key.len() + value.len()).sum();
        let snapshot = driver.store.state_machine().build_snapshot().await?;
        let data = snapshot.snapshot.path().metadata()?.len();
        Ok((private.len(), bytes, data))
    }

    use crate::driver::Driver;

    /// Finding 6 of issue 12: state grows with meters, not with readings. One meter's state is
    /// the same size after 1,000 and after 10,000 readings (the snapshot grows only by the
    /// per-transaction index and Merkle frontier, not by anything per reading).
    #[tokio::test]
    async fn state_grows_with_meters_not_readings() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut driver = Driver::new(Store::open(dir.path(), test_secrets())?).await?;
        driver.configure(1, rust_decimal::Decimal::new(30, 2)).await?;
        let mut sizes = Vec::new();
        let mut sequence = 1;
        for target in [1_000u64, 10_000] {
            while sequence <= target {
                let readings: Vec<_> =
                    (sequence..sequence + 500).map(|at| (0, crate::driver::reading(0, at, 250))).collect();
                sequence += 500;
                let results = driver.apply(vec![crate::driver::readings_body(&readings)]).await?;
                assert!(results[0].readings.iter().all(|result| *result == state::ReadingResult::Accepted));
            }
            sizes.push(state_size(&driver).await?);
        }
        let [(keys_1k, bytes_1k, snapshot_1k), (keys_10k, bytes_10k, snapshot_10k)] = sizes[..] else {
            unreachable!("two sizes")
        };
        assert_eq!(keys_1k, keys_10k, "private keys after 1,000 and 10,000 readings");
        assert_eq!(bytes_1k, bytes_10k, "private bytes after 1,000 and 10,000 readings");
        assert!(
            snapshot_10k < snapshot_1k + 2_048,
            "snapshot grew from {snapshot_1k} to {snapshot_10k} bytes over 9,000 readings"
        );
        Ok(())
    }

    /// A crash of the node's disk after `writes_left` more batches; records the largest batch.
    #[derive(Debug)]
    struct CrashingKv {
        inner: MemoryKv,
        writes_left: std::sync::atomic::AtomicI64,
        largest_batch: std::sync::atomic::AtomicUsize,
    }

    impl Kv for CrashingKv {
        fn get(&self, cf: Cf, key: &[u8]) -> crate::kv::KvResult<Option<Vec<u8>>> {
            self.inner.get(cf, key)
        }
        fn scan(&self, cf: Cf, from: &[u8], visit: &mut crate::kv::Visit<'_>) -> crate::kv::KvResult<()> {
            self.inner.scan(cf, from, visit)
        }
        fn last(&self, cf: Cf) -> crate::kv::KvResult<Option<(Vec<u8>, Vec<u8>)>> {
            self.inner.last(cf)
        }
        fn write(&self, batch: Batch) -> crate::kv::KvResult<()> {
            if self.writes_left.fetch_sub(1, Ordering::SeqCst) == 0 {
                return Err(std::io::Error::other("the disk is gone: the node crashed"));
            }
            self.largest_batch.fetch_max(batch.ops.len(), Ordering::SeqCst);
            self.inner.write(batch)
        }
        fn scan_consistent(&self, cfs: &[Cf], visit: &mut crate::kv::VisitAll<'_>) -> crate::kv::KvResult<()> {
            self.inner.scan_consistent(cfs, visit)
        }
        fn durable(&self) -> bool {
            false
        }
    }

    /// Finding 6 of issue 12: installing a snapshot streams it in bounded batches, and a crash in
    /// the middle leaves a state that the next open completes, never one it takes as whole.
    #[tokio::test]
    async fn snapshot_install_streams_and_survives_a_crash_midway() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        // Both ends hold the same ledger secrets: the snapshot carries the sealed bytes.
        let secrets = test_secrets();
        let mut source = Driver::new(Store::open(&dir.path().join("source"), secrets.clone())?).await?;
        source.configure(40, rust_decimal::Decimal::new(30, 2)).await?;
        let readings: Vec<_> = (0..40).map(|meter| (meter, crate::driver::reading(meter, 1, 300))).collect();
        source.apply(vec![crate::driver::readings_body(&readings)]).await?;
        let snapshot = source.store.state_machine().build_snapshot().await?;
        let records = crate::snapshot::read_records(&mut std::fs::File::open(snapshot.snapshot.path())?)?.len();
        assert!(records > 100, "{records} records");
        let expected = source.store.state_digest()?;

        for crash_after in [None, Some(1), Some(3), Some(6)] {
            let kv = Arc::new(CrashingKv {
                inner: MemoryKv::default(),
                writes_left: std::sync::atomic::AtomicI64::new(crash_after.unwrap_or(-1)),
                largest_batch: std::sync::atomic::AtomicUsize::new(0),
            });
            let snapshots = dir.path().join(format!("target-{crash_after:?}"));
            let sealed = Arc::new(SealedKv::new(kv.clone(), secrets.clone()));
            let mut store = Store::with_kv(sealed, snapshots.clone())?;
            store.install_batch_records = 25;
            let mut machine = store.state_machine();
            let receiving = machine.begin_receiving_snapshot().await?;
            // What openraft would stream into it, written through a second handle of the file.
            std::fs::copy(snapshot.snapshot.path(), receiving.path())?;
            let installed = machine.install_snapshot(&snapshot.meta, receiving).await;
            let store = match crash_after {
                None => {
                    installed?;
                    assert!(kv.largest_batch.load(Ordering::SeqCst) <= 25 + 3, "batches stay bounded");
                    store
                }
                Some(_) => {
                    assert!(installed.is_err(), "the disk failed mid-install");
                    // Restart: the same data behind a new handle; opening finishes the install.
                    let reopened = Arc::new(kv.inner.crash_and_reopen());
                    Store::with_kv(Arc::new(SealedKv::new(reopened, secrets.clone())), snapshots)?
                }
            };
            assert_eq!(store.state_digest()?, expected, "crash after {crash_after:?}: the state is the snapshot's");
            let (applied, _) = store.state_machine().applied_state().await?;
            assert_eq!(applied, snapshot.meta.last_log_id, "crash after {crash_after:?}");
            let current = store.state_machine().get_current_snapshot().await?.context("a current snapshot")?;
            assert_eq!(current.meta, snapshot.meta);
        }
        Ok(())
    }

    /// Equivocation is told from a duplicate by the digest in the history's index; a node that
    /// fetched the history from a peer derives the same indexes (lines and Merkle subtrees).
    #[tokio::test]
    async fn the_history_index_tells_duplicates_from_equivocation_and_is_rebuilt_from_fetched_history(
    ) -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut driver = Driver::new(Store::open(&dir.path().join("a"), test_secrets())?).await?;
        driver.configure(2, rust_decimal::Decimal::new(30, 2)).await?;
        let original = crate::driver::reading(1, 7, 400);
        driver.apply(vec![crate::driver::readings_body(&[(1, original.clone())])]).await?;
        let forged = crate::driver::reading(1, 7, 401);
        let results = driver.apply(vec![crate::driver::readings_body(&[(1, forged.clone())])]).await?;
        assert_eq!(results[0].readings, vec![state::ReadingResult::Duplicate], "the state keeps ranges only");
        let (_, key) = crate::driver::meter(1);
        let digest = |reading: &domain::reading::Reading| reading.sign(&key).expect("valid").digest();
        let settled = driver.store.settled_digest(&original.meter_id, KeyId(1), Sequence(7));
        assert_eq!(settled, Some(digest(&original)), "an exact duplicate has the settled digest");
        assert_ne!(settled, Some(digest(&forged)), "equivocation has another");
        assert_eq!(driver.store.settled_digest(&original.meter_id, KeyId(1), Sequence(8)), None);
        driver.sign().await?;
        driver.store.check_settled_lines().map_err(anyhow::Error::msg)?;

        let fetched = Store::open(&dir.path().join("b"), test_secrets())?;
        let records = driver.store.history_range(0, driver.next_index())?;
        fetched.put_history(&records)?;
        for cf in [Cf::Readings, Cf::Tree] {
            let dump = |store: &Store| -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
                let mut all = Vec::new();
                store.kv.scan(cf, &[], &mut |key, value| {
                    all.push((key.to_vec(), value.to_vec()));
                    true
                })?;
                Ok(all)
            };
            let own = dump(&driver.store)?;
            assert!(!own.is_empty(), "{cf:?}");
            assert_eq!(dump(&fetched)?, own, "{cf:?} derived from fetched history");
        }
        Ok(())
    }

    /// A reopened store remembers its log, vote, purge point and applied state.
    #[tokio::test]
    async fn state_survives_reopening() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let vote = Vote::new(4, 2);
        {
            let store = Store::open(dir.path(), test_secrets())?;
            let mut log = store.log_store();
            log.save_vote(&vote).await?;
        }
        let store = Store::open(dir.path(), test_secrets())?;
        assert_eq!(store.log_store().read_vote().await?, Some(vote));
        assert_eq!(store.state_machine().applied_state().await?.0, None);
        Ok(())
    }
}
