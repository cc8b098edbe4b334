//! Building receipts (`docs/receipts.md`) from a node's history and signature records.

use domain::merkle::{self, Hash, Subtree};
use domain::receipt::Receipt;
use openraft::EntryPayload;

use crate::state::{self, SignatureRecord, Table};
use crate::store::Store;

/// Why no receipt can be served (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptUnavailable {
    /// No committed signature covers the transaction yet.
    NotSigned,
    /// The signing node's key has no endorsement on the ledger that held when it signed.
    NotEndorsed {
        node_id: u64,
    },
    Storage(String),
}

fn storage(error: impl std::fmt::Display) -> ReceiptUnavailable {
    ReceiptUnavailable::Storage(error.to_string())
}

/// The first committed signature whose marker is at or after `index`.
pub fn signature_covering(store: &Store, index: u64) -> Option<SignatureRecord> {
    store
        .first_from(Table::Public, &state::key_signature(index), state::SIGNATURE_PREFIX)
        .map(|(_, value)| SignatureRecord::decode(&value).expect("committed signature records decode"))
}

/// The root of a perfect subtree: a leaf from its history record; above, stored when it
/// completed, or if this node lacks it (history fetched from a peer out of order), recomputed
/// from its children.
fn subtree_root(store: &Store, subtree: Subtree) -> Result<Hash, ReceiptUnavailable> {
    if subtree.level == 0 {
        let record = store.history(subtree.index).map_err(storage)?;
        return record
            .map(|record| record.leaf)
            .ok_or_else(|| storage(format!("history lacks entry {}", subtree.index)));
    }
    if let Some(hash) = store.merkle_subtree(subtree).map_err(storage)? {
        return Ok(hash);
    }
    let (left, right) = subtree.children();
    Ok(merkle::node_hash(&subtree_root(store, left)?, &subtree_root(store, right)?))
}

/// The receipt of the entry at log index `index`: O(log n) reads of stored Merkle subtrees.
pub fn build(store: &Store, index: u64) -> Result<Receipt, ReceiptUnavailable> {
    let signature = signature_covering(store, index).ok_or(ReceiptUnavailable::NotSigned)?.signature;
    let size = signature.marker_index + 1;
    let record = store.history(index).map_err(storage)?.ok_or_else(|| storage("history record missing"))?;
    let path = merkle::inclusion_proof_from(index, size, &mut |subtree| subtree_root(store, subtree))?;
    if merkle::root_from_proof(&record.leaf, index, size, &path) != Some(signature.root) {
        return Err(storage(format!(
            "this node's history does not lead to the root signed at {}",
            signature.marker_index
        )));
    }
    // The endorsement that held when the root was signed (a renewal keeps the earlier ones).
    let endorsement = crate::endorsements::endorsement_at(
        &store.state(),
        signature.node_id,
        &signature.node_key,
        signature.signed_at,
    )
    .ok_or(ReceiptUnavailable::NotEndorsed { node_id: signature.node_id })?;
    let entry = crate::entry::decode_entry(&record.entry).map_err(storage)?;
    let tx_id = match &entry.payload {
        EntryPayload::Normal(tx) => tx.tx_id.0,
        _ => [0; 16],
    };
    Ok(Receipt {
        tx_id,
        leaf_index: index,
        transaction_digest: merkle::sha256(&record.entry),
        claims_digest: record.claims.as_deref().map_or(merkle::NO_CLAIMS, merkle::sha256),
        tree_size: size,
        path,
        root: signature.root,
        signature: signature.signature,
        node_id: signature.node_id,
        node_key: signature.node_key,
        endorsement: endorsement.signature,
        signed_at: signature.signed_at,
        endorsement_validity: endorsement.validity,
    })
}
