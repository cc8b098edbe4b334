//! Disaster recovery of the ledger secrets (issue 15): k of n recovery shares.
//!
//! A node that holds the ledger secrets splits them (the whole ring, every version) with Shamir's
//! scheme over GF(256) (`blahaj`; not `sharks`, RUSTSEC-2024-0398) into one share per member, any
//! `threshold` of which recover them and fewer reveal nothing. Each share is signed by the
//! splitting node's key, whose endorsement by the service key it carries, so a member who gets a
//! share, or a recovering operator who collects them, checks it offline against the service's
//! public key alone; a share altered by one bit is detected and named before anything is combined.
//! Every share also carries the SHA-256 of the ring, so a wrong recovery cannot pass unnoticed.
//!
//! Sans-IO: splitting takes the randomness from `blahaj`'s thread RNG through [`split`]'s caller
//! only; combining and checking are pure.

use std::collections::BTreeMap;

use domain::codec::Writer;
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::entry::NodeId;
use crate::secrets::LedgerSecrets;

/// The share file's format tag.
pub const SHARE_FORMAT: &str = "wattle.recovery-share.v1";
/// Most shares one split makes (GF(256) has 255 non-zero evaluation points).
pub const SHARES_MAX: usize = 255;
/// Longest member name a share carries.
pub const MEMBER_NAME_BYTES_MAX: usize = 64;

/// One member's recovery share, as the member keeps it (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryShare {
    pub format: String,
    /// Who this share was made for.
    pub member: String,
    /// The share's index (its Shamir x coordinate, 1..=255).
    pub index: u8,
    /// How many shares recover the secrets.
    pub threshold: u8,
    /// How many shares the split made.
    pub shares: u8,
    /// SHA-256 of the ring the shares recover (hex).
    pub ring_digest: String,
    /// The share's bytes (hex).
    pub share: String,
    /// The node that split the secrets, its key and the service key's endorsement of both (hex;
    /// `HEX:NOT_BEFORE_MS:NOT_AFTER_MS` for an endorsement with a period, whose end does not
    /// matter here: recovery may come long after it).
    pub node_id: NodeId,
    pub node_key: String,
    pub endorsement: String,
    /// The node key's signature over the canonical bytes of everything above (hex).
    pub signature: String,
}

/// Why shares were refused or did not recover the secrets.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecoveryError {
    #[error("a split needs 1 <= threshold <= shares <= {SHARES_MAX}, and one member name each (got threshold {threshold} for {shares} members)")]
    BadSplit { threshold: usize, shares: usize },
    #[error("member name {0:?} is empty or longer than {MEMBER_NAME_BYTES_MAX} bytes")]
    BadMemberName(String),
    #[error("share {index} (member {member:?}) is corrupted: {reason}")]
    CorruptedShare { index: u8, member: String, reason: String },
    #[error("the shares come from different splits: {0}")]
    MixedSplits(String),
    #[error("{given} distinct shares recover nothing: this split needs {threshold}")]
    TooFewShares { given: usize, threshold: u8 },
    #[error("the combined shares do not make the ring they were split from (SHA-256 differs)")]
    WrongRing,
}

fn ring_digest(secrets: &LedgerSecrets) -> [u8; 32] {
    Sha256::digest(secrets.encode()).into()
}

/// The canonical bytes a share's signature covers.
fn signed_bytes(share: &RecoveryShare, ring_digest: &[u8; 32], bytes: &[u8]) -> Vec<u8> {
    let mut writer = Writer::default();
    writer
        .fixed(SHARE_FORMAT.as_bytes())
        .u8(0)
        .u32(share.member.len() as u32)
        .fixed(share.member.as_bytes())
        .u8(share.index)
        .u8(share.threshold)
        .u8(share.shares)
        .fixed(ring_digest)
        .u32(bytes.len() as u32)
        .fixed(bytes)
        .u64(share.node_id);
    writer.finish()
}

