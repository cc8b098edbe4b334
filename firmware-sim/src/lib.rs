//! The simulated meter fleet. Meters belong to sites; each site publishes for its meters over
//! a few MQTT connections, as data concentrators do. Every meter signs one reading per interval
//! (QoS 1), announces itself with a birth message, is marked offline by its connection's last
//! will, and re-sends any range of its remembered readings on a backfill command. Faults come
//! from a replayable plan ([`faults`]); the ground truth is written compactly ([`truth`]).
//!
//! Topics (`{site}` is `site-N`, `{meter}` the meter id):
//! - `wattle/v1/{site}/{meter}/reading`: the reading envelope (JSON, `docs/reading-format.md`), QoS 1.
//! - `wattle/v1/{site}/{meter}/birth`: retained, QoS 1: meter id, key id, public key, firmware,
//!   interval length, connection.
//! - `wattle/v1/{site}/connection/{n}/state`: retained, QoS 1: `{"online":true,...}` on connect;
//!   the connection's last will sets `{"online":false,...}`, marking its meters offline.
//! - `wattle/v1/{site}/{meter}/cmd/backfill`: commands to the meter, `{"from":N,"to":M}`
//!   (inclusive, at most 4,096 sequences); answered on the reading topic with `"backfill":true`.

pub mod faults;
pub mod fleet;
pub mod limits;
pub mod load;
pub mod modbus;
pub mod pv;
pub mod truth;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use domain::api::MeterInfo;
use domain::clock::Clock;
use domain::ids::{UnixMillis, UnixSeconds};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

pub use crate::faults::{Fault, FaultKind, FaultPlan, FaultRequest};
pub use crate::fleet::{
    customer_id, meter_id, meter_index, meter_key, Fleet, REGISTER_MODULUS_WH, SIM_FIRMWARE, SIM_KEY_ID,
};
pub use crate::truth::{Truth, TruthRecord, TruthWriter};

/// The registry entries of a fleet, as the ledger's admin configuration loads them.
pub fn registry(seed: u64, meters: u32) -> Vec<MeterInfo> {
    (0..meters)
        .map(|index| MeterInfo {
            meter_id: meter_id(index),
            key_id: SIM_KEY_ID.0,
            public_key: hex::encode(meter_key(seed, index).verifying_key().to_bytes()),
            customer_id: customer_id(index),
            attested_by: None,
            keys: Vec::new(),
        })
        .collect()
}

/// Writes a registry file (JSON array of [`MeterInfo`]).
pub fn write_registry(path: &Path, seed: u64, meters: u32) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(&registry(seed, meters))?;
    std::fs::write(path, json).with_context(|| format!("writing registry {}", path.display()))
}

/// The topic a meter publishes its readings on.
pub fn reading_topic(site: &str, meter: &domain::ids::MeterId) -> String {
    format!("wattle/v1/{site}/{meter}/reading")
}

/// The topic a meter listens on for backfill commands.
pub fn backfill_topic(site: &str, meter: &domain::ids::MeterId) -> String {
    format!("wattle/v1/{site}/{meter}/cmd/backfill")
}

/// A backfill command: re-send sequences `from..=to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillCommand {
    pub from: u64,
    pub to: u64,
}

/// A meter's birth message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Birth {
    pub meter_id: domain::ids::MeterId,
    pub key_id: u32,
    pub public_key: String,
    pub firmware: String,
    pub interval_s: i64,
    pub site: String,
    pub connection: u32,
}

