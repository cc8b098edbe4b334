//! A meter's keys over time. A meter may have several Ed25519 keys in its life (a firmware
//! update, a suspected compromise, a meter exchange that keeps the metering point). Each key is
//! valid for readings whose interval starts in a half-open window `[valid_from, valid_until)`;
//! a reading is checked against the key valid for *its* interval, not the key valid now, so a
//! backfill signed with an old key stays valid and a later interval signed with it does not.
//!
//! Rotation (`rotate`) ends the newest key where the new one begins; revocation (`revoke`) ends a
//! key earlier. Windows never reopen and never overlap: at most one key is valid for any
//! interval. Sans-IO; the ledger stores the ring with the meter and the gateway holds a copy.

use thiserror::Error;

use crate::ids::{KeyId, UnixSeconds};
use crate::limits::{METER_KEYS_MAX, SETTLEMENT_INTERVAL_SECONDS};

/// One key of a meter and the intervals it signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterKey {
    pub key_id: KeyId,
    /// Ed25519 public key.
    pub public_key: [u8; 32],
    /// Readings whose interval starts at or after this are signed by this key.
    pub valid_from: UnixSeconds,
    /// Readings whose interval starts at or after this are not (rotated or revoked); `None`: open.
    pub valid_until: Option<UnixSeconds>,
}

impl MeterKey {
    fn covers(&self, interval_start: UnixSeconds) -> bool {
        interval_start >= self.valid_from && self.valid_until.is_none_or(|until| interval_start < until)
    }
}

/// Why a reading's key does not sign its interval. Codes are stable (the ledger answers them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum KeyRefusal {
    #[error("the meter has no key with this id")]
    UnknownKey,
    /// The key exists, but only from a later interval on (a rotation effective in the future).
    #[error("the key is valid only from {0:?} on")]
    NotYetValid(UnixSeconds),
    /// The key was rotated out or revoked before this interval.
    #[error("the key signs no interval from {0:?} on (rotated or revoked)")]
    Retired(UnixSeconds),
}

impl KeyRefusal {
    /// Stable reason code.
    pub fn code(self) -> &'static str {
        match self {
            KeyRefusal::UnknownKey => "unknown_key",
            KeyRefusal::NotYetValid(_) => "key_not_yet_valid",
            KeyRefusal::Retired(_) => "key_retired",
        }
    }
}

/// Why a rotation or revocation is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyChangeError {
    #[error("key_id_taken: the meter had key {0} already; a new key takes a new id")]
    KeyIdTaken(u32),
    #[error("key_reused: this public key signed for the meter before")]
    KeyReused,
    #[error("unaligned: {0} is not the start of a {SETTLEMENT_INTERVAL_SECONDS}-second interval")]
    Unaligned(i64),
    #[error("not_after_current: the new key must start after the newest key's start ({0})")]
    NotAfterCurrent(i64),
    #[error("too_many_keys: a meter keeps at most {METER_KEYS_MAX} keys")]
    TooMany,
    #[error("unknown_key: the meter has no key {0}")]
    UnknownKey(u32),
}

/// A meter's keys, oldest first; windows ordered and disjoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRing {
    keys: Vec<MeterKey>,
}

impl KeyRing {
    /// A meter's first key, valid from the beginning of time.
    pub fn first(key_id: KeyId, public_key: [u8; 32]) -> Self {
        KeyRing { keys: vec![MeterKey { key_id, public_key, valid_from: UnixSeconds(i64::MIN), valid_until: None }] }
    }

    /// Rebuilds a ring from stored keys; `None` if they break the ring's invariants.
    pub fn from_keys(keys: Vec<MeterKey>) -> Option<Self> {
        let ordered = keys.windows(2).all(|pair| {
            pair[0].valid_from < pair[1].valid_from
                && pair[0].valid_until.is_some_and(|until| until <= pair[1].valid_from)
        });
        (!keys.is_empty() && keys.len() <= METER_KEYS_MAX && ordered).then_some(KeyRing { keys })
    }

    pub fn keys(&self) -> &[MeterKey] {
        &self.keys
    }

    /// The newest key (the one a meter signs with now, unless revoked).
    pub fn newest(&self) -> &MeterKey {
        self.keys.last().expect("a key ring is never empty")
    }

    /// The public key that signs the interval starting at `interval_start` under `key_id`.
    pub fn key_for(&self, key_id: KeyId, interval_start: UnixSeconds) -> Result<[u8; 32], KeyRefusal> {
        let key = self.keys.iter().find(|key| key.key_id == key_id).ok_or(KeyRefusal::UnknownKey)?;
        if key.covers(interval_start) {
            return Ok(key.public_key);
        }
        if interval_start < key.valid_from {
            return Err(KeyRefusal::NotYetValid(key.valid_from));
        }
        Err(KeyRefusal::Retired(key.valid_until.expect("a key not covering a later interval has an end")))
    }

