//! What members sign: a proposal, a ballot or a withdrawal, as one [`SignedGov`] carried by a
//! `TxBody::Gov` transaction. Canonical codec (never serde), domain-separated signatures.
//!
//! Replay: a proposal's id is a hash of its proposer and content (never of the signature, which
//! an attacker could re-encode), so the same proposal twice is one proposal; a ballot names its
//! proposal inside the signed bytes and a member votes once per proposal; a withdrawal ends a
//! proposal once. The transaction id also derives from the signed content, so a client's retry
//! is recognised as the transaction already applied.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::{MemberId, TxId, UnixSeconds};
use crate::limits::{PROPOSAL_ACTIONS_MAX, PROPOSAL_TITLE_BYTES_MAX};
use crate::tx::AdminAction;
use crate::verify::{verify_signature, SignatureError};

/// Domain-separation tag of the bytes a member signs.
pub const GOV_TAG: &[u8; 11] = b"wattle.gov\0";
/// Domain-separation tag of a governance transaction's id.
pub const GOV_TX_ID_TAG: &[u8; 14] = b"wattle.gov-id\0";
/// Domain-separation tag of a proposal's id.
pub const PROPOSAL_ID_TAG: &[u8; 16] = b"wattle.proposal\0";

/// A proposal's id: 16 bytes, 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProposalId(pub [u8; 16]);

impl fmt::Display for ProposalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::str::FromStr for ProposalId {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bytes = hex::decode(text).map_err(|error| format!("a proposal id is 32 hex digits: {error}"))?;
        Ok(ProposalId(bytes.try_into().map_err(|_| "a proposal id is 32 hex digits".to_string())?))
    }
}

/// A list of actions to take together, all or none, if the constitution's rules for every one
/// of their kinds pass before `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// What it is for, for the people voting (at most `PROPOSAL_TITLE_BYTES_MAX` bytes).
    pub title: String,
    /// Chosen by the proposer, so the same actions can be proposed again after a rejection.
    pub nonce: u64,
    /// Leader-stamped time after which it can no longer pass.
    pub expires_at: UnixSeconds,
    /// 1 to `PROPOSAL_ACTIONS_MAX` actions.
    pub actions: Vec<AdminAction>,
}

/// A member's governance act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GovAct {
    /// Propose; proposing is the proposer's approving ballot.
    Propose(Proposal),
    /// Approve or reject an open proposal.
    Vote { proposal: ProposalId, approve: bool },
    /// The proposer takes back its open proposal.
    Withdraw { proposal: ProposalId },
}

/// A governance act signed by a member's key (looked up in the ledger's member table, never
/// taken from the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedGov {
    pub member: MemberId,
    pub act: GovAct,
    pub signature: [u8; 64],
}

impl Proposal {
    fn encode(&self, writer: &mut Writer) {
        assert!(self.title.len() <= PROPOSAL_TITLE_BYTES_MAX, "title over PROPOSAL_TITLE_BYTES_MAX");
        assert!(self.actions.len() <= PROPOSAL_ACTIONS_MAX, "more than PROPOSAL_ACTIONS_MAX actions");
        writer.short_bytes(self.title.as_bytes()).u64(self.nonce).i64(self.expires_at.0).u32(self.actions.len() as u32);
        for action in &self.actions {
            action.encode(writer);
        }
    }

    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let title = std::str::from_utf8(reader.short_bytes()?)
            .map_err(|_| DecodeError::invalid("title", "not UTF-8"))?
            .to_string();
        if title.len() > PROPOSAL_TITLE_BYTES_MAX {
            return Err(DecodeError::TooLarge { size: title.len(), limit: PROPOSAL_TITLE_BYTES_MAX });
        }
        let nonce = reader.u64()?;
        let expires_at = UnixSeconds(reader.i64()?);
        let count = reader.u32()? as usize;
        if count > PROPOSAL_ACTIONS_MAX {
            return Err(DecodeError::TooLarge { size: count, limit: PROPOSAL_ACTIONS_MAX });
        }
        let actions = (0..count).map(|_| AdminAction::decode(reader)).collect::<Result<_, _>>()?;
        Ok(Proposal { title, nonce, expires_at, actions })
    }

    /// The proposal's id when `proposer` proposes it.
    pub fn id(&self, proposer: &MemberId) -> ProposalId {
        let mut writer = Writer::new();
        writer.short_bytes(proposer.as_str().as_bytes());
        self.encode(&mut writer);
        ProposalId(digest16(PROPOSAL_ID_TAG, &writer.finish()))
    }
}

