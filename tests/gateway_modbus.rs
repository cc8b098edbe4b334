//! The gateway's Modbus input with real processes: the simulator's Modbus TCP server (SunSpec
//! signing meters and an SDM630 legacy meter), the gateway polling it (its MQTT broker carries
//! nothing), and a ledger. Signed readings arrive over Modbus, the ones missed while the gateway
//! was stopped come from the meters' history model, and the legacy meter's readings are attested
//! by the gateway and trace back to its registers. A second test feeds the gateway's Modbus
//! client garbage.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context;
use domain::api::MeterInfo;
use domain::ids::GatewayId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{
    clock_args, free_port, get_json, ledger_reading_digests, metric, poll_until, start_gateway_with,
    start_single_ledger, wattle, Mosquitto, Process, CLUSTER_SERIAL,
};

const SEED: u64 = 31;
const METERS: u32 = 4;
const LEGACY: u32 = 3;
const EPOCH: &str = "2026-06-01T08:00:00Z";
/// 900 s intervals at 900x: one interval per second.
const SPEED: u32 = 900;
const INTERVALS: u64 = 16;

/// Writes the operator key, the registry (meters 0-2 signing, meter 3 attested by `gateway`)
/// and the ledger's admin configuration into `dir`.
fn configure(dir: &std::path::Path, gateway: &str, gateway_key: &str) -> anyhow::Result<()> {
    let status = wattle().args(["keygen", "--out"]).arg(dir.join("operator.key")).output()?;
    anyhow::ensure!(status.status.success(), "keygen failed");
    let mut registry = firmware_sim::registry(SEED, METERS);
    registry[LEGACY as usize] = MeterInfo {
        public_key: gateway_key.to_string(),
        attested_by: Some(GatewayId::new(gateway)?),
        ..registry[LEGACY as usize].clone()
    };
    std::fs::write(dir.join("meters.json"), serde_json::to_string_pretty(&registry)?)?;
    std::fs::write(
        dir.join("ledger.toml"),
        "registries = [\"meters.json\"]\n[tariff]\ncurrency = \"EUR\"\nprice_per_kwh = \"0.30\"\n",
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_meters_reach_the_ledger_with_history_backfill_and_attested_legacy_readings() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let http = reqwest::Client::new();
    // The gateway's key, registered as the legacy meter's attesting key.
    let keygen = wattle().args(["keygen", "--out"]).arg(dir.path().join("gw.key")).output()?;
    anyhow::ensure!(keygen.status.success(), "keygen failed");
    let gateway_key = String::from_utf8(keygen.stdout)?.trim().to_string();
    configure(dir.path(), "gw-modbus", &gateway_key)?;
    // Every process shares a clock that starts 4 s from now, so all are up before interval 1 ends.
    let anchor = domain::clock::wall_clock_now().0 + 4_000;
    let clock = clock_args(EPOCH, SPEED, anchor);
    let (mut node, ledger_url) = start_single_ledger(dir.path(), &clock).await?;
    // Two brokers: the meters' MQTT goes where the gateway is not listening.
    for broker in ["meters-broker", "gateway-broker"] {
        std::fs::create_dir_all(dir.path().join(broker))?;
    }
    let meters_broker = Mosquitto::start(&dir.path().join("meters-broker"), "").await?;
    let gateway_broker = Mosquitto::start(&dir.path().join("gateway-broker"), "").await?;
    let modbus_port = free_port();
    let mut sim_command = wattle();
    sim_command
        .args(["sim", "--meters", &METERS.to_string(), "--seed", &SEED.to_string()])
        .args(["--intervals", &INTERVALS.to_string(), "--epoch", EPOCH, "--linger-s", "60"])
        .args(["--broker", &format!("127.0.0.1:{}", meters_broker.port)])
        .args(["--modbus-listen", &format!("127.0.0.1:{modbus_port}"), "--legacy-meter", &LEGACY.to_string()])
        .arg("--truth-out")
        .arg(dir.path().join("truth.bin"))
        .args(&clock);
    let sim = Process::spawn("sim", dir.path(), sim_command)?;
    let mut config = String::from("attest_interval_s = 900\n");
    for meter in 0..METERS {
        let map = if meter == LEGACY { "sdm630" } else { "sunspec" };
        config.push_str(&format!(
            "[[modbus]]\naddress = \"127.0.0.1:{modbus_port}\"\nunit = {}\nmap = \"{map}\"\nmeter_id = \"{}\"\npoll_ms = 150\n",
            meter + 1,
            firmware_sim::meter_id(meter)
        ));
    }
    std::fs::write(dir.path().join("gateway.toml"), config)?;
    let extra = ["--config".to_string(), dir.path().join("gateway.toml").display().to_string()];
    let extra = [extra.to_vec(), vec!["--key-file".into(), dir.path().join("gw.key").display().to_string()]].concat();
    let (mut gateway, gateway_url) = start_gateway_with(
        dir.path(),
        "gw-modbus",
        gateway_broker.port,
        std::slice::from_ref(&ledger_url),
        &clock,
        &extra,
    )
    .await?;

    // Stop the gateway for four intervals mid-run: the signed block moves on meanwhile.
    poll_until("interval 5 accepted", Duration::from_secs(30), || async {
        (metric(&http, &gateway_url, "wattle_gateway_readings_accepted_total").await? >= 15).then_some(())
    })
    .await
    .with_context(|| gateway.log_tail())?;
    gateway.signal("STOP")?;
    // Four more intervals close while it is stopped (the ground truth grows by one per interval).
    let truth_path = dir.path().join("truth.bin");
    let closed = |truth: &firmware_sim::Truth| truth.records.len() / METERS as usize;
    let at_stop = closed(&firmware_sim::Truth::read(&truth_path)?);
    poll_until("four intervals closed while the gateway is stopped", Duration::from_secs(20), || async {
        (closed(&firmware_sim::Truth::read(&truth_path).ok()?) >= at_stop + 4).then_some(())
    })
    .await?;
    gateway.signal("CONT")?;

    // Every signed reading of meters 0-2 reaches the ledger exactly once, the missed ones by
    // the history model.
    let truth = poll_until("the whole ground truth written", Duration::from_secs(40), || async {
        let truth = firmware_sim::Truth::read(&dir.path().join("truth.bin")).ok()?;
        (truth.records.len() == (METERS as u64 * INTERVALS) as usize).then_some(truth)
    })
    .await
    .with_context(|| sim.log_tail())?;
    let expected: BTreeSet<String> = truth
        .records
        .iter()
        .filter(|record| record.meter != LEGACY)
        .map(|record| truth.fleet.stored_reading(record.meter, record.sequence).digest().to_string())
        .collect();
    assert_eq!(expected.len(), 3 * INTERVALS as usize);
    let digests = poll_until("every signed reading in the ledger", Duration::from_secs(60), || async {
        let digests = ledger_reading_digests(&http, &ledger_url).await?;
        expected.iter().all(|digest| digests.contains(digest)).then_some(digests)
    })
    .await
    .with_context(|| format!("sim:\n{}\ngateway:\n{}", sim.log_tail(), gateway.log_tail()))?;
    let unique: BTreeSet<&String> = digests.iter().collect();
    assert_eq!(unique.len(), digests.len(), "no reading twice in the ledger");
    let filled = metric(&http, &gateway_url, "wattle_gateway_gap_sequences_filled_total").await.unwrap_or(0);
    assert!(filled >= 3, "the stop left gaps, filled from the history model: {filled}");

    // The legacy meter: attested readings whose energy is a difference of its registers.
    let customer = firmware_sim::customer_id(LEGACY);
    let account = poll_until("attested readings settled", Duration::from_secs(30), || async {
        let account = get_json(&http, &format!("{ledger_url}/v1/customers/{customer}/account")).await?;
        (account["intervals_settled"].as_u64()? >= 4).then_some(account)
    })
    .await
    .with_context(|| gateway.log_tail())?;
    let energy = account["energy_import_wh"].as_u64().context("energy")?;
    let registers: Vec<u64> = (1..=INTERVALS)
        .map(|sequence| truth.fleet.stored_reading(LEGACY, sequence).reading().import_end_wh)
        .chain([truth.fleet.registers_before(LEGACY, 1).import_wh])
        .collect();
    // float32 kWh near these registers is exact to ~4 Wh; two conversions.
    let traced = registers.iter().any(|a| registers.iter().any(|b| b > a && (b - a).abs_diff(energy) <= 8));
    assert!(traced, "attested energy {energy} Wh is the difference of two of the meter's registers");
    let attested = metric(&http, &gateway_url, "wattle_gateway_readings_attested_total").await.unwrap_or(0);
    assert!(attested >= 4, "{attested} attested readings");

    let operator = crate::support::gateway_client(dir.path())?;
    // Nothing quarantined; batches carry the gateway's signature, and the ledger refuses a forged one.
    let quarantine = get_json(&operator, &format!("{gateway_url}/v1/quarantine")).await.context("quarantine")?;
    assert_eq!(quarantine["entries"].as_array().map(Vec::len), Some(0), "{quarantine}");
    let forged = serde_json::json!({
        "gateway_id": "gw-modbus",
        "readings": [truth.fleet.stored_reading(0, 1).to_envelope(false)],
        "gateway_signature": { "public_key": gateway_key, "signature": "00".repeat(64) },
    });
    let refused = http.post(format!("{ledger_url}/v1/readings")).json(&forged).send().await?;
    assert_eq!(refused.status(), reqwest::StatusCode::UNAUTHORIZED);
    for process in [&mut node, &mut gateway] {
        assert!(process.try_wait().is_none(), "{} exited early:\n{}", process.name, process.log_tail());
    }
    Ok(())
}

/// A Modbus TCP server that answers wrongly, a different way per connection; the last way frames
/// correctly and serves a SunSpec chain whose signed record is garbage.
async fn broken_server(listener: tokio::net::TcpListener) {
    let mut connection = 0u64;
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { return };
        let behaviour = connection % 6;
        connection += 1;
        tokio::spawn(async move {
            let mut header = [0u8; 7];
            while stream.read_exact(&mut header).await.is_ok() {
                let length = usize::from(u16::from_be_bytes([header[4], header[5]]));
                let mut pdu = vec![0u8; length.saturating_sub(1)];
                if stream.read_exact(&mut pdu).await.is_err() {
                    return;
                }
                let (function, address, count) =
                    (pdu[0], u16::from_be_bytes([pdu[1], pdu[2]]), u16::from_be_bytes([pdu[3], pdu[4]]));
                let reply = |body: Vec<u8>, transaction: [u8; 2]| {
                    let mut frame = transaction.to_vec();
                    frame.extend_from_slice(&[0, 0]);
                    frame.extend_from_slice(&((body.len() + 1) as u16).to_be_bytes());
                    frame.push(header[6]);
                    frame.extend(body);
                    frame
                };
                let registers = |values: Vec<u16>| {
                    let mut body = vec![function, (values.len() * 2) as u8];
                    body.extend(values.iter().flat_map(|v| v.to_be_bytes()));
                    body
                };
                let frame = match behaviour {
                    // Random bytes instead of a frame.
                    0 => (0..40).map(|i| (i * 37 + 11) as u8).collect(),
                    // A frame for another transaction.
                    1 => reply(registers(vec![0; usize::from(count)]), [0xFF, 0xFE]),
                    // Half a frame, then silence (the request times out).
                    2 => reply(registers(vec![0x5375; usize::from(count)]), [header[0], header[1]])[..9].to_vec(),
                    // An exception: illegal data address.
                    3 => reply(vec![function | 0x80, 0x02], [header[0], header[1]]),
                    // A byte count that disagrees with the frame.
                    4 => {
                        let mut body = registers(vec![1; usize::from(count)]);
                        body[1] = body[1].wrapping_add(6);
                        reply(body, [header[0], header[1]])
                    }
                    // Well framed: a SunSpec chain whose signed record does not decode.
                    _ => {
                        let base = domain::modbus::SUNSPEC_BASE;
                        let mut image = vec![0u16; 400];
                        image[0..2].copy_from_slice(&domain::modbus::SUNS_MARKER);
                        let mut at = 2;
                        for (id, length) in [(1u16, 66u16), (203, 105), (64_900, 96)] {
                            image[at] = id;
                            image[at + 1] = length;
                            at += 2 + usize::from(length);
                        }
                        image[at] = 0xFFFF;
                        let record = domain::modbus::SIGNED_ADDRESS - base + 2;
                        let record = usize::from(record);
                        image[record + 3] = 7; // sequence 7 at both ends
                        image[record + 4] = 110;
                        for (i, slot) in image[record + 5..record + 92].iter_mut().enumerate() {
                            *slot = (i as u16).wrapping_mul(2_654) ^ 0x5A5A;
                        }
                        image[record + 95] = 7;
                        let start = usize::from(address.wrapping_sub(base));
                        let values = image.get(start..start + usize::from(count)).map(<[u16]>::to_vec);
                        match values {
                            Some(values) => reply(registers(values), [header[0], header[1]]),
                            None => reply(vec![function | 0x80, 0x02], [header[0], header[1]]),
                        }
                    }
                };
                if stream.write_all(&frame).await.is_err() {
                    return;
                }
                if behaviour == 0 || behaviour == 2 {
                    // Then silence until the client gives up and closes the connection.
                    let _ = stream.read(&mut [0u8; 1]).await;
                    return;
                }
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_modbus_replies_are_counted_or_quarantined_and_the_gateway_keeps_running() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let http = reqwest::Client::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let server = tokio::spawn(broken_server(listener));
    let broker = Mosquitto::start(dir.path(), "").await?;
    std::fs::write(
        dir.path().join("gateway.toml"),
        format!("[[modbus]]\naddress = \"127.0.0.1:{port}\"\nunit = 1\nmap = \"sunspec\"\npoll_ms = 100\ntimeout_ms = 300\nretries = 0\n"),
    )?;
    let extra = ["--config".to_string(), dir.path().join("gateway.toml").display().to_string()];
    // No ledger: the gateway keeps running without one.
    let dead_ledger = format!("http://127.0.0.1:{}", free_port());
    let (mut gateway, gateway_url) =
        start_gateway_with(dir.path(), "gw-garbage", broker.port, &[dead_ledger], &[], &extra).await?;
    let operator = crate::support::gateway_client(dir.path())?;
    let source = format!("modbus://127.0.0.1:{port}/1");
    let entry = poll_until("the garbage record quarantined", Duration::from_secs(45), || async {
        let quarantine = get_json(&operator, &format!("{gateway_url}/v1/quarantine")).await?;
        quarantine["entries"].as_array()?.iter().find(|entry| entry["source"] == source.as_str()).cloned()
    })
    .await
    .with_context(|| gateway.log_tail())?;
    assert_eq!(entry["reason"], "malformed_reading", "{entry}");
    let text = http.get(format!("{gateway_url}/metrics")).send().await?.text().await?;
    let count = |reason: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("wattle_gateway_modbus_errors_total{{reason=\"{reason}\"}} ")))
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or(0)
    };
    for reason in ["modbus_transport", "modbus_timeout", "modbus_exception"] {
        assert!(count(reason) > 0, "{reason} counted:\n{text}");
    }
    // The same garbage polled again is not quarantined again.
    let polls = metric(&http, &gateway_url, "wattle_gateway_modbus_polls_total").await.unwrap_or(0);
    poll_until("the garbage polled three more times", Duration::from_secs(20), || async {
        (metric(&http, &gateway_url, "wattle_gateway_modbus_polls_total").await? >= polls + 3).then_some(())
    })
    .await?;
    let quarantine = get_json(&operator, &format!("{gateway_url}/v1/quarantine")).await.context("quarantine")?;
    let entries = quarantine["entries"].as_array().context("entries")?;
    assert_eq!(entries.iter().filter(|entry| entry["source"] == source.as_str()).count(), 1);
    assert!(gateway.try_wait().is_none(), "the gateway exited:\n{}", gateway.log_tail());
    assert!(http.get(format!("{gateway_url}/metrics")).send().await?.status().is_success());
    server.abort();
    Ok(())
}