/// How to run the fleet.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub meters: u32,
    pub seed: u64,
    pub sites: u32,
    pub connections_per_site: u32,
    pub interval_s: i64,
    /// Start of sequence 1; defaults to the start of the interval the clock is in.
    pub epoch: Option<UnixSeconds>,
    /// Stop after this many intervals (run until stopped if `None`).
    pub intervals: Option<u64>,
    /// With `intervals`: instead of stopping after them, wait (the fleet frozen, its connections
    /// open) and publish one more interval for each step this counter adds (`wattle sandbox
    /// --intervals N`, SIGUSR1). A step's interval is the next in sequence, published at once
    /// even if the clock is past its end (the ledger settles it as late data of the open period).
    pub steps: Option<Steps>,
    pub broker_host: String,
    pub broker_port: u16,
    pub truth_out: Option<PathBuf>,
    pub faults: Vec<FaultRequest>,
    /// A fault plan to replay (from `--fault-plan-out` of an earlier run); overrides `faults`.
    pub fault_plan: Option<FaultPlan>,
    pub memory_days: u32,
    pub clock: Clock,
    /// After the last interval, keep answering backfill commands this long before exiting.
    pub linger: Duration,
    /// Serve each site over Modbus TCP: site N listens on this address's port + N.
    pub modbus_listen: Option<std::net::SocketAddr>,
    /// Meters without a signing key (SDM630-style legacy meters): Modbus only, never MQTT.
    pub legacy_meters: std::collections::HashSet<u32>,
    /// Load profile, PV share, site and time zone of the fleet.
    pub load: load::LoadConfig,
}

/// Stepping a frozen fleet ([`SimConfig::steps`]).
#[derive(Debug, Clone)]
pub struct Steps {
    /// Intervals granted beyond `intervals`: the fleet publishes one more for each.
    pub granted: watch::Receiver<u64>,
    /// Set each time the fleet freezes: what it has published so far.
    pub frozen: Arc<watch::Sender<Option<SimSummary>>>,
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimSummary {
    pub published: u64,
    pub intervals: u64,
    pub backfilled: u64,
    pub elapsed_s: f64,
}

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    acked: AtomicU64,
    backfilled: AtomicU64,
    commands_refused: AtomicU64,
}

/// Resident memory of this process in bytes (Linux), for the progress line and the benchmark.
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4_096)
}

/// Builds the fleet a configuration describes.
pub fn build_fleet(config: &SimConfig) -> Result<Fleet, load::LoadConfigError> {
    let interval_ms = config.interval_s * 1_000;
    let epoch =
        config.epoch.unwrap_or_else(|| UnixSeconds(config.clock.now().0.div_euclid(interval_ms) * interval_ms / 1_000));
    let plan = config.fault_plan.clone().unwrap_or_else(|| {
        FaultPlan::build(config.seed, config.meters, config.intervals.unwrap_or(96), &config.faults)
    });
    Fleet::new(config.seed, config.meters, config.sites, config.interval_s, epoch, plan).with_model(config.load)
}

/// Starts a Modbus TCP server per site (if `config.modbus_listen`), serving the registers of the
/// interval `tick` names.
async fn serve_modbus(
    config: &SimConfig,
    fleet: &Arc<Fleet>,
    tick: &watch::Receiver<u64>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<anyhow::Result<()>>>> {
    let mut servers = Vec::new();
    let Some(listen) = config.modbus_listen else { return Ok(servers) };
    let memory_intervals = (u64::from(config.memory_days) * 86_400 / fleet.interval_s.max(1) as u64).max(1);
    for site in 0..fleet.sites {
        let address =
            std::net::SocketAddr::new(listen.ip(), listen.port().checked_add(site as u16).context("Modbus port")?);
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("binding the Modbus server of site {site} to {address}"))?;
        tracing::info!(site = %Fleet::site_name(site), %address, "Modbus TCP server listening");
        servers.push(tokio::spawn(modbus::serve_site(
            fleet.clone(),
            site,
            listener,
            config.legacy_meters.clone(),
            tick.clone(),
            memory_intervals,
        )));
    }
    Ok(servers)
}

