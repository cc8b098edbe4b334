//! RocksDB storage for openraft: the raft log (`RaftLogStorage`) and the state machine
//! (`RaftStateMachine`), in one database per node with a column family each for the log, raft's
//! own metadata, the state machine's metadata, and the public and private tables.
//!
//! A batch of applied entries, its state writes, `last_applied` and the membership go to disk in
//! one `WriteBatch`, so a crash can never apply an entry twice. The WAL is opened with
//! `AbsoluteConsistency`, so a corrupt log is an error at start, never a silent truncation.

// openraft's storage traits fix the error type (`StorageError`, ~224 bytes); boxing it in our
// helpers would only add conversions at every trait boundary.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
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
use rocksdb::{ColumnFamilyDescriptor, DBRecoveryMode, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};

use crate::entry::{
    decode_entry, decode_optional_log_id, decode_stored_membership, decode_vote, encode_entry, encode_optional_log_id,
    encode_stored_membership, encode_vote, NodeId, TypeConfig,
};
use crate::state::{self, Overlay, StateRead, Table, TxResult};

const CF_LOG: &str = "log";
const CF_RAFT: &str = "raft";
const CF_SM_META: &str = "sm_meta";
const CF_PUBLIC: &str = "public";
const CF_PRIVATE: &str = "private";

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_LAST_APPLIED: &[u8] = b"last_applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
const KEY_AS_OF: &[u8] = b"as_of_ms";

const SNAPSHOT_TAG: &[u8; 16] = b"wattle.snapshot\0";
const SNAPSHOT_FILE: &str = "current.snapshot";

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

/// A node's database. Clone to share.
#[derive(Clone)]
pub struct Store {
    db: Arc<DB>,
    snapshot_dir: PathBuf,
}

impl Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("snapshot_dir", &self.snapshot_dir).finish()
    }
}

impl Store {
    /// Opens (or creates) the database under `data_dir`.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let snapshot_dir = data_dir.join("snapshots");
        std::fs::create_dir_all(&snapshot_dir)?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_wal_recovery_mode(DBRecoveryMode::AbsoluteConsistency);
        options.set_paranoid_checks(true);
        let families = [CF_LOG, CF_RAFT, CF_SM_META, CF_PUBLIC, CF_PRIVATE]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&options, data_dir.join("db"), families)?;
        Ok(Store { db: Arc::new(db), snapshot_dir })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column families are created at open")
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
    pub fn state(&self) -> RocksState<'_> {
        RocksState { store: self }
    }

    /// Leader-stamped time of the last applied transaction, in ms.
    pub fn as_of_ms(&self) -> i64 {
        self.db
            .get_cf(self.cf(CF_SM_META), KEY_AS_OF)
            .expect("state database readable")
            .map_or(0, |bytes| i64::from_be_bytes(bytes.as_slice().try_into().expect("8 bytes")))
    }

    /// Index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        self.read_last_applied().ok().flatten().map_or(0, |log_id| log_id.index)
    }

    /// Every key and value of a table with the given prefix (for listings).
    pub fn scan_prefix(&self, table: Table, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let cf = self.cf(table_cf(table));
        self.db
            .iterator_cf(cf, IteratorMode::From(prefix, Direction::Forward))
            .map(|item| item.expect("state database readable"))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.to_vec(), value.to_vec()))
            .collect()
    }

    /// Raft entries from `from` (inclusive), at most `limit` of them.
    pub fn log_entries(&self, from: u64, limit: u64) -> StorageResult<Vec<openraft::Entry<TypeConfig>>> {
        let mut entries = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_LOG), IteratorMode::From(&from.to_be_bytes(), Direction::Forward)) {
            let (_, value) = item.map_err(read_error)?;
            entries.push(decode_entry(&value).map_err(read_error)?);
            if entries.len() as u64 >= limit {
                break;
            }
        }
        Ok(entries)
    }

    fn read_last_applied(&self) -> StorageResult<Option<LogId<NodeId>>> {
        match self.db.get_cf(self.cf(CF_SM_META), KEY_LAST_APPLIED).map_err(read_error)? {
            None => Ok(None),
            Some(bytes) => decode_all(&bytes, decode_optional_log_id).map_err(read_error),
        }
    }

    fn read_membership(&self) -> StorageResult<StoredMembership<NodeId, openraft::BasicNode>> {
        match self.db.get_cf(self.cf(CF_SM_META), KEY_MEMBERSHIP).map_err(read_error)? {
            None => Ok(StoredMembership::default()),
            Some(bytes) => decode_all(&bytes, decode_stored_membership).map_err(read_error),
        }
    }

    fn write_synced(&self, batch: WriteBatch) -> Result<(), rocksdb::Error> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options)
    }
}

fn table_cf(table: Table) -> &'static str {
    match table {
        Table::Public => CF_PUBLIC,
        Table::Private => CF_PRIVATE,
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

/// Committed state read straight from RocksDB.
pub struct RocksState<'a> {
    store: &'a Store,
}

