//! The gateway's durable state in RocksDB: the outbox of verified readings waiting for the
//! ledger, and the quarantine of rejected ones with their reasons.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use domain::ids::MeterId;
use domain::reading::{Envelope, ReadingDigest};

use crate::tracker::MeterState;
use rocksdb::{ColumnFamilyDescriptor, DBRecoveryMode, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};

const CF_OUTBOX: &str = "outbox";
const CF_QUARANTINE: &str = "quarantine";
/// Per meter: sequence and register tracking (`tracker::MeterState`).
const CF_METERS: &str = "meters";
/// Per (meter, sequence): the digest of the reading accepted for it, to tell a duplicate from an
/// equivocation.
const CF_SEEN: &str = "seen";

fn seen_key(meter: &MeterId, sequence: u64) -> Vec<u8> {
    [meter.as_str().as_bytes(), b"/", &sequence.to_be_bytes()].concat()
}

/// Tracking changes written with a batch: meter states and newly accepted digests.
#[derive(Debug, Default)]
pub struct Tracking {
    pub meters: Vec<(MeterId, MeterState)>,
    pub seen: Vec<(MeterId, u64, ReadingDigest)>,
}

/// A rejected message, kept with its reason.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct QuarantineEntry {
    pub id: u64,
    pub received_ms: i64,
    /// Where it came from (MQTT topic, or `ledger` for rejections reported by the ledger).
    pub source: String,
    /// Stable reason code, e.g. `bad_signature`.
    pub reason: String,
    pub detail: String,
    /// SHA-256 of the canonical reading bytes, when the reading decoded.
    pub digest: Option<String>,
    /// The payload as received (UTF-8, lossy), cut to a bounded length.
    pub payload: String,
}

/// The gateway's database.
#[derive(Clone)]
pub struct GatewayStore {
    db: Arc<DB>,
    next_outbox: Arc<AtomicU64>,
    /// No outbox entry is below this id. The outbox is a queue deleted from its front: an
    /// iterator from the start would step over every deletion marker still in the memtable
    /// (hundreds of thousands on a busy gateway), so reads seek here instead.
    outbox_floor: Arc<AtomicU64>,
    next_quarantine: Arc<AtomicU64>,
}

impl std::fmt::Debug for GatewayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayStore").finish_non_exhaustive()
    }
}

fn last_key(db: &DB, cf: &rocksdb::ColumnFamily) -> anyhow::Result<u64> {
    match db.iterator_cf(cf, IteratorMode::End).next() {
        None => Ok(0),
        Some(item) => {
            let (key, _) = item?;
            Ok(u64::from_be_bytes(key.as_ref().try_into().context("outbox keys are 8 bytes")?) + 1)
        }
    }
}