/// Runs the fleet: as the clock passes each interval's end, every meter publishes what the plan
/// says; waits at the end until the broker has acknowledged every publish.
pub async fn run(config: SimConfig, fleet: Fleet) -> anyhow::Result<SimSummary> {
    let fleet = Arc::new(fleet);
    let counters = Arc::new(Counters::default());
    let (tick_sender, tick) = watch::channel(0u64);
    let mut connections = Vec::new();
    let (done_sender, mut done) = mpsc::channel::<(u32, u32, u64)>(1_024);
    let mut servers = serve_modbus(&config, &fleet, &tick).await?;
    for site in 0..fleet.sites {
        let site_meters: Vec<u32> = (0..fleet.meters)
            .filter(|meter| fleet.site_of(*meter) == site && !config.legacy_meters.contains(meter))
            .collect();
        if site_meters.is_empty() {
            continue;
        }
        for connection in 0..config.connections_per_site.max(1) {
            let meters: Vec<u32> = site_meters
                .iter()
                .copied()
                .filter(|meter| meter % config.connections_per_site.max(1) == connection)
                .collect();
            if meters.is_empty() {
                continue;
            }
            connections.push(tokio::spawn(run_connection(
                config.clone(),
                fleet.clone(),
                site,
                connection,
                meters,
                tick.clone(),
                counters.clone(),
                done_sender.clone(),
            )));
        }
    }
    drop(done_sender);
    let connection_count = connections.len();
    let mut truth = match &config.truth_out {
        Some(path) => Some(TruthWriter::create(path, &fleet)?),
        None => None,
    };
    let started = Instant::now();
    let mut reported: std::collections::HashMap<(u32, u32), u64> = std::collections::HashMap::new();
    let faults_planned = fleet.plan.faults.len();
    let mut sequence = 0u64;
    let mut last_progress = Instant::now();
    let mut steps = config.steps.clone();
    loop {
        if let Some(limit) = config.intervals {
            if sequence >= limit + steps.as_ref().map_or(0, |steps| *steps.granted.borrow()) {
                let Some(steps) = steps.as_mut() else { break };
                // Frozen means frozen: the Modbus servers stop too, or a gateway polling a
                // legacy meter would go on attesting (empty) intervals.
                for server in servers.drain(..) {
                    server.abort();
                }
                let published = counters.published.load(Ordering::Relaxed);
                tracing::info!(interval = sequence, published, "fleet frozen; waiting for a step");
                steps.frozen.send_replace(Some(SimSummary {
                    published,
                    intervals: sequence,
                    backfilled: counters.backfilled.load(Ordering::Relaxed),
                    elapsed_s: started.elapsed().as_secs_f64(),
                }));
                if steps.granted.changed().await.is_err() {
                    break;
                }
                servers = serve_modbus(&config, &fleet, &tick).await?;
                continue;
            }
        }
        let next = sequence + 1;
        let end_ms = (fleet.interval_start(next).0 + fleet.interval_s) * 1_000;
        loop {
            let wait = config.clock.real_millis_until(UnixMillis(end_ms));
            if wait == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(wait.min(1_000))).await;
        }
        if let Some(truth) = truth.as_mut() {
            truth.write_interval(&fleet, next)?;
        }
        sequence = next;
        let _ = tick_sender.send(sequence);
        // Barrier: in accelerated time the clock would otherwise run ahead of the connections.
        while reported.values().filter(|&&done| done >= sequence).count() < connection_count {
            match done.recv().await {
                Some((site, connection, up_to)) => {
                    reported.insert((site, connection), up_to);
                }
                None => anyhow::bail!("a site connection stopped"),
            }
        }
        let intervals_per_day = (86_400 / fleet.interval_s).max(1) as u64;
        if sequence % intervals_per_day == 0 {
            tracing::info!(
                day = sequence / intervals_per_day,
                meters = fleet.meters,
                published = counters.published.load(Ordering::Relaxed),
                rss_bytes = resident_memory_bytes().unwrap_or(0),
                elapsed_s = format!("{:.1}", started.elapsed().as_secs_f64()),
                "simulated day complete"
            );
        }
        if last_progress.elapsed() >= Duration::from_secs(1) || config.intervals.is_some_and(|limit| sequence >= limit)
        {
            last_progress = Instant::now();
            let published = counters.published.load(Ordering::Relaxed);
            tracing::info!(
                meters = fleet.meters,
                interval = sequence,
                sim_time = %chrono::DateTime::from_timestamp_millis(end_ms).map(|t| t.to_rfc3339()).unwrap_or_default(),
                published,
                readings_per_s = format!("{:.0}", published as f64 / started.elapsed().as_secs_f64().max(1e-9)),
                faults_planned,
                backfilled = counters.backfilled.load(Ordering::Relaxed),
                rss_mib = resident_memory_bytes().unwrap_or(0) / (1024 * 1024),
                "fleet progress"
            );
        }
    }
    let deadline = tokio::time::Instant::now() + limits::ACK_WAIT_MAX;
    let published = counters.published.load(Ordering::Relaxed);
    while counters.acked.load(Ordering::Relaxed) < published {
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "broker acknowledged {} of {published} publishes in time",
                counters.acked.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !config.linger.is_zero() {
        tracing::info!(linger_s = config.linger.as_secs(), "last interval sent; still answering backfill commands");
        tokio::time::sleep(config.linger).await;
    }
    let summary = SimSummary {
        published: counters.published.load(Ordering::Relaxed),
        intervals: sequence,
        backfilled: counters.backfilled.load(Ordering::Relaxed),
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    for connection in connections {
        connection.abort();
    }
    for server in servers {
        server.abort();
    }
    Ok(summary)
}

#[allow(clippy::too_many_arguments)]
async fn run_connection(
    config: SimConfig,
    fleet: Arc<Fleet>,
    site: u32,
    connection: u32,
    meters: Vec<u32>,
    mut tick: watch::Receiver<u64>,
    counters: Arc<Counters>,
    done: mpsc::Sender<(u32, u32, u64)>,
) -> anyhow::Result<()> {
    let site_name = Fleet::site_name(site);
    let state_topic = format!("wattle/v1/{site_name}/connection/{connection}/state");
    let client_id = format!("wattle-sim-{}-{site_name}-{connection}", config.seed);
    let mut options = MqttOptions::new(client_id, &config.broker_host, config.broker_port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_inflight(limits::MQTT_INFLIGHT_MAX);
    options.set_max_packet_size(limits::MQTT_PACKET_BYTES_MAX, limits::MQTT_PACKET_BYTES_MAX);
    let offline = serde_json::json!({ "online": false, "site": site_name, "connection": connection }).to_string();
    options.set_last_will(LastWill::new(&state_topic, offline, QoS::AtLeastOnce, true));
    let (client, mut event_loop) = AsyncClient::new(options, limits::MQTT_REQUEST_QUEUE_MAX);
    let (command_sender, mut commands) = mpsc::channel::<(u32, BackfillCommand)>(limits::COMMAND_QUEUE_MAX);
    let owned: std::collections::HashSet<u32> = meters.iter().copied().collect();
    // The network task: reconnects, counts acknowledgements, announces births, takes commands.
    let network = {
        let client = client.clone();
        let counters = counters.clone();
        let fleet = fleet.clone();
        let meters = meters.clone();
        let site_name = site_name.clone();
        tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                match event_loop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        failures = 0;
                        let online = serde_json::json!({ "online": true, "site": site_name, "connection": connection, "meters": meters.len() });
                        // Queued from a task: with the request queue full of readings, a `try_`
                        // call here could fail and leave the connection without its command
                        // subscription (backfill would then never be answered).
                        tokio::spawn({
                            let client = client.clone();
                            let (state_topic, command_topic) =
                                (state_topic.clone(), format!("wattle/v1/{site_name}/+/cmd/backfill"));
                            async move {
                                let _ = client.publish(state_topic, QoS::AtLeastOnce, true, online.to_string()).await;
                                let _ = client.subscribe(command_topic, QoS::AtLeastOnce).await;
                            }
                        });
                        let client = client.clone();
                        let (fleet, meters, site_name, counters) =
                            (fleet.clone(), meters.clone(), site_name.clone(), counters.clone());
                        tokio::spawn(async move {
                            for meter in meters {
                                let birth = Birth {
                                    meter_id: meter_id(meter),
                                    key_id: SIM_KEY_ID.0,
                                    public_key: hex::encode(meter_key(fleet.seed, meter).verifying_key().to_bytes()),
                                    firmware: SIM_FIRMWARE.to_string(),
                                    interval_s: fleet.interval_s,
                                    site: site_name.clone(),
                                    connection,
                                };
                                let topic = format!("wattle/v1/{site_name}/{}/birth", birth.meter_id);
                                let payload = serde_json::to_vec(&birth).expect("birth serialises");
                                if client.publish(topic, QoS::AtLeastOnce, true, payload).await.is_err() {
                                    return;
                                }
                                counters.published.fetch_add(1, Ordering::Relaxed);
                            }
                        });
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        counters.acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let meter = publish.topic.split('/').nth(3).and_then(meter_index);
                        let command: Option<BackfillCommand> = serde_json::from_slice(&publish.payload).ok();
                        match (meter, command) {
                            (Some(meter), Some(command)) if owned.contains(&meter) => {
                                if command_sender.try_send((meter, command)).is_err() {
                                    counters.commands_refused.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            (Some(meter), _) if !owned.contains(&meter) => {}
                            _ => {
                                counters.commands_refused.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(topic = %publish.topic, "malformed backfill command ignored");
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        failures += 1;
                        let backoff = Duration::from_millis((100u64 << failures.min(6)).min(5_000));
                        tracing::warn!(%error, failures, ?backoff, "MQTT connection lost; reconnecting");
                        tokio::time::sleep(backoff).await;
                    }
                }
            }
        })
    };
    // Live state: each meter's registers after the last sequence published.
    let mut registers: Vec<fleet::Registers> = meters.iter().map(|meter| fleet.registers_before(*meter, 1)).collect();
    // A meter holds its key; deriving it costs a base-point multiplication, as much as a signature.
    let keys: Vec<ed25519_dalek::SigningKey> = meters.iter().map(|meter| meter_key(fleet.seed, *meter)).collect();
    let mut published_up_to = 0u64;
    let memory_s = i64::from(config.memory_days) * 86_400;
    let result: anyhow::Result<()> = async {
        loop {
            tokio::select! {
                changed = tick.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let target = *tick.borrow_and_update();
                    while published_up_to < target {
                        let sequence = published_up_to + 1;
                        for (slot, meter) in meters.iter().enumerate() {
                            let reading = fleet.step(*meter, sequence, registers[slot]);
                            registers[slot] = fleet::Registers::after(&reading);
                            let stored = reading.sign(&keys[slot]).context("valid reading")?;
                            for emission in fleet.emissions(*meter, &stored, |earlier| fleet.stored_reading(*meter, earlier)) {
                                let topic = reading_topic(&site_name, &emission.reading.reading().meter_id);
                                client.publish(topic, QoS::AtLeastOnce, false, serde_json::to_vec(&emission.envelope)?).await?;
                                counters.published.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        published_up_to = sequence;
                    }
                    let _ = done.send((site, connection, published_up_to)).await;
                }
                Some((meter, command)) = commands.recv() => {
                    let now_s = config.clock.now().0 / 1_000;
                    let oldest = fleet.sequences_ended_by(now_s - memory_s) + 1;
                    let from = command.from.max(oldest).max(1);
                    let to = command.to.min(published_up_to);
                    if command.to < command.from || command.to - command.from >= limits::BACKFILL_RANGE_MAX || from > to {
                        counters.commands_refused.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(meter, ?command, oldest, newest = published_up_to, "backfill command outside memory or limits");
                        continue;
                    }
                    let key = meter_key(fleet.seed, meter);
                    let mut registers = fleet.registers_before(meter, from);
                    for sequence in from..=to {
                        let reading = fleet.step(meter, sequence, registers);
                        registers = fleet::Registers::after(&reading);
                        let signed = reading.sign(&key).context("valid reading")?;
                        let topic = reading_topic(&site_name, &signed.reading().meter_id);
                        client.publish(topic, QoS::AtLeastOnce, false, serde_json::to_vec(&signed.to_envelope(true))?).await?;
                        counters.published.fetch_add(1, Ordering::Relaxed);
                        counters.backfilled.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
    .await;
    network.abort();
    result
}

/// Measures bare Ed25519 signing of 110-byte messages on this core for about `seconds`, for the
/// ratio the benchmark reports.
pub fn bare_signing_per_second(seconds: f64) -> f64 {
    use ed25519_dalek::Signer;
    let key = meter_key(0, 0);
    let message = [7u8; domain::limits::READING_BYTES];
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        for _ in 0..256 {
            std::hint::black_box(key.sign(std::hint::black_box(&message)));
        }
        count += 256;
    }
    count as f64 / started.elapsed().as_secs_f64()
}
