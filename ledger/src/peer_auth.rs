//! Who may speak raft to a node (issue 15, first part). A node started with a service key (the
//! consortium's service identity, public half) takes `/raft/append`, `/raft/vote` and
//! `/raft/snapshot` only from admitted nodes: the request must carry the sender's node id and
//! key, the service key's endorsement of that (id, key) (`domain::receipt::endorse`, made offline
//! by whoever holds the service key), a timestamp, a nonce, and the sender's Ed25519 signature
//! over the path, the receiving node's id, the timestamp, the nonce and the SHA-256 of the body. The raft message's
//! own sender (its vote's leader id) must be the authenticated node, and its key must not be
//! revoked in the receiver's state (`revoke_node`, voted by governance). Anything else is answered
//! `401` with a reason and counted; openraft never sees it.
//!
//! A captured request cannot be replayed: it is only valid within `RAFT_RPC_SKEW_MAX_MS`, only at
//! the node it was addressed to, and that node remembers the signatures it accepted within the
//! window (`ReplayGuard`) and refuses a second one.
//!
//! An endorsement made for a period (`wattle node endorsement --valid-days`) travels with that
//! period (`wattle-endorsement-period: {not_before},{not_after}`, ms since the epoch); the
//! service key's signature covers it, and outside it the sender is refused (`expired_endorsement`,
//! `endorsement_not_yet_valid`) by the receiver's wall clock. One without a period holds until
//! governance revokes the key.

use axum::http::HeaderMap;
use domain::receipt::Validity;
use domain::verify::verify_signature;
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

use crate::entry::NodeId;

/// How far a request's timestamp may be from the receiver's wall clock.
pub const RAFT_RPC_SKEW_MAX_MS: i64 = 30_000;

const HEADER_NODE: &str = "wattle-node-id";
const HEADER_KEY: &str = "wattle-node-key";
const HEADER_ENDORSEMENT: &str = "wattle-endorsement";
const HEADER_PERIOD: &str = "wattle-endorsement-period";
const HEADER_TIME: &str = "wattle-time-ms";
const HEADER_NONCE: &str = "wattle-nonce";
const HEADER_SIGNATURE: &str = "wattle-signature";

/// What a node needs to speak raft to nodes that authenticate their peers.
#[derive(Debug, Clone)]
pub struct PeerCredentials {
    pub node_id: NodeId,
    pub key: SigningKey,
    /// The service key's endorsement of (node id, node key), for this period when given.
    pub endorsement: [u8; 64],
    pub validity: Option<domain::receipt::Validity>,
}

/// The message a sender signs.
fn message(path: &str, target: NodeId, (time_ms, nonce): (i64, u64), body: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"wattle.raft-rpc.v1\0")
        .chain_update((path.len() as u32).to_be_bytes())
        .chain_update(path.as_bytes())
        .chain_update(target.to_be_bytes())
        .chain_update(time_ms.to_be_bytes())
        .chain_update(nonce.to_be_bytes())
        .chain_update(Sha256::digest(body))
        .finalize()
        .into()
}

impl PeerCredentials {
    /// The headers of one request to `target` at `path` with `body`, stamped `time_ms`, with a
    /// fresh random `nonce` (two identical requests in one millisecond still sign differently,
    /// so the receiver's replay guard never mistakes the second for a replay).
    pub fn headers(
        &self,
        path: &str,
        target: NodeId,
        (time_ms, nonce): (i64, u64),
        body: &[u8],
    ) -> Vec<(&'static str, String)> {
        let signature = self.key.sign(&message(path, target, (time_ms, nonce), body));
        let mut headers = vec![
            (HEADER_NODE, self.node_id.to_string()),
            (HEADER_KEY, hex::encode(self.key.verifying_key().to_bytes())),
            (HEADER_ENDORSEMENT, hex::encode(self.endorsement)),
            (HEADER_TIME, time_ms.to_string()),
            (HEADER_NONCE, nonce.to_string()),
            (HEADER_SIGNATURE, hex::encode(signature.to_bytes())),
        ];
        if let Some(period) = self.validity {
            headers.push((HEADER_PERIOD, format!("{},{}", period.not_before, period.not_after)));
        }
        headers
    }
}

