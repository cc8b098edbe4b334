//! Receipts: proof, checkable offline with only the service's public key, that a transaction is in
//! the ledger at a position, with the claims it settled. `docs/receipts.md` is the specification.
//!
//! A receipt verifies when:
//! 1. leaf = SHA-256(0x00 ‖ tx_id ‖ transaction_digest ‖ claims_digest) (`merkle::leaf_hash`);
//! 2. folding `path` into the leaf at `leaf_index` of a tree of `tree_size` gives `root`;
//! 3. `signature` is the node key's Ed25519 signature (ZIP-215) over
//!    "wattle.root\0" ‖ u64 tree_size ‖ root;
//! 4. `endorsement` is the service key's signature over
//!    "wattle.endorse\0" ‖ u64 node_id ‖ node_key;
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
/// Tag and version opening a receipt's canonical bytes.
pub const RECEIPT_TAG: &[u8; 15] = b"wattle.receipt\0";
pub const RECEIPT_VERSION: u8 = 1;
/// A path longer than this cannot belong to a tree of at most 2^64 leaves.
pub const PATH_LENGTH_MAX: usize = 64;

/// The message a node signs: the size and root of the tree.
pub fn root_message(tree_size: u64, root: &Hash) -> Vec<u8> {
    let mut writer = Writer::with_capacity(52);
    writer.fixed(ROOT_TAG).u64(tree_size).fixed(root);
    writer.finish()
}

/// The message the service key signs to endorse a node's key.
pub fn endorsement_message(node_id: u64, node_key: &[u8; 32]) -> Vec<u8> {
    let mut writer = Writer::with_capacity(55);
    writer.fixed(ENDORSE_TAG).u64(node_id).fixed(node_key);
    writer.finish()
}

/// The service key's endorsement of a node key.
pub fn endorse(service_key: &SigningKey, node_id: u64, node_key: &[u8; 32]) -> [u8; 64] {
    service_key.sign(&endorsement_message(node_id, node_key)).to_bytes()
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
        let mut writer = Writer::with_capacity(300 + 32 * self.path.len());
        writer
            .fixed(RECEIPT_TAG)
            .u8(RECEIPT_VERSION)
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
        writer.finish()
    }

    /// Decodes [`Receipt::encode`]; anything else (other tags, versions, trailing bytes) is refused.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        if reader.take(RECEIPT_TAG.len())? != RECEIPT_TAG {
            return Err(DecodeError::BadTag);
        }
        let version = reader.u8()?;
        if version != RECEIPT_VERSION {
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
        let receipt = Receipt {
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
        };
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
        verify_signature(&self.node_key, &self.signature, &root_message(self.tree_size, &self.root))
            .map_err(|_| ReceiptError::BadRootSignature)?;
        verify_signature(service_key, &self.endorsement, &endorsement_message(self.node_id, &self.node_key))
            .map_err(|_| ReceiptError::BadEndorsement)?;
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
        };
        (receipt, service.verifying_key().to_bytes())
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
