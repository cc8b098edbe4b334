//! Modbus TCP: one server per site, each meter a unit id (1 + its position in the site). Signing
//! meters serve the SunSpec image of `domain::modbus` (holding registers, function 03; history
//! selection by function 16 or 23); legacy meters serve the SDM630 input registers (function 04)
//! and have no signature. The values are the meter's stored reading for the latest closed
//! interval, the same reading it published over MQTT (`docs/modbus.md`).

use std::collections::{HashMap, HashSet};
use std::future::{ready, Ready};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use domain::modbus::{self, Nameplate, HISTORY_ADDRESS, SUNSPEC_BASE};
use domain::reading::SignedReading;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_modbus::server::tcp::{accept_tcp_connection, Server};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

use crate::fleet::{meter_id, Fleet, SIM_FIRMWARE};

/// Unit ids a site can address (Modbus allows 1..=247).
pub const UNITS_PER_SITE_MAX: usize = 247;

/// What one site's server knows: its meters, which are legacy, and the latest closed interval.
struct SiteState {
    fleet: Arc<Fleet>,
    /// Meter index by unit id - 1.
    meters: Vec<u32>,
    legacy: HashSet<u32>,
    closed: watch::Receiver<u64>,
    /// Oldest sequence a meter still remembers, as a function of the latest closed one.
    memory_intervals: u64,
    /// Each meter's latest stored reading, recomputed when the interval advances.
    latest: Mutex<HashMap<u32, SignedReading>>,
    /// The history selector of each unit, shared by all connections as a real meter's is.
    selected: Mutex<HashMap<u8, u64>>,
}

impl SiteState {
    fn latest(&self, meter: u32) -> Option<SignedReading> {
        let sequence = *self.closed.borrow();
        if sequence == 0 {
            return None;
        }
        let mut cache = self.latest.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(reading) = cache.get(&meter).filter(|r| r.reading().sequence.0 == sequence) {
            return Some(reading.clone());
        }
        let reading = self.fleet.stored_reading(meter, sequence);
        cache.insert(meter, reading.clone());
        Some(reading)
    }

    fn remembered(&self, meter: u32, sequence: u64) -> Option<SignedReading> {
        let newest = *self.closed.borrow();
        let oldest = newest.saturating_sub(self.memory_intervals).max(1);
        (oldest..=newest).contains(&sequence).then(|| self.fleet.stored_reading(meter, sequence))
    }
}

/// One connection's service.
struct Connection {
    site: Arc<SiteState>,
}

fn window(image: &[u16], base: u16, address: u16, count: u16) -> Result<Vec<u16>, ExceptionCode> {
    if count == 0 || usize::from(count) > modbus::REGISTERS_PER_READ_MAX {
        return Err(ExceptionCode::IllegalDataValue);
    }
    let start = address.checked_sub(base).map(usize::from).ok_or(ExceptionCode::IllegalDataAddress)?;
    image.get(start..start + usize::from(count)).map(<[u16]>::to_vec).ok_or(ExceptionCode::IllegalDataAddress)
}

