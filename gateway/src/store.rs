//! The gateway's durable state in RocksDB: the outbox of verified readings waiting for the
//! ledger, the retry queue of readings the ledger refused for a cause that may go away, the
//! quarantine of rejected ones with their reasons (signed readings beside the outbox; garbage in
//! a bounded database of its own), and the per-meter tracking.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use domain::ids::MeterId;
use domain::reading::{Envelope, ReadingDigest};

use crate::garbage::GarbageStore;
pub use crate::garbage::{GarbageBounds, GarbageCounts};
use crate::quarantine::ReasonClass;
use crate::tracker::MeterState;
use rocksdb::{ColumnFamilyDescriptor, DBRecoveryMode, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};

const CF_OUTBOX: &str = "outbox";
/// Validly signed readings the gateway keeps (held and final), by quarantine id.
const CF_QUARANTINE: &str = "quarantine";
/// Per meter: sequence and register tracking (`tracker::MeterState`).
const CF_METERS: &str = "meters";
/// Per (meter, sequence): the digest of the reading accepted for it, to tell a duplicate from an
/// equivocation.
const CF_SEEN: &str = "seen";
/// Readings the ledger refused for a cause that may go away, by (due time, id): retried with
/// backoff beside the outbox, so they never hold up the readings behind them.
const CF_RETRY: &str = "retry";

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
    /// What the reason means for the message (docs/gateway.md): final, held, unverified, garbage.
    #[serde(default = "unknown_class")]
    pub class: ReasonClass,
    pub detail: String,
    /// SHA-256 of the canonical reading bytes, when the reading decoded.
    pub digest: Option<String>,
    /// The reading's meter and sequence, when it decoded (what `release` filters on).
    #[serde(default)]
    pub meter: Option<String>,
    #[serde(default)]
    pub sequence: Option<u64>,
    /// The payload as received (UTF-8, lossy), cut to a bounded length.
    pub payload: String,
    /// Whether `payload` is the whole message (a releasable entry must be).
    #[serde(default)]
    pub whole: bool,
}

/// Entries written before classes existed: listed, never released (their payload may be cut).
fn unknown_class() -> ReasonClass {
    ReasonClass::Garbage
}

/// A reading waiting to be submitted to the ledger again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RetryEntry {
    pub envelope: Envelope,
    /// The ledger's last reason code.
    pub reason: String,
    /// Submissions refused so far.
    pub attempts: u32,
    /// Wall-clock time of the first refusal (ms): the retry horizon counts from it.
    pub first_refused_ms: i64,
}

/// A retry-queue item: its key (due time and id) and entry.
#[derive(Debug, Clone)]
pub struct RetryItem {
    pub key: Vec<u8>,
    pub entry: RetryEntry,
}

fn retry_key(due_ms: i64, id: u64) -> Vec<u8> {
    [&(due_ms.max(0) as u64).to_be_bytes()[..], &id.to_be_bytes()].concat()
}

/// A quarantine entry being released: its id, and whether it lives in the garbage database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    pub id: u64,
    pub bounded: bool,
}

/// What one forward round changes, written in one synced batch.
#[derive(Debug, Default)]
pub struct Completion {
    /// Outbox ids the ledger answered (final, or moved to the retry queue or quarantine).
    pub outbox_done: Vec<u64>,
    /// Retry-queue keys answered.
    pub retry_done: Vec<Vec<u8>>,
    /// Readings to retry, with their due time (wall clock, ms).
    pub retry_again: Vec<(i64, RetryEntry)>,
    /// Readings the ledger refused for good or past the horizon (held or final).
    pub quarantined: Vec<QuarantineEntry>,
}

/// The gateway's databases: `DATA_DIR/db` (outbox, retry queue, kept quarantine, tracking: the
/// disk budget's subject) and `DATA_DIR/garbage` (bounded, outside the budget).
#[derive(Clone)]
pub struct GatewayStore {
    db: Arc<DB>,
    garbage: Arc<GarbageStore>,
    next_outbox: Arc<AtomicU64>,
    /// No outbox entry is below this id. The outbox is a queue deleted from its front: an
    /// iterator from the start would step over every deletion marker still in the memtable
    /// (hundreds of thousands on a busy gateway), so reads seek here instead.
    outbox_floor: Arc<AtomicU64>,
    /// Quarantine ids are one sequence over both databases.
    next_quarantine: Arc<AtomicU64>,
    retry_depth: Arc<AtomicU64>,
    /// Serialises changes to the retry queue (forward rounds and `retry_all_now`).
    retry_write: Arc<Mutex<()>>,
}

