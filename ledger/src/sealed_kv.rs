//! Encryption at rest: a [`Kv`] that seals what it stores under the ledger secret
//! (`secrets.rs`), so nothing a node writes to disk (log, history, state, snapshots, RocksDB's
//! WAL and SSTs) names a customer or a meter or shows a reading.
//!
//! | family | key stored as | value stored as |
//! |---|---|---|
//! | log, history | index, as is | sealed, the family and index as associated data |
//! | public | as is (governance ids, tariff ids, hashes) | sealed, family and key as associated data |
//! | private | prefix ‖ keyed hash of the id ‖ rest | sealed (logical key ‖ value), family and stored key as associated data |
//! | history_readings | keyed hash of the meter ‖ key id ‖ sequence | sealed (logical key ‖ value), likewise |
//! | raft, sm_meta, history_tree | as is | as is: votes, indexes, membership, hashes |
//!
//! A private key is `prefix/` then an id up to the next `/` or `\0`, then what orders the id's
//! records (a time, a key id). The id is replaced by its 16-byte keyed hash and the rest kept, so
//! one id's records stay together and in order: a prefix scan (a customer's intervals) still
//! works; scans across ids come back in hash order. The logical key travels sealed inside the
//! value, so scans return logical keys without reversing the hash.
//!
//! Range deletes pass through on stored keys: they clear whole families (snapshot install) or
//! index ranges of the log, whose keys are stored as they are.

use std::sync::Arc;

use crate::kv::{Batch, Cf, Kv, KvResult, Op, Visit, VisitAll};
use crate::secrets::{LedgerSecrets, SecretError};

/// A [`Kv`] that seals values and hashes ids in keys before they reach `inner`.
#[derive(Debug, Clone)]
pub struct SealedKv {
    inner: Arc<dyn Kv>,
    secrets: Arc<LedgerSecrets>,
}

/// How a family is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sealing {
    /// Stored as given.
    Clear,
    /// Value sealed, key as given.
    Value,
    /// Value sealed with its logical key inside; ids in the key hashed.
    KeyAndValue,
}

fn sealing(cf: Cf) -> Sealing {
    match cf {
        Cf::Raft | Cf::SmMeta | Cf::Tree => Sealing::Clear,
        Cf::Log | Cf::History | Cf::Public => Sealing::Value,
        Cf::Private | Cf::Readings => Sealing::KeyAndValue,
    }
}

fn corrupt(cf: Cf, error: SecretError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} record: {error}", cf.name()))
}

impl SealedKv {
    pub fn new(inner: Arc<dyn Kv>, secrets: Arc<LedgerSecrets>) -> Self {
        SealedKv { inner, secrets }
    }

    pub fn secrets(&self) -> &Arc<LedgerSecrets> {
        &self.secrets
    }

    /// The key as stored.
    pub fn stored_key(&self, cf: Cf, key: &[u8]) -> Vec<u8> {
        match cf {
            Cf::Private => self.private_key(key),
            Cf::Readings => self.readings_key(key),
            _ => key.to_vec(),
        }
    }

    /// `prefix/` ‖ H(id) ‖ rest; keys without `/` (constants) as they are.
    fn private_key(&self, key: &[u8]) -> Vec<u8> {
        let Some(slash) = key.iter().position(|byte| *byte == b'/') else { return key.to_vec() };
        let (prefix, after) = key.split_at(slash + 1);
        let end = after.iter().position(|byte| matches!(byte, b'/' | 0)).unwrap_or(after.len());
        if end == 0 {
            return key.to_vec();
        }
        let (id, rest) = after.split_at(end);
        [prefix, self.secrets.keyed_id(id).as_slice(), rest].concat()
    }

    /// A settled reading's key is meter id length (1), meter id, key id, sequence: the meter id
    /// becomes its keyed hash. A prefix shorter than its stated id (never written) stays as is.
    fn readings_key(&self, key: &[u8]) -> Vec<u8> {
        let Some((&length, after)) = key.split_first() else { return Vec::new() };
        let length = length as usize;
        if after.len() < length {
            return key.to_vec();
        }
        let (id, rest) = after.split_at(length);
        [self.secrets.keyed_id(id).as_slice(), rest].concat()
    }

    fn aad(cf: Cf, stored_key: &[u8]) -> Vec<u8> {
        [cf.name().as_bytes(), b"\0", stored_key].concat()
    }