/// Why a raft request was refused: a stable code and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal { code, message: message.into() }
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, Refusal> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| refuse("missing_node_credentials", format!("raft requests need the {name} header")))
}

fn hex_array<const N: usize>(text: &str, name: &'static str) -> Result<[u8; N], Refusal> {
    hex::decode(text)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| refuse("malformed_node_credentials", format!("{name} is not {N} bytes of hex")))
}

/// Checks a raft request addressed to node `own_id` under `service_key`, at wall time `now_ms`;
/// the authenticated sender's node id.
pub fn authenticate(
    service_key: &[u8; 32],
    revoked: impl Fn(NodeId, &[u8; 32]) -> bool,
    own_id: NodeId,
    now_ms: i64,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<NodeId, Refusal> {
    let node_id: NodeId = header(headers, HEADER_NODE)?
        .parse()
        .map_err(|_| refuse("malformed_node_credentials", "the node id is not a number"))?;
    let node_key: [u8; 32] = hex_array(header(headers, HEADER_KEY)?, HEADER_KEY)?;
    let endorsement: [u8; 64] = hex_array(header(headers, HEADER_ENDORSEMENT)?, HEADER_ENDORSEMENT)?;
    let time_ms: i64 = header(headers, HEADER_TIME)?
        .parse()
        .map_err(|_| refuse("malformed_node_credentials", "the time is not a number"))?;
    let nonce: u64 = header(headers, HEADER_NONCE)?
        .parse()
        .map_err(|_| refuse("malformed_node_credentials", "the nonce is not a number"))?;
    let signature: [u8; 64] = hex_array(header(headers, HEADER_SIGNATURE)?, HEADER_SIGNATURE)?;
    let validity = match headers.get(HEADER_PERIOD) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|text| text.split_once(','))
                .and_then(|(from, to)| Some(Validity { not_before: from.parse().ok()?, not_after: to.parse().ok()? }))
                .ok_or_else(|| {
                    refuse("malformed_node_credentials", format!("{HEADER_PERIOD} reads NOT_BEFORE_MS,NOT_AFTER_MS"))
                })?,
        ),
    };
    verify_signature(
        service_key,
        &endorsement,
        &domain::receipt::endorsement_message_for(node_id, &node_key, validity),
    )
    .map_err(|_| {
        refuse("not_admitted", format!("node {node_id}'s key is not endorsed by this ledger's service key"))
    })?;
    if let Some(period) = validity {
        if now_ms > period.not_after {
            return Err(refuse(
                "expired_endorsement",
                format!("node {node_id}'s endorsement expired at {} ms (now {now_ms})", period.not_after),
            ));
        }
        if now_ms < period.not_before {
            return Err(refuse(
                "endorsement_not_yet_valid",
                format!("node {node_id}'s endorsement holds from {} ms (now {now_ms})", period.not_before),
            ));
        }
    }
    if revoked(node_id, &node_key) {
        return Err(refuse("revoked_node", format!("the consortium revoked node {node_id}'s key")));
    }
    if (now_ms - time_ms).abs() > RAFT_RPC_SKEW_MAX_MS {
        return Err(refuse(
            "stale_request",
            format!(
                "stamped {time_ms}, {} ms from this node's clock (at most {RAFT_RPC_SKEW_MAX_MS})",
                now_ms - time_ms
            ),
        ));
    }
    verify_signature(&node_key, &signature, &message(path, own_id, (time_ms, nonce), body))
        .map_err(|_| refuse("bad_node_signature", "the signature does not cover this request to this node"))?;
    Ok(node_id)
}

/// Most accepted request signatures a node remembers (a 3-node cluster sends a few hundred per
/// second at most; the window is 2 × `RAFT_RPC_SKEW_MAX_MS`). Beyond it the oldest are forgotten
/// first; each is then past or near the end of its window.
pub const REPLAY_GUARD_ENTRIES_MAX: usize = 200_000;

