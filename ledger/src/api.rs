//! The ledger's HTTP API: the client API used by gateways and billing (`/v1/...`), `/healthz`
//! and `/metrics`, and the router that also mounts the raft RPC endpoints (`raft_api.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use domain::api::{CustomerAccount, ErrorBody, MeterInfo, TransactionPage, TransactionSummary};
use domain::ids::{CustomerId, TxId};
use domain::settlement::RULES_VERSION;
use domain::tx::{Transaction, TxBody};
use openraft::{EntryPayload, Raft};
use serde::Deserialize;

use crate::entry::{NodeId, TypeConfig};
use crate::limits::{BUSY_RETRY_AFTER_S, COMMIT_WAIT_MAX, REQUEST_BYTES_MAX, TRANSACTION_PAGE_MAX};
use crate::state::{self, MeterRecord, Table, TxResult};
use crate::store::Store;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    pub node_id: NodeId,
    pub raft: Raft<TypeConfig>,
    pub store: Store,
    pub clock: crate::runtime::NodeClock,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// HTTP client for reaching peers (history fetch, admin configuration), built by `peer`.
    pub http: reqwest::Client,
    /// Plain HTTP or TLS to peers: their URLs' scheme and how their clients trust them.
    pub peer: crate::peer_http::PeerHttp,
    /// The way a follower forwards writes to the leader.
    pub forwarder: crate::forward::Forwarder,
    /// Verify reading signatures on the runtime thread instead of the blocking pool: the
    /// deterministic simulation needs it (a blocking task finishes in real time, so interleavings
    /// would depend on the machine); production keeps the runtime free.
    pub verify_inline: bool,
    /// Transactions this node proposed without waiting that have not been applied yet.
    pub pending: Arc<Mutex<std::collections::HashSet<TxId>>>,
    /// This node's key for signing Merkle roots.
    pub node_key: Arc<ed25519_dalek::SigningKey>,
    /// Signature transactions are proposed this often while the leader has unsigned entries;
    /// `None` switches them off (benchmarks only), and clients then wait for commit alone.
    pub signature_interval: Option<std::time::Duration>,
    /// Clients waiting for a signature right now: the leader signs at once while any wait.
    pub signature_waiters: Arc<AtomicU64>,
    /// Bounds on reading submissions in flight (`429` beyond them).
    pub admission: crate::admission::Admission,
    /// Admin transactions are checked and proposed one at a time, so each is checked against
    /// the state every earlier one left (admin actions are rare; readings never wait for this).
    pub admin_serial: Arc<tokio::sync::Mutex<()>>,
    /// The service public key raft peers must be endorsed by (`peer_auth.rs`); `None`: raft
    /// requests are not authenticated (single-operator tests and benchmarks).
    pub peer_trust: Option<[u8; 32]>,
    /// Signatures of the raft requests accepted lately: a captured one is refused the second time.
    /// The code measurement this node runs (`attestation.rs`): before governance accepts any,
    /// it hands the ledger secrets only to nodes running the same.
    pub measurement: [u8; 32],
    pub replay_guard: Arc<std::sync::Mutex<crate::peer_auth::ReplayGuard>>,
}

impl AppState {
    /// A customer's or meter's id as log lines name it: its keyed-hash id (`h-…`, what
    /// `/v1/meters` shows callers not entitled to the id), so logs name no household. Without
    /// ledger secrets (the simulation's memory store) the id itself.
    pub(crate) fn log_id(&self, id: &str) -> String {
        match self.store.secrets() {
            Some(secrets) => keyed_id(secrets, id),
            None => id.to_string(),
        }
    }

    /// A request path as log lines name it: the segment after `customers/` or `meters/` (an id)
    /// replaced by its keyed-hash id.
    pub(crate) fn log_path(&self, path: &str) -> String {
        let mut out = Vec::new();
        let mut hide_next = false;
        for segment in path.split('/') {
            out.push(if hide_next && !segment.is_empty() { self.log_id(segment) } else { segment.to_string() });
            hide_next = matches!(segment, "customers" | "meters");
        }
        out.join("/")
    }
}

/// The router of a ledger node: the client API, `/healthz`, `/metrics` and the raft endpoints.
pub fn router(state: AppState) -> Router {
    routes(state, true)
}

/// The client port of a node that serves raft on a port of its own (`NodeConfig::raft_listen`):
/// everything but `/raft/...`.
pub fn client_router(state: AppState) -> Router {
    routes(state, false)
}

