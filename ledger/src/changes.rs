//! `GET /v1/changes?from=&limit=&wait_ms=`: billing's feed (issue 16). The committed entries from
//! `from`, only those a signature covers (so each has a receipt), each with the customers whose
//! private data it changed: a readings entry names the customers of its accepted readings' meters
//! (by their bindings, or the meter's registered customer) and the first interval it touched; an invoice names its customer; a
//! tick (period closes, estimates), an admin or a governance entry may change any customer.
//! Private: served to registered readers, members and admitted nodes (`client_auth.rs`).
//! Long-polls like `GET /v1/transactions`.

use std::collections::BTreeSet;

use axum::extract::{Query, State};
use axum::Json;
use domain::api::{Change, ChangePage};
use domain::ids::{CustomerId, MeterId};
use domain::limits::SETTLEMENT_INTERVAL_SECONDS;
use domain::tx::TxBody;
use openraft::EntryPayload;
use serde::Deserialize;

use crate::api::{ApiError, AppState};
use crate::state::{claims_reading_lines, StateRead};

/// Most entries one page carries.
pub const CHANGES_PAGE_MAX: u64 = 1_000;
/// Longest long-poll.
pub const CHANGES_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, Deserialize)]
pub struct ChangesQuery {
    #[serde(default)]
    from: u64,
    limit: Option<u64>,
    #[serde(default)]
    wait_ms: u64,
}

/// Per reading of a readings entry's claims document, whether it was accepted (settled).
fn accepted(claims: &[u8]) -> Vec<bool> {
    let text = String::from_utf8_lossy(claims);
    let Some(lines) = claims_reading_lines(&text) else { return Vec::new() };
    lines.map(|line| line.split(' ').nth(3) == Some("accepted")).collect()
}

/// The customers a meter's readings settle to: every customer of its bindings, and the customer
/// it was registered for.
fn customers_of(state: &dyn StateRead, meter: &MeterId, into: &mut BTreeSet<CustomerId>) {
    for binding in crate::settle::bindings_of(state, meter) {
        if let Ok(customer) = CustomerId::new(binding.customer.as_str()) {
            into.insert(customer);
        }
    }
    if let Some(record) = crate::registry::meter(state, meter) {
        into.insert(record.customer_id);
    }
}

/// `GET /v1/changes`.
pub async fn changes(
    State(app): State<AppState>,
    Query(query): Query<ChangesQuery>,
) -> Result<Json<ChangePage>, ApiError> {
    let limit = query.limit.unwrap_or(CHANGES_PAGE_MAX).clamp(1, CHANGES_PAGE_MAX);
    let from = query.from.max(1);
    if query.wait_ms > 0 {
        let limit = std::time::Duration::from_millis(query.wait_ms).min(CHANGES_WAIT_MAX);
        app.store.wait_signed(from, limit).await;
    }
    let signed_index = app.store.signed_index();
    let mut page = ChangePage { changes: Vec::new(), next: from, signed_index };
    if signed_index < from {
        return Ok(Json(page));
    }
    let limit = limit.min(signed_index - from + 1);
    let records = app.store.history_range(from, limit).map_err(crate::api::storage_error)?;
    let state = app.store.state();
    for (index, record) in records {
        page.next = index + 1;
        let entry = crate::entry::decode_entry(&record.entry).map_err(crate::api::storage_error)?;
        let EntryPayload::Normal(tx) = &entry.payload else { continue };
        let mut customers = BTreeSet::new();
        let mut since_s = None;
        let (kind, all_customers) = match &tx.body {
            TxBody::Readings(batch) => {
                let accepted = accepted(record.claims.as_deref().unwrap_or_default());
                let mut meters = BTreeSet::new();
                for (item, _) in batch.readings.iter().zip(accepted).filter(|(_, accepted)| *accepted) {
                    let reading = item.reading.reading();
                    let start =
                        reading.interval_start.0.div_euclid(SETTLEMENT_INTERVAL_SECONDS) * SETTLEMENT_INTERVAL_SECONDS;
                    since_s = Some(since_s.map_or(start, |since: i64| since.min(start)));
                    meters.insert(reading.meter_id.clone());
                }
                for meter in &meters {
                    customers_of(&state, meter, &mut customers);
                }
                ("readings", false)
            }
            TxBody::IssueInvoice { customer, .. } => {
                customers.extend(CustomerId::new(customer.as_str()).ok());
                ("invoice", false)
            }
            TxBody::IssueCreditNote { customer, .. } => {
                customers.extend(CustomerId::new(customer.as_str()).ok());
                ("credit_note", false)
            }
            TxBody::Tick => ("tick", true),
            TxBody::Admin(_) => ("admin", true),
            TxBody::Gov(_) => ("governance", true),
            TxBody::SignatureMarker | TxBody::Signature(_) | TxBody::RotateSecret { .. } => continue,
        };
        if customers.is_empty() && !all_customers {
            continue;
        }
        page.changes.push(Change {
            index,
            tx_id: tx.tx_id.to_string(),
            kind: kind.to_string(),
            time_ms: tx.time.0,
            customers: customers.into_iter().collect(),
            since_s,
            all_customers,
        });
    }
    Ok(Json(page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_accepted_readings_count() {
        let claims = "wattle.claims.v1\nWTL0000000001 1 7 accepted 0.07817500 EUR\nWTL0000000002 1 3 duplicate - -\nWTL0000000003 2 1 accepted 0.1 EUR\n";
        assert_eq!(accepted(claims.as_bytes()), [true, false, true]);
        // v2: a reading's interval and component lines are not readings.
        let claims = "wattle.claims.v2\nWTL0000000001 1 7 accepted 0.1 EUR\n  interval 1767571200 period 1767222000 open tariff t1@2026-01-01T00:00:00 import_wh 1000 export_wh 0 quality actual flags -\n    energy:flat kwh 1.000 0.1 supplier-a 0.1000\nWTL0000000002 1 3 duplicate - -\n";
        assert_eq!(accepted(claims.as_bytes()), [true, false]);
        assert!(accepted(b"not claims\nWTL0000000001 1 7 accepted 1 EUR\n").is_empty());
    }
}