/// The signatures of the raft requests a node accepted lately, by their time stamps. Sans-IO:
/// the caller passes the time.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    by_time: std::collections::BTreeSet<(i64, [u8; 64])>,
    seen: std::collections::HashSet<[u8; 64]>,
}

impl ReplayGuard {
    /// Records an authenticated request's signature, stamped `time_ms`; refuses one seen before.
    pub fn admit(&mut self, signature: [u8; 64], time_ms: i64, now_ms: i64) -> Result<(), Refusal> {
        while let Some(&(oldest, old)) = self.by_time.first() {
            if oldest >= now_ms - 2 * RAFT_RPC_SKEW_MAX_MS && self.by_time.len() < REPLAY_GUARD_ENTRIES_MAX {
                break;
            }
            self.by_time.remove(&(oldest, old));
            self.seen.remove(&old);
        }
        if !self.seen.insert(signature) {
            return Err(refuse("replayed_request", "this signed request was accepted before"));
        }
        self.by_time.insert((time_ms, signature));
        Ok(())
    }
}

/// The signature of a request [`authenticate`] accepted, and its time stamp.
pub fn signature_of(headers: &HeaderMap) -> Option<([u8; 64], i64)> {
    let signature = hex_array(header(headers, HEADER_SIGNATURE).ok()?, HEADER_SIGNATURE).ok()?;
    Some((signature, header(headers, HEADER_TIME).ok()?.parse().ok()?))
}

/// The time stamp and nonce of a request [`authenticate`] accepted (what `raft_channel.rs`
/// binds a sealed body to).
pub fn stamp_of(headers: &HeaderMap) -> Option<(i64, u64)> {
    Some((header(headers, HEADER_TIME).ok()?.parse().ok()?, header(headers, HEADER_NONCE).ok()?.parse().ok()?))
}

/// The raft message's sender must be the node that authenticated.
pub fn same_sender(authenticated: NodeId, claimed: NodeId) -> Result<(), Refusal> {
    if authenticated == claimed {
        return Ok(());
    }
    Err(refuse("impersonation", format!("node {authenticated} sent a raft message in node {claimed}'s name")))
}

