//! Consortium governance in the state machine (issue 14): members, the constitution's versions,
//! proposals with their ballots and outcomes, all in the public table, so every party, and
//! `wattle audit`, reads who proposed and who voted for what.
//!
//! Keys: `g/started` (governance has started: the operator key is retired), `g/m/{member}`
//! (canonical member JSON), `g/c` (current constitution version, big-endian u32), `g/c/{version}`
//! (that version's canonical JSON), `g/p/{proposal id}` ([`ProposalRecord`], JSON), `g/count`
//! and `g/i/{n}` (proposal ids in the order proposed, for listing).
//!
//! Every act is checked here, on every node and in the audit: the member exists, the signature
//! is by its registered key, the proposal is open and unexpired, a member votes once. A proposal
//! is decided by the constitution version in force when it was proposed, with the members of
//! the moment of each ballot; once it passes, its actions execute in order, all or none
//! (a failing action leaves the proposal `failed`, with the reason, and changes nothing else).

use std::collections::{BTreeMap, BTreeSet};

use domain::gov::{
    decide, eligible_kinds, ActionKind, Constitution, Decision, Genesis, GovAct, Member, MemberId, Proposal,
    ProposalId, Role, SignedGov, Verdict,
};
use domain::ids::UnixSeconds;
use domain::limits::{MEMBERS_MAX, PROPOSAL_ACTIONS_MAX, PROPOSAL_LIFETIME_SECONDS_MAX};
use domain::tx::AdminAction;
use serde::{Deserialize, Serialize};

use crate::state::{Overlay, StateRead, Table};

const KEY_STARTED: &[u8] = b"g/started";
const KEY_CONSTITUTION: &[u8] = b"g/c";
const KEY_COUNT: &[u8] = b"g/count";
const MEMBER_PREFIX: &[u8] = b"g/m/";

fn key_member(member: &MemberId) -> Vec<u8> {
    [MEMBER_PREFIX, member.as_str().as_bytes()].concat()
}
fn key_constitution_version(version: u32) -> Vec<u8> {
    [b"g/c/".as_slice(), &version.to_be_bytes()].concat()
}
fn key_proposal(id: &ProposalId) -> Vec<u8> {
    [b"g/p/".as_slice(), &id.0].concat()
}
fn key_listed(position: u64) -> Vec<u8> {
    [b"g/i/".as_slice(), &position.to_be_bytes()].concat()
}

/// Where a proposal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Open,
    /// Passed and its actions executed.
    Accepted,
    Rejected,
    Withdrawn,
    /// Passed, but an action was refused when it executed: nothing changed.
    Failed,
}

/// One ballot as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BallotRecord {
    pub approve: bool,
    pub log_index: u64,
}

/// A proposal with its ballots and outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalRecord {
    pub id: String,
    pub proposer: MemberId,
    pub title: String,
    pub nonce: u64,
    pub expires_at: i64,
    /// The proposal's actions, each as hex of its canonical bytes (`AdminAction`).
    pub actions: Vec<ActionRecord>,
    /// The constitution version that decides it.
    pub constitution_version: u32,
    pub proposed_at: u64,
    pub ballots: BTreeMap<MemberId, BallotRecord>,
    pub status: Status,
    /// Log index of the ballot or withdrawal that decided it.
    pub decided_at: Option<u64>,
    /// Why it was rejected or failed.
    pub reason: Option<String>,
}

/// An action in a proposal: its kind and what it says, in the form the API shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub kind: ActionKind,
    pub summary: String,
    /// Its position in the proposal (0-based); actions execute in this order.
    pub proposal_index: u32,
    /// The customer, meter and supply point ids the summary names: the API shows them only to
    /// callers entitled to private data, keyed-hash ids to anyone else (`gov_api.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub private_ids: Vec<String>,
}

/// Whether governance has started (the operator key then signs nothing more).
pub fn is_governed(state: &dyn StateRead) -> bool {
    state.get(Table::Public, KEY_STARTED).is_some()
}

/// A member, if admitted.
pub fn member(state: &dyn StateRead, id: &MemberId) -> Option<Member> {
    // A removed member's record is emptied (the overlay has no deletes).
    let bytes = state.get(Table::Public, &key_member(id)).filter(|bytes| !bytes.is_empty())?;
    Some(Member::from_canonical_json(&bytes).expect("members are stored canonical"))
}

