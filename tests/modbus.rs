//! The simulator's Modbus TCP servers, read by a client this project did not write (`mbpoll`,
//! from Debian): the SunSpec marker and model chain, model 203, the signed-reading block whose
//! signature verifies against the meter's key, history selection, and the SDM630 map of a legacy
//! meter; every value equal to what the same meter published over MQTT for the same interval.

use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use domain::modbus::{self, HISTORY_ADDRESS, METER_ADDRESS, SIGNED_ADDRESS, SIGNED_RECORD_REGISTERS, SUNSPEC_BASE};
use domain::reading::SignedReading;
use domain::verify::verify;
use firmware_sim::meter_key;

use crate::fleet::Subscriber;
use crate::support::{clock_args, free_port, poll_until, wattle, Mosquitto, Process};

const EPOCH: &str = "2026-06-01T09:00:00Z";
const SEED: u64 = 11;
const METERS: u32 = 3;
const LEGACY: u32 = 2;
const INTERVALS: u64 = 6;
/// 15-minute intervals at 450x: 2 s each, time to read a block between updates.
const SPEED: u32 = 450;

/// Reads `count` registers (function 03, or 04 for `input`) at 0-based `address` with mbpoll.
fn mbpoll_read(port: u16, unit: u8, address: u16, count: usize, input: bool) -> anyhow::Result<Vec<u16>> {
    let output = Command::new("mbpoll")
        .args(["-m", "tcp", "-p", &port.to_string(), "-a", &unit.to_string(), "-0", "-1", "-o", "2"])
        .args(["-t", if input { "3:hex" } else { "4:hex" }, "-r", &address.to_string(), "-c", &count.to_string()])
        .arg("127.0.0.1")
        .output()
        .context("running mbpoll (apt install mbpoll)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(output.status.success(), "mbpoll failed: {text}{}", String::from_utf8_lossy(&output.stderr));
    // Lines look like "[40000]: 	0x5375".
    let registers: Vec<u16> = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix('[')?.split_once("]:"))
        .map(|(_, value)| u16::from_str_radix(value.trim().trim_start_matches("0x"), 16))
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(registers.len() == count, "mbpoll returned {} of {count} registers: {text}", registers.len());
    Ok(registers)
}

/// Writes registers with mbpoll (function 16).
fn mbpoll_write(port: u16, unit: u8, address: u16, values: &[u16]) -> anyhow::Result<()> {
    let status = Command::new("mbpoll")
        .args(["-m", "tcp", "-p", &port.to_string(), "-a", &unit.to_string(), "-0", "-1", "-o", "2", "-t", "4"])
        .args(["-r", &address.to_string(), "127.0.0.1"])
        .args(values.iter().map(u16::to_string))
        .output()?;
    anyhow::ensure!(status.status.success(), "mbpoll write failed: {}", String::from_utf8_lossy(&status.stdout));
    Ok(())
}

