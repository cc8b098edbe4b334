//! Checks the test vectors in `docs/reading-format.md` against the implementation, so the
//! specification and the code cannot drift apart.

use std::collections::BTreeMap;

use domain::reading::{Reading, SignedReading};
use domain::verify::{is_acceptable_public_key, verify};
use ed25519_dalek::SigningKey;

fn blocks(kind: &str) -> Vec<BTreeMap<String, String>> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/reading-format.md"))
        .expect("docs/reading-format.md is readable");
    let fence = format!("```{kind}");
    let mut found = Vec::new();
    let mut current: Option<BTreeMap<String, String>> = None;
    for line in doc.lines() {
        if line == fence {
            current = Some(BTreeMap::new());
        } else if line == "```" {
            if let Some(block) = current.take() {
                found.push(block);
            }
        } else if let Some(block) = current.as_mut() {
            let (key, value) = line.split_once(": ").expect("key: value line");
            block.insert(key.to_string(), value.to_string());
        }
    }
    found
}

fn bytes<const N: usize>(hex_text: &str) -> [u8; N] {
    hex::decode(hex_text).expect("hex").try_into().expect("length")
}

#[test]
fn vectors_reproduce_and_verify() {
    let vectors = blocks("vector");
    assert!(vectors.len() >= 3, "the spec must carry at least three vectors");
    for vector in vectors {
        let secret: [u8; 32] = bytes(&vector["secret_key"]);
        let key = SigningKey::from_bytes(&secret);
        assert_eq!(hex::encode(key.verifying_key().to_bytes()), vector["public_key"]);
        let canonical = hex::decode(&vector["canonical"]).expect("hex");
        let reading = Reading::decode(&canonical).expect("vector decodes");
        assert_eq!(reading.meter_id.as_str(), vector["meter_id"]);
        assert_eq!(reading.sequence.0.to_string(), vector["sequence"]);
        assert_eq!(reading.import_energy().0.to_string(), vector["import_energy_wh"]);
        assert_eq!(reading.encode().expect("valid"), canonical, "re-encoding gives the same bytes");
        let signed = reading.sign(&key).expect("valid");
        assert_eq!(hex::encode(signed.signature()), vector["signature"], "Ed25519 is deterministic");
        let received = SignedReading::from_parts(canonical, bytes(&vector["signature"])).expect("decodes");
        verify(received, &bytes(&vector["public_key"])).expect("vector verifies");
    }
}

#[test]
fn edge_case_vectors_are_rejected() {
    let rejects = blocks("reject");
    assert!(rejects.len() >= 6);
    for case in rejects {
        let name = &case["name"];
        let canonical = hex::decode(&case["canonical"]).expect("hex");
        let public_key: [u8; 32] = bytes(&case["public_key"]);
        let signature: [u8; 64] = bytes(&case["signature"]);
        match case["expect"].as_str() {
            "decode" => assert!(SignedReading::from_parts(canonical, signature).is_err(), "{name} must not decode"),
            "signature" => {
                let signed = SignedReading::from_parts(canonical, signature).expect("decodes");
                assert!(verify(signed, &public_key).is_err(), "{name} must fail verification");
            }
            "registry" => {
                assert!(!is_acceptable_public_key(&public_key), "{name}: the registry must refuse this key");
                let signed = SignedReading::from_parts(canonical, signature).expect("decodes");
                assert!(verify(signed, &public_key).is_ok(), "{name}: ZIP-215 accepts it, as documented");
            }
            other => panic!("{name}: unknown expectation {other}"),
        }
    }
}