/// The members, in id order.
pub fn members(state: &dyn StateRead) -> Vec<Member> {
    member_ids(state).iter().filter_map(|id| member(state, id)).collect()
}

const KEY_MEMBER_LIST: &[u8] = b"g/members";

fn member_ids(state: &dyn StateRead) -> Vec<MemberId> {
    state
        .get(Table::Public, KEY_MEMBER_LIST)
        .map(|bytes| serde_json::from_slice(&bytes).expect("the member list is stored as JSON"))
        .unwrap_or_default()
}

fn put_members(state: &mut Overlay<'_>, members: &[Member]) {
    for old in member_ids(state) {
        if !members.iter().any(|member| member.id == old) {
            state.put(Table::Public, key_member(&old), Vec::new());
        }
    }
    let mut ids: Vec<MemberId> = Vec::with_capacity(members.len());
    for member in members {
        state.put(Table::Public, key_member(&member.id), member.to_canonical_json());
        ids.push(member.id.clone());
    }
    ids.sort();
    state.put(Table::Public, KEY_MEMBER_LIST.to_vec(), serde_json::to_vec(&ids).expect("ids serialise"));
}

/// The constitution in force and its version.
pub fn constitution(state: &dyn StateRead) -> Option<(u32, Constitution)> {
    let version = u32::from_be_bytes(state.get(Table::Public, KEY_CONSTITUTION)?.try_into().expect("4 bytes"));
    constitution_version(state, version).map(|constitution| (version, constitution))
}

/// A constitution version (every version is kept: open proposals are decided by theirs).
pub fn constitution_version(state: &dyn StateRead, version: u32) -> Option<Constitution> {
    let bytes = state.get(Table::Public, &key_constitution_version(version))?;
    Some(Constitution::from_canonical_json(&bytes).expect("constitutions are stored canonical"))
}

fn put_constitution(state: &mut Overlay<'_>, document: &Constitution) -> u32 {
    let version = constitution(state).map_or(1, |(version, _)| version + 1);
    state.put(Table::Public, key_constitution_version(version), document.to_canonical_json());
    state.put(Table::Public, KEY_CONSTITUTION.to_vec(), version.to_be_bytes().to_vec());
    version
}

/// A proposal's record.
pub fn proposal(state: &dyn StateRead, id: &ProposalId) -> Option<ProposalRecord> {
    let bytes = state.get(Table::Public, &key_proposal(id))?;
    Some(serde_json::from_slice(&bytes).expect("proposal records are stored as JSON"))
}

/// Proposal ids, newest first, from position `before` (exclusive) down, at most `limit`.
pub fn proposal_ids(state: &dyn StateRead, before: Option<u64>, limit: usize) -> Vec<(u64, ProposalId)> {
    let count = proposal_count(state);
    let end = before.unwrap_or(count).min(count);
    (0..end)
        .rev()
        .take(limit)
        .filter_map(|position| {
            let bytes = state.get(Table::Public, &key_listed(position))?;
            Some((position, ProposalId(bytes.try_into().expect("16 bytes"))))
        })
        .collect()
}

fn proposal_count(state: &dyn StateRead) -> u64 {
    state.get(Table::Public, KEY_COUNT).map_or(0, |bytes| u64::from_be_bytes(bytes.try_into().expect("8 bytes")))
}

fn put_proposal(state: &mut Overlay<'_>, id: &ProposalId, record: &ProposalRecord) {
    state.put(Table::Public, key_proposal(id), serde_json::to_vec(record).expect("records serialise"));
}

/// The decision for a proposal as it stands: its constitution version, members now, ballots.
pub fn tally(state: &dyn StateRead, record: &ProposalRecord) -> Decision {
    let constitution = constitution_version(state, record.constitution_version).expect("a recorded version");
    let kinds: BTreeSet<ActionKind> = record.actions.iter().map(|action| action.kind).collect();
    let ballots: BTreeMap<MemberId, bool> =
        record.ballots.iter().map(|(member, ballot)| (member.clone(), ballot.approve)).collect();
    decide(&constitution, &kinds, &members(state), &ballots)
}

// ---- actions ------------------------------------------------------------------------------------