    fn seal(&self, cf: Cf, key: &[u8], value: &[u8]) -> (Vec<u8>, Vec<u8>) {
        match sealing(cf) {
            Sealing::Clear => (key.to_vec(), value.to_vec()),
            Sealing::Value => (key.to_vec(), self.secrets.seal(&Self::aad(cf, key), value)),
            Sealing::KeyAndValue => {
                let stored = self.stored_key(cf, key);
                let plain = [&(key.len() as u32).to_be_bytes(), key, value].concat();
                let sealed = self.secrets.seal(&Self::aad(cf, &stored), &plain);
                (stored, sealed)
            }
        }
    }

    /// The logical key and value of a stored record.
    fn open(&self, cf: Cf, stored_key: &[u8], stored: &[u8]) -> KvResult<(Vec<u8>, Vec<u8>)> {
        match sealing(cf) {
            Sealing::Clear => Ok((stored_key.to_vec(), stored.to_vec())),
            Sealing::Value => {
                let value =
                    self.secrets.open(&Self::aad(cf, stored_key), stored).map_err(|error| corrupt(cf, error))?;
                Ok((stored_key.to_vec(), value))
            }
            Sealing::KeyAndValue => {
                let plain =
                    self.secrets.open(&Self::aad(cf, stored_key), stored).map_err(|error| corrupt(cf, error))?;
                let length = plain
                    .get(..4)
                    .map(|bytes| u32::from_be_bytes(bytes.try_into().expect("4 bytes")) as usize)
                    .filter(|length| 4 + length <= plain.len())
                    .ok_or_else(|| corrupt(cf, SecretError::Malformed("logical key length".into())))?;
                Ok((plain[4..4 + length].to_vec(), plain[4 + length..].to_vec()))
            }
        }
    }
}

impl Kv for SealedKv {
    fn get(&self, cf: Cf, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        let stored_key = self.stored_key(cf, key);
        match self.inner.get(cf, &stored_key)? {
            None => Ok(None),
            Some(stored) => {
                let (logical, value) = self.open(cf, &stored_key, &stored)?;
                if logical != key {
                    return Err(corrupt(cf, SecretError::Malformed("record holds another key".into())));
                }
                Ok(Some(value))
            }
        }
    }

    fn scan(&self, cf: Cf, from: &[u8], visit: &mut Visit<'_>) -> KvResult<()> {
        let mut failure = None;
        self.inner.scan(cf, &self.stored_key(cf, from), &mut |stored_key, stored| match self
            .open(cf, stored_key, stored)
        {
            Ok((key, value)) => visit(&key, &value),
            Err(error) => {
                failure = Some(error);
                false
            }
        })?;
        failure.map_or(Ok(()), Err)
    }

    fn last(&self, cf: Cf) -> KvResult<Option<(Vec<u8>, Vec<u8>)>> {
        match self.inner.last(cf)? {
            None => Ok(None),
            Some((stored_key, stored)) => self.open(cf, &stored_key, &stored).map(Some),
        }
    }

    fn write(&self, batch: Batch) -> KvResult<()> {
        let ops = batch
            .ops
            .into_iter()
            .map(|op| match op {
                Op::Put(cf, key, value) => {
                    let (key, value) = self.seal(cf, &key, &value);
                    Op::Put(cf, key, value)
                }
                Op::Delete(cf, key) => Op::Delete(cf, self.stored_key(cf, &key)),
                range @ Op::DeleteRange(..) => range,
            })
            .collect();
        self.inner.write(Batch { ops })
    }

    fn scan_consistent(&self, cfs: &[Cf], visit: &mut VisitAll<'_>) -> KvResult<()> {
        self.inner.scan_consistent(cfs, &mut |cf, stored_key, stored| {
            let (key, value) = self.open(cf, stored_key, stored)?;
            visit(cf, &key, &value)
        })
    }

    fn scan_consistent_stored(&self, cfs: &[Cf], visit: &mut VisitAll<'_>) -> KvResult<()> {
        self.inner.scan_consistent_stored(cfs, visit)
    }

    fn write_stored(&self, batch: Batch) -> KvResult<()> {
        self.inner.write_stored(batch)
    }

