//! The ledger's Merkle tree: SHA-256, the shape of RFC 9162 (Certificate Transparency 2.0), one
//! leaf per raft log index (index 0 is the first leaf).
//!
//! - leaf hash = SHA-256(0x00 ‖ transaction id ‖ transaction digest ‖ claims digest), where the
//!   transaction id is the entry's application id (16 bytes, zeros for raft's own entries), the
//!   transaction digest is SHA-256 of the entry's canonical bytes and the claims digest is SHA-256
//!   of the entry's claims document (all zeros when it has none);
//! - node hash = SHA-256(0x01 ‖ left ‖ right);
//! - the root of n > 1 leaves splits at k, the largest power of two below n.
//!
//! The prefixes keep a leaf from ever being read as an interior node. The tree is append-only;
//! [`Frontier`] holds the roots of its perfect subtrees (one per set bit of the size), enough to
//! append and to compute the root, and is what snapshots carry.

use sha2::{Digest, Sha256};

use crate::codec::{DecodeError, Reader, Writer};

pub type Hash = [u8; 32];

/// The claims digest of an entry with no claims document.
pub const NO_CLAIMS: Hash = [0; 32];

/// SHA-256 of some bytes.
pub fn sha256(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

/// A leaf: binds an entry's id, bytes and claims.
pub fn leaf_hash(tx_id: &[u8; 16], transaction_digest: &Hash, claims_digest: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(tx_id);
    hasher.update(transaction_digest);
    hasher.update(claims_digest);
    hasher.finalize().into()
}

/// An interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The root of the tree over `leaves` (not defined for zero leaves).
pub fn root(leaves: &[Hash]) -> Hash {
    assert!(!leaves.is_empty(), "the Merkle tree of no leaves has no root");
    if leaves.len() == 1 {
        return leaves[0];
    }
    let split = split_point(leaves.len() as u64) as usize;
    node_hash(&root(&leaves[..split]), &root(&leaves[split..]))
}

/// The largest power of two strictly below `size` (size > 1).
fn split_point(size: u64) -> u64 {
    1 << (63 - (size - 1).leading_zeros())
}

/// The inclusion proof of leaf `index` in the tree over `leaves`: sibling hashes, deepest first.
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Vec<Hash> {
    assert!(index < leaves.len() as u64, "leaf {index} is outside a tree of {} leaves", leaves.len());
    let mut path = Vec::new();
    fn walk(leaves: &[Hash], index: u64, path: &mut Vec<Hash>) {
        if leaves.len() <= 1 {
            return;
        }
        let split = split_point(leaves.len() as u64);
        if index < split {
            walk(&leaves[..split as usize], index, path);
            path.push(root(&leaves[split as usize..]));
        } else {
            walk(&leaves[split as usize..], index - split, path);
            path.push(root(&leaves[..split as usize]));
        }
    }
    walk(leaves, index, &mut path);
    path
}

/// The root an inclusion proof leads to (RFC 9162 §2.1.3.2), or `None` if the proof cannot belong
/// to leaf `index` of a tree of `size` leaves.
pub fn root_from_proof(leaf: &Hash, index: u64, size: u64, path: &[Hash]) -> Option<Hash> {
    if index >= size {
        return None;
    }
    let mut position = index;
    let mut last = size - 1;
    let mut hash = *leaf;
    for sibling in path {
        if last == 0 {
            return None;
        }
        if position & 1 == 1 || position == last {
            hash = node_hash(sibling, &hash);
            if position & 1 == 0 {
                while position & 1 == 0 && position != 0 {
                    position >>= 1;
                    last >>= 1;
                }
            }
        } else {
            hash = node_hash(&hash, sibling);
        }
        position >>= 1;
        last >>= 1;
    }
    (last == 0).then_some(hash)
}

/// A perfect subtree of the append-only tree: the `2^level` leaves from `index << level`. Level 0
/// is a leaf. Once complete, its root never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subtree {
    pub level: u8,
    pub index: u64,
}