/// Model 203 and the signed block of one meter, read so that both belong to the same interval.
fn consistent_poll(port: u16, unit: u8) -> anyhow::Result<(modbus::MeterValues, SignedReading)> {
    for _ in 0..10 {
        let before =
            modbus::decode_signed_record(&mbpoll_read(port, unit, SIGNED_ADDRESS + 2, SIGNED_RECORD_REGISTERS, false)?);
        let model = mbpoll_read(port, unit, METER_ADDRESS, 2 + usize::from(modbus::METER_MODEL.1), false)?;
        // The signed model's header and body in one request.
        let block = mbpoll_read(port, unit, SIGNED_ADDRESS, 2 + SIGNED_RECORD_REGISTERS, false)?;
        assert_eq!(&block[..2], &[modbus::SIGNED_MODEL.0, modbus::SIGNED_MODEL.1]);
        let after = modbus::decode_signed_record(&block[2..]);
        if let (Ok(before), Ok(after)) = (before, after) {
            if before == after {
                return Ok((modbus::decode_meter_model(&model)?, after));
            }
        }
    }
    anyhow::bail!("no consistent poll of unit {unit} in 10 tries")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_modbus_client_reads_sunspec_and_a_signed_reading_equal_to_mqtt() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(dir.path(), "").await?;
    let subscriber = Subscriber::start(dir.path(), broker.port).await?;
    let modbus_port = free_port();
    let anchor = domain::clock::wall_clock_now().0;
    let mut command = wattle();
    command
        .args(["sim", "--meters", &METERS.to_string(), "--seed", &SEED.to_string()])
        .args(["--intervals", &INTERVALS.to_string(), "--epoch", EPOCH, "--linger-s", "30"])
        .args(["--broker", &format!("127.0.0.1:{}", broker.port)])
        .args(["--modbus-listen", &format!("127.0.0.1:{modbus_port}"), "--legacy-meter", &LEGACY.to_string()])
        .args(clock_args(EPOCH, SPEED, anchor));
    let sim = Process::spawn("sim", dir.path(), command)?;

    // The marker and the chain, walked the SunSpec way: header by header.
    let marker = poll_until("Modbus server up", Duration::from_secs(20), || async {
        mbpoll_read(modbus_port, 1, SUNSPEC_BASE, 2, false).ok()
    })
    .await
    .with_context(|| sim.log_tail())?;
    assert_eq!(marker, modbus::SUNS_MARKER, "\"SunS\" at 40000");
    let mut address = SUNSPEC_BASE + 2;
    let mut chain = Vec::new();
    loop {
        let header = mbpoll_read(modbus_port, 1, address, 2, false)?;
        if header[0] == modbus::END_MODEL_ID {
            break;
        }
        chain.push((header[0], address));
        address += 2 + header[1];
        anyhow::ensure!(chain.len() < 10, "chain does not end: {chain:?}");
    }
    assert_eq!(chain.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![1, 203, 64_900, 64_901]);
    assert_eq!(chain[1].1, METER_ADDRESS);
    let common = mbpoll_read(modbus_port, 2, SUNSPEC_BASE + 2, 68, false)?;
    assert_eq!(modbus::read_string(&common[2..18]), "Wattle", "manufacturer");
    assert_eq!(modbus::read_string(&common[50..66]), firmware_sim::meter_id(1).as_str(), "serial is the meter id");

    // Wait for a closed interval, then read meter 1 (unit 2) and compare with MQTT.
    poll_until("a closed interval on Modbus", Duration::from_secs(30), || async {
        modbus::decode_signed_record(
            &mbpoll_read(modbus_port, 2, SIGNED_ADDRESS + 2, SIGNED_RECORD_REGISTERS, false).ok()?,
        )
        .ok()
        .filter(|signed| signed.reading().sequence.0 >= 2)
    })
    .await?;
    let (values, signed) = consistent_poll(modbus_port, 2)?;
    let key = meter_key(SEED, 1).verifying_key().to_bytes();
    verify(signed.clone(), &key).map_err(|error| anyhow::anyhow!("signature from Modbus: {error:?}"))?;
    let reading = signed.reading();
    assert_eq!(values.import_wh, reading.import_end_wh % (1 << 32), "TotWhImp (acc32, TotWh_SF 0)");
    assert_eq!(values.export_wh, reading.export_end_wh % (1 << 32), "TotWhExp");
    assert_eq!(values.power_w, modbus::mean_power_w(&signed));
    let sequence = reading.sequence.0;
    let mqtt = poll_until("the same interval over MQTT", Duration::from_secs(10), || {
        let found = subscriber
            .readings(1)
            .into_iter()
            .filter_map(|(_, signed)| signed)
            .find(|signed| signed.reading().sequence.0 == sequence);
        async move { found }
    })
    .await?;
    assert_eq!(mqtt, signed, "Modbus serves byte-for-byte the reading published over MQTT");

    // History: select an older sequence (function 16), then read it back with its signature.
    let older = sequence - 1;
    mbpoll_write(modbus_port, 2, HISTORY_ADDRESS + 2, &[0, 0, (older >> 16) as u16, older as u16])?;
    let history = mbpoll_read(modbus_port, 2, HISTORY_ADDRESS + 2, 4 + SIGNED_RECORD_REGISTERS, false)?;
    let remembered = modbus::decode_signed_record(&history[4..])?;
    assert_eq!(remembered.reading().sequence.0, older);
    verify(remembered.clone(), &key).map_err(|error| anyhow::anyhow!("history signature: {error:?}"))?;
    let mqtt_older =
        subscriber.readings(1).into_iter().filter_map(|(_, s)| s).find(|s| s.reading().sequence.0 == older);
    assert_eq!(mqtt_older.as_ref(), Some(&remembered));

    // The legacy meter: SDM630 float32 input registers, no SunSpec, nothing over MQTT.
    let unit = LEGACY as u8 + 1;
    assert!(mbpoll_read(modbus_port, unit, SUNSPEC_BASE, 2, false).is_err(), "no SunSpec map on a legacy meter");
    let sdm = mbpoll_read(modbus_port, unit, 0, modbus::sdm630::REGISTERS, true)?;
    let import_wh = modbus::sdm630_energy_wh(&sdm[usize::from(modbus::sdm630::IMPORT_KWH)..], "import")?;
    let frequency = f32::from_bits(modbus::read_u32(&sdm[usize::from(modbus::sdm630::FREQUENCY_HZ)..]));
    assert_eq!(frequency, 50.0);
    let epoch = domain::ids::UnixSeconds(chrono::DateTime::parse_from_rfc3339(EPOCH)?.timestamp());
    let truth_fleet = firmware_sim::Fleet::new(SEED, METERS, 1, 900, epoch, firmware_sim::FaultPlan::default());
    // float32 kWh: within one float step of some closed interval's register.
    let matches = (1..=INTERVALS).any(|sequence| {
        let register = truth_fleet.stored_reading(LEGACY, sequence).reading().import_end_wh;
        register.abs_diff(import_wh) <= register / 8_000_000 + 1
    });
    assert!(matches, "SDM630 import {import_wh} Wh is one of the meter's registers");
    assert!(subscriber.readings(LEGACY).is_empty(), "a legacy meter publishes nothing over MQTT");
    drop(sim);
    Ok(())
}
