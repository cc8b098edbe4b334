//! The tally: given the constitution a proposal was made under, the members now and the ballots
//! cast, is the proposal open, passed or rejected? Pure; the ledger calls it after every ballot.
//!
//! A proposal passes when the rule of every action kind it carries passes: approvals by eligible
//! voters reach the threshold and every veto holder of that rule approved. It is rejected as
//! soon as one rule can no longer pass: a veto holder rejected, or the approvals still possible
//! (approvals plus eligible voters who have not voted) fall short of the threshold. Ballots of
//! members no longer in the consortium, or not eligible under a rule, do not count for it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::constitution::{ActionKind, Constitution, Member, MemberId, Rule};

/// Where a rule, or a whole proposal, stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Open,
    Passed,
    Rejected,
}

/// One rule's count, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleTally {
    pub kind: ActionKind,
    pub eligible: u32,
    pub required: u32,
    pub approvals: u32,
    pub rejections: u32,
    /// Veto holders that have not approved yet.
    pub veto_pending: Vec<MemberId>,
    /// The veto holder that rejected, if one did.
    pub vetoed_by: Option<MemberId>,
    pub verdict: Verdict,
}

/// The whole proposal's verdict and each rule's count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: Verdict,
    pub tallies: Vec<RuleTally>,
}

/// Counts one rule.
pub fn tally_rule(kind: ActionKind, rule: &Rule, members: &[Member], ballots: &BTreeMap<MemberId, bool>) -> RuleTally {
    let voters: Vec<&Member> = members.iter().filter(|member| rule.eligible(member)).collect();
    let eligible = voters.len() as u32;
    let ballot = |member: &MemberId| ballots.get(member).copied();
    let approvals = voters.iter().filter(|member| ballot(&member.id) == Some(true)).count() as u32;
    let rejections = voters.iter().filter(|member| ballot(&member.id) == Some(false)).count() as u32;
    let vetoed_by = rule.veto.iter().find(|holder| ballot(holder) == Some(false)).cloned();
    let veto_pending: Vec<MemberId> = rule.veto.iter().filter(|holder| ballot(holder) != Some(true)).cloned().collect();
    let required = rule.required(eligible);
    let undecided = eligible - approvals - rejections;
    let verdict = if vetoed_by.is_some() || approvals + undecided < required {
        Verdict::Rejected
    } else if approvals >= required && veto_pending.is_empty() {
        Verdict::Passed
    } else {
        Verdict::Open
    };
    RuleTally { kind, eligible, required, approvals, rejections, veto_pending, vetoed_by, verdict }
}

/// Decides a proposal carrying actions of `kinds`.
pub fn decide(
    constitution: &Constitution,
    kinds: &BTreeSet<ActionKind>,
    members: &[Member],
    ballots: &BTreeMap<MemberId, bool>,
) -> Decision {
    let tallies: Vec<RuleTally> =
        kinds.iter().map(|kind| tally_rule(*kind, constitution.rule(*kind), members, ballots)).collect();
    let verdict = if tallies.iter().any(|tally| tally.verdict == Verdict::Rejected) {
        Verdict::Rejected
    } else if tallies.iter().all(|tally| tally.verdict == Verdict::Passed) {
        Verdict::Passed
    } else {
        Verdict::Open
    };
    Decision { verdict, tallies }
}

