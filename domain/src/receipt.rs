//! Receipts: proof, checkable offline with only the service's public key, that a transaction is in
//! the ledger at a position, with the claims it settled. `docs/receipts.md` is the specification.
//!
//! A receipt verifies when:
//! 1. leaf = SHA-256(0x00 ‖ tx_id ‖ transaction_digest ‖ claims_digest) (`merkle::leaf_hash`);
//! 2. folding `path` into the leaf at `leaf_index` of a tree of `tree_size` gives `root`;
//! 3. `signature` is the node key's Ed25519 signature (ZIP-215) over
//!    "wattle.root\0" ‖ u64 tree_size ‖ root, or, when the receipt names the time the root was
//!    signed (`signed_at`, version 2), "wattle.root.v2\0" ‖ u64 tree_size ‖ root ‖ i64 signed_at;
//! 4. `endorsement` is the service key's signature over
//!    "wattle.endorse\0" ‖ u64 node_id ‖ node_key, or, when the endorsement has a validity period
//!    (version 2), "wattle.endorse.v2\0" ‖ u64 node_id ‖ node_key ‖ i64 not_before ‖ i64 not_after,
//!    and then the root was signed inside that period: not_before ≤ signed_at ≤ not_after;
//! 5. if the claims document is given: SHA-256(document) = claims_digest.
//!
//! Every field is bound by one of these checks, so changing any value makes verification fail.

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::TxId;
use crate::merkle::{self, Hash};
use crate::verify::verify_signature;

/// Domain tag of the message a node signs over a Merkle root.
pub const ROOT_TAG: &[u8; 12] = b"wattle.root\0";
/// Domain tag of the message the service key signs to endorse a node key.
pub const ENDORSE_TAG: &[u8; 15] = b"wattle.endorse\0";
/// Domain tag of the message a node signs over a Merkle root and the time it signed it.
pub const ROOT_AT_TAG: &[u8; 15] = b"wattle.root.v2\0";
/// Domain tag of the message the service key signs to endorse a node key for a period.
pub const ENDORSE_PERIOD_TAG: &[u8; 18] = b"wattle.endorse.v2\0";
/// Tag and version opening a receipt's canonical bytes.
pub const RECEIPT_TAG: &[u8; 15] = b"wattle.receipt\0";
/// Version of a receipt with neither a signing time nor an endorsement period (byte for byte
/// what every receipt was before they existed).
pub const RECEIPT_VERSION: u8 = 1;
/// Version of a receipt naming its signing time or its endorsement's period.
pub const RECEIPT_VERSION_TIMED: u8 = 2;
/// Flags of a version-2 receipt: which optional parts follow.
const FLAG_SIGNED_AT: u8 = 1;
const FLAG_VALIDITY: u8 = 2;
/// A path longer than this cannot belong to a tree of at most 2^64 leaves.
pub const PATH_LENGTH_MAX: usize = 64;

/// The period an endorsement holds, in milliseconds since the Unix epoch on the ledger's clock,
/// both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

impl Validity {
    /// Whether `at` lies inside the period.
    pub fn covers(&self, at: i64) -> bool {
        self.not_before <= at && at <= self.not_after
    }

    /// A period that ends no earlier than it begins.
    pub fn is_ordered(&self) -> bool {
        self.not_before <= self.not_after
    }
}

/// The message a node signs: the size and root of the tree.
pub fn root_message(tree_size: u64, root: &Hash) -> Vec<u8> {
    root_message_at(tree_size, root, None)
}

/// The message a node signs over the size and root of the tree, with the time it signs (the
/// signature transaction's time) when given.
pub fn root_message_at(tree_size: u64, root: &Hash, signed_at: Option<i64>) -> Vec<u8> {
    let mut writer = Writer::with_capacity(63);
    match signed_at {
        None => writer.fixed(ROOT_TAG).u64(tree_size).fixed(root),
        Some(at) => writer.fixed(ROOT_AT_TAG).u64(tree_size).fixed(root).i64(at),
    };
    writer.finish()
}