/// `StartGovernance`: the founding members and constitution; refused once started.
pub fn start(state: &mut Overlay<'_>, genesis_json: &[u8]) -> Result<(), String> {
    if is_governed(state) {
        return Err("already_governed: governance started earlier; the operator key signs nothing more".into());
    }
    let genesis = Genesis::from_canonical_json(genesis_json).map_err(|error| format!("{}: {error}", error.code()))?;
    put_members(state, &genesis.members);
    put_constitution(state, &genesis.constitution);
    state.put(Table::Public, KEY_STARTED.to_vec(), vec![1]);
    Ok(())
}

fn governed(state: &dyn StateRead) -> Result<(Constitution, Vec<Member>), String> {
    let (_, constitution) = constitution(state).ok_or("not_governed: governance has not started")?;
    Ok((constitution, members(state)))
}

/// `AddMember`.
pub fn add_member(state: &mut Overlay<'_>, member_json: &[u8]) -> Result<(), String> {
    let (constitution, mut members) = governed(state)?;
    let member = Member::from_canonical_json(member_json).map_err(|error| format!("{}: {error}", error.code()))?;
    if members.iter().any(|existing| existing.id == member.id) {
        return Err(format!("member_exists: {} is a member already", member.id));
    }
    if members.len() >= MEMBERS_MAX {
        return Err(format!("too_many_members: at most {MEMBERS_MAX}"));
    }
    members.push(member);
    domain::gov::constitution::check_members(&members).map_err(|error| format!("{}: {error}", error.code()))?;
    constitution.check(&members).map_err(|error| format!("{}: {error}", error.code()))?;
    put_members(state, &members);
    Ok(())
}

/// `RemoveMember`: refused if a rule could then never pass.
pub fn remove_member(state: &mut Overlay<'_>, id: &MemberId) -> Result<(), String> {
    let (constitution, mut members) = governed(state)?;
    let before = members.len();
    members.retain(|member| &member.id != id);
    if members.len() == before {
        return Err(format!("unknown_member: {id} is not a member"));
    }
    domain::gov::constitution::check_members(&members).map_err(|error| format!("{}: {error}", error.code()))?;
    constitution.check(&members).map_err(|error| format!("{}: {error}", error.code()))?;
    put_members(state, &members);
    Ok(())
}

/// `SetConstitution`: a new version for the proposals made after it.
pub fn set_constitution(state: &mut Overlay<'_>, constitution_json: &[u8]) -> Result<(), String> {
    let (_, members) = governed(state)?;
    let constitution =
        Constitution::from_canonical_json(constitution_json).map_err(|error| format!("{}: {error}", error.code()))?;
    constitution.check(&members).map_err(|error| format!("{}: {error}", error.code()))?;
    put_constitution(state, &constitution);
    Ok(())
}

// ---- acts -------------------------------------------------------------------------------------

/// Applies a member's act at `log_index`, leader-stamped `now`; `Err` is the refusal (recorded as
/// the transaction's outcome, nothing else changes).
pub fn apply(state: &mut Overlay<'_>, log_index: u64, now: UnixSeconds, gov: &SignedGov) -> Result<(), String> {
    if !is_governed(state) {
        return Err("not_governed: governance has not started on this ledger".into());
    }
    let member = member(state, &gov.member).ok_or_else(|| format!("not_member: {} is not a member", gov.member))?;
    gov.verify(&member.public_key)
        .map_err(|error| format!("bad_signature: not signed by {}'s key: {error}", member.id))?;
    match &gov.act {
        GovAct::Propose(proposal) => propose(state, log_index, now, &member, proposal, gov),
        GovAct::Vote { proposal, approve } => vote(state, log_index, now, &member, proposal, *approve),
        GovAct::Withdraw { proposal } => withdraw(state, log_index, &member, proposal),
    }
}