/// Splits `secrets` into one share per member, any `threshold` of which recover them; each
/// signed by `node_key` (node `node_id`, endorsed by the service key with `endorsement`).
pub fn split(
    secrets: &LedgerSecrets,
    threshold: usize,
    members: &[String],
    (node_id, node_key, endorsement): (NodeId, &SigningKey, (&[u8; 64], Option<domain::receipt::Validity>)),
) -> Result<Vec<RecoveryShare>, RecoveryError> {
    if threshold == 0 || threshold > members.len() || members.len() > SHARES_MAX {
        return Err(RecoveryError::BadSplit { threshold, shares: members.len() });
    }
    if let Some(bad) = members.iter().find(|name| name.is_empty() || name.len() > MEMBER_NAME_BYTES_MAX) {
        return Err(RecoveryError::BadMemberName(bad.clone()));
    }
    let digest = ring_digest(secrets);
    let ring = secrets.encode();
    let dealer = blahaj::Sharks(threshold as u8).dealer(&ring);
    Ok(dealer
        .zip(members)
        .map(|(share, member)| {
            let bytes = Vec::from(&share);
            let mut share = RecoveryShare {
                format: SHARE_FORMAT.into(),
                member: member.clone(),
                index: bytes[0],
                threshold: threshold as u8,
                shares: members.len() as u8,
                ring_digest: hex::encode(digest),
                share: hex::encode(&bytes),
                node_id,
                node_key: hex::encode(node_key.verifying_key().to_bytes()),
                endorsement: crate::endorsements::format_endorsement(endorsement.0, endorsement.1),
                signature: String::new(),
            };
            share.signature = hex::encode(node_key.sign(&signed_bytes(&share, &digest, &bytes)).to_bytes());
            share
        })
        .collect())
}

fn hex_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    hex::decode(text).ok()?.try_into().ok()
}

/// Checks one share against the service's public key; its ring digest and bytes.
pub fn check(share: &RecoveryShare, service_key: &[u8; 32]) -> Result<([u8; 32], Vec<u8>), RecoveryError> {
    let corrupted = |reason: &str| RecoveryError::CorruptedShare {
        index: share.index,
        member: share.member.clone(),
        reason: reason.to_string(),
    };
    if share.format != SHARE_FORMAT {
        return Err(corrupted(&format!("format {:?} is not {SHARE_FORMAT}", share.format)));
    }
    let digest: [u8; 32] =
        hex_array(&share.ring_digest).ok_or_else(|| corrupted("ring digest is not 32 bytes of hex"))?;
    let bytes = hex::decode(&share.share).map_err(|_| corrupted("share is not hex"))?;
    let node_key: [u8; 32] = hex_array(&share.node_key).ok_or_else(|| corrupted("node key is not 32 bytes of hex"))?;
    let (endorsement, validity) = crate::endorsements::parse_endorsement(&share.endorsement)
        .map_err(|reason| corrupted(&format!("endorsement: {reason}")))?;
    let signature: [u8; 64] =
        hex_array(&share.signature).ok_or_else(|| corrupted("signature is not 64 bytes of hex"))?;
    domain::verify::verify_signature(
        service_key,
        &endorsement,
        &domain::receipt::endorsement_message_for(share.node_id, &node_key, validity),
    )
    .map_err(|_| corrupted("the splitting node's key is not endorsed by this service key"))?;
    domain::verify::verify_signature(&node_key, &signature, &signed_bytes(share, &digest, &bytes))
        .map_err(|_| corrupted("its signature does not cover its contents (altered after the split)"))?;
    if bytes.first() != Some(&share.index) || share.threshold == 0 || share.threshold > share.shares {
        return Err(corrupted("its index or threshold is inconsistent"));
    }
    Ok((digest, bytes))
}

