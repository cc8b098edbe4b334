//! Modbus TCP input (`docs/modbus.md`): one task per configured device polls it with the
//! tokio-modbus client and feeds the same pipeline as MQTT. Register maps are data:
//!
//! - `sunspec`: a signing meter. The task finds the "SunS" marker, walks the model chain to model
//!   203 and Wattle's signed-reading (64900) and history (64901) models, reads the signed block
//!   in one request per poll and sends each new sequence on as an envelope; gap recovery asks the
//!   history model (function 23: select and read in one request).
//! - an energy map (built in: `sdm630`; or `[modbus_maps.NAME]` in the config): an unsigned
//!   legacy meter. At each interval boundary of the gateway's clock the task reads the import and
//!   export registers and, only if the ledger registers the meter as attested by this gateway,
//!   makes a gateway-attested reading of the interval since the last one, signed with the
//!   gateway's key. Otherwise the reading is quarantined as `not_attestable`.
//!
//! Every request has a timeout and a number of retries; a failed session reconnects after an
//! exponential backoff. Invalid replies are counted by reason; a record that frames correctly but
//! does not decode is quarantined with its reason (once per distinct record).

use std::net::SocketAddr;
use std::time::Duration;

use domain::ids::{MeterId, Sequence, UnixSeconds};
use domain::modbus::{
    self, decode_signed_record, ModbusError, HISTORY_MODEL, METER_MODEL, SIGNED_MODEL, SIGNED_RECORD_REGISTERS,
    SUNSPEC_BASE,
};
use domain::reading::{ClockStatus, FirmwareVersion, Reading, SignedReading, StatusFlags};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_modbus::client::{tcp, Context, Reader as _};
use tokio_modbus::Slave;

use crate::limits::{MODBUS_BACKFILL_PER_REQUEST_MAX, MODBUS_BACKOFF_MAX, MODBUS_BACKOFF_MIN};
use crate::{Incoming, Shared};

/// Which register table a point lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Table {
    /// Function 03.
    Holding,
    /// Function 04.
    Input,
}

/// How an energy register is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    /// IEEE-754 float32, kWh (SDM630).
    Float32Kwh,
    /// Unsigned 32-bit integer, Wh.
    Uint32Wh,
}

/// Order of the two registers of a 32-bit value (bytes within a register are always high first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WordOrder {
    /// Most significant register first ("ABCD"), as Modbus devices mostly do.
    #[default]
    Big,
    /// Least significant register first ("CDAB").
    Little,
}

/// A data-driven map of an unsigned meter's energy registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnergyMap {
    pub table: Table,
    /// Address of the total import energy register (two registers).
    pub import: u16,
    /// Address of the total export energy register (two registers).
    pub export: u16,
    pub encoding: Encoding,
    #[serde(default)]
    pub word_order: WordOrder,
}

impl EnergyMap {
    /// The Eastron SDM630 map (input registers, float32 kWh, big-endian words).
    pub const SDM630: EnergyMap = EnergyMap {
        table: Table::Input,
        import: modbus::sdm630::IMPORT_KWH,
        export: modbus::sdm630::EXPORT_KWH,
        encoding: Encoding::Float32Kwh,
        word_order: WordOrder::Big,
    };
}

/// A register map a device is read with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceMap {
    /// SunSpec 1/203 with Wattle's signed-reading and history models.
    SunSpec,
    /// Energy registers of an unsigned meter.
    Energy(EnergyMap),
}

/// One Modbus device to poll (`[[modbus]]` in the gateway's config).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusDevice {
    /// host:port of the Modbus TCP server (a meter, or a site's RS-485 gateway).
    pub address: SocketAddr,
    /// Unit id (1–247).
    pub unit: u8,
    /// `sunspec`, `sdm630`, or the name of a map under `[modbus_maps]`.
    pub map: String,
    /// The meter's id: required for energy maps; for SunSpec, checked against the serial number.
    #[serde(default)]
    pub meter_id: Option<MeterId>,
    /// How often to poll (ms).
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Timeout of one request (ms).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts after the first before a session is given up and reconnected.
    #[serde(default = "default_retries")]
    pub retries: u32,
}

fn default_poll_ms() -> u64 {
    5_000
}
fn default_timeout_ms() -> u64 {
    1_000
}
fn default_retries() -> u32 {
    2
}

impl ModbusDevice {
    /// The source name used in quarantine entries and for gap recovery.
    pub fn source(&self) -> String {
        format!("modbus://{}/{}", self.address, self.unit)
    }
}

