//! The live bill (issue 17): `GET /v1/customers/{id}/bill/stream`, server-sent events that update
//! a customer's page as the ledger settles intervals.
//!
//! Events (each `id:` is the ledger position the event reflects):
//! - `bill`: the running bill, as `GET /v1/customers/{id}/bill` answers it; sent on connect and
//!   whenever a feed page rewrote the customer;
//! - `intervals`: the customer's intervals written since the last event, grouped by interval as
//!   `GET .../usage?group_by=interval` groups them (`{"customer_id", "currency",
//!   "ledger_index", "intervals": [...]}`);
//! - `reset`: the stream cannot say what changed since the client's last event (the read model was
//!   rebuilt, or more than [`INTERVALS_PER_EVENT_MAX`] intervals changed): reload everything;
//! - `error`: the caller may no longer read (`{"code", "message"}`, e.g. `revoked_token`); the
//!   stream ends.
//!
//! Resuming: a client that reconnects with `Last-Event-ID: P` (or `?last_event_id=P`) first gets
//! every interval billing wrote after position P, then the bill, so a dropped connection loses
//! nothing. Interval rows carry the position they were written at (migration 0002); the position
//! is read before the rows, so a resumed stream may repeat an interval, never skip one.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use domain::ids::CustomerId;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};

use crate::api::{refuse, Refusal, Shared};
use crate::metrics::EventLabels;
use crate::read_model::Position;
use crate::usage::{GroupBy, Range};

/// Most live streams billing keeps open at once.
pub const STREAMS_MAX: usize = 1_000;
/// Most live streams one token may hold open (a customer with a page open on a few devices).
pub const STREAMS_PER_TOKEN_MAX: usize = 4;
/// Most intervals one `intervals` event carries (a month is 2,976); beyond it, `reset`.
pub const INTERVALS_PER_EVENT_MAX: u64 = 3_000;
/// A comment line this often keeps proxies from closing a quiet stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Events queued for a slow client before the stream waits for it.
const EVENTS_QUEUED: usize = 16;

/// The open streams, per token.
#[derive(Debug, Default)]
pub struct Streams {
    open: Mutex<HashMap<String, usize>>,
}

/// One open stream's place; given back when the stream ends.
#[derive(Debug)]
struct Slot {
    streams: Arc<Streams>,
    token_id: String,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Streams {
    fn open(self: &Arc<Self>, token_id: &str, metrics: &Arc<crate::metrics::Metrics>) -> Result<Slot, Refusal> {
        let mut open = self.open.lock().expect("stream registry lock is never poisoned");
        let total: usize = open.values().sum();
        let mine = open.get(token_id).copied().unwrap_or(0);
        if total >= STREAMS_MAX {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_streams",
                format!("billing has {STREAMS_MAX} live streams open; retry later"),
            )
            .retry_after(5));
        }
        if mine >= STREAMS_PER_TOKEN_MAX {
            return Err(Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                format!("token {token_id} has {STREAMS_PER_TOKEN_MAX} live streams open; close one first"),
            )
            .retry_after(5));
        }
        *open.entry(token_id.to_string()).or_default() += 1;
        metrics.streams_open.inc();
        Ok(Slot { streams: self.clone(), token_id: token_id.to_string(), metrics: metrics.clone() })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().expect("stream registry lock is never poisoned");
        if let Some(count) = open.get_mut(&self.token_id) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.token_id);
            }
        }
        self.metrics.streams_open.dec();
    }
}

/// `?last_event_id=` (for clients that cannot set the `Last-Event-ID` header).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Resume after this event id (a ledger position); the `Last-Event-ID` header wins.
    pub last_event_id: Option<u64>,
}

/// The position a reconnecting client last saw: `Last-Event-ID`, else `?last_event_id=`.
fn resume_from(headers: &HeaderMap, query: &StreamQuery) -> Result<Option<u64>, Refusal> {
    match headers.get("last-event-id") {
        Some(value) => {
            let text = value.to_str().unwrap_or_default().trim();
            if text.is_empty() {
                return Ok(None);
            }
            text.parse().map(Some).map_err(|_| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "bad_last_event_id",
                    format!("Last-Event-ID is a ledger position (a whole number), not {text:?}"),
                )
            })
        }
        None => Ok(query.last_event_id),
    }
}