impl GatewayStore {
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_wal_recovery_mode(DBRecoveryMode::AbsoluteConsistency);
        let families = [CF_OUTBOX, CF_QUARANTINE, CF_METERS, CF_SEEN]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db =
            DB::open_cf_descriptors(&options, data_dir.join("db"), families).context("opening gateway database")?;
        let next_outbox = last_key(&db, db.cf_handle(CF_OUTBOX).expect("created"))?;
        let next_quarantine = last_key(&db, db.cf_handle(CF_QUARANTINE).expect("created"))?;
        let outbox_floor = match db.iterator_cf(db.cf_handle(CF_OUTBOX).expect("created"), IteratorMode::Start).next() {
            Some(item) => u64::from_be_bytes(item?.0.as_ref().try_into().context("outbox keys are 8 bytes")?),
            None => next_outbox,
        };
        Ok(GatewayStore {
            db: Arc::new(db),
            next_outbox: Arc::new(AtomicU64::new(next_outbox)),
            outbox_floor: Arc::new(AtomicU64::new(outbox_floor)),
            next_quarantine: Arc::new(AtomicU64::new(next_quarantine)),
        })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column families are created at open")
    }

    /// Durably stores verified readings, rejections and the tracking they changed in one synced
    /// write; only after it returns may the messages be acknowledged to the broker.
    pub fn store_batch(
        &self,
        accepted: &[Envelope],
        rejected: Vec<QuarantineEntry>,
        tracking: Tracking,
    ) -> anyhow::Result<()> {
        let mut batch = WriteBatch::default();
        for envelope in accepted {
            let id = self.next_outbox.fetch_add(1, Ordering::SeqCst);
            batch.put_cf(self.cf(CF_OUTBOX), id.to_be_bytes(), serde_json::to_vec(envelope)?);
        }
        for (meter, state) in tracking.meters {
            // Digests are kept for a bounded window of sequences; older duplicates are told apart
            // by the ledger, which deduplicates permanently.
            let keep_from = state.highest.saturating_sub(crate::limits::SEEN_WINDOW_SEQUENCES);
            if keep_from > 0 {
                batch.delete_range_cf(self.cf(CF_SEEN), seen_key(&meter, 0), seen_key(&meter, keep_from));
            }
            batch.put_cf(self.cf(CF_METERS), meter.as_str().as_bytes(), state.encode());
        }
        for (meter, sequence, digest) in tracking.seen {
            batch.put_cf(self.cf(CF_SEEN), seen_key(&meter, sequence), digest.0);
        }
        self.commit_with_quarantine(batch, rejected)
    }

    /// The digest accepted earlier for (meter, sequence), if any.
    pub fn seen(&self, meter: &MeterId, sequence: u64) -> anyhow::Result<Option<ReadingDigest>> {
        Ok(self
            .db
            .get_cf(self.cf(CF_SEEN), seen_key(meter, sequence))?
            .and_then(|bytes| bytes.as_slice().try_into().ok())
            .map(ReadingDigest))
    }

    /// Every meter's tracking state (loaded at start).
    pub fn meters(&self) -> anyhow::Result<Vec<(MeterId, MeterState)>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_METERS), IteratorMode::Start) {
            let (key, value) = item?;
            let meter: MeterId = std::str::from_utf8(&key)?.parse()?;
            out.push((meter, MeterState::decode(&value)?));
        }
        Ok(out)
    }

    /// Writes meter states alone (the gap-recovery loop's bookkeeping).
    pub fn put_meters(&self, meters: &[(MeterId, MeterState)]) -> anyhow::Result<()> {
        let mut batch = WriteBatch::default();
        for (meter, state) in meters {
            batch.put_cf(self.cf(CF_METERS), meter.as_str().as_bytes(), state.encode());
        }
        self.commit_with_quarantine(batch, Vec::new())
    }

    /// Adds quarantine entries to `batch` (assigning their ids) and writes it, synced.
    fn commit_with_quarantine(&self, mut batch: WriteBatch, rejected: Vec<QuarantineEntry>) -> anyhow::Result<()> {
        for mut entry in rejected {
            entry.id = self.next_quarantine.fetch_add(1, Ordering::SeqCst);
            batch.put_cf(self.cf(CF_QUARANTINE), entry.id.to_be_bytes(), serde_json::to_vec(&entry)?);
        }
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options)?;
        Ok(())
    }

    /// The oldest readings in the outbox, in arrival order.
    pub fn outbox_head(&self, limit: usize) -> anyhow::Result<Vec<(u64, Envelope)>> {
        let mut out = Vec::new();
        let floor = self.outbox_floor.load(Ordering::SeqCst).to_be_bytes();
        let mode = IteratorMode::From(&floor, Direction::Forward);
        for item in self.db.iterator_cf(self.cf(CF_OUTBOX), mode).take(limit) {
            let (key, value) = item?;
            let id = u64::from_be_bytes(key.as_ref().try_into().context("outbox keys are 8 bytes")?);
            out.push((id, serde_json::from_slice(&value).context("outbox entry decodes")?));
        }
        // Everything below the first entry found is gone (ids are written in order, one batch at
        // a time): later reads start there. An empty read moves nothing, since an id may be
        // allocated for a batch not yet written.
        if let Some((first, _)) = out.first() {
            self.outbox_floor.fetch_max(*first, Ordering::SeqCst);
        }
        Ok(out)
    }

    /// Removes forwarded readings (the ledger reported each one final) and records the ledger's
    /// rejections, in one synced write.
    pub fn complete(&self, ids: &[u64], rejected: Vec<QuarantineEntry>) -> anyhow::Result<()> {
        let mut batch = WriteBatch::default();
        for id in ids {
            batch.delete_cf(self.cf(CF_OUTBOX), id.to_be_bytes());
        }
        self.commit_with_quarantine(batch, rejected)
    }

    /// Gives disk space back after the outbox drained: flushes every memtable (so RocksDB can
    /// delete the write-ahead log files they pinned) and compacts the outbox, whose deleted
    /// entries otherwise stay on disk as tombstones until a compaction happens to reach them.
    pub fn reclaim(&self) -> anyhow::Result<()> {
        for name in [CF_OUTBOX, CF_QUARANTINE, CF_METERS, CF_SEEN] {
            self.db.flush_cf(self.cf(name)).with_context(|| format!("flushing {name}"))?;
        }
        self.db.compact_range_cf(self.cf(CF_OUTBOX), None::<&[u8]>, None::<&[u8]>);
        Ok(())
    }

    /// Readings waiting in the outbox.
    pub fn outbox_depth(&self) -> u64 {
        let floor = self.outbox_floor.load(Ordering::SeqCst).to_be_bytes();
        let mode = IteratorMode::From(&floor, Direction::Forward);
        self.db.iterator_cf(self.cf(CF_OUTBOX), mode).next().and_then(|item| item.ok()).map_or(0, |(key, _)| {
            let first = u64::from_be_bytes(key.as_ref().try_into().unwrap_or([0; 8]));
            self.next_outbox.load(Ordering::SeqCst).saturating_sub(first)
        })
    }

    /// Quarantine entries from id `from`, oldest first.
    pub fn quarantine(&self, from: u64, limit: usize) -> anyhow::Result<Vec<QuarantineEntry>> {
        let mut out = Vec::new();
        let start = from.to_be_bytes();
        for item in
            self.db.iterator_cf(self.cf(CF_QUARANTINE), IteratorMode::From(&start, Direction::Forward)).take(limit)
        {
            let (_, value) = item?;
            out.push(serde_json::from_slice(&value).context("quarantine entry decodes")?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tracking survives reopening, and digests older than the window are pruned.
    #[test]
    fn tracking_is_durable_and_the_seen_window_is_bounded() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let meter: MeterId = "M1".parse()?;
        let window = crate::limits::SEEN_WINDOW_SEQUENCES;
        {
            let store = GatewayStore::open(dir.path())?;
            let early = Tracking { meters: Vec::new(), seen: vec![(meter.clone(), 1, ReadingDigest([1; 32]))] };
            store.store_batch(&[], Vec::new(), early)?;
            assert_eq!(store.seen(&meter, 1)?, Some(ReadingDigest([1; 32])));
            let state = MeterState { site: "site-0".into(), highest: window + 10, ..MeterState::default() };
            let later = Tracking {
                meters: vec![(meter.clone(), state)],
                seen: vec![(meter.clone(), window + 10, ReadingDigest([2; 32]))],
            };
            store.store_batch(&[], Vec::new(), later)?;
        }
        let store = GatewayStore::open(dir.path())?;
        assert_eq!(store.seen(&meter, 1)?, None, "pruned: older than the window");
        assert_eq!(store.seen(&meter, window + 10)?, Some(ReadingDigest([2; 32])));
        assert_eq!(store.meters()?[0].1.highest, window + 10);
        Ok(())
    }

    /// The outbox drains in order, batch after batch, and reopens where it stopped; its depth
    /// counts what is left.
    #[test]
    fn the_outbox_is_a_durable_queue() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let envelope =
            |n: u8| Envelope { version: 1, reading: hex::encode([n; 4]), signature: String::new(), backfill: false };
        {
            let store = GatewayStore::open(dir.path())?;
            for round in 0..3u8 {
                let batch: Vec<Envelope> = (0..10).map(|n| envelope(round * 10 + n)).collect();
                store.store_batch(&batch, Vec::new(), Tracking::default())?;
            }
            assert_eq!(store.outbox_depth(), 30);
            let head = store.outbox_head(12)?;
            assert_eq!(head.iter().map(|(id, _)| *id).collect::<Vec<_>>(), (0..12).collect::<Vec<_>>());
            store.complete(&head.iter().map(|(id, _)| *id).collect::<Vec<_>>(), Vec::new())?;
            assert_eq!(store.outbox_depth(), 18);
            assert_eq!(store.outbox_head(1)?[0].1, envelope(12));
        }
        let store = GatewayStore::open(dir.path())?;
        assert_eq!(store.outbox_depth(), 18, "reopened where it stopped");
        let rest = store.outbox_head(100)?;
        assert_eq!(rest.len(), 18);
        store.complete(&rest.iter().map(|(id, _)| *id).collect::<Vec<_>>(), Vec::new())?;
        assert_eq!(store.outbox_depth(), 0);
        assert!(store.outbox_head(10)?.is_empty());
        store.store_batch(&[envelope(99)], Vec::new(), Tracking::default())?;
        assert_eq!(store.outbox_head(10)?.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![30]);
        Ok(())
    }
}
