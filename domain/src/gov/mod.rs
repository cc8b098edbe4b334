//! Consortium governance (issue 14), sans-IO: members, the constitution, proposals, ballots and
//! the tally that decides them. The ledger executes it on apply (`ledger/src/governance.rs`);
//! `docs/governance.md` documents the rules with examples.
//!
//! No single party changes the ledger: once governance has started (an operator-signed genesis,
//! the last thing the operator key may do), every configuration change is an [`AdminAction`]
//! inside a proposal that members voted on, decided by the constitution as it stood when the
//! proposal was made. Deterministic: ballots are counted from ordered maps, ids derive from
//! signed content, time comes from the leader-stamped entry.
//!
//! [`AdminAction`]: crate::tx::AdminAction

pub mod constitution;
pub mod message;
pub mod tally;

pub use crate::ids::MemberId;
pub use constitution::{ActionKind, Constitution, Genesis, GovError, Member, Role, Rule, Threshold};
pub use message::{GovAct, Proposal, ProposalId, SignedGov};
pub use tally::{decide, eligible_kinds, Decision, RuleTally, Verdict};
