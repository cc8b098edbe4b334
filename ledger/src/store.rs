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

use domain::codec::{DecodeError, Reader, Writer};
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
#[cfg(feature = "rocksdb")]
use crate::kv::RocksKv;
use crate::kv::{Batch, Cf, Kv, MemoryKv};
use crate::snapshot::{read_records, SnapshotFile, SnapshotWriter, FAMILIES};
use crate::state::{self, Overlay, StateRead, Table, TxResult};
use domain::merkle;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_LAST_APPLIED: &[u8] = b"last_applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
const KEY_AS_OF: &[u8] = b"as_of_ms";
const KEY_FRONTIER: &[u8] = b"merkle_frontier";

/// The metadata file naming the current snapshot.
const SNAPSHOT_CURRENT: &str = "current";

type StorageResult<T> = Result<T, StorageError<NodeId>>;

fn io_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    error: impl std::error::Error + 'static,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::new(&error)).into()
}
fn read_error(error: impl std::error::Error + 'static) -> StorageError<NodeId> {
    io_error(ErrorSubject::Store, ErrorVerb::Read, error)
}
fn write_error(error: impl std::error::Error + 'static) -> StorageError<NodeId> {
    io_error(ErrorSubject::Store, ErrorVerb::Write, error)
}

/// A node's database and snapshot directory. Clone to share.
#[derive(Clone)]
pub struct Store {
    kv: Arc<dyn Kv>,
    snapshot_dir: PathBuf,
    /// The highest log index covered by a committed signature (clients wait on it).
    signed: Arc<tokio::sync::watch::Sender<u64>>,
    /// Only for openraft's storage suite, which applies non-contiguous indexes.
    allow_log_gaps: bool,
}

/// One entry of the ledger's history: its canonical bytes, its claims document, its Merkle leaf
/// and the root over every entry up to and including it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRecord {
    pub entry: Vec<u8>,
    pub claims: Option<Vec<u8>>,
    pub leaf: merkle::Hash,
    pub root: merkle::Hash,
}

impl HistoryRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::with_capacity(self.entry.len() + 80);
        writer.long_bytes(&self.entry);
        match &self.claims {
            None => writer.u8(0),
            Some(claims) => writer.u8(1).long_bytes(claims),
        };
        writer.fixed(&self.leaf).fixed(&self.root);
        writer.finish()
    }
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let entry = reader.long_bytes(bytes.len())?.to_vec();
        let claims = if reader.bool("claims_present")? { Some(reader.long_bytes(bytes.len())?.to_vec()) } else { None };
        let record = HistoryRecord { entry, claims, leaf: reader.array()?, root: reader.array()? };
        reader.finish()?;
        Ok(record)
    }
    /// The leaf recomputed from the entry and claims (what the stored leaf must equal).
    pub fn computed_leaf(&self) -> Result<merkle::Hash, DecodeError> {
        let entry = decode_entry(&self.entry)?;
        let tx_id = match &entry.payload {
            EntryPayload::Normal(tx) => tx.tx_id.0,
            _ => [0; 16],
        };
        Ok(entry_leaf(&tx_id, &self.entry, self.claims.as_deref()))
    }
}

/// The Merkle leaf of an entry: its transaction id (zeros for raft's own entries), the digest of
/// its canonical bytes, and the digest of its claims document (zeros if none). docs/receipts.md.
pub fn entry_leaf(tx_id: &[u8; 16], entry_bytes: &[u8], claims: Option<&[u8]>) -> merkle::Hash {
    let claims_digest = claims.map_or(merkle::NO_CLAIMS, merkle::sha256);
    merkle::leaf_hash(tx_id, &merkle::sha256(entry_bytes), &claims_digest)
}

impl Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("snapshot_dir", &self.snapshot_dir).finish()
    }
}

