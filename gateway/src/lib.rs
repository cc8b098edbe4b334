//! The edge gateway: takes readings from MQTT, verifies each against the registry the ledger
//! committed (ZIP-215, batch verification, bisected on failure), keeps every good one in a
//! durable RocksDB outbox before acknowledging it to the broker, quarantines every bad one with
//! its reason, and forwards the outbox to the ledger until the ledger reports each reading final.
//! Modbus devices ([`modbus`]) feed the same pipeline. Every batch forwarded is signed with the
//! gateway's own key.
//!
//! One module per stage: [`mqtt`] (broker in), `ingest` (verify, check, store), `gaps` (backfill
//! requests), `forward` (outbox to the ledger), `registry`, `disk` (the budget), `http`,
//! [`access`] (who may call it: operators' bearer tokens) and `metrics`.

pub mod access;
pub mod config;
mod disk;
mod forward;
mod gaps;
mod garbage;
mod http;
mod ingest;
pub mod limits;
mod metrics;
pub mod modbus;
mod mqtt;
pub mod quarantine;
mod registry;
pub mod release;
pub mod store;
pub mod tracker;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::routing::get;
use axum::Router;
use domain::clock::Clock;
use domain::ids::{GatewayId, MeterId};
use rumqttc::{AsyncClient, MqttOptions};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

pub(crate) use crate::ingest::Incoming;
use crate::limits::*;
pub use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::GatewayStore;

/// The topic filter the gateway subscribes to.
pub const READING_TOPIC_FILTER: &str = "wattle/v1/+/+/reading";

/// How to run a gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub gateway_id: GatewayId,
    pub data_dir: PathBuf,
    pub broker_host: String,
    pub broker_port: u16,
    /// TLS to the broker (`None`: plain TCP, for a broker on loopback).
    pub broker_tls: Option<BrokerTls>,
    /// Base URLs of the ledger nodes' client APIs, e.g. `http://127.0.0.1:7000`; any node takes
    /// writes (followers forward them to the leader), and the gateway moves to the next URL when
    /// one fails.
    pub ledger_urls: Vec<String>,
    /// The ledger's service public key: `https://` ledger URLs are trusted only if the node's
    /// certificate carries this key's endorsement (`domain::tls`). `None`: plain HTTP only.
    pub ledger_service_key: Option<[u8; 32]>,
    pub listen: SocketAddr,
    pub clock: Clock,
    /// The largest power a meter can carry, in watts: a reading with more energy in its
    /// interval is quarantined as `implausible_energy`.
    pub max_power_w: u64,
    /// How far past the gateway's clock a reading's interval may end (seconds).
    pub clock_ahead_s_max: i64,
    /// MQTT keepalive.
    pub mqtt_keepalive: Duration,
    /// Modbus devices to poll, each with its resolved register map.
    pub modbus: Vec<(modbus::ModbusDevice, modbus::DeviceMap)>,
    /// Interval of the gateway-attested readings of unsigned meters (seconds).
    pub attest_interval_s: i64,
    /// The gateway's signing key file; `DATA_DIR/gateway.key` (created on first start) if `None`.
    pub key_file: Option<PathBuf>,
    /// Most bytes the gateway's database may take: above it the gateway stops taking readings
    /// (acknowledged, not stored) and recovers them by gap recovery once below.
    pub disk_budget_bytes: u64,
    /// The garbage store's bounds and the retry horizon of readings the ledger refused.
    pub quarantine: QuarantineSettings,
    /// The operators' token file (`wattle gateway token issue`; created empty if missing). With
    /// none, `/v1/quarantine` and its release refuse every call.
    pub tokens_path: Option<PathBuf>,
}

/// TLS to the MQTT broker: the CA that signed the broker's certificate, and the gateway's own
/// certificate and key for a broker that requires clients to present one (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerTls {
    pub ca_file: PathBuf,
    pub client_cert_and_key: Option<(PathBuf, PathBuf)>,
}

impl BrokerTls {
    /// From the three optional files: a CA alone (server-authenticated TLS), a CA with a
    /// certificate and key (mutual TLS), or nothing; anything else is a configuration error.
    pub fn from_files(
        ca_file: Option<PathBuf>,
        cert_file: Option<PathBuf>,
        key_file: Option<PathBuf>,
    ) -> anyhow::Result<Option<BrokerTls>> {
        match (ca_file, cert_file, key_file) {
            (None, None, None) => Ok(None),
            (Some(ca_file), None, None) => Ok(Some(BrokerTls { ca_file, client_cert_and_key: None })),
            (Some(ca_file), Some(cert), Some(key)) => {
                Ok(Some(BrokerTls { ca_file, client_cert_and_key: Some((cert, key)) }))
            }
            (None, ..) => anyhow::bail!("a broker client certificate needs the broker's CA file (--broker-ca-file)"),
            _ => anyhow::bail!("a broker client certificate needs its key, and a key its certificate"),
        }
    }