fn propose(
    state: &mut Overlay<'_>,
    log_index: u64,
    now: UnixSeconds,
    member: &Member,
    proposal: &Proposal,
    gov: &SignedGov,
) -> Result<(), String> {
    if member.role == Role::Auditor {
        return Err(format!("auditor_cannot_propose: {} is an auditor; auditors read and vote", member.id));
    }
    if proposal.actions.is_empty() || proposal.actions.len() > PROPOSAL_ACTIONS_MAX {
        return Err(format!("bad_proposal: 1 to {PROPOSAL_ACTIONS_MAX} actions, not {}", proposal.actions.len()));
    }
    if proposal.expires_at.0 <= now.0 {
        return Err(format!("expired: expires at {} but the ledger's time is {}", proposal.expires_at.0, now.0));
    }
    if proposal.expires_at.0 - now.0 > PROPOSAL_LIFETIME_SECONDS_MAX {
        return Err(format!("expiry_too_far: at most {PROPOSAL_LIFETIME_SECONDS_MAX} s after proposing"));
    }
    if let Some(action) = proposal.actions.iter().find(|action| ActionKind::of(action) == ActionKind::StartGovernance) {
        return Err(format!(
            "bad_proposal: {} cannot be proposed; governance has started",
            ActionKind::of(action).name()
        ));
    }
    let id = proposal.id(&member.id);
    if let Some(existing) = self::proposal(state, &id) {
        return Err(format!("replayed_proposal: {id} was proposed at log index {}", existing.proposed_at));
    }
    let (version, _) = constitution(state).expect("governed");
    let actions = proposal
        .actions
        .iter()
        .enumerate()
        .map(|(index, action)| ActionRecord {
            kind: ActionKind::of(action),
            summary: summary(action),
            proposal_index: index as u32,
            private_ids: private_ids(action),
        })
        .collect();
    let mut record = ProposalRecord {
        id: id.to_string(),
        proposer: member.id.clone(),
        title: proposal.title.clone(),
        nonce: proposal.nonce,
        expires_at: proposal.expires_at.0,
        actions,
        constitution_version: version,
        proposed_at: log_index,
        ballots: BTreeMap::from([(member.id.clone(), BallotRecord { approve: true, log_index })]),
        status: Status::Open,
        decided_at: None,
        reason: None,
    };
    let position = proposal_count(state);
    state.put(Table::Public, key_listed(position), id.0.to_vec());
    state.put(Table::Public, KEY_COUNT.to_vec(), (position + 1).to_be_bytes().to_vec());
    settle_if_decided(state, log_index, &mut record, &proposal.actions);
    if record.status == Status::Open {
        // Kept until decided, so the ballot that passes it can execute its actions; the
        // history keeps the proposing transaction for good.
        state.put(Table::Public, key_proposal_actions(&record.id), gov.to_bytes());
    }
    put_proposal(state, &id, &record);
    Ok(())
}

fn open_record(state: &dyn StateRead, id: &ProposalId) -> Result<ProposalRecord, String> {
    let record = proposal(state, id).ok_or_else(|| format!("unknown_proposal: {id}"))?;
    if record.status != Status::Open {
        let at = record.decided_at.map_or(String::new(), |at| format!(" at log index {at}"));
        return Err(format!("already_decided: {id} was {:?}{at}", record.status).to_lowercase());
    }
    Ok(record)
}

fn vote(
    state: &mut Overlay<'_>,
    log_index: u64,
    now: UnixSeconds,
    member: &Member,
    id: &ProposalId,
    approve: bool,
) -> Result<(), String> {
    let mut record = open_record(state, id)?;
    if now.0 >= record.expires_at {
        return Err(format!("expired: {id} expired at {}; the ledger's time is {}", record.expires_at, now.0));
    }
    if let Some(ballot) = record.ballots.get(&member.id) {
        return Err(format!("already_voted: {} voted on {id} at log index {}", member.id, ballot.log_index));
    }
    let constitution = constitution_version(state, record.constitution_version).expect("a recorded version");
    let kinds: BTreeSet<ActionKind> = record.actions.iter().map(|action| action.kind).collect();
    if eligible_kinds(&constitution, &kinds, member).is_empty() {
        return Err(format!("not_eligible: the constitution gives {} no vote on this proposal's actions", member.id));
    }
    record.ballots.insert(member.id.clone(), BallotRecord { approve, log_index });
    let actions = proposal_actions(state, &record);
    settle_if_decided(state, log_index, &mut record, &actions);
    if record.status != Status::Open {
        state.put(Table::Public, key_proposal_actions(&record.id), Vec::new());
    }
    put_proposal(state, id, &record);
    Ok(())
}