impl Store {
    /// Opens (or creates) the RocksDB database and snapshot directory under `data_dir`.
    #[cfg(feature = "rocksdb")]
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let kv = RocksKv::open(&data_dir.join("db"))?;
        Self::with_kv(Arc::new(kv), data_dir.join("snapshots"))
    }

    /// Opens an existing node's database read-only, touching neither it nor the snapshot
    /// directory (`wattle audit`); writes through this store fail.
    #[cfg(feature = "rocksdb")]
    pub fn open_read_only(data_dir: &Path) -> anyhow::Result<Self> {
        let kv = RocksKv::open_read_only(&data_dir.join("db"))?;
        let mut store = Store {
            kv: Arc::new(kv),
            snapshot_dir: data_dir.join("snapshots"),
            signed: Arc::new(tokio::sync::watch::channel(0).0),
            allow_log_gaps: false,
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
        let mut store =
            Store { kv, snapshot_dir, signed: Arc::new(tokio::sync::watch::channel(0).0), allow_log_gaps: false };
        store.signed = Arc::new(tokio::sync::watch::channel(store.signed_index()).0);
        Ok(store)
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

    /// The stored Merkle leaves of `count` consecutive entries from `from` (stops at a gap).
    pub fn history_leaves(&self, from: u64, count: u64) -> StorageResult<Vec<merkle::Hash>> {
        let mut leaves = Vec::new();
        let mut failure = None;
        self.kv
            .scan(Cf::History, &from.to_be_bytes(), &mut |key, value| {
                let index = u64::from_be_bytes(key.try_into().expect("history keys are 8 bytes"));
                if index != from + leaves.len() as u64 || leaves.len() as u64 >= count {
                    return false;
                }
                // The leaf and root are the record's last 64 bytes.
                match value.len().checked_sub(64) {
                    Some(start) => leaves.push(value[start..start + 32].try_into().expect("32 bytes")),
                    None => {
                        failure = Some(index);
                        return false;
                    }
                }
                true
            })
            .map_err(read_error)?;
        if let Some(index) = failure {
            return Err(read_error(std::io::Error::other(format!("history record {index} is truncated"))));
        }
        Ok(leaves)
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

fn snapshot_error(
    meta: Option<&SnapshotMeta<NodeId, openraft::BasicNode>>,
    verb: ErrorVerb,
) -> impl Fn(std::io::Error) -> StorageError<NodeId> {
    let subject = ErrorSubject::Snapshot(meta.map(SnapshotMeta::signature));
    move |error| io_error(subject.clone(), verb, error)
}

impl StateMachineStore {
    fn snapshot_path(&self, name: &str) -> PathBuf {
        self.store.snapshot_dir.join(name)
    }

    fn fresh_part(&self, purpose: &str) -> PathBuf {
        let counter = self.snapshot_counter.fetch_add(1, Ordering::Relaxed);
        self.snapshot_path(&format!("{purpose}-{counter}.part"))
    }

    /// Makes the data file `part` the current snapshot: moves it into place, replaces the
    /// metadata file atomically (write, fsync, rename), then removes older data files.
    fn publish_snapshot(
        &self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        part: &Path,
    ) -> StorageResult<PathBuf> {
        let failed = snapshot_error(Some(meta), ErrorVerb::Write);
        let durable = self.store.kv.durable();
        let data_name = format!("{}.snap", hex::encode(&Sha256::digest(meta.snapshot_id.as_bytes())[..16]));
        let data_path = self.snapshot_path(&data_name);
        if part.parent() == Some(self.store.snapshot_dir.as_path()) {
            std::fs::rename(part, &data_path).map_err(&failed)?;
        } else {
            // Data from elsewhere (not received into this directory): copy, leave the original.
            std::fs::copy(part, &data_path).map_err(&failed)?;
        }
        let mut writer = Writer::new();
        encode_optional_log_id(&mut writer, &meta.last_log_id);
        encode_stored_membership(&mut writer, &meta.last_membership);
        writer.long_bytes(meta.snapshot_id.as_bytes()).long_bytes(data_name.as_bytes());
        let temporary = self.fresh_part("current");
        std::fs::write(&temporary, writer.finish()).map_err(&failed)?;
        if durable {
            std::fs::File::open(&temporary).and_then(|file| file.sync_all()).map_err(&failed)?;
        }
        std::fs::rename(&temporary, self.snapshot_path(SNAPSHOT_CURRENT)).map_err(&failed)?;
        if durable {
            std::fs::File::open(&self.store.snapshot_dir).and_then(|dir| dir.sync_all()).map_err(&failed)?;
        }
        for entry in std::fs::read_dir(&self.store.snapshot_dir).map_err(&failed)? {
            let path = entry.map_err(&failed)?.path();
            if path != data_path && path.extension().is_some_and(|extension| extension == "snap") {
                std::fs::remove_file(&path).map_err(&failed)?;
            }
        }
        Ok(data_path)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let failed = snapshot_error(None, ErrorVerb::Write);
        let part = self.fresh_part("build");
        let mut writer = SnapshotWriter::create(&part).map_err(&failed)?;
        let mut last_applied = None;
        let mut membership = StoredMembership::default();
        let undecodable = |error: DecodeError| std::io::Error::new(std::io::ErrorKind::InvalidData, error.to_string());
        self.store
            .kv
            .scan_consistent(&FAMILIES, &mut |cf, key, value| {
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
        for entry in entries {
            let index = entry.log_id.index;
            // openraft starts a cluster's log at index 0 and applies contiguously, so leaf i is
            // entry i. openraft's storage suite applies arbitrary indexes; for it alone, missing
            // indexes get empty leaves.
            while self.store.allow_log_gaps && frontier.size() < index {
                frontier.append(merkle::leaf_hash(&[0; 16], &merkle::sha256(&[]), &merkle::NO_CLAIMS));
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
            frontier.append(leaf);
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
        // Verified whole before anything is replaced.
        let records = read_records(&mut file).map_err(snapshot_error(Some(meta), ErrorVerb::Read))?;
        if self.store.kv.durable() {
            file.sync_all().map_err(snapshot_error(Some(meta), ErrorVerb::Write))?;
        }
        drop(file);
        let mut batch = Batch::default();
        for cf in FAMILIES {
            let mut existing = Vec::new();
            self.store
                .kv
                .scan(cf, &[], &mut |key, _| {
                    existing.push(key.to_vec());
                    true
                })
                .map_err(read_error)?;
            for key in existing {
                batch.delete(cf, key);
            }
        }
        for (cf, key, value) in records {
            batch.put(cf, key, value);
        }
        let mut writer = Writer::new();
        encode_optional_log_id(&mut writer, &meta.last_log_id);
        batch.put(Cf::SmMeta, KEY_LAST_APPLIED, writer.finish());
        let mut writer = Writer::new();
        encode_stored_membership(&mut writer, &meta.last_membership);
        batch.put(Cf::SmMeta, KEY_MEMBERSHIP, writer.finish());
        self.store.kv.write(batch).map_err(write_error)?;
        self.publish_snapshot(meta, &part)?;
        self.store.signed.send_replace(self.store.signed_index());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let failed = snapshot_error(None, ErrorVerb::Read);
        let bytes = match std::fs::read(self.snapshot_path(SNAPSHOT_CURRENT)) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(failed(error)),
        };
        let mut reader = Reader::new(&bytes);
        let last_log_id = decode_optional_log_id(&mut reader).map_err(read_error)?;
        let last_membership = decode_stored_membership(&mut reader).map_err(read_error)?;
        let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).map_err(read_error);
        let snapshot_id = text(reader.long_bytes(bytes.len()).map_err(read_error)?)?;
        let data_name = text(reader.long_bytes(bytes.len()).map_err(read_error)?)?;
        reader.finish().map_err(read_error)?;
        let meta = SnapshotMeta { last_log_id, last_membership, snapshot_id };
        let file = SnapshotFile::open(&self.snapshot_path(&data_name))
            .map_err(snapshot_error(Some(&meta), ErrorVerb::Read))?;
        Ok(Some(Snapshot { meta, snapshot: Box::new(file) }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};

    use super::*;

    /// Opens fresh stores in a temporary directory (kept alive by the returned guard).
    struct RocksBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RocksBuilder {
        async fn build(&self) -> StorageResult<(tempfile::TempDir, LogStore, StateMachineStore)> {
            let dir = tempfile::tempdir().map_err(write_error)?;
            let mut store =
                Store::open(dir.path()).map_err(|error| write_error(std::io::Error::other(error.to_string())))?;
            store.allow_log_gaps = true;
            Ok((dir, store.log_store(), store.state_machine()))
        }
    }

    /// openraft's own storage test suite, against the RocksDB log and state machine.
    #[test]
    fn openraft_storage_suite() -> StorageResult<()> {
        Suite::test_all(RocksBuilder)
    }

    /// A reopened store remembers its log, vote, purge point and applied state.
    #[tokio::test]
    async fn state_survives_reopening() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let vote = Vote::new(4, 2);
        {
            let store = Store::open(dir.path())?;
            let mut log = store.log_store();
            log.save_vote(&vote).await?;
        }
        let store = Store::open(dir.path())?;
        assert_eq!(store.log_store().read_vote().await?, Some(vote));
        assert_eq!(store.state_machine().applied_state().await?.0, None);
        Ok(())
    }
}
