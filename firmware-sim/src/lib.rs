//! The simulated meter fleet: meters with Ed25519 keys derived from a seed, cumulative registers,
//! one signed reading per meter per interval published over MQTT, and the ground truth of what
//! each meter measured, for tests to compare bills against.

pub mod limits;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use domain::api::MeterInfo;
use domain::clock::Clock;
use domain::ids::{CustomerId, KeyId, MeterId, Sequence, UnixMillis, UnixSeconds};
use domain::reading::{ClockStatus, FirmwareVersion, Reading, StatusFlags};
use ed25519_dalek::SigningKey;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Registers of simulated meters roll over at 10^12 Wh (a 9-digit kWh display).
pub const REGISTER_MODULUS_WH: u64 = 1_000_000_000_000;
/// The key id every simulated meter signs with (no rotation yet).
pub const SIM_KEY_ID: KeyId = KeyId(1);
/// Firmware version 1.0.0.
pub const SIM_FIRMWARE: FirmwareVersion = FirmwareVersion(0x01_00_00);

/// A meter's secret key, derived from the fleet seed and the meter's index.
pub fn meter_key(seed: u64, index: u32) -> SigningKey {
    let digest: [u8; 32] = Sha256::new()
        .chain_update(b"wattle.sim.meter-key")
        .chain_update(seed.to_be_bytes())
        .chain_update(index.to_be_bytes())
        .finalize()
        .into();
    SigningKey::from_bytes(&digest)
}

/// A meter's id: `WTL` and ten digits.
pub fn meter_id(index: u32) -> MeterId {
    MeterId::new(format!("WTL{index:010}")).expect("WTL + 10 digits is a valid meter id")
}

/// The customer a meter bills to: one customer per meter in the simulation.
pub fn customer_id(index: u32) -> CustomerId {
    CustomerId::new(format!("C{index:07}")).expect("C + 7 digits is a valid customer id")
}

/// The registry entries of a fleet, as the ledger's admin configuration loads them.
pub fn registry(seed: u64, meters: u32) -> Vec<MeterInfo> {
    (0..meters)
        .map(|index| MeterInfo {
            meter_id: meter_id(index),
            key_id: SIM_KEY_ID.0,
            public_key: hex::encode(meter_key(seed, index).verifying_key().to_bytes()),
            customer_id: customer_id(index),
        })
        .collect()
}

/// Writes a registry file (JSON array of [`MeterInfo`]).
pub fn write_registry(path: &Path, seed: u64, meters: u32) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(&registry(seed, meters))?;
    std::fs::write(path, json).with_context(|| format!("writing registry {}", path.display()))
}

fn mix(seed: u64, meter: u32, interval_start: i64) -> u64 {
    let digest = Sha256::new()
        .chain_update(b"wattle.sim.noise")
        .chain_update(seed.to_be_bytes())
        .chain_update(meter.to_be_bytes())
        .chain_update(interval_start.to_be_bytes())
        .finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// Energy a household meter imports over one interval: a daily shape (night trough, morning
/// and evening peaks) scaled per meter, with noise. Deterministic in (seed, meter, interval).
/// The realism issue replaces this with the BDEW profiles.
pub fn interval_import_wh(seed: u64, meter: u32, interval_start: UnixSeconds, interval_s: i64) -> u64 {
    let hour = interval_start.0.rem_euclid(86_400) / 3_600;
    // Watts per household, by hour of day (UTC treated as local for the skeleton).
    const SHAPE_W: [u64; 24] = [
        180, 150, 140, 140, 150, 200, 320, 480, 420, 350, 330, 360, 420, 380, 340, 350, 420, 560, 700, 680, 600, 480,
        350, 240,
    ];
    let scale_percent = 60 + (mix(seed, meter, -1) % 90); // 60..150 % of the mean household
    let noise_percent = 80 + (mix(seed, meter, interval_start.0) % 41); // 80..120 %
    let watts = SHAPE_W[hour as usize] * scale_percent / 100 * noise_percent / 100;
    watts * interval_s as u64 / 3_600
}

/// One line of the ground truth: what a meter measured and sent for one interval.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TruthRecord {
    pub meter_id: MeterId,
    pub customer_id: CustomerId,
    pub sequence: u64,
    pub interval_start: i64,
    pub interval_end: i64,
    pub import_wh: u64,
    pub export_wh: u64,
    /// SHA-256 of the canonical bytes sent.
    pub digest: String,
}

/// Reads a ground-truth file.
pub fn read_truth(path: &Path) -> anyhow::Result<Vec<TruthRecord>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines().filter(|line| !line.is_empty()).map(|line| Ok(serde_json::from_str(line)?)).collect()
}

/// How to run the fleet.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub meters: u32,
    pub seed: u64,
    pub site: String,
    pub interval_s: i64,
    /// Stop after this many intervals (run until stopped if `None`).
    pub intervals: Option<u64>,
    pub broker_host: String,
    pub broker_port: u16,
    pub truth_out: Option<PathBuf>,
    pub clock: Clock,
}