impl Subtree {
    /// Canonical key: the level, then the index big-endian (so one level sorts by index).
    pub fn key(self) -> [u8; 9] {
        let mut key = [0u8; 9];
        key[0] = self.level;
        key[1..].copy_from_slice(&self.index.to_be_bytes());
        key
    }
    /// Its two halves (level > 0).
    pub fn children(self) -> (Subtree, Subtree) {
        assert!(self.level > 0, "a leaf has no children");
        let level = self.level - 1;
        (Subtree { level, index: self.index * 2 }, Subtree { level, index: self.index * 2 + 1 })
    }
}

/// The inclusion proof of leaf `index` in a tree of `size` leaves, from the roots of perfect
/// subtrees (`subtree` looks one up): the same path as [`inclusion_proof`], in O(log n) lookups.
/// Every sibling on the path is one perfect subtree, except the sibling right of the first left
/// turn, which is the root of at most log2(size) perfect subtrees.
pub fn inclusion_proof_from<E>(
    index: u64,
    size: u64,
    subtree: &mut impl FnMut(Subtree) -> Result<Hash, E>,
) -> Result<Vec<Hash>, E> {
    assert!(index < size, "leaf {index} is outside a tree of {size} leaves");
    // The root of leaves [start, start + count): RFC 9162's recursion, where a power-of-two
    // count always starts at a multiple of itself.
    fn range_root<E>(start: u64, count: u64, subtree: &mut impl FnMut(Subtree) -> Result<Hash, E>) -> Result<Hash, E> {
        if count.is_power_of_two() {
            let level = count.trailing_zeros();
            debug_assert_eq!(start % count, 0, "a perfect subtree is aligned");
            return subtree(Subtree { level: level as u8, index: start >> level });
        }
        let split = split_point(count);
        let left = range_root(start, split, subtree)?;
        let right = range_root(start + split, count - split, subtree)?;
        Ok(node_hash(&left, &right))
    }
    let mut path = Vec::new();
    let (mut start, mut count) = (0, size);
    // Top down, then reversed: the proof lists siblings deepest first.
    while count > 1 {
        let split = split_point(count);
        if index < start + split {
            path.push(range_root(start + split, count - split, subtree)?);
            count = split;
        } else {
            path.push(range_root(start, split, subtree)?);
            start += split;
            count -= split;
        }
    }
    path.reverse();
    Ok(path)
}

/// The roots of the perfect subtrees of an append-only tree: enough to append and take the root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// Largest subtree first; one per set bit of `size`.
    peaks: Vec<Hash>,
}

impl Frontier {
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn append(&mut self, leaf: Hash) {
        self.append_with(leaf, |_, _| {});
    }

    /// Appends a leaf and reports every perfect subtree it completes, the leaf itself first
    /// (level 0), so a store can keep them and build proofs in O(log n) reads.
    pub fn append_with(&mut self, leaf: Hash, mut completed: impl FnMut(Subtree, &Hash)) {
        let position = self.size;
        completed(Subtree { level: 0, index: position }, &leaf);
        let mut hash = leaf;
        let mut size = self.size;
        let mut level = 0;
        while size & 1 == 1 {
            let left = self.peaks.pop().expect("a set bit has its peak");
            hash = node_hash(&left, &hash);
            size >>= 1;
            level += 1;
            completed(Subtree { level, index: position >> level }, &hash);
        }
        self.peaks.push(hash);
        self.size += 1;
    }

