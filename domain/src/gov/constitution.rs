//! Members, the constitution and the genesis document, each with one canonical JSON form (what
//! an admin action carries and the ledger stores) and a TOML form for people.
//!
//! The constitution is data: a rule per action kind, a default rule for kinds it does not name.
//! A rule says who votes (members; auditors too if `auditors_vote`; veto holders always), how
//! many approvals pass it ([`Threshold`]) and who holds a veto: a proposal under a rule with veto
//! holders passes only once every one of them approved it, and one of them rejecting rejects it.
//! Changing the constitution is itself an action kind (`set_constitution`), so it is governed by
//! the rule the constitution gives for changing it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use crate::ids::MemberId;
use crate::limits::{GOV_DOCUMENT_JSON_BYTES_MAX, MEMBERS_MAX};
use crate::tx::AdminAction;

/// Why a governance document or change is refused. `code()` is the stable reason code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GovError {
    #[error("{0}")]
    Document(String),
    #[error("{member} holds a veto or is needed to reach a threshold: {detail}")]
    Unreachable { member: String, detail: String },
    #[error("rule for {kind}: {detail}")]
    BadRule { kind: String, detail: String },
    #[error("members: {0}")]
    BadMembers(String),
}

impl GovError {
    pub fn code(&self) -> &'static str {
        match self {
            GovError::Document(_) => "bad_gov_document",
            GovError::Unreachable { .. } => "constitution_unreachable",
            GovError::BadRule { .. } => "bad_rule",
            GovError::BadMembers(_) => "bad_members",
        }
    }
}

/// What a member may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Proposes and votes.
    Member,
    /// Reads everything; votes only on rules with `auditors_vote` or where it holds a veto;
    /// never proposes (the regulator).
    Auditor,
}

/// A member: its id, role and Ed25519 public key (hex in JSON and TOML).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub id: MemberId,
    pub role: Role,
    #[serde(with = "hex_key")]
    pub public_key: [u8; 32],
}

/// How many approvals pass a rule, out of its eligible voters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Threshold {
    /// More than half of the eligible voters.
    Majority,
    /// Every eligible voter.
    Unanimity,
    /// At least this many (M of N).
    AtLeast(u32),
}

/// The rule for one action kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub threshold: Threshold,
    /// Members whose approval the rule needs and whose rejection rejects.
    #[serde(default)]
    pub veto: BTreeSet<MemberId>,
    /// Whether auditors are eligible voters under this rule.
    #[serde(default)]
    pub auditors_vote: bool,
}

/// The kinds of action a proposal carries, by their names in the constitution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    RegisterCustomer,
    RegisterMeter,
    RegisterAttestedMeter,
    SetFlatPrice,
    AddNode,
    SetVoters,
    EndorseNode,
    PublishTariff,
    Bind,
    PublishPrices,
    StartGovernance,
    AddMember,
    RemoveMember,
    SetConstitution,
    RotateMeterKey,
    RevokeMeterKey,
    RegisterGateway,
    RevokeGateway,
    RevokeNode,
    AcceptMeasurement,
    RevokeMeasurement,
    RegisterReader,
    RevokeReader,
    CreditInvoice,
    RotateLedgerSecret,
}

impl ActionKind {
    /// The kind of an admin action.
    pub fn of(action: &AdminAction) -> ActionKind {
        match action {
            AdminAction::RegisterCustomer { .. } => ActionKind::RegisterCustomer,
            AdminAction::RegisterMeter { .. } => ActionKind::RegisterMeter,
            AdminAction::RegisterAttestedMeter { .. } => ActionKind::RegisterAttestedMeter,
            AdminAction::SetFlatPrice(_) => ActionKind::SetFlatPrice,
            AdminAction::AddNode { .. } => ActionKind::AddNode,
            AdminAction::SetVoters { .. } => ActionKind::SetVoters,
            AdminAction::EndorseNode { .. } => ActionKind::EndorseNode,
            AdminAction::PublishTariff { .. } => ActionKind::PublishTariff,
            AdminAction::Bind { .. } => ActionKind::Bind,
            AdminAction::PublishPrices { .. } => ActionKind::PublishPrices,
            AdminAction::StartGovernance { .. } => ActionKind::StartGovernance,
            AdminAction::AddMember { .. } => ActionKind::AddMember,
            AdminAction::RemoveMember { .. } => ActionKind::RemoveMember,
            AdminAction::SetConstitution { .. } => ActionKind::SetConstitution,
            AdminAction::RotateMeterKey { .. } => ActionKind::RotateMeterKey,
            AdminAction::RevokeMeterKey { .. } => ActionKind::RevokeMeterKey,
            AdminAction::RegisterGateway { .. } => ActionKind::RegisterGateway,
            AdminAction::RevokeGateway { .. } => ActionKind::RevokeGateway,
            AdminAction::RevokeNode { .. } => ActionKind::RevokeNode,
            AdminAction::AcceptMeasurement { .. } => ActionKind::AcceptMeasurement,
            AdminAction::RevokeMeasurement { .. } => ActionKind::RevokeMeasurement,
            AdminAction::RegisterReader { .. } => ActionKind::RegisterReader,
            AdminAction::RevokeReader { .. } => ActionKind::RevokeReader,
            AdminAction::CreditInvoice { .. } => ActionKind::CreditInvoice,
            AdminAction::RotateLedgerSecret => ActionKind::RotateLedgerSecret,
        }
    }

