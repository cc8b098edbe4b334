//! The one acceptance rule for Ed25519 (ZIP-215, through `ed25519-consensus`), used by every
//! verifier: gateway, ledger leader and auditor. Batch and single verification agree by
//! specification, so a failed batch is bisected to find exactly the bad items.

use ed25519_consensus::{batch, Signature, VerificationKey, VerificationKeyBytes};
use rand::{CryptoRng, RngCore};
use thiserror::Error;

use crate::reading::{Reading, ReadingDigest, SignedReading};

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SignatureError {
    #[error("public key is not a valid Ed25519 point encoding")]
    MalformedKey,
    #[error("signature does not verify under the meter's key")]
    BadSignature,
}

/// A reading whose signature verified under its meter's registered key. Only this module (and
/// the decoder of committed ledger transactions, whose readings the leader verified) builds one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedReading {
    signed: SignedReading,
}

impl VerifiedReading {
    /// Rebuilds a reading from a committed ledger transaction: the leader verified it before
    /// proposing (DESIGN.md, trust model); `wattle audit` re-verifies offline.
    pub(crate) fn from_committed(signed: SignedReading) -> Self {
        Self { signed }
    }
    pub fn reading(&self) -> &Reading {
        self.signed.reading()
    }
    pub fn signed(&self) -> &SignedReading {
        &self.signed
    }
    pub fn digest(&self) -> ReadingDigest {
        self.signed.digest()
    }
}

/// Verifies one signature over `message` (ZIP-215).
pub fn verify_signature(public_key: &[u8; 32], signature: &[u8; 64], message: &[u8]) -> Result<(), SignatureError> {
    let key = VerificationKey::try_from(*public_key).map_err(|_| SignatureError::MalformedKey)?;
    key.verify(&Signature::from(*signature), message).map_err(|_| SignatureError::BadSignature)
}

/// A reading whose signature was refused, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedReading {
    pub signed: SignedReading,
    pub error: SignatureError,
}

/// Verifies one reading under `public_key`.
pub fn verify(signed: SignedReading, public_key: &[u8; 32]) -> Result<VerifiedReading, Box<RejectedReading>> {
    match verify_signature(public_key, signed.signature(), signed.bytes()) {
        Ok(()) => Ok(VerifiedReading { signed }),
        Err(error) => Err(Box::new(RejectedReading { signed, error })),
    }
}

/// The outcome of one item of a batch, in input order.
pub type BatchOutcome = Result<VerifiedReading, Box<RejectedReading>>;

/// Verifies many readings at once, each under its own key; bisects a failing batch so that one
/// bad signature costs O(log n) extra batch checks, not n single ones.
pub fn verify_batch<R: RngCore + CryptoRng>(items: Vec<(SignedReading, [u8; 32])>, rng: &mut R) -> Vec<BatchOutcome> {
    let mut outcomes: Vec<Option<BatchOutcome>> = (0..items.len()).map(|_| None).collect();
    let indexed: Vec<(usize, SignedReading, [u8; 32])> =
        items.into_iter().enumerate().map(|(index, (signed, key))| (index, signed, key)).collect();
    bisect(indexed, rng, &mut outcomes);
    outcomes.into_iter().map(|outcome| outcome.expect("bisect decides every item")).collect()
}

fn bisect<R: RngCore + CryptoRng>(
    items: Vec<(usize, SignedReading, [u8; 32])>,
    rng: &mut R,
    outcomes: &mut [Option<BatchOutcome>],
) {
    if items.is_empty() {
        return;
    }
    if items.len() == 1 {
        let (index, signed, key) = items.into_iter().next().expect("length checked");
        outcomes[index] = Some(verify(signed, &key));
        return;
    }
    let mut verifier = batch::Verifier::new();
    for (_, signed, key) in &items {
        verifier.queue((VerificationKeyBytes::from(*key), Signature::from(*signed.signature()), signed.bytes()));
    }
    if verifier.verify(&mut *rng).is_ok() {
        for (index, signed, _) in items {
            outcomes[index] = Some(Ok(VerifiedReading { signed }));
        }
        return;
    }
    let mut left = items;
    let right = left.split_off(left.len() / 2);
    bisect(left, rng, outcomes);
    bisect(right, rng, outcomes);
}

/// Whether a public key may be registered for a meter or operator: a valid point that is not of
/// small order. ZIP-215 accepts signatures under small-order keys that verify any message, so the
/// registry, not the signature rule, must keep such keys out.
pub fn is_acceptable_public_key(public_key: &[u8; 32]) -> bool {
    match ed25519_dalek::VerifyingKey::from_bytes(public_key) {
        Ok(key) => !key.is_weak(),
        Err(_) => false,
    }
}