impl StateRead for RocksState<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Option<Vec<u8>> {
        self.store.db.get_cf(self.store.cf(table_cf(table)), key).expect("state database readable")
    }
}

// ---- log ----------------------------------------------------------------------------------------

/// The raft log in RocksDB, keyed by big-endian index, values in the canonical entry codec.
#[derive(Clone, Debug)]
pub struct LogStore {
    store: Store,
}

impl LogStore {
    fn read_meta_log_id(&self, key: &[u8]) -> StorageResult<Option<LogId<NodeId>>> {
        match self.store.db.get_cf(self.store.cf(CF_RAFT), key).map_err(read_error)? {
            None => Ok(None),
            Some(bytes) => decode_all(&bytes, decode_optional_log_id).map_err(read_error),
        }
    }
    fn write_meta(&self, key: &[u8], value: Vec<u8>) -> StorageResult<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.store.cf(CF_RAFT), key, value);
        self.store.write_synced(batch).map_err(write_error)
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
        let mut entries = Vec::new();
        let cf = self.store.cf(CF_LOG);
        for item in self.store.db.iterator_cf(cf, IteratorMode::From(&start.to_be_bytes(), Direction::Forward)) {
            let (key, value) = item.map_err(read_error)?;
            let index = u64::from_be_bytes(key.as_ref().try_into().expect("log keys are 8 bytes"));
            if !range.contains(&index) {
                break;
            }
            entries.push(decode_entry(&value).map_err(read_error)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id = self.read_meta_log_id(KEY_LAST_PURGED)?;
        let last = self.store.db.iterator_cf(self.store.cf(CF_LOG), IteratorMode::End).next();
        let last_log_id = match last {
            None => last_purged_log_id,
            Some(item) => {
                let (_, value) = item.map_err(read_error)?;
                Some(decode_entry(&value).map_err(read_error)?.log_id)
            }
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
        match self.store.db.get_cf(self.store.cf(CF_RAFT), KEY_VOTE).map_err(read_error)? {
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
        let mut batch = WriteBatch::default();
        let cf = self.store.cf(CF_LOG);
        for entry in entries {
            batch.put_cf(cf, entry.log_id.index.to_be_bytes(), encode_entry(&entry));
        }
        let result = self.store.write_synced(batch);
        let reported = result.as_ref().map(|_| ()).map_err(|error| std::io::Error::other(error.to_string()));
        callback.log_io_completed(reported);
        result.map_err(write_error)
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.store.cf(CF_LOG), log_id.index.to_be_bytes(), u64::MAX.to_be_bytes());
        batch.delete_cf(self.store.cf(CF_LOG), u64::MAX.to_be_bytes());
        self.store.write_synced(batch).map_err(write_error)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut writer = Writer::new();
        encode_optional_log_id(&mut writer, &Some(log_id));
        let mut batch = WriteBatch::default();
        batch.put_cf(self.store.cf(CF_RAFT), KEY_LAST_PURGED, writer.finish());
        batch.delete_range_cf(self.store.cf(CF_LOG), 0u64.to_be_bytes(), (log_id.index + 1).to_be_bytes());
        self.store.write_synced(batch).map_err(write_error)
    }
}

// ---- state machine ------------------------------------------------------------------------------

/// The state machine in RocksDB; the logic is [`crate::state`].
#[derive(Clone, Debug)]
pub struct StateMachineStore {
    store: Store,
    snapshot_counter: Arc<AtomicU64>,
}

impl StateMachineStore {
    fn write_snapshot_file(&self, meta: &SnapshotMeta<NodeId, openraft::BasicNode>, data: &[u8]) -> StorageResult<()> {
        let mut writer = Writer::new();
        encode_optional_log_id(&mut writer, &meta.last_log_id);
        encode_stored_membership(&mut writer, &meta.last_membership);
        writer.short_bytes(meta.snapshot_id.as_bytes()).long_bytes(data);
        let path = self.store.snapshot_dir.join(SNAPSHOT_FILE);
        let temporary = path.with_extension("tmp");
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        std::fs::write(&temporary, writer.finish())
            .map_err(|error| io_error(subject.clone(), ErrorVerb::Write, error))?;
        let file =
            std::fs::File::open(&temporary).map_err(|error| io_error(subject.clone(), ErrorVerb::Write, error))?;
        file.sync_all().map_err(|error| io_error(subject.clone(), ErrorVerb::Write, error))?;
        std::fs::rename(&temporary, &path).map_err(|error| io_error(subject, ErrorVerb::Write, error))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let db = &self.store.db;
        let view = db.snapshot();
        let read = |key: &[u8]| view.get_cf(self.store.cf(CF_SM_META), key).map_err(read_error);
        let last_applied = match read(KEY_LAST_APPLIED)? {
            None => None,
            Some(bytes) => decode_all(&bytes, decode_optional_log_id).map_err(read_error)?,
        };
        let membership = match read(KEY_MEMBERSHIP)? {
            None => StoredMembership::default(),
            Some(bytes) => decode_all(&bytes, decode_stored_membership).map_err(read_error)?,
        };
        let mut writer = Writer::new();
        writer.fixed(SNAPSHOT_TAG);
        for name in [CF_SM_META, CF_PUBLIC, CF_PRIVATE] {
            let items: Vec<_> = view
                .iterator_cf(self.store.cf(name), IteratorMode::Start)
                .collect::<Result<Vec<_>, _>>()
                .map_err(read_error)?;
            writer.u64(items.len() as u64);
            for (key, value) in items {
                writer.long_bytes(&key).long_bytes(&value);
            }
        }
        let data = writer.finish();
        let counter = self.snapshot_counter.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match &last_applied {
            Some(log_id) => {
                format!("{}-{}-{}-{counter}", log_id.leader_id.term, log_id.leader_id.node_id, log_id.index)
            }
            None => format!("empty-{counter}"),
        };
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
        self.write_snapshot_file(&meta, &data)?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
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
        for entry in entries {
            last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => results.push(TxResult::default()),
                EntryPayload::Normal(tx) => {
                    as_of = Some(tx.time.0);
                    results.push(state::apply(&mut overlay, entry.log_id.index, &tx));
                }
                EntryPayload::Membership(config) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), config));
                    results.push(TxResult::default());
                }
            }
        }
        let Some(last_applied) = last_applied else {
            return Ok(results);
        };
        let mut batch = WriteBatch::default();
        for ((table, key), value) in overlay.writes.puts {
            batch.put_cf(self.store.cf(table_cf(table)), key, value);
        }
        let meta = self.store.cf(CF_SM_META);
        let mut writer = Writer::new();
        encode_optional_log_id(&mut writer, &Some(last_applied));
        batch.put_cf(meta, KEY_LAST_APPLIED, writer.finish());
        if let Some(membership) = membership {
            let mut writer = Writer::new();
            encode_stored_membership(&mut writer, &membership);
            batch.put_cf(meta, KEY_MEMBERSHIP, writer.finish());
        }
        if let Some(as_of) = as_of {
            batch.put_cf(meta, KEY_AS_OF, as_of.to_be_bytes());
        }
        self.store.write_synced(batch).map_err(write_error)?;
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let corrupt = |error: DecodeError| io_error(subject.clone(), ErrorVerb::Read, error);
        let mut reader = Reader::new(&data);
        if reader.take(SNAPSHOT_TAG.len()).map_err(corrupt)? != SNAPSHOT_TAG {
            return Err(corrupt(DecodeError::BadTag));
        }
        let mut batch = WriteBatch::default();
        for name in [CF_SM_META, CF_PUBLIC, CF_PRIVATE] {
            let cf = self.store.cf(name);
            for item in self.store.db.iterator_cf(cf, IteratorMode::Start) {
                let (key, _) = item.map_err(read_error)?;
                batch.delete_cf(cf, key);
            }
            let count = reader.u64().map_err(corrupt)?;
            for _ in 0..count {
                let key = reader.long_bytes(data.len()).map_err(corrupt)?;
                let value = reader.long_bytes(data.len()).map_err(corrupt)?;
                batch.put_cf(cf, key, value);
            }
        }
        reader.finish().map_err(corrupt)?;
        let sm_meta = self.store.cf(CF_SM_META);
        let mut writer = Writer::new();
        encode_optional_log_id(&mut writer, &meta.last_log_id);
        batch.put_cf(sm_meta, KEY_LAST_APPLIED, writer.finish());
        let mut writer = Writer::new();
        encode_stored_membership(&mut writer, &meta.last_membership);
        batch.put_cf(sm_meta, KEY_MEMBERSHIP, writer.finish());
        self.store.write_synced(batch).map_err(write_error)?;
        self.write_snapshot_file(meta, &data)
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let path = self.store.snapshot_dir.join(SNAPSHOT_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(read_error(error)),
        };
        let mut reader = Reader::new(&bytes);
        let last_log_id = decode_optional_log_id(&mut reader).map_err(read_error)?;
        let last_membership = decode_stored_membership(&mut reader).map_err(read_error)?;
        let snapshot_id = String::from_utf8(reader.short_bytes().map_err(read_error)?.to_vec()).map_err(read_error)?;
        let data = reader.long_bytes(bytes.len()).map_err(read_error)?.to_vec();
        reader.finish().map_err(read_error)?;
        Ok(Some(Snapshot {
            meta: SnapshotMeta { last_log_id, last_membership, snapshot_id },
            snapshot: Box::new(Cursor::new(data)),
        }))
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
            let store =
                Store::open(dir.path()).map_err(|error| write_error(std::io::Error::other(error.to_string())))?;
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