fn routes(state: AppState, with_raft: bool) -> Router {
    // The client API reads the state: not while a snapshot install has replaced part of it.
    // A household's data: only for entitled callers when this node authenticates (`client_auth.rs`).
    let private = Router::new()
        .route("/v1/customers/{customer_id}/account", get(customer_account))
        .route("/v1/customers/{customer_id}/statements", get(crate::statements::customer_statements))
        .route("/v1/customers/{customer_id}/intervals", get(crate::statements::customer_intervals))
        .route("/v1/transactions/{tx_id}/claims", get(transaction_claims))
        .route("/v1/customers/{customer_id}/invoices", get(crate::invoices::customer_invoices))
        .route("/v1/customers/{customer_id}/credit-notes", get(crate::credit_notes::customer_credit_notes))
        .route("/v1/changes", get(crate::changes::changes))
        .route("/v1/history", get(history))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), require_entitled_reader));
    let client_api = Router::new()
        .merge(private)
        .route("/v1/readings", post(crate::submit::submit_readings))
        .route("/v1/meters", get(list_meters))
        .route("/v1/transactions", get(list_transactions))
        .route("/v1/transactions/{tx_id}", get(transaction_status))
        .route("/v1/receipts/{tx_id}", get(receipt))
        .route("/v1/admin", post(crate::admin::submit_admin))
        .route("/v1/config", get(public_config))
        .route("/v1/gov", post(crate::gov_api::submit_gov))
        .route("/v1/gov/proposals", get(crate::gov_api::list_proposals))
        .route("/v1/gov/proposals/{proposal_id}", get(crate::gov_api::show_proposal))
        .route("/v1/gov/constitution", get(crate::gov_api::show_constitution))
        .route("/v1/tariffs", get(list_tariffs))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), refuse_while_installing));
    let mut router = Router::new().merge(client_api).route("/healthz", get(healthz)).route("/metrics", get(metrics));
    if with_raft {
        router = router
            .route("/raft/append", post(crate::raft_api::raft_append))
            .route("/raft/vote", post(crate::raft_api::raft_vote))
            .route("/raft/snapshot", post(crate::raft_api::raft_snapshot))
            .route("/raft/secrets", post(crate::raft_api::raft_secrets));
    }
    router.layer(DefaultBodyLimit::max(REQUEST_BYTES_MAX)).with_state(state)
}

/// `503 installing_snapshot` with `Retry-After` while this node's state is being replaced by a
/// snapshot: an answer from it could be half old, half new (a gateway would have taken a
/// half-installed meter list for the registry).
async fn refuse_while_installing(
    State(app): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if app.store.installing() {
        let error = ApiError {
            retry_after_s: Some(INSTALLING_RETRY_AFTER_S),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "installing_snapshot",
                "this node is installing a snapshot; retry shortly or ask another node",
            )
        };
        return error.into_response();
    }
    next.run(request).await
}

/// Who signed `request`, if the ledger entitles that key to private data (`client_auth.rs`).
pub(crate) fn entitled_caller(
    app: &AppState,
    request: &axum::extract::Request,
) -> Result<crate::client_auth::Caller, crate::client_auth::Refusal> {
    let uri = request.uri();
    let path_and_query = uri.path_and_query().map_or(uri.path(), |value| value.as_str());
    let now_ms = domain::clock::wall_clock_now().0;
    let key = crate::client_auth::authenticate(request.headers(), request.method().as_str(), path_and_query, now_ms)?;
    let readers = app.store.scan_prefix(Table::Public, crate::registry::READER_PREFIX);
    let state = app.store.state();
    let members = crate::governance::members(&state);
    let nodes = app.store.scan_prefix(Table::Public, b"n/");
    let node_of_key = |key: &[u8; 32]| {
        nodes.iter().find_map(|(stored, _)| {
            let id = u64::from_be_bytes(stored.get(2..10)?.try_into().ok()?);
            (stored.get(10..42) == Some(key.as_slice()) && !crate::registry::node_revoked(&state, id, key))
                .then_some(id)
        })
    };
    let entitlements =
        crate::client_auth::Entitlements { readers: &readers, members: &members, node_of_key: &node_of_key };
    crate::client_auth::entitle(&key, &entitlements)
}