    /// rumqttc's TLS transport, the files read now (a missing or unreadable file fails the start).
    fn transport(&self) -> anyhow::Result<rumqttc::Transport> {
        let read = |path: &PathBuf| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
        let ca = read(&self.ca_file)?;
        let client = match &self.client_cert_and_key {
            None => None,
            Some((cert, key)) => Some((read(cert)?, read(key)?)),
        };
        Ok(rumqttc::Transport::tls(ca, client, None))
    }
}

/// How long refused readings are retried and how much garbage is kept (docs/gateway.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuarantineSettings {
    pub garbage: store::GarbageBounds,
    /// Past this (from the first refusal), a reading the ledger keeps refusing for a retryable
    /// reason is held in the quarantine for release.
    pub retry_horizon: Duration,
}

impl Default for QuarantineSettings {
    fn default() -> Self {
        QuarantineSettings { garbage: store::GarbageBounds::default(), retry_horizon: RETRY_HORIZON_DEFAULT }
    }
}

impl GatewayConfig {
    pub(crate) fn limits(&self) -> tracker::Limits {
        tracker::Limits { max_power_w: self.max_power_w, clock_ahead_s_max: self.clock_ahead_s_max }
    }
}

/// What every stage of a running gateway shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) config: GatewayConfig,
    pub(crate) store: GatewayStore,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) registry: Arc<Mutex<Registry>>,
    pub(crate) http: reqwest::Client,
    pub(crate) outbox_ready: Arc<Notify>,
    /// Index into `config.ledger_urls` of the node currently used.
    pub(crate) ledger_choice: Arc<AtomicU64>,
    /// Per-meter sequence and register tracking (persisted with each batch).
    pub(crate) tracker: Arc<Mutex<BTreeMap<MeterId, tracker::MeterState>>>,
    /// The gateway's signing key: signs forwarded batches and attested readings.
    pub(crate) key: Arc<ed25519_dalek::SigningKey>,
    /// Backfill requests to Modbus devices, by source.
    pub(crate) modbus_backfill: Arc<HashMap<String, mpsc::Sender<(u64, u64)>>>,
    /// The ingest queue (releases enter the pipeline here, like MQTT and Modbus messages).
    pub(crate) ingest: mpsc::Sender<Incoming>,
    /// Signalled when the registry learns a meter or key: unverified readings are released.
    pub(crate) registry_grew: Arc<Notify>,
    /// Held by whoever stages and commits tracker changes (ingest, gap recovery): one at a time.
    pub(crate) tracker_write: Arc<tokio::sync::Mutex<()>>,
    /// Who may call the operator endpoints.
    pub(crate) access: Arc<access::Access>,
}

impl Shared {
    pub(crate) fn ledger_url(&self) -> &str {
        let urls = &self.config.ledger_urls;
        &urls[self.ledger_choice.load(Ordering::Relaxed) as usize % urls.len()]
    }
    /// Moves to the next ledger node after a failure.
    pub(crate) fn next_ledger(&self) {
        self.ledger_choice.fetch_add(1, Ordering::Relaxed);
    }
}

/// A running gateway.
pub struct GatewayHandle {
    pub address: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for GatewayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayHandle").field("address", &self.address).finish()
    }
}