/// The message the service key signs to endorse a node's key.
pub fn endorsement_message(node_id: u64, node_key: &[u8; 32]) -> Vec<u8> {
    endorsement_message_for(node_id, node_key, None)
}

/// The message the service key signs to endorse a node's key, for a period when given.
pub fn endorsement_message_for(node_id: u64, node_key: &[u8; 32], validity: Option<Validity>) -> Vec<u8> {
    let mut writer = Writer::with_capacity(74);
    match validity {
        None => writer.fixed(ENDORSE_TAG).u64(node_id).fixed(node_key),
        Some(period) => {
            writer.fixed(ENDORSE_PERIOD_TAG).u64(node_id).fixed(node_key).i64(period.not_before).i64(period.not_after)
        }
    };
    writer.finish()
}

/// The service key's endorsement of a node key.
pub fn endorse(service_key: &SigningKey, node_id: u64, node_key: &[u8; 32]) -> [u8; 64] {
    endorse_for(service_key, node_id, node_key, None)
}

/// The service key's endorsement of a node key, for a period when given.
pub fn endorse_for(
    service_key: &SigningKey,
    node_id: u64,
    node_key: &[u8; 32],
    validity: Option<Validity>,
) -> [u8; 64] {
    service_key.sign(&endorsement_message_for(node_id, node_key, validity)).to_bytes()
}

/// A receipt. Field order is the canonical encoding's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    #[serde(serialize_with = "hex_bytes")]
    pub tx_id: [u8; 16],
    pub leaf_index: u64,
    #[serde(serialize_with = "hex_bytes")]
    pub transaction_digest: Hash,
    #[serde(serialize_with = "hex_bytes")]
    pub claims_digest: Hash,
    pub tree_size: u64,
    #[serde(serialize_with = "hex_list")]
    pub path: Vec<Hash>,
    #[serde(serialize_with = "hex_bytes")]
    pub root: Hash,
    #[serde(serialize_with = "hex_bytes")]
    pub signature: [u8; 64],
    pub node_id: u64,
    #[serde(serialize_with = "hex_bytes")]
    pub node_key: [u8; 32],
    #[serde(serialize_with = "hex_bytes")]
    pub endorsement: [u8; 64],
    /// When the root was signed (ms since the Unix epoch, the signing leader's clock), if the
    /// signature covers it. Receipt version 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_at: Option<i64>,
    /// The endorsement's validity period, if it has one. Receipt version 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endorsement_validity: Option<Validity>,
}

fn hex_bytes<S: serde::Serializer>(bytes: &impl AsRef<[u8]>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&hex::encode(bytes))
}
fn hex_list<S: serde::Serializer>(list: &[Hash], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(list.iter().map(hex::encode))
}

/// Why a receipt does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("the Merkle path does not lead from the leaf to the signed root")]
    PathMismatch,
    #[error("the root signature does not verify under the node key")]
    BadRootSignature,
    #[error("the node key is not endorsed by the given service key")]
    BadEndorsement,
    #[error(
        "the root was signed at {signed_at} ms, outside the node key's endorsement ({not_before}..={not_after} ms): \
         the key had expired or was not yet endorsed"
    )]
    OutsideEndorsement { signed_at: i64, not_before: i64, not_after: i64 },
    #[error("the endorsement has a validity period but the receipt names no signing time to check it against")]
    UntimedSignature,
    #[error("the claims document's digest is {actual}, the receipt binds {bound}")]
    ClaimsMismatch { actual: String, bound: String },
}

/// The JSON form `GET /v1/receipts/{tx_id}?format=json` serves: the same fields, byte strings
/// as lower-case hex of their exact length, integers as JSON numbers. Every field is required;
/// unknown and duplicate fields are refused (docs/receipts.md, "The JSON form").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiptJson {
    tx_id: String,
    leaf_index: u64,
    transaction_digest: String,
    claims_digest: String,
    tree_size: u64,
    path: Vec<String>,
    root: String,
    signature: String,
    node_id: u64,
    node_key: String,
    endorsement: String,
    #[serde(default)]
    signed_at: Option<i64>,
    #[serde(default)]
    endorsement_validity: Option<Validity>,
}

