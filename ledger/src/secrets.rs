//! The ledger secret: what every admitted node holds and nobody else does.
//!
//! - **Sealing** (AES-256-GCM): private tables, the raft log, the history and snapshots are
//!   sealed under the current secret before they reach disk, with where the value lives (column
//!   family and key, so a log entry's index) as associated data: a sealed value moved to another
//!   key, or altered by one bit, fails to open. A sealed value names the secret version that
//!   sealed it, so values sealed before a rotation still open after it.
//! - **Keyed-hash ids**: a customer's or meter's id in a key is replaced by HMAC-SHA-256 under the
//!   id key (`keyed_id`), so the database's keys name nobody. The id key never rotates: rotating it
//!   would re-key every table.
//! - **Wrapping** (X25519 + HKDF-SHA-256 + AES-256-GCM): the secrets travel to an admitted node,
//!   and rest on its disk, only wrapped for that node's X25519 key. Ed25519 keys sign; they do not
//!   encrypt (DESIGN.md).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use domain::codec::{DecodeError, Reader, Writer};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;
use x25519_dalek::{PublicKey, StaticSecret};

/// Bytes of an AES-GCM nonce.
const NONCE_BYTES: usize = 12;
/// Bytes of a keyed-hash id in a key (128 bits: no collision among any realistic fleet).
pub const KEYED_ID_BYTES: usize = 16;
/// Most secret versions a ring holds (one per rotation).
pub const SECRET_VERSIONS_MAX: usize = 1024;
/// Version byte of the encoded ring.
const RING_VERSION: u8 = 1;
/// Version byte of a wrapped ring.
const WRAP_VERSION: u8 = 1;
/// HKDF info of a wrapping key.
const WRAP_INFO: &[u8] = b"wattle ledger secret wrap v1";

/// Why a sealed value or a wrapped ring did not open.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SecretError {
    #[error("sealed value is {0} bytes, shorter than its header")]
    Truncated(usize),
    #[error("sealed under secret version {0}, which this node does not hold")]
    UnknownVersion(u32),
    #[error("sealed value does not open: altered, moved to another key, or sealed under another ledger secret")]
    Tampered,
    #[error("wrapped secrets are malformed: {0}")]
    Malformed(String),
}

/// One version of the ledger secret.
#[derive(Clone)]
pub struct LedgerSecret {
    pub version: u32,
    key: [u8; 32],
}

impl LedgerSecret {
    pub fn from_bytes(version: u32, key: [u8; 32]) -> Self {
        LedgerSecret { version, key }
    }
    pub fn bytes(&self) -> &[u8; 32] {
        &self.key
    }
}

/// Every version of the ledger secret this node holds (the newest seals), and the id key. A
/// running node adds versions in place (`adopt`, when it applies a rotation), so the ring is
/// shared (`Arc<LedgerSecrets>`) and its versions sit behind a lock.
pub struct LedgerSecrets {
    id_key: [u8; 32],
    versions: std::sync::RwLock<Vec<LedgerSecret>>,
}

impl Clone for LedgerSecrets {
    fn clone(&self) -> Self {
        LedgerSecrets { id_key: self.id_key, versions: std::sync::RwLock::new(self.all()) }
    }
}

impl std::fmt::Debug for LedgerSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material.
        f.debug_struct("LedgerSecrets").field("versions", &self.all().len()).finish()
    }
}

/// Domain tag of a rotation's payload: the previous secret, sealed under the new one.
const ROTATION_AAD: &[u8] = b"wattle.ledger-secret.rotation\0";

