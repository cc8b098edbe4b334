//! Checks the test vectors in `docs/reading-format.md` against the implementation, so the
//! specification and the code cannot drift apart.

use std::collections::BTreeMap;

use domain::reading::{Envelope, Reading, SignedReading};
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

/// `k = SHA-512(R ‖ A ‖ M) mod L` as docs/reading-format.md defines it, little-endian.
fn k(signature: &[u8; 64], public_key: &[u8; 32], message: &[u8]) -> String {
    use sha2::{Digest, Sha512};
    let mut hash = Sha512::new();
    hash.update(&signature[..32]);
    hash.update(public_key);
    hash.update(message);
    let mut wide = [0u8; 64];
    wide.copy_from_slice(&hash.finalize());
    hex::encode(curve25519_dalek::scalar::Scalar::from_bytes_mod_order_wide(&wide).to_bytes())
}

fn verdict(accepted: bool) -> &'static str {
    if accepted {
        "accept"
    } else {
        "reject"
    }
}

#[test]
fn every_vector_states_its_k() {
    for vector in blocks("vector") {
        let signature: [u8; 64] = bytes(&vector["signature"]);
        let canonical = hex::decode(&vector["canonical"]).expect("hex");
        assert_eq!(k(&signature, &bytes(&vector["public_key"]), &canonical), vector["k"], "{}", vector["meter_id"]);
    }
}

/// The ZIP-215 vectors get the verdicts the document gives: ed25519-consensus (the reference)
/// accepts each, the registry check decides the key, and ed25519-dalek's `verify_strict` (an
/// RFC 8032-strict verifier: canonical encodings, no small-order points, cofactorless equation)
/// refuses each, so a verifier that is not ZIP-215 fails at least one of them.
#[test]
fn zip215_vectors_get_their_documented_verdicts() {
    let cases = blocks("zip215");
    let names: Vec<&str> = cases.iter().map(|case| case["name"].as_str()).collect();
    assert_eq!(names, ["non_canonical_r", "non_canonical_a", "mixed_order_a"]);
    for case in &cases {
        let name = &case["name"];
        let canonical = hex::decode(&case["canonical"]).expect("hex");
        let public_key: [u8; 32] = bytes(&case["public_key"]);
        let signature: [u8; 64] = bytes(&case["signature"]);
        assert!(Reading::decode(&canonical).is_ok(), "{name}: the reading itself is valid");
        assert_eq!(k(&signature, &public_key, &canonical), case["k"], "{name}: k");
        let zip215 = domain::verify::verify_signature(&public_key, &signature, &canonical).is_ok();
        assert_eq!(verdict(zip215), case["zip215"], "{name}: ed25519-consensus");
        let registry = if is_acceptable_public_key(&public_key) { "accept" } else { "refuse" };
        assert_eq!(registry, case["registry"], "{name}: registry");
        let strict = ed25519_dalek::VerifyingKey::from_bytes(&public_key)
            .and_then(|key| key.verify_strict(&canonical, &ed25519_dalek::Signature::from_bytes(&signature)))
            .is_ok();
        assert_eq!(verdict(strict), case["rfc8032_strict"], "{name}: verify_strict");
        assert_eq!(verdict(zip215 && registry == "accept"), case["wattle"], "{name}: Wattle's verdict");
    }
}

/// The envelope is strict: required fields, no unknown or duplicate fields, lower-case hex only.
#[test]
fn envelopes_are_strict() {
    let vector = &blocks("vector")[0];
    let (reading, signature) = (&vector["canonical"], &vector["signature"]);
    let envelope = |text: String| Envelope::parse_json(text.as_bytes()).and_then(|envelope| envelope.open());
    let good = format!(r#"{{"v":1,"reading":"{reading}","signature":"{signature}","backfill":false}}"#);
    assert!(envelope(good).is_ok());
    let without_backfill = format!(r#"{{"v":1,"reading":"{reading}","signature":"{signature}"}}"#);
    assert!(envelope(without_backfill).is_ok(), "backfill is optional (false)");
    let refused = [
        (
            "upper-case reading",
            format!(r#"{{"v":1,"reading":"{}","signature":"{signature}"}}"#, reading.to_uppercase()),
        ),
        (
            "upper-case signature",
            format!(r#"{{"v":1,"reading":"{reading}","signature":"{}"}}"#, signature.to_uppercase()),
        ),
        (
            "duplicate reading",
            format!(r#"{{"v":1,"reading":"{reading}","reading":"{reading}","signature":"{signature}"}}"#),
        ),
        ("missing v", format!(r#"{{"reading":"{reading}","signature":"{signature}"}}"#)),
        ("missing signature", format!(r#"{{"v":1,"reading":"{reading}"}}"#)),
        ("unknown field", format!(r#"{{"v":1,"reading":"{reading}","signature":"{signature}","site":"s"}}"#)),
        ("v as a string", format!(r#"{{"v":"1","reading":"{reading}","signature":"{signature}"}}"#)),
        ("backfill as a number", format!(r#"{{"v":1,"reading":"{reading}","signature":"{signature}","backfill":0}}"#)),
    ];
    for (what, text) in refused {
        let error = envelope(text).expect_err(what);
        assert_eq!(error.code(), "malformed_envelope", "{what}: {error}");
    }
}