/// The topic a meter publishes its readings on.
pub fn reading_topic(site: &str, meter: &MeterId) -> String {
    format!("wattle/v1/{site}/{meter}/reading")
}

/// Runs the fleet: publishes one signed reading per meter per interval as the clock passes each
/// interval's end, and waits for the broker to acknowledge every one before returning.
pub async fn run(config: SimConfig) -> anyhow::Result<SimSummary> {
    let keys: Vec<SigningKey> = (0..config.meters).map(|index| meter_key(config.seed, index)).collect();
    let mut registers_wh: Vec<u64> = (0..config.meters).map(|index| mix(config.seed, index, -2) % 50_000_000).collect();
    let mut options = MqttOptions::new(
        format!("wattle-sim-{}-{}", config.site, config.seed),
        &config.broker_host,
        config.broker_port,
    );
    options.set_keep_alive(Duration::from_secs(30));
    options.set_inflight(limits::MQTT_INFLIGHT_MAX);
    let (client, mut event_loop) = AsyncClient::new(options, limits::MQTT_REQUEST_QUEUE_MAX);
    let (acks_sender, mut acks) = tokio::sync::watch::channel(0u64);
    let network = tokio::spawn(async move {
        let mut acked = 0u64;
        let mut failures = 0u32;
        loop {
            match event_loop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    acked += 1;
                    let _ = acks_sender.send(acked);
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                Ok(_) => failures = 0,
                Err(error) => {
                    failures += 1;
                    tracing::warn!(%error, failures, "MQTT connection error; reconnecting");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(50)))).await;
                }
            }
        }
    });
    let mut truth = match &config.truth_out {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };
    let interval_ms = config.interval_s * 1_000;
    let first_start_ms = config.clock.now().0.div_euclid(interval_ms) * interval_ms;
    let mut published = 0u64;
    let started = std::time::Instant::now();
    let mut interval_index = 0u64;
    while config.intervals.is_none_or(|limit| interval_index < limit) {
        let start_ms = first_start_ms + interval_index as i64 * interval_ms;
        let end_ms = start_ms + interval_ms;
        loop {
            let wait = config.clock.real_millis_until(UnixMillis(end_ms));
            if wait == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(wait.min(1_000))).await;
        }
        let interval_start = UnixSeconds(start_ms / 1_000);
        for (index, key) in keys.iter().enumerate() {
            let index_u32 = index as u32;
            let import_wh = interval_import_wh(config.seed, index_u32, interval_start, config.interval_s);
            let import_start_wh = registers_wh[index];
            let import_end_wh = (import_start_wh + import_wh) % REGISTER_MODULUS_WH;
            registers_wh[index] = import_end_wh;
            let reading = Reading {
                meter_id: meter_id(index_u32),
                key_id: SIM_KEY_ID,
                sequence: Sequence(interval_index + 1),
                interval_start,
                interval_end: UnixSeconds(end_ms / 1_000),
                import_start_wh,
                import_end_wh,
                export_start_wh: 0,
                export_end_wh: 0,
                register_modulus_wh: REGISTER_MODULUS_WH,
                clock_status: ClockStatus::Synchronized,
                status: StatusFlags::default(),
                firmware: SIM_FIRMWARE,
            };
            let signed = reading.sign(key).context("simulated reading is valid")?;
            let payload = serde_json::to_vec(&signed.to_envelope(false))?;
            client
                .publish(reading_topic(&config.site, &reading.meter_id), QoS::AtLeastOnce, false, payload)
                .await
                .context("queueing a publish")?;
            published += 1;
            if let Some(truth) = truth.as_mut() {
                let record = TruthRecord {
                    meter_id: reading.meter_id.clone(),
                    customer_id: customer_id(index_u32),
                    sequence: reading.sequence.0,
                    interval_start: reading.interval_start.0,
                    interval_end: reading.interval_end.0,
                    import_wh,
                    export_wh: 0,
                    digest: signed.digest().to_string(),
                };
                serde_json::to_writer(&mut *truth, &record)?;
                truth.write_all(b"\n")?;
            }
        }
        if let Some(truth) = truth.as_mut() {
            truth.flush()?;
        }
        interval_index += 1;
        let rate = published as f64 / started.elapsed().as_secs_f64().max(1e-9);
        tracing::info!(
            interval = interval_index,
            meters = config.meters,
            sim_time = %chrono::DateTime::from_timestamp_millis(end_ms).map(|t| t.to_rfc3339()).unwrap_or_default(),
            published,
            readings_per_s = format!("{rate:.0}"),
            "interval published"
        );
    }
    let deadline = tokio::time::Instant::now() + limits::ACK_WAIT_MAX;
    while *acks.borrow() < published {
        if tokio::time::timeout_at(deadline, acks.changed()).await.is_err() {
            anyhow::bail!("broker acknowledged {} of {published} readings in time", *acks.borrow());
        }
    }
    client.disconnect().await.ok();
    let _ = tokio::time::timeout(Duration::from_secs(2), network).await;
    Ok(SimSummary { published, intervals: interval_index })
}

/// What a run published.
#[derive(Debug, Clone, Copy)]
pub struct SimSummary {
    pub published: u64,
    pub intervals: u64,
}
