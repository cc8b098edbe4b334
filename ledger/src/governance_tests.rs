//! Governance on apply, through `state::apply` on an in-memory state: genesis retires the
//! operator key; a proposal passes on exactly the ballot its rule needs and then executes; a veto,
//! an expiry, a withdrawal, a forged, replayed or non-member act each end as the constitution and
//! the rules say; a constitution change decides only the proposals made after it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use domain::gov::{
    Constitution, Genesis, GovAct, Member, MemberId, Proposal, ProposalId, Role, Rule, SignedGov, Threshold,
};
use domain::ids::{CustomerId, TxId, UnixMillis, UnixSeconds};
use domain::money::Currency;
use domain::tx::{AdminAction, SignedAdmin, Transaction, TxBody};
use ed25519_dalek::SigningKey;

use super::*;
use crate::governance;
use crate::state::{apply, customer_currency, Overlay, StateRead, Table, WriteSet};

/// Leader-stamped time of every act unless a test moves it.
const NOW: i64 = 1_800_000_000;

#[derive(Default)]
struct Ledger {
    state: Mutex<WriteSet>,
    index: Mutex<u64>,
    now: Mutex<i64>,
}

impl StateRead for Ledger {
    fn get(&self, table: Table, key: &[u8]) -> Option<Vec<u8>> {
        self.state.lock().expect("one test thread").puts.get(&(table, key.to_vec())).cloned()
    }
}

fn key(name: &str) -> SigningKey {
    SigningKey::from_bytes(&[name.bytes().fold(7u8, |acc, byte| acc.wrapping_mul(31).wrapping_add(byte)); 32])
}

fn id(name: &str) -> MemberId {
    MemberId::new(name).expect("id")
}

fn member(name: &str, role: Role) -> Member {
    Member { id: id(name), role, public_key: key(name).verifying_key().to_bytes() }
}

fn rule(threshold: Threshold) -> Rule {
    Rule { threshold, veto: BTreeSet::new(), auditors_vote: false }
}

impl Ledger {
    /// Governance started with supplier, grid and supplier-b voting, regulator auditing.
    fn governed(constitution: Constitution) -> Ledger {
        let ledger = Ledger { now: Mutex::new(NOW), ..Ledger::default() };
        let genesis = Genesis::new(
            vec![
                member("supplier", Role::Member),
                member("grid", Role::Member),
                member("supplier-b", Role::Member),
                member("regulator", Role::Auditor),
            ],
            constitution,
        );
        assert_eq!(ledger.admin(1, AdminAction::StartGovernance { genesis_json: genesis.to_canonical_json() }), None);
        ledger
    }

    fn apply(&self, body: TxBody) -> Option<String> {
        let index = {
            let mut index = self.index.lock().expect("one test thread");
            *index += 1;
            *index
        };
        let mut tx_id = [0u8; 16];
        tx_id[..8].copy_from_slice(&index.to_be_bytes());
        let time = UnixMillis(*self.now.lock().expect("one test thread") * 1_000);
        let tx = Transaction { tx_id: TxId(tx_id), rules_version: 2, time, body };
        let mut overlay = Overlay::new(self);
        let result = apply(&mut overlay, index, &tx).expect("no halt").result;
        let writes = overlay.writes.puts;
        self.state.lock().expect("one test thread").puts.extend(writes);
        result.admin_refused
    }

    fn admin(&self, nonce: u64, action: AdminAction) -> Option<String> {
        self.apply(TxBody::Admin(SignedAdmin::sign(nonce, action, &SigningKey::from_bytes(&[1; 32]))))
    }

    fn act(&self, name: &str, act: GovAct) -> Option<String> {
        self.apply(TxBody::Gov(SignedGov::sign(id(name), act, &key(name))))
    }

    fn propose(&self, name: &str, proposal: &Proposal) -> (ProposalId, Option<String>) {
        (proposal.id(&id(name)), self.act(name, GovAct::Propose(proposal.clone())))
    }

    fn vote(&self, name: &str, proposal: ProposalId, approve: bool) -> Option<String> {
        self.act(name, GovAct::Vote { proposal, approve })
    }

    fn status(&self, proposal: ProposalId) -> Status {
        governance::proposal(self, &proposal).expect("recorded").status
    }
}

fn customer(name: &str) -> AdminAction {
    AdminAction::RegisterCustomer {
        customer_id: CustomerId::new(name).expect("id"),
        currency: Currency::new("EUR").expect("EUR"),
    }
}

fn proposal(actions: Vec<AdminAction>) -> Proposal {
    Proposal { title: "test".into(), nonce: 1, expires_at: UnixSeconds(NOW + 86_400), actions }
}

fn code(refusal: Option<String>) -> String {
    refusal.map(|reason| reason.split(':').next().unwrap_or_default().to_string()).unwrap_or_else(|| "applied".into())
}

fn registered(ledger: &Ledger, name: &str) -> bool {
    customer_currency(ledger, &CustomerId::new(name).expect("id")).is_some()
}

