//! The garbage store (`DATA_DIR/garbage`): garbage and unverified readings, in a database of its
//! own so that no amount of it counts against the disk budget of the outbox's database; bounded
//! by a count and a retention, oldest dropped first, every drop counted by class.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use anyhow::Context;
use rocksdb::{DBIterator, Direction, IteratorMode, WriteBatch, DB};

use crate::quarantine::ReasonClass;
use crate::store::{last_key, open_db, synced, QuarantineEntry};

/// The garbage database's one column family, by quarantine id.
const CF_GARBAGE: &str = "garbage";

/// The garbage store's bounds (docs/gateway.md): most entries, and their retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GarbageBounds {
    pub entries_max: u64,
    pub retention_ms: i64,
}

impl Default for GarbageBounds {
    fn default() -> Self {
        GarbageBounds {
            entries_max: crate::limits::GARBAGE_ENTRIES_MAX_DEFAULT,
            retention_ms: crate::limits::GARBAGE_RETENTION_DEFAULT.as_millis() as i64,
        }
    }
}

/// Counts of the garbage store, for `/metrics`.
#[derive(Debug, Default)]
pub struct GarbageCounts {
    pub entries: AtomicU64,
    /// Dropped past the bound or the retention, by class.
    pub dropped_garbage: AtomicU64,
    pub dropped_unverified: AtomicU64,
    /// Set when an unverified reading is stored (or found at start); cleared by a release pass
    /// that finds none left.
    pub unverified_waiting: AtomicBool,
}

/// The bounded garbage database.
pub struct GarbageStore {
    db: DB,
    bounds: GarbageBounds,
    /// One writer at a time (the bound is a count).
    write: Mutex<()>,
    pub counts: GarbageCounts,
}

impl GarbageStore {
    /// Opens (or creates) the garbage database at `path`; returns it and the next free id.
    pub fn open(path: &Path, bounds: GarbageBounds) -> anyhow::Result<(GarbageStore, u64)> {
        // A small memtable, so the write-ahead log is recycled every few megabytes of garbage.
        let db = open_db(path, &[CF_GARBAGE], Some(crate::limits::GARBAGE_WRITE_BUFFER_BYTES))?;
        let next_id = last_key(&db, db.cf_handle(CF_GARBAGE).expect("created"))?;
        let entries = db.iterator_cf(db.cf_handle(CF_GARBAGE).expect("created"), IteratorMode::Start).count();
        let counts = GarbageCounts {
            entries: AtomicU64::new(entries as u64),
            // Whatever is there may hold unverified readings: the first release pass tells.
            unverified_waiting: AtomicBool::new(entries > 0),
            ..GarbageCounts::default()
        };
        Ok((GarbageStore { db, bounds, write: Mutex::new(()), counts }, next_id))
    }

    fn cf(&self) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(CF_GARBAGE).expect("column families are created at open")
    }

    /// Adds garbage entries, deletes released ones, and drops the oldest past the bound.
    pub fn write(&self, entries: Vec<QuarantineEntry>, released: &[u64], next_id: &AtomicU64) -> anyhow::Result<()> {
        if entries.is_empty() && released.is_empty() {
            return Ok(());
        }
        let _writer = self.write.lock().expect("garbage lock is never poisoned");
        let mut batch = WriteBatch::default();
        let mut added = 0u64;
        for mut entry in entries {
            if entry.class == ReasonClass::Unverified {
                self.counts.unverified_waiting.store(true, Ordering::Relaxed);
            }
            entry.id = next_id.fetch_add(1, Ordering::SeqCst);
            batch.put_cf(self.cf(), entry.id.to_be_bytes(), serde_json::to_vec(&entry)?);
            added += 1;
        }
        let mut removed = 0u64;
        for id in released {
            if self.db.get_pinned_cf(self.cf(), id.to_be_bytes())?.is_some() {
                batch.delete_cf(self.cf(), id.to_be_bytes());
                removed += 1;
            }
        }
        self.db.write_opt(batch, &synced())?;
        let counts = &self.counts;
        let entries = counts.entries.fetch_add(added, Ordering::SeqCst) + added - removed;
        counts.entries.fetch_sub(removed, Ordering::SeqCst);
        if entries > self.bounds.entries_max {
            self.drop_oldest(entries - self.bounds.entries_max, i64::MAX)?;
        }
        Ok(())
    }

    /// Drops garbage entries oldest first: `count` of them, or fewer if one received at or after
    /// `before_ms` comes first. Returns how many were dropped.
    fn drop_oldest(&self, count: u64, before_ms: i64) -> anyhow::Result<u64> {
        let mut batch = WriteBatch::default();
        let (mut garbage, mut unverified) = (0u64, 0u64);
        for item in self.db.iterator_cf(self.cf(), IteratorMode::Start).take(count as usize) {
            let (key, value) = item?;
            let entry: QuarantineEntry = serde_json::from_slice(&value).context("garbage entry decodes")?;
            if entry.received_ms >= before_ms {
                break;
            }
            batch.delete_cf(self.cf(), key);
            match entry.class {
                ReasonClass::Unverified => unverified += 1,
                _ => garbage += 1,
            }
        }
        let dropped = garbage + unverified;
        if dropped == 0 {
            return Ok(0);
        }
        // Not synced: an entry dropped twice after a crash is harmless.
        self.db.write(batch)?;
        let counts = &self.counts;
        counts.entries.fetch_sub(dropped, Ordering::SeqCst);
        counts.dropped_garbage.fetch_add(garbage, Ordering::Relaxed);
        counts.dropped_unverified.fetch_add(unverified, Ordering::Relaxed);
        if unverified > 0 {
            tracing::warn!(unverified, "unverified readings dropped from the garbage store (bound or retention)");
        }
        Ok(dropped)
    }

    /// Drops garbage older than the retention (`now_ms` on the gateway's clock), and compacts the
    /// garbage database so dropped entries give their space back. Returns how many were dropped.
    pub fn prune(&self, now_ms: i64) -> anyhow::Result<u64> {
        let _writer = self.write.lock().expect("garbage lock is never poisoned");
        let dropped = self.drop_oldest(u64::MAX, now_ms.saturating_sub(self.bounds.retention_ms))?;
        self.db.compact_range_cf(self.cf(), None::<&[u8]>, None::<&[u8]>);
        Ok(dropped)
    }

    /// Entries from id `from`, oldest first (raw).
    pub fn iter_from(&self, from: &[u8]) -> DBIterator<'_> {
        self.db.iterator_cf(self.cf(), IteratorMode::From(from, Direction::Forward))
    }

    /// The entry with id `id`, raw.
    pub fn get(&self, id: u64) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.db.get_pinned_cf(self.cf(), id.to_be_bytes())?.map(|bytes| bytes.to_vec()))
    }
}