/// Why a poll failed.
#[derive(Debug, Clone)]
struct PollError {
    reason: &'static str,
    detail: String,
    /// The connection can no longer be trusted (framing lost): reconnect.
    reconnect: bool,
}

impl PollError {
    fn map(error: ModbusError) -> PollError {
        PollError { reason: error.code(), detail: error.to_string(), reconnect: false }
    }
}

type Answer<T> = Result<tokio_modbus::Result<T>, tokio::time::error::Elapsed>;

fn classify<T>(answer: Answer<T>) -> Result<T, PollError> {
    match answer {
        Err(_) => Err(PollError { reason: "modbus_timeout", detail: "no answer in time".into(), reconnect: true }),
        Ok(Err(tokio_modbus::Error::Transport(error))) => {
            Err(PollError { reason: "modbus_transport", detail: error.to_string(), reconnect: true })
        }
        Ok(Err(tokio_modbus::Error::Protocol(error))) => {
            Err(PollError { reason: "modbus_protocol", detail: error.to_string(), reconnect: true })
        }
        Ok(Ok(Err(exception))) => {
            Err(PollError { reason: "modbus_exception", detail: exception.to_string(), reconnect: false })
        }
        Ok(Ok(Ok(value))) => Ok(value),
    }
}

/// One connection to a device, with the device's timeout and retries.
struct Session<'a> {
    context: Context,
    device: &'a ModbusDevice,
    shared: &'a Shared,
}

impl Session<'_> {
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.device.timeout_ms.max(1))
    }

    async fn read(&mut self, table: Table, address: u16, count: usize) -> Result<Vec<u16>, PollError> {
        let mut attempt = 0;
        loop {
            let timeout = self.timeout();
            let answer = match table {
                Table::Holding => {
                    tokio::time::timeout(timeout, self.context.read_holding_registers(address, count as u16)).await
                }
                Table::Input => {
                    tokio::time::timeout(timeout, self.context.read_input_registers(address, count as u16)).await
                }
            };
            match classify(answer).and_then(|registers| {
                if registers.len() == count {
                    Ok(registers)
                } else {
                    Err(PollError::map(ModbusError::ShortRead { expected: count, got: registers.len() }))
                }
            }) {
                Ok(registers) => return Ok(registers),
                Err(error) if error.reconnect || attempt >= self.device.retries => return Err(error),
                Err(error) => {
                    self.shared.metrics.modbus_error(error.reason);
                    attempt += 1;
                }
            }
        }
    }

    /// Selects `sequence` in the history model and reads its record, in one function-23 request.
    async fn history(&mut self, history_at: u16, sequence: u64) -> Result<Vec<u16>, PollError> {
        let selector = [(sequence >> 48) as u16, (sequence >> 32) as u16, (sequence >> 16) as u16, sequence as u16];
        let count = 4 + SIGNED_RECORD_REGISTERS;
        let timeout = self.timeout();
        let answer = tokio::time::timeout(
            timeout,
            self.context.read_write_multiple_registers(history_at + 2, count as u16, history_at + 2, &selector),
        )
        .await;
        let registers = classify(answer)?;
        if registers.len() != count {
            return Err(PollError::map(ModbusError::ShortRead { expected: count, got: registers.len() }));
        }
        Ok(registers)
    }
}

/// Where the SunSpec models of a device are, found by walking its chain.
struct SunSpecLayout {
    signed_at: u16,
    history_at: Option<u16>,
    serial: String,
}

async fn discover(session: &mut Session<'_>) -> Result<SunSpecLayout, PollError> {
    const MODELS_MAX: usize = 64;
    let marker = session.read(Table::Holding, SUNSPEC_BASE, 2).await?;
    if marker != modbus::SUNS_MARKER {
        return Err(PollError::map(ModbusError::NoMarker { address: SUNSPEC_BASE, found: [marker[0], marker[1]] }));
    }
    let mut address = SUNSPEC_BASE + 2;
    let (mut signed_at, mut history_at, mut meter_seen, mut serial) = (None, None, false, String::new());
    for _ in 0..MODELS_MAX {
        let header = session.read(Table::Holding, address, 2).await?;
        let (id, length) = (header[0], header[1]);
        if id == modbus::END_MODEL_ID {
            let signed_at = signed_at.ok_or(PollError::map(ModbusError::ModelMissing { model: SIGNED_MODEL.0 }))?;
            if !meter_seen {
                return Err(PollError::map(ModbusError::ModelMissing { model: METER_MODEL.0 }));
            }
            return Ok(SunSpecLayout { signed_at, history_at, serial });
        }
        let expect = |expected: (u16, u16)| {
            if length == expected.1 {
                Ok(())
            } else {
                Err(PollError::map(ModbusError::ModelLength { model: id, length, expected: expected.1 }))
            }
        };
        match id {
            1 => {
                let common = session.read(Table::Holding, address, 2 + 66).await?;
                serial = modbus::read_string(&common[50..66]);
            }
            id if id == METER_MODEL.0 => {
                expect(METER_MODEL)?;
                meter_seen = true;
            }
            id if id == SIGNED_MODEL.0 => {
                expect(SIGNED_MODEL)?;
                signed_at = Some(address);
            }
            id if id == HISTORY_MODEL.0 => {
                expect(HISTORY_MODEL)?;
                history_at = Some(address);
            }
            _ => {}
        }
        address = address.checked_add(2 + length).ok_or(PollError::map(ModbusError::ChainTooLong(MODELS_MAX)))?;
    }
    Err(PollError::map(ModbusError::ChainTooLong(MODELS_MAX)))
}