impl LedgerSecrets {
    /// A new service's secrets: version 1 and the id key, from the given random bytes (the
    /// caller draws them, so this module stays free of randomness sources).
    pub fn new(id_key: [u8; 32], first: [u8; 32]) -> Self {
        LedgerSecrets { id_key, versions: std::sync::RwLock::new(vec![LedgerSecret::from_bytes(1, first)]) }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<LedgerSecret>> {
        self.versions.read().expect("the secret ring's lock is never poisoned")
    }

    fn all(&self) -> Vec<LedgerSecret> {
        self.read().clone()
    }

    /// Freshly drawn secrets from the operating system's generator.
    pub fn generate() -> Self {
        Self::new(rand::random(), rand::random())
    }

    pub fn current(&self) -> LedgerSecret {
        self.read().last().expect("a ring holds at least one secret").clone()
    }

    /// The oldest version: it seals raft traffic (`raft_channel.rs`), which must open on a node
    /// that has not applied a rotation yet.
    pub fn first(&self) -> LedgerSecret {
        self.read().first().expect("a ring holds at least one secret").clone()
    }

    pub fn versions(&self) -> Vec<LedgerSecret> {
        self.all()
    }

    /// Adds the next version, which seals from now on; every older one still opens.
    pub fn rotate(&self, key: [u8; 32]) -> Result<u32, SecretError> {
        let mut versions = self.versions.write().expect("the secret ring's lock is never poisoned");
        if versions.len() >= SECRET_VERSIONS_MAX {
            return Err(SecretError::Malformed(format!("more than {SECRET_VERSIONS_MAX} secret versions")));
        }
        let version = versions.last().expect("a ring holds at least one secret").version + 1;
        versions.push(LedgerSecret::from_bytes(version, key));
        Ok(version)
    }

    /// The secret bytes of `version`, if this ring holds it.
    pub fn key_of(&self, version: u32) -> Option<[u8; 32]> {
        self.version(version).map(|secret| secret.key)
    }

    fn version(&self, version: u32) -> Option<LedgerSecret> {
        self.read().iter().find(|secret| secret.version == version).cloned()
    }

    /// A rotation's payload for a freshly drawn `next` key: the version it becomes (current + 1)
    /// and the current version's secret sealed under it (old wrapped under new). The new key is
    /// not in it: whoever holds only older versions learns nothing of it from the log.
    pub fn wrap_previous(&self, next: &[u8; 32], nonce: [u8; NONCE_BYTES]) -> (u32, Vec<u8>) {
        let current = self.current();
        let version = current.version + 1;
        let sealed = seal_under(&LedgerSecret::from_bytes(version, *next), &rotation_aad(version), &current.key, nonce);
        (version, sealed)
    }

    /// Whether `key` is the secret of rotation `version`: it opens the rotation's payload into
    /// the previous version's secret this ring holds.
    pub fn recognises(&self, version: u32, key: &[u8; 32], sealed: &[u8]) -> bool {
        let Some(previous) = version.checked_sub(1).and_then(|previous| self.version(previous)) else { return false };
        let candidate = LedgerSecret::from_bytes(version, *key);
        open_under(&candidate, &rotation_aad(version), sealed).is_ok_and(|opened| opened == previous.key)
    }

    /// Applies a rotation: `version`'s secret is the one this ring already holds (a node
    /// replaying its log after a restart) or `candidate` (the leader's draw, or a peer's ring),
    /// and it must open `sealed` into the previous version. Adds it as the newest version.
    pub fn adopt(&self, version: u32, sealed: &[u8], candidate: Option<&[u8; 32]>) -> Result<(), SecretError> {
        if let Some(held) = self.version(version) {
            return match self.recognises(version, &held.key, sealed) {
                true => Ok(()),
                false => Err(SecretError::Malformed(format!("version {version} differs"))),
            };
        }
        let key = candidate.ok_or(SecretError::UnknownVersion(version))?;
        let current = self.current().version;
        if version != current + 1 {
            return Err(SecretError::Malformed(format!(
                "rotation to version {version}, but this ring is at {current}"
            )));
        }
        if !self.recognises(version, key, sealed) {
            return Err(SecretError::Tampered);
        }
        self.rotate(*key).map(|_| ())
    }

    /// Takes the versions `other` holds beyond this ring's (peers' ring after a rotation this node
    /// missed); both must be the same service's (id key and shared versions equal). Returns how
    /// many versions were added.
    pub fn extend_from(&self, other: &LedgerSecrets) -> Result<usize, SecretError> {
        if other.id_key != self.id_key {
            return Err(SecretError::Malformed("another service's secrets".into()));
        }
        let theirs = other.all();
        let mut versions = self.versions.write().expect("the secret ring's lock is never poisoned");
        for (mine, their) in versions.iter().zip(&theirs) {
            if mine.version != their.version || mine.key != their.key {
                return Err(SecretError::Malformed(format!("version {} differs", mine.version)));
            }
        }
        let held = versions.len();
        versions.extend(theirs.into_iter().skip(held));
        Ok(versions.len() - held)
    }

    /// The keyed hash that stands for an id in keys and logs.
    pub fn keyed_id(&self, id: &[u8]) -> [u8; KEYED_ID_BYTES] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.id_key).expect("HMAC takes any key length");
        mac.update(id);
        let full = mac.finalize().into_bytes();
        full[..KEYED_ID_BYTES].try_into().expect("16 of 32 bytes")
    }

    /// Seals `plaintext` under the current secret with `aad` bound to it, with the given nonce.
    /// Layout: version (u32, big-endian) ‖ nonce (12) ‖ AES-256-GCM ciphertext and tag.
    pub fn seal_with_nonce(&self, aad: &[u8], plaintext: &[u8], nonce: [u8; NONCE_BYTES]) -> Vec<u8> {
        seal_under(&self.current(), aad, plaintext, nonce)
    }

    /// Seals under the first version (raft traffic, `raft_channel.rs`).
    pub fn seal_first(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal_under(&self.first(), aad, plaintext, rand::random())
    }
}

