//! The ledger's history: what is kept per entry and per reading, never purged and never in a
//! snapshot (DESIGN.md, "History vs compaction"). Three column families, all written in the same
//! batch as the state the entry produced:
//!
//! - `history`: per log index, the entry's canonical bytes, its claims document, its Merkle leaf
//!   and the root after it ([`HistoryRecord`]);
//! - `history_readings`: per settled reading, keyed by (meter, key id, sequence), its settlement
//!   line: the digest of the accepted reading, where it sits (log index, position in the batch)
//!   and what it settled ([`SettledReading`]). This is what tells an exact duplicate (same digest)
//!   from equivocation (another digest); the state keeps only sequence ranges per meter;
//! - `history_tree`: the root of every complete perfect subtree of the Merkle tree above the
//!   leaves (`domain::merkle::Subtree`, levels 1 and up; a leaf is in its history record), so a
//!   receipt reads O(log n) records.
//!
//! Every record of the two indexes is a pure function of the history records, so a node that
//! fetched older history from a peer derives them from what it fetched ([`derived_writes`]).
//! The state machine never reads any of this: a node that joined from a snapshot lacks the older
//! part until it has fetched it, and replicas must not disagree.

use std::str::FromStr;

use domain::codec::{DecodeError, Reader, Writer};
use domain::ids::{KeyId, MeterId, Sequence};
use domain::merkle;
use domain::money::{decode_decimal, encode_decimal};
use domain::reading::ReadingDigest;
use domain::tx::{Transaction, TxBody};
use openraft::EntryPayload;
use rust_decimal::Decimal;

use crate::entry::decode_entry;
use crate::kv::{Batch, Cf};
use crate::state::{claims_reading_lines, ReadingResult};

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

/// The settlement line of one accepted reading: what was settled, traceable to its digest and to
/// where it sits in the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettledReading {
    pub digest: ReadingDigest,
    pub log_index: u64,
    /// Position of the reading in its batch.
    pub position: u32,
    pub interval_start: i64,
    pub energy_import_wh: u64,
    pub energy_export_wh: u64,
    pub amount: Decimal,
}

impl SettledReading {
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::new();
        writer
            .fixed(&self.digest.0)
            .u64(self.log_index)
            .u32(self.position)
            .i64(self.interval_start)
            .u64(self.energy_import_wh)
            .u64(self.energy_export_wh);
        encode_decimal(&mut writer, self.amount);
        writer.finish()
    }
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let settled = SettledReading {
            digest: ReadingDigest(reader.array()?),
            log_index: reader.u64()?,
            position: reader.u32()?,
            interval_start: reader.i64()?,
            energy_import_wh: reader.u64()?,
            energy_export_wh: reader.u64()?,
            amount: decode_decimal(&mut reader, "amount")?,
        };
        reader.finish()?;
        Ok(settled)
    }
}

/// The key prefix of one (meter, key id)'s settled readings: meter id length, meter id, key id.
pub fn readings_prefix(meter: &MeterId, key_id: KeyId) -> Vec<u8> {
    let id = meter.as_str().as_bytes();
    let mut key = Vec::with_capacity(1 + id.len() + 12);
    key.push(id.len() as u8);
    key.extend_from_slice(id);
    key.extend_from_slice(&key_id.0.to_be_bytes());
    key
}

/// The key of one reading's settlement line (sequences sort in order within a meter and key).
pub fn reading_key(meter: &MeterId, key_id: KeyId, sequence: Sequence) -> Vec<u8> {
    let mut key = readings_prefix(meter, key_id);
    key.extend_from_slice(&sequence.0.to_be_bytes());
    key
}