    /// The name the constitution uses (`publish_tariff`).
    pub fn name(self) -> String {
        serde_json::to_value(self).ok().and_then(|value| value.as_str().map(str::to_string)).unwrap_or_default()
    }
}

/// Rules per action kind and the default for the kinds not named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constitution {
    pub default: Rule,
    #[serde(default)]
    pub rules: BTreeMap<ActionKind, Rule>,
}

/// The first members and constitution, carried by the operator-signed `StartGovernance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    pub members: Vec<Member>,
    pub constitution: Constitution,
}

impl Rule {
    /// Whether `member` is an eligible voter under this rule.
    pub fn eligible(&self, member: &Member) -> bool {
        member.role == Role::Member || self.auditors_vote || self.veto.contains(&member.id)
    }

    /// Approvals needed out of `eligible` voters.
    pub fn required(&self, eligible: u32) -> u32 {
        match self.threshold {
            Threshold::Majority => eligible / 2 + 1,
            Threshold::Unanimity => eligible,
            Threshold::AtLeast(count) => count,
        }
    }

    /// Whether the rule can ever pass with these members: its veto holders are members and its
    /// threshold is at most its eligible voters.
    fn check(&self, kind: &str, members: &[Member]) -> Result<(), GovError> {
        for holder in &self.veto {
            if !members.iter().any(|member| &member.id == holder) {
                return Err(GovError::Unreachable {
                    member: holder.to_string(),
                    detail: format!("the rule for {kind} names a veto holder that is not a member"),
                });
            }
        }
        let eligible = members.iter().filter(|member| self.eligible(member)).count() as u32;
        if eligible == 0 {
            return Err(GovError::BadRule { kind: kind.into(), detail: "no member is eligible to vote".into() });
        }
        match self.threshold {
            Threshold::AtLeast(0) => {
                Err(GovError::BadRule { kind: kind.into(), detail: "at_least 0 would pass without a ballot".into() })
            }
            Threshold::AtLeast(count) if count > eligible => Err(GovError::BadRule {
                kind: kind.into(),
                detail: format!("at_least {count}, but only {eligible} members are eligible"),
            }),
            _ => Ok(()),
        }
    }
}

impl Constitution {
    /// The rule for an action kind.
    pub fn rule(&self, kind: ActionKind) -> &Rule {
        self.rules.get(&kind).unwrap_or(&self.default)
    }

    /// Refuses a constitution some rule of which could never pass with these members.
    pub fn check(&self, members: &[Member]) -> Result<(), GovError> {
        self.default.check("the default", members)?;
        for (kind, rule) in &self.rules {
            rule.check(&kind.name(), members)?;
        }
        Ok(())
    }

    pub fn to_canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a constitution serialises")
    }

    pub fn from_canonical_json(bytes: &[u8]) -> Result<Constitution, GovError> {
        canonical(bytes, Constitution::to_canonical_json)
    }

    /// Parses the TOML form (`docs/governance.md`).
    pub fn from_toml(text: &str) -> Result<Constitution, GovError> {
        toml::from_str(text).map_err(|error| GovError::Document(error.to_string()))
    }
}

impl Member {
    pub fn to_canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a member serialises")
    }

    pub fn from_canonical_json(bytes: &[u8]) -> Result<Member, GovError> {
        canonical(bytes, Member::to_canonical_json)
    }
}

impl Genesis {
    /// Members sorted by id, so the same consortium has one genesis document.
    pub fn new(mut members: Vec<Member>, constitution: Constitution) -> Genesis {
        members.sort_by(|a, b| a.id.cmp(&b.id));
        Genesis { members, constitution }
    }

    pub fn to_canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a genesis serialises")
    }

    /// Decodes and checks: members sorted, distinct ids and keys, at most `MEMBERS_MAX`, at least
    /// one with role `member`, and a constitution every rule of which can pass.
    pub fn from_canonical_json(bytes: &[u8]) -> Result<Genesis, GovError> {
        let genesis = canonical(bytes, Genesis::to_canonical_json)?;
        check_members(&genesis.members)?;
        genesis.constitution.check(&genesis.members)?;
        Ok(genesis)
    }
}