impl Connection {
    fn answer(&self, request: SlaveRequest<'static>) -> Result<Response, ExceptionCode> {
        let unit = request.slave;
        let meter = *usize::from(unit)
            .checked_sub(1)
            .and_then(|slot| self.site.meters.get(slot))
            .ok_or(ExceptionCode::GatewayTargetDevice)?;
        let legacy = self.site.legacy.contains(&meter);
        match request.request {
            Request::ReadInputRegisters(address, count) if legacy => {
                let (import, export, power) = match self.site.latest(meter) {
                    Some(signed) => {
                        let r = signed.reading();
                        (r.import_end_wh, r.export_end_wh, modbus::mean_power_w(&signed) as f32)
                    }
                    // Before its first interval closes a meter still shows its registers.
                    None => {
                        let registers = self.site.fleet.registers_before(meter, 1);
                        (registers.import_wh, registers.export_wh, 0.0)
                    }
                };
                let image = modbus::sdm630_image(import, export, power);
                Ok(Response::ReadInputRegisters(window(&image, 0, address, count)?))
            }
            Request::ReadHoldingRegisters(address, count) if !legacy => {
                let selected = self.site.selected.lock().unwrap_or_else(|p| p.into_inner()).get(&unit).copied();
                let image = self.image(unit, meter, selected.unwrap_or(0));
                Ok(Response::ReadHoldingRegisters(window(&image, SUNSPEC_BASE, address, count)?))
            }
            Request::WriteMultipleRegisters(address, ref words) if !legacy => {
                let sequence = selector(address, words)?;
                self.site.selected.lock().unwrap_or_else(|p| p.into_inner()).insert(unit, sequence);
                Ok(Response::WriteMultipleRegisters(address, words.len() as u16))
            }
            // Select and read in one request: no other client's selection can come between.
            Request::ReadWriteMultipleRegisters(read_at, count, write_at, ref words) if !legacy => {
                let sequence = selector(write_at, words)?;
                self.site.selected.lock().unwrap_or_else(|p| p.into_inner()).insert(unit, sequence);
                let image = self.image(unit, meter, sequence);
                Ok(Response::ReadWriteMultipleRegisters(window(&image, SUNSPEC_BASE, read_at, count)?))
            }
            Request::ReadInputRegisters(..)
            | Request::ReadHoldingRegisters(..)
            | Request::WriteMultipleRegisters(..)
            | Request::ReadWriteMultipleRegisters(..) => Err(ExceptionCode::IllegalDataAddress),
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }

    fn image(&self, unit: u8, meter: u32, selected: u64) -> Vec<u16> {
        let nameplate = Nameplate {
            manufacturer: "Wattle".into(),
            model: "WTL-SIM-203".into(),
            version: SIM_FIRMWARE.to_string(),
            serial: meter_id(meter).to_string(),
            device_address: u16::from(unit),
        };
        let remembered = self.site.remembered(meter, selected);
        modbus::sunspec_image(&nameplate, self.site.latest(meter).as_ref(), (selected, remembered.as_ref()))
    }
}

/// The sequence written to the history model's 4 selector registers (the only writable ones).
fn selector(address: u16, words: &[u16]) -> Result<u64, ExceptionCode> {
    if address != HISTORY_ADDRESS + 2 || words.len() != 4 {
        return Err(ExceptionCode::IllegalDataAddress);
    }
    Ok(words.iter().fold(0u64, |acc, word| (acc << 16) | u64::from(*word)))
}

impl tokio_modbus::server::Service for Connection {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Response, ExceptionCode>>;

    fn call(&self, request: Self::Request) -> Self::Future {
        ready(self.answer(request))
    }
}

/// Serves one site's meters on `listener` until the task is dropped. `legacy` meters serve SDM630
/// registers only. `closed` carries the latest closed interval's sequence.
pub async fn serve_site(
    fleet: Arc<Fleet>,
    site: u32,
    listener: TcpListener,
    legacy: HashSet<u32>,
    closed: watch::Receiver<u64>,
    memory_intervals: u64,
) -> anyhow::Result<()> {
    let meters: Vec<u32> = (0..fleet.meters).filter(|meter| fleet.site_of(*meter) == site).collect();
    anyhow::ensure!(
        meters.len() <= UNITS_PER_SITE_MAX,
        "site {site} has {} meters; one Modbus server addresses at most {UNITS_PER_SITE_MAX}",
        meters.len()
    );
    let state = Arc::new(SiteState {
        fleet,
        meters,
        legacy,
        closed,
        memory_intervals,
        latest: Mutex::new(HashMap::new()),
        selected: Mutex::new(HashMap::new()),
    });
    let server = Server::new(listener);
    let on_connected = |stream, address: SocketAddr| {
        let state = state.clone();
        async move {
            tracing::debug!(%address, site, "Modbus client connected");
            accept_tcp_connection(stream, address, |_| Ok(Some(Connection { site: state.clone() })))
        }
    };
    server.serve(&on_connected, |error| tracing::debug!(%error, "Modbus connection ended with an error")).await?;
    Ok(())
}

/// The unit id of `meter` on its site's server.
pub fn unit_of(fleet: &Fleet, meter: u32) -> u8 {
    let site = fleet.site_of(meter);
    let position = (0..meter).filter(|other| fleet.site_of(*other) == site).count();
    (position + 1) as u8
}