fn withdraw(state: &mut Overlay<'_>, log_index: u64, member: &Member, id: &ProposalId) -> Result<(), String> {
    let mut record = open_record(state, id)?;
    if record.proposer != member.id {
        return Err(format!("not_proposer: only {} may withdraw {id}", record.proposer));
    }
    record.status = Status::Withdrawn;
    record.decided_at = Some(log_index);
    state.put(Table::Public, key_proposal_actions(&record.id), Vec::new());
    put_proposal(state, id, &record);
    Ok(())
}

/// The actions of a recorded proposal, from the transaction that proposed it.
fn proposal_actions(state: &dyn StateRead, record: &ProposalRecord) -> Vec<AdminAction> {
    let bytes =
        state.get(Table::Public, &key_proposal_actions(&record.id)).expect("a proposal's actions are stored with it");
    decode_actions(&bytes)
}

fn key_proposal_actions(id: &str) -> Vec<u8> {
    [b"g/a/".as_slice(), id.as_bytes()].concat()
}

fn decode_actions(bytes: &[u8]) -> Vec<AdminAction> {
    let gov = SignedGov::from_bytes(bytes).expect("stored as the proposing act");
    match gov.act {
        GovAct::Propose(proposal) => proposal.actions,
        _ => unreachable!("only proposals are stored under g/a/"),
    }
}

/// Decides the proposal; if it passed, executes its actions all or none.
fn settle_if_decided(state: &mut Overlay<'_>, log_index: u64, record: &mut ProposalRecord, actions: &[AdminAction]) {
    let decision = tally(state, record);
    match decision.verdict {
        Verdict::Open => {}
        Verdict::Rejected => {
            record.status = Status::Rejected;
            record.decided_at = Some(log_index);
            record.reason = Some(rejection_reason(&decision));
        }
        Verdict::Passed => {
            record.decided_at = Some(log_index);
            let mut trial = Overlay::new(&*state);
            let failed = actions.iter().enumerate().find_map(|(index, action)| {
                crate::state::execute_action(&mut trial, action)
                    .err()
                    .map(|reason| format!("action {} ({}): {reason}", index + 1, ActionKind::of(action).name()))
            });
            match failed {
                None => {
                    let writes = trial.writes.puts;
                    state.writes.puts.extend(writes);
                    record.status = Status::Accepted;
                }
                Some(reason) => {
                    record.status = Status::Failed;
                    record.reason = Some(reason);
                }
            }
        }
    }
}

fn rejection_reason(decision: &Decision) -> String {
    decision
        .tallies
        .iter()
        .find(|tally| tally.verdict == Verdict::Rejected)
        .map(|tally| match &tally.vetoed_by {
            Some(holder) => format!("vetoed: {holder} rejected it ({})", tally.kind.name()),
            None => format!(
                "rejected: {} of {} approvals are still possible for {}, {} needed",
                tally.eligible - tally.rejections,
                tally.eligible,
                tally.kind.name(),
                tally.required
            ),
        })
        .unwrap_or_default()
}

/// The ids of households an action names (customers, meters, supply points): private data.
pub fn private_ids(action: &AdminAction) -> Vec<String> {
    let mut ids = match action {
        AdminAction::RegisterCustomer { customer_id, .. } => vec![customer_id.to_string()],
        AdminAction::RegisterMeter { meter_id, customer_id, .. }
        | AdminAction::RegisterAttestedMeter { meter_id, customer_id, .. } => {
            vec![meter_id.to_string(), customer_id.to_string()]
        }
        AdminAction::RotateMeterKey { meter_id, .. } | AdminAction::RevokeMeterKey { meter_id, .. } => {
            vec![meter_id.to_string()]
        }
        AdminAction::Bind { binding_json } => ["meter", "customer", "supply_point"]
            .into_iter()
            .map(|field| json_field(binding_json, field))
            .filter(|id| id != "?")
            .collect(),
        _ => Vec::new(),
    };
    // Longest first, so that replacing one never cuts into another that contains it.
    ids.sort_by_key(|id| std::cmp::Reverse(id.len()));
    ids.dedup();
    ids
}