/// A record that framed but did not decode: quarantined once per distinct content.
struct Garbage {
    last: Option<[u8; 32]>,
}

impl Garbage {
    fn fresh(&mut self, registers: &[u16]) -> bool {
        let digest: [u8; 32] =
            registers.iter().fold(Sha256::new(), |h, r| h.chain_update(r.to_be_bytes())).finalize().into();
        let fresh = self.last != Some(digest);
        self.last = Some(digest);
        fresh
    }
}

fn registers_hex(registers: &[u16]) -> Vec<u8> {
    hex::encode(registers.iter().flat_map(|r| r.to_be_bytes()).collect::<Vec<u8>>()).into_bytes()
}

fn envelope_incoming(source: &str, signed: &SignedReading, backfill: bool) -> Incoming {
    let payload = serde_json::to_vec(&signed.to_envelope(backfill)).expect("an envelope serialises");
    Incoming { source: source.to_string(), site: source.to_string(), payload, ack: None, rejected: None, release: None }
}

fn rejected_incoming(source: &str, reason: &'static str, detail: String, payload: Vec<u8>) -> Incoming {
    Incoming {
        source: source.to_string(),
        site: source.to_string(),
        payload,
        ack: None,
        rejected: Some((reason, detail)),
        release: None,
    }
}

/// Polls one device until the gateway stops: connects, runs a session, backs off on failure.
pub(crate) async fn run_device(
    shared: Shared,
    device: ModbusDevice,
    map: DeviceMap,
    sender: mpsc::Sender<Incoming>,
    mut backfill: mpsc::Receiver<(u64, u64)>,
) {
    let source = device.source();
    let mut backoff = MODBUS_BACKOFF_MIN;
    let mut garbage = Garbage { last: None };
    let mut attest = Attestation::default();
    loop {
        let connect = tokio::time::timeout(
            Duration::from_millis(device.timeout_ms.max(1)),
            tcp::connect_slave(device.address, Slave(device.unit)),
        )
        .await;
        let outcome = match connect {
            Ok(Ok(context)) => {
                let mut session = Session { context, device: &device, shared: &shared };
                match map {
                    DeviceMap::SunSpec => {
                        sunspec_session(&mut session, &source, &sender, &mut backfill, &mut garbage).await
                    }
                    DeviceMap::Energy(energy) => {
                        energy_session(&mut session, energy, &source, &sender, &mut backfill, &mut attest).await
                    }
                }
            }
            Ok(Err(error)) => Err(PollError { reason: "modbus_connect", detail: error.to_string(), reconnect: true }),
            Err(_) => Err(PollError { reason: "modbus_connect", detail: "connect timed out".into(), reconnect: true }),
        };
        let error = match outcome {
            Ok(()) => return,
            Err(error) => error,
        };
        shared.metrics.modbus_error(error.reason);
        tracing::warn!(device = %source, reason = error.reason, detail = %error.detail, ?backoff, "Modbus device session failed; reconnecting");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MODBUS_BACKOFF_MAX);
    }
}

