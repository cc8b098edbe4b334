//! Prints the worked example of `docs/receipts.md`: a ledger of three entries, the receipt of the
//! second, and every intermediate value. `cargo run -p domain --example receipt_example`.

use domain::merkle::{self, NO_CLAIMS};
use domain::receipt::{
    endorse, endorse_for, endorsement_message, endorsement_message_for, root_message, root_message_at, Receipt,
    Validity,
};
use ed25519_dalek::{Signer, SigningKey};

fn main() {
    let service = SigningKey::from_bytes(&[0x11; 32]);
    let node = SigningKey::from_bytes(&[0x22; 32]);
    let node_id = 2u64;
    // Three entries: their canonical bytes stand in as short strings here; a real ledger hashes
    // the entry codec's bytes (docs/receipts.md, "Leaves").
    let entries: [&[u8]; 3] = [b"entry 0", b"entry 1", b"entry 2"];
    let tx_ids = [[0u8; 16], [0xab; 16], [0xcd; 16]];
    let claims = b"wattle.claims.v1\nWTL0000000001 1 7 accepted 0.07817500 EUR\n";
    let claims_digests = [NO_CLAIMS, merkle::sha256(claims), NO_CLAIMS];
    let mut leaves = Vec::new();
    for index in 0..3 {
        let digest = merkle::sha256(entries[index]);
        let leaf = merkle::leaf_hash(&tx_ids[index], &digest, &claims_digests[index]);
        println!("entry {index}: bytes {:?}", String::from_utf8_lossy(entries[index]));
        println!("  tx_id              {}", hex::encode(tx_ids[index]));
        println!("  transaction_digest {}", hex::encode(digest));
        println!("  claims_digest      {}", hex::encode(claims_digests[index]));
        println!("  leaf               {}", hex::encode(leaf));
        leaves.push(leaf);
    }
    let root = merkle::root(&leaves);
    println!("node(leaf0, leaf1)   {}", hex::encode(merkle::node_hash(&leaves[0], &leaves[1])));
    println!("root                 {}", hex::encode(root));
    let path = merkle::inclusion_proof(&leaves, 1);
    for (position, hash) in path.iter().enumerate() {
        println!("path[{position}]              {}", hex::encode(hash));
    }
    let message = root_message(3, &root);
    println!("root message         {}", hex::encode(&message));
    let node_key = node.verifying_key().to_bytes();
    println!("node key             {}", hex::encode(node_key));
    println!("endorsement message  {}", hex::encode(endorsement_message(node_id, &node_key)));
    println!("service public key   {}", hex::encode(service.verifying_key().to_bytes()));
    let receipt = Receipt {
        tx_id: tx_ids[1],
        leaf_index: 1,
        transaction_digest: merkle::sha256(entries[1]),
        claims_digest: claims_digests[1],
        tree_size: 3,
        path,
        root,
        signature: node.sign(&message).to_bytes(),
        node_id,
        node_key,
        endorsement: endorse(&service, node_id, &node_key),
        signed_at: None,
        endorsement_validity: None,
    };
    receipt.verify(&service.verifying_key().to_bytes(), Some(claims)).expect("the example verifies");
    println!("signature            {}", hex::encode(receipt.signature));
    println!("endorsement          {}", hex::encode(receipt.endorsement));
    println!("receipt (canonical, {} bytes):", receipt.encode().len());
    for chunk in receipt.encode().chunks(32) {
        println!("  {}", hex::encode(chunk));
    }
    // Version 2: the same root signed at a time, under an endorsement for a period.
    let signed_at = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let validity = Validity { not_before: 1_767_139_200_000, not_after: 1_798_761_600_000 };
    let timed_message = root_message_at(3, &root, Some(signed_at));
    println!("version 2: signed_at {signed_at}, not_before {}, not_after {}", validity.not_before, validity.not_after);
    println!("root message v2      {}", hex::encode(&timed_message));
    println!("endorsement msg v2   {}", hex::encode(endorsement_message_for(node_id, &node_key, Some(validity))));
    let timed = Receipt {
        signature: node.sign(&timed_message).to_bytes(),
        endorsement: endorse_for(&service, node_id, &node_key, Some(validity)),
        signed_at: Some(signed_at),
        endorsement_validity: Some(validity),
        ..receipt
    };
    timed.verify(&service.verifying_key().to_bytes(), Some(claims)).expect("the timed example verifies");
    println!("signature v2         {}", hex::encode(timed.signature));
    println!("endorsement v2       {}", hex::encode(timed.endorsement));
    println!("receipt v2 (canonical, {} bytes):", timed.encode().len());
    for chunk in timed.encode().chunks(32) {
        println!("  {}", hex::encode(chunk));
    }
    println!("receipt v2 (JSON): {}", timed.to_json());
}
