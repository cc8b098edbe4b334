//! Starting a ledger node: open the store, start openraft, serve the API, initialise a new
//! cluster when asked, and load the admin configuration (meters, customers, tariff) as signed
//! admin transactions once this node leads.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use domain::api::MeterInfo;
use domain::api::{SubmitAdmin, SubmitAdminResponse};
use domain::clock::Clock;
use domain::ids::{CustomerId, KeyId};
use domain::money::{Currency, UnitPrice};
use domain::tx::{AdminAction, SignedAdmin};
use ed25519_dalek::SigningKey;
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use rust_decimal::Decimal;
use serde::Deserialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{router, AppState};
use crate::entry::NodeId;
use crate::limits::{ELECTION_TIMEOUT_MAX_MS, ELECTION_TIMEOUT_MIN_MS, HEARTBEAT_INTERVAL_MS, LEADER_WAIT_MAX};
use crate::network::HttpNetwork;
use crate::state;
use crate::store::Store;

/// Attempts per admin transaction while a leader is being elected.
const ADMIN_ATTEMPTS_MAX: u32 = 20;

/// How to run one node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    /// Address to serve on; port 0 picks a free port (fine for a single node).
    pub listen: SocketAddr,
    /// Initialise a new single-node cluster if this node has never been initialised.
    pub bootstrap: bool,
    /// Initialise a new cluster of these voters (id, address) if never initialised; only the
    /// node with the lowest id does it, the others wait to be contacted.
    pub init_members: Vec<(NodeId, String)>,
    /// Admin configuration (tariff and meter registries) to load once this node leads.
    pub admin_config: Option<PathBuf>,
    /// File holding the operator's Ed25519 secret key (64 hex characters).
    pub operator_key: Option<PathBuf>,
    pub clock: Clock,
    /// Build a snapshot (and purge the log behind it) after this many entries.
    pub snapshot_after_entries: u64,
    /// File holding this node's Ed25519 signing key for Merkle roots; `None`: `DATA_DIR/node.key`,
    /// created on first start.
    pub node_key: Option<PathBuf>,
    /// How often the leader signs the Merkle root while entries are unsigned; `None` turns
    /// signature transactions off (benchmarks only).
    pub signature_interval: Option<std::time::Duration>,
}

/// The admin configuration file (TOML).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The walking skeleton's flat price (rules version 1; meters without bindings).
    #[serde(default)]
    pub tariff: Option<TariffConfig>,
    /// Settlement by tariff versions (rules version 2): every registry meter is bound to its
    /// customer under `settlement.binding`.
    #[serde(default)]
    pub settlement: Option<SettlementConfig>,
    /// Meter registries written by `wattle sim --registry-out`, relative to this file.
    pub registries: Vec<PathBuf>,
    /// Hand the ledger to its consortium once the rest of this file is applied (issue 14): the
    /// founding members and the constitution. From then on the operator key signs nothing; a
    /// configuration that differs from the ledger is reported, not applied (propose it).
    #[serde(default)]
    pub governance: Option<domain::gov::Genesis>,
}

/// Tariff versions, price series and the binding every registry meter gets.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettlementConfig {
    /// Customers' currency.
    pub currency: Currency,
    /// Tariff version files (TOML, docs/tariffs.md), relative to this file.
    #[serde(default)]
    pub tariffs: Vec<PathBuf>,
    /// Dynamic price series (JSON, `tariff::PriceSeries`), relative to this file.
    #[serde(default)]
    pub prices: Vec<PathBuf>,
    pub binding: BindingTerms,
}

/// The terms of each meter's binding: the meter's customer, the meter id as supply point.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingTerms {
    pub tariff: domain::ids::TariffId,
    pub time_zone: domain::tariff::TimeZone,
    pub billing_day: u32,
    /// Local date-time the bindings start.
    pub from: chrono::NaiveDateTime,
}

