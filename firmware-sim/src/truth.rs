//! The ground truth in a compact binary form: per meter and interval what it measured and which
//! fault was injected, 9 bytes a record (a day of 100,000 meters at 15 minutes is ~86 MB,
//! against over a gigabyte as JSON lines). What each meter *sent* follows from the header (seed,
//! fleet shape, epoch, fault plan) through [`crate::fleet::Fleet`], byte for byte.
//!
//! Layout (big-endian): magic `WTLTRUTH`, version u8 (1), seed u64, meters u32, sites u32,
//! interval_s u32, epoch i64, plan length u32 + fault plan JSON, (version 2) model length u32 +
//! load-model JSON (profile, PV share, site, time zone); then one block per interval:
//! sequence u64, then for each meter in index order: import_wh u32, export_wh u32, fault u8
//! (0 none, else `FaultKind::code`).

use std::io::{BufWriter, Read, Write};
use std::path::Path;

use anyhow::{bail, Context};
use domain::ids::UnixSeconds;

use crate::faults::{FaultKind, FaultPlan};
use crate::fleet::Fleet;

const MAGIC: &[u8; 8] = b"WTLTRUTH";
const VERSION: u8 = 2;

/// The load model's parameters as the header records them.
#[derive(serde::Serialize, serde::Deserialize)]
struct ModelHeader {
    profile: String,
    pv_share: f64,
    latitude_deg: f64,
    longitude_deg: f64,
    tz: String,
}
const RECORD_BYTES: usize = 9;

/// One meter's interval in the ground truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TruthRecord {
    pub meter: u32,
    pub sequence: u64,
    pub import_wh: u64,
    pub export_wh: u64,
    pub fault: Option<FaultKind>,
}

/// Appends interval blocks to a truth file.
pub struct TruthWriter {
    out: BufWriter<std::fs::File>,
    meters: u32,
}

impl TruthWriter {
    pub fn create(path: &Path, fleet: &Fleet) -> anyhow::Result<TruthWriter> {
        let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut out = BufWriter::new(file);
        let plan = serde_json::to_vec(&fleet.plan)?;
        out.write_all(MAGIC)?;
        out.write_all(&[VERSION])?;
        out.write_all(&fleet.seed.to_be_bytes())?;
        out.write_all(&fleet.meters.to_be_bytes())?;
        out.write_all(&fleet.sites.to_be_bytes())?;
        out.write_all(&(fleet.interval_s as u32).to_be_bytes())?;
        out.write_all(&fleet.epoch.0.to_be_bytes())?;
        out.write_all(&(plan.len() as u32).to_be_bytes())?;
        out.write_all(&plan)?;
        let config = fleet.model().config();
        let model = serde_json::to_vec(&ModelHeader {
            profile: config.profile.to_string(),
            pv_share: config.pv_share,
            latitude_deg: config.latitude_deg,
            longitude_deg: config.longitude_deg,
            tz: config.tz.name().to_string(),
        })?;
        out.write_all(&(model.len() as u32).to_be_bytes())?;
        out.write_all(&model)?;
        Ok(TruthWriter { out, meters: fleet.meters })
    }

    /// Writes the block of one interval for every meter.
    pub fn write_interval(&mut self, fleet: &Fleet, sequence: u64) -> anyhow::Result<()> {
        self.out.write_all(&sequence.to_be_bytes())?;
        let mut block = Vec::with_capacity(self.meters as usize * RECORD_BYTES);
        for meter in 0..self.meters {
            let (import_wh, export_wh) = fleet.measured_wh(meter, sequence);
            block.extend_from_slice(&u32::try_from(import_wh).unwrap_or(u32::MAX).to_be_bytes());
            block.extend_from_slice(&u32::try_from(export_wh).unwrap_or(u32::MAX).to_be_bytes());
            block.push(fleet.fault_covering(meter, sequence).map_or(0, FaultKind::code));
        }
        self.out.write_all(&block)?;
        self.out.flush()?;
        Ok(())
    }
}

/// A ground-truth file, read whole.
#[derive(Debug)]
pub struct Truth {
    pub fleet: Fleet,
    pub records: Vec<TruthRecord>,
}

