//! Double-entry postings: every posting debits one account and credits another by one
//! non-negative amount in one currency. Balances are sums of postings; corrections are new
//! postings, never edits. Posting ids derive from what the posting is for, so a retried run
//! produces the same ids and [`Books::apply`] ignores the repeat.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::{PartyId, UnixSeconds};
use crate::money::Currency;
use crate::tariff::{Component, Line, Overflow};

/// What an account holds for its party.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// A customer's interval-local charges of the open period, full precision.
    Accrued,
    /// A customer's charges of closed periods, as stated (rounded per line).
    Billed,
    /// What a party (supplier, grid operator, tax authority, levy recipient) is owed, or owes
    /// when negative (export credits are debited to the supplier's revenue).
    Revenue,
    /// The supplier's rounding differences.
    Rounding,
}

/// An account: a party and what the account holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Account {
    pub party: PartyId,
    pub kind: AccountKind,
}

impl Account {
    pub fn new(party: &PartyId, kind: AccountKind) -> Self {
        Account { party: party.clone(), kind }
    }
}

/// A settlement run: 0 is the first settlement of an interval or period; corrections and
/// re-runs take the next number. Part of posting ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Run(pub u32);

/// A posting id: the first 16 bytes of SHA-256 over (scope, subject, start, run, component,
/// debtor, creditor), each length-prefixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PostingId(pub [u8; 16]);

impl PostingId {
    /// `scope` is `interval` or `close`; `subject` the meter (intervals) or customer (close);
    /// `start` the interval or period start.
    pub fn derive(
        scope: &str,
        subject: &str,
        start: UnixSeconds,
        run: Run,
        component: &Component,
        parties: [&PartyId; 2],
    ) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"wattle-posting-v1");
        for part in [scope, subject, &component.key(), parties[0].as_str(), parties[1].as_str()] {
            hash.update((part.len() as u32).to_be_bytes());
            hash.update(part.as_bytes());
        }
        hash.update(start.0.to_be_bytes());
        hash.update(run.0.to_be_bytes());
        let digest = hash.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        PostingId(id)
    }
}

/// One posting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    pub id: PostingId,
    pub debit_account: Account,
    pub credit_account: Account,
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    pub currency: Currency,
    pub component: Component,
}

/// A posting moving `amount` from `from` (debited) to `to` (credited); a negative amount swaps
/// the accounts so every posting's amount is non-negative.
pub fn posting(
    id: PostingId,
    from: Account,
    to: Account,
    amount: Decimal,
    currency: Currency,
    component: Component,
) -> Posting {
    if amount.is_sign_negative() && !amount.is_zero() {
        Posting { id, debit_account: to, credit_account: from, amount: -amount, currency, component }
    } else {
        Posting { id, debit_account: from, credit_account: to, amount, currency, component }
    }
}

/// The postings of one priced interval's lines: the debtor's account is debited, the
/// creditor's credited. A customer's side is its `Accrued` account, any other party's its
/// `Revenue` account.
pub fn interval_postings(
    meter: &str,
    customer: &PartyId,
    start: UnixSeconds,
    run: Run,
    lines: &[Line],
    currency: Currency,
) -> Vec<Posting> {
    let side = |party: &PartyId| {
        Account::new(party, if party == customer { AccountKind::Accrued } else { AccountKind::Revenue })
    };
    lines
        .iter()
        .map(|line| {
            let id = PostingId::derive("interval", meter, start, run, &line.component, [&line.debtor, &line.creditor]);
            posting(id, side(&line.debtor), side(&line.creditor), line.amount, currency, line.component.clone())
        })
        .collect()
}

/// Why postings do not make consistent books.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BooksError {
    #[error("posting_negative: posting {0:?} has a negative amount")]
    Negative(PostingId),
    #[error("posting_same_account: posting {0:?} debits and credits one account")]
    SameAccount(PostingId),
    #[error("posting_conflict: posting id {0:?} was posted before with different content")]
    Conflict(PostingId),
    #[error("books_unbalanced: {currency} balances sum to {sum}, not zero")]
    Unbalanced { currency: Currency, sum: Decimal },
    #[error(transparent)]
    Overflow(#[from] Overflow),
}

/// Balances from postings: debit-positive per (currency, account), plus every posting by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Books {
    postings: BTreeMap<PostingId, Posting>,
    balances: BTreeMap<(Currency, Account), Decimal>,
}

impl Books {
    pub fn new() -> Self {
        Books::default()
    }

    /// Applies a posting. A repeat of an applied posting (same id, same content) is ignored and
    /// returns `false`: a retried run cannot post twice. A different posting under a known id
    /// is a conflict.
    pub fn apply(&mut self, posting: &Posting) -> Result<bool, BooksError> {
        if posting.amount.is_sign_negative() && !posting.amount.is_zero() {
            return Err(BooksError::Negative(posting.id));
        }
        if posting.debit_account == posting.credit_account {
            return Err(BooksError::SameAccount(posting.id));
        }
        if let Some(known) = self.postings.get(&posting.id) {
            return if known == posting { Ok(false) } else { Err(BooksError::Conflict(posting.id)) };
        }
        let debit = self.balance(&posting.debit_account, posting.currency);
        let credit = self.balance(&posting.credit_account, posting.currency);
        let debit = debit.checked_add(posting.amount).ok_or_else(|| crate::tariff::line::overflow("balance"))?;
        let credit = credit.checked_sub(posting.amount).ok_or_else(|| crate::tariff::line::overflow("balance"))?;
        self.balances.insert((posting.currency, posting.debit_account.clone()), debit);
        self.balances.insert((posting.currency, posting.credit_account.clone()), credit);
        self.postings.insert(posting.id, posting.clone());
        Ok(true)
    }

    /// An account's balance, debit-positive (a customer owing money has a positive balance).
    pub fn balance(&self, account: &Account, currency: Currency) -> Decimal {
        self.balances.get(&(currency, account.clone())).copied().unwrap_or(Decimal::ZERO)
    }

    /// Every non-zero balance in account order.
    pub fn balances(&self) -> impl Iterator<Item = (&(Currency, Account), &Decimal)> {
        self.balances.iter().filter(|(_, amount)| !amount.is_zero())
    }

    /// The applied postings, by id.
    pub fn postings(&self) -> impl Iterator<Item = &Posting> {
        self.postings.values()
    }
}

/// Builds books from postings and checks them: every posting non-negative between two distinct
/// accounts, no conflicting ids, and per currency the balances sum to zero (each posting's
/// debit equals its credit, so the trial balance must).
pub fn check_books<'a>(postings: impl IntoIterator<Item = &'a Posting>) -> Result<Books, BooksError> {
    let mut books = Books::new();
    for posting in postings {
        books.apply(posting)?;
    }
    let mut sums: BTreeMap<Currency, Decimal> = BTreeMap::new();
    for ((currency, _), amount) in &books.balances {
        let sum = sums.entry(*currency).or_default();
        *sum = sum.checked_add(*amount).ok_or_else(|| crate::tariff::line::overflow("trial balance"))?;
    }
    if let Some((currency, sum)) = sums.into_iter().find(|(_, sum)| !sum.is_zero()) {
        return Err(BooksError::Unbalanced { currency, sum });
    }
    Ok(books)
}