/// The flat tariff of the walking skeleton.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffConfig {
    pub currency: Currency,
    #[serde(with = "rust_decimal::serde::str")]
    pub price_per_kwh: Decimal,
}

/// A running node.
pub struct NodeHandle {
    pub address: SocketAddr,
    pub raft: Raft<crate::entry::TypeConfig>,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle").field("address", &self.address).finish()
    }
}

impl NodeHandle {
    /// Stops serving and shuts raft down.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let _ = (&mut self.server).await;
        for task in &self.tasks {
            task.abort();
        }
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(%error, "raft shutdown");
        }
    }
}

/// Parses an Ed25519 secret key file: 64 hex characters, surrounding whitespace ignored.
pub fn read_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading key file {}", path.display()))?;
    let bytes = hex::decode(text.trim()).with_context(|| format!("{} is not hex", path.display()))?;
    let secret: [u8; 32] =
        bytes.try_into().map_err(|_| anyhow::anyhow!("{} must hold 32 bytes (64 hex characters)", path.display()))?;
    Ok(SigningKey::from_bytes(&secret))
}

/// Starts a node and returns once it serves.
pub async fn start(config: NodeConfig) -> anyhow::Result<NodeHandle> {
    let store = Store::open(&config.data_dir).context("opening the node's database")?;
    let raft_config = Config {
        cluster_name: "wattle".into(),
        heartbeat_interval: HEARTBEAT_INTERVAL_MS,
        election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
        election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_after_entries.max(1)),
        // Keep a tenth of a snapshot interval of log behind it, so a slightly lagging follower
        // catches up from the log rather than by a whole snapshot.
        max_in_snapshot_log_to_keep: config.snapshot_after_entries / 10,
        purge_batch_size: 1,
        ..Default::default()
    };
    let raft_config = Arc::new(raft_config.validate().context("raft configuration")?);
    let raft = Raft::new(config.node_id, raft_config, HttpNetwork::new()?, store.log_store(), store.state_machine())
        .await
        .context("starting raft")?;
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let address = listener.local_addr()?;
    let node_key_path = config.node_key.clone().unwrap_or_else(|| config.data_dir.join("node.key"));
    let node_key = Arc::new(load_or_create_key(&node_key_path)?);
    tracing::info!(
        node_id = config.node_id,
        node_key = %hex::encode(node_key.verifying_key().to_bytes()),
        "node signing key loaded"
    );
    let http = reqwest::Client::builder().timeout(crate::limits::COMMIT_WAIT_MAX * 2).build()?;
    let app = AppState {
        node_key,
        signature_interval: config.signature_interval,
        signature_waiters: Arc::default(),
        node_id: config.node_id,
        raft: raft.clone(),
        store: store.clone(),
        clock: crate::runtime::NodeClock::Process(config.clock),
        metrics: Arc::new(crate::metrics::Metrics::default()),
        http: http.clone(),
        forwarder: crate::forward::Forwarder::Http(http),
        verify_inline: false,
        pending: Arc::default(),
        admission: crate::admission::Admission::new(
            crate::limits::SUBMISSIONS_IN_FLIGHT_PER_GATEWAY_MAX,
            crate::limits::SUBMISSIONS_IN_FLIGHT_MAX,
        ),
        admin_serial: Arc::default(),
    };
    let (shutdown_sender, shutdown_receiver) = oneshot::channel::<()>();
    let server = tokio::spawn({
        let router = router(app.clone());
        async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = shutdown_receiver.await;
            });
            if let Err(error) = serve.await {
                tracing::error!(%error, "ledger API server stopped");
            }
        }
    });
    tracing::info!(node_id = config.node_id, %address, "ledger node serving");
    let signer =
        config.signature_interval.map(|interval| tokio::spawn(crate::signer::sign_roots(app.clone(), interval)));
    let backfill = tokio::spawn(fetch_missing_history(app.clone()));
    let ticker = tokio::spawn(crate::ticker::propose_ticks(app.clone()));
    if !raft.is_initialized().await? {
        let lowest = config.init_members.iter().map(|(id, _)| *id).min();
        if config.bootstrap {
            let members = BTreeMap::from([(config.node_id, BasicNode::new(address.to_string()))]);
            raft.initialize(members).await.context("initialising the cluster")?;
            tracing::info!(node_id = config.node_id, "initialised a new single-node cluster");
        } else if lowest == Some(config.node_id) {
            wait_for_peers(&config.init_members, config.node_id).await;
            let members: BTreeMap<NodeId, BasicNode> =
                config.init_members.iter().map(|(id, address)| (*id, BasicNode::new(address.clone()))).collect();
            raft.initialize(members).await.context("initialising the cluster")?;
            tracing::info!(node_id = config.node_id, voters = config.init_members.len(), "initialised a new cluster");
        }
    }
    if let Some(admin_config) = &config.admin_config {
        let operator_key = config
            .operator_key
            .as_deref()
            .context("--admin-config needs --operator-key to sign the admin transactions")?;
        let key = read_signing_key(operator_key)?;
        wait_for_leader(&raft).await?;
        load_admin_config(&app, address, admin_config, &key).await?;
    }
    Ok(NodeHandle {
        address,
        raft,
        shutdown: Some(shutdown_sender),
        server,
        tasks: signer.into_iter().chain([backfill, ticker]).collect(),
    })
}