/// Private reads (`client_auth.rs`): on a node that authenticates its peers, served only to a
/// caller whose signed request names a registered reader, a member or an admitted node; every
/// one served is logged (who, what) and counted. A node without peer authentication (development)
/// serves them to anyone, as it warned at start.
async fn require_entitled_reader(
    State(app): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if app.peer_trust.is_none() {
        return next.run(request).await;
    }
    let path = app.log_path(request.uri().path());
    let caller = entitled_caller(&app, &request);
    match caller {
        Ok(caller) => {
            let kind = match caller {
                crate::client_auth::Caller::Reader(_) => "reader",
                crate::client_auth::Caller::Member(_) => "member",
                crate::client_auth::Caller::Node(_) => "node",
            };
            app.metrics.private_read(kind);
            tracing::info!(%caller, path, "private read");
            next.run(request).await
        }
        Err(refusal) => {
            app.metrics.read_refused(refusal.code);
            tracing::warn!(path, reason = refusal.code, message = %refusal.message, "private read refused");
            let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::FORBIDDEN);
            ApiError::new(status, refusal.code, refusal.message).into_response()
        }
    }
}

/// Seconds a client waits before asking a node that is installing a snapshot again.
const INSTALLING_RETRY_AFTER_S: u64 = 1;

/// An API error: HTTP status plus a stable code and a message; never internals.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: std::borrow::Cow<'static, str>,
    message: String,
    /// Seconds for a `Retry-After` header (`429` answers).
    retry_after_s: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: impl Into<std::borrow::Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        ApiError { status, code: code.into(), message: message.into(), retry_after_s: None }
    }

    /// A `429` for a submission beyond an in-flight bound, with `Retry-After`.
    pub(crate) fn busy(busy: crate::admission::Busy) -> Self {
        ApiError {
            retry_after_s: Some(BUSY_RETRY_AFTER_S),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, busy.code(), busy.to_string())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, Json(ErrorBody { code: self.code.into_owned(), message: self.message })).into_response();
        if let Some(seconds) = self.retry_after_s {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(seconds));
        }
        response
    }
}

/// `GET /v1/config`: the public configuration (admin nonce, flat price, revoked node keys).
async fn public_config(State(app): State<AppState>) -> Json<serde_json::Value> {
    let state = app.store.state();
    let revoked: Vec<serde_json::Value> = app
        .store
        .scan_prefix(Table::Public, crate::registry::REVOKED_NODE_PREFIX)
        .into_iter()
        .filter_map(|(key, _)| crate::registry::decode_revoked_node(&key))
        .map(|(node_id, node_key)| serde_json::json!({ "node_id": node_id, "node_key": hex::encode(node_key) }))
        .collect();
    Json(serde_json::json!({
        "admin_nonce": state::admin_nonce(&state),
        "flat_price": state::flat_price(&state),
        "revoked_nodes": revoked,
    }))
}

/// `GET /v1/tariffs`: every published tariff version, by id then start, with the SHA-256 of its
/// canonical JSON (what `wattle tariff check` prints) and the version itself.
async fn list_tariffs(State(app): State<AppState>) -> Json<Vec<serde_json::Value>> {
    let entries = app.store.scan_prefix(Table::Public, crate::tariffs::TARIFF_PREFIX);
    Json(
        crate::tariffs::decode_all(&entries)
            .into_iter()
            .map(|(tariff, json)| {
                serde_json::json!({
                    "id": tariff.id.to_string(),
                    "valid_from": tariff.valid_from.to_string(),
                    "valid_to": tariff.valid_to.map(|to| to.to_string()),
                    "sha256": hex::encode(domain::merkle::sha256(&json)),
                    "tariff": tariff,
                })
            })
            .collect(),
    )
}

/// Proposes a transaction and waits until it is committed, applied and covered by a signature.
pub async fn propose(app: &AppState, body: TxBody) -> Result<(u64, TxResult), ApiError> {
    propose_as(app, crate::runtime::new_tx_id(), body).await
}

