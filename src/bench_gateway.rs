//! `wattle bench gateway`: readings verified and durably stored per second, and per core, through
//! the whole gateway (MQTT in from mosquitto, JSON decode, batch verification, tracking, synced
//! RocksDB outbox write, acknowledgement), against bare batch verification of the same readings
//! on one core, measured in the same run.
//!
//! The parts run as they do in production, each its own process started from this binary:
//! mosquitto, one ledger node holding the fleet's registry, and `wattle gateway`. This process
//! pre-signs the readings, publishes them as the fleet simulator does, and reads the gateway's
//! CPU time from `/proc/PID/stat`, so the per-core figure does not depend on what else the two
//! cores are doing. It counts what the gateway has stored by relaying the gateway's MQTT
//! connection and counting its PUBACKs (the gateway acknowledges a reading only once it is
//! verified and written with fsync), not by reading `/metrics`: a read of `/metrics` scans the
//! gateway's outbox and would cost the gateway more CPU than it is worth (it is measured and
//! reported once, at the end).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::process::{free_port, Mosquitto, Process};
use domain::ids::UnixSeconds;
use domain::reading::{Envelope, SignedReading};
use gateway::limits::INGEST_BATCH_MAX;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// Options of `wattle bench gateway`.
#[derive(Debug, clap::Args)]
pub struct GatewayBenchArgs {
    /// Readings to publish: pre-signed, distinct (meter, sequence), each meter's chain of
    /// registers intact, so the gateway must accept every one.
    #[arg(long, default_value_t = 200_000)]
    readings: u64,
    /// Meters in the fleet; readings go out sequence by sequence (sequence 1 of every meter,
    /// then 2, ...), as a fleet publishes.
    #[arg(long, default_value_t = 1_000)]
    meters: u32,
    /// MQTT connections publishing (meter i on connection i mod N, so each meter's readings
    /// stay in order).
    #[arg(long, default_value_t = 1)]
    connections: u32,
    /// mosquitto's `max_inflight_messages`: QoS 1 messages it may send the gateway ahead of their
    /// acknowledgements (mosquitto's default is 20, which would cap the gateway's batches at 20;
    /// 0 means no limit). mosquitto 2.0.11 exceeds it when acknowledgements come in bursts.
    #[arg(long, default_value_t = 1_000)]
    broker_inflight: u32,
    /// Most readings published ahead of the gateway's acknowledgements (0: no limit, as fast as
    /// the broker takes them). mosquitto 2.0.11 sends a subscriber more than `max_inflight_messages`
    /// when it acknowledges in bursts, and a gateway that falls a few thousand readings behind
    /// stops for good (see BENCHMARKS.md); below its ingest queue (4,096) it cannot.
    #[arg(long, default_value_t = 3_584)]
    window: u64,
    /// Seconds of each bare measurement (verification, decoding, RocksDB), before and after.
    #[arg(long, default_value_t = 2.0)]
    bare_seconds: f64,
    /// Give up if the gateway has not stored every reading (or the ledger committed them)
    /// within this many seconds of the first publish.
    #[arg(long, default_value_t = 900)]
    timeout_s: u64,
    /// Keep configurations, databases and logs here (default: a temporary directory, removed).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Seed of the benchmark fleet (keys and consumption).
const SEED: u64 = 5;
const INTERVAL_S: i64 = 900;
/// Unacknowledged publishes per publishing connection.
const PUBLISH_INFLIGHT_MAX: u16 = 1_000;
/// Requests queued between a publisher and its MQTT event loop.
const PUBLISH_QUEUE_MAX: usize = 1_000;
/// How often the relay's count of the gateway's acknowledgements is looked at: the end time's
/// resolution.
const ACK_POLL: Duration = Duration::from_millis(5);
/// How often the gateway's `/metrics` is read while waiting for the ledger (not before: each
/// read costs the gateway a scan of its outbox).
const METRICS_POLL: Duration = Duration::from_millis(500);
/// Requests that measure what one `/metrics` read costs the gateway.
const METRICS_COST_REQUESTS: u32 = 50;
/// How often a publisher held back by the window looks again.
const WINDOW_RECHECK: Duration = Duration::from_millis(1);
/// How long the ledger node may take to commit the fleet's registry (~30 ms per meter here).
const LEDGER_READY_MAX: Duration = Duration::from_secs(600);
/// The gateway has stopped if it accepts nothing for this long while readings are waiting.
const STALL_AFTER: Duration = Duration::from_secs(20);
/// Readings (in batches of `INGEST_BATCH_MAX`) the bare measurements cycle over.
const BARE_SAMPLE_BATCHES: usize = 8;

/// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`; 100 on Linux almost always).
fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User plus system CPU time of a process (all its threads), in clock ticks; `pid` may be `self`.
fn cpu_ticks(pid: &str) -> anyhow::Result<u64> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count from the last ')'.
    let rest = &stat[stat.rfind(')').context("malformed /proc stat")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of proc(5); `rest` starts at field 3.
    let user: u64 = fields.get(11).context("utime")?.parse()?;
    let system: u64 = fields.get(12).context("stime")?.parse()?;
    Ok(user + system)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// CPU times of the benchmark's processes at one instant.
#[derive(Debug, Clone, Copy)]
struct CpuSample {
    at: Instant,
    gateway: u64,
    mosquitto: u64,
    ledger: u64,
    bench: u64,
}

struct Services {
    mosquitto: Mosquitto,
    ledger: Process,
    gateway: Process,
}

impl Services {
    fn sample(&self) -> anyhow::Result<CpuSample> {
        Ok(CpuSample {
            at: Instant::now(),
            gateway: cpu_ticks(&self.gateway.pid())?,
            mosquitto: cpu_ticks(&self.mosquitto.pid())?,
            ledger: cpu_ticks(&self.ledger.pid())?,
            bench: cpu_ticks("self")?,
        })
    }

    fn ensure_running(&mut self) -> anyhow::Result<()> {
        self.mosquitto.ensure_running()?;
        self.ledger.ensure_running()?;
        self.gateway.ensure_running()
    }
}

/// mosquitto on a free port of 127.0.0.1, configured not to drop the benchmark's messages.
async fn start_mosquitto(dir: &Path, inflight: u32) -> anyhow::Result<Mosquitto> {
    Mosquitto::start(
        dir,
        &format!(
            "# Queue without limit for the gateway (default 1,000, beyond which mosquitto drops).\n\
             max_queued_messages 0\n\
             max_inflight_messages {inflight}"
        ),
    )
    .await
}

/// One bootstrapped ledger node holding the fleet's registry; returns it and its URL.
async fn start_ledger(dir: &Path, meters: u32, http: &reqwest::Client) -> anyhow::Result<(Process, String)> {
    std::fs::write(dir.join("operator.key"), hex::encode(rand::random::<[u8; 32]>()))?;
    firmware_sim::write_registry(&dir.join("meters.json"), SEED, meters)?;
    std::fs::write(
        dir.join("ledger.toml"),
        "registries = [\"meters.json\"]\n[tariff]\ncurrency = \"EUR\"\nprice_per_kwh = \"0.30\"\n",
    )?;
    let port = free_port()?;
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["node", "--node-id", "1", "--bootstrap", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.join("node-1"))
        .arg("--ready-file")
        .arg(dir.join("node-1.ready"))
        .arg("--admin-config")
        .arg(dir.join("ledger.toml"))
        .arg("--operator-key")
        .arg(dir.join("operator.key"));
    let mut ledger = Process::spawn("node-1", dir, command)?;
    // The node is ready once its admin configuration is committed: two admin transactions per
    // meter (customer, meter), one after the other, each fsynced and signed.
    ledger.ready_address_within(&dir.join("node-1.ready"), LEDGER_READY_MAX).await?;
    let url = format!("http://127.0.0.1:{port}");
    let registered: Vec<serde_json::Value> =
        http.get(format!("{url}/v1/meters")).send().await?.error_for_status()?.json().await?;
    anyhow::ensure!(
        registered.len() == meters as usize,
        "the ledger registered {} of {meters} meters",
        registered.len()
    );
    Ok((ledger, url))
}

/// `wattle gateway` against the broker and the ledger; returns it and its URL once subscribed.
async fn start_gateway(
    dir: &Path,
    broker_port: u16,
    ledger_url: &str,
    http: &reqwest::Client,
) -> anyhow::Result<(Process, String)> {
    let ready = dir.join("gateway.ready");
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["gateway", "--gateway-id", "gw-bench", "--listen", "127.0.0.1:0"])
        .args(["--broker", &format!("127.0.0.1:{broker_port}"), "--ledger", ledger_url])
        .arg("--data-dir")
        .arg(dir.join("gateway"))
        .arg("--ready-file")
        .arg(&ready);
    let mut gateway = Process::spawn("gateway", dir, command)?;
    let url = format!("http://{}", gateway.ready_address(&ready).await?);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let healthy = http.get(format!("{url}/healthz")).send().await.is_ok_and(|r| r.status().is_success());
        if healthy {
            return Ok((gateway, url));
        }
        gateway.ensure_running()?;
        if Instant::now() >= deadline {
            bail!("gateway not subscribed after 30 s; its log ends:\n{}", gateway.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The gateway's `/metrics`: every sample by name (labelled samples keep their labels).
async fn gateway_metrics(http: &reqwest::Client, url: &str) -> anyhow::Result<HashMap<String, u64>> {
    let text = http.get(format!("{url}/metrics")).send().await?.error_for_status()?.text().await?;
    Ok(text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect())
}

fn metric(metrics: &HashMap<String, u64>, name: &str) -> u64 {
    metrics.get(name).copied().unwrap_or(0)
}

fn rejected(metrics: &HashMap<String, u64>) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = metrics
        .iter()
        .filter(|(name, _)| name.starts_with("wattle_gateway_readings_rejected_total"))
        .map(|(name, count)| (name.clone(), *count))
        .collect();
    out.sort();
    out
}

/// The fleet's readings, sequence by sequence, signed on every core: each meter's chain starts
/// where its register stands and continues interval by interval, all in the past.
fn sign_readings(meters: u32, readings: u64, epoch: UnixSeconds) -> Vec<SignedReading> {
    let fleet = firmware_sim::Fleet::new(SEED, meters, 1, INTERVAL_S, epoch, Default::default());
    let sequences = readings.div_ceil(u64::from(meters));
    let threads = std::thread::available_parallelism().map_or(1, |count| count.get()) as u32;
    let mut chains: Vec<Vec<SignedReading>> = (0..meters).map(|_| Vec::new()).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                let fleet = &fleet;
                scope.spawn(move || {
                    (0..meters)
                        .filter(|meter| meter % threads == thread)
                        .map(|meter| {
                            let key = firmware_sim::meter_key(SEED, meter);
                            let mut registers = fleet.registers_before(meter, 1);
                            let chain: Vec<SignedReading> = (1..=sequences)
                                .map(|sequence| {
                                    let reading = fleet.step(meter, sequence, registers);
                                    registers = firmware_sim::fleet::Registers::after(&reading);
                                    reading.sign(&key).expect("the fleet's readings are valid")
                                })
                                .collect();
                            (meter, chain)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for worker in workers {
            for (meter, chain) in worker.join().expect("a signing thread panicked") {
                chains[meter as usize] = chain;
            }
        }
    });
    let mut out = Vec::with_capacity(readings as usize);
    'sequences: for index in 0..sequences as usize {
        for chain in &mut chains {
            if out.len() as u64 == readings {
                break 'sequences;
            }
            out.push(chain[index].clone());
        }
    }
    out
}

/// Counts shared by the publishers, the relay and the progress line.
#[derive(Debug, Default)]
struct PublishCounters {
    published: AtomicU64,
    /// PUBACKs from the broker to the publishers (the broker has the reading).
    acknowledged: AtomicU64,
    /// PUBACKs from the gateway to the broker (the gateway has verified and stored the reading).
    stored: AtomicU64,
}

/// Splits a byte stream into MQTT control packets, across reads, and reports each packet's type.
#[derive(Debug, Clone, Copy, Default)]
enum MqttFraming {
    /// Next byte: a fixed header's first byte.
    #[default]
    Header,
    /// In the remaining-length varint.
    Length { kind: u8, value: usize, shift: u32 },
    /// In a packet's variable header and payload.
    Body { remaining: usize },
}

impl MqttFraming {
    /// Consumes `bytes`; calls `on_packet` with the type (upper 4 bits of the first byte) of
    /// every packet whose fixed header completes in them.
    fn feed(&mut self, bytes: &[u8], mut on_packet: impl FnMut(u8)) {
        let mut at = 0;
        while at < bytes.len() {
            *self = match *self {
                MqttFraming::Header => {
                    at += 1;
                    MqttFraming::Length { kind: bytes[at - 1] >> 4, value: 0, shift: 0 }
                }
                MqttFraming::Length { kind, value, shift } => {
                    let byte = bytes[at];
                    at += 1;
                    let value = value | (usize::from(byte & 0x7f) << shift);
                    if byte & 0x80 != 0 {
                        MqttFraming::Length { kind, value, shift: shift + 7 }
                    } else {
                        on_packet(kind);
                        if value == 0 {
                            MqttFraming::Header
                        } else {
                            MqttFraming::Body { remaining: value }
                        }
                    }
                }
                MqttFraming::Body { remaining } => {
                    let taken = remaining.min(bytes.len() - at);
                    at += taken;
                    if taken == remaining {
                        MqttFraming::Header
                    } else {
                        MqttFraming::Body { remaining: remaining - taken }
                    }
                }
            };
        }
    }
}

/// MQTT control packet type of PUBACK.
const PUBACK: u8 = 4;

/// Relays the gateway's MQTT connections to mosquitto byte for byte, counting the PUBACKs the
/// gateway sends into `counters.stored`.
async fn relay(listener: tokio::net::TcpListener, broker_port: u16, counters: Arc<PublishCounters>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((gateway, _)) = listener.accept().await else { return };
        let broker = match tokio::net::TcpStream::connect(("127.0.0.1", broker_port)).await {
            Ok(broker) => broker,
            Err(error) => {
                eprintln!("relay: connecting to mosquitto failed: {error}");
                continue;
            }
        };
        let _ = gateway.set_nodelay(true);
        let _ = broker.set_nodelay(true);
        let (mut gateway_read, mut gateway_write) = gateway.into_split();
        let (mut broker_read, mut broker_write) = broker.into_split();
        tokio::spawn(async move { tokio::io::copy(&mut broker_read, &mut gateway_write).await });
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 64 * 1024];
            let mut framing = MqttFraming::default();
            loop {
                let read = match gateway_read.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => read,
                };
                let mut acks = 0;
                framing.feed(&buffer[..read], |kind| acks += u64::from(kind == PUBACK));
                // Counted once passed on: the broker may then forget the reading.
                if broker_write.write_all(&buffer[..read]).await.is_err() {
                    return;
                }
                counters.stored.fetch_add(acks, Ordering::Relaxed);
            }
        });
    }
}