    /// The root over every leaf appended so far, if any.
    pub fn root(&self) -> Option<Hash> {
        let mut peaks = self.peaks.iter().rev();
        let mut root = *peaks.next()?;
        for peak in peaks {
            root = node_hash(peak, &root);
        }
        Some(root)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::with_capacity(8 + 32 * self.peaks.len());
        writer.u64(self.size);
        for peak in &self.peaks {
            writer.fixed(peak);
        }
        writer.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let size = reader.u64()?;
        let peaks = (0..size.count_ones()).map(|_| reader.array()).collect::<Result<Vec<Hash>, _>>()?;
        reader.finish()?;
        Ok(Frontier { size, peaks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(count: u64) -> Vec<Hash> {
        (0..count).map(|index| leaf_hash(&[7; 16], &sha256(&index.to_be_bytes()), &NO_CLAIMS)).collect()
    }

    /// Reference: RFC 9162's definition, directly.
    #[test]
    fn small_trees_match_the_definition() {
        let l = leaves(3);
        assert_eq!(root(&l[..1]), l[0]);
        assert_eq!(root(&l[..2]), node_hash(&l[0], &l[1]));
        assert_eq!(root(&l), node_hash(&node_hash(&l[0], &l[1]), &l[2]));
    }

    #[test]
    fn every_proof_of_every_size_verifies_and_the_frontier_agrees() {
        let all = leaves(70);
        let mut frontier = Frontier::default();
        for size in 1..=all.len() as u64 {
            frontier.append(all[size as usize - 1]);
            let tree = &all[..size as usize];
            let expected = root(tree);
            assert_eq!(frontier.root(), Some(expected), "frontier root at size {size}");
            assert_eq!(Frontier::decode(&frontier.encode()), Ok(frontier.clone()));
            for index in 0..size {
                let path = inclusion_proof(tree, index);
                assert_eq!(root_from_proof(&tree[index as usize], index, size, &path), Some(expected));
            }
        }
    }

    /// Proofs built from the stored perfect subtrees equal proofs from the full leaf list, for
    /// every leaf of every tree of 1..=70 leaves; each takes O(log n) lookups.
    #[test]
    fn proofs_from_stored_subtrees_equal_proofs_from_leaves() {
        let all = leaves(70);
        let mut stored = std::collections::BTreeMap::new();
        let mut frontier = Frontier::default();
        for size in 1..=all.len() as u64 {
            frontier.append_with(all[size as usize - 1], |subtree, hash| {
                assert!(stored.insert(subtree, *hash).is_none(), "{subtree:?} completed twice");
            });
            let tree = &all[..size as usize];
            for index in 0..size {
                let mut lookups = 0;
                let path = inclusion_proof_from(index, size, &mut |subtree| {
                    lookups += 1;
                    stored.get(&subtree).copied().ok_or(subtree)
                })
                .expect("every subtree of a complete tree is stored");
                assert_eq!(path, inclusion_proof(tree, index), "leaf {index} of {size}");
                let bound = 2 * (64 - size.leading_zeros());
                assert!(lookups <= bound, "leaf {index} of {size}: {lookups} lookups, bound {bound}");
            }
        }
        // Every stored subtree's root is the root of its leaves.
        for (subtree, hash) in &stored {
            let start = (subtree.index << subtree.level) as usize;
            assert_eq!(root(&all[start..start + (1 << subtree.level)]), *hash, "{subtree:?}");
        }
    }

    proptest! {
        /// Any change to the leaf, the index, a path element or the path's length leads to
        /// another root (or no root). The size is not bound by the path (a leaf's path in a tree
        /// of 65 leaves also fits 66); the signed root binds it, and receipts sign both.
        #[test]
        fn any_change_is_detected(size in 1u64..200, pick in any::<u64>(), flip in 0usize..256, which in 0u8..4) {
            let all = leaves(size);
            let index = pick % size;
            let path = inclusion_proof(&all, index);
            let expected = root(&all);
            let mut leaf = all[index as usize];
            let mut path_changed = path.clone();
            let mut at = index;
            match which {
                0 => leaf[flip % 32] ^= 1 << (flip % 8),
                1 if !path.is_empty() => path_changed[flip % path.len()][flip % 32] ^= 1 << (flip % 8),
                2 => at = (index + 1 + flip as u64) % (size + 1),
                _ => { path_changed.push(leaf); }
            }
            if (which == 1 && path.is_empty()) || (which == 2 && at == index) {
                return Ok(());
            }
            prop_assert_ne!(root_from_proof(&leaf, at, size, &path_changed), Some(expected));
        }
    }
}