fn by_default(threshold: Threshold) -> Constitution {
    Constitution { default: rule(threshold), rules: BTreeMap::new() }
}

#[test]
fn genesis_retires_the_operator_key() {
    let ledger = Ledger::governed(by_default(Threshold::Majority));
    assert_eq!(code(ledger.admin(2, customer("c-1"))), "governed");
    assert!(!registered(&ledger, "c-1"));
    let genesis = Genesis::new(vec![member("supplier", Role::Member)], by_default(Threshold::Majority));
    assert_eq!(
        code(ledger.admin(3, AdminAction::StartGovernance { genesis_json: genesis.to_canonical_json() })),
        "governed"
    );
}

#[test]
fn a_majority_proposal_executes_on_the_second_approval_and_not_one_ballot_earlier() {
    let ledger = Ledger::governed(by_default(Threshold::Majority));
    let (proposal, refused) = ledger.propose("supplier", &proposal(vec![customer("c-1")]));
    assert_eq!(refused, None);
    // Proposing is the supplier's approval: 1 of 3, a majority needs 2.
    assert_eq!(ledger.status(proposal), Status::Open);
    assert!(!registered(&ledger, "c-1"));
    assert_eq!(ledger.vote("grid", proposal, true), None);
    assert_eq!(ledger.status(proposal), Status::Accepted);
    assert!(registered(&ledger, "c-1"));
    // Decided: a later ballot is refused and changes nothing.
    assert_eq!(code(ledger.vote("supplier-b", proposal, false)), "already_decided");
}

#[test]
fn unanimity_m_of_n_and_rejection_when_the_threshold_is_out_of_reach() {
    let ledger = Ledger::governed(by_default(Threshold::Unanimity));
    let (first, _) = ledger.propose("supplier", &proposal(vec![customer("c-1")]));
    assert_eq!(ledger.vote("grid", first, true), None);
    assert_eq!(ledger.status(first), Status::Open);
    assert_eq!(ledger.vote("supplier-b", first, true), None);
    assert_eq!(ledger.status(first), Status::Accepted);
    let (second, _) = ledger.propose("supplier", &proposal(vec![customer("c-2")]));
    assert_eq!(ledger.vote("grid", second, false), None);
    assert_eq!(ledger.status(second), Status::Rejected);
    assert!(!registered(&ledger, "c-2"));

    let ledger = Ledger::governed(by_default(Threshold::AtLeast(3)));
    let (proposal, _) = ledger.propose("grid", &proposal(vec![customer("c-3")]));
    assert_eq!(ledger.vote("supplier", proposal, true), None);
    assert_eq!(ledger.status(proposal), Status::Open);
    assert_eq!(ledger.vote("supplier-b", proposal, true), None);
    assert_eq!(ledger.status(proposal), Status::Accepted);
}

#[test]
fn a_veto_stops_a_proposal_the_majority_wanted() {
    let mut constitution = by_default(Threshold::Majority);
    constitution.rules.insert(
        domain::gov::ActionKind::RegisterCustomer,
        Rule { veto: BTreeSet::from([id("regulator")]), ..rule(Threshold::Majority) },
    );
    let ledger = Ledger::governed(constitution);
    let (proposal, _) = ledger.propose("supplier", &proposal(vec![customer("c-1")]));
    assert_eq!(ledger.vote("grid", proposal, true), None);
    assert_eq!(ledger.status(proposal), Status::Open, "a veto holder has not approved yet");
    assert_eq!(ledger.vote("regulator", proposal, false), None);
    assert_eq!(ledger.status(proposal), Status::Rejected);
    let reason = governance::proposal(&ledger, &proposal).and_then(|record| record.reason).unwrap_or_default();
    assert!(reason.starts_with("vetoed: regulator"), "{reason}");
    assert!(!registered(&ledger, "c-1"));
}

#[test]
fn forged_replayed_non_member_expired_and_ineligible_acts_are_refused() {
    let ledger = Ledger::governed(by_default(Threshold::Majority));
    let draft = proposal(vec![customer("c-1")]);
    let (proposal_id, _) = ledger.propose("supplier", &draft);
    // Forged: grid's name, supplier-b's key.
    let forged = SignedGov::sign(id("grid"), GovAct::Vote { proposal: proposal_id, approve: true }, &key("supplier-b"));
    assert_eq!(code(ledger.apply(TxBody::Gov(forged))), "bad_signature");
    assert_eq!(code(ledger.vote("mallory", proposal_id, true)), "not_member");
    assert_eq!(code(ledger.propose("supplier", &draft).1), "replayed_proposal");
    assert_eq!(code(ledger.vote("supplier", proposal_id, true)), "already_voted");
    // The auditor has no vote on this rule and cannot propose.
    assert_eq!(code(ledger.vote("regulator", proposal_id, true)), "not_eligible");
    assert_eq!(code(ledger.propose("regulator", &proposal(vec![customer("c-9")])).1), "auditor_cannot_propose");
    assert_eq!(code(ledger.vote("grid", ProposalId([0; 16]), true)), "unknown_proposal");
    assert_eq!(ledger.status(proposal_id), Status::Open);
    // Past its expiry it can no longer pass.
    *ledger.now.lock().expect("one test thread") = NOW + 86_400;
    assert_eq!(code(ledger.vote("grid", proposal_id, true)), "expired");
    assert_eq!(ledger.status(proposal_id), Status::Open);
    assert!(!registered(&ledger, "c-1"));
    let stale = Proposal { nonce: 2, expires_at: UnixSeconds(NOW), ..draft };
    assert_eq!(code(ledger.propose("supplier", &stale).1), "expired");
}

