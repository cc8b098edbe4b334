//! Starting a ledger node: open the store, start openraft, serve the API, initialise a new
//! cluster when asked, and load the admin configuration (meters, customers, tariff) as signed
//! admin transactions once this node leads.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use domain::api::SubmitAdminResponse;
use domain::clock::Clock;
use domain::tx::{AdminAction, SignedAdmin};
use ed25519_dalek::SigningKey;
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{router, AppState};
use crate::entry::NodeId;
use crate::limits::{ELECTION_TIMEOUT_MAX_MS, ELECTION_TIMEOUT_MIN_MS, HEARTBEAT_INTERVAL_MS, LEADER_WAIT_MAX};
use crate::network::HttpNetwork;
use crate::store::Store;

pub use crate::admin_config::{
    config_plan, load_admin_config, submit_admin_to, AdminConfig, BindingTerms, ConfigPlan, SettlementConfig,
    SubmitAdminError, TariffConfig,
};

/// How to run one node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    /// Address to serve on; port 0 picks a free port (fine for a single node).
    pub listen: SocketAddr,
    /// Serve the raft endpoints on this address, and only there: the client port then has no
    /// `/raft/...` (issue 15), and node-to-node traffic (raft, the secret handover, forwarded
    /// writes, history fetches) goes to the addresses the membership names, which are these.
    /// `None`: one port serves both (development, tests).
    pub raft_listen: Option<SocketAddr>,
    /// Initialise a new single-node cluster if this node has never been initialised.
    pub bootstrap: bool,
    /// Initialise a new cluster of these voters (id, raft address) if never initialised; only the
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
    /// Authenticate raft peers (`peer_auth.rs`): take raft requests only from nodes endorsed by
    /// this service key, and sign this node's own with its endorsement. `None`: unauthenticated.
    pub peer_auth: Option<PeerAuth>,
    /// The code measurement this node attests when it asks for the ledger secrets
    /// (`attestation.rs`); `None`: the SHA-256 of the running executable.
    pub measurement: Option<[u8; 32]>,
    /// Seal the database and the raft traffic under the ledger secrets (`sealed_kv.rs`,
    /// `raft_channel.rs`). `false` only to measure what that costs (`wattle bench ledger
    /// --confidentiality off`): the node then keeps everything in the clear.
    pub seal: bool,
    /// Serve both ports over TLS with a certificate carrying this node's endorsement, and reach
    /// peers over TLS trusting only nodes the service key endorses (`tls.rs`, `domain::tls`).
    /// Needs `peer_auth`; every node of a cluster runs with it or none does.
    pub tls: bool,
}

/// A node's standing in an authenticated cluster.
#[derive(Debug, Clone)]
pub struct PeerAuth {
    /// The service public key every node's key must be endorsed by.
    pub service_key: [u8; 32],
    /// The service key's endorsement of this node's (id, key) (`domain::receipt::endorse_for`),
    /// for this period when given (judged by the wall clock).
    pub endorsement: [u8; 64],
    pub validity: Option<domain::receipt::Validity>,
}