async fn sunspec_session(
    session: &mut Session<'_>,
    source: &str,
    sender: &mpsc::Sender<Incoming>,
    backfill: &mut mpsc::Receiver<(u64, u64)>,
    garbage: &mut Garbage,
) -> Result<(), PollError> {
    let layout = discover(session).await?;
    if let Some(expected) = &session.device.meter_id {
        if layout.serial != expected.as_str() {
            return Err(PollError {
                reason: "modbus_map_mismatch",
                detail: format!("serial number {:?}, configured meter {expected}", layout.serial),
                reconnect: false,
            });
        }
    }
    tracing::info!(device = %source, meter = %layout.serial, signed_at = layout.signed_at, "SunSpec meter found");
    let mut last_sequence = 0u64;
    let mut ticker = tokio::time::interval(Duration::from_millis(session.device.poll_ms.max(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let block = session.read(Table::Holding, layout.signed_at, 2 + SIGNED_RECORD_REGISTERS).await?;
                if block[..2] != [SIGNED_MODEL.0, SIGNED_MODEL.1] {
                    return Err(PollError::map(ModbusError::ModelMissing { model: SIGNED_MODEL.0 }));
                }
                session.shared.metrics.modbus_polls.inc();
                match decode_signed_record(&block[2..]) {
                    Ok(signed) if signed.reading().sequence.0 != last_sequence => {
                        last_sequence = signed.reading().sequence.0;
                        if sender.send(envelope_incoming(source, &signed, false)).await.is_err() {
                            return Ok(());
                        }
                    }
                    Ok(_) | Err(ModbusError::Empty) => {}
                    Err(error @ ModbusError::Torn { .. }) => session.shared.metrics.modbus_error(error.code()),
                    Err(error) => {
                        if garbage.fresh(&block) {
                            let incoming = rejected_incoming(source, error.code(), error.to_string(), registers_hex(&block));
                            if sender.send(incoming).await.is_err() {
                                return Ok(());
                            }
                        }
                    }
                }
            }
            Some((from, to)) = backfill.recv() => {
                let Some(history_at) = layout.history_at else {
                    session.shared.metrics.modbus_error("modbus_no_history");
                    continue;
                };
                for sequence in from..=to.min(from + MODBUS_BACKFILL_PER_REQUEST_MAX - 1) {
                    let registers = session.history(history_at, sequence).await?;
                    match decode_signed_record(&registers[4..]) {
                        Ok(signed) => {
                            if sender.send(envelope_incoming(source, &signed, true)).await.is_err() {
                                return Ok(());
                            }
                        }
                        Err(ModbusError::Empty) => session.shared.metrics.modbus_error("modbus_not_remembered"),
                        Err(error) => session.shared.metrics.modbus_error(error.code()),
                    }
                }
            }
        }
    }
}

/// The attestation state of an unsigned meter between polls.
#[derive(Debug, Default)]
struct Attestation {
    /// The first sample, before any attested reading exists: (boundary, import, export).
    baseline: Option<(i64, u64, u64)>,
    /// The last reading sent and not yet seen accepted: (sequence, interval end, import, export).
    pending: Option<(u64, i64, u64, u64)>,
    /// The last registry verdict quarantined, so a refused meter is reported once.
    refused: bool,
}

fn energy_wh(map: &EnergyMap, registers: &[u16], point: &'static str) -> Result<u64, PollError> {
    let words = match map.word_order {
        WordOrder::Big => [registers[0], registers[1]],
        WordOrder::Little => [registers[1], registers[0]],
    };
    match map.encoding {
        Encoding::Float32Kwh => modbus::sdm630_energy_wh(&words, point).map_err(PollError::map),
        Encoding::Uint32Wh => Ok(u64::from(modbus::read_u32(&words))),
    }
}

async fn energy_session(
    session: &mut Session<'_>,
    map: EnergyMap,
    source: &str,
    sender: &mpsc::Sender<Incoming>,
    backfill: &mut mpsc::Receiver<(u64, u64)>,
    attest: &mut Attestation,
) -> Result<(), PollError> {
    let meter = session.device.meter_id.clone().ok_or(PollError {
        reason: "modbus_map_mismatch",
        detail: "an energy-map device needs meter_id in the config".into(),
        reconnect: false,
    })?;
    let (low, high) = (map.import.min(map.export), map.import.max(map.export));
    let count = usize::from(high - low) + 2;
    let mut ticker = tokio::time::interval(Duration::from_millis(session.device.poll_ms.max(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let registers = session.read(map.table, low, count).await?;
                session.shared.metrics.modbus_polls.inc();
                let import = energy_wh(&map, &registers[usize::from(map.import - low)..], "import");
                let export = energy_wh(&map, &registers[usize::from(map.export - low)..], "export");
                let (import, export) = match (import, export) {
                    (Ok(import), Ok(export)) => (import, export),
                    (Err(error), _) | (_, Err(error)) => {
                        session.shared.metrics.modbus_error(error.reason);
                        continue;
                    }
                };
                if let Some(incoming) = attest_sample(session.shared, &meter, map, source, attest, import, export) {
                    if sender.send(incoming).await.is_err() {
                        return Ok(());
                    }
                }
            }
            // An unsigned meter keeps no history: a gap in its attested readings cannot be filled.
            Some(_) = backfill.recv() => session.shared.metrics.modbus_error("modbus_no_history"),
        }
    }
}

