//! Node endorsements over time: the service key's endorsements of a node's (id, key), each
//! without a period (valid until revoked, as every endorsement was before periods existed) or
//! for a validity period (`domain::receipt::Validity`, on the ledger's clock). Renewing a key
//! adds an endorsement for a later period and keeps the earlier ones, so the receipt of a root
//! signed last year still carries the endorsement that held when it was signed. Part of the state
//! machine (sans-IO): `EndorseNode` records them, receipts, the audit and the client API read them.
//!
//! Stored under `n/{node id}{node key}`: 64 bytes (one endorsement without a period, the layout
//! before periods) or a list of records, each a kind byte (0 no period, 1 period), the
//! endorsement's 64 signature bytes and, for a period, its two ends.

use domain::codec::{Reader, Writer};
use domain::receipt::{endorsement_message_for, Validity};

use crate::state::{key_endorsement, Overlay, StateRead, Table};

/// Most endorsements one node key collects (renewals): the list is read on every receipt.
pub const ENDORSEMENTS_PER_KEY_MAX: usize = 64;

/// One endorsement of a node key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeEndorsement {
    pub signature: [u8; 64],
    pub validity: Option<Validity>,
}

impl NodeEndorsement {
    /// Whether it holds at `at` (ms, the ledger's clock): always without a period.
    pub fn holds_at(&self, at: i64) -> bool {
        self.validity.is_none_or(|period| period.covers(at))
    }
}

fn decode(bytes: &[u8]) -> Vec<NodeEndorsement> {
    if let Ok(signature) = <[u8; 64]>::try_from(bytes) {
        return vec![NodeEndorsement { signature, validity: None }];
    }
    let mut reader = Reader::new(bytes);
    let mut list = Vec::new();
    while reader.remaining() > 0 {
        let kind = crate::state::decode_or_crash(reader.u8());
        let signature = crate::state::decode_or_crash(reader.array());
        let validity = (kind == 1).then(|| Validity {
            not_before: crate::state::decode_or_crash(reader.i64()),
            not_after: crate::state::decode_or_crash(reader.i64()),
        });
        list.push(NodeEndorsement { signature, validity });
    }
    list
}

fn encode(list: &[NodeEndorsement]) -> Vec<u8> {
    let mut writer = Writer::with_capacity(list.len() * 81);
    for endorsement in list {
        writer.u8(u8::from(endorsement.validity.is_some())).fixed(&endorsement.signature);
        if let Some(period) = endorsement.validity {
            writer.i64(period.not_before).i64(period.not_after);
        }
    }
    writer.finish()
}

/// Every endorsement recorded for (node id, node key), oldest first.
pub fn endorsements(state: &dyn StateRead, node_id: u64, node_key: &[u8; 32]) -> Vec<NodeEndorsement> {
    state.get(Table::Public, &key_endorsement(node_id, node_key)).map_or_else(Vec::new, |bytes| decode(&bytes))
}

/// The endorsement a root signed at `signed_at` is checked against: of those whose period covers
/// that time, the earliest to begin (a renewal starts later than what it renews, even backdated,
/// so a root keeps the endorsement it was signed under and its receipt never changes); else one
/// without a period. A signature that names no time
/// (made before signing times existed) has only endorsements without a period.
pub fn endorsement_at(
    state: &dyn StateRead,
    node_id: u64,
    node_key: &[u8; 32],
    signed_at: Option<i64>,
) -> Option<NodeEndorsement> {
    let list = endorsements(state, node_id, node_key);
    let periodic = signed_at.and_then(|at| {
        list.iter()
            .filter(|endorsement| endorsement.validity.is_some_and(|period| period.covers(at)))
            .min_by_key(|endorsement| endorsement.validity.map(|period| period.not_before))
    });
    periodic.or_else(|| list.iter().rev().find(|endorsement| endorsement.validity.is_none())).copied()
}