/// Publishes `messages` in order on one MQTT connection (QoS 1) as fast as the broker takes
/// them; returns once the broker acknowledged them all.
async fn publish_all(
    broker_port: u16,
    connection: u32,
    messages: Vec<(String, Vec<u8>)>,
    counters: Arc<PublishCounters>,
    window: u64,
) -> anyhow::Result<()> {
    let mut options = MqttOptions::new(format!("wattle-bench-{connection}"), "127.0.0.1", broker_port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_inflight(PUBLISH_INFLIGHT_MAX);
    let (client, mut event_loop) = AsyncClient::new(options, PUBLISH_QUEUE_MAX);
    let total = messages.len() as u64;
    let network = {
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut acknowledged = 0u64;
            while acknowledged < total {
                match event_loop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        acknowledged += 1;
                        counters.acknowledged.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    // A reconnect would resend in-flight messages; a benchmark should not hide it.
                    Err(error) => return Err(anyhow::Error::new(error).context("publisher's MQTT connection failed")),
                }
            }
            anyhow::Ok(())
        })
    };
    for (topic, payload) in messages {
        while window > 0
            && counters.published.load(Ordering::Relaxed)
                >= counters.stored.load(Ordering::Relaxed).saturating_add(window)
        {
            tokio::time::sleep(WINDOW_RECHECK).await;
        }
        client.publish(topic, QoS::AtLeastOnce, false, payload).await.context("publishing")?;
        counters.published.fetch_add(1, Ordering::Relaxed);
    }
    network.await?
}