/// One sample of an unsigned meter's registers: returns the attested reading of the interval that
/// ended at the last boundary of the gateway's clock, when one is due.
fn attest_sample(
    shared: &Shared,
    meter: &MeterId,
    map: EnergyMap,
    source: &str,
    attest: &mut Attestation,
    import: u64,
    export: u64,
) -> Option<Incoming> {
    let interval_s = shared.config.attest_interval_s.max(1);
    let now_s = shared.config.clock.now().0.div_euclid(1_000);
    let boundary = now_s.div_euclid(interval_s) * interval_s;
    let registered = {
        let registry = shared.registry.lock().expect("registry lock is never poisoned");
        // No registry seen yet: nothing can be judged attestable.
        registry.refreshed?;
        registry.meters.get(meter).cloned()
    };
    let key_id = match registered {
        Some(entry) if entry.attested_by.as_ref() == Some(&shared.config.gateway_id) => {
            attest.refused = false;
            entry.keys.newest().key_id
        }
        other => {
            let fresh = !attest.refused;
            attest.refused = true;
            let detail = match other {
                None => format!("meter {meter} is not registered"),
                Some(_) => {
                    format!("meter {meter} is not registered as attested by gateway {}", shared.config.gateway_id)
                }
            };
            return fresh.then(|| rejected_incoming(source, "not_attestable", detail, Vec::new()));
        }
    };
    // Where the next reading starts: the last one accepted (durable, in the tracker), or one
    // sent and not yet accepted, or the first sample.
    let accepted = shared.tracker.lock().expect("tracker lock is never poisoned").get(meter).cloned();
    let accepted = accepted.filter(|state| state.highest > 0 && state.interval_end_s > 0);
    if let Some((sequence, end_s, ..)) = attest.pending {
        let taken = accepted.as_ref().is_some_and(|state| state.highest >= sequence);
        // Not settled two intervals later (accepted or quarantined, both settle it): it was never
        // stored (e.g. not taken over the disk budget); attest again from what was settled.
        if taken || boundary >= end_s + 2 * interval_s {
            attest.pending = None;
        }
    }
    let start = match (attest.pending, &accepted, attest.baseline) {
        (Some(pending), ..) => pending,
        (None, Some(state), _) => (state.highest, state.interval_end_s, state.import_end_wh, state.export_end_wh),
        (None, None, Some((at, import, export))) => (0, at, import, export),
        (None, None, None) => {
            // The first sample: nothing to attest before it.
            attest.baseline = Some((boundary, import, export));
            return None;
        }
    };
    let (sequence, start_s, import_start, export_start) = start;
    if boundary <= start_s {
        return None;
    }
    if boundary - start_s > domain::limits::INTERVAL_SECONDS_MAX {
        // Longer than a reading may cover: start again here (the span is reported, not settled).
        shared.metrics.modbus_error("attested_span_too_long");
        tracing::warn!(%meter, from = start_s, to = boundary, "attestation restarts after a gap longer than a day");
        attest.pending = None;
        attest.baseline = Some((boundary, import, export));
        return None;
    }
    let reading = Reading {
        meter_id: meter.clone(),
        key_id,
        sequence: Sequence(sequence + 1),
        interval_start: UnixSeconds(start_s),
        interval_end: UnixSeconds(boundary),
        import_start_wh: import_start,
        import_end_wh: import,
        export_start_wh: export_start,
        export_end_wh: export,
        register_modulus_wh: domain::reading::REGISTER_MODULUS_WH_DEFAULT,
        clock_status: ClockStatus::Synchronized,
        status: StatusFlags::new(if map.encoding == Encoding::Float32Kwh { StatusFlags::FROM_FLOAT32 } else { 0 })
            .expect("defined bit"),
        firmware: FirmwareVersion(0),
    };
    match reading.sign(&shared.key) {
        Ok(signed) => {
            attest.pending = Some((sequence + 1, boundary, import, export));
            shared.metrics.readings_attested.inc();
            Some(envelope_incoming(source, &signed, false))
        }
        Err(error) => {
            let detail = format!("meter {meter}: registers {import_start}→{import} Wh import, {export_start}→{export} Wh export: {error}");
            attest.pending = None;
            attest.baseline = Some((boundary, import, export));
            Some(rejected_incoming(source, "invalid_attested_reading", detail, Vec::new()))
        }
    }
}
