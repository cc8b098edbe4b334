//! openraft's type configuration and the canonical codec of raft entries (blank, normal and
//! membership alike), so stored and later hashed entries never depend on serde's output.

use std::collections::{BTreeMap, BTreeSet};

use domain::codec::{DecodeError, Reader, Writer};
use domain::tx::Transaction;
use openraft::{BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, StoredMembership, Vote};

use crate::state::TxResult;

/// A node's id in the cluster.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The ledger's openraft types.
    pub TypeConfig:
        D = Transaction,
        R = TxResult,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = Entry<TypeConfig>,
        SnapshotData = crate::snapshot::SnapshotFile,
        AsyncRuntime = crate::runtime::LedgerRuntime,
);

/// Version byte of the entry encoding.
const ENTRY_VERSION: u8 = 1;
/// Largest address string of a node.
const NODE_ADDRESS_BYTES_MAX: usize = 255;

pub fn encode_log_id(writer: &mut Writer, log_id: &LogId<NodeId>) {
    writer.u64(log_id.leader_id.term).u64(log_id.leader_id.node_id).u64(log_id.index);
}

pub fn decode_log_id(reader: &mut Reader<'_>) -> Result<LogId<NodeId>, DecodeError> {
    let term = reader.u64()?;
    let node_id = reader.u64()?;
    let index = reader.u64()?;
    Ok(LogId::new(CommittedLeaderId::new(term, node_id), index))
}

pub fn encode_optional_log_id(writer: &mut Writer, log_id: &Option<LogId<NodeId>>) {
    match log_id {
        None => {
            writer.u8(0);
        }
        Some(log_id) => {
            writer.u8(1);
            encode_log_id(writer, log_id);
        }
    }
}

pub fn decode_optional_log_id(reader: &mut Reader<'_>) -> Result<Option<LogId<NodeId>>, DecodeError> {
    Ok(if reader.bool("log_id_present")? { Some(decode_log_id(reader)?) } else { None })
}

pub fn encode_membership(writer: &mut Writer, membership: &Membership<NodeId, BasicNode>) {
    let configs = membership.get_joint_config();
    writer.u32(configs.len() as u32);
    for config in configs {
        writer.u32(config.len() as u32);
        for node_id in config {
            writer.u64(*node_id);
        }
    }
    let nodes: Vec<_> = membership.nodes().collect();
    writer.u32(nodes.len() as u32);
    for (node_id, node) in nodes {
        let address = node.addr.as_bytes();
        assert!(address.len() <= NODE_ADDRESS_BYTES_MAX, "node address longer than {NODE_ADDRESS_BYTES_MAX} bytes");
        writer.u64(*node_id).short_bytes(address);
    }
}

pub fn decode_membership(reader: &mut Reader<'_>) -> Result<Membership<NodeId, BasicNode>, DecodeError> {
    let config_count = reader.u32()? as usize;
    if config_count > reader.remaining() / 4 {
        return Err(DecodeError::invalid("membership", "config count exceeds bytes"));
    }
    let mut configs = Vec::with_capacity(config_count);
    for _ in 0..config_count {
        let count = reader.u32()? as usize;
        if count > reader.remaining() / 8 {
            return Err(DecodeError::invalid("membership", "voter count exceeds bytes"));
        }
        let voters = (0..count).map(|_| reader.u64()).collect::<Result<Vec<_>, _>>()?;
        // Canonical: the encoder writes each set in ascending order, each id once.
        if voters.windows(2).any(|pair| pair[0] >= pair[1]) {
            return Err(DecodeError::invalid("membership", "voter ids not strictly ascending"));
        }
        configs.push(voters.into_iter().collect::<BTreeSet<_>>());
    }
    let node_count = reader.u32()? as usize;
    if node_count > reader.remaining() / 9 {
        return Err(DecodeError::invalid("membership", "node count exceeds bytes"));
    }
    let mut nodes = BTreeMap::new();
    for _ in 0..node_count {
        let node_id = reader.u64()?;
        let address = std::str::from_utf8(reader.short_bytes()?)
            .map_err(|_| DecodeError::invalid("node_address", "not UTF-8"))?;
        if nodes.last_key_value().is_some_and(|(last, _)| *last >= node_id) {
            return Err(DecodeError::invalid("membership", "node ids not strictly ascending"));
        }
        nodes.insert(node_id, BasicNode::new(address));
    }
    // openraft would add a voter missing from the nodes with an empty address, which the
    // encoder then writes: bytes without it are not what the encoder produces.
    if let Some(voter) = configs.iter().flatten().find(|voter| !nodes.contains_key(voter)) {
        return Err(DecodeError::invalid("membership", format!("voter {voter} is not among the nodes")));
    }
    Ok(Membership::new(configs, nodes))
}

pub fn encode_stored_membership(writer: &mut Writer, stored: &StoredMembership<NodeId, BasicNode>) {
    encode_optional_log_id(writer, stored.log_id());
    encode_membership(writer, stored.membership());
}

pub fn decode_stored_membership(reader: &mut Reader<'_>) -> Result<StoredMembership<NodeId, BasicNode>, DecodeError> {
    let log_id = decode_optional_log_id(reader)?;
    Ok(StoredMembership::new(log_id, decode_membership(reader)?))
}

