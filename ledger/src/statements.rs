//! The client API of settlement (issue 13): a customer's statements (the open periods as their
//! close would state them now, the closed ones frozen) and usage and cost per interval. Served
//! from committed state; billing presents these and computes no money of its own.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use domain::api::{CustomerInterval, CustomerStatements, RefusedClose};
use domain::ids::{CustomerId, PartyId};
use domain::limits::SETTLEMENT_INTERVAL_SECONDS;
use domain::tariff::Flag;
use serde::Deserialize;

use crate::api::{ApiError, AppState};
use crate::settle;
use crate::state::{self, Table};

/// Most intervals one `GET /v1/customers/{id}/intervals` returns: a 31-day month with a 25-hour
/// day (2,980), so a month is one page.
pub const INTERVALS_PER_PAGE_MAX: usize = 2_980;

pub(crate) fn customer_party(app: &AppState, customer_id: &str) -> Result<(CustomerId, PartyId), ApiError> {
    let bad = |error: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_customer_id", error);
    let customer = CustomerId::new(customer_id).map_err(|error| bad(error.to_string()))?;
    let party: PartyId = customer_id.parse().map_err(|error: domain::ids::IdError| bad(error.to_string()))?;
    if state::customer_currency(&app.store.state(), &customer).is_none() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "unknown_customer", format!("no customer {customer}")));
    }
    Ok((customer, party))
}

/// `GET /v1/customers/{id}/statements`.
pub async fn customer_statements(
    State(app): State<AppState>,
    Path(customer_id): Path<String>,
) -> Result<Json<CustomerStatements>, ApiError> {
    let (customer, party) = customer_party(&app, &customer_id)?;
    let view = app.store.state();
    let mut statements = CustomerStatements {
        customer_id: customer,
        open: Vec::new(),
        closed: Vec::new(),
        refused: Vec::new(),
        as_of_ms: app.store.as_of_ms(),
        applied_index: app.store.applied_index(),
    };
    for (_, bytes) in app.store.scan_prefix(Table::Private, &settle::period_prefix(&party)) {
        let record = settle::decode_period(&bytes);
        match (&record.statement, &record.close_refused) {
            (Some(statement), _) => statements.closed.push(statement.clone()),
            (None, Some(reason)) => {
                statements.refused.push(RefusedClose { period: record.period, reason: reason.clone() })
            }
            (None, None) => match settle::close_over(&view, &record, period_intervals(&app, &party, &record)) {
                Ok((statement, _)) => statements.open.push(statement),
                Err(reason) => statements.refused.push(RefusedClose { period: record.period, reason }),
            },
        }
    }
    Ok(Json(statements))
}

/// A period's interval records in one range scan of the customer's intervals (what
/// `settle::period_intervals` finds with a lookup per quarter-hour, for the state machine).
fn period_intervals(
    app: &AppState,
    party: &PartyId,
    record: &settle::PeriodRecord,
) -> Vec<(domain::ids::UnixSeconds, settle::IntervalRecord)> {
    let prefix = settle::interval_prefix(party);
    let key = |at: i64| [prefix.as_slice(), &at.to_be_bytes()].concat();
    app.store
        .scan_between(Table::Private, &prefix, &key(record.period.start.0), &key(record.period.end.0))
        .into_iter()
        .map(|(_, bytes)| settle::decode_interval(&bytes))
        .filter(|interval| interval.period_start == record.period.start)
        .map(|interval| (interval.priced.energy.start, interval))
        .collect()
}

/// The `from`/`to` query of the intervals endpoint: UTC seconds, `[from, to)`.
#[derive(Debug, Deserialize)]
pub struct IntervalRange {
    #[serde(default)]
    pub from: Option<i64>,
    #[serde(default)]
    pub to: Option<i64>,
}

/// `GET /v1/customers/{id}/intervals?from=&to=`: at most `INTERVALS_PER_PAGE_MAX`, from `from`
/// (default: the first) in start order; ask again from the last start + 900 for more.
pub async fn customer_intervals(
    State(app): State<AppState>,
    Path(customer_id): Path<String>,
    Query(range): Query<IntervalRange>,
) -> Result<Json<Vec<CustomerInterval>>, ApiError> {
    let (_, party) = customer_party(&app, &customer_id)?;
    let prefix = settle::interval_prefix(&party);
    let from = range.from.unwrap_or(i64::MIN);
    let to = range.to.unwrap_or(i64::MAX);
    let mut intervals = Vec::new();
    let mut cursor = [prefix.as_slice(), &from.to_be_bytes()].concat();
    // Keys sort by big-endian start; negative starts (before 1970) do not occur in readings.
    if from < 0 {
        cursor = prefix.clone();
    }
    while intervals.len() < INTERVALS_PER_PAGE_MAX {
        let Some((key, bytes)) = app.store.first_from(Table::Private, &cursor, &prefix) else { break };
        let record = settle::decode_interval(&bytes);
        let start = record.priced.energy.start.0;
        if start >= to {
            break;
        }
        cursor = [key.as_slice(), &[0]].concat();
        if start < from {
            continue;
        }
        intervals.push(CustomerInterval {
            start,
            local_start: record.priced.local_start,
            import_wh: record.priced.energy.import_wh,
            export_wh: record.priced.energy.export_wh,
            quality: record.quality,
            flags: record.priced.flags.iter().copied().filter(|flag| *flag != Flag::Partial).collect(),
            complete: record.covered_s >= SETTLEMENT_INTERVAL_SECONDS,
            meters: record.meters.iter().cloned().collect(),
            tariff: record.tariff.clone(),
            charge: record.charge(&party),
            lines: record.priced.lines,
        });
    }
    Ok(Json(intervals))
}
