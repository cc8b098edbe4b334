//! The worked example in docs/receipts.md verifies, and fails when changed.

use domain::receipt::Receipt;

const SERVICE_PUBLIC_KEY: &str = "d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737";
const CLAIMS: &[u8] = b"wattle.claims.v1\nWTL0000000001 1 7 accepted 0.07817500 EUR\n";

fn documented_receipt() -> Vec<u8> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/receipts.md"))
        .expect("docs/receipts.md is readable");
    let start = doc.find("<!-- receipt-example-begin -->").expect("example start marker");
    let end = doc.find("<!-- receipt-example-end -->").expect("example end marker");
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
