//! What each rejection means, sans-IO: every reason code belongs to one class (docs/gateway.md
//! has the table), and the class decides where the message goes and whether it can come back.
//!
//! - **final**: nothing a configuration change could alter (an equivocation, a signature the
//!   ledger refused). Kept in the quarantine with its bytes, never dropped.
//! - **retryable**: the ledger's configuration is not there yet (`unknown_meter`, `unknown_key`,
//!   `no_tariff`, `currency_mismatch`, `unbound`). The reading stays in the outbox's retry queue with backoff,
//!   then, past the retry horizon, becomes held.
//! - **held**: a validly signed reading that failed a check the operator can fix (the gateway's
//!   own content checks, or a ledger refusal past the retry horizon, or a ledger reason this
//!   gateway does not know). Kept with its signed bytes until released; never dropped.
//! - **unverified**: the gateway has no key for the reading's meter yet, so the signature cannot be
//!   checked and anyone could have sent it. Kept whole in the bounded garbage store and released
//!   on its own when the registry learns the meter; dropped (counted) only past the garbage bound.
//! - **garbage**: not a signed reading at all (malformed, oversized, a signature that does not
//!   verify). Kept, cut, in the bounded garbage store for inspection; oldest dropped first.

use serde::{Deserialize, Serialize};

/// The class of a rejection reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonClass {
    Final,
    Retryable,
    Held,
    Unverified,
    Garbage,
}

impl ReasonClass {
    /// Stable name (metrics label, JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonClass::Final => "final",
            ReasonClass::Retryable => "retryable",
            ReasonClass::Held => "held",
            ReasonClass::Unverified => "unverified",
            ReasonClass::Garbage => "garbage",
        }
    }

    /// Kept in the bounded garbage store (anyone on the broker can make such messages) rather
    /// than beside the outbox, so they never count against the disk budget that stops intake.
    pub fn is_bounded(self) -> bool {
        matches!(self, ReasonClass::Unverified | ReasonClass::Garbage)
    }

    /// Whether `wattle quarantine release` may re-submit an entry of this class.
    pub fn is_releasable(self) -> bool {
        matches!(self, ReasonClass::Held | ReasonClass::Unverified)
    }
}

/// The class of a reason the gateway gives itself (ingest).
pub fn gateway_reason_class(reason: &str) -> ReasonClass {
    match reason {
        "equivocation" => ReasonClass::Final,
        "unknown_meter" | "unknown_key" => ReasonClass::Unverified,
        // A key outside its window: kept with its bytes for the operator (a meter still signing
        // with a rotated-out key needs its firmware fixed, not its readings dropped).
        "clock_future" | "implausible_energy" | "register_backwards" | "key_not_yet_valid" | "key_retired" => {
            ReasonClass::Held
        }
        // malformed_*, payload_too_large, bad_signature (unverifiable bytes: anyone can send
        // them), attested_* and every other input fault.
        _ => ReasonClass::Garbage,
    }
}

/// The class of a reason the ledger gives for a reading the gateway verified and forwarded
/// (`ReadingResult` codes and the leader's own checks, `ledger/src/api.rs`). A code this gateway
/// does not know is held, never dropped: a newer ledger may refuse for a cause an operator fixes.
pub fn ledger_reason_class(reason: &str) -> ReasonClass {
    match reason {
        "equivocation" | "bad_signature" => ReasonClass::Final,
        "unknown_meter" | "unknown_key" | "no_tariff" | "currency_mismatch" | "unbound" => ReasonClass::Retryable,
        _ => ReasonClass::Held,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ledger_refusal_that_configuration_can_fix_is_retried_and_unknown_codes_are_held() {
        for reason in ["unknown_meter", "unknown_key", "no_tariff", "currency_mismatch", "unbound"] {
            assert_eq!(ledger_reason_class(reason), ReasonClass::Retryable, "{reason}");
        }
        assert_eq!(ledger_reason_class("equivocation"), ReasonClass::Final);
        assert_eq!(ledger_reason_class("bad_signature"), ReasonClass::Final);
        assert_eq!(ledger_reason_class("implausible_energy"), ReasonClass::Held);
        assert_eq!(ledger_reason_class("key_retired"), ReasonClass::Held);
        assert_eq!(ledger_reason_class("a_code_from_a_newer_ledger"), ReasonClass::Held);
        for reason in ["clock_future", "implausible_energy", "register_backwards", "key_not_yet_valid", "key_retired"] {
            assert_eq!(gateway_reason_class(reason), ReasonClass::Held, "{reason}");
        }
        assert_eq!(gateway_reason_class("bad_signature"), ReasonClass::Garbage);
        assert_eq!(gateway_reason_class("malformed_envelope"), ReasonClass::Garbage);
        assert!(ReasonClass::Unverified.is_bounded() && ReasonClass::Unverified.is_releasable());
        assert!(!ReasonClass::Held.is_bounded() && !ReasonClass::Final.is_releasable());
    }
}