/// Records an endorsement the service key signed (checked here); a repeat of one already recorded
/// changes nothing.
pub fn record(
    state: &mut Overlay<'_>,
    node_id: u64,
    node_key: &[u8; 32],
    service_key: &[u8; 32],
    endorsement: NodeEndorsement,
) -> Result<(), String> {
    if let Some(period) = endorsement.validity {
        if !period.is_ordered() {
            return Err(format!(
                "bad_validity: the endorsement's period ends ({}) before it begins ({})",
                period.not_after, period.not_before
            ));
        }
    }
    let message = endorsement_message_for(node_id, node_key, endorsement.validity);
    domain::verify::verify_signature(service_key, &endorsement.signature, &message)
        .map_err(|error| format!("bad_endorsement: {error}"))?;
    let mut list = endorsements(state, node_id, node_key);
    if list.contains(&endorsement) {
        return Ok(());
    }
    if list.len() >= ENDORSEMENTS_PER_KEY_MAX {
        return Err(format!(
            "too_many_endorsements: node {node_id}'s key has {ENDORSEMENTS_PER_KEY_MAX} endorsements; endorse a new key"
        ));
    }
    list.push(endorsement);
    // One endorsement without a period keeps the layout it always had.
    let bytes = match list.as_slice() {
        [only] if only.validity.is_none() => only.signature.to_vec(),
        _ => encode(&list),
    };
    state.put(Table::Public, key_endorsement(node_id, node_key), bytes);
    Ok(())
}

/// How long before `now` a new endorsement's period begins, so that roots its node signed while
/// it waited for the endorsement (and clocks a little behind) are covered.
pub const PERIOD_LEAD_MS: i64 = 86_400_000;
/// Default length of an endorsement's period (`--valid-days`).
pub const VALID_DAYS_DEFAULT: u32 = 365;

/// The period of an endorsement made at `now_ms` for `days` days: from [`PERIOD_LEAD_MS`] before
/// `now_ms` to `days` days after it.
pub fn period_from(now_ms: i64, days: u32) -> Validity {
    Validity { not_before: now_ms - PERIOD_LEAD_MS, not_after: now_ms + i64::from(days) * 86_400_000 }
}

/// Warn this long before a node's own endorsement expires.
pub const EXPIRY_WARNING_MS: i64 = 30 * 86_400_000;

/// A node's own endorsement at start: refused once expired or before it begins, warned about in
/// its last [`EXPIRY_WARNING_MS`].
pub fn check_own_period(node_id: u64, period: Validity, now_ms: i64) -> anyhow::Result<()> {
    anyhow::ensure!(
        now_ms <= period.not_after,
        "node {node_id}'s endorsement expired at {} (now {}): ask the service key's holder for a new one \
         (`wattle node endorsement --valid-days`)",
        instant(period.not_after),
        instant(now_ms)
    );
    anyhow::ensure!(
        now_ms >= period.not_before,
        "node {node_id}'s endorsement holds only from {} (now {})",
        instant(period.not_before),
        instant(now_ms)
    );
    if period.not_after - now_ms < EXPIRY_WARNING_MS {
        tracing::warn!(node_id, expires = %instant(period.not_after), "this node's endorsement expires soon: renew it");
    }
    Ok(())
}

fn instant(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(|| format!("{ms} ms"), |at| at.to_rfc3339())
}

/// The text form of an endorsement (`wattle node endorsement` prints it, `--endorsement` takes
/// it): 128 hex characters, then `:NOT_BEFORE_MS:NOT_AFTER_MS` when it has a period.
pub fn format_endorsement(signature: &[u8; 64], validity: Option<Validity>) -> String {
    match validity {
        None => hex::encode(signature),
        Some(period) => format!("{}:{}:{}", hex::encode(signature), period.not_before, period.not_after),
    }
}