impl std::fmt::Debug for GatewayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayStore").finish_non_exhaustive()
    }
}

pub(crate) fn id_of(key: &[u8]) -> anyhow::Result<u64> {
    Ok(u64::from_be_bytes(key.try_into().context("ids are 8 bytes")?))
}

pub(crate) fn last_key(db: &DB, cf: &rocksdb::ColumnFamily) -> anyhow::Result<u64> {
    match db.iterator_cf(cf, IteratorMode::End).next() {
        None => Ok(0),
        Some(item) => Ok(id_of(&item?.0)? + 1),
    }
}

pub(crate) fn open_db(path: &Path, families: &[&str], write_buffer_bytes: Option<usize>) -> anyhow::Result<DB> {
    let mut options = Options::default();
    if let Some(bytes) = write_buffer_bytes {
        options.set_write_buffer_size(bytes);
    }
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    options.set_wal_recovery_mode(DBRecoveryMode::AbsoluteConsistency);
    let families = families.iter().map(|name| ColumnFamilyDescriptor::new(*name, options.clone()));
    DB::open_cf_descriptors(&options, path, families).with_context(|| format!("opening {}", path.display()))
}

pub(crate) fn synced() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    options
}

impl GatewayStore {
    pub fn open(data_dir: &Path, bounds: GarbageBounds) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        // The outbox and quarantine hold customers' readings: owner only.
        #[cfg(unix)]
        std::fs::set_permissions(data_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let db = open_db(&data_dir.join("db"), &[CF_OUTBOX, CF_QUARANTINE, CF_METERS, CF_SEEN, CF_RETRY], None)?;
        let (garbage, garbage_next) = GarbageStore::open(&data_dir.join("garbage"), bounds)?;
        let next_outbox = last_key(&db, db.cf_handle(CF_OUTBOX).expect("created"))?;
        let next_quarantine = last_key(&db, db.cf_handle(CF_QUARANTINE).expect("created"))?.max(garbage_next);
        let outbox_floor = match db.iterator_cf(db.cf_handle(CF_OUTBOX).expect("created"), IteratorMode::Start).next() {
            Some(item) => id_of(&item?.0)?,
            None => next_outbox,
        };
        // Bounded by the outbox it came from.
        let retry_depth = db.iterator_cf(db.cf_handle(CF_RETRY).expect("created"), IteratorMode::Start).count();
        Ok(GatewayStore {
            db: Arc::new(db),
            garbage: Arc::new(garbage),
            next_outbox: Arc::new(AtomicU64::new(next_outbox)),
            outbox_floor: Arc::new(AtomicU64::new(outbox_floor)),
            next_quarantine: Arc::new(AtomicU64::new(next_quarantine)),
            retry_depth: Arc::new(AtomicU64::new(retry_depth as u64)),
            retry_write: Arc::new(Mutex::new(())),
        })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column families are created at open")
    }

    /// The garbage store's counts (for `/metrics` and the release loop).
    pub fn garbage_counts(&self) -> &GarbageCounts {
        &self.garbage.counts
    }

    /// Drops garbage past its retention and compacts the garbage database (see [`GarbageStore::prune`]).
    pub fn prune_garbage(&self, now_ms: i64) -> anyhow::Result<u64> {
        self.garbage.prune(now_ms)
    }

