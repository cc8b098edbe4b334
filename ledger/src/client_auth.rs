//! Who may read a household's data from a node (issue 15). A node that authenticates its raft
//! peers (production, the sandbox) serves the private reads — a customer's account, statements
//! and intervals, a transaction's claims (meter, energy, money), the history — only to a caller
//! entitled to every customer: a registered **reader** (billing, by `register_reader`), a
//! consortium **member**, or an admitted **node** (a peer fetching history). The caller signs
//! the request: its public key, a time stamp within `CLIENT_SKEW_MAX_MS` of the node's clock, and
//! its Ed25519 signature over the method, the path with its query, and the time stamp. Refusals
//! are JSON with a stable code: `401 missing_client_credentials`, `401 malformed_client_credentials`,
//! `401 stale_request`, `401 bad_client_signature`, `403 not_entitled` (a valid signature by a key
//! the ledger does not entitle: a stranger, a revoked reader, a revoked node).
//!
//! Entitlement per customer (a customer reading only their own bill) is billing's, with its
//! customers' tokens (issue 16); the ledger's readers are services that settle for all of them.
//! Sans-IO: the caller passes the time and what the ledger's state holds.

use axum::http::HeaderMap;
use domain::gov::constitution::Member;

use crate::entry::NodeId;

/// How far a request's time stamp may be from the node's wall clock.
pub const CLIENT_SKEW_MAX_MS: i64 = 30_000;

pub use domain::client_read::sign_request;
use domain::client_read::{message, HEADER_KEY, HEADER_SIGNATURE, HEADER_TIME};

/// Who an entitled caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Reader(String),
    Member(String),
    Node(NodeId),
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Reader(id) => write!(f, "reader {id}"),
            Caller::Member(id) => write!(f, "member {id}"),
            Caller::Node(id) => write!(f, "node {id}"),
        }
    }
}

/// Why a read was refused: an HTTP status, a stable code and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

fn refuse(status: u16, code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal { status, code, message: message.into() }
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, Refusal> {
    headers.get(name).and_then(|value| value.to_str().ok()).ok_or_else(|| {
        refuse(
            401,
            "missing_client_credentials",
            format!("private data is served only to entitled callers: sign the request ({name} missing)"),
        )
    })
}

fn hex_array<const N: usize>(text: &str, name: &'static str) -> Result<[u8; N], Refusal> {
    hex::decode(text)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| refuse(401, "malformed_client_credentials", format!("{name} is not {N} bytes of hex")))
}

/// The key that signed this request for `method path_and_query`, checked at wall time `now_ms`.
pub fn authenticate(headers: &HeaderMap, method: &str, path_and_query: &str, now_ms: i64) -> Result<[u8; 32], Refusal> {
    let key: [u8; 32] = hex_array(header(headers, HEADER_KEY)?, HEADER_KEY)?;
    let time_ms: i64 = header(headers, HEADER_TIME)?
        .parse()
        .map_err(|_| refuse(401, "malformed_client_credentials", "the time stamp is not a number"))?;
    let signature: [u8; 64] = hex_array(header(headers, HEADER_SIGNATURE)?, HEADER_SIGNATURE)?;
    if (now_ms - time_ms).abs() > CLIENT_SKEW_MAX_MS {
        return Err(refuse(
            401,
            "stale_request",
            format!("stamped {time_ms}, {} ms from this node's clock (at most {CLIENT_SKEW_MAX_MS})", now_ms - time_ms),
        ));
    }
    domain::verify::verify_signature(&key, &signature, &message(method, path_and_query, time_ms))
        .map_err(|_| refuse(401, "bad_client_signature", "the signature does not cover this request"))?;
    Ok(key)
}

/// What the ledger's state says about keys: its readers (records under
/// `registry::READER_PREFIX`), its members, and its admitted node keys (endorsed, not revoked).
pub struct Entitlements<'a> {
    pub readers: &'a [(Vec<u8>, Vec<u8>)],
    pub members: &'a [Member],
    pub node_of_key: &'a dyn Fn(&[u8; 32]) -> Option<NodeId>,
}

/// Who `key` is, if the ledger entitles it to private data.
pub fn entitle(key: &[u8; 32], entitlements: &Entitlements<'_>) -> Result<Caller, Refusal> {
    if let Some(reader) = crate::registry::reader_with_key(entitlements.readers, key) {
        return Ok(Caller::Reader(reader));
    }
    if let Some(member) = entitlements.members.iter().find(|member| &member.public_key == key) {
        return Ok(Caller::Member(member.id.to_string()));
    }
    if let Some(node) = (entitlements.node_of_key)(key) {
        return Ok(Caller::Node(node));
    }
    Err(refuse(
        403,
        "not_entitled",
        format!("key {} is no registered reader, member or admitted node of this ledger", hex::encode(key)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn to_headers(pairs: Vec<(&'static str, String)>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(name, value.parse().expect("a header value"));
        }
        headers
    }

    const PATH: &str = "/v1/customers/C0000001/account";

    #[test]
    fn a_signed_read_authenticates_only_for_its_own_path_and_time() {
        let key = SigningKey::from_bytes(&[4; 32]);
        let headers = to_headers(sign_request(&key, "GET", PATH, 1_000));
        assert_eq!(authenticate(&headers, "GET", PATH, 1_500), Ok(key.verifying_key().to_bytes()));
        let code = |method: &str, path: &str, now: i64| authenticate(&headers, method, path, now).map_err(|r| r.code);
        assert_eq!(code("GET", "/v1/customers/C0000002/account", 1_500), Err("bad_client_signature"));
        assert_eq!(code("POST", PATH, 1_500), Err("bad_client_signature"));
        assert_eq!(code("GET", PATH, 1_000 + CLIENT_SKEW_MAX_MS + 1), Err("stale_request"));
        assert_eq!(
            authenticate(&HeaderMap::new(), "GET", PATH, 0).map_err(|r| r.code),
            Err("missing_client_credentials")
        );
    }

    #[test]
    fn only_readers_members_and_nodes_are_entitled() {
        let reader = SigningKey::from_bytes(&[5; 32]).verifying_key().to_bytes();
        let revoked = SigningKey::from_bytes(&[6; 32]).verifying_key().to_bytes();
        let readers = vec![
            ([crate::registry::READER_PREFIX, b"billing"].concat(), [[1].as_slice(), &reader].concat()),
            ([crate::registry::READER_PREFIX, b"old"].concat(), [[0].as_slice(), &revoked].concat()),
        ];
        let node_key = [7; 32];
        let nodes = |key: &[u8; 32]| (key == &node_key).then_some(2);
        let entitlements = Entitlements { readers: &readers, members: &[], node_of_key: &nodes };
        assert_eq!(entitle(&reader, &entitlements), Ok(Caller::Reader("billing".into())));
        assert_eq!(entitle(&node_key, &entitlements), Ok(Caller::Node(2)));
        assert_eq!(entitle(&revoked, &entitlements).map_err(|r| (r.status, r.code)), Err((403, "not_entitled")));
        assert_eq!(entitle(&[8; 32], &entitlements).map_err(|r| r.code), Err("not_entitled"));
    }
}