/// Bare batch verification of `items` in batches of the gateway's size, on this thread: readings/s.
fn bare_verify_per_second(items: &[(SignedReading, [u8; 32])], seconds: f64) -> f64 {
    let mut rng = rand::thread_rng();
    let started = Instant::now();
    let mut verified = 0usize;
    while started.elapsed().as_secs_f64() < seconds {
        for chunk in items.chunks(INGEST_BATCH_MAX) {
            let outcomes = domain::verify::verify_batch(chunk.to_vec(), &mut rng);
            assert!(outcomes.iter().all(Result::is_ok), "the benchmark's readings verify");
            verified += outcomes.len();
        }
    }
    verified as f64 / started.elapsed().as_secs_f64()
}

/// Bare decoding of the MQTT payloads (JSON envelope, then hex and canonical reading): per second.
fn bare_decode_per_second(payloads: &[Vec<u8>], seconds: f64) -> f64 {
    let started = Instant::now();
    let mut decoded = 0usize;
    while started.elapsed().as_secs_f64() < seconds {
        for payload in payloads {
            let signed = Envelope::parse_json(payload).and_then(|envelope| envelope.open());
            std::hint::black_box(signed.expect("the benchmark's payloads decode"));
        }
        decoded += payloads.len();
    }
    decoded as f64 / started.elapsed().as_secs_f64()
}