/// Which of `kinds` a member may vote on (empty: the member may not vote on this proposal).
pub fn eligible_kinds(constitution: &Constitution, kinds: &BTreeSet<ActionKind>, member: &Member) -> Vec<ActionKind> {
    kinds.iter().copied().filter(|kind| constitution.rule(*kind).eligible(member)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gov::constitution::{Role, Threshold};

    fn member(name: &str, role: Role) -> Member {
        Member { id: id(name), role, public_key: [name.len() as u8; 32] }
    }

    fn id(name: &str) -> MemberId {
        MemberId::new(name).expect("id")
    }

    /// Supplier, grid operator and a second supplier vote; the regulator audits.
    fn consortium() -> Vec<Member> {
        vec![
            member("supplier", Role::Member),
            member("grid", Role::Member),
            member("supplier-b", Role::Member),
            member("regulator", Role::Auditor),
        ]
    }

    fn rule(threshold: Threshold) -> Rule {
        Rule { threshold, veto: BTreeSet::new(), auditors_vote: false }
    }

    /// The verdict after each ballot in turn.
    fn verdicts(rule: Rule, ballots: &[(&str, bool)]) -> Vec<Verdict> {
        let constitution = Constitution { default: rule, rules: BTreeMap::new() };
        let kinds = BTreeSet::from([ActionKind::PublishTariff]);
        let mut cast = BTreeMap::new();
        ballots
            .iter()
            .map(|(name, approve)| {
                cast.insert(id(name), *approve);
                decide(&constitution, &kinds, &consortium(), &cast).verdict
            })
            .collect()
    }

    use Verdict::{Open, Passed, Rejected};

    #[test]
    fn a_majority_passes_on_the_second_of_three_approvals_and_not_one_earlier() {
        assert_eq!(verdicts(rule(Threshold::Majority), &[("supplier", true), ("grid", true)]), [Open, Passed]);
        // Two rejections of three: a majority can no longer be reached.
        assert_eq!(verdicts(rule(Threshold::Majority), &[("supplier", false), ("grid", false)]), [Open, Rejected]);
        // The auditor's ballot does not count where auditors do not vote.
        assert_eq!(verdicts(rule(Threshold::Majority), &[("supplier", true), ("regulator", true)]), [Open, Open]);
    }

    #[test]
    fn unanimity_needs_every_voter_and_one_rejection_rejects() {
        let ballots = [("supplier", true), ("grid", true), ("supplier-b", true)];
        assert_eq!(verdicts(rule(Threshold::Unanimity), &ballots), [Open, Open, Passed]);
        assert_eq!(verdicts(rule(Threshold::Unanimity), &[("supplier", true), ("grid", false)]), [Open, Rejected]);
    }

    #[test]
    fn m_of_n_passes_at_m() {
        let ballots = [("supplier", true), ("grid", false), ("supplier-b", true)];
        assert_eq!(verdicts(rule(Threshold::AtLeast(2)), &ballots), [Open, Open, Passed]);
        assert_eq!(verdicts(rule(Threshold::AtLeast(1)), &[("grid", true)]), [Passed]);
        assert_eq!(verdicts(rule(Threshold::AtLeast(3)), &[("grid", false)]), [Rejected]);
    }

    #[test]
    fn a_veto_holder_must_approve_and_its_rejection_stops_the_proposal() {
        let vetoed = Rule { veto: BTreeSet::from([id("regulator")]), ..rule(Threshold::Majority) };
        // The majority is there, the regulator has not approved: still open; then it passes.
        let ballots = [("supplier", true), ("grid", true), ("regulator", true)];
        assert_eq!(verdicts(vetoed.clone(), &ballots), [Open, Open, Passed]);
        // A veto stops it whatever the others vote.
        let ballots = [("supplier", true), ("grid", true), ("regulator", false), ("supplier-b", true)];
        assert_eq!(verdicts(vetoed, &ballots), [Open, Open, Rejected, Rejected]);
    }

    #[test]
    fn auditors_vote_where_the_rule_says_and_every_kind_of_a_proposal_must_pass() {
        let with_auditors = Rule { auditors_vote: true, ..rule(Threshold::Unanimity) };
        let constitution = Constitution {
            default: rule(Threshold::Majority),
            rules: BTreeMap::from([(ActionKind::SetConstitution, with_auditors)]),
        };
        let kinds = BTreeSet::from([ActionKind::PublishTariff, ActionKind::SetConstitution]);
        let regulator = member("regulator", Role::Auditor);
        assert_eq!(eligible_kinds(&constitution, &kinds, &regulator), [ActionKind::SetConstitution]);
        let mut ballots = BTreeMap::new();
        for name in ["supplier", "grid", "supplier-b"] {
            ballots.insert(id(name), true);
        }
        let decision = decide(&constitution, &kinds, &consortium(), &ballots);
        assert_eq!(decision.verdict, Open, "{decision:?}");
        assert_eq!(decision.tallies[0].verdict, Passed);
        ballots.insert(id("regulator"), true);
        assert_eq!(decide(&constitution, &kinds, &consortium(), &ballots).verdict, Passed);
    }

    #[test]
    fn ballots_of_former_members_do_not_count() {
        let constitution = Constitution { default: rule(Threshold::AtLeast(2)), rules: BTreeMap::new() };
        let kinds = BTreeSet::from([ActionKind::Bind]);
        let ballots = BTreeMap::from([(id("supplier"), true), (id("departed"), true)]);
        assert_eq!(decide(&constitution, &kinds, &consortium(), &ballots).verdict, Open);
    }
}
