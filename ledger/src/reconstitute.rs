//! Disaster recovery when the majority is lost (issue 15): a new cluster from one surviving
//! node's data (`wattle recovery new-cluster`, docs/operations.md "Disaster recovery").
//!
//! Raft cannot elect a leader without a majority of its voters, and openraft rightly refuses to
//! change membership without one. After the majority is gone for good, an operator, offline, on
//! the surviving node's data directory (its ledger secrets restored from k members' shares if
//! they were lost too):
//!
//! - drops the log entries after the last applied one: nothing after it was ever applied here,
//!   and whatever the lost nodes committed beyond it is lost with them (as in CCF's recovery,
//!   which also resumes from the last entry the survivor holds);
//! - records a membership of this node alone as the state machine's membership, at the last
//!   applied entry, and that entry as committed;
//! - sets the current snapshot aside (it names the old membership; the node builds a new one when
//!   a joining node needs it).
//!
//! Started again, the node is a cluster of one: it elects itself and carries on from its history,
//! whose Merkle tree, signatures and service-key endorsements are unchanged, so every receipt
//! issued before still verifies, and new ones verify under the same service key. New nodes then
//! join as any node does (endorsed, attested, `add_node`, `set_voters`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context;
use domain::codec::{Reader, Writer};
use openraft::{BasicNode, Membership, StoredMembership};

use crate::entry::{decode_optional_log_id, encode_optional_log_id, encode_stored_membership, NodeId};
use crate::kv::{Batch, Cf, Kv, RocksKv};
use crate::store::{KEY_COMMITTED, KEY_LAST_APPLIED, KEY_MEMBERSHIP};

/// What reconstituting changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconstituted {
    /// The last applied entry the new cluster resumes from.
    pub resume_index: u64,
    /// Log entries dropped after it (appended, never applied here).
    pub dropped_entries: u64,
}

/// Makes the node in `data_dir` (id `node_id`, raft at `raft_address`) a cluster of one.
pub fn new_cluster_from(data_dir: &Path, node_id: NodeId, raft_address: &str) -> anyhow::Result<Reconstituted> {
    let db = data_dir.join("db");
    anyhow::ensure!(db.exists(), "{} holds no node database", data_dir.display());
    let kv = RocksKv::open(&db).with_context(|| format!("opening {} (is the node still running?)", db.display()))?;
    let applied = kv
        .get(Cf::SmMeta, KEY_LAST_APPLIED)?
        .map(|bytes| {
            let mut reader = Reader::new(&bytes);
            decode_optional_log_id(&mut reader)
        })
        .transpose()?
        .flatten()
        .context("this node never applied an entry: nothing to resume from")?;
    let mut dropped = 0u64;
    kv.scan(Cf::Log, &(applied.index + 1).to_be_bytes(), &mut |_, _| {
        dropped += 1;
        true
    })?;
    let membership = Membership::new(
        vec![BTreeSet::from([node_id])],
        BTreeMap::from([(node_id, BasicNode::new(raft_address.to_string()))]),
    );
    let mut batch = Batch::default();
    batch.delete_range(Cf::Log, (applied.index + 1).to_be_bytes(), u64::MAX.to_be_bytes());
    batch.delete(Cf::Log, u64::MAX.to_be_bytes());
    let mut writer = Writer::new();
    encode_stored_membership(&mut writer, &StoredMembership::new(Some(applied), membership));
    batch.put(Cf::SmMeta, KEY_MEMBERSHIP, writer.finish());
    let mut writer = Writer::new();
    encode_optional_log_id(&mut writer, &Some(applied));
    batch.put(Cf::Raft, KEY_COMMITTED, writer.finish());
    kv.write(batch)?;
    drop(kv);
    let snapshots = data_dir.join("snapshots");
    if snapshots.exists() {
        let aside = data_dir.join(format!("snapshots.before-new-cluster-{}", applied.index));
        std::fs::rename(&snapshots, &aside).with_context(|| format!("moving {} aside", snapshots.display()))?;
    }
    Ok(Reconstituted { resume_index: applied.index, dropped_entries: dropped })
}