impl GovAct {
    fn encode(&self, writer: &mut Writer) {
        match self {
            GovAct::Propose(proposal) => {
                writer.u8(1);
                proposal.encode(writer);
            }
            GovAct::Vote { proposal, approve } => {
                writer.u8(2).fixed(&proposal.0).u8(u8::from(*approve));
            }
            GovAct::Withdraw { proposal } => {
                writer.u8(3).fixed(&proposal.0);
            }
        }
    }

    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match reader.u8()? {
            1 => Ok(GovAct::Propose(Proposal::decode(reader)?)),
            2 => Ok(GovAct::Vote { proposal: ProposalId(reader.array()?), approve: reader.bool("approve")? }),
            3 => Ok(GovAct::Withdraw { proposal: ProposalId(reader.array()?) }),
            other => Err(DecodeError::invalid("gov_act", format!("unknown kind {other}"))),
        }
    }

    /// What it does, in a word.
    pub fn verb(&self) -> &'static str {
        match self {
            GovAct::Propose(_) => "propose",
            GovAct::Vote { approve: true, .. } => "approve",
            GovAct::Vote { approve: false, .. } => "reject",
            GovAct::Withdraw { .. } => "withdraw",
        }
    }
}

impl SignedGov {
    /// Signs `act` as `member`.
    pub fn sign(member: MemberId, act: GovAct, key: &SigningKey) -> SignedGov {
        let signature = key.sign(&signed_message(&member, &act)).to_bytes();
        SignedGov { member, act, signature }
    }

    /// Checks the signature against the member's registered key.
    pub fn verify(&self, public_key: &[u8; 32]) -> Result<(), SignatureError> {
        verify_signature(public_key, &self.signature, &signed_message(&self.member, &self.act))
    }

    pub fn encode(&self, writer: &mut Writer) {
        writer.short_bytes(self.member.as_str().as_bytes());
        self.act.encode(writer);
        writer.fixed(&self.signature);
    }

    pub fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let member = std::str::from_utf8(reader.short_bytes()?)
            .map_err(|_| DecodeError::invalid("member", "not UTF-8"))?
            .parse()
            .map_err(|error: crate::ids::IdError| DecodeError::invalid("member", error.to_string()))?;
        let act = GovAct::decode(reader)?;
        Ok(SignedGov { member, act, signature: reader.array()? })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut writer = Writer::new();
        self.encode(&mut writer);
        writer.finish()
    }

    /// Decodes [`SignedGov::to_bytes`]; rejects trailing bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let gov = Self::decode(&mut reader)?;
        reader.finish()?;
        Ok(gov)
    }

    /// The id of the transaction that carries it: a hash of the signed content, not of the
    /// signature, so a retry, or a copy with its signature re-encoded, has the same id.
    pub fn tx_id(&self) -> TxId {
        TxId(digest16(GOV_TX_ID_TAG, &signed_message(&self.member, &self.act)))
    }
}

fn signed_message(member: &MemberId, act: &GovAct) -> Vec<u8> {
    let mut writer = Writer::new();
    writer.fixed(GOV_TAG).short_bytes(member.as_str().as_bytes());
    act.encode(&mut writer);
    writer.finish()
}

fn digest16(tag: &[u8], bytes: &[u8]) -> [u8; 16] {
    let digest = Sha256::new().chain_update(tag).chain_update(bytes).finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposal() -> Proposal {
        Proposal {
            title: "a tariff for 2027".into(),
            nonce: 7,
            expires_at: UnixSeconds(1_800_000_000),
            actions: vec![AdminAction::PublishTariff { tariff_json: b"{}".to_vec() }],
        }
    }

    #[test]
    fn acts_round_trip_and_refuse_truncation_and_trailing_bytes() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let member = MemberId::new("supplier").expect("id");
        let id = proposal().id(&member);
        for act in [
            GovAct::Propose(proposal()),
            GovAct::Vote { proposal: id, approve: false },
            GovAct::Withdraw { proposal: id },
        ] {
            let signed = SignedGov::sign(member.clone(), act, &key);
            let bytes = signed.to_bytes();
            assert_eq!(SignedGov::from_bytes(&bytes).expect("decodes"), signed);
            assert!(SignedGov::from_bytes(&bytes[..bytes.len() - 1]).is_err());
            assert!(SignedGov::from_bytes(&[bytes.as_slice(), &[0]].concat()).is_err());
            assert!(signed.verify(&key.verifying_key().to_bytes()).is_ok());
        }
    }

    #[test]
    fn a_ballot_is_bound_to_its_member_and_proposal() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let public = key.verifying_key().to_bytes();
        let supplier = MemberId::new("supplier").expect("id");
        let id = proposal().id(&supplier);
        let ballot = SignedGov::sign(supplier.clone(), GovAct::Vote { proposal: id, approve: true }, &key);
        // The same signature under another member's name, or for another proposal, is forged.
        let renamed = SignedGov { member: MemberId::new("grid").expect("id"), ..ballot.clone() };
        assert!(renamed.verify(&public).is_err());
        let moved = SignedGov { act: GovAct::Vote { proposal: ProposalId([9; 16]), approve: true }, ..ballot.clone() };
        assert!(moved.verify(&public).is_err());
        let flipped = SignedGov { act: GovAct::Vote { proposal: id, approve: false }, ..ballot };
        assert!(flipped.verify(&public).is_err());
        // The proposal id depends on who proposes it and on every field.
        assert_ne!(proposal().id(&MemberId::new("grid").expect("id")), id);
        assert_ne!(Proposal { nonce: 8, ..proposal() }.id(&supplier), id);
    }
}