/// A running node.
pub struct NodeHandle {
    pub address: SocketAddr,
    /// `http` or `https` (`NodeConfig::tls`).
    pub scheme: &'static str,
    /// Where it serves raft: `address` unless it was given a raft port of its own.
    pub raft_address: SocketAddr,
    /// The node's store: its committed state, for an embedding process (the sandbox) to read.
    pub store: Store,
    pub raft: Raft<crate::entry::TypeConfig>,
    shutdown: Option<watch::Sender<bool>>,
    servers: Vec<JoinHandle<()>>,
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
            let _ = shutdown.send(true);
        }
        for server in &mut self.servers {
            let _ = server.await;
        }
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
    // The data directory first (0700): the node's keys are created in it.
    crate::store::create_private_dir(&config.data_dir)?;
    let node_key_path = config.node_key.clone().unwrap_or_else(|| config.data_dir.join("node.key"));
    let node_key = Arc::new(load_or_create_key(&node_key_path)?);
    let credentials = match &config.peer_auth {
        None => None,
        Some(auth) => {
            let own = domain::receipt::endorsement_message_for(
                config.node_id,
                &node_key.verifying_key().to_bytes(),
                auth.validity,
            );
            domain::verify::verify_signature(&auth.service_key, &auth.endorsement, &own).map_err(|_| {
                anyhow::anyhow!("this node's endorsement is not the service key's for its id, key and period")
            })?;
            if let Some(period) = auth.validity {
                crate::endorsements::check_own_period(config.node_id, period, domain::clock::wall_clock_now().0)?;
            }
            Some(crate::peer_auth::PeerCredentials {
                node_id: config.node_id,
                key: (*node_key).clone(),
                endorsement: auth.endorsement,
                validity: auth.validity,
            })
        }
    };
    anyhow::ensure!(
        !config.tls || credentials.is_some(),
        "a TLS node's certificate carries its endorsement: --tls needs --peer-service-key and --endorsement"
    );
    // Over TLS a node refuses peers the ledger revoked, once its store is open (the secret
    // handover before that trusts the endorsement alone, as the handover's own check does).
    let revocations: Arc<std::sync::OnceLock<Store>> = Arc::default();
    let peer = match &config.peer_auth {
        Some(auth) if config.tls => {
            let revocations = revocations.clone();
            crate::tls::peer_http(
                auth.service_key,
                Arc::new(move |node: &domain::tls::EndorsedNode| match revocations.get() {
                    Some(store) if crate::registry::node_revoked(&store.state(), node.node_id, &node.key) => {
                        Err("the consortium revoked its key".into())
                    }
                    _ => Ok(()),
                }),
            )?
        }
        _ => crate::peer_http::PeerHttp::plain(),
    };
    anyhow::ensure!(
        config.seal || credentials.is_none(),
        "authenticated raft traffic is sealed under the ledger secrets: peer authentication needs a sealed node"
    );
    if credentials.is_none() {
        tracing::warn!(
            node_id = config.node_id,
            "raft peers are not authenticated: any process that reaches this port can take part in raft and ask \
             for the ledger secrets; production nodes run with --peer-service-key and --endorsement"
        );
    }
    let founds = config.bootstrap || config.init_members.iter().map(|(id, _)| *id).min() == Some(config.node_id);
    let measurement = match config.measurement {
        Some(measurement) => measurement,
        None => crate::attestation::measure_self().context("measuring this node's executable")?,
    };
    let secrets = crate::provision::obtain(crate::provision::Provisioning {
        node_id: config.node_id,
        data_dir: &config.data_dir,
        founds,
        peers: config.init_members.iter().filter(|(id, _)| *id != config.node_id).cloned().collect(),
        credentials: credentials.as_ref(),
        node_key: &node_key,
        measurement,
        peer: &peer,
    })
    .await
    .context("obtaining the ledger secrets")?;
    let secrets = Arc::new(secrets);
    let store = match config.seal {
        true => Store::open(&config.data_dir, secrets.clone()),
        false => Store::open_unsealed(&config.data_dir, secrets.clone()),
    }
    .context("opening the node's database")?;
    let _ = revocations.set(store.clone());
    // A rotated secret this node did not draw comes from its current peers (the secret handover).
    let running: Arc<std::sync::OnceLock<Raft<crate::entry::TypeConfig>>> = Arc::default();
    store.set_secret_source({
        let (running, node_key, peer, credentials) =
            (running.clone(), node_key.clone(), peer.clone(), credentials.clone());
        let (node_id, data_dir) = (config.node_id, config.data_dir.clone());
        Arc::new(move || {
            let (running, node_key, peer, credentials) =
                (running.clone(), node_key.clone(), peer.clone(), credentials.clone());
            let data_dir = data_dir.clone();
            Box::pin(async move {
                let Some(raft) = running.get() else { return Vec::new() };
                let peers: Vec<(NodeId, String)> = raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .nodes()
                    .filter(|(id, _)| **id != node_id)
                    .map(|(id, node)| (*id, node.addr.clone()))
                    .collect();
                crate::provision::peers_rings(&crate::provision::Provisioning {
                    node_id,
                    data_dir: &data_dir,
                    founds: false,
                    peers,
                    credentials: credentials.as_ref(),
                    node_key: &node_key,
                    measurement,
                    peer: &peer,
                })
                .await
            })
        })
    });
    let raft = Raft::new(
        config.node_id,
        raft_config,
        HttpNetwork::new(peer.clone(), credentials.clone().map(|credentials| (credentials, secrets)))?,
        store.log_store(),
        store.state_machine(),
    )
    .await
    .context("starting raft")?;
    let _ = running.set(raft.clone());
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let address = listener.local_addr()?;
    let raft_listener = match config.raft_listen {
        None => None,
        Some(raft_listen) => {
            Some(tokio::net::TcpListener::bind(raft_listen).await.with_context(|| format!("binding {raft_listen}"))?)
        }
    };
    let raft_address = match &raft_listener {
        None => address,
        Some(listener) => listener.local_addr()?,
    };
    tracing::info!(
        node_id = config.node_id,
        node_key = %hex::encode(node_key.verifying_key().to_bytes()),
        "node signing key loaded"
    );
    let http = peer.client(crate::limits::COMMIT_WAIT_MAX * 2, None)?;
    let server_tls = match (&credentials, config.tls) {
        (Some(credentials), true) => Some(domain::tls::server_config(
            &credentials.key,
            &domain::tls::Endorsement {
                node_id: credentials.node_id,
                validity: credentials.validity,
                signature: credentials.endorsement,
            },
        )?),
        _ => None,
    };
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
        peer: peer.clone(),
        forwarder: crate::forward::Forwarder::Http(http),
        verify_inline: false,
        pending: Arc::default(),
        admission: crate::admission::Admission::new(
            crate::limits::SUBMISSIONS_IN_FLIGHT_PER_GATEWAY_MAX,
            crate::limits::SUBMISSIONS_IN_FLIGHT_MAX,
        ),
        admin_serial: Arc::default(),
        peer_trust: config.peer_auth.as_ref().map(|auth| auth.service_key),
        measurement,
        replay_guard: Arc::default(),
    };
    let (shutdown_sender, shutdown_receiver) = watch::channel(false);
    let failures = app.metrics.tls_handshakes_failed.clone();
    let serve = |listener: tokio::net::TcpListener, router: axum::Router, what: &'static str| {
        let mut shutdown = shutdown_receiver.clone();
        let (tls, failures) = (server_tls.clone(), failures.clone());
        tokio::spawn(async move {
            let stopped = async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            };
            let served = match tls {
                None => axum::serve(listener, router).with_graceful_shutdown(stopped).await,
                Some(config) => match crate::tls::TlsListener::new(listener, config, failures) {
                    Ok(listener) => axum::serve(listener, router).with_graceful_shutdown(stopped).await,
                    Err(error) => Err(error),
                },
            };
            if let Err(error) = served {
                tracing::error!(%error, what, "ledger server stopped");
            }
        })
    };
    let mut servers = Vec::new();
    match raft_listener {
        None => servers.push(serve(listener, router(app.clone()), "API and raft")),
        Some(raft_listener) => {
            servers.push(serve(listener, crate::api::client_router(app.clone()), "client API"));
            servers.push(serve(raft_listener, router(app.clone()), "raft"));
        }
    }
    tracing::info!(node_id = config.node_id, %address, %raft_address, scheme = peer.scheme(), "ledger node serving");
    let signer =
        config.signature_interval.map(|interval| tokio::spawn(crate::signer::sign_roots(app.clone(), interval)));
    let backfill = tokio::spawn(fetch_missing_history(app.clone()));
    let ticker = tokio::spawn(crate::ticker::propose_ticks(app.clone()));
    if !raft.is_initialized().await? {
        let lowest = config.init_members.iter().map(|(id, _)| *id).min();
        if config.bootstrap {
            let members = BTreeMap::from([(config.node_id, BasicNode::new(raft_address.to_string()))]);
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
        scheme: peer.scheme(),
        raft_address,
        store,
        raft,
        shutdown: Some(shutdown_sender),
        servers,
        tasks: signer.into_iter().chain([backfill, ticker]).collect(),
    })
}