/// Distinct ids and keys, within `MEMBERS_MAX`, at least one proposing member, and keys that are
/// valid Ed25519 points.
pub fn check_members(members: &[Member]) -> Result<(), GovError> {
    if members.len() > MEMBERS_MAX {
        return Err(GovError::BadMembers(format!("{} members, at most {MEMBERS_MAX}", members.len())));
    }
    if !members.iter().any(|member| member.role == Role::Member) {
        return Err(GovError::BadMembers("no member with role `member`: nobody could propose".into()));
    }
    let ids: BTreeSet<_> = members.iter().map(|member| &member.id).collect();
    let keys: BTreeSet<_> = members.iter().map(|member| member.public_key).collect();
    if ids.len() != members.len() || keys.len() != members.len() {
        return Err(GovError::BadMembers("two members share an id or a key".into()));
    }
    if let Some(member) = members.iter().find(|member| !crate::verify::is_acceptable_public_key(&member.public_key)) {
        return Err(GovError::BadMembers(format!("{}: not a usable Ed25519 public key", member.id)));
    }
    Ok(())
}

fn canonical<T: serde::de::DeserializeOwned>(bytes: &[u8], encode: impl Fn(&T) -> Vec<u8>) -> Result<T, GovError> {
    if bytes.len() > GOV_DOCUMENT_JSON_BYTES_MAX {
        return Err(GovError::Document(format!("{} bytes, at most {GOV_DOCUMENT_JSON_BYTES_MAX}", bytes.len())));
    }
    let value: T = serde_json::from_slice(bytes).map_err(|error| GovError::Document(error.to_string()))?;
    if encode(&value) != bytes {
        return Err(GovError::Document("not canonical JSON (field order, spacing or form differs)".into()));
    }
    Ok(value)
}

/// A 32-byte key as 64 hex digits.
mod hex_key {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(key: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(key))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(deserializer)?;
        let bytes = hex::decode(&text).map_err(serde::de::Error::custom)?;
        bytes.try_into().map_err(|_| serde::de::Error::custom("a public key is 32 bytes (64 hex digits)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn member(name: &str, role: Role, seed: u8) -> Member {
        let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        Member { id: MemberId::new(name).expect("id"), role, public_key: key.verifying_key().to_bytes() }
    }

    #[test]
    fn the_toml_form_reads_as_documented_and_round_trips_canonically() {
        let constitution = Constitution::from_toml(
            r#"
            [default]
            threshold = "majority"

            [rules.set_constitution]
            threshold = "unanimity"

            [rules.publish_tariff]
            threshold = { at_least = 2 }
            veto = ["regulator"]
            "#,
        )
        .expect("parses");
        assert_eq!(constitution.rule(ActionKind::Bind).threshold, Threshold::Majority);
        assert_eq!(constitution.rule(ActionKind::PublishTariff).threshold, Threshold::AtLeast(2));
        let json = constitution.to_canonical_json();
        assert_eq!(Constitution::from_canonical_json(&json).expect("canonical"), constitution);
        let spaced = String::from_utf8(json).expect("utf8").replace(':', ": ");
        assert!(Constitution::from_canonical_json(spaced.as_bytes()).is_err());
        assert_eq!(ActionKind::PublishTariff.name(), "publish_tariff");
    }

    #[test]
    fn a_constitution_that_could_never_pass_is_refused() {
        let members = vec![member("supplier", Role::Member, 1), member("regulator", Role::Auditor, 2)];
        let rule = |threshold, veto: &[&str]| Rule {
            threshold,
            veto: veto.iter().map(|id| MemberId::new(*id).expect("id")).collect(),
            auditors_vote: false,
        };
        let with = |rule: Rule| Constitution { default: rule, rules: BTreeMap::new() };
        assert!(with(rule(Threshold::Majority, &[])).check(&members).is_ok());
        assert!(with(rule(Threshold::Majority, &["regulator"])).check(&members).is_ok());
        // Only the supplier votes by default: 2 of 1 can never pass.
        assert_eq!(with(rule(Threshold::AtLeast(2), &[])).check(&members).expect_err("refused").code(), "bad_rule");
        assert_eq!(with(rule(Threshold::AtLeast(0), &[])).check(&members).expect_err("refused").code(), "bad_rule");
        assert_eq!(
            with(rule(Threshold::Majority, &["stranger"])).check(&members).expect_err("refused").code(),
            "constitution_unreachable"
        );
    }

    #[test]
    fn members_must_be_distinct_and_someone_must_propose() {
        let supplier = member("supplier", Role::Member, 1);
        assert!(check_members(std::slice::from_ref(&supplier)).is_ok());
        assert!(check_members(&[member("regulator", Role::Auditor, 2)]).is_err());
        let twin = Member { id: MemberId::new("twin").expect("id"), ..supplier.clone() };
        assert!(check_members(&[supplier, twin]).is_err());
    }
}