/// Reads a signing key file, or creates one (mode 0600) if there is none.
fn load_or_create_key(path: &Path) -> anyhow::Result<SigningKey> {
    if path.exists() {
        return read_signing_key(path);
    }
    let secret: [u8; 32] = rand::random();
    write_secret(path, &hex::encode(secret))?;
    Ok(SigningKey::from_bytes(&secret))
}

fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("creating key file {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// A node that joined from a snapshot has no history before it. This fetches the missing
/// records from peers, checks that their leaves lead to the root this node holds for the first
/// entry it applied itself, and stores them, so receipts and audit work for every transaction.
async fn fetch_missing_history(app: AppState) {
    let http = app.http.clone();
    loop {
        tokio::time::sleep(crate::limits::HISTORY_FETCH_INTERVAL).await;
        let Ok(Some(start)) = app.store.history_start() else { continue };
        if start == 0 {
            return; // complete
        }
        let peers: Vec<String> = {
            let metrics = app.raft.metrics().borrow().clone();
            metrics
                .membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != app.node_id)
                .map(|(_, node)| node.addr.clone())
                .collect()
        };
        for peer in peers {
            match fetch_history_from(&app, &http, &peer, start).await {
                Ok(count) => {
                    tracing::info!(%peer, records = count, "fetched history older than this node's snapshot");
                    break;
                }
                Err(error) => tracing::warn!(%peer, %error, "fetching older history failed"),
            }
        }
    }
}