/// Parses [`format_endorsement`]'s text.
pub fn parse_endorsement(text: &str) -> Result<([u8; 64], Option<Validity>), String> {
    let mut parts = text.trim().split(':');
    let signature: [u8; 64] = parts
        .next()
        .and_then(|hex_text| hex::decode(hex_text).ok())
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or("an endorsement opens with 128 hex characters")?;
    let validity = match (parts.next(), parts.next(), parts.next()) {
        (None, _, _) => None,
        (Some(from), Some(to), None) => {
            let bound = |text: &str| text.parse::<i64>().map_err(|_| format!("{text:?} is not a time in ms"));
            let period = Validity { not_before: bound(from)?, not_after: bound(to)? };
            if !period.is_ordered() {
                return Err("the endorsement's period ends before it begins".into());
            }
            Some(period)
        }
        _ => return Err("an endorsement reads HEX or HEX:NOT_BEFORE_MS:NOT_AFTER_MS".into()),
    };
    Ok((signature, validity))
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::receipt::endorse_for;
    use ed25519_dalek::SigningKey;

    use crate::state::EmptyState as Empty;

    fn endorsed(validity: Option<Validity>) -> NodeEndorsement {
        let service = SigningKey::from_bytes(&[9; 32]);
        NodeEndorsement { signature: endorse_for(&service, 1, &[7; 32], validity), validity }
    }

    #[test]
    fn a_renewal_keeps_the_endorsement_that_held_when_a_root_was_signed() {
        let service = SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes();
        let base = Empty;
        let mut state = Overlay::new(&base);
        let first = endorsed(Some(Validity { not_before: 1_000, not_after: 2_000 }));
        let renewal = endorsed(Some(Validity { not_before: 1_900, not_after: 3_000 }));
        record(&mut state, 1, &[7; 32], &service, first).expect("recorded");
        record(&mut state, 1, &[7; 32], &service, renewal).expect("recorded");
        record(&mut state, 1, &[7; 32], &service, renewal).expect("a repeat changes nothing");
        assert_eq!(endorsements(&state, 1, &[7; 32]).len(), 2);
        assert_eq!(endorsement_at(&state, 1, &[7; 32], Some(1_500)), Some(first));
        // A renewal is backdated (it starts a day before it is made), so it may cover roots its
        // predecessor already covered: those keep the predecessor, and their receipts stay the
        // same after the renewal (tests/endorsement_expiry.rs saw one change).
        assert_eq!(endorsement_at(&state, 1, &[7; 32], Some(1_950)), Some(first), "the earliest to begin");
        assert_eq!(endorsement_at(&state, 1, &[7; 32], Some(2_500)), Some(renewal));
        assert_eq!(endorsement_at(&state, 1, &[7; 32], Some(3_001)), None, "expired");
        assert_eq!(endorsement_at(&state, 1, &[7; 32], Some(999)), None, "not yet endorsed");
        assert_eq!(endorsement_at(&state, 1, &[7; 32], None), None, "an untimed root needs a period-less one");
        // An endorsement without a period (valid until revoked) covers any time.
        let open = endorsed(None);
        record(&mut state, 1, &[7; 32], &service, open).expect("recorded");
        assert_eq!(endorsement_at(&state, 1, &[7; 32], Some(5_000)), Some(open));
        assert_eq!(endorsement_at(&state, 1, &[7; 32], None), Some(open));
    }

    #[test]
    fn the_text_form_round_trips_and_is_strict() {
        let period = Validity { not_before: 5, not_after: 9 };
        for validity in [None, Some(period)] {
            let text = format_endorsement(&[3; 64], validity);
            assert_eq!(parse_endorsement(&text), Ok(([3; 64], validity)));
        }
        let hex = hex::encode([3; 64]);
        for bad in
            ["", "abc", &format!("{hex}:5"), &format!("{hex}:5:x"), &format!("{hex}:9:5"), &format!("{hex}:1:2:3")]
        {
            assert!(parse_endorsement(bad).is_err(), "{bad}");
        }
        let now = 1_000 * EXPIRY_WARNING_MS;
        assert!(check_own_period(1, Validity { not_before: 0, not_after: now - 1 }, now).is_err(), "expired");
        assert!(check_own_period(1, Validity { not_before: now + 1, not_after: 2 * now }, now).is_err(), "not yet");
        assert!(
            check_own_period(1, Validity { not_before: 0, not_after: now + 1 }, now).is_ok(),
            "expiring: a warning"
        );
    }

    #[test]
    fn one_endorsement_without_a_period_keeps_its_old_layout_and_bad_ones_are_refused() {
        let service = SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes();
        let base = Empty;
        let mut state = Overlay::new(&base);
        let open = endorsed(None);
        record(&mut state, 1, &[7; 32], &service, open).expect("recorded");
        assert_eq!(state.get(Table::Public, &key_endorsement(1, &[7; 32])), Some(open.signature.to_vec()));
        let forged = NodeEndorsement { validity: Some(Validity { not_before: 0, not_after: 9 }), ..open };
        assert!(record(&mut state, 1, &[7; 32], &service, forged).expect_err("forged").starts_with("bad_endorsement"));
        let backwards = endorsed(Some(Validity { not_before: 9, not_after: 0 }));
        assert!(record(&mut state, 1, &[7; 32], &service, backwards)
            .expect_err("backwards")
            .starts_with("bad_validity"));
    }
}