/// The settlement lines of a readings transaction applied at `log_index`, read from its claims
/// document, v1 or v2 (one reading line per reading, in batch order; v2's interval and component
/// lines are not kept here; `state::apply_readings` writes it).
pub fn settled_lines(
    log_index: u64,
    tx: &Transaction,
    claims: Option<&[u8]>,
) -> Result<Vec<(Vec<u8>, SettledReading)>, String> {
    let TxBody::Readings(batch) = &tx.body else { return Ok(Vec::new()) };
    let claims = claims.ok_or("a readings transaction without claims")?;
    let text = std::str::from_utf8(claims).map_err(|_| "claims are not UTF-8")?;
    let mut lines = claims_reading_lines(text).ok_or("claims do not start with their header")?;
    let mut settled = Vec::new();
    for (position, item) in batch.readings.iter().enumerate() {
        let line = lines.next().ok_or_else(|| format!("no claims line for reading {position}"))?;
        let reading = item.reading.reading();
        let fields: Vec<&str> = line.split(' ').collect();
        let [meter, key_id, sequence, result, amount, _currency] = fields[..] else {
            return Err(format!("claims line {position} has {} fields", fields.len()));
        };
        if meter != reading.meter_id.as_str()
            || key_id != reading.key_id.0.to_string()
            || sequence != reading.sequence.0.to_string()
        {
            return Err(format!("claims line {position} names another reading"));
        }
        if result != ReadingResult::Accepted.code() {
            continue;
        }
        let amount = Decimal::from_str(amount).map_err(|error| format!("claims line {position}: amount: {error}"))?;
        let line = SettledReading {
            digest: item.reading.digest(),
            log_index,
            position: position as u32,
            interval_start: reading.interval_start.0,
            energy_import_wh: reading.import_energy().0,
            energy_export_wh: reading.export_energy().0,
            amount,
        };
        settled.push((reading_key(&reading.meter_id, reading.key_id, reading.sequence), line));
    }
    if lines.next().is_some() {
        return Err("more claims lines than readings".into());
    }
    Ok(settled)
}

/// The index writes (settlement lines and completed Merkle subtrees) of history records fetched
/// from a peer, `records` contiguous from log index 0 or from wherever they start. Subtrees that
/// reach outside the records are left out: the node's own entries complete them when applied, and
/// a receipt recomputes a missing subtree from its children.
pub fn derived_writes(records: &[(u64, HistoryRecord)], batch: &mut Batch) -> Result<(), String> {
    let mut frontier = merkle::Frontier::default();
    let from_zero = records.first().is_some_and(|(index, _)| *index == 0);
    for (index, record) in records {
        let entry = decode_entry(&record.entry).map_err(|error| format!("entry {index}: {error}"))?;
        if let EntryPayload::Normal(tx) = &entry.payload {
            for (key, line) in settled_lines(*index, tx, record.claims.as_deref())? {
                batch.put(Cf::Readings, key, line.encode());
            }
        }
        if from_zero && frontier.size() == *index {
            frontier.append_with(record.leaf, |subtree, hash| {
                if subtree.level > 0 {
                    batch.put(Cf::Tree, subtree.key(), hash.to_vec());
                }
            });
        }
    }
    Ok(())
}

/// Compares this node's settlement-line index with the lines its history produces (`expected`,
/// by key). Returns how many lines matched, or the log index of the first transaction whose line
/// differs, is missing or is extra, with the reason (for `wattle audit`).
pub fn compare_settled_lines(
    kv: &dyn crate::kv::Kv,
    expected: &std::collections::BTreeMap<Vec<u8>, SettledReading>,
) -> Result<u64, (u64, String)> {
    let mut on_disk = Vec::new();
    kv.scan(Cf::Readings, &[], &mut |key, value| {
        on_disk.push((key.to_vec(), value.to_vec()));
        true
    })
    .map_err(|error| (0, format!("reading the settlement lines: {error}")))?;
    let mut matched = 0;
    for (key, value) in &on_disk {
        let stored = SettledReading::decode(value);
        match (expected.get(key), stored) {
            (Some(line), Ok(stored)) if *line == stored => matched += 1,
            (Some(line), _) => {
                return Err((
                    line.log_index,
                    "its settlement line in the history index differs from re-execution".into(),
                ))
            }
            (None, Ok(stored)) => {
                return Err((
                    stored.log_index,
                    "the history index holds a settlement line no transaction produced".into(),
                ))
            }
            (None, Err(error)) => return Err((0, format!("an undecodable settlement line: {error}"))),
        }
    }
    // Every stored key is distinct and every match is expected: only a shortfall needs a search
    // (one set lookup per line, not a scan of the index per line).
    if matched as usize != expected.len() {
        let stored: std::collections::BTreeSet<&[u8]> = on_disk.iter().map(|(key, _)| key.as_slice()).collect();
        if let Some((_, line)) = expected.iter().find(|(key, _)| !stored.contains(key.as_slice())) {
            return Err((line.log_index, "its settlement line is missing from the history index".into()));
        }
    }
    Ok(matched)
}
