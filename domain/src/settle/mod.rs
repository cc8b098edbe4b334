//! Settlement over tariff versions (issue 13): register samples mapped onto 15-minute
//! intervals, billing periods in local time, period close into a rounded `Statement`, and the
//! double-entry postings both produce, checked by `check_books`.
//!
//! The ledger's part (state, admin transactions, ticks, bindings) calls these functions:
//! [`map_registers`] → [`crate::tariff::price_interval`] per interval → [`interval_postings`]
//! (run 0 on apply), and at period close [`close_period`], whose postings it applies as well.
//! All of it is sans-IO and deterministic; [`settle_period`] runs the whole chain for one
//! meter's period, for tests, the bench and billing's "what if".

pub mod binding;
pub mod close;
pub mod correction;
pub mod credit;
pub mod invoice;
pub mod mapping;
pub mod period;
pub mod posting;
pub mod registers;
pub mod run;
pub mod vee;

pub use binding::{combine, Binding, BindingError, Bindings, Unbound};
pub use close::{
    close_period, close_period_with_corrections, CloseError, Closed, Correction, Statement, StatementLine,
};
pub use correction::correction_postings;
pub use credit::{
    credit_note_number, document_postings, CreditError, CreditIssue, CreditKind, CreditNoteDocument, CreditNoteLine,
    CreditOrder, CreditScope, Credited, LineCredit, CREDIT_NOTE_FORMAT,
};
pub use invoice::{invoice_number, Completeness, InvoiceDocument, Issue, INVOICE_FORMAT};
pub use mapping::{map_registers, MappedInterval, MappingError, RegisterSample};
pub use period::{BillingPeriod, PeriodError};
pub use posting::{
    check_books, interval_postings, posting, Account, AccountKind, Books, BooksError, Posting, PostingId, Run,
};
pub use registers::{register_reads, MeterReads, RegisterRead, SettledInterval};
pub use run::{settle_period, PeriodSettlement, SettleError};
pub use vee::{estimate_interval, EstimationRule, QualifiedInterval, Quality};

#[cfg(test)]
mod binding_examples;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod worked_examples;