/// Proposes a transaction under a chosen id and waits until it is committed, applied and
/// covered by a signature.
pub(crate) async fn propose_as(app: &AppState, tx_id: TxId, body: TxBody) -> Result<(u64, TxResult), ApiError> {
    let tx = Transaction { tx_id, rules_version: RULES_VERSION, time: app.clock.now(), body };
    app.metrics.transactions_proposed.inc();
    if let TxBody::Readings(batch) = &tx.body {
        app.metrics.batch_readings.observe(batch.readings.len() as f64);
    }
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(COMMIT_WAIT_MAX, app.raft.client_write(tx)).await;
    match result {
        Err(_) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "commit_timeout", "not committed in time; retry")),
        Ok(Err(error)) => {
            tracing::warn!(%error, "client write failed");
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "write_failed", error.to_string()))
        }
        Ok(Ok(response)) => {
            let index = response.log_id.index;
            wait_covered(app, index).await?;
            app.metrics.commit_latency_seconds.observe(started.elapsed().as_secs_f64());
            Ok((index, response.data))
        }
    }
}

/// Counts a client waiting for a signature while it lives (the leader signs at once while any
/// wait), also when the waiting request is dropped half-way.
struct SignatureWaiter(Arc<AtomicU64>);

impl SignatureWaiter {
    fn new(waiters: &Arc<AtomicU64>) -> Self {
        waiters.fetch_add(1, Ordering::Relaxed);
        SignatureWaiter(waiters.clone())
    }
}

impl Drop for SignatureWaiter {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waits until a committed signature covers the entry at `index`: clients hear "committed" only
/// then (DESIGN.md). Without signature transactions (benchmarks only) commit alone counts.
pub(crate) async fn wait_covered(app: &AppState, index: u64) -> Result<(), ApiError> {
    if app.signature_interval.is_none() {
        return Ok(());
    }
    let _waiting = SignatureWaiter::new(&app.signature_waiters);
    if app.store.wait_signed(index, COMMIT_WAIT_MAX).await {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_signed",
            format!("applied at {index} but no signature covers it yet; query its status"),
        ))
    }
}

/// The meter registry (gateways verify readings against its keys). On a node that authenticates,
/// a caller the ledger does not entitle to private data sees each meter's customer only as a
/// keyed-hash id (`h-` and 30 hex digits, the first 120 bits of its keyed hash, to fit an id):
/// which household a meter serves is private.
/// The keyed-hash id callers not entitled to private data see for a household's id: `h-` and 30
/// hex digits (the first 120 bits of its keyed hash, to fit an id).
pub(crate) fn keyed_id(secrets: &crate::secrets::LedgerSecrets, id: &str) -> String {
    format!("h-{}", hex::encode(&secrets.keyed_id(id.as_bytes())[..15]))
}

async fn list_meters(State(app): State<AppState>, request: axum::extract::Request) -> Json<Vec<MeterInfo>> {
    let hide_customers = app.peer_trust.is_some() && entitled_caller(&app, &request).is_err();
    let secrets = app.store.secrets().cloned();
    let meters = app
        .store
        .scan_prefix(Table::Private, state::METER_PREFIX)
        .into_iter()
        .map(|(_, value)| {
            let record = MeterRecord::decode(&value).expect("committed meter record decodes");
            let newest = record.keys.newest();
            MeterInfo {
                meter_id: record.meter_id.clone(),
                key_id: newest.key_id.0,
                public_key: hex::encode(newest.public_key),
                customer_id: match (&secrets, hide_customers) {
                    (Some(secrets), true) => CustomerId::new(keyed_id(secrets, record.customer_id.as_str()))
                        .expect("h- and 30 hex digits is a valid id"),
                    _ => record.customer_id,
                },
                attested_by: record.attested_by,
                keys: MeterInfo::describe_keys(&record.keys),
            }
        })
        .collect();
    Json(meters)
}

async fn customer_account(
    State(app): State<AppState>,
    Path(customer_id): Path<String>,
) -> Result<Json<CustomerAccount>, ApiError> {
    let customer_id = CustomerId::new(customer_id)
        .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, "bad_customer_id", error.to_string()))?;
    let state = app.store.state();
    let currency = state::customer_currency(&state, &customer_id).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "unknown_customer", format!("no customer {customer_id}"))
    })?;
    let account = state::account(&state, &state::customer_account_name(&customer_id));
    Ok(Json(CustomerAccount {
        customer_id,
        currency,
        energy_import_wh: account.as_ref().map_or(0, |a| a.energy_import_wh),
        energy_export_wh: account.as_ref().map_or(0, |a| a.energy_export_wh),
        amount: account.as_ref().map_or(rust_decimal::Decimal::ZERO, |a| a.debits_posted - a.credits_posted),
        intervals_settled: account.as_ref().map_or(0, |a| a.transfers_count),
        as_of_ms: app.store.as_of_ms(),
        applied_index: app.store.applied_index(),
    }))
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    #[serde(default)]
    from: u64,
    limit: Option<u64>,
    /// Long-poll: wait up to this long (ms, at most 30,000) for transaction `from` to be applied.
    #[serde(default)]
    wait_ms: u64,
}

