//! The worked example in docs/receipts.md verifies, and fails when changed.

use domain::merkle::{self, Hash};
use domain::receipt::Receipt;

const SERVICE_PUBLIC_KEY: &str = "d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737";
const CLAIMS: &[u8] = b"wattle.claims.v1\nWTL0000000001 1 7 accepted 0.07817500 EUR\n";

fn documented_receipt() -> Vec<u8> {
    documented_block("receipt-example")
}

fn documented_block(name: &str) -> Vec<u8> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/receipts.md"))
        .expect("docs/receipts.md is readable");
    let start = doc.find(&format!("<!-- {name}-begin -->")).expect("example start marker");
    let end = doc.find(&format!("<!-- {name}-end -->")).expect("example end marker");
    let hex_text: String = doc[start..end]
        .lines()
        .filter(|line| !line.is_empty() && line.chars().all(|c| c.is_ascii_hexdigit()))
        .collect();
    hex::decode(hex_text).expect("the example is hex")
}

#[test]
fn the_documented_receipt_verifies() {
    let bytes = documented_receipt();
    assert_eq!(bytes.len(), 377);
    let receipt = Receipt::decode(&bytes).expect("canonical");
    assert_eq!(receipt.encode(), bytes, "one canonical encoding");
    let service: [u8; 32] = hex::decode(SERVICE_PUBLIC_KEY).expect("hex").try_into().expect("32 bytes");
    assert_eq!(receipt.verify(&service, Some(CLAIMS)), Ok(()));
    assert_eq!(receipt.leaf_index, 1);
    assert_eq!(receipt.tree_size, 3);
    let mut changed = receipt.clone();
    changed.tree_size = 4;
    assert!(changed.verify(&service, Some(CLAIMS)).is_err());
}

#[test]
fn the_documented_version_2_receipt_verifies_inside_its_period_only() {
    let bytes = documented_block("receipt-v2-example");
    assert_eq!(bytes.len(), 402);
    let receipt = Receipt::decode(&bytes).expect("canonical");
    assert_eq!(receipt.encode(), bytes, "one canonical encoding");
    let service: [u8; 32] = hex::decode(SERVICE_PUBLIC_KEY).expect("hex").try_into().expect("32 bytes");
    assert_eq!(receipt.verify(&service, Some(CLAIMS)), Ok(()));
    assert_eq!(receipt.signed_at, Some(1_767_225_600_000));
    let period = receipt.endorsement_validity.expect("a period");
    assert_eq!((period.not_before, period.not_after), (1_767_139_200_000, 1_798_761_600_000));
    // The same root and signature with the time moved past the period: the root signature no
    // longer matches; the period shortened to end before the time: the endorsement no longer does.
    let mut later = receipt.clone();
    later.signed_at = Some(1_800_000_000_000);
    assert!(later.verify(&service, Some(CLAIMS)).is_err());
    let mut shortened = receipt.clone();
    shortened.endorsement_validity = Some(domain::receipt::Validity { not_after: 1_767_225_599_999, ..period });
    assert!(shortened.verify(&service, Some(CLAIMS)).is_err());
}

/// The fold of docs/receipts.md, as the document states it (pinned below, so a change to the
/// document must change this transcription too).
const DOCUMENTED_FOLD: &str = "\
if leaf_index >= tree_size: fail
fn := leaf_index; sn := tree_size - 1; r := leaf
for p in path:
    if sn = 0: fail
    if fn is odd or fn = sn:
        r := node(p, r)
        while fn is even and fn != 0: fn := fn >> 1; sn := sn >> 1
    else:
        r := node(r, p)
    fn := fn >> 1; sn := sn >> 1
succeed iff sn = 0 and r = root
";

fn documented_fold_text() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/receipts.md"))
        .expect("docs/receipts.md is readable");
    let start = doc.find("<!-- fold-begin -->").expect("fold start marker");
    let end = doc.find("<!-- fold-end -->").expect("fold end marker");
    doc[start..end].lines().filter(|line| !line.starts_with("<!--") && !line.starts_with("```")).fold(
        String::new(),
        |mut text, line| {
            text.push_str(line);
            text.push('\n');
            text
        },
    )
}

/// [`DOCUMENTED_FOLD`], line by line.
fn fold_as_documented(leaf: &Hash, leaf_index: u64, tree_size: u64, path: &[Hash], root: &Hash) -> bool {
    if leaf_index >= tree_size {
        return false;
    }
    let (mut fn_, mut sn, mut r) = (leaf_index, tree_size - 1, *leaf);
    for p in path {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = merkle::node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = merkle::node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

#[test]
fn the_documented_fold_refuses_the_example_at_other_leaf_indexes() {
    assert_eq!(documented_fold_text(), DOCUMENTED_FOLD, "docs/receipts.md's fold changed: update the transcription");
    let receipt = Receipt::decode(&documented_receipt()).expect("canonical");
    let service: [u8; 32] = hex::decode(SERVICE_PUBLIC_KEY).expect("hex").try_into().expect("32 bytes");
    assert!(fold_as_documented(&receipt.leaf(), receipt.leaf_index, receipt.tree_size, &receipt.path, &receipt.root));
    // A verifier written from the old document accepted these (bit 2 or 3 of 1 flipped).
    for leaf_index in [5, 9, 13] {
        let mut forged = receipt.clone();
        forged.leaf_index = leaf_index;
        assert!(
            !fold_as_documented(&forged.leaf(), forged.leaf_index, forged.tree_size, &forged.path, &forged.root),
            "the documented fold accepts leaf_index {leaf_index}"
        );
        assert!(forged.verify(&service, Some(CLAIMS)).is_err(), "the reference accepts leaf_index {leaf_index}");
    }
}

#[test]
fn the_documented_fold_agrees_with_the_reference() {
    for size in 1u64..=40 {
        let leaves: Vec<Hash> = (0..size).map(|leaf| merkle::sha256(&leaf.to_be_bytes())).collect();
        let root = merkle::root(&leaves);
        for proven in 0..size {
            let path = merkle::inclusion_proof(&leaves, proven);
            // Claimed indexes well past the tree, and every bit flip of the true one.
            let claims = (0..2 * size + 3).chain((0..64).map(|bit| proven ^ (1 << bit)));
            for claimed in claims {
                for length in [path.len().saturating_sub(1), path.len(), path.len() + 1] {
                    let mut tried = path.clone();
                    tried.resize(length, root);
                    let leaf = leaves[proven as usize];
                    let reference = merkle::root_from_proof(&leaf, claimed, size, &tried) == Some(root);
                    let documented = fold_as_documented(&leaf, claimed, size, &tried, &root);
                    assert_eq!(documented, reference, "size {size}, leaf {proven} claimed at {claimed}, path {length}");
                    assert_eq!(reference, claimed == proven && length == path.len(), "size {size} leaf {proven}");
                }
            }
        }
    }
}