#[test]
fn only_the_proposer_withdraws_and_a_withdrawn_proposal_takes_no_ballots() {
    let ledger = Ledger::governed(by_default(Threshold::Majority));
    let (proposal, _) = ledger.propose("supplier", &proposal(vec![customer("c-1")]));
    assert_eq!(code(ledger.act("grid", GovAct::Withdraw { proposal })), "not_proposer");
    assert_eq!(ledger.act("supplier", GovAct::Withdraw { proposal }), None);
    assert_eq!(ledger.status(proposal), Status::Withdrawn);
    assert_eq!(code(ledger.vote("grid", proposal, true)), "already_decided");
}

#[test]
fn a_passed_proposal_executes_all_its_actions_or_none() {
    let ledger = Ledger::governed(by_default(Threshold::Majority));
    let bad_member = AdminAction::RemoveMember { member_id: id("nobody") };
    let (proposal, _) = ledger.propose("supplier", &proposal(vec![customer("c-1"), bad_member]));
    assert_eq!(ledger.vote("grid", proposal, true), None);
    let record = governance::proposal(&ledger, &proposal).expect("recorded");
    assert_eq!(record.status, Status::Failed);
    assert!(record.reason.unwrap_or_default().starts_with("action 2 (remove_member): unknown_member"));
    assert!(!registered(&ledger, "c-1"), "the first action must not survive the second's failure");
}

#[test]
fn a_constitution_change_decides_the_proposals_made_after_it() {
    let ledger = Ledger::governed(by_default(Threshold::Majority));
    let (before, _) = ledger.propose("supplier", &proposal(vec![customer("c-1")]));
    let unanimity = by_default(Threshold::Unanimity);
    let change = AdminAction::SetConstitution { constitution_json: unanimity.to_canonical_json() };
    let (changed, _) = ledger.propose("supplier", &Proposal { nonce: 2, ..proposal(vec![change]) });
    assert_eq!(ledger.vote("grid", changed, true), None);
    assert_eq!(ledger.status(changed), Status::Accepted);
    assert_eq!(governance::constitution(&ledger).map(|(version, _)| version), Some(2));
    // Made under version 1: a majority still passes it.
    assert_eq!(ledger.vote("grid", before, true), None);
    assert_eq!(ledger.status(before), Status::Accepted);
    // Made under version 2: two of three is no longer enough.
    let (after, _) = ledger.propose("supplier", &Proposal { nonce: 3, ..proposal(vec![customer("c-2")]) });
    assert_eq!(ledger.vote("grid", after, true), None);
    assert_eq!(ledger.status(after), Status::Open);
    assert_eq!(ledger.vote("supplier-b", after, true), None);
    assert_eq!(ledger.status(after), Status::Accepted);
}

#[test]
fn members_join_and_leave_by_vote_and_a_veto_holder_cannot_be_removed() {
    let mut constitution = by_default(Threshold::Majority);
    constitution.default.veto.insert(id("grid"));
    let ledger = Ledger::governed(constitution);
    let newcomer = member("retailer", Role::Member);
    let add = AdminAction::AddMember { member_json: newcomer.to_canonical_json() };
    let (proposal_id, _) = ledger.propose("supplier", &proposal(vec![add]));
    assert_eq!(ledger.vote("grid", proposal_id, true), None);
    assert_eq!(ledger.status(proposal_id), Status::Accepted);
    assert!(governance::member(&ledger, &id("retailer")).is_some());
    // The newcomer votes from now on.
    let (next, _) = ledger.propose("retailer", &proposal(vec![customer("c-1")]));
    assert_eq!(ledger.vote("grid", next, true), None);
    assert_eq!(ledger.vote("supplier", next, true), None);
    assert_eq!(ledger.status(next), Status::Accepted);
    let remove = AdminAction::RemoveMember { member_id: id("grid") };
    let (removal, _) = ledger.propose("supplier", &Proposal { nonce: 9, ..proposal(vec![remove]) });
    assert_eq!(ledger.vote("grid", removal, true), None);
    assert_eq!(ledger.vote("retailer", removal, true), None);
    let record = governance::proposal(&ledger, &removal).expect("recorded");
    assert_eq!(record.status, Status::Failed);
    assert!(record.reason.unwrap_or_default().contains("constitution_unreachable"));
    assert!(governance::member(&ledger, &id("grid")).is_some());
}