fn rotation_aad(version: u32) -> Vec<u8> {
    [ROTATION_AAD, &version.to_be_bytes()].concat()
}

/// Layout: version (u32, big-endian) ‖ nonce (12) ‖ AES-256-GCM ciphertext and tag.
fn seal_under(secret: &LedgerSecret, aad: &[u8], plaintext: &[u8], nonce: [u8; NONCE_BYTES]) -> Vec<u8> {
    let cipher = Aes256Gcm::new_from_slice(&secret.key).expect("32-byte key");
    let sealed = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad })
        .expect("AES-GCM encrypts any length this ledger writes");
    let mut out = Vec::with_capacity(4 + NONCE_BYTES + sealed.len());
    out.extend_from_slice(&secret.version.to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

/// Opens a value [`seal_under`] made with exactly `secret`.
fn open_under(secret: &LedgerSecret, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SecretError> {
    if sealed.len() < 4 + NONCE_BYTES + 16 {
        return Err(SecretError::Truncated(sealed.len()));
    }
    if sealed[..4] != secret.version.to_be_bytes() {
        return Err(SecretError::UnknownVersion(u32::from_be_bytes(sealed[..4].try_into().expect("4 bytes"))));
    }
    let cipher = Aes256Gcm::new_from_slice(&secret.key).expect("32-byte key");
    cipher
        .decrypt(Nonce::from_slice(&sealed[4..4 + NONCE_BYTES]), Payload { msg: &sealed[4 + NONCE_BYTES..], aad })
        .map_err(|_| SecretError::Tampered)
}

impl LedgerSecrets {
    /// Seals with a fresh random nonce (96 random bits: safe far beyond the 2^32 values one
    /// secret version should seal; rotate before that).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        self.seal_with_nonce(aad, plaintext, rand::random())
    }

    /// Opens a value [`seal`](Self::seal) made under any version this ring holds.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SecretError> {
        if sealed.len() < 4 + NONCE_BYTES + 16 {
            return Err(SecretError::Truncated(sealed.len()));
        }
        let version = u32::from_be_bytes(sealed[..4].try_into().expect("4 bytes"));
        let secret = self.version(version).ok_or(SecretError::UnknownVersion(version))?;
        open_under(&secret, aad, sealed)
    }

    /// The ring's canonical bytes (only ever stored or sent wrapped).
    pub fn encode(&self) -> Vec<u8> {
        let versions = self.all();
        let mut writer = Writer::default();
        writer.u8(RING_VERSION).fixed(&self.id_key).u32(versions.len() as u32);
        for secret in &versions {
            writer.u32(secret.version).fixed(&secret.key);
        }
        writer.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let version = reader.u8()?;
        if version != RING_VERSION {
            return Err(DecodeError::invalid("ledger_secrets", "unknown encoding version"));
        }
        let id_key = reader.array::<32>()?;
        let count = reader.u32()? as usize;
        if count == 0 || count > SECRET_VERSIONS_MAX {
            return Err(DecodeError::invalid("ledger_secrets", "secret count out of range"));
        }
        let mut versions = Vec::with_capacity(count);
        for _ in 0..count {
            let number = reader.u32()?;
            if versions.last().is_some_and(|last: &LedgerSecret| last.version >= number) {
                return Err(DecodeError::invalid("ledger_secrets", "versions must ascend"));
            }
            versions.push(LedgerSecret::from_bytes(number, reader.array::<32>()?));
        }
        reader.finish()?;
        Ok(LedgerSecrets { id_key, versions: std::sync::RwLock::new(versions) })
    }

    /// Wraps the ring for the holder of `recipient`'s X25519 secret: an ephemeral X25519 key
    /// agreement, HKDF-SHA-256 over the shared secret with both public keys, AES-256-GCM.
    /// Layout: version (1) ‖ ephemeral public key (32) ‖ nonce (12) ‖ ciphertext and tag.
    pub fn wrap_for(&self, recipient: &[u8; 32], ephemeral: [u8; 32], nonce: [u8; NONCE_BYTES]) -> Vec<u8> {
        let ephemeral = StaticSecret::from(ephemeral);
        let ephemeral_public = PublicKey::from(&ephemeral);
        let shared = ephemeral.diffie_hellman(&PublicKey::from(*recipient));
        let key = wrap_key(shared.as_bytes(), ephemeral_public.as_bytes(), recipient);
        let cipher = Aes256Gcm::new_from_slice(&key).expect("32-byte key");
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: &self.encode(), aad: recipient })
            .expect("AES-GCM encrypts a ring");
        let mut out = vec![WRAP_VERSION];
        out.extend_from_slice(ephemeral_public.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// [`wrap_for`](Self::wrap_for) with fresh randomness.
    pub fn wrap_for_random(&self, recipient: &[u8; 32]) -> Vec<u8> {
        self.wrap_for(recipient, rand::random(), rand::random())
    }

    /// Unwraps a ring wrapped for `own`'s public key.
    pub fn unwrap(own: &StaticSecret, wrapped: &[u8]) -> Result<Self, SecretError> {
        if wrapped.len() < 1 + 32 + NONCE_BYTES + 16 || wrapped[0] != WRAP_VERSION {
            return Err(SecretError::Malformed("too short or unknown version".into()));
        }
        let own_public = PublicKey::from(own);
        let ephemeral: [u8; 32] = wrapped[1..33].try_into().expect("32 bytes");
        let shared = own.diffie_hellman(&PublicKey::from(ephemeral));
        let key = wrap_key(shared.as_bytes(), &ephemeral, own_public.as_bytes());
        let cipher = Aes256Gcm::new_from_slice(&key).expect("32-byte key");
        let ring = cipher
            .decrypt(
                Nonce::from_slice(&wrapped[33..33 + NONCE_BYTES]),
                Payload { msg: &wrapped[33 + NONCE_BYTES..], aad: own_public.as_bytes() },
            )
            .map_err(|_| SecretError::Tampered)?;
        LedgerSecrets::decode(&ring).map_err(|error| SecretError::Malformed(error.to_string()))
    }
}