async fn fetch_history_from(app: &AppState, http: &reqwest::Client, peer: &str, start: u64) -> anyhow::Result<u64> {
    let mut records = Vec::new();
    let mut frontier = domain::merkle::Frontier::default();
    while (records.len() as u64) < start {
        let from = records.len() as u64;
        let limit = (start - from).min(crate::limits::TRANSACTION_PAGE_MAX);
        let page: Vec<crate::api::HistoryItem> = http
            .get(format!("http://{peer}/v1/history?from={from}&limit={limit}"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if page.is_empty() {
            bail!("peer has no history from {from}");
        }
        for item in page {
            let record = crate::store::HistoryRecord::decode(&hex::decode(&item.record)?)?;
            if item.index != records.len() as u64 || record.computed_leaf()? != record.leaf {
                bail!("peer sent a record that does not match its own leaf at {}", item.index);
            }
            frontier.append(record.leaf);
            if frontier.root() != Some(record.root) {
                bail!("peer's record {} does not lead to its stated root", item.index);
            }
            records.push((item.index, record));
        }
    }
    // Our own first record's root must follow from the fetched leaves plus our own first leaf.
    let first = app.store.history(start)?.context("own history record vanished")?;
    frontier.append(first.leaf);
    if frontier.root() != Some(first.root) {
        bail!("the peer's history does not lead to this node's root at {start}");
    }
    app.store.put_history(&records)?;
    Ok(records.len() as u64)
}

/// Endorses a node's signing key with the service key: reads the node's key from its `/healthz`
/// and submits an operator-signed `EndorseNode` admin transaction to the ledger.
/// A node's id and signing key, as its `/healthz` reports them (what an endorsement signs).
pub async fn node_identity(http: &reqwest::Client, node_url: &str) -> anyhow::Result<(u64, [u8; 32])> {
    let health: serde_json::Value = http.get(format!("{node_url}/healthz")).send().await?.json().await?;
    let node_id = health["node_id"].as_u64().context("node_id in the node's /healthz")?;
    let node_key: [u8; 32] = hex::decode(health["node_key"].as_str().context("node_key in the node's /healthz")?)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("node_key is not 32 bytes"))?;
    Ok((node_id, node_key))
}

pub async fn endorse_node(
    http: &reqwest::Client,
    ledger_url: &str,
    node_url: &str,
    service_key: &SigningKey,
    operator_key: &SigningKey,
) -> anyhow::Result<SubmitAdminResponse> {
    let (node_id, node_key) = node_identity(http, node_url).await?;
    let config: serde_json::Value =
        http.get(format!("{ledger_url}/v1/config")).send().await?.error_for_status()?.json().await?;
    let nonce = config["admin_nonce"].as_u64().context("admin_nonce in /v1/config")? + 1;
    let action = AdminAction::EndorseNode {
        node_id,
        node_key,
        service_key: service_key.verifying_key().to_bytes(),
        endorsement: domain::receipt::endorse(service_key, node_id, &node_key),
    };
    let response = submit_admin_to(http, ledger_url, &SignedAdmin::sign(nonce, action, operator_key)).await?;
    if let Some(reason) = &response.refused {
        bail!("the ledger refused the endorsement: {reason}");
    }
    Ok(response)
}

/// Waits (bounded) until every other initial member accepts connections, so the first election
/// does not start against nodes that are still starting.
async fn wait_for_peers(members: &[(NodeId, String)], node_id: NodeId) {
    let deadline = tokio::time::Instant::now() + crate::limits::INIT_PEERS_WAIT_MAX;
    for (id, address) in members.iter().filter(|(id, _)| *id != node_id) {
        while tokio::net::TcpStream::connect(address).await.is_err() {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(peer = id, %address, "peer not reachable yet; initialising anyway");
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

async fn wait_for_leader(raft: &Raft<crate::entry::TypeConfig>) -> anyhow::Result<()> {
    let mut metrics = raft.metrics();
    let deadline = tokio::time::Instant::now() + LEADER_WAIT_MAX;
    loop {
        if metrics.borrow().current_leader.is_some() {
            return Ok(());
        }
        if tokio::time::timeout_at(deadline, metrics.changed()).await.is_err() {
            bail!("no leader was elected within {LEADER_WAIT_MAX:?}");
        }
    }
}

/// Submits one signed admin action through this node's own API (which forwards to the leader).
async fn submit_admin(
    app: &AppState,
    address: SocketAddr,
    admin: &SignedAdmin,
) -> Result<SubmitAdminResponse, SubmitAdminError> {
    submit_admin_to(&app.http, &format!("http://{address}"), admin).await
}

/// Why submitting an admin action failed.
#[derive(Debug, thiserror::Error)]
pub enum SubmitAdminError {
    /// The ledger refused it before the log (bad signature, not the operator's key, stale nonce,
    /// an action the state refuses): final, retrying the same bytes changes nothing.
    #[error("the ledger refused the admin transaction ({status}): {code}: {message}")]
    Refused { status: u16, code: String, message: String },
    /// Not committed (yet): no leader, a timeout, a network error. Retry the same bytes: a retry
    /// of a transaction that was applied after all is recognised and answered as applied.
    #[error("admin transaction not committed: {0}")]
    NotCommitted(String),
}

/// Submits one signed admin action to a ledger node's API (any node: followers forward).
pub async fn submit_admin_to(
    http: &reqwest::Client,
    ledger_url: &str,
    admin: &SignedAdmin,
) -> Result<SubmitAdminResponse, SubmitAdminError> {
    let not_committed = |error: reqwest::Error| SubmitAdminError::NotCommitted(error.to_string());
    let request = SubmitAdmin { admin: hex::encode(admin.to_bytes()) };
    let response = http.post(format!("{ledger_url}/v1/admin")).json(&request).send().await.map_err(not_committed)?;
    let status = response.status();
    if status.is_success() {
        return response.json().await.map_err(not_committed);
    }
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<domain::api::ErrorBody>(&text) {
        Ok(body) if status.is_client_error() => {
            Err(SubmitAdminError::Refused { status: status.as_u16(), code: body.code, message: body.message })
        }
        _ => Err(SubmitAdminError::NotCommitted(format!("{status}: {text}"))),
    }
}

/// The tariff versions and price series of `settlement` not yet in the ledger.
fn settlement_actions(
    state_view: &dyn crate::state::StateRead,
    base: &Path,
    settlement: &SettlementConfig,
) -> anyhow::Result<Vec<AdminAction>> {
    let mut actions = Vec::new();
    for file in &settlement.tariffs {
        let file = base.join(file);
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading tariff {}", file.display()))?;
        let tariff = domain::tariff::parse_toml(&text).with_context(|| format!("tariff {}", file.display()))?;
        if crate::tariffs::version(state_view, &tariff.id, tariff.valid_from).is_none() {
            actions.push(AdminAction::PublishTariff { tariff_json: tariff.to_canonical_json() });
        }
    }
    for file in &settlement.prices {
        let file = base.join(file);
        let text = std::fs::read(&file).with_context(|| format!("reading prices {}", file.display()))?;
        let series: domain::tariff::PriceSeries =
            serde_json::from_slice(&text).with_context(|| format!("prices {}", file.display()))?;
        series.validate().with_context(|| format!("prices {}", file.display()))?;
        let published = series.prices.iter().all(|(start, price)| {
            crate::settle::dynamic_price(state_view, &series.tariff, domain::ids::UnixSeconds(*start)) == Some(price.0)
        });
        if !published {
            actions.push(AdminAction::PublishPrices { prices_json: series.to_canonical_json() });
        }
    }
    Ok(actions)
}

/// Submits the admin transactions needed to make the ledger's configuration match the file:
/// idempotent, so a restart with the same file changes nothing.
pub async fn load_admin_config(
    app: &AppState,
    address: SocketAddr,
    path: &Path,
    key: &SigningKey,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let config: AdminConfig = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut meters: Vec<MeterInfo> = Vec::new();
    for registry in &config.registries {
        let registry_path = base.join(registry);
        let text = std::fs::read_to_string(&registry_path)
            .with_context(|| format!("reading registry {}", registry_path.display()))?;
        let mut listed: Vec<MeterInfo> =
            serde_json::from_str(&text).with_context(|| format!("parsing registry {}", registry_path.display()))?;
        meters.append(&mut listed);
    }
    let mut actions = Vec::new();
    let state_view = app.store.state();
    if let Some(tariff) = &config.tariff {
        let price = UnitPrice { per_kwh: tariff.price_per_kwh, currency: tariff.currency };
        if state::flat_price(&state_view) != Some(price) {
            actions.push(AdminAction::SetFlatPrice(price));
        }
    }
    let currency = match (&config.settlement, &config.tariff) {
        (Some(settlement), _) => settlement.currency,
        (None, Some(tariff)) => tariff.currency,
        (None, None) => bail!("{}: needs [tariff] or [settlement]", path.display()),
    };
    if let Some(settlement) = &config.settlement {
        actions.extend(settlement_actions(&state_view, base, settlement)?);
    }
    let customers: BTreeSet<CustomerId> = meters.iter().map(|meter| meter.customer_id.clone()).collect();
    for customer_id in customers {
        if state::customer_currency(&state_view, &customer_id).is_none() {
            actions.push(AdminAction::RegisterCustomer { customer_id, currency });
        }
    }
    let mut bindings = Vec::new();
    for meter in meters {
        let public_key: [u8; 32] = hex::decode(&meter.public_key)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .with_context(|| format!("meter {}: public key is not 32 bytes of hex", meter.meter_id))?;
        // Registered already with this key, customer and attestation: nothing to do. Another key
        // is refused on apply (keys change by a rotation, not by re-registering).
        let registered = state::meter(&state_view, &meter.meter_id).is_some_and(|record| {
            let newest = record.keys.newest();
            newest.key_id == KeyId(meter.key_id)
                && newest.public_key == public_key
                && record.customer_id == meter.customer_id
                && record.attested_by == meter.attested_by
        });
        if !registered {
            actions.push(match meter.attested_by.clone() {
                Some(gateway_id) => AdminAction::RegisterAttestedMeter {
                    meter_id: meter.meter_id.clone(),
                    gateway_id,
                    key_id: KeyId(meter.key_id),
                    gateway_key: public_key,
                    customer_id: meter.customer_id.clone(),
                },
                None => AdminAction::RegisterMeter {
                    meter_id: meter.meter_id.clone(),
                    key_id: KeyId(meter.key_id),
                    public_key,
                    customer_id: meter.customer_id.clone(),
                },
            });
        }
        if let Some(settlement) = &config.settlement {
            let terms = &settlement.binding;
            let binding = domain::settle::Binding {
                meter: meter.meter_id.clone(),
                customer: meter.customer_id.as_str().parse()?,
                supply_point: meter.meter_id.to_string(),
                tariff: terms.tariff.clone(),
                billing_day: terms.billing_day,
                time_zone: terms.time_zone,
                from: terms.from,
                to: None,
            };
            if !crate::settle::bindings_of(&state_view, &meter.meter_id).contains(&binding) {
                bindings.push(AdminAction::Bind { binding_json: binding.to_canonical_json() });
            }
        }
    }
    // Bindings after every customer is registered.
    actions.extend(bindings);
    if crate::governance::is_governed(&state_view) {
        if !actions.is_empty() {
            tracing::warn!(
                path = %path.display(),
                actions = actions.len(),
                "the consortium governs this ledger: the admin configuration's changes are not applied; propose them (wattle gov propose)"
            );
        }
        return Ok(());
    }
    if let Some(genesis) = &config.governance {
        let genesis = domain::gov::Genesis::new(genesis.members.clone(), genesis.constitution.clone());
        actions.push(AdminAction::StartGovernance { genesis_json: genesis.to_canonical_json() });
    }
    let mut nonce = state::admin_nonce(&state_view);
    let count = actions.len();
    for action in actions {
        nonce += 1;
        // The same bytes on every attempt, so a retry of one that was applied after all is
        // recognised by its transaction id rather than refused as a stale nonce.
        let admin = SignedAdmin::sign(nonce, action, key);
        let mut attempts = 0;
        loop {
            attempts += 1;
            match submit_admin(app, address, &admin).await {
                Ok(SubmitAdminResponse { refused: None, .. }) => break,
                Ok(SubmitAdminResponse { refused: Some(reason), .. }) => {
                    bail!("the ledger refused an admin transaction: {reason}")
                }
                Err(error @ SubmitAdminError::Refused { .. }) => return Err(error.into()),
                Err(error) if attempts < ADMIN_ATTEMPTS_MAX => {
                    tracing::warn!(%error, attempts, "admin transaction not committed yet; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(200 * attempts as u64)).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }
    tracing::info!(path = %path.display(), actions = count, "admin configuration loaded");
    Ok(())
}