/// Bare RocksDB: synced WriteBatches of `INGEST_BATCH_MAX` puts of the payloads: puts per second.
fn bare_synced_puts_per_second(dir: &Path, payloads: &[Vec<u8>], seconds: f64) -> anyhow::Result<f64> {
    let mut options = rocksdb::Options::default();
    options.create_if_missing(true);
    let db = rocksdb::DB::open(&options, dir)?;
    let mut write_options = rocksdb::WriteOptions::default();
    write_options.set_sync(true);
    let started = Instant::now();
    let mut key = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        let mut batch = rocksdb::WriteBatch::default();
        for _ in 0..INGEST_BATCH_MAX {
            batch.put(key.to_be_bytes(), &payloads[key as usize % payloads.len()]);
            key += 1;
        }
        db.write_opt(batch, &write_options)?;
    }
    let rate = key as f64 / started.elapsed().as_secs_f64();
    drop(db);
    std::fs::remove_dir_all(dir)?;
    Ok(rate)
}

/// Bare rates on one core: (batch verification, decoding, synced puts), readings per second.
#[derive(Debug, Clone, Copy)]
struct Bare {
    verify: f64,
    decode: f64,
    synced_puts: f64,
}

/// The readings the bare measurements cycle over: with their meters' keys, and as MQTT payloads.
struct Sample {
    items: Vec<(SignedReading, [u8; 32])>,
    payloads: Vec<Vec<u8>>,
}