/// `GET /v1/customers/{id}/bill/stream`.
#[utoipa::path(
    get,
    path = "/v1/customers/{customer_id}/bill/stream",
    tag = "customers",
    summary = "The running bill, live: server-sent events as intervals settle",
    params(
        ("customer_id" = String, Path, description = "The customer's id", example = "C0000000"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event id (a ledger position)"),
        StreamQuery
    ),
    responses(
        crate::openapi::CustomerRefusals,
        (status = 200, description = "An event stream: `bill`, `intervals`, `reset` and `error` events, each with \
                                      the ledger position as its id", content_type = "text/event-stream", body = String),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn bill_stream(
    State(shared): State<Shared>,
    headers: HeaderMap,
    customer_id: Result<Path<String>, PathRejection>,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Response {
    let opened = async {
        let customer_id = crate::api::path_param(customer_id)?;
        let query = crate::api::checked(query)?;
        let caller = shared.gate.caller(&headers)?;
        let (customer, _, _) = crate::api::known_customer_of(&shared, &caller, customer_id, "bill_stream").await?;
        let after = resume_from(&headers, &query)?;
        let slot = shared.streams.open(&caller.token_id, &shared.metrics)?;
        Ok::<_, Refusal>((caller, customer, after, slot))
    }
    .await;
    let (caller, customer, after, slot) = match opened {
        Ok(opened) => opened,
        Err(refusal) => return refuse(&shared, refusal),
    };
    // Subscribed before the first read, so no page falls between the read and the subscription.
    let changes = shared.feed.subscribe_changes();
    let (events, receiver) = mpsc::channel::<Result<Event, Infallible>>(EVENTS_QUEUED);
    tokio::spawn(async move {
        let _slot = slot;
        let live = Live { shared, caller, customer, events, sent: after };
        live.run(changes).await;
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

/// One open stream.
struct Live {
    shared: Shared,
    caller: crate::auth::Caller,
    customer: CustomerId,
    events: mpsc::Sender<Result<Event, Infallible>>,
    /// The position of the last event sent (or the client's `Last-Event-ID`).
    sent: Option<u64>,
}

/// Why a stream ends.
enum End {
    /// The client went away.
    Gone,
    /// The stream told the client why and ends.
    Refused,
}

impl Live {
    async fn run(mut self, mut changes: broadcast::Receiver<crate::feed::Changed>) {
        let first = self.sent.is_some();
        if self.update(first).await.is_err() {
            return;
        }
        loop {
            let changed = tokio::select! {
                changed = changes.recv() => changed,
                () = self.events.closed() => return,
            };
            let step = match changed {
                Ok(changed) if changed.reset => {
                    self.sent = None;
                    match self.send("reset", None, "{\"reason\":\"rebuilt\"}".into()).await {
                        Ok(()) => self.update(false).await,
                        Err(end) => Err(end),
                    }
                }
                Ok(changed) if !changed.customers.contains(self.customer.as_str()) => continue,
                // Fell behind the feed: it cannot tell which pages named the customer; look.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => self.update(true).await,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if step.is_err() {
                return;
            }
        }
    }

    /// Sends what changed since the last event (the intervals, if `with_intervals`) and the bill.
    async fn update(&mut self, with_intervals: bool) -> Result<(), End> {
        if let Err(refusal) = self.shared.gate.still_admitted(&self.caller) {
            let body = serde_json::json!({ "code": refusal.code(), "message": refusal.message() });
            let _ = self.send("error", None, body.to_string()).await;
            return Err(End::Refused);
        }
        let position = self.shared.model.position().await.map_err(|error| self.failed(error))?;
        let account = match self.shared.model.account(self.customer.as_str()).await {
            Ok(Some(account)) => account,
            // Gone in a rebuild: the next page brings it back.
            Ok(None) => return Ok(()),
            Err(error) => return Err(self.failed(error)),
        };
        if with_intervals {
            if let Some(after) = self.sent {
                if after > position.ledger_index {
                    let reason = format!("{{\"reason\":\"position {after} is ahead of billing's\"}}");
                    self.send("reset", None, reason).await?;
                } else {
                    self.send_intervals(after, position, &account).await?;
                }
            }
        }
        let bill = crate::api::running_bill(&self.shared, &self.customer, &account, position)
            .await
            .map_err(|refusal| self.failed(anyhow::anyhow!("{}", refusal.message())))?;
        let data = serde_json::to_string(&bill).expect("a bill serialises");
        self.send("bill", Some(position.ledger_index), data).await?;
        self.sent = Some(position.ledger_index);
        Ok(())
    }

    async fn send_intervals(
        &mut self,
        after: u64,
        position: Position,
        account: &domain::api::CustomerAccount,
    ) -> Result<(), End> {
        let rows = self
            .shared
            .model
            .intervals_changed(self.customer.as_str(), after, INTERVALS_PER_EVENT_MAX + 1)
            .await
            .map_err(|error| self.failed(error))?;
        if rows.len() as u64 > INTERVALS_PER_EVENT_MAX {
            let reason = format!("{{\"reason\":\"more than {INTERVALS_PER_EVENT_MAX} intervals changed\"}}");
            return self.send("reset", None, reason).await;
        }
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else { return Ok(()) };
        let range = Range {
            from: first.start_s,
            to: last.start_s + domain::limits::SETTLEMENT_INTERVAL_SECONDS,
            read_from: first.start_s,
            group_by: GroupBy::Interval,
            page_size: INTERVALS_PER_EVENT_MAX as u32,
        };
        let (groups, _) = crate::usage::group(&rows, &range, account.currency.minor_unit_digits());
        let data = serde_json::json!({
            "customer_id": self.customer,
            "currency": account.currency.to_string(),
            "ledger_index": position.ledger_index,
            "intervals": groups,
        });
        self.send("intervals", Some(position.ledger_index), data.to_string()).await
    }

    async fn send(&self, name: &'static str, id: Option<u64>, data: String) -> Result<(), End> {
        let mut event = Event::default().event(name).data(data);
        if let Some(id) = id {
            event = event.id(id.to_string());
        }
        self.events.send(Ok(event)).await.map_err(|_| End::Gone)?;
        self.shared.metrics.stream_events.get_or_create(&EventLabels { event: name }).inc();
        Ok(())
    }

    fn failed(&self, error: anyhow::Error) -> End {
        tracing::error!(error = format!("{error:#}"), customer = %self.customer, "a live bill stream failed a read");
        End::Refused
    }
}
