//! The signed form of a private read from a ledger node (issue 15; checked by the ledger's
//! `client_auth.rs`): the caller's public key, a time stamp, and its Ed25519 signature over
//! SHA-256(`"wattle.client-read.v1\0"` ‖ len(method) ‖ method ‖ len(path and query) ‖ path and
//! query ‖ time), lengths 4 bytes and the time 8 bytes, big-endian. Here so that every caller
//! (billing, nodes fetching history, members' tools, tests) signs exactly what the ledger checks.

use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

/// The caller's public key (hex).
pub const HEADER_KEY: &str = "wattle-client-key";
/// Milliseconds since the Unix epoch when the request was signed.
pub const HEADER_TIME: &str = "wattle-client-time-ms";
/// The signature (hex).
pub const HEADER_SIGNATURE: &str = "wattle-client-signature";

/// What a read's signature covers.
pub fn message(method: &str, path_and_query: &str, time_ms: i64) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"wattle.client-read.v1\0")
        .chain_update((method.len() as u32).to_be_bytes())
        .chain_update(method.as_bytes())
        .chain_update((path_and_query.len() as u32).to_be_bytes())
        .chain_update(path_and_query.as_bytes())
        .chain_update(time_ms.to_be_bytes())
        .finalize()
        .into()
}

/// The headers a caller holding `key` sends with `method path_and_query` at `time_ms`.
pub fn sign_request(key: &SigningKey, method: &str, path_and_query: &str, time_ms: i64) -> Vec<(&'static str, String)> {
    let signature = key.sign(&message(method, path_and_query, time_ms));
    vec![
        (HEADER_KEY, hex::encode(key.verifying_key().to_bytes())),
        (HEADER_TIME, time_ms.to_string()),
        (HEADER_SIGNATURE, hex::encode(signature.to_bytes())),
    ]
}