async fn measure_bare(sample: Arc<Sample>, dir: PathBuf, seconds: f64) -> anyhow::Result<Bare> {
    tokio::task::spawn_blocking(move || {
        Ok(Bare {
            verify: bare_verify_per_second(&sample.items, seconds),
            decode: bare_decode_per_second(&sample.payloads, seconds),
            synced_puts: bare_synced_puts_per_second(&dir, &sample.payloads, seconds)?,
        })
    })
    .await?
}

pub async fn gateway(args: GatewayBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.meters > 0 && args.readings > 0 && args.connections > 0, "nothing to measure");
    let temporary = tempfile::Builder::new().prefix("wattle-bench-gateway-").tempdir()?;
    let dir = args.data_dir.clone().unwrap_or_else(|| temporary.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let ticks_per_second = clock_ticks_per_second();
    let load_before = load_average();
    eprintln!("load average {load_before}; {} in {}", args.readings, dir.display());

    // The readings' intervals lie in the past (the gateway quarantines intervals ending in its future).
    let sequences = args.readings.div_ceil(u64::from(args.meters)) as i64;
    let now_s = domain::clock::wall_clock_now().0 / 1_000;
    let epoch = UnixSeconds((now_s / INTERVAL_S - sequences - 2) * INTERVAL_S);
    let signing_started = Instant::now();
    let signed = sign_readings(args.meters, args.readings, epoch);
    let site = firmware_sim::Fleet::site_name(0);
    let payloads: Vec<(u32, String, Vec<u8>)> = signed
        .iter()
        .map(|signed| {
            let meter_id = &signed.reading().meter_id;
            let meter = firmware_sim::meter_index(meter_id.as_str()).expect("a simulated meter id");
            let payload = serde_json::to_vec(&signed.to_envelope(false)).expect("an envelope serialises");
            (meter, firmware_sim::reading_topic(&site, meter_id), payload)
        })
        .collect();
    eprintln!(
        "{} readings of {} meters signed in {:.1} s ({} bytes per payload)",
        signed.len(),
        args.meters,
        signing_started.elapsed().as_secs_f64(),
        payloads[0].2.len()
    );
    let sample_size = (INGEST_BATCH_MAX * BARE_SAMPLE_BATCHES).min(signed.len());
    let public_keys: Vec<[u8; 32]> =
        (0..args.meters).map(|meter| firmware_sim::meter_key(SEED, meter).verifying_key().to_bytes()).collect();
    let sample = Arc::new(Sample {
        items: signed[..sample_size]
            .iter()
            .zip(&payloads)
            .map(|(signed, (meter, _, _))| (signed.clone(), public_keys[*meter as usize]))
            .collect(),
        payloads: payloads[..sample_size].iter().map(|(_, _, payload)| payload.clone()).collect(),
    });
    drop(signed);

    eprintln!("bare measurements (before)...");
    let bare_before = measure_bare(sample.clone(), dir.join("bare-rocksdb-before"), args.bare_seconds).await?;

    let setup_started = Instant::now();
    let mosquitto = start_mosquitto(&dir, args.broker_inflight).await?;
    let broker_port = mosquitto.port;
    eprintln!("starting a ledger node and committing the registry of {} meters...", args.meters);
    let (ledger, ledger_url) = start_ledger(&dir, args.meters, &http).await?;
    let counters = Arc::new(PublishCounters::default());
    let relay_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let relay_port = relay_listener.local_addr()?.port();
    let relay = tokio::spawn(relay(relay_listener, broker_port, counters.clone()));
    let (gateway, gateway_url) = start_gateway(&dir, relay_port, &ledger_url, &http).await?;
    let mut services = Services { mosquitto, ledger, gateway };
    eprintln!(
        "mosquitto (pid {}), ledger node (pid {}), gateway (pid {}) up after {:.1} s; publishing on {} connection(s)",
        services.mosquitto.pid(),
        services.ledger.pid(),
        services.gateway.pid(),
        setup_started.elapsed().as_secs_f64(),
        args.connections
    );

    let mut per_connection: Vec<Vec<(String, Vec<u8>)>> = (0..args.connections).map(|_| Vec::new()).collect();
    for (meter, topic, payload) in payloads {
        per_connection[(meter % args.connections) as usize].push((topic, payload));
    }
    let start = services.sample()?;
    let publishers: Vec<_> = per_connection
        .into_iter()
        .enumerate()
        .map(|(connection, messages)| {
            tokio::spawn(publish_all(broker_port, connection as u32, messages, counters.clone(), args.window))
        })
        .collect();

    // Until the gateway has acknowledged every reading: progress each second, the end to 5 ms.
    let deadline = start.at + Duration::from_secs(args.timeout_s);
    let mut last_progress = (start.at, 0u64, start.gateway);
    let mut last_change = (Instant::now(), 0u64);
    let mut polls = tokio::time::interval(ACK_POLL);
    let stored_at = loop {
        polls.tick().await;
        let stored = counters.stored.load(Ordering::Relaxed);
        if stored >= args.readings {
            break services.sample()?;
        }
        let waiting = counters.acknowledged.load(Ordering::Relaxed).saturating_sub(stored);
        if stored != last_change.1 {
            last_change = (Instant::now(), stored);
        } else if last_change.0.elapsed() >= STALL_AFTER && waiting > 0 {
            bail!(
                "the gateway stopped: it acknowledged {stored} of {} readings, none for {} s, while the broker \
                 holds {waiting} more for it (publish window {}); its log ends:\n{}",
                args.readings,
                STALL_AFTER.as_secs(),
                args.window,
                services.gateway.log_tail()
            );
        }
        if Instant::now() >= deadline {
            bail!("the gateway acknowledged {stored} of {} readings in {} s", args.readings, args.timeout_s);
        }
        if last_progress.0.elapsed() >= Duration::from_secs(1) {
            services.ensure_running()?;
            let now = Instant::now();
            let gateway_ticks = cpu_ticks(&services.gateway.pid())?;
            let seconds = now.duration_since(last_progress.0).as_secs_f64();
            eprintln!(
                "{:5.1} s: published {} (broker acknowledged {}), stored and acknowledged by the gateway {} \
                 ({:.0}/s), gateway CPU {:.0} %",
                now.duration_since(start.at).as_secs_f64(),
                counters.published.load(Ordering::Relaxed),
                counters.acknowledged.load(Ordering::Relaxed),
                stored,
                (stored - last_progress.1) as f64 / seconds,
                (gateway_ticks - last_progress.2) as f64 / ticks_per_second / seconds * 100.0,
            );
            last_progress = (now, stored, gateway_ticks);
        }
    };
    for publisher in publishers {
        publisher.await??;
    }

    let metrics_at_stored = gateway_metrics(&http, &gateway_url).await?;
    let accepted = metric(&metrics_at_stored, "wattle_gateway_readings_accepted_total");
    let refused = rejected(&metrics_at_stored);
    anyhow::ensure!(
        accepted == args.readings && refused.is_empty(),
        "the gateway accepted {accepted} of {} readings; quarantined: {refused:?}",
        args.readings
    );

    // Forwarding runs alongside from the start; wait until the ledger has committed everything.
    let mut polls = tokio::time::interval(METRICS_POLL);
    let forwarded_at = loop {
        polls.tick().await;
        let metrics = gateway_metrics(&http, &gateway_url).await?;
        let forwarded = metric(&metrics, "wattle_gateway_readings_forwarded_total");
        if forwarded >= args.readings {
            let duplicates = metric(&metrics, "wattle_gateway_duplicates_total");
            anyhow::ensure!(duplicates == 0, "the ledger reported {duplicates} duplicates");
            let refused = rejected(&metrics);
            anyhow::ensure!(refused.is_empty(), "readings quarantined: {refused:?}");
            break services.sample()?;
        }
        services.ensure_running()?;
        if Instant::now() >= deadline {
            bail!("the ledger committed {forwarded} of {} readings in {} s", args.readings, args.timeout_s);
        }
    };

    // What one /metrics read costs the gateway now that its outbox is forwarded and deleted (its
    // deletions not yet compacted away: the worst point of the run).
    let before_cost = cpu_ticks(&services.gateway.pid())?;
    for _ in 0..METRICS_COST_REQUESTS {
        gateway_metrics(&http, &gateway_url).await?;
    }
    let metrics_cost_ms = (cpu_ticks(&services.gateway.pid())? - before_cost) as f64 / ticks_per_second * 1_000.0
        / f64::from(METRICS_COST_REQUESTS);

    eprintln!("bare measurements (after)...");
    let bare_after = measure_bare(sample, dir.join("bare-rocksdb-after"), args.bare_seconds).await?;
    let load_after = load_average();
    drop(services);
    relay.abort();

    let wall_s = stored_at.at.duration_since(start.at).as_secs_f64();
    let cpu_s = |ticks: u64| ticks as f64 / ticks_per_second;
    // At least one clock tick, so a tiny run cannot divide by zero (its figure is then coarse).
    let gateway_cpu_s = cpu_s((stored_at.gateway - start.gateway).max(1));
    let per_core = args.readings as f64 / gateway_cpu_s.max(1e-9);
    let bare_verify = (bare_before.verify + bare_after.verify) / 2.0;
    let bare_decode = (bare_before.decode + bare_after.decode) / 2.0;
    let bare_puts = (bare_before.synced_puts + bare_after.synced_puts) / 2.0;
    // One core doing decode, verification and the synced write one after the other.
    let serial_bare = 1.0 / (1.0 / bare_decode + 1.0 / bare_verify + 1.0 / bare_puts);
    let gaps = metric(&metrics_at_stored, "wattle_gateway_gap_sequences_opened_total");
    let dropped = metric(&metrics_at_stored, "wattle_gateway_duplicates_dropped_total");

    println!(
        "gateway benchmark: {} readings of {} meters on {} MQTT connection(s), at most {} ahead of the gateway, \
         mosquitto max_inflight_messages {}, gateway batches of at most {INGEST_BATCH_MAX}; load average \
         {load_before} before, {load_after} after",
        args.readings,
        args.meters,
        args.connections,
        if args.window == 0 { "any number".to_string() } else { args.window.to_string() },
        args.broker_inflight
    );
    println!();
    println!("| | value |");
    println!("|---|---:|");
    println!(
        "| wall time, first publish to the gateway's last acknowledgement (verified, in the outbox with fsync) | \
         {wall_s:.2} s |"
    );
    println!("| readings/s, wall | {:.0} |", args.readings as f64 / wall_s);
    println!(
        "| gateway CPU over that span (user + system, all threads) | {gateway_cpu_s:.2} s ({:.0} % of one core) |",
        gateway_cpu_s / wall_s * 100.0
    );
    println!("| **readings per gateway CPU-second (per core)** | **{per_core:.0}** |");
    println!(
        "| bare batch verification ({INGEST_BATCH_MAX}), one core, before / after | {:.0} / {:.0} |",
        bare_before.verify, bare_after.verify
    );
    println!("| **ratio, per core / bare verification** | **{:.2}** |", per_core / bare_verify);
    println!(
        "| bare JSON + hex decode of the payloads, one core, before / after | {:.0} / {:.0} |",
        bare_before.decode, bare_after.decode
    );
    println!(
        "| bare RocksDB synced WriteBatch of {INGEST_BATCH_MAX} payloads, puts/s, before / after | {:.0} / {:.0} |",
        bare_before.synced_puts, bare_after.synced_puts
    );
    println!("| decode + verify + synced write in series on one core (from the bare rates) | {serial_bare:.0} |");
    println!("| ratio, wall rate / that series | {:.2} |", args.readings as f64 / wall_s / serial_bare);
    println!(
        "| other CPU over the span: mosquitto / ledger node / this process (publisher, relay) | {:.2} / {:.2} / {:.2} s |",
        cpu_s(stored_at.mosquitto - start.mosquitto),
        cpu_s(stored_at.ledger - start.ledger),
        cpu_s(stored_at.bench - start.bench),
    );
    println!(
        "| all committed by the ledger (forwarded concurrently), after the first publish | {:.2} s ({:.0} readings/s) |",
        forwarded_at.at.duration_since(start.at).as_secs_f64(),
        args.readings as f64 / forwarded_at.at.duration_since(start.at).as_secs_f64()
    );
    println!("| gaps opened / duplicates dropped at the gateway | {gaps} / {dropped} |");
    println!(
        "| gateway CPU of one /metrics read at the end (outbox forwarded and deleted; none read during the span) | \
         {metrics_cost_ms:.2} ms |"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_framing_counts_packets_split_across_reads() {
        // PUBACK (2 bytes of body), PINGREQ (none), PUBLISH with a 200-byte body (2-byte length).
        let mut stream = vec![0x40, 0x02, 0x00, 0x01, 0xc0, 0x00, 0x32, 0xc8, 0x01];
        stream.extend([7u8; 200]);
        stream.extend([0x40, 0x02, 0x00, 0x02]);
        for split in 0..stream.len() {
            let mut framing = MqttFraming::default();
            let mut kinds = Vec::new();
            framing.feed(&stream[..split], |kind| kinds.push(kind));
            framing.feed(&stream[split..], |kind| kinds.push(kind));
            assert_eq!(kinds, [PUBACK, 12, 3, PUBACK], "split at {split}");
        }
    }
}