/// Longest long-poll on `GET /v1/transactions`.
const LONG_POLL_MAX: std::time::Duration = std::time::Duration::from_secs(30);

async fn transaction_status(
    State(app): State<AppState>,
    Path(tx_id): Path<String>,
) -> Result<Json<domain::api::TransactionStatus>, ApiError> {
    let id = parse_tx_id(&tx_id)?;
    let (status, log_index) = match state::transaction_index(&app.store.state(), &id) {
        Some(index) if app.signature_interval.is_none() || app.store.signed_index() >= index => {
            ("committed", Some(index))
        }
        Some(index) => ("pending", Some(index)),
        None if app.pending.lock().expect("pending lock is never poisoned").contains(&id) => ("pending", None),
        None => ("unknown", None),
    };
    Ok(Json(domain::api::TransactionStatus { tx_id, status: status.to_string(), log_index }))
}

async fn list_transactions(
    State(app): State<AppState>,
    Query(query): Query<PageQuery>,
) -> Result<Json<TransactionPage>, ApiError> {
    let limit = query.limit.unwrap_or(TRANSACTION_PAGE_MAX).clamp(1, TRANSACTION_PAGE_MAX);
    if query.wait_ms > 0 && app.store.applied_index() < query.from {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(query.wait_ms).min(LONG_POLL_MAX);
        let mut metrics = app.raft.metrics();
        while app.store.applied_index() < query.from {
            if tokio::time::timeout_at(deadline, metrics.changed()).await.is_err() {
                break;
            }
        }
    }
    let records = app.store.history_range(query.from, limit).map_err(storage_error)?;
    let mut next = query.from;
    let mut transactions = Vec::new();
    for (index, record) in records {
        let entry = crate::entry::decode_entry(&record.entry).map_err(storage_error)?;
        next = index + 1;
        let summary = match &entry.payload {
            EntryPayload::Normal(tx) => {
                let (kind, reading_digests) = match &tx.body {
                    TxBody::Admin(_) => ("admin", Vec::new()),
                    TxBody::Tick => ("tick", Vec::new()),
                    TxBody::SignatureMarker => ("signature_marker", Vec::new()),
                    TxBody::Signature(_) => ("signature", Vec::new()),
                    TxBody::Gov(_) => ("governance", Vec::new()),
                    TxBody::IssueInvoice { .. } => ("invoice", Vec::new()),
                    TxBody::IssueCreditNote { .. } => ("credit_note", Vec::new()),
                    TxBody::RotateSecret { .. } => ("secret_rotation", Vec::new()),
                    TxBody::Readings(batch) => {
                        ("readings", batch.readings.iter().map(|item| item.reading.digest().to_string()).collect())
                    }
                };
                TransactionSummary {
                    index,
                    tx_id: tx.tx_id.to_string(),
                    kind: kind.to_string(),
                    time_ms: tx.time.0,
                    reading_digests,
                }
            }
            EntryPayload::Blank | EntryPayload::Membership(_) => TransactionSummary {
                index,
                tx_id: String::new(),
                kind: if matches!(entry.payload, EntryPayload::Blank) { "blank" } else { "membership" }.to_string(),
                time_ms: 0,
                reading_digests: Vec::new(),
            },
        };
        transactions.push(summary);
    }
    Ok(Json(TransactionPage { transactions, next }))
}

pub(crate) fn storage_error(error: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", error.to_string())
}

fn parse_tx_id(text: &str) -> Result<TxId, ApiError> {
    hex::decode(text)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .map(TxId)
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "bad_tx_id", "a transaction id is 32 hex characters"))
}

/// The history record of a committed transaction, by id.
fn record_of(app: &AppState, tx_id: &str) -> Result<(u64, crate::store::HistoryRecord), ApiError> {
    let id = parse_tx_id(tx_id)?;
    let index = state::transaction_index(&app.store.state(), &id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unknown_transaction", "no such committed transaction"))?;
    let record = app.store.history(index).map_err(storage_error)?.ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "history_missing", "this node is still fetching older history")
    })?;
    Ok((index, record))
}