fn take<const N: usize>(bytes: &[u8], offset: &mut usize) -> anyhow::Result<[u8; N]> {
    let slice = bytes.get(*offset..*offset + N).context("truth file truncated")?;
    *offset += N;
    Ok(slice.try_into().expect("length checked"))
}

impl Truth {
    pub fn read(path: &Path) -> anyhow::Result<Truth> {
        let mut bytes = Vec::new();
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?.read_to_end(&mut bytes)?;
        let mut offset = 0;
        if take::<8>(&bytes, &mut offset)? != *MAGIC {
            bail!("{} is not a Wattle truth file", path.display());
        }
        let version = take::<1>(&bytes, &mut offset)?[0];
        if version != 1 && version != VERSION {
            bail!("truth file version {version} is not supported");
        }
        let seed = u64::from_be_bytes(take(&bytes, &mut offset)?);
        let meters = u32::from_be_bytes(take(&bytes, &mut offset)?);
        let sites = u32::from_be_bytes(take(&bytes, &mut offset)?);
        let interval_s = i64::from(u32::from_be_bytes(take(&bytes, &mut offset)?));
        let epoch = UnixSeconds(i64::from_be_bytes(take(&bytes, &mut offset)?));
        let plan_length = u32::from_be_bytes(take(&bytes, &mut offset)?) as usize;
        let plan: FaultPlan = serde_json::from_slice(
            bytes.get(offset..offset + plan_length).context("truth file truncated in the plan")?,
        )?;
        offset += plan_length;
        let mut fleet = Fleet::new(seed, meters, sites, interval_s, epoch, plan);
        if version >= 2 {
            let length = u32::from_be_bytes(take(&bytes, &mut offset)?) as usize;
            let header: ModelHeader = serde_json::from_slice(
                bytes.get(offset..offset + length).context("truth file truncated in the load model")?,
            )?;
            offset += length;
            let config = crate::load::LoadConfig {
                profile: header.profile.parse()?,
                pv_share: header.pv_share,
                latitude_deg: header.latitude_deg,
                longitude_deg: header.longitude_deg,
                tz: header.tz.parse().map_err(|error| anyhow::anyhow!("time zone {}: {error}", header.tz))?,
            };
            fleet = fleet.with_model(config)?;
        }
        let mut records = Vec::new();
        while offset < bytes.len() {
            let sequence = u64::from_be_bytes(take(&bytes, &mut offset)?);
            for meter in 0..meters {
                let import_wh = u64::from(u32::from_be_bytes(take(&bytes, &mut offset)?));
                let export_wh = u64::from(u32::from_be_bytes(take(&bytes, &mut offset)?));
                let code = take::<1>(&bytes, &mut offset)?[0];
                records.push(TruthRecord { meter, sequence, import_wh, export_wh, fault: FaultKind::from_code(code) });
            }
        }
        Ok(Truth { fleet, records })
    }

    /// The ground truth as CSV, one row per meter and interval in file order, so anyone can
    /// recompute a bill outside Wattle: `meter_id,interval_start_utc,interval_end_utc,import_wh,
    /// export_wh,fault` (RFC 3339 UTC times; energy measured in the interval, whole Wh; `fault`
    /// names the fault injected into what the meter sent, empty if none: the energy is what it
    /// measured either way).
    pub fn write_csv(&self, out: impl Write) -> anyhow::Result<()> {
        let mut out = BufWriter::new(out);
        writeln!(out, "meter_id,interval_start_utc,interval_end_utc,import_wh,export_wh,fault")?;
        let utc = |seconds: UnixSeconds| {
            chrono::DateTime::from_timestamp(seconds.0, 0)
                .map(|time| time.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                .context("an interval start beyond the calendar")
        };
        for record in &self.records {
            let start = self.fleet.interval_start(record.sequence);
            let end = UnixSeconds(start.0 + self.fleet.interval_s);
            let fault = record.fault.map(|fault| fault.to_string()).unwrap_or_default();
            writeln!(
                out,
                "{},{},{},{},{},{fault}",
                crate::fleet::meter_id(record.meter),
                utc(start)?,
                utc(end)?,
                record.import_wh,
                record.export_wh
            )?;
        }
        out.flush()?;
        Ok(())
    }
}
