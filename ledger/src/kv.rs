//! What a node's store needs from a database: column families of ordered keys, atomic durable
//! batches and a consistent scan. RocksDB on disk in production; an ordered map in memory for the
//! deterministic simulation, so the simulation exercises the very store code production runs.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::Bound;
#[cfg(feature = "rocksdb")]
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[cfg(feature = "rocksdb")]
use rocksdb::{ColumnFamilyDescriptor, DBRecoveryMode, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};

/// The column families of a node's database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cf {
    /// The raft log, keyed by big-endian index.
    Log,
    /// Raft's own metadata: vote, committed, last purged.
    Raft,
    /// The state machine's metadata: last applied, membership, leader time.
    SmMeta,
    /// State every party may read.
    Public,
    /// State restricted to the parties entitled to it.
    Private,
    /// The ledger's history: every applied entry with its claims, leaf and the root after it.
    /// Not purged with the raft log and not part of snapshots.
    History,
    /// Part of the history: each settled reading's line (digest, settlement), keyed by (meter,
    /// key id, sequence), pointing at its log index and position. Written with the entry.
    Readings,
    /// Part of the history: the root of every complete perfect subtree of the Merkle tree (level,
    /// index), leaves included, so a receipt reads O(log n) records. Written with the entry.
    Tree,
}

impl Cf {
    pub const ALL: [Cf; 8] =
        [Cf::Log, Cf::Raft, Cf::SmMeta, Cf::Public, Cf::Private, Cf::History, Cf::Readings, Cf::Tree];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Log => "log",
            Cf::Raft => "raft",
            Cf::SmMeta => "sm_meta",
            Cf::Public => "public",
            Cf::Private => "private",
            Cf::History => "history",
            Cf::Readings => "history_readings",
            Cf::Tree => "history_tree",
        }
    }
}

/// One change in a [`Batch`].
#[derive(Debug, Clone)]
pub enum Op {
    Put(Cf, Vec<u8>, Vec<u8>),
    Delete(Cf, Vec<u8>),
    /// Deletes keys in `[from, to)`.
    DeleteRange(Cf, Vec<u8>, Vec<u8>),
}

/// Changes written atomically and durably by [`Kv::write`].
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub ops: Vec<Op>,
}

impl Batch {
    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Put(cf, key.into(), value.into()));
    }
    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) {
        self.ops.push(Op::Delete(cf, key.into()));
    }
    pub fn delete_range(&mut self, cf: Cf, from: impl Into<Vec<u8>>, to: impl Into<Vec<u8>>) {
        self.ops.push(Op::DeleteRange(cf, from.into(), to.into()));
    }
}

pub type KvResult<T> = Result<T, std::io::Error>;

/// Visitor of keys and values; returns `false` to stop.
pub type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> bool + 'a;

/// Visitor of a consistent scan: family, key, value.
pub type VisitAll<'a> = dyn FnMut(Cf, &[u8], &[u8]) -> KvResult<()> + 'a;

/// One column family's contents.
type Table = BTreeMap<Vec<u8>, Vec<u8>>;