/// Recovers the ledger secrets from `shares`: every share checked first (the first corrupted
/// one is named), all from one split, at least its threshold of distinct ones.
pub fn combine(shares: &[RecoveryShare], service_key: &[u8; 32]) -> Result<LedgerSecrets, RecoveryError> {
    let mut checked: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
    let mut split: Option<([u8; 32], u8, u8, NodeId)> = None;
    for share in shares {
        let (digest, bytes) = check(share, service_key)?;
        let this = (digest, share.threshold, share.shares, share.node_id);
        match split {
            None => split = Some(this),
            Some(first) if first != this => {
                return Err(RecoveryError::MixedSplits(format!(
                    "share {} (member {:?}) belongs to another split than share {}",
                    share.index,
                    share.member,
                    checked.keys().next().copied().unwrap_or_default()
                )))
            }
            Some(_) => {}
        }
        checked.insert(share.index, bytes);
    }
    let Some((digest, threshold, _, _)) = split else {
        return Err(RecoveryError::TooFewShares { given: 0, threshold: 1 });
    };
    if checked.len() < threshold as usize {
        return Err(RecoveryError::TooFewShares { given: checked.len(), threshold });
    }
    let parsed: Vec<blahaj::Share> = checked
        .values()
        .map(|bytes| blahaj::Share::try_from(bytes.as_slice()).map_err(|_| RecoveryError::WrongRing))
        .collect::<Result<_, _>>()?;
    let ring = blahaj::Sharks(threshold).recover(&parsed).map_err(|_| RecoveryError::WrongRing)?;
    let secrets = LedgerSecrets::decode(&ring).map_err(|_| RecoveryError::WrongRing)?;
    if ring_digest(&secrets) != digest {
        return Err(RecoveryError::WrongRing);
    }
    Ok(secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (LedgerSecrets, SigningKey, [u8; 32], Vec<RecoveryShare>) {
        let secrets = LedgerSecrets::generate();
        let service = SigningKey::from_bytes(&[1; 32]);
        let node = SigningKey::from_bytes(&[2; 32]);
        let endorsement = domain::receipt::endorse(&service, 1, &node.verifying_key().to_bytes());
        let members: Vec<String> = ["supplier", "grid", "regulator"].map(String::from).to_vec();
        let shares = split(&secrets, 2, &members, (1, &node, (&endorsement, None))).expect("splits");
        (secrets, service, [0; 32], shares)
    }

    #[test]
    fn a_share_made_under_an_endorsement_with_a_period_checks_against_that_period() {
        let secrets = LedgerSecrets::generate();
        let service = SigningKey::from_bytes(&[1; 32]);
        let node = SigningKey::from_bytes(&[2; 32]);
        let period = domain::receipt::Validity { not_before: 10, not_after: 20 };
        let endorsement = domain::receipt::endorse_for(&service, 1, &node.verifying_key().to_bytes(), Some(period));
        let members: Vec<String> = ["supplier", "grid"].map(String::from).to_vec();
        let shares = split(&secrets, 2, &members, (1, &node, (&endorsement, Some(period)))).expect("splits");
        assert!(shares[0].endorsement.ends_with(":10:20"), "{}", shares[0].endorsement);
        let service_key = service.verifying_key().to_bytes();
        assert_eq!(combine(&shares, &service_key).expect("recovers").encode(), secrets.encode());
        let mut stretched = shares.clone();
        stretched[1].endorsement = stretched[1].endorsement.replace(":10:20", ":10:30");
        assert!(
            matches!(combine(&stretched, &service_key), Err(RecoveryError::CorruptedShare { index, .. }) if index == shares[1].index)
        );
    }

    #[test]
    fn any_threshold_of_shares_recover_the_ring_and_fewer_recover_nothing() {
        let (secrets, service, _, shares) = setup();
        let service_key = service.verifying_key().to_bytes();
        assert_eq!(shares.len(), 3);
        for pair in [[0, 1], [0, 2], [1, 2]] {
            let chosen: Vec<_> = pair.iter().map(|&i| shares[i].clone()).collect();
            assert_eq!(combine(&chosen, &service_key).expect("recovers").encode(), secrets.encode());
        }
        assert_eq!(
            combine(&shares[..1], &service_key).map(|_| ()),
            Err(RecoveryError::TooFewShares { given: 1, threshold: 2 })
        );
        // The same share twice is still one share.
        let twice = vec![shares[0].clone(), shares[0].clone()];
        assert!(matches!(combine(&twice, &service_key), Err(RecoveryError::TooFewShares { given: 1, .. })));
    }

    #[test]
    fn a_corrupted_share_is_named_and_a_stranger_service_key_refused() {
        let (_, service, _, shares) = setup();
        let service_key = service.verifying_key().to_bytes();
        let mut altered = shares[1].clone();
        let mut bytes = hex::decode(&altered.share).expect("hex");
        bytes[5] ^= 0x01;
        altered.share = hex::encode(bytes);
        let error = combine(&[shares[0].clone(), altered], &service_key).expect_err("refused");
        assert!(
            matches!(&error, RecoveryError::CorruptedShare { index, member, .. } if *index == shares[1].index && member == "grid"),
            "{error}"
        );
        let stranger = SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes();
        assert!(matches!(combine(&shares[..2], &stranger), Err(RecoveryError::CorruptedShare { .. })));
    }

    #[test]
    fn shares_of_two_splits_do_not_mix_and_bad_splits_are_refused() {
        let (secrets, service, _, first) = setup();
        let node = SigningKey::from_bytes(&[2; 32]);
        let endorsement = domain::receipt::endorse(&service, 1, &node.verifying_key().to_bytes());
        let members: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let other = split(&LedgerSecrets::generate(), 2, &members, (1, &node, (&endorsement, None))).expect("splits");
        let service_key = service.verifying_key().to_bytes();
        assert!(matches!(
            combine(&[first[0].clone(), other[1].clone()], &service_key),
            Err(RecoveryError::MixedSplits(_))
        ));
        assert!(split(&secrets, 0, &members, (1, &node, (&endorsement, None))).is_err());
        assert!(split(&secrets, 4, &members, (1, &node, (&endorsement, None))).is_err());
        assert!(split(&secrets, 2, &["".into(), "b".into()], (1, &node, (&endorsement, None))).is_err());
    }
}
