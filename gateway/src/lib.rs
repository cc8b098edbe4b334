//! The edge gateway: takes readings from MQTT, verifies each against the registry the ledger
//! committed (ZIP-215, batch verification, bisected on failure), keeps every good one in a
//! durable RocksDB outbox before acknowledging it to the broker, quarantines every bad one with
//! its reason, and forwards the outbox to the ledger until the ledger reports each reading final.
//! Modbus devices ([`modbus`]) feed the same pipeline. Every batch forwarded is signed with the
//! gateway's own key.

pub mod config;
pub mod limits;
pub mod modbus;
pub mod store;
pub mod tracker;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use domain::api::{MeterInfo, OutcomeStatus, SubmitReadings, SubmitReadingsResponse};
use domain::clock::Clock;
use domain::ids::{GatewayId, KeyId, MeterId};
use domain::reading::{Envelope, SignedReading};
use domain::verify::verify_batch;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use crate::limits::*;
use crate::store::{GatewayStore, QuarantineEntry, Tracking};

/// The topic filter the gateway subscribes to.
pub const READING_TOPIC_FILTER: &str = "wattle/v1/+/+/reading";

/// How to run a gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub gateway_id: GatewayId,
    pub data_dir: PathBuf,
    pub broker_host: String,
    pub broker_port: u16,
    /// Base URLs of the ledger nodes' client APIs, e.g. `http://127.0.0.1:7000`; any node takes
    /// writes (followers forward them to the leader), and the gateway moves to the next URL when
    /// one fails.
    pub ledger_urls: Vec<String>,
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
}

impl GatewayConfig {
    fn limits(&self) -> tracker::Limits {
        tracker::Limits { max_power_w: self.max_power_w, clock_ahead_s_max: self.clock_ahead_s_max }
    }
}

/// Counters exported on `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    readings_in: AtomicU64,
    readings_accepted: AtomicU64,
    readings_forwarded: AtomicU64,
    readings_duplicate_at_ledger: AtomicU64,
    forward_failures: AtomicU64,
    forward_latency_ms_last: AtomicU64,
    rejected_by_reason: Mutex<HashMap<String, u64>>,
    mqtt_connected: AtomicBool,
    mqtt_subscribed: AtomicBool,
    duplicates_dropped: AtomicU64,
    gap_sequences_opened: AtomicU64,
    gap_sequences_filled: AtomicU64,
    gap_sequences_quarantined: AtomicU64,
    gap_sequences_unfilled: AtomicU64,
    backfill_requests: AtomicU64,
    modbus_polls: AtomicU64,
    modbus_errors_by_reason: Mutex<HashMap<String, u64>>,
    readings_attested: AtomicU64,
    readings_deferred_disk: AtomicU64,
    disk_bytes: AtomicU64,
    over_disk_budget: AtomicBool,
}

impl Metrics {
    fn modbus_error(&self, reason: &str) {
        *self
            .modbus_errors_by_reason
            .lock()
            .expect("metrics lock is never poisoned")
            .entry(reason.to_string())
            .or_default() += 1;
    }

    fn reject(&self, reason: &str) {
        *self
            .rejected_by_reason
            .lock()
            .expect("metrics lock is never poisoned")
            .entry(reason.to_string())
            .or_default() += 1;
    }
}

/// One meter of the registry.
#[derive(Debug, Clone)]
struct RegistryEntry {
    key_id: KeyId,
    public_key: [u8; 32],
    /// For an unsigned meter: the gateway that attests its readings.
    attested_by: Option<GatewayId>,
}

/// The meters this gateway accepts readings from, as committed in the ledger.
struct Registry {
    meters: HashMap<MeterId, RegistryEntry>,
    refreshed: Option<Instant>,
}