    /// Durably stores verified readings, rejections and the tracking they changed in one synced
    /// write, and deletes the quarantine entries they were released from; only after it returns
    /// may the messages be acknowledged to the broker. Entries of a bounded class go to the
    /// garbage database, after the main write (a failure between the two leaves an entry that
    /// is released again: its reading is then a duplicate, never lost).
    pub fn store_batch(
        &self,
        accepted: &[Envelope],
        rejected: Vec<QuarantineEntry>,
        tracking: Tracking,
        released: &[Released],
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
        for release in released.iter().filter(|release| !release.bounded) {
            batch.delete_cf(self.cf(CF_QUARANTINE), release.id.to_be_bytes());
        }
        let (bounded, kept): (Vec<QuarantineEntry>, Vec<QuarantineEntry>) =
            rejected.into_iter().partition(|entry| entry.class.is_bounded());
        self.commit_with_quarantine(batch, kept)?;
        let released_bounded: Vec<u64> =
            released.iter().filter(|release| release.bounded).map(|release| release.id).collect();
        self.garbage.write(bounded, &released_bounded, &self.next_quarantine)
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

    /// Adds kept quarantine entries to `batch` (assigning their ids) and writes it, synced.
    fn commit_with_quarantine(&self, mut batch: WriteBatch, rejected: Vec<QuarantineEntry>) -> anyhow::Result<()> {
        for mut entry in rejected {
            entry.id = self.next_quarantine.fetch_add(1, Ordering::SeqCst);
            batch.put_cf(self.cf(CF_QUARANTINE), entry.id.to_be_bytes(), serde_json::to_vec(&entry)?);
        }
        self.db.write_opt(batch, &synced())?;
        Ok(())
    }

    /// The oldest readings in the outbox, in arrival order.
    pub fn outbox_head(&self, limit: usize) -> anyhow::Result<Vec<(u64, Envelope)>> {
        let mut out = Vec::new();
        let floor = self.outbox_floor.load(Ordering::SeqCst).to_be_bytes();
        let mode = IteratorMode::From(&floor, Direction::Forward);
        for item in self.db.iterator_cf(self.cf(CF_OUTBOX), mode).take(limit) {
            let (key, value) = item?;
            out.push((id_of(&key)?, serde_json::from_slice(&value).context("outbox entry decodes")?));
        }
        // Everything below the first entry found is gone (ids are written in order, one batch at
        // a time): later reads start there. An empty read moves nothing, since an id may be
        // allocated for a batch not yet written.
        if let Some((first, _)) = out.first() {
            self.outbox_floor.fetch_max(*first, Ordering::SeqCst);
        }
        Ok(out)
    }

    /// Retry-queue items due at `now_ms` (wall clock), soonest first.
    pub fn retry_due(&self, now_ms: i64, limit: usize) -> anyhow::Result<Vec<RetryItem>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_RETRY), IteratorMode::Start).take(limit) {
            let (key, value) = item?;
            let due = u64::from_be_bytes(key[..8].try_into().context("retry keys are 16 bytes")?);
            if due > now_ms.max(0) as u64 {
                break;
            }
            out.push(RetryItem { key: key.to_vec(), entry: serde_json::from_slice(&value).context("retry entry")? });
        }
        Ok(out)
    }

    /// Applies a forward round: removes what the ledger answered, queues retries, records the
    /// ledger's refusals, in one synced write.
    pub fn complete(&self, completion: Completion) -> anyhow::Result<()> {
        let _retry = self.retry_write.lock().expect("retry lock is never poisoned");
        let mut batch = WriteBatch::default();
        for id in &completion.outbox_done {
            batch.delete_cf(self.cf(CF_OUTBOX), id.to_be_bytes());
        }
        let mut removed = 0u64;
        for key in &completion.retry_done {
            // `retry_all_now` may have moved it to due time 0 while it was in flight.
            let moved = retry_key(0, id_of(&key[8..])?);
            let keys: &[&[u8]] = if moved == *key { &[key] } else { &[key, &moved] };
            for key in keys {
                if self.db.get_pinned_cf(self.cf(CF_RETRY), key)?.is_some() {
                    batch.delete_cf(self.cf(CF_RETRY), key);
                    removed += 1;
                }
            }
        }
        for (due_ms, entry) in &completion.retry_again {
            let id = self.next_outbox.fetch_add(1, Ordering::SeqCst);
            batch.put_cf(self.cf(CF_RETRY), retry_key(*due_ms, id), serde_json::to_vec(entry)?);
        }
        let added = completion.retry_again.len() as u64;
        self.commit_with_quarantine(batch, completion.quarantined)?;
        self.retry_depth.fetch_add(added, Ordering::SeqCst);
        self.retry_depth.fetch_sub(removed, Ordering::SeqCst);
        Ok(())
    }

    /// Makes every queued retry due now (the registry learned a meter or key).
    pub fn retry_all_now(&self) -> anyhow::Result<()> {
        let _retry = self.retry_write.lock().expect("retry lock is never poisoned");
        let mut batch = WriteBatch::default();
        for item in self.db.iterator_cf(self.cf(CF_RETRY), IteratorMode::Start) {
            let (key, value) = item?;
            batch.delete_cf(self.cf(CF_RETRY), &key);
            batch.put_cf(self.cf(CF_RETRY), retry_key(0, id_of(&key[8..])?), value);
        }
        self.db.write_opt(batch, &synced())?;
        Ok(())
    }

    /// Gives disk space back after the outbox drained: flushes every memtable (so RocksDB can
    /// delete the write-ahead log files they pinned) and compacts the outbox, whose deleted
    /// entries otherwise stay on disk as tombstones until a compaction happens to reach them.
    pub fn reclaim(&self) -> anyhow::Result<()> {
        for name in [CF_OUTBOX, CF_QUARANTINE, CF_METERS, CF_SEEN, CF_RETRY] {
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
            let first = id_of(&key).unwrap_or(0);
            self.next_outbox.load(Ordering::SeqCst).saturating_sub(first)
        })
    }

    /// Readings waiting in the retry queue.
    pub fn retry_depth(&self) -> u64 {
        self.retry_depth.load(Ordering::SeqCst)
    }

    /// Quarantine entries from id `from`, oldest first, over both databases.
    pub fn quarantine(&self, from: u64, limit: usize) -> anyhow::Result<Vec<QuarantineEntry>> {
        let start = from.to_be_bytes();
        let mode = || IteratorMode::From(&start, Direction::Forward);
        let mut kept = self.db.iterator_cf(self.cf(CF_QUARANTINE), mode()).peekable();
        let mut garbage = self.garbage.iter_from(&start).peekable();
        let mut out = Vec::new();
        while out.len() < limit {
            let take_kept = match (kept.peek(), garbage.peek()) {
                (None, None) => break,
                (Some(Ok((a, _))), Some(Ok((b, _)))) => a <= b,
                (Some(_), _) => true,
                (None, Some(_)) => false,
            };
            let item = if take_kept { kept.next() } else { garbage.next() };
            let (_, value) = item.expect("peeked")?;
            out.push(serde_json::from_slice(&value).context("quarantine entry decodes")?);
        }
        Ok(out)
    }

    /// The quarantine entry with id `id`, from either database.
    pub fn quarantine_entry(&self, id: u64) -> anyhow::Result<Option<QuarantineEntry>> {
        let bytes = match self.db.get_pinned_cf(self.cf(CF_QUARANTINE), id.to_be_bytes())? {
            Some(bytes) => Some(bytes.to_vec()),
            None => self.garbage.get(id)?,
        };
        bytes.map(|bytes| serde_json::from_slice(&bytes).context("quarantine entry decodes")).transpose()
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
            let store = GatewayStore::open(dir.path(), GarbageBounds::default())?;
            let early = Tracking { meters: Vec::new(), seen: vec![(meter.clone(), 1, ReadingDigest([1; 32]))] };
            store.store_batch(&[], Vec::new(), early, &[])?;
            assert_eq!(store.seen(&meter, 1)?, Some(ReadingDigest([1; 32])));
            let state = MeterState { site: "site-0".into(), highest: window + 10, ..MeterState::default() };
            let later = Tracking {
                meters: vec![(meter.clone(), state)],
                seen: vec![(meter.clone(), window + 10, ReadingDigest([2; 32]))],
            };
            store.store_batch(&[], Vec::new(), later, &[])?;
        }
        let store = GatewayStore::open(dir.path(), GarbageBounds::default())?;
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
            let store = GatewayStore::open(dir.path(), GarbageBounds::default())?;
            for round in 0..3u8 {
                let batch: Vec<Envelope> = (0..10).map(|n| envelope(round * 10 + n)).collect();
                store.store_batch(&batch, Vec::new(), Tracking::default(), &[])?;
            }
            assert_eq!(store.outbox_depth(), 30);
            let head = store.outbox_head(12)?;
            assert_eq!(head.iter().map(|(id, _)| *id).collect::<Vec<_>>(), (0..12).collect::<Vec<_>>());
            store.complete(Completion {
                outbox_done: head.iter().map(|(id, _)| *id).collect(),
                ..Completion::default()
            })?;
            assert_eq!(store.outbox_depth(), 18);
            assert_eq!(store.outbox_head(1)?[0].1, envelope(12));
        }
        let store = GatewayStore::open(dir.path(), GarbageBounds::default())?;
        assert_eq!(store.outbox_depth(), 18, "reopened where it stopped");
        let rest = store.outbox_head(100)?;
        assert_eq!(rest.len(), 18);
        store
            .complete(Completion { outbox_done: rest.iter().map(|(id, _)| *id).collect(), ..Completion::default() })?;
        assert_eq!(store.outbox_depth(), 0);
        assert!(store.outbox_head(10)?.is_empty());
        store.store_batch(&[envelope(99)], Vec::new(), Tracking::default(), &[])?;
        assert_eq!(store.outbox_head(10)?.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![30]);
        Ok(())
    }

    fn entry(class: ReasonClass, received_ms: i64) -> QuarantineEntry {
        QuarantineEntry {
            id: 0,
            received_ms,
            source: "wattle/v1/site-0/M1/reading".into(),
            reason: "test".into(),
            class,
            detail: String::new(),
            digest: None,
            meter: None,
            sequence: None,
            payload: "x".into(),
            whole: true,
        }
    }

    /// Garbage goes to its own database, bounded: past the bound the oldest entries are dropped
    /// and counted, held entries are never dropped, the listing merges both by id, and the
    /// retention drops what is too old.
    #[test]
    fn the_garbage_store_is_bounded_and_kept_apart() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let bounds = GarbageBounds { entries_max: 10, retention_ms: 1_000 };
        let store = GatewayStore::open(dir.path(), bounds)?;
        store.store_batch(&[], vec![entry(ReasonClass::Held, 0)], Tracking::default(), &[])?;
        for round in 0..5 {
            let batch = (0..5).map(|_| entry(ReasonClass::Garbage, 100 * round)).collect();
            store.store_batch(&[], batch, Tracking::default(), &[])?;
        }
        let counts = store.garbage_counts();
        assert_eq!(counts.entries.load(Ordering::SeqCst), 10);
        assert_eq!(counts.dropped_garbage.load(Ordering::SeqCst), 15);
        let listed = store.quarantine(0, 100)?;
        let ids: Vec<u64> = listed.iter().map(|entry| entry.id).collect();
        assert_eq!(ids, [0].into_iter().chain(16..26).collect::<Vec<u64>>(), "the held entry and the newest garbage");
        assert_eq!(listed[0].class, ReasonClass::Held);
        // Garbage received before 2,000 - 1,000 ms is past its retention; the held entry stays.
        assert_eq!(store.prune_garbage(1_350)?, 5);
        assert_eq!(store.quarantine(0, 100)?.len(), 6);
        drop(store);
        let store = GatewayStore::open(dir.path(), bounds)?;
        assert_eq!(store.garbage_counts().entries.load(Ordering::SeqCst), 5, "counted again at open");
        store.store_batch(&[], vec![entry(ReasonClass::Unverified, 5_000)], Tracking::default(), &[])?;
        assert_eq!(store.quarantine(0, 100)?.last().map(|entry| entry.id), Some(26), "ids continue over both");
        Ok(())
    }

    /// The retry queue hands out what is due, in due order, and forgets what was answered.
    #[test]
    fn the_retry_queue_is_durable_and_ordered_by_due_time() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let envelope = Envelope { version: 1, reading: "00".into(), signature: String::new(), backfill: false };
        let retry = |reason: &str| RetryEntry {
            envelope: envelope.clone(),
            reason: reason.into(),
            attempts: 1,
            first_refused_ms: 0,
        };
        {
            let store = GatewayStore::open(dir.path(), GarbageBounds::default())?;
            let again = vec![(2_000, retry("no_tariff")), (1_000, retry("unknown_meter"))];
            store.complete(Completion { retry_again: again, ..Completion::default() })?;
            assert_eq!(store.retry_depth(), 2);
            assert!(store.retry_due(999, 10)?.is_empty());
            let due = store.retry_due(1_500, 10)?;
            assert_eq!(due.iter().map(|item| item.entry.reason.as_str()).collect::<Vec<_>>(), ["unknown_meter"]);
        }
        let store = GatewayStore::open(dir.path(), GarbageBounds::default())?;
        assert_eq!(store.retry_depth(), 2, "reopened");
        store.retry_all_now()?;
        let due = store.retry_due(0, 10)?;
        assert_eq!(due.len(), 2, "everything due at once");
        let answered = due.iter().map(|item| item.key.clone()).collect();
        store.complete(Completion { retry_done: answered, ..Completion::default() })?;
        assert_eq!(store.retry_depth(), 0);
        assert!(store.retry_due(i64::MAX, 10)?.is_empty());
        Ok(())
    }
}
