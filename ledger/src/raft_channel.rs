//! Raft messages between admitted nodes travel sealed (issue 15): an append carries log entries
//! (readings, customers, bindings), a snapshot carries the whole state, so neither may cross the
//! network in the clear. Every authenticated raft request's body (`append`, `vote`, `snapshot`)
//! is sealed with AES-256-GCM under the ledger secret, which only admitted nodes hold
//! (`provision.rs`); the associated data binds it to its path, sender, receiver, time stamp and
//! nonce, so a sealed body cannot be moved to another request. `peer_auth.rs` signs the sealed
//! bytes: the receiver checks who sent it before it spends an AES operation, and opens it before
//! openraft sees it. The secret handover itself (`/raft/secrets`) is not sealed: the joining
//! node holds no secret yet, and what it is sent is wrapped for its X25519 key.
//!
//! Raft bodies are sealed under the ring's first version, not its newest: after a rotation
//! (`secrets.rs`), a follower that has appended but not yet applied the rotation must still open
//! the leader's next append, which is what tells it to apply it. Rotation re-keys data at rest.
//!
//! Responses (a vote granted, an append's last log id) carry no private data and are not sealed;
//! a `--tls` cluster (`tls.rs`) encrypts them too and authenticates the answering node, so a
//! forged vote grant or acknowledgement cannot be injected on the wire. Sealing stays on under
//! TLS: the bodies are bound to their sender and receiver, not just to the channel.

use crate::entry::NodeId;
use crate::secrets::{LedgerSecrets, SecretError};

/// Domain separation: no value sealed at rest (whose associated data starts with a column
/// family's name) can be passed off as a raft message, nor the reverse.
const CHANNEL_DOMAIN: &[u8] = b"wattle.raft-channel.v1\0";

/// Where one sealed body belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub path: &'a str,
    pub sender: NodeId,
    pub target: NodeId,
    pub time_ms: i64,
    pub nonce: u64,
}

impl Envelope<'_> {
    fn aad(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(CHANNEL_DOMAIN.len() + 4 + self.path.len() + 32);
        aad.extend_from_slice(CHANNEL_DOMAIN);
        aad.extend_from_slice(&(self.path.len() as u32).to_be_bytes());
        aad.extend_from_slice(self.path.as_bytes());
        aad.extend_from_slice(&self.sender.to_be_bytes());
        aad.extend_from_slice(&self.target.to_be_bytes());
        aad.extend_from_slice(&self.time_ms.to_be_bytes());
        aad.extend_from_slice(&self.nonce.to_be_bytes());
        aad
    }
}

/// Seals a raft request's body for `envelope`.
pub fn seal(secrets: &LedgerSecrets, envelope: Envelope<'_>, body: &[u8]) -> Vec<u8> {
    secrets.seal_first(&envelope.aad(), body)
}

/// Opens a body [`seal`] made for exactly this `envelope`.
pub fn open(secrets: &LedgerSecrets, envelope: Envelope<'_>, sealed: &[u8]) -> Result<Vec<u8>, SecretError> {
    secrets.open(&envelope.aad(), sealed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENVELOPE: Envelope<'static> = Envelope { path: "append", sender: 1, target: 2, time_ms: 1_000, nonce: 7 };

    #[test]
    fn a_sealed_body_opens_only_in_its_own_envelope_under_the_same_secret() {
        let secrets = LedgerSecrets::generate();
        let body = br#"{"entries":["WTL0000000001"]}"#;
        let sealed = seal(&secrets, ENVELOPE, body);
        assert!(!sealed.windows(13).any(|window| window == b"WTL0000000001"), "the body travels in the clear");
        assert_eq!(open(&secrets, ENVELOPE, &sealed).expect("opens"), body);
        for moved in [
            Envelope { path: "vote", ..ENVELOPE },
            Envelope { sender: 3, ..ENVELOPE },
            Envelope { target: 3, ..ENVELOPE },
            Envelope { time_ms: 1_001, ..ENVELOPE },
            Envelope { nonce: 8, ..ENVELOPE },
        ] {
            assert!(open(&secrets, moved, &sealed).is_err(), "opened in {moved:?}");
        }
        assert!(open(&LedgerSecrets::generate(), ENVELOPE, &sealed).is_err(), "opened under a stranger's secret");
        let mut flipped = sealed.clone();
        *flipped.last_mut().expect("bytes") ^= 1;
        assert!(open(&secrets, ENVELOPE, &flipped).is_err(), "opened an altered body");
    }
}