/// An ordered key-value store with column families.
pub trait Kv: Send + Sync + Debug + 'static {
    fn get(&self, cf: Cf, key: &[u8]) -> KvResult<Option<Vec<u8>>>;
    /// Visits keys `>= from` in ascending order until `visit` returns `false`.
    fn scan(&self, cf: Cf, from: &[u8], visit: &mut Visit<'_>) -> KvResult<()>;
    /// The greatest key and its value.
    fn last(&self, cf: Cf) -> KvResult<Option<(Vec<u8>, Vec<u8>)>>;
    /// Applies every change or none, durably (synced) before returning.
    fn write(&self, batch: Batch) -> KvResult<()>;
    /// Visits every key of `cfs`, in order, all from one point in time.
    fn scan_consistent(&self, cfs: &[Cf], visit: &mut VisitAll<'_>) -> KvResult<()>;
    /// Whether files kept beside the store (snapshots) must be fsynced to count as written.
    fn durable(&self) -> bool;
    /// [`scan_consistent`](Kv::scan_consistent) over the records as stored: sealed where the
    /// store seals (`sealed_kv.rs`). Snapshots carry them so, and stay sealed on disk and wire.
    fn scan_consistent_stored(&self, cfs: &[Cf], visit: &mut VisitAll<'_>) -> KvResult<()> {
        self.scan_consistent(cfs, visit)
    }
    /// Writes records as stored, taken from [`scan_consistent_stored`](Kv::scan_consistent_stored).
    fn write_stored(&self, batch: Batch) -> KvResult<()> {
        self.write(batch)
    }
}

#[cfg(feature = "rocksdb")]
fn rocks_error(error: rocksdb::Error) -> std::io::Error {
    std::io::Error::other(error.into_string())
}

/// RocksDB, opened so that a corrupt WAL is an error at start (`AbsoluteConsistency`), with
/// paranoid checks, every write synced.
#[cfg(feature = "rocksdb")]
#[derive(Debug)]
pub struct RocksKv {
    db: DB,
}

#[cfg(feature = "rocksdb")]
impl RocksKv {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_wal_recovery_mode(DBRecoveryMode::AbsoluteConsistency);
        options.set_paranoid_checks(true);
        let families = Cf::ALL.into_iter().map(|cf| ColumnFamilyDescriptor::new(cf.name(), Options::default()));
        Ok(RocksKv { db: DB::open_cf_descriptors(&options, path, families)? })
    }

    /// Opens an existing database read-only (`wattle audit`): nothing is created, no column
    /// family is added and every write fails, so auditing a store never changes it. A missing
    /// database or column family is an error.
    pub fn open_read_only(path: &Path) -> anyhow::Result<Self> {
        let mut options = Options::default();
        options.create_if_missing(false);
        options.create_missing_column_families(false);
        options.set_paranoid_checks(true);
        let families = Cf::ALL.into_iter().map(|cf| ColumnFamilyDescriptor::new(cf.name(), Options::default()));
        Ok(RocksKv { db: DB::open_cf_descriptors_read_only(&options, path, families, false)? })
    }

    fn cf(&self, cf: Cf) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(cf.name()).expect("column families are created at open")
    }
}

#[cfg(feature = "rocksdb")]
impl Kv for RocksKv {
    fn get(&self, cf: Cf, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(cf), key).map_err(rocks_error)
    }

    fn scan(&self, cf: Cf, from: &[u8], visit: &mut Visit<'_>) -> KvResult<()> {
        for item in self.db.iterator_cf(self.cf(cf), IteratorMode::From(from, Direction::Forward)) {
            let (key, value) = item.map_err(rocks_error)?;
            if !visit(&key, &value) {
                break;
            }
        }
        Ok(())
    }

    fn last(&self, cf: Cf) -> KvResult<Option<(Vec<u8>, Vec<u8>)>> {
        match self.db.iterator_cf(self.cf(cf), IteratorMode::End).next() {
            None => Ok(None),
            Some(item) => {
                let (key, value) = item.map_err(rocks_error)?;
                Ok(Some((key.to_vec(), value.to_vec())))
            }
        }
    }

    fn write(&self, batch: Batch) -> KvResult<()> {
        let mut write = WriteBatch::default();
        for op in batch.ops {
            match op {
                Op::Put(cf, key, value) => write.put_cf(self.cf(cf), key, value),
                Op::Delete(cf, key) => write.delete_cf(self.cf(cf), key),
                Op::DeleteRange(cf, from, to) => write.delete_range_cf(self.cf(cf), from, to),
            }
        }
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(write, &options).map_err(rocks_error)
    }

    fn scan_consistent(&self, cfs: &[Cf], visit: &mut VisitAll<'_>) -> KvResult<()> {
        let view = self.db.snapshot();
        for &cf in cfs {
            for item in view.iterator_cf(self.cf(cf), IteratorMode::Start) {
                let (key, value) = item.map_err(rocks_error)?;
                visit(cf, &key, &value)?;
            }
        }
        Ok(())
    }

    fn durable(&self) -> bool {
        true
    }
}

/// An in-memory store for the deterministic simulation: what a node has written stays when the
/// node crashes, as synced RocksDB would keep it. [`MemoryKv::crash_and_reopen`] cuts the old
/// handle off (every later call fails, as in a dead process) and returns a fresh one.
#[derive(Debug, Default)]
pub struct MemoryKv {
    tables: Arc<Mutex<Tables>>,
    closed: Arc<AtomicBool>,
}

type Tables = BTreeMap<Cf, Table>;