    /// A new key for the intervals from `effective_from` on; the newest key ends there.
    /// `effective_from` may lie in the past (a meter re-keyed before governance caught up: its
    /// readings signed with the new key, refused as `unknown_key` until now, settle once this
    /// applies) or in the future (planned rotation: readings signed with the new key for earlier
    /// intervals are refused as `key_not_yet_valid`).
    pub fn rotate(
        &mut self,
        key_id: KeyId,
        public_key: [u8; 32],
        effective_from: UnixSeconds,
    ) -> Result<(), KeyChangeError> {
        if effective_from.0.rem_euclid(SETTLEMENT_INTERVAL_SECONDS) != 0 {
            return Err(KeyChangeError::Unaligned(effective_from.0));
        }
        if self.keys.iter().any(|key| key.key_id == key_id) {
            return Err(KeyChangeError::KeyIdTaken(key_id.0));
        }
        if self.keys.iter().any(|key| key.public_key == public_key) {
            return Err(KeyChangeError::KeyReused);
        }
        if self.keys.len() >= METER_KEYS_MAX {
            return Err(KeyChangeError::TooMany);
        }
        let newest = self.keys.last_mut().expect("a key ring is never empty");
        if effective_from <= newest.valid_from {
            return Err(KeyChangeError::NotAfterCurrent(newest.valid_from.0));
        }
        newest.valid_until = Some(newest.valid_until.map_or(effective_from, |until| until.min(effective_from)));
        self.keys.push(MeterKey { key_id, public_key, valid_from: effective_from, valid_until: None });
        Ok(())
    }

    /// Ends `key_id`'s window at `from` (never extends it). Readings already settled stay settled:
    /// the ledger is append-only; readings not yet settled for intervals from `from` on are refused.
    pub fn revoke(&mut self, key_id: KeyId, from: UnixSeconds) -> Result<(), KeyChangeError> {
        if from.0.rem_euclid(SETTLEMENT_INTERVAL_SECONDS) != 0 {
            return Err(KeyChangeError::Unaligned(from.0));
        }
        let key = self.keys.iter_mut().find(|key| key.key_id == key_id).ok_or(KeyChangeError::UnknownKey(key_id.0))?;
        let from = from.max(key.valid_from);
        key.valid_until = Some(key.valid_until.map_or(from, |until| until.min(from)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn ring() -> KeyRing {
        let mut ring = KeyRing::first(KeyId(1), [1; 32]);
        ring.rotate(KeyId(2), [2; 32], UnixSeconds(10 * DAY)).expect("rotated");
        ring
    }

    #[test]
    fn each_interval_is_checked_against_the_key_valid_for_it() {
        let ring = ring();
        assert_eq!(ring.key_for(KeyId(1), UnixSeconds(10 * DAY - 900)), Ok([1; 32]), "backfill with the old key");
        assert_eq!(ring.key_for(KeyId(2), UnixSeconds(10 * DAY)), Ok([2; 32]));
        assert_eq!(ring.key_for(KeyId(1), UnixSeconds(10 * DAY)), Err(KeyRefusal::Retired(UnixSeconds(10 * DAY))));
        assert_eq!(ring.key_for(KeyId(2), UnixSeconds(9 * DAY)), Err(KeyRefusal::NotYetValid(UnixSeconds(10 * DAY))));
        assert_eq!(ring.key_for(KeyId(3), UnixSeconds(0)), Err(KeyRefusal::UnknownKey));
        assert_eq!(ring.newest().key_id, KeyId(2));
    }

    #[test]
    fn rotations_that_would_overlap_or_reuse_are_refused() {
        let mut ring = ring();
        assert_eq!(ring.rotate(KeyId(2), [3; 32], UnixSeconds(20 * DAY)), Err(KeyChangeError::KeyIdTaken(2)));
        assert_eq!(ring.rotate(KeyId(3), [1; 32], UnixSeconds(20 * DAY)), Err(KeyChangeError::KeyReused));
        assert_eq!(
            ring.rotate(KeyId(3), [3; 32], UnixSeconds(10 * DAY)),
            Err(KeyChangeError::NotAfterCurrent(10 * DAY))
        );
        assert_eq!(
            ring.rotate(KeyId(3), [3; 32], UnixSeconds(20 * DAY + 1)),
            Err(KeyChangeError::Unaligned(20 * DAY + 1))
        );
        for id in 3..=(METER_KEYS_MAX as u32) {
            ring.rotate(KeyId(id), [id as u8; 32], UnixSeconds(i64::from(id) * 20 * DAY)).expect("room");
        }
        assert_eq!(ring.rotate(KeyId(99), [99; 32], UnixSeconds(10_000 * DAY)), Err(KeyChangeError::TooMany));
        assert!(KeyRing::from_keys(ring.keys().to_vec()).is_some(), "a ring built by rotations is well formed");
    }

    #[test]
    fn revocation_only_shortens_and_a_stored_ring_is_rebuilt_only_if_well_formed() {
        let mut ring = ring();
        ring.revoke(KeyId(2), UnixSeconds(15 * DAY)).expect("revoked");
        ring.revoke(KeyId(2), UnixSeconds(30 * DAY)).expect("a later end is no extension");
        assert_eq!(ring.key_for(KeyId(2), UnixSeconds(15 * DAY)), Err(KeyRefusal::Retired(UnixSeconds(15 * DAY))));
        assert_eq!(ring.key_for(KeyId(2), UnixSeconds(15 * DAY - 900)), Ok([2; 32]));
        assert_eq!(ring.revoke(KeyId(7), UnixSeconds(0)), Err(KeyChangeError::UnknownKey(7)));
        assert_eq!(KeyRing::from_keys(ring.keys().to_vec()).as_ref(), Some(&ring));
        let mut overlapping = ring.keys().to_vec();
        overlapping[0].valid_until = None;
        assert_eq!(KeyRing::from_keys(overlapping), None);
    }
}