fn wrap_key(shared: &[u8; 32], ephemeral_public: &[u8; 32], recipient: &[u8; 32]) -> [u8; 32] {
    let salt = [ephemeral_public.as_slice(), recipient].concat();
    let hkdf = hkdf::Hkdf::<Sha256>::new(Some(&salt), shared);
    let mut key = [0u8; 32];
    hkdf.expand(WRAP_INFO, &mut key).expect("32 bytes is a valid HKDF length");
    key
}

/// A node's X25519 public key for its secret.
pub fn x25519_public(secret: &StaticSecret) -> [u8; 32] {
    PublicKey::from(secret).to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> LedgerSecrets {
        LedgerSecrets::new([1; 32], [2; 32])
    }

    #[test]
    fn a_sealed_value_opens_only_at_its_place_and_unaltered() {
        let secrets = ring();
        let sealed = secrets.seal(b"private/m/x", b"meter-0001 1234 Wh");
        assert!(!sealed.windows(10).any(|window| window == b"meter-0001"));
        assert_eq!(secrets.open(b"private/m/x", &sealed).expect("test"), b"meter-0001 1234 Wh");
        assert_eq!(secrets.open(b"private/m/y", &sealed), Err(SecretError::Tampered));
        let mut altered = sealed.clone();
        *altered.last_mut().expect("test") ^= 1;
        assert_eq!(secrets.open(b"private/m/x", &altered), Err(SecretError::Tampered));
        assert_eq!(secrets.open(b"x", &sealed[..10]), Err(SecretError::Truncated(10)));
        let other = LedgerSecrets::new([1; 32], [3; 32]);
        assert_eq!(other.open(b"private/m/x", &sealed), Err(SecretError::Tampered));
    }

    #[test]
    fn after_a_rotation_old_values_still_open_and_new_ones_use_the_new_version() {
        let secrets = ring();
        let old = secrets.seal(b"a", b"before");
        assert_eq!(secrets.rotate([9; 32]).expect("test"), 2);
        let new = secrets.seal(b"a", b"after");
        assert_eq!(&new[..4], &2u32.to_be_bytes());
        assert_eq!(secrets.open(b"a", &old).expect("test"), b"before");
        assert_eq!(secrets.open(b"a", &new).expect("test"), b"after");
        // A node that missed the rotation names the version it lacks.
        assert_eq!(ring().open(b"a", &new), Err(SecretError::UnknownVersion(2)));
        // Keyed ids do not change with rotation.
        assert_eq!(secrets.keyed_id(b"meter-1"), ring().keyed_id(b"meter-1"));
    }

    #[test]
    fn wrapped_secrets_open_only_with_the_recipients_key() {
        let secrets = ring();
        let node = StaticSecret::from([5; 32]);
        let stranger = StaticSecret::from([6; 32]);
        let wrapped = secrets.wrap_for_random(&x25519_public(&node));
        let opened = LedgerSecrets::unwrap(&node, &wrapped).expect("test");
        assert_eq!(opened.encode(), secrets.encode());
        assert_eq!(LedgerSecrets::unwrap(&stranger, &wrapped).expect_err("test"), SecretError::Tampered);
        let mut altered = wrapped.clone();
        altered[40] ^= 1;
        assert!(LedgerSecrets::unwrap(&node, &altered).is_err());
        assert!(format!("{secrets:?}").find("[2").is_none(), "Debug never shows key material");
    }

    #[test]
    fn a_rotation_payload_names_the_new_secret_without_revealing_it() {
        let leader = ring();
        let follower = ring();
        let drawn = [7; 32];
        let (version, sealed) = leader.wrap_previous(&drawn, [3; 12]);
        assert_eq!(version, 2);
        // The payload is the old secret under the new one: the old ring cannot open it.
        assert!(follower.open(&rotation_aad(2), &sealed).is_err(), "the new secret is not derivable from the old");
        assert_eq!(follower.adopt(version, &sealed, None), Err(SecretError::UnknownVersion(2)));
        assert_eq!(follower.adopt(version, &sealed, Some(&[8; 32])), Err(SecretError::Tampered), "a wrong candidate");
        leader.adopt(version, &sealed, Some(&drawn)).expect("the leader adopts its own draw");
        follower.adopt(version, &sealed, Some(&drawn)).expect("a follower adopts what it was handed");
        assert_eq!(follower.encode(), leader.encode());
        follower.adopt(version, &sealed, None).expect("a replay is idempotent");
        assert!(follower.adopt(3, &sealed, Some(&drawn)).is_err(), "bound to version 2");
        // Another service's ring recognises nothing.
        let stranger = LedgerSecrets::new([1; 32], [9; 32]);
        assert!(!stranger.recognises(version, &drawn, &sealed));
        // Raft traffic stays under version 1, which a node behind on rotations holds.
        let channel = leader.seal_first(b"raft", b"append");
        assert_eq!(ring().open(b"raft", &channel).expect("version 1"), b"append");
        // A node that missed it catches up from a peer's ring.
        let behind = ring();
        assert_eq!(behind.extend_from(&leader), Ok(1));
        assert_eq!(behind.encode(), leader.encode());
        assert!(behind.extend_from(&stranger).is_err());
    }

    #[test]
    fn the_ring_decoder_refuses_what_it_did_not_write() {
        let bytes = ring().encode();
        assert!(LedgerSecrets::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut zero = bytes.clone();
        zero[33..37].copy_from_slice(&0u32.to_be_bytes());
        assert!(LedgerSecrets::decode(&zero).is_err());
        let rotated = ring();
        rotated.rotate([4; 32]).expect("test");
        assert_eq!(LedgerSecrets::decode(&rotated.encode()).expect("test").current().version, 2);
    }
}