/// The node key a request's credentials name (checked by [`authenticate`] before it counts).
pub fn node_key_of(headers: &HeaderMap) -> Option<&str> {
    headers.get(HEADER_KEY)?.to_str().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_headers(pairs: Vec<(&'static str, String)>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(name, value.parse().expect("a header value"));
        }
        headers
    }

    #[test]
    fn only_an_endorsed_node_signing_this_request_to_this_node_now_is_heard() {
        let service = SigningKey::from_bytes(&[1; 32]);
        let service_key = service.verifying_key().to_bytes();
        let key = SigningKey::from_bytes(&[2; 32]);
        let endorsement = domain::receipt::endorse(&service, 2, &key.verifying_key().to_bytes());
        let node = PeerCredentials { node_id: 2, key: key.clone(), endorsement, validity: None };
        let now = 1_000_000;
        let body = b"{\"vote\":1}";
        let ok = to_headers(node.headers("vote", 1, (now, 7), body));
        assert_eq!(authenticate(&service_key, |_, _| false, 1, now + 5, "vote", &ok, body), Ok(2));
        let code = |result: Result<NodeId, Refusal>| result.expect_err("refused").code;
        assert_eq!(
            code(authenticate(&service_key, |_, _| false, 1, now, "vote", &HeaderMap::new(), body)),
            "missing_node_credentials"
        );
        assert_eq!(
            code(authenticate(&service_key, |_, _| false, 3, now, "vote", &ok, body)),
            "bad_node_signature",
            "another target"
        );
        assert_eq!(
            code(authenticate(&service_key, |_, _| false, 1, now, "append", &ok, body)),
            "bad_node_signature",
            "another path"
        );
        assert_eq!(
            code(authenticate(&service_key, |_, _| false, 1, now, "vote", &ok, b"{}")),
            "bad_node_signature",
            "another body"
        );
        assert_eq!(code(authenticate(&service_key, |_, _| false, 1, now + 31_000, "vote", &ok, body)), "stale_request");
        let stranger = SigningKey::from_bytes(&[3; 32]);
        let self_endorsed = PeerCredentials {
            node_id: 2,
            key: key.clone(),
            endorsement: domain::receipt::endorse(&stranger, 2, &key.verifying_key().to_bytes()),
            validity: None,
        };
        let forged = to_headers(self_endorsed.headers("vote", 1, (now, 7), body));
        assert_eq!(code(authenticate(&service_key, |_, _| false, 1, now, "vote", &forged, body)), "not_admitted");
        let as_node_5 = PeerCredentials { node_id: 5, ..node };
        let renamed = to_headers(as_node_5.headers("vote", 1, (now, 7), body));
        assert_eq!(
            code(authenticate(&service_key, |_, _| false, 1, now, "vote", &renamed, body)),
            "not_admitted",
            "endorsed for 2"
        );
        assert_eq!(same_sender(2, 3).expect_err("impersonation").code, "impersonation");
        let revoked = |id: NodeId, _: &[u8; 32]| id == 2;
        assert_eq!(code(authenticate(&service_key, revoked, 1, now, "vote", &ok, body)), "revoked_node");
    }

    #[test]
    fn an_endorsement_for_a_period_is_heard_only_inside_it() {
        let service = SigningKey::from_bytes(&[1; 32]);
        let service_key = service.verifying_key().to_bytes();
        let key = SigningKey::from_bytes(&[2; 32]);
        let period = Validity { not_before: 1_000_000, not_after: 2_000_000 };
        let endorsement = domain::receipt::endorse_for(&service, 2, &key.verifying_key().to_bytes(), Some(period));
        let node = PeerCredentials { node_id: 2, key, endorsement, validity: Some(period) };
        let body = b"{}";
        let at = |now: i64| {
            let headers = to_headers(node.headers("vote", 1, (now, 7), body));
            authenticate(&service_key, |_, _| false, 1, now, "vote", &headers, body).map_err(|refusal| refusal.code)
        };
        assert_eq!(at(1_000_000), Ok(2));
        assert_eq!(at(2_000_000), Ok(2));
        assert_eq!(at(2_000_001), Err("expired_endorsement"));
        assert_eq!(at(999_999), Err("endorsement_not_yet_valid"));
        // The period is signed: a sender cannot stretch it, nor drop it to pass as period-less.
        let mut stretched = to_headers(node.headers("vote", 1, (3_000_000, 7), body));
        stretched.insert(HEADER_PERIOD, "1000000,4000000".parse().expect("header"));
        let code = |headers: &HeaderMap| {
            authenticate(&service_key, |_, _| false, 1, 3_000_000, "vote", headers, body).expect_err("refused").code
        };
        assert_eq!(code(&stretched), "not_admitted");
        let mut dropped = to_headers(node.headers("vote", 1, (3_000_000, 7), body));
        dropped.remove(HEADER_PERIOD);
        assert_eq!(code(&dropped), "not_admitted");
        let mut garbled = to_headers(node.headers("vote", 1, (3_000_000, 7), body));
        garbled.insert(HEADER_PERIOD, "soon".parse().expect("header"));
        assert_eq!(code(&garbled), "malformed_node_credentials");
    }

    #[test]
    fn a_request_is_heard_once_and_the_guard_forgets_what_left_the_window() {
        let mut guard = ReplayGuard::default();
        assert_eq!(guard.admit([1; 64], 1_000, 1_000), Ok(()));
        assert_eq!(guard.admit([1; 64], 1_000, 2_000).expect_err("replayed").code, "replayed_request");
        assert_eq!(guard.admit([2; 64], 1_500, 2_000), Ok(()));
        // Past both windows, the first is forgotten (a replay of it is stale by then anyway).
        let later = 1_000 + 2 * RAFT_RPC_SKEW_MAX_MS + 1;
        assert_eq!(guard.admit([3; 64], later, later), Ok(()));
        assert_eq!(guard.seen.len(), 2, "the first signature left, the second is still in its window");
        assert!(!guard.seen.contains(&[1; 64]));
    }
}