/// Why a JSON receipt is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptJsonError {
    #[error("not a receipt's JSON form: {0}")]
    Shape(String),
    #[error("{field} must be {bytes} bytes as lower-case hex")]
    Hex { field: &'static str, bytes: usize },
    #[error("path has {length} hashes, at most {PATH_LENGTH_MAX}")]
    PathTooLong { length: usize },
}

fn lower_hex<const N: usize>(field: &'static str, text: &str) -> Result<[u8; N], ReceiptJsonError> {
    let error = ReceiptJsonError::Hex { field, bytes: N };
    if text.len() != 2 * N || !text.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(error);
    }
    let mut bytes = [0; N];
    hex::decode_to_slice(text, &mut bytes).map_err(|_| error)?;
    Ok(bytes)
}

impl Receipt {
    /// Decodes the JSON form (strict: see [`ReceiptJson`]). It carries the same values as the
    /// canonical bytes, so it verifies exactly when they do.
    pub fn from_json(text: &[u8]) -> Result<Self, ReceiptJsonError> {
        let json: ReceiptJson =
            serde_json::from_slice(text).map_err(|error| ReceiptJsonError::Shape(error.to_string()))?;
        if json.path.len() > PATH_LENGTH_MAX {
            return Err(ReceiptJsonError::PathTooLong { length: json.path.len() });
        }
        Ok(Receipt {
            tx_id: lower_hex("tx_id", &json.tx_id)?,
            leaf_index: json.leaf_index,
            transaction_digest: lower_hex("transaction_digest", &json.transaction_digest)?,
            claims_digest: lower_hex("claims_digest", &json.claims_digest)?,
            tree_size: json.tree_size,
            path: json.path.iter().map(|hash| lower_hex("path", hash)).collect::<Result<_, _>>()?,
            root: lower_hex("root", &json.root)?,
            signature: lower_hex("signature", &json.signature)?,
            node_id: json.node_id,
            node_key: lower_hex("node_key", &json.node_key)?,
            endorsement: lower_hex("endorsement", &json.endorsement)?,
            signed_at: json.signed_at,
            endorsement_validity: json.endorsement_validity,
        })
    }

    /// The JSON form, as the API serves it.
    pub fn to_json(&self) -> String {
        // Serializing plain strings and integers into a String cannot fail.
        serde_json::to_string(self).expect("a receipt serializes")
    }

    pub fn tx_id(&self) -> TxId {
        TxId(self.tx_id)
    }