/// `GET /v1/transactions/{tx_id}/claims`: the claims document bound into the transaction's leaf.
async fn transaction_claims(State(app): State<AppState>, Path(tx_id): Path<String>) -> Result<Response, ApiError> {
    let (_, record) = record_of(&app, &tx_id)?;
    let claims = record
        .claims
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no_claims", "this transaction binds no claims"))?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], claims).into_response())
}

#[derive(Debug, Deserialize)]
struct ReceiptQuery {
    /// `json` for a readable view; otherwise the canonical bytes.
    format: Option<String>,
}

/// `GET /v1/receipts/{tx_id}`: the receipt of a committed transaction (`docs/receipts.md`).
async fn receipt(
    State(app): State<AppState>,
    Path(tx_id): Path<String>,
    Query(query): Query<ReceiptQuery>,
) -> Result<Response, ApiError> {
    let (index, _) = record_of(&app, &tx_id)?;
    let receipt = crate::receipts::build(&app.store, index).map_err(|error| match error {
        crate::receipts::ReceiptUnavailable::NotSigned => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_signed", "no signature covers it yet; retry")
        }
        crate::receipts::ReceiptUnavailable::NotEndorsed { node_id } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_endorsed",
            format!(
                "node {node_id} signed the root but its key has no endorsement (yet) that held when it signed: \
                 renew the node's endorsement to cover that time"
            ),
        ),
        crate::receipts::ReceiptUnavailable::Storage(message) => storage_error(message),
    })?;
    Ok(if query.format.as_deref() == Some("json") {
        Json(receipt).into_response()
    } else {
        ([(axum::http::header::CONTENT_TYPE, "application/octet-stream")], receipt.encode()).into_response()
    })
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    from: u64,
    limit: Option<u64>,
}

/// One history record, hex-encoded, for peers fetching older history.
#[derive(Debug, serde::Serialize, Deserialize)]
pub struct HistoryItem {
    pub index: u64,
    pub record: String,
}

/// `GET /v1/history?from=N&limit=M`: consecutive history records, for a node that joined from a
/// snapshot and fetches what came before it.
async fn history(
    State(app): State<AppState>,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<Vec<HistoryItem>>, ApiError> {
    let limit = query.limit.unwrap_or(TRANSACTION_PAGE_MAX).clamp(1, TRANSACTION_PAGE_MAX);
    let records = app.store.history_range(query.from, limit).map_err(storage_error)?;
    Ok(Json(
        records
            .into_iter()
            .map(|(index, record)| HistoryItem { index, record: hex::encode(record.encode()) })
            .collect(),
    ))
}

async fn healthz(State(app): State<AppState>) -> Response {
    let metrics = app.raft.metrics().borrow().clone();
    let body = serde_json::json!({
        "node_id": app.node_id,
        "state": format!("{:?}", metrics.state),
        "leader": metrics.current_leader,
        "term": metrics.current_term,
        "last_log_index": metrics.last_log_index,
        "applied_index": metrics.last_applied.map(|log_id| log_id.index),
        "snapshot_index": metrics.snapshot.map(|log_id| log_id.index),
        "purged_index": metrics.purged.map(|log_id| log_id.index),
        "signed_index": app.store.signed_index(),
        "node_key": hex::encode(app.node_key.verifying_key().to_bytes()),
        // The node's clock (ms since the epoch): what it stamps entries with as leader, and what
        // endorsement periods are judged by (`wattle node endorse` starts one from it).
        "clock_ms": app.clock.now().0,
        // The newest ledger secret version this node holds (it seals new values with it).
        "secret_version": app.store.secrets().map(|secrets| secrets.current().version),
        // Whether the node serves and reaches its peers over TLS (`--tls`).
        "tls": app.peer.is_tls(),
    });
    let status = if metrics.current_leader.is_some() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn metrics(State(app): State<AppState>) -> Response {
    let raft = app.raft.metrics().borrow().clone();
    let text = app.metrics.render(crate::metrics::Scrape {
        is_leader: raft.current_leader == Some(app.node_id),
        term: raft.current_term,
        last_log_index: raft.last_log_index.unwrap_or(0),
        applied_index: raft.last_applied.map_or(0, |log_id| log_id.index),
        submissions_in_flight: app.admission.in_flight() as u64,
    });
    ([(axum::http::header::CONTENT_TYPE, domain::api::OPENMETRICS_CONTENT_TYPE)], text).into_response()
}