impl GatewayHandle {
    /// Stops the gateway's tasks. Readings in the outbox stay there for the next start.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

/// Starts the gateway: HTTP first (so `/healthz` answers), then MQTT ingest and forwarding.
pub async fn start(config: GatewayConfig) -> anyhow::Result<GatewayHandle> {
    let store = GatewayStore::open(&config.data_dir, config.quarantine.garbage)?;
    let http = match config.ledger_service_key {
        None => reqwest::Client::builder(),
        Some(service_key) => {
            reqwest::Client::builder().use_preconfigured_tls(domain::tls::client_config(service_key, None)?)
        }
    };
    let http = http.timeout(LEDGER_REQUEST_TIMEOUT).build()?;
    let key_file = config.key_file.clone().unwrap_or_else(|| config.data_dir.join("gateway.key"));
    let key = load_or_create_key(&key_file)?;
    tracing::info!(public_key = %hex::encode(key.verifying_key().to_bytes()), file = %key_file.display(), "gateway key");
    let mut modbus_backfill = HashMap::new();
    let mut modbus_receivers = Vec::new();
    for (device, map) in &config.modbus {
        let (sender, receiver) = mpsc::channel(MODBUS_BACKFILL_QUEUE_MAX);
        anyhow::ensure!(
            modbus_backfill.insert(device.source(), sender).is_none(),
            "Modbus device {} is configured twice",
            device.source()
        );
        modbus_receivers.push((device.clone(), *map, receiver));
    }
    let access = match &config.tokens_path {
        Some(path) => access::Access::Tokens(
            access::TokenStore::open(path).with_context(|| format!("opening the token file {}", path.display()))?,
        ),
        None => {
            tracing::warn!("no operator token file (--tokens): /v1/quarantine and its release refuse every call");
            access::Access::Unconfigured
        }
    };
    let (sender, receiver) = mpsc::channel::<Incoming>(INGEST_QUEUE_MAX);
    let shared = Shared {
        access: Arc::new(access),
        ingest: sender.clone(),
        registry_grew: Arc::new(Notify::new()),
        tracker_write: Arc::new(tokio::sync::Mutex::new(())),
        key: Arc::new(key),
        modbus_backfill: Arc::new(modbus_backfill),
        config: config.clone(),
        store,
        metrics: Arc::new(Metrics::default()),
        registry: Arc::new(Mutex::new(Registry { meters: HashMap::new(), refreshed: None })),
        http,
        outbox_ready: Arc::new(Notify::new()),
        ledger_choice: Arc::new(AtomicU64::new(0)),
        tracker: Arc::new(Mutex::new(BTreeMap::new())),
    };
    shared.tracker.lock().expect("tracker lock").extend(shared.store.meters()?);
    anyhow::ensure!(!config.ledger_urls.is_empty(), "at least one ledger URL is needed");
    if config.ledger_service_key.is_none() {
        let missing =
            config.ledger_urls.iter().find_map(|url| domain::tls::missing_service_key(url, "--ledger-service-key"));
        anyhow::ensure!(missing.is_none(), "{}", missing.unwrap_or_default());
    }
    if let Err(error) = registry::refresh_registry(&shared).await {
        match registry::load_cached_registry(&shared) {
            Ok(true) => tracing::warn!(%error, "ledger not reachable; using the cached registry"),
            Ok(false) => tracing::warn!(%error, "no registry yet: readings wait until the ledger answers"),
            Err(cache) => {
                tracing::error!(%error, %cache, "ledger not reachable and the registry cache unreadable: readings wait until the ledger answers")
            }
        }
    }
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let address = listener.local_addr()?;
    let (shutdown_sender, shutdown_receiver) = oneshot::channel::<()>();
    let router = Router::new()
        .route("/healthz", get(http::healthz))
        .route("/metrics", get(http::metrics))
        .route("/v1/quarantine", get(http::list_quarantine))
        .route("/v1/quarantine/release", axum::routing::post(http::release_quarantine))
        .with_state(shared.clone());
    let server = tokio::spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = shutdown_receiver.await;
        });
        if let Err(error) = serve.await {
            tracing::error!(%error, "gateway HTTP server stopped");
        }
    });
    let mut options =
        MqttOptions::new(format!("wattle-gateway-{}", config.gateway_id), &config.broker_host, config.broker_port);
    if let Some(tls) = &config.broker_tls {
        options.set_transport(tls.transport()?);
        tracing::info!(ca = %tls.ca_file.display(), client_certificate = tls.client_cert_and_key.is_some(), "MQTT over TLS");
    }
    // A persistent session: the broker keeps our subscription and queues QoS 1 messages while
    // we are away; we acknowledge only what is durably stored.
    options.set_clean_session(false);
    options.set_manual_acks(true);
    options.set_keep_alive(config.mqtt_keepalive);
    options.set_inflight(MQTT_INFLIGHT_MAX);
    // Receive (and quarantine) oversized messages instead of failing the connection on them,
    // which would make the broker redeliver them forever.
    options.set_max_packet_size(MQTT_PACKET_BYTES_MAX, MQTT_PACKET_BYTES_MAX);
    let (client, event_loop) = AsyncClient::new(options, INGEST_QUEUE_MAX);
    let mut tasks = Vec::new();
    for (device, map, backfill) in modbus_receivers {
        tracing::info!(device = %device.source(), map = %device.map, "polling Modbus device");
        tasks.push(tokio::spawn(modbus::run_device(shared.clone(), device, map, sender.clone(), backfill)));
    }
    tasks.push(tokio::spawn(disk::disk_loop(shared.clone())));
    let mqtt = tokio::spawn(mqtt::mqtt_loop(client.clone(), event_loop, sender, shared.metrics.clone()));
    let gaps = tokio::spawn(gaps::gap_loop(shared.clone(), client.clone()));
    let (ack_sender, ack_receiver) = mpsc::unbounded_channel();
    tasks.push(tokio::spawn(mqtt::ack_loop(client, ack_receiver)));
    let ingest = tokio::spawn(ingest::ingest_loop(shared.clone(), ack_sender, receiver));
    let forward = tokio::spawn(forward::forward_loop(shared.clone()));
    tasks.push(tokio::spawn(release::release_loop(shared.clone())));
    tracing::info!(%address, gateway = %config.gateway_id, "gateway serving");
    tasks.extend([server, mqtt, ingest, forward, gaps]);
    Ok(GatewayHandle { address, shutdown: Some(shutdown_sender), tasks })
}

/// Reads the gateway's Ed25519 key (64 hex characters), creating it (mode 0600) on first start.
pub fn load_or_create_key(path: &std::path::Path) -> anyhow::Result<ed25519_dalek::SigningKey> {
    if path.exists() {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let secret: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .with_context(|| format!("{} does not hold 64 hex characters", path.display()))?;
        return Ok(ed25519_dalek::SigningKey::from_bytes(&secret));
    }
    let secret: [u8; 32] = rand::random();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, hex::encode(secret).as_bytes())?;
    file.sync_all()?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&secret))
}
