//! Building receipts (`docs/receipts.md`) from a node's history and signature records.

use domain::merkle::{self, Hash};
use domain::receipt::Receipt;
use openraft::EntryPayload;

use crate::state::{self, SignatureRecord, Table};
use crate::store::Store;

/// Why no receipt can be served (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptUnavailable {
    /// No committed signature covers the transaction yet.
    NotSigned,
    /// The signing node's key has no endorsement on the ledger.
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

/// The receipt of the entry at log index `index`.
pub fn build(store: &Store, index: u64) -> Result<Receipt, ReceiptUnavailable> {
    let signature = signature_covering(store, index).ok_or(ReceiptUnavailable::NotSigned)?.signature;
    let size = signature.marker_index + 1;
    let leaves: Vec<Hash> = store.history_leaves(0, size).map_err(storage)?;
    if leaves.len() as u64 != size {
        return Err(storage(format!("history holds {} of the {size} leaves under this signature", leaves.len())));
    }
    let path = merkle::inclusion_proof(&leaves, index);
    if merkle::root_from_proof(&leaves[index as usize], index, size, &path) != Some(signature.root) {
        return Err(storage(format!(
            "this node's history does not lead to the root signed at {}",
            signature.marker_index
        )));
    }
    let endorsement = state::endorsement(&store.state(), signature.node_id, &signature.node_key)
        .ok_or(ReceiptUnavailable::NotEndorsed { node_id: signature.node_id })?;
    let record = store.history(index).map_err(storage)?.ok_or_else(|| storage("history record missing"))?;
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
        endorsement,
    })
}