impl MemoryKv {
    /// The same data behind a new handle; the old handle fails from now on.
    pub fn crash_and_reopen(&self) -> MemoryKv {
        self.closed.store(true, Ordering::SeqCst);
        MemoryKv { tables: Arc::clone(&self.tables), closed: Arc::default() }
    }

    fn tables(&self) -> KvResult<std::sync::MutexGuard<'_, Tables>> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("store closed: its node crashed"));
        }
        Ok(self.tables.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

impl Kv for MemoryKv {
    fn get(&self, cf: Cf, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        Ok(self.tables()?.get(&cf).and_then(|table| table.get(key).cloned()))
    }

    fn scan(&self, cf: Cf, from: &[u8], visit: &mut Visit<'_>) -> KvResult<()> {
        // Copy out first: a visitor may call back into the store.
        let items: Vec<(Vec<u8>, Vec<u8>)> = match self.tables()?.get(&cf) {
            None => Vec::new(),
            Some(table) => table
                .range::<[u8], _>((Bound::Included(from), Bound::Unbounded))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
        };
        for (key, value) in items {
            if !visit(&key, &value) {
                break;
            }
        }
        Ok(())
    }

    fn last(&self, cf: Cf) -> KvResult<Option<(Vec<u8>, Vec<u8>)>> {
        Ok(self.tables()?.get(&cf).and_then(|table| table.last_key_value()).map(|(k, v)| (k.clone(), v.clone())))
    }

    fn write(&self, batch: Batch) -> KvResult<()> {
        let mut tables = self.tables()?;
        for op in batch.ops {
            match op {
                Op::Put(cf, key, value) => {
                    tables.entry(cf).or_default().insert(key, value);
                }
                Op::Delete(cf, key) => {
                    tables.entry(cf).or_default().remove(&key);
                }
                Op::DeleteRange(cf, from, to) => {
                    let table = tables.entry(cf).or_default();
                    let doomed: Vec<Vec<u8>> = table
                        .range::<[u8], _>((Bound::Included(from.as_slice()), Bound::Excluded(to.as_slice())))
                        .map(|(key, _)| key.clone())
                        .collect();
                    for key in doomed {
                        table.remove(&key);
                    }
                }
            }
        }
        Ok(())
    }

    fn scan_consistent(&self, cfs: &[Cf], visit: &mut VisitAll<'_>) -> KvResult<()> {
        let copy: Vec<(Cf, Table)> = {
            let tables = self.tables()?;
            cfs.iter().map(|cf| (*cf, tables.get(cf).cloned().unwrap_or_default())).collect()
        };
        for (cf, table) in copy {
            for (key, value) in table {
                visit(cf, &key, &value)?;
            }
        }
        Ok(())
    }

    fn durable(&self) -> bool {
        false
    }
}

#[cfg(all(test, feature = "rocksdb"))]
mod tests {
    use super::*;

    /// Both stores answer every operation alike.
    #[test]
    fn memory_and_rocks_agree() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let stores: [Box<dyn Kv>; 2] = [Box::new(RocksKv::open(dir.path())?), Box::new(MemoryKv::default())];
        let mut answers = Vec::new();
        for kv in &stores {
            let mut batch = Batch::default();
            for index in 0u64..20 {
                batch.put(Cf::Log, index.to_be_bytes(), vec![index as u8]);
            }
            batch.put(Cf::Public, b"a".to_vec(), b"1".to_vec());
            kv.write(batch)?;
            let mut batch = Batch::default();
            batch.delete_range(Cf::Log, 3u64.to_be_bytes(), 7u64.to_be_bytes());
            batch.delete(Cf::Log, 19u64.to_be_bytes());
            kv.write(batch)?;
            let mut seen = Vec::new();
            kv.scan(Cf::Log, &2u64.to_be_bytes(), &mut |key, value| {
                seen.push((key.to_vec(), value.to_vec()));
                seen.len() < 5
            })?;
            let mut all = Vec::new();
            kv.scan_consistent(&[Cf::Log, Cf::Public], &mut |cf, key, _| {
                all.push((cf, key.to_vec()));
                Ok(())
            })?;
            answers.push((seen, all, kv.last(Cf::Log)?, kv.get(Cf::Public, b"a")?, kv.get(Cf::Raft, b"a")?));
        }
        assert_eq!(answers[0], answers[1]);
        assert_eq!(answers[0].0.len(), 5);
        Ok(())
    }
}