/// Reads a signing key file, or creates one (mode 0600) if there is none.
pub fn load_or_create_key(path: &Path) -> anyhow::Result<SigningKey> {
    if path.exists() {
        return read_signing_key(path);
    }
    let secret: [u8; 32] = rand::random();
    write_secret(path, &hex::encode(secret))?;
    Ok(SigningKey::from_bytes(&secret))
}

pub fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    crate::provision::write_secret(path, text.as_bytes())
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
        // Signed with this node's key: peers serve the history only to entitled callers.
        let path = format!("/v1/history?from={from}&limit={limit}");
        let mut request = http.get(app.peer.url(peer, &path));
        for (name, value) in
            crate::client_auth::sign_request(&app.node_key, "GET", &path, domain::clock::wall_clock_now().0)
        {
            request = request.header(name, value);
        }
        let page: Vec<crate::api::HistoryItem> = request.send().await?.error_for_status()?.json().await?;
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
    valid_days: Option<u32>,
) -> anyhow::Result<SubmitAdminResponse> {
    let (node_id, node_key) = node_identity(http, node_url).await?;
    let validity = match valid_days {
        None => None,
        Some(days) => {
            let health: serde_json::Value = http.get(format!("{ledger_url}/healthz")).send().await?.json().await?;
            let now = health["clock_ms"].as_i64().context("clock_ms in the ledger's /healthz")?;
            Some(crate::endorsements::period_from(now, days))
        }
    };
    let config: serde_json::Value =
        http.get(format!("{ledger_url}/v1/config")).send().await?.error_for_status()?.json().await?;
    let nonce = config["admin_nonce"].as_u64().context("admin_nonce in /v1/config")? + 1;
    let action = AdminAction::EndorseNode {
        node_id,
        node_key,
        service_key: service_key.verifying_key().to_bytes(),
        endorsement: domain::receipt::endorse_for(service_key, node_id, &node_key, validity),
        validity,
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