    fn durable(&self) -> bool {
        self.inner.durable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MemoryKv;

    fn stores() -> (Arc<MemoryKv>, SealedKv) {
        let inner = Arc::new(MemoryKv::default());
        let sealed = SealedKv::new(inner.clone(), Arc::new(LedgerSecrets::new([7; 32], [8; 32])));
        (inner, sealed)
    }

    fn raw(inner: &MemoryKv) -> Vec<u8> {
        let mut all = Vec::new();
        inner
            .scan_consistent(&Cf::ALL, &mut |_, key, value| {
                all.extend_from_slice(key);
                all.extend_from_slice(value);
                Ok(())
            })
            .expect("test store");
        all
    }

    #[test]
    fn what_is_stored_names_nobody_and_reads_back_as_written() {
        let (inner, sealed) = stores();
        let mut batch = Batch::default();
        batch.put(Cf::Private, b"iv/customer-0007\0\0\0\0\0\0\0\0\x01".to_vec(), b"import 1234 Wh".to_vec());
        batch.put(Cf::Private, b"iv/customer-0007\0\0\0\0\0\0\0\0\x02".to_vec(), b"import 99 Wh".to_vec());
        batch.put(Cf::Private, b"iv/customer-0008\0\0\0\0\0\0\0\0\x01".to_vec(), b"other".to_vec());
        batch.put(Cf::Private, b"m/meter-0042".to_vec(), b"record".to_vec());
        batch.put(Cf::Private, b"open_periods".to_vec(), b"[]".to_vec());
        batch.put(Cf::Readings, [&[10u8][..], b"meter-0042", &[0, 0, 0, 1], &[0; 8]].concat(), b"line".to_vec());
        batch.put(Cf::Log, 5u64.to_be_bytes().to_vec(), b"entry naming meter-0042".to_vec());
        batch.put(Cf::Raft, b"vote".to_vec(), b"v".to_vec());
        sealed.write(batch).expect("test store");
        let stored = raw(&inner);
        for secret in [&b"customer-0007"[..], b"meter-0042", b"1234 Wh", b"entry naming"] {
            assert!(!stored.windows(secret.len()).any(|window| window == secret), "{secret:?} stored in clear");
        }
        assert_eq!(sealed.get(Cf::Private, b"m/meter-0042").expect("test store").expect("test store"), b"record");
        assert_eq!(sealed.get(Cf::Private, b"open_periods").expect("test store").expect("test store"), b"[]");
        assert_eq!(
            sealed.get(Cf::Log, &5u64.to_be_bytes()).expect("test store").expect("test store"),
            b"entry naming meter-0042"
        );
        assert_eq!(sealed.get(Cf::Raft, b"vote").expect("test store").expect("test store"), b"v");
        // A prefix scan finds one customer's records, in order, under their logical keys.
        let prefix = b"iv/customer-0007\0";
        let mut seen = Vec::new();
        sealed
            .scan(Cf::Private, prefix, &mut |key, value| {
                let inside = key.starts_with(prefix);
                if inside {
                    seen.push((key.to_vec(), value.to_vec()));
                }
                inside
            })
            .expect("test store");
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].1, b"import 1234 Wh");
        assert!(seen[0].0 < seen[1].0);
        let readings_prefix = [&[10u8][..], b"meter-0042", &[0, 0, 0, 1]].concat();
        let mut lines = 0;
        sealed
            .scan(Cf::Readings, &readings_prefix, &mut |key, _| {
                lines += usize::from(key.starts_with(&readings_prefix));
                true
            })
            .expect("test store");
        assert_eq!(lines, 1);
        let mut batch = Batch::default();
        batch.delete(Cf::Private, b"m/meter-0042".to_vec());
        sealed.write(batch).expect("test store");
        assert_eq!(sealed.get(Cf::Private, b"m/meter-0042").expect("test store"), None);
    }

    #[test]
    fn a_value_moved_or_altered_on_disk_is_an_error_not_data() {
        let (inner, sealed) = stores();
        let mut batch = Batch::default();
        batch.put(Cf::Log, 1u64.to_be_bytes().to_vec(), b"one".to_vec());
        batch.put(Cf::Log, 2u64.to_be_bytes().to_vec(), b"two".to_vec());
        sealed.write(batch).expect("test store");
        let one = inner.get(Cf::Log, &1u64.to_be_bytes()).expect("test store").expect("test store");
        let mut batch = Batch::default();
        batch.put(Cf::Log, 2u64.to_be_bytes().to_vec(), one);
        inner.write(batch).expect("test store");
        let error = sealed.get(Cf::Log, &2u64.to_be_bytes()).expect_err("test");
        assert!(error.to_string().contains("does not open"), "{error}");
        // And under another ledger secret nothing opens.
        let stranger = SealedKv::new(inner.clone(), Arc::new(LedgerSecrets::new([7; 32], [9; 32])));
        assert!(stranger.get(Cf::Log, &1u64.to_be_bytes()).is_err());
    }
}