/// One line on what an action does, for people reading a proposal.
pub fn summary(action: &AdminAction) -> String {
    match action {
        AdminAction::RegisterCustomer { customer_id, currency } => {
            format!("register customer {customer_id} ({currency})")
        }
        AdminAction::RegisterMeter { meter_id, key_id, customer_id, .. } => {
            format!("register meter {meter_id} key {} for {customer_id}", key_id.0)
        }
        AdminAction::RegisterAttestedMeter { meter_id, gateway_id, customer_id, .. } => {
            format!("register legacy meter {meter_id} attested by {gateway_id} for {customer_id}")
        }
        AdminAction::SetFlatPrice(price) => format!("flat price {} {}/kWh", price.per_kwh, price.currency),
        AdminAction::AddNode { node_id, address } => format!("add node {node_id} at {address}"),
        AdminAction::SetVoters { voters } => format!("voters {voters:?}"),
        AdminAction::EndorseNode { node_id, node_key, .. } => {
            format!("endorse node {node_id} key {}", hex::encode(node_key))
        }
        AdminAction::PublishTariff { tariff_json } => format!("publish tariff {}", json_field(tariff_json, "id")),
        AdminAction::Bind { binding_json } => format!(
            "bind meter {} to {} under {}",
            json_field(binding_json, "meter"),
            json_field(binding_json, "customer"),
            json_field(binding_json, "tariff")
        ),
        AdminAction::PublishPrices { prices_json } => {
            format!("prices for tariff {}", json_field(prices_json, "tariff"))
        }
        AdminAction::StartGovernance { .. } => "start governance".into(),
        AdminAction::AddMember { member_json } => {
            format!("add member {} ({})", json_field(member_json, "id"), json_field(member_json, "role"))
        }
        AdminAction::RemoveMember { member_id } => format!("remove member {member_id}"),
        AdminAction::SetConstitution { .. } => "replace the constitution".into(),
        AdminAction::RotateMeterKey { meter_id, key_id, effective_from, .. } => {
            format!("rotate meter {meter_id} to key {} from {}", key_id.0, utc(effective_from.0))
        }
        AdminAction::RevokeMeterKey { meter_id, key_id, from } => {
            format!("revoke key {} of meter {meter_id} from {}", key_id.0, utc(from.0))
        }
        AdminAction::RegisterGateway { gateway_id, public_key } => {
            format!("register gateway {gateway_id} key {}", hex::encode(public_key))
        }
        AdminAction::RevokeGateway { gateway_id } => format!("revoke gateway {gateway_id}"),
        AdminAction::RevokeNode { node_id, node_key } => {
            format!("revoke node {node_id}'s key {}", hex::encode(node_key))
        }
        AdminAction::AcceptMeasurement { measurement } => {
            format!("accept code measurement {}", hex::encode(measurement))
        }
        AdminAction::RevokeMeasurement { measurement } => {
            format!("revoke code measurement {}", hex::encode(measurement))
        }
        AdminAction::RegisterReader { reader_id, public_key } => {
            format!("register reader {reader_id} with key {}", hex::encode(public_key))
        }
        AdminAction::RevokeReader { reader_id } => format!("revoke reader {reader_id}"),
        AdminAction::RotateLedgerSecret => "rotate the ledger secret".to_string(),
        AdminAction::CreditInvoice { order_json } => match domain::settle::CreditOrder::parse(order_json) {
            Ok(order) => match order.scope {
                domain::settle::CreditScope::Void { reissue: true } => {
                    format!("void and reissue invoice {}: {}", order.invoice, order.reason)
                }
                domain::settle::CreditScope::Void { reissue: false } => {
                    format!("void invoice {}: {}", order.invoice, order.reason)
                }
                domain::settle::CreditScope::Lines { lines } => {
                    format!("credit {} line(s) of invoice {}: {}", lines.len(), order.invoice, order.reason)
                }
            },
            Err(error) => format!("credit an invoice ({error})"),
        },
    }
}

fn utc(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0).map_or_else(|| seconds.to_string(), |time| time.to_rfc3339())
}

fn json_field(json: &[u8], field: &str) -> String {
    serde_json::from_slice::<serde_json::Value>(json)
        .ok()
        .and_then(|value| value.get(field).map(|value| value.as_str().map_or(value.to_string(), str::to_string)))
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
#[path = "governance_tests.rs"]
mod tests;