/// Canonical bytes of a raft entry.
pub fn encode_entry(entry: &Entry<TypeConfig>) -> Vec<u8> {
    let mut writer = Writer::new();
    writer.u8(ENTRY_VERSION);
    encode_log_id(&mut writer, &entry.log_id);
    match &entry.payload {
        EntryPayload::Blank => {
            writer.u8(0);
        }
        EntryPayload::Normal(tx) => {
            writer.u8(1).long_bytes(&tx.encode());
        }
        EntryPayload::Membership(membership) => {
            writer.u8(2);
            encode_membership(&mut writer, membership);
        }
    }
    writer.finish()
}

/// Decodes [`encode_entry`]; rejects trailing bytes.
pub fn decode_entry(bytes: &[u8]) -> Result<Entry<TypeConfig>, DecodeError> {
    let mut reader = Reader::new(bytes);
    let version = reader.u8()?;
    if version != ENTRY_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let log_id = decode_log_id(&mut reader)?;
    let payload = match reader.u8()? {
        0 => EntryPayload::Blank,
        1 => EntryPayload::Normal(Transaction::decode(reader.long_bytes(domain::limits::TRANSACTION_BYTES_MAX)?)?),
        2 => EntryPayload::Membership(decode_membership(&mut reader)?),
        other => return Err(DecodeError::invalid("entry_payload", format!("unknown kind {other}"))),
    };
    reader.finish()?;
    Ok(Entry { log_id, payload })
}

pub fn encode_vote(vote: &Vote<NodeId>) -> Vec<u8> {
    let mut writer = Writer::new();
    writer.u64(vote.leader_id.term).u64(vote.leader_id.node_id).u8(u8::from(vote.committed));
    writer.finish()
}

pub fn decode_vote(bytes: &[u8]) -> Result<Vote<NodeId>, DecodeError> {
    let mut reader = Reader::new(bytes);
    let term = reader.u64()?;
    let node_id = reader.u64()?;
    let committed = reader.bool("committed")?;
    reader.finish()?;
    let mut vote = Vote::new(term, node_id);
    vote.committed = committed;
    Ok(vote)
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::ids::{TxId, UnixMillis};
    use domain::tx::TxBody;

    /// The entry example of docs/receipts.md is what the codec writes, and its digest.
    #[test]
    fn the_documented_entry_example_is_the_codec() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/receipts.md"))
            .expect("docs/receipts.md is readable");
        let start = doc.find("<!-- entry-example-begin -->").expect("example start");
        let end = doc.find("<!-- entry-example-end -->").expect("example end");
        let block = &doc[start..end];
        let (bytes_text, digest_text) = block.split_once("transaction_digest").expect("a digest line");
        let hex_of = |text: &str| -> String {
            text.lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && line.chars().all(|c| c.is_ascii_hexdigit() || c == ' '))
                .flat_map(|line| line.split(' '))
                .collect()
        };
        let tick = Transaction {
            tx_id: TxId(std::array::from_fn(|byte| byte as u8)),
            rules_version: 1,
            time: UnixMillis(1_767_571_200_000),
            body: TxBody::Tick,
        };
        let entry: Entry<TypeConfig> =
            Entry { log_id: LogId::new(CommittedLeaderId::new(2, 1), 7), payload: EntryPayload::Normal(tick) };
        let bytes = encode_entry(&entry);
        assert_eq!(hex_of(bytes_text), hex::encode(&bytes));
        assert_eq!(hex_of(digest_text), hex::encode(domain::merkle::sha256(&bytes)));
    }

    /// Regression (cargo fuzz, `entry`): a membership whose nodes came out of order, or twice,
    /// decoded, and re-encoded to other bytes; so did one naming a voter without its address.
    #[test]
    fn only_canonical_memberships_decode() {
        let crash = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/regressions/entry-membership-order"))
            .expect("the fuzz regression input is in the repository");
        assert!(decode_entry(&crash).is_err());
        let mut writer = Writer::new();
        writer.u8(ENTRY_VERSION).u64(1).u64(1).u64(1).u8(2);
        writer.u32(1).u32(2).u64(1).u64(2); // voters 1 and 2
        writer.u32(1).u64(1).short_bytes(b"127.0.0.1:1"); // only node 1 has an address
        let voter_without_node = writer.finish();
        assert!(decode_entry(&voter_without_node).is_err());
    }

    #[test]
    fn entries_round_trip() {
        let log_id = LogId::new(CommittedLeaderId::new(3, 1), 42);
        let membership = Membership::new(
            vec![BTreeSet::from([1, 2, 3])],
            BTreeMap::from([
                (1, BasicNode::new("127.0.0.1:1")),
                (2, BasicNode::new("127.0.0.1:2")),
                (3, BasicNode::new("127.0.0.1:3")),
            ]),
        );
        let tick = Transaction { tx_id: TxId([5; 16]), rules_version: 1, time: UnixMillis(9), body: TxBody::Tick };
        for payload in [EntryPayload::Blank, EntryPayload::Normal(tick), EntryPayload::Membership(membership)] {
            let entry: Entry<TypeConfig> = Entry { log_id, payload };
            let bytes = encode_entry(&entry);
            let decoded = decode_entry(&bytes).expect("decodes");
            assert_eq!(encode_entry(&decoded), bytes);
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(decode_entry(&longer).is_err());
        }
    }
}