    /// The canonical bytes: the only encoding of a receipt.
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.path.len() <= PATH_LENGTH_MAX, "path longer than PATH_LENGTH_MAX");
        let mut writer = Writer::with_capacity(320 + 32 * self.path.len());
        let timed = self.signed_at.is_some() || self.endorsement_validity.is_some();
        writer
            .fixed(RECEIPT_TAG)
            .u8(if timed { RECEIPT_VERSION_TIMED } else { RECEIPT_VERSION })
            .fixed(&self.tx_id)
            .u64(self.leaf_index)
            .fixed(&self.transaction_digest)
            .fixed(&self.claims_digest)
            .u64(self.tree_size)
            .u8(self.path.len() as u8);
        for hash in &self.path {
            writer.fixed(hash);
        }
        writer
            .fixed(&self.root)
            .fixed(&self.signature)
            .u64(self.node_id)
            .fixed(&self.node_key)
            .fixed(&self.endorsement);
        if timed {
            let flags = if self.signed_at.is_some() { FLAG_SIGNED_AT } else { 0 }
                | if self.endorsement_validity.is_some() { FLAG_VALIDITY } else { 0 };
            writer.u8(flags);
            if let Some(at) = self.signed_at {
                writer.i64(at);
            }
            if let Some(period) = self.endorsement_validity {
                writer.i64(period.not_before).i64(period.not_after);
            }
        }
        writer.finish()
    }

    /// Decodes [`Receipt::encode`]; anything else (other tags, versions, trailing bytes) is refused.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        if reader.take(RECEIPT_TAG.len())? != RECEIPT_TAG {
            return Err(DecodeError::BadTag);
        }
        let version = reader.u8()?;
        if version != RECEIPT_VERSION && version != RECEIPT_VERSION_TIMED {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let tx_id = reader.array()?;
        let leaf_index = reader.u64()?;
        let transaction_digest = reader.array()?;
        let claims_digest = reader.array()?;
        let tree_size = reader.u64()?;
        let length = usize::from(reader.u8()?);
        if length > PATH_LENGTH_MAX {
            return Err(DecodeError::TooLarge { size: length, limit: PATH_LENGTH_MAX });
        }
        let path = (0..length).map(|_| reader.array()).collect::<Result<Vec<Hash>, _>>()?;
        let mut receipt = Receipt {
            tx_id,
            leaf_index,
            transaction_digest,
            claims_digest,
            tree_size,
            path,
            root: reader.array()?,
            signature: reader.array()?,
            node_id: reader.u64()?,
            node_key: reader.array()?,
            endorsement: reader.array()?,
            signed_at: None,
            endorsement_validity: None,
        };
        if version == RECEIPT_VERSION_TIMED {
            let flags = reader.u8()?;
            if flags == 0 || flags & !(FLAG_SIGNED_AT | FLAG_VALIDITY) != 0 {
                return Err(DecodeError::invalid(
                    "flags",
                    "a version-2 receipt names a signing time, a period or both",
                ));
            }
            if flags & FLAG_SIGNED_AT != 0 {
                receipt.signed_at = Some(reader.i64()?);
            }
            if flags & FLAG_VALIDITY != 0 {
                receipt.endorsement_validity = Some(Validity { not_before: reader.i64()?, not_after: reader.i64()? });
            }
        }
        reader.finish()?;
        Ok(receipt)
    }

    /// The leaf this receipt is about.
    pub fn leaf(&self) -> Hash {
        merkle::leaf_hash(&self.tx_id, &self.transaction_digest, &self.claims_digest)
    }

    /// Verifies the receipt against the service's public key and, if given, the claims document.
    pub fn verify(&self, service_key: &[u8; 32], claims_document: Option<&[u8]>) -> Result<(), ReceiptError> {
        let folded = merkle::root_from_proof(&self.leaf(), self.leaf_index, self.tree_size, &self.path);
        if folded != Some(self.root) {
            return Err(ReceiptError::PathMismatch);
        }
        verify_signature(&self.node_key, &self.signature, &root_message_at(self.tree_size, &self.root, self.signed_at))
            .map_err(|_| ReceiptError::BadRootSignature)?;
        let endorsed = endorsement_message_for(self.node_id, &self.node_key, self.endorsement_validity);
        verify_signature(service_key, &self.endorsement, &endorsed).map_err(|_| ReceiptError::BadEndorsement)?;
        if let Some(period) = self.endorsement_validity {
            let signed_at = self.signed_at.ok_or(ReceiptError::UntimedSignature)?;
            if !period.covers(signed_at) {
                return Err(ReceiptError::OutsideEndorsement {
                    signed_at,
                    not_before: period.not_before,
                    not_after: period.not_after,
                });
            }
        }
        if let Some(document) = claims_document {
            let actual = merkle::sha256(document);
            if actual != self.claims_digest {
                return Err(ReceiptError::ClaimsMismatch {
                    actual: hex::encode(actual),
                    bound: hex::encode(self.claims_digest),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A receipt for leaf `index` of a tree of `size` leaves, signed and endorsed.
    pub(crate) fn example(size: u64, index: u64, claims: &[u8]) -> (Receipt, [u8; 32]) {
        let service = SigningKey::from_bytes(&[9; 32]);
        let node = SigningKey::from_bytes(&[8; 32]);
        let claims_digest = merkle::sha256(claims);
        let leaves: Vec<Hash> = (0..size)
            .map(|leaf| {
                let digest = merkle::sha256(&leaf.to_be_bytes());
                let tx_id = [leaf as u8; 16];
                merkle::leaf_hash(&tx_id, &digest, if leaf == index { &claims_digest } else { &merkle::NO_CLAIMS })
            })
            .collect();
        let root = merkle::root(&leaves);
        let node_key = node.verifying_key().to_bytes();
        let receipt = Receipt {
            tx_id: [index as u8; 16],
            leaf_index: index,
            transaction_digest: merkle::sha256(&index.to_be_bytes()),
            claims_digest,
            tree_size: size,
            path: merkle::inclusion_proof(&leaves, index),
            root,
            signature: node.sign(&root_message(size, &root)).to_bytes(),
            node_id: 2,
            node_key,
            endorsement: endorse(&service, 2, &node_key),
            signed_at: None,
            endorsement_validity: None,
        };
        (receipt, service.verifying_key().to_bytes())
    }

    /// [`example`] re-signed at `signed_at` under an endorsement for `validity`.
    pub(crate) fn timed(signed_at: i64, validity: Validity) -> (Receipt, [u8; 32]) {
        let (mut receipt, service) = example(13, 6, b"claims");
        let node = SigningKey::from_bytes(&[8; 32]);
        receipt.signature = node.sign(&root_message_at(13, &receipt.root, Some(signed_at))).to_bytes();
        receipt.signed_at = Some(signed_at);
        receipt.endorsement = endorse_for(&SigningKey::from_bytes(&[9; 32]), 2, &receipt.node_key, Some(validity));
        receipt.endorsement_validity = Some(validity);
        (receipt, service)
    }

    #[test]
    fn a_timed_receipt_verifies_only_inside_its_endorsement() {
        let period = Validity { not_before: 1_000, not_after: 2_000 };
        for at in [1_000, 1_500, 2_000] {
            let (receipt, service) = timed(at, period);
            assert_eq!(receipt.verify(&service, Some(b"claims")), Ok(()), "signed at {at}");
            let bytes = receipt.encode();
            assert_eq!(bytes[RECEIPT_TAG.len()], RECEIPT_VERSION_TIMED);
            assert_eq!(Receipt::decode(&bytes), Ok(receipt.clone()));
            assert_eq!(Receipt::from_json(receipt.to_json().as_bytes()), Ok(receipt));
        }
        for at in [999, 2_001] {
            let (receipt, service) = timed(at, period);
            assert_eq!(
                receipt.verify(&service, None),
                Err(ReceiptError::OutsideEndorsement { signed_at: at, not_before: 1_000, not_after: 2_000 }),
                "signed at {at}: expired or not yet endorsed"
            );
        }
        // Moving the time into the period breaks the root signature; widening the period breaks
        // the endorsement; dropping the time leaves the period unchecked and is refused.
        let (mut moved, service) = timed(2_500, period);
        moved.signed_at = Some(1_500);
        assert_eq!(moved.verify(&service, None), Err(ReceiptError::BadRootSignature));
        let (mut widened, _) = timed(2_500, period);
        widened.endorsement_validity = Some(Validity { not_before: 1_000, not_after: 3_000 });
        assert_eq!(widened.verify(&service, None), Err(ReceiptError::BadEndorsement));
        let (mut untimed, _) = timed(1_500, period);
        untimed.signed_at = None;
        untimed.signature = SigningKey::from_bytes(&[8; 32]).sign(&root_message(13, &untimed.root)).to_bytes();
        assert_eq!(untimed.verify(&service, None), Err(ReceiptError::UntimedSignature));
        // A period-less (version 1) endorsement with a timed signature: no expiry to check.
        let (mut open, _) = timed(5_000, period);
        open.endorsement_validity = None;
        open.endorsement = endorse(&SigningKey::from_bytes(&[9; 32]), 2, &open.node_key);
        assert_eq!(open.verify(&service, None), Ok(()));
        assert_eq!(Receipt::decode(&open.encode()), Ok(open));
    }

    #[test]
    fn version_2_flags_are_strict() {
        let (receipt, _) = timed(1_500, Validity { not_before: 1_000, not_after: 2_000 });
        let mut bytes = receipt.encode();
        let flags_at = bytes.len() - 25;
        assert_eq!(bytes[flags_at], FLAG_SIGNED_AT | FLAG_VALIDITY);
        bytes[flags_at] = 4;
        assert!(Receipt::decode(&bytes).is_err());
        // Version 1 with the version-2 tail is refused as trailing bytes.
        let mut bytes = receipt.encode();
        bytes[RECEIPT_TAG.len()] = RECEIPT_VERSION;
        assert!(Receipt::decode(&bytes).is_err());
    }

    #[test]
    fn a_receipt_verifies_and_round_trips() {
        let (receipt, service) = example(13, 6, b"claims");
        assert_eq!(receipt.verify(&service, Some(b"claims")), Ok(()));
        assert!(matches!(receipt.verify(&service, Some(b"claimz")), Err(ReceiptError::ClaimsMismatch { .. })));
        assert_eq!(receipt.verify(&[1; 32], None), Err(ReceiptError::BadEndorsement));
        let bytes = receipt.encode();
        assert_eq!(Receipt::decode(&bytes), Ok(receipt));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Receipt::decode(&longer).is_err());
    }

    #[test]
    fn the_json_form_round_trips_and_is_strict() {
        let (receipt, service) = example(13, 6, b"claims");
        let json = receipt.to_json();
        assert_eq!(Receipt::from_json(json.as_bytes()), Ok(receipt.clone()));
        assert_eq!(Receipt::from_json(json.as_bytes()).map(|decoded| decoded.verify(&service, None)), Ok(Ok(())));
        let value: serde_json::Value = serde_json::from_str(&json).expect("json");
        let upper =
            json.replace(value["root"].as_str().expect("root"), &value["root"].as_str().expect("root").to_uppercase());
        assert_eq!(Receipt::from_json(upper.as_bytes()), Err(ReceiptJsonError::Hex { field: "root", bytes: 32 }));
        let missing = json.replacen("\"node_id\":2,", "", 1);
        assert!(matches!(Receipt::from_json(missing.as_bytes()), Err(ReceiptJsonError::Shape(_))), "{missing}");
        let duplicate = json.replacen("{", "{\"node_id\":3,", 1);
        assert!(matches!(Receipt::from_json(duplicate.as_bytes()), Err(ReceiptJsonError::Shape(_))), "{duplicate}");
        let unknown = json.replacen("{", "{\"extra\":1,", 1);
        assert!(matches!(Receipt::from_json(unknown.as_bytes()), Err(ReceiptJsonError::Shape(_))));
        let short = json.replace(value["node_key"].as_str().expect("key"), "abcd");
        assert_eq!(Receipt::from_json(short.as_bytes()), Err(ReceiptJsonError::Hex { field: "node_key", bytes: 32 }));
    }

    proptest! {
        /// Changing any bit of the canonical bytes makes the receipt undecodable or unverifiable.
        #[test]
        fn any_changed_field_fails(size in 1u64..100, pick in any::<u64>(), position in any::<usize>(), bit in 0u8..8) {
            let index = pick % size;
            let (receipt, service) = example(size, index, b"the claims document");
            let mut bytes = receipt.encode();
            let position = position % bytes.len();
            bytes[position] ^= 1 << bit;
            if let Ok(changed) = Receipt::decode(&bytes) {
                prop_assert!(changed.verify(&service, Some(b"the claims document")).is_err(),
                    "flipping bit {} of byte {} went unnoticed", bit, position);
            }
        }
    }
}
