//! Corrections: a later value for an already settled interval (a real reading replacing an
//! estimate, an edited value) is settled by new postings, never by editing old ones: the old
//! lines are reversed and the new lines posted, both under the correction's run. Within the open
//! period the close then sees only the new lines' effect; after close the ledger carries the
//! difference to the next statement as a correction line (its part, not this function's).

use crate::ids::{PartyId, UnixSeconds};
use crate::money::Currency;
use crate::tariff::Line;

use super::posting::{interval_postings, posting, Account, AccountKind, Posting, PostingId, Run};

/// The postings replacing `old` lines by `new` lines of one interval under `run`, which must be
/// a run number not used before for this interval (the ledger numbers runs; a retry of the same
/// correction derives the same ids and posts nothing twice).
pub fn correction_postings(
    meter: &str,
    customer: &PartyId,
    start: UnixSeconds,
    run: Run,
    old: &[Line],
    new: &[Line],
    currency: Currency,
) -> Vec<Posting> {
    let side = |party: &PartyId| {
        Account::new(party, if party == customer { AccountKind::Accrued } else { AccountKind::Revenue })
    };
    let mut postings: Vec<Posting> = old
        .iter()
        .map(|line| {
            let id = PostingId::derive("reversal", meter, start, run, &line.component, [&line.debtor, &line.creditor]);
            // Reversed: the creditor's side is debited, the debtor's credited.
            posting(id, side(&line.creditor), side(&line.debtor), line.amount, currency, line.component.clone())
        })
        .collect();
    postings.extend(interval_postings(meter, customer, start, run, new, currency));
    postings
}