/// A message for the pipeline, from MQTT or Modbus.
pub(crate) struct Incoming {
    /// MQTT topic, or `modbus://HOST:PORT/UNIT`.
    source: String,
    /// Where gap recovery asks: the MQTT site, or the Modbus source.
    site: String,
    payload: Vec<u8>,
    /// The MQTT message to acknowledge once the batch is durable.
    ack: Option<Publish>,
    /// Rejected by the input already (reason code, detail): quarantined as is.
    rejected: Option<(&'static str, String)>,
}

#[derive(Clone)]
struct Shared {
    config: GatewayConfig,
    store: GatewayStore,
    metrics: Arc<Metrics>,
    registry: Arc<Mutex<Registry>>,
    http: reqwest::Client,
    outbox_ready: Arc<Notify>,
    /// Index into `config.ledger_urls` of the node currently used.
    ledger_choice: Arc<AtomicU64>,
    /// Per-meter sequence and register tracking (persisted with each batch).
    tracker: Arc<Mutex<BTreeMap<MeterId, tracker::MeterState>>>,
    /// The gateway's signing key: signs forwarded batches and attested readings.
    key: Arc<ed25519_dalek::SigningKey>,
    /// Backfill requests to Modbus devices, by source.
    modbus_backfill: Arc<HashMap<String, mpsc::Sender<(u64, u64)>>>,
}

impl Shared {
    fn ledger_url(&self) -> &str {
        let urls = &self.config.ledger_urls;
        &urls[self.ledger_choice.load(Ordering::Relaxed) as usize % urls.len()]
    }
    /// Moves to the next ledger node after a failure.
    fn next_ledger(&self) {
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
    let store = GatewayStore::open(&config.data_dir)?;
    let http = reqwest::Client::builder().timeout(LEDGER_REQUEST_TIMEOUT).build()?;
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
    let shared = Shared {
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
    if let Err(error) = refresh_registry(&shared).await {
        match load_cached_registry(&shared) {
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
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/quarantine", get(list_quarantine))
        .with_state(shared.clone());
    let server = tokio::spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = shutdown_receiver.await;
        });
        if let Err(error) = serve.await {
            tracing::error!(%error, "gateway HTTP server stopped");
        }
    });
    let (sender, receiver) = mpsc::channel::<Incoming>(INGEST_QUEUE_MAX);
    let mut options =
        MqttOptions::new(format!("wattle-gateway-{}", config.gateway_id), &config.broker_host, config.broker_port);
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
    tasks.push(tokio::spawn(disk_loop(shared.clone())));
    let mqtt = tokio::spawn(mqtt_loop(client.clone(), event_loop, sender, shared.metrics.clone()));
    let gaps = tokio::spawn(gap_loop(shared.clone(), client.clone()));
    let (ack_sender, ack_receiver) = mpsc::unbounded_channel();
    tasks.push(tokio::spawn(ack_loop(client, ack_receiver)));
    let ingest = tokio::spawn(ingest_loop(shared.clone(), ack_sender, receiver));
    let forward = tokio::spawn(forward_loop(shared.clone()));
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

/// Bytes of the files under `dir` (the RocksDB directory: a handful of files).
fn directory_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => directory_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Watches the database's size against the disk budget; while over it, gives space back as the
/// outbox drains (at most every `DISK_RECLAIM_INTERVAL`).
async fn disk_loop(shared: Shared) {
    let mut last_reclaim: Option<(Instant, u64)> = None;
    loop {
        if shared.metrics.over_disk_budget.load(Ordering::Relaxed) {
            let depth = shared.store.outbox_depth();
            let due =
                last_reclaim.is_none_or(|(at, depth_then)| at.elapsed() >= DISK_RECLAIM_INTERVAL && depth < depth_then);
            if due {
                let store = shared.store.clone();
                match tokio::task::spawn_blocking(move || store.reclaim()).await {
                    Ok(Ok(())) => tracing::info!(outbox_depth = depth, "over the disk budget: space reclaimed"),
                    Ok(Err(error)) => tracing::warn!(%error, "reclaiming disk space failed"),
                    Err(error) => tracing::warn!(%error, "reclaim task failed"),
                }
                last_reclaim = Some((Instant::now(), depth));
            }
        }
        let dir = shared.config.data_dir.clone();
        let bytes = tokio::task::spawn_blocking(move || directory_bytes(&dir)).await.unwrap_or(0);
        shared.metrics.disk_bytes.store(bytes, Ordering::Relaxed);
        // Hysteresis: stop at the budget, take readings again only below 90 % of it.
        let was_over = shared.metrics.over_disk_budget.load(Ordering::Relaxed);
        let resume_below = shared.config.disk_budget_bytes / 10 * DISK_RESUME_TENTHS;
        let over = if was_over { bytes >= resume_below } else { bytes >= shared.config.disk_budget_bytes };
        if shared.metrics.over_disk_budget.swap(over, Ordering::Relaxed) != over {
            if over {
                tracing::error!(
                    bytes,
                    budget = shared.config.disk_budget_bytes,
                    "disk budget reached: readings are no longer taken; gap recovery fetches them once there is room"
                );
            } else {
                tracing::info!(bytes, "below the disk budget again: taking readings");
            }
        }
        tokio::time::sleep(DISK_CHECK_INTERVAL).await;
    }
}

async fn mqtt_loop(
    client: AsyncClient,
    mut event_loop: rumqttc::EventLoop,
    sender: mpsc::Sender<Incoming>,
    metrics: Arc<Metrics>,
) {
    let mut failures = 0u32;
    loop {
        match event_loop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                failures = 0;
                metrics.mqtt_connected.store(true, Ordering::Relaxed);
                tracing::info!(session_present = ack.session_present, "connected to the broker");
                if let Err(error) = client.subscribe(READING_TOPIC_FILTER, QoS::AtLeastOnce).await {
                    tracing::error!(%error, "subscribe request failed");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                metrics.mqtt_subscribed.store(true, Ordering::Relaxed);
                tracing::info!(filter = READING_TOPIC_FILTER, "subscribed");
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                // A full queue blocks here, so we stop reading from the broker (back-pressure).
                let incoming = Incoming {
                    source: publish.topic.clone(),
                    site: site_of(&publish.topic).unwrap_or_default().to_string(),
                    payload: publish.payload.to_vec(),
                    ack: Some(publish),
                    rejected: None,
                };
                if sender.send(incoming).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(error) => {
                metrics.mqtt_connected.store(false, Ordering::Relaxed);
                metrics.mqtt_subscribed.store(false, Ordering::Relaxed);
                failures += 1;
                let backoff = Duration::from_millis((100u64 << failures.min(6)).min(5_000));
                tracing::warn!(%error, failures, ?backoff, "MQTT connection lost; reconnecting");
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

/// The registry cache: the last registry the ledger served, so a gateway restarted while the
/// ledger is away still knows its meters.
fn registry_cache(config: &GatewayConfig) -> PathBuf {
    config.data_dir.join("registry.json")
}

async fn refresh_registry(shared: &Shared) -> anyhow::Result<()> {
    let url = format!("{}/v1/meters", shared.ledger_url());
    let body = match shared.http.get(&url).send().await.and_then(|r| r.error_for_status()) {
        Ok(response) => response.bytes().await?,
        Err(error) => {
            shared.next_ledger();
            return Err(error.into());
        }
    };
    let meters: Vec<MeterInfo> = serde_json::from_slice(&body)?;
    let cache = registry_cache(&shared.config);
    let temporary = cache.with_extension("json.tmp");
    if let Err(error) = std::fs::write(&temporary, &body).and_then(|()| std::fs::rename(&temporary, &cache)) {
        tracing::warn!(%error, "registry cache not written");
    }
    install_registry(shared, meters, "the ledger");
    Ok(())
}

/// Loads the cached registry, if any (at start, before the ledger answers).
fn load_cached_registry(shared: &Shared) -> anyhow::Result<bool> {
    let cache = registry_cache(&shared.config);
    if !cache.exists() {
        return Ok(false);
    }
    let text = std::fs::read(&cache).with_context(|| format!("reading {}", cache.display()))?;
    let meters: Vec<MeterInfo> =
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", cache.display()))?;
    install_registry(shared, meters, "the cache");
    Ok(true)
}

fn install_registry(shared: &Shared, meters: Vec<MeterInfo>, from: &str) {
    let mut map = HashMap::with_capacity(meters.len());
    for meter in meters {
        let key: [u8; 32] = match hex::decode(&meter.public_key).ok().and_then(|bytes| bytes.try_into().ok()) {
            Some(key) => key,
            None => {
                tracing::error!(meter = %meter.meter_id, "ledger registry holds a malformed key; meter skipped");
                continue;
            }
        };
        map.insert(
            meter.meter_id,
            RegistryEntry { key_id: KeyId(meter.key_id), public_key: key, attested_by: meter.attested_by },
        );
    }
    let mut registry = shared.registry.lock().expect("registry lock is never poisoned");
    tracing::info!(meters = map.len(), from, "registry loaded");
    registry.meters = map;
    registry.refreshed = Some(Instant::now());
}

fn quarantine_entry(
    shared: &Shared,
    source: &str,
    reason: &str,
    detail: String,
    digest: Option<String>,
    payload: &[u8],
) -> QuarantineEntry {
    shared.metrics.reject(reason);
    let kept = &payload[..payload.len().min(QUARANTINE_PAYLOAD_BYTES_MAX)];
    let mut text = String::from_utf8_lossy(kept).into_owned();
    if payload.len() > kept.len() {
        let _ = write!(text, "... ({} bytes in all)", payload.len());
    }
    tracing::warn!(source, reason, %detail, "reading quarantined");
    QuarantineEntry {
        id: 0,
        received_ms: shared.config.clock.now().0,
        source: source.to_string(),
        reason: reason.to_string(),
        detail,
        digest,
        payload: text,
    }
}

/// Sends the acknowledgements of stored messages. Its own task, because `ack` waits for room in
/// rumqttc's request queue, which only the MQTT loop drains, and the MQTT loop may itself be
/// waiting for room in the ingest queue: awaiting acks in the ingest loop deadlocked a gateway
/// under a backlog (mosquitto sends past `max_inflight_messages` to a subscriber that
/// acknowledges in bursts). The channel holds at most what the broker has in flight to us.
async fn ack_loop(client: AsyncClient, mut acks: mpsc::UnboundedReceiver<Publish>) {
    while let Some(publish) = acks.recv().await {
        if let Err(error) = client.ack(&publish).await {
            tracing::warn!(%error, "acknowledgement not sent; the broker will redeliver");
        }
    }
}

async fn ingest_loop(shared: Shared, acks: mpsc::UnboundedSender<Publish>, mut receiver: mpsc::Receiver<Incoming>) {
    let mut batch = Vec::with_capacity(INGEST_BATCH_MAX);
    loop {
        if receiver.recv_many(&mut batch, INGEST_BATCH_MAX).await == 0 {
            return;
        }
        // A gateway that has never seen the registry cannot tell an unknown meter from one it
        // has not heard of yet: readings wait for it (back-pressure on MQTT; Modbus polls wait
        // too) rather than be quarantined as unknown_meter. Garbage needs no registry.
        if registry_missing(&shared) {
            let (garbage, readings): (Vec<Incoming>, Vec<Incoming>) = batch.drain(..).partition(|incoming| {
                incoming.rejected.is_some()
                    || Envelope::parse_json(&incoming.payload).and_then(|envelope| envelope.open()).is_err()
            });
            take(&shared, &acks, garbage).await;
            batch = readings;
            while !batch.is_empty() && registry_missing(&shared) {
                if refresh_registry(&shared).await.is_err() {
                    tokio::time::sleep(REGISTRY_WAIT_RETRY).await;
                }
            }
        }
        take(&shared, &acks, std::mem::take(&mut batch)).await;
    }
}

fn registry_missing(shared: &Shared) -> bool {
    shared.registry.lock().expect("registry lock is never poisoned").refreshed.is_none()
}

/// Stores a batch (outbox and quarantine, synced), then acknowledges its MQTT messages.
async fn take(shared: &Shared, acks: &mpsc::UnboundedSender<Publish>, batch: Vec<Incoming>) {
    if batch.is_empty() {
        return;
    }
    let result = if shared.metrics.over_disk_budget.load(Ordering::Relaxed) {
        // Over the disk budget: take nothing. The readings are acknowledged so the broker
        // does not queue (and then drop) them for us; the meters still hold them, and the
        // first reading taken after the pause opens the gap that recovers them.
        shared.metrics.readings_deferred_disk.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    } else {
        process_batch(shared, &batch).await
    };
    match result {
        Ok(()) => {
            for publish in batch.into_iter().filter_map(|incoming| incoming.ack) {
                // Only fails once the gateway stops; the broker then redelivers.
                let _ = acks.send(publish);
            }
            shared.outbox_ready.notify_one();
        }
        Err(error) => {
            // Nothing was acknowledged: the broker redelivers after reconnect.
            tracing::error!(%error, "storing a batch failed; readings not acknowledged");
            tokio::time::sleep(FORWARD_BACKOFF_MAX).await;
        }
    }
}

#[tracing::instrument(skip_all, fields(messages = batch.len()))]
async fn process_batch(shared: &Shared, batch: &[Incoming]) -> anyhow::Result<()> {
    shared.metrics.readings_in.fetch_add(batch.len() as u64, Ordering::Relaxed);
    let mut rejected = Vec::new();
    let mut opened: Vec<(usize, Envelope, SignedReading)> = Vec::new();
    for (index, publish) in batch.iter().enumerate() {
        let topic = publish.source.as_str();
        if let Some((reason, detail)) = &publish.rejected {
            rejected.push(quarantine_entry(shared, topic, reason, detail.clone(), None, &publish.payload));
            continue;
        }
        match Envelope::parse_json(&publish.payload)
            .and_then(|envelope| envelope.open().map(|signed| (envelope, signed)))
        {
            Ok((envelope, signed)) => opened.push((index, envelope, signed)),
            Err(error) => {
                rejected.push(quarantine_entry(shared, topic, error.code(), error.to_string(), None, &publish.payload))
            }
        }
    }
    let needs_refresh = {
        let registry = shared.registry.lock().expect("registry lock is never poisoned");
        let stale = registry.refreshed.is_none_or(|at| at.elapsed() >= REGISTRY_REFRESH_MIN);
        stale && opened.iter().any(|(_, _, signed)| !registry.meters.contains_key(&signed.reading().meter_id))
    };
    if needs_refresh {
        if let Err(error) = refresh_registry(shared).await {
            tracing::warn!(%error, "registry refresh failed");
        }
    }
    let mut candidates = Vec::new();
    let mut candidate_envelopes = Vec::new();
    {
        let registry = shared.registry.lock().expect("registry lock is never poisoned");
        for (index, envelope, signed) in opened {
            let topic = batch[index].source.as_str();
            let reading = signed.reading();
            match registry.meters.get(&reading.meter_id) {
                None => rejected.push(quarantine_entry(
                    shared,
                    topic,
                    "unknown_meter",
                    format!("meter {} is not registered", reading.meter_id),
                    Some(signed.digest().to_string()),
                    &batch[index].payload,
                )),
                Some(entry) if entry.key_id != reading.key_id => rejected.push(quarantine_entry(
                    shared,
                    topic,
                    "unknown_key",
                    format!(
                        "meter {} has key {} registered, reading names key {}",
                        reading.meter_id, entry.key_id.0, reading.key_id.0
                    ),
                    Some(signed.digest().to_string()),
                    &batch[index].payload,
                )),
                Some(entry) => {
                    candidates.push((signed, entry.public_key));
                    candidate_envelopes.push((index, envelope));
                }
            }
        }
    }
    let outcomes = tokio::task::spawn_blocking(move || verify_batch(candidates, &mut rand::thread_rng())).await?;
    let mut verified = Vec::new();
    for ((index, envelope), outcome) in candidate_envelopes.into_iter().zip(outcomes) {
        match outcome {
            Ok(reading) => verified.push((index, envelope, reading)),
            Err(refused) => rejected.push(quarantine_entry(
                shared,
                &batch[index].source,
                "bad_signature",
                format!(
                    "meter {} sequence {}: {}",
                    refused.signed.reading().meter_id,
                    refused.signed.reading().sequence,
                    refused.error
                ),
                Some(refused.signed.digest().to_string()),
                &batch[index].payload,
            )),
        }
    }
    // Sequence, register, energy and clock checks, against the tracking state.
    let now_s = shared.config.clock.now().0.div_euclid(1_000);
    let limits = shared.config.limits();
    let mut accepted = Vec::new();
    let mut tracking = Tracking::default();
    {
        let mut tracked = shared.tracker.lock().expect("tracker lock is never poisoned");
        let mut in_batch: HashMap<(MeterId, u64), domain::reading::ReadingDigest> = HashMap::new();
        let mut changed: BTreeMap<MeterId, ()> = BTreeMap::new();
        for (index, envelope, verified_reading) in verified {
            let reading = verified_reading.reading();
            let digest = verified_reading.digest();
            let key = (reading.meter_id.clone(), reading.sequence.0);
            let state = tracked.entry(reading.meter_id.clone()).or_default();
            let seen = match in_batch.get(&key) {
                Some(digest) => Some(*digest),
                // Above the highest sequence settled nothing can have been seen: no lookup.
                None if reading.sequence.0 > state.highest => None,
                None => shared.store.seen(&reading.meter_id, reading.sequence.0)?,
            };
            if state.site.is_empty() {
                state.site = batch[index].site.clone();
            }
            let verdict = tracker::check(state, seen, reading, digest, now_s, limits);
            if let tracker::Verdict::Accept { gap_opened, .. } | tracker::Verdict::Reject { gap_opened, .. } = &verdict
            {
                // The sequence is settled, accepted or quarantined: the same signed bytes again
                // are a duplicate (never quarantined twice), other bytes an equivocation.
                shared.metrics.gap_sequences_opened.fetch_add(*gap_opened, Ordering::Relaxed);
                in_batch.insert(key.clone(), digest);
                tracking.seen.push((key.0, key.1, digest));
                changed.insert(reading.meter_id.clone(), ());
            }
            let (reason, detail) = match verdict {
                tracker::Verdict::Accept { filled, .. } => {
                    if filled {
                        shared.metrics.gap_sequences_filled.fetch_add(1, Ordering::Relaxed);
                    }
                    accepted.push(envelope);
                    continue;
                }
                tracker::Verdict::Duplicate => {
                    shared.metrics.duplicates_dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                tracker::Verdict::Equivocation { detail } => ("equivocation", detail),
                tracker::Verdict::Reject { reason, detail, was_missing, .. } => {
                    if was_missing {
                        shared.metrics.gap_sequences_quarantined.fetch_add(1, Ordering::Relaxed);
                    }
                    (reason, detail)
                }
            };
            let payload = &batch[index].payload;
            rejected.push(quarantine_entry(
                shared,
                &batch[index].source,
                reason,
                detail,
                Some(digest.to_string()),
                payload,
            ));
        }
        tracking.meters = changed.into_keys().map(|meter| (meter.clone(), tracked[&meter].clone())).collect();
    }
    let count = accepted.len() as u64;
    let store = shared.store.clone();
    tokio::task::spawn_blocking(move || store.store_batch(&accepted, rejected, tracking)).await??;
    shared.metrics.readings_accepted.fetch_add(count, Ordering::Relaxed);
    Ok(())
}

/// The site in a reading topic `wattle/v1/{site}/{meter}/reading`.
fn site_of(topic: &str) -> Option<&str> {
    let mut parts = topic.split('/');
    (parts.next() == Some("wattle") && parts.next() == Some("v1")).then(|| parts.next()).flatten()
}

/// A backfill command (docs/mqtt.md).
#[derive(Debug, serde::Serialize)]
struct BackfillCommand {
    from: u64,
    to: u64,
}

/// Gap recovery: asks meters with missing sequences to send them again on their backfill topics.
/// Each round (every `GAP_RETRY_INTERVAL`) asks for at most `BACKFILL_SEQUENCES_PER_ROUND`
/// sequences, so the answers fit the broker's queue for us (mosquitto's default: 1,000) next to
/// live traffic; rounds continue where the last one stopped. A meter is asked again only
/// `GAP_RETRY_AFTER` after its last request (answers take time on a loaded link), and a meter whose
/// whole missing set was asked for `GAP_REQUESTS_MAX` times without arriving is reported
/// unfillable (logged, counted) and no longer asked for.
async fn gap_loop(shared: Shared, client: AsyncClient) {
    let mut cursor: Option<MeterId> = None;
    let mut last_asked: HashMap<MeterId, Instant> = HashMap::new();
    loop {
        tokio::time::sleep(GAP_RETRY_INTERVAL).await;
        if shared.metrics.over_disk_budget.load(Ordering::Relaxed) {
            // The answers could not be taken: asking would only use up the attempts.
            continue;
        }
        let mut requests = Vec::new();
        let mut changed = Vec::new();
        {
            let mut tracked = shared.tracker.lock().expect("tracker lock is never poisoned");
            let mut budget = BACKFILL_SEQUENCES_PER_ROUND;
            let start = cursor.clone();
            let (after, before): (Vec<MeterId>, Vec<MeterId>) = tracked
                .iter()
                .filter(|(_, state)| !state.missing.is_empty())
                .map(|(meter, _)| meter.clone())
                .filter(|meter| last_asked.get(meter).is_none_or(|at| at.elapsed() >= GAP_RETRY_AFTER))
                .partition(|meter| start.as_ref().is_none_or(|start| meter >= start));
            for meter in after.into_iter().chain(before) {
                if budget == 0 {
                    cursor = Some(meter);
                    break;
                }
                let state = tracked.get_mut(&meter).expect("listed above");
                if state.requests >= GAP_REQUESTS_MAX {
                    let unfilled = state.missing_count();
                    tracing::warn!(%meter, unfilled, ranges = ?state.missing, "missing readings not recovered by backfill");
                    shared.metrics.gap_sequences_unfilled.fetch_add(unfilled, Ordering::Relaxed);
                    state.missing.clear();
                    state.requests = 0;
                    changed.push((meter.clone(), state.clone()));
                    continue;
                }
                // A Modbus meter is asked through its device's history model; an MQTT one on its
                // site's backfill topic.
                let topic = if state.site.starts_with("modbus://") {
                    state.site.clone()
                } else {
                    format!("wattle/v1/{}/{meter}/cmd/backfill", state.site)
                };
                let mut whole = true;
                'ranges: for &(from, to) in &state.missing {
                    let mut next = from;
                    while next <= to {
                        if budget == 0 {
                            whole = false;
                            break 'ranges;
                        }
                        let end = to.min(next + BACKFILL_SPAN_MAX.min(budget) - 1);
                        requests.push((topic.clone(), BackfillCommand { from: next, to: end }));
                        budget -= end - next + 1;
                        next = end + 1;
                    }
                }
                last_asked.insert(meter.clone(), Instant::now());
                if whole {
                    state.requests += 1;
                    changed.push((meter.clone(), state.clone()));
                } else {
                    cursor = Some(meter.clone());
                }
            }
            if budget > 0 {
                cursor = None;
            }
            last_asked.retain(|meter, _| tracked.get(meter).is_some_and(|state| !state.missing.is_empty()));
        }
        for (topic, command) in requests {
            if let Some(device) = shared.modbus_backfill.get(&topic) {
                if device.try_send((command.from, command.to)).is_ok() {
                    shared.metrics.backfill_requests.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            let payload = serde_json::to_vec(&command).expect("a command serialises");
            match client.publish(&topic, QoS::AtLeastOnce, false, payload).await {
                Ok(()) => {
                    shared.metrics.backfill_requests.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => tracing::warn!(%error, %topic, "backfill request not sent"),
            }
        }
        if !changed.is_empty() {
            let store = shared.store.clone();
            match tokio::task::spawn_blocking(move || store.put_meters(&changed)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "gap bookkeeping not stored"),
                Err(error) => tracing::warn!(%error, "gap bookkeeping task failed"),
            }
        }
    }
}

async fn forward_loop(shared: Shared) {
    let mut backoff = FORWARD_BACKOFF_MIN;
    loop {
        match forward_once(&shared).await {
            Ok(0) => {
                backoff = FORWARD_BACKOFF_MIN;
                let _ = tokio::time::timeout(Duration::from_millis(200), shared.outbox_ready.notified()).await;
            }
            Ok(_) => backoff = FORWARD_BACKOFF_MIN,
            Err(error) => {
                shared.next_ledger();
                shared.metrics.forward_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, ?backoff, "forwarding to the ledger failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(FORWARD_BACKOFF_MAX);
            }
        }
    }
}

/// Sends the head of the outbox to the ledger; returns how many readings were completed.
async fn forward_once(shared: &Shared) -> anyhow::Result<usize> {
    let store = shared.store.clone();
    let head = tokio::task::spawn_blocking(move || store.outbox_head(FORWARD_BATCH_MAX)).await??;
    if head.is_empty() {
        return Ok(0);
    }
    let started = Instant::now();
    let request = SubmitReadings {
        gateway_id: shared.config.gateway_id.clone(),
        readings: head.iter().map(|(_, envelope)| envelope.clone()).collect(),
        gateway_signature: None,
    };
    let request = SubmitReadings {
        gateway_signature: Some(domain::api::GatewaySignature::sign(
            &shared.key,
            &request.gateway_id,
            &request.readings,
        )),
        ..request
    };
    let response = shared.http.post(format!("{}/v1/readings", shared.ledger_url())).json(&request).send().await?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        anyhow::bail!("ledger answered {status}: {body}");
    }
    let response: SubmitReadingsResponse = response.json().await?;
    anyhow::ensure!(
        response.outcomes.len() == head.len(),
        "ledger answered {} outcomes for {} readings",
        response.outcomes.len(),
        head.len()
    );
    let mut rejected = Vec::new();
    for ((_, envelope), outcome) in head.iter().zip(&response.outcomes) {
        match outcome.status {
            OutcomeStatus::Accepted => {}
            OutcomeStatus::Duplicate => {
                shared.metrics.readings_duplicate_at_ledger.fetch_add(1, Ordering::Relaxed);
            }
            OutcomeStatus::Pending => anyhow::bail!("the ledger answered without waiting for commit"),
            OutcomeStatus::Equivocation | OutcomeStatus::Rejected => {
                let reason = format!("ledger_{}", outcome.reason.as_deref().unwrap_or("rejected"));
                let payload = serde_json::to_vec(envelope)?;
                rejected.push(quarantine_entry(
                    shared,
                    "ledger",
                    &reason,
                    format!("{:?}", outcome.status),
                    outcome.digest.clone(),
                    &payload,
                ));
            }
        }
    }
    let ids: Vec<u64> = head.iter().map(|(id, _)| *id).collect();
    let count = ids.len();
    let store = shared.store.clone();
    tokio::task::spawn_blocking(move || store.complete(&ids, rejected)).await??;
    shared.metrics.readings_forwarded.fetch_add(count as u64, Ordering::Relaxed);
    shared.metrics.forward_latency_ms_last.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    tracing::debug!(count, log_index = ?response.log_index, "forwarded to the ledger");
    Ok(count)
}

async fn healthz(State(shared): State<Shared>) -> impl IntoResponse {
    let connected = shared.metrics.mqtt_connected.load(Ordering::Relaxed);
    let subscribed = shared.metrics.mqtt_subscribed.load(Ordering::Relaxed);
    let body = serde_json::json!({
        "mqtt_connected": connected,
        "mqtt_subscribed": subscribed,
        "outbox_depth": shared.store.outbox_depth(),
        "over_disk_budget": shared.metrics.over_disk_budget.load(Ordering::Relaxed),
        "modbus_devices": shared.config.modbus.len(),
        "registry_meters": shared.registry.lock().expect("registry lock is never poisoned").meters.len(),
    });
    let status = if connected && subscribed { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body))
}

async fn metrics(State(shared): State<Shared>) -> String {
    let m = &shared.metrics;
    let mut out = String::new();
    let mut line = |name: &str, help: &str, kind: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    line(
        "wattle_gateway_readings_in_total",
        "Messages received from MQTT.",
        "counter",
        m.readings_in.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_readings_accepted_total",
        "Readings verified and stored in the outbox.",
        "counter",
        m.readings_accepted.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_readings_forwarded_total",
        "Readings the ledger reported final.",
        "counter",
        m.readings_forwarded.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_duplicates_total",
        "Readings the ledger had already committed.",
        "counter",
        m.readings_duplicate_at_ledger.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_forward_failures_total",
        "Failed forwards (retried with backoff).",
        "counter",
        m.forward_failures.load(Ordering::Relaxed),
    );
    line("wattle_gateway_outbox_depth", "Readings waiting for the ledger.", "gauge", shared.store.outbox_depth());
    line(
        "wattle_gateway_duplicates_dropped_total",
        "Readings received again with the same signed bytes (dropped at the gateway).",
        "counter",
        m.duplicates_dropped.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_gap_sequences_opened_total",
        "Sequences found missing (a later sequence arrived first).",
        "counter",
        m.gap_sequences_opened.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_gap_sequences_filled_total",
        "Missing sequences that arrived later (backfill).",
        "counter",
        m.gap_sequences_filled.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_gap_sequences_quarantined_total",
        "Missing sequences whose reading arrived but was quarantined (backfill cannot bring other bytes).",
        "counter",
        m.gap_sequences_quarantined.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_gap_sequences_unfilled_total",
        "Missing sequences given up after the last backfill request.",
        "counter",
        m.gap_sequences_unfilled.load(Ordering::Relaxed),
    );
    let open: u64 = shared.tracker.lock().expect("tracker lock").values().map(tracker::MeterState::missing_count).sum();
    line("wattle_gateway_gap_sequences_open", "Sequences missing right now.", "gauge", open);
    line(
        "wattle_gateway_backfill_requests_total",
        "Backfill commands published to meters.",
        "counter",
        m.backfill_requests.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_forward_latency_ms",
        "Latency of the last forward to the ledger.",
        "gauge",
        m.forward_latency_ms_last.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_modbus_polls_total",
        "Modbus polls answered.",
        "counter",
        m.modbus_polls.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_readings_attested_total",
        "Readings of unsigned meters attested (signed) by this gateway.",
        "counter",
        m.readings_attested.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_readings_deferred_disk_budget_total",
        "Messages not taken because the database reached its disk budget (recovered by gap recovery).",
        "counter",
        m.readings_deferred_disk.load(Ordering::Relaxed),
    );
    line(
        "wattle_gateway_disk_bytes",
        "Bytes of the gateway's database.",
        "gauge",
        m.disk_bytes.load(Ordering::Relaxed),
    );
    line("wattle_gateway_disk_budget_bytes", "The configured disk budget.", "gauge", shared.config.disk_budget_bytes);
    labelled(
        &mut out,
        "wattle_gateway_modbus_errors_total",
        "Modbus polls that failed or returned invalid data, by reason.",
        &m.modbus_errors_by_reason,
    );
    labelled(
        &mut out,
        "wattle_gateway_readings_rejected_total",
        "Readings quarantined, by reason.",
        &m.rejected_by_reason,
    );
    out
}

/// A counter with one line per reason, sorted.
fn labelled(out: &mut String, name: &str, help: &str, counts: &Mutex<HashMap<String, u64>>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    let mut reasons: Vec<(String, u64)> =
        counts.lock().expect("metrics lock is never poisoned").iter().map(|(k, v)| (k.clone(), *v)).collect();
    reasons.sort();
    for (reason, count) in reasons {
        let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {count}");
    }
}

#[derive(Debug, Deserialize)]
struct QuarantineQuery {
    #[serde(default)]
    from: u64,
    limit: Option<usize>,
}

async fn list_quarantine(State(shared): State<Shared>, Query(query): Query<QuarantineQuery>) -> impl IntoResponse {
    let limit = query.limit.unwrap_or(QUARANTINE_PAGE_MAX).clamp(1, QUARANTINE_PAGE_MAX);
    match shared.store.quarantine(query.from, limit) {
        Ok(entries) => (StatusCode::OK, Json(serde_json::json!({ "entries": entries }))).into_response(),
        Err(error) => {
            tracing::error!(%error, "reading the quarantine failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(serde_json::json!({"code": "storage", "message": "quarantine unreadable"})),
            )
                .into_response()
        }
    }
}
