//! The simulated fleet against a real mosquitto, observed with `mosquitto_sub`: documented
//! topics, birth and will messages, byte-identical backfill, and every fault kind visible on the
//! wire and in the ground truth.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use domain::reading::{ClockStatus, Envelope, SignedReading, StatusFlags};
use domain::verify::verify;
use firmware_sim::{meter_id, meter_key, FaultKind, Truth};

use crate::support::{clock_args, poll_until, wattle, Mosquitto, Process};

const EPOCH: &str = "2026-03-02T00:00:00Z";
const METERS: u32 = 4;
const INTERVALS: u64 = 8;
/// 15-minute intervals at 7,200x: 0.125 s each.
const SPEED: u32 = 7_200;

/// One message seen by `mosquitto_sub -v`.
#[derive(Debug, Clone)]
struct Message {
    topic: String,
    payload: String,
}

/// `mosquitto_sub` on everything under `wattle/v1/`, writing to a file.
pub(crate) struct Subscriber {
    output: PathBuf,
    _process: Process,
}

impl Subscriber {
    pub(crate) async fn start(dir: &Path, port: u16) -> anyhow::Result<Subscriber> {
        let output = dir.join("subscriber.out");
        let mut command = Command::new("mosquitto_sub");
        command.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-v", "-t", "wattle/v1/#"]);
        command.stdout(std::fs::File::create(&output)?);
        let process = Process::spawn_with_stdout("mosquitto_sub", dir, command)?;
        let subscriber = Subscriber { output, _process: process };
        // Subscribed once a probe we publish comes back.
        poll_until("mosquitto_sub subscribed", Duration::from_secs(20), || {
            let _ = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "wattle/v1/probe", "-m", "probe"])
                .status();
            let seen = subscriber.messages().iter().any(|message| message.topic == "wattle/v1/probe");
            async move { seen.then_some(()) }
        })
        .await?;
        Ok(subscriber)
    }

    fn messages(&self) -> Vec<Message> {
        std::fs::read_to_string(&self.output)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split_once(' '))
            .map(|(topic, payload)| Message { topic: topic.to_string(), payload: payload.to_string() })
            .collect()
    }

    /// Readings of one meter in arrival order: (envelope, decoded reading if it decodes).
    pub(crate) fn readings(&self, meter: u32) -> Vec<(Envelope, Option<SignedReading>)> {
        let topic = format!("wattle/v1/site-0/{}/reading", meter_id(meter));
        self.messages()
            .into_iter()
            .filter(|message| message.topic == topic)
            .map(|message| {
                let envelope: Envelope =
                    serde_json::from_str(&message.payload).expect("reading payloads are envelopes");
                let signed = envelope.open().ok();
                (envelope, signed)
            })
            .collect()
    }
}

fn sim_command(dir: &Path, port: u16, intervals: u64, faults: &[String]) -> Command {
    let anchor = domain::clock::wall_clock_now().0;
    let mut command = wattle();
    command
        .args(["sim", "--meters", &METERS.to_string(), "--seed", "5", "--intervals", &intervals.to_string()])
        .args(["--broker", &format!("127.0.0.1:{port}"), "--epoch", EPOCH])
        .arg("--truth-out")
        .arg(dir.join("truth.bin"))
        .args(clock_args(EPOCH, SPEED, anchor));
    for fault in faults {
        command.args(["--fault", fault]);
    }
    command
}

/// Runs 4 meters for 8 intervals with one fault on meter 1 at sequence 3; returns what the
/// subscriber saw and the ground truth.
async fn run_with_fault(kind: FaultKind) -> anyhow::Result<(tempfile::TempDir, Subscriber, Truth)> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(dir.path(), "").await?;
    let subscriber = Subscriber::start(dir.path(), broker.port).await?;
    let mut sim =
        Process::spawn("sim", dir.path(), sim_command(dir.path(), broker.port, INTERVALS, &[format!("{kind}@1:3")]))?;
    let status = sim.wait(Duration::from_secs(60)).await?;
    anyhow::ensure!(status.success(), "sim failed:\n{}", sim.log_tail());
    let truth = Truth::read(&dir.path().join("truth.bin"))?;
    // Every meter's last reading has reached the subscriber.
    poll_until("last readings delivered", Duration::from_secs(20), || {
        let done = (0..METERS).all(|meter| {
            subscriber
                .readings(meter)
                .iter()
                .any(|(_, signed)| signed.as_ref().is_some_and(|s| s.reading().sequence.0 == INTERVALS))
        });
        async move { done.then_some(()) }
    })
    .await?;
    Ok((dir, subscriber, truth))
}

/// `wattle truth-csv` (issue 13: the ground truth for recomputing a bill outside Wattle): a row
/// per meter and interval with its UTC interval, the energy measured and the fault by name.
fn truth_csv_matches(dir: &Path, truth: &Truth, kind: FaultKind) -> anyhow::Result<()> {
    let csv = dir.join("truth.csv");
    let output = wattle().arg("truth-csv").arg(dir.join("truth.bin")).arg("--out").arg(&csv).output()?;
    anyhow::ensure!(output.status.success(), "truth-csv failed: {}", String::from_utf8_lossy(&output.stderr));
    let text = std::fs::read_to_string(&csv)?;
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("meter_id,interval_start_utc,interval_end_utc,import_wh,export_wh,fault"));
    let rows: Vec<Vec<&str>> = lines.map(|line| line.split(',').collect()).collect();
    assert_eq!(rows.len(), truth.records.len());
    for (row, record) in rows.iter().zip(&truth.records) {
        let start = truth.fleet.interval_start(record.sequence);
        let expected_start = chrono::DateTime::from_timestamp(start.0, 0).context("in range")?;
        assert_eq!(row[0], meter_id(record.meter).to_string());
        assert_eq!(row[1], expected_start.format("%Y-%m-%dT%H:%M:%SZ").to_string());
        assert_eq!(row[3].parse::<u64>()?, record.import_wh);
        assert_eq!(row[4].parse::<u64>()?, record.export_wh);
        assert_eq!(row[5].is_empty(), record.fault.is_none());
    }
    // The epoch's first interval ends 15 minutes after it starts, and the fault is named.
    assert_eq!((rows[0][1], rows[0][2]), ("2026-03-02T00:00:00Z", "2026-03-02T00:15:00Z"), "{:?}", rows[0]);
    assert!(rows.iter().any(|row| row[5] == kind.to_string()), "the fault {kind} is not named");
    Ok(())
}

fn sequences(readings: &[(Envelope, Option<SignedReading>)]) -> Vec<u64> {
    readings.iter().filter_map(|(_, signed)| signed.as_ref().map(|s| s.reading().sequence.0)).collect()
}

fn verifies(signed: &SignedReading, meter: u32) -> bool {
    verify(signed.clone(), &meter_key(5, meter).verifying_key().to_bytes()).is_ok()
}

/// Checks the fault on the wire (meter 1) and in the ground truth; meter 0 stays clean.
async fn fault_is_visible(kind: FaultKind) -> anyhow::Result<()> {
    let (dir, subscriber, truth) = run_with_fault(kind).await?;
    truth_csv_matches(dir.path(), &truth, kind)?;
    let faulty = subscriber.readings(1);
    let clean = subscriber.readings(0);
    assert_eq!(sequences(&clean), (1..=INTERVALS).collect::<Vec<_>>(), "meter 0 is unaffected");
    assert!(clean.iter().all(|(_, signed)| signed.as_ref().is_some_and(|s| verifies(s, 0))));
    let record = truth.records.iter().find(|r| r.meter == 1 && r.sequence == 3).context("truth record")?;
    assert_eq!(record.fault, Some(kind), "the ground truth names the fault");
    assert!(truth.records.iter().filter(|r| r.meter == 0).all(|r| r.fault.is_none()));
    let at = |sequence: u64| -> Vec<&SignedReading> {
        faulty.iter().filter_map(|(_, s)| s.as_ref()).filter(|s| s.reading().sequence.0 == sequence).collect()
    };
    let stored = truth.fleet.stored_reading(1, 3);
    match kind {
        FaultKind::BitFlip => {
            let on_wire: Vec<&Envelope> = faulty.iter().map(|(envelope, _)| envelope).collect();
            let original = hex::encode(stored.bytes());
            assert!(!on_wire.iter().any(|e| e.reading == original), "the intact reading is not sent live");
            let flipped = on_wire
                .iter()
                .map(|e| hex::decode(&e.reading).expect("hex"))
                .find(|bytes| {
                    bytes.len() == stored.bytes().len()
                        && bytes.iter().zip(stored.bytes()).map(|(a, b)| (a ^ b).count_ones()).sum::<u32>() == 1
                })
                .context("a message differing from the stored reading in exactly one bit")?;
            if let Ok(signed) = SignedReading::from_parts(flipped, *stored.signature()) {
                assert!(!verifies(&signed, 1), "a flipped bit breaks the signature");
            }
        }
        FaultKind::WrongKey => {
            let sent = at(3);
            assert_eq!(sent.len(), 1);
            assert_eq!(sent[0].bytes(), stored.bytes());
            assert!(!verifies(sent[0], 1), "signed by another key");
        }
        FaultKind::Equivocation => {
            let sent = at(3);
            assert_eq!(sent.len(), 2);
            assert_ne!(sent[0].bytes(), sent[1].bytes());
            assert!(sent.iter().all(|s| verifies(s, 1)), "both validly signed");
        }
        FaultKind::Duplicate => {
            let sent = at(3);
            assert_eq!(sent.len(), 2);
            assert_eq!(sent[0], sent[1]);
        }
        FaultKind::SequenceGap => {
            assert!(at(3).is_empty());
            assert_eq!(at(2).len(), 1);
            assert_eq!(at(4).len(), 1);
        }
        FaultKind::ClockSkew => {
            for sequence in 1..=INTERVALS {
                let sent = at(sequence);
                let skew = sent[0].reading().interval_start.0 - truth.fleet.interval_start(sequence).0;
                assert_eq!(skew, if sequence >= 3 { 420 } else { 0 }, "sequence {sequence}");
            }
        }
        FaultKind::UnsyncedClock => {
            for sequence in 1..=INTERVALS {
                let expected =
                    if (3..7).contains(&sequence) { ClockStatus::Unsynchronized } else { ClockStatus::Synchronized };
                assert_eq!(at(sequence)[0].reading().clock_status, expected, "sequence {sequence}");
            }
        }
        FaultKind::CounterReset => {
            let reading = at(3)[0].reading();
            assert_eq!(reading.import_start_wh, 0);
            assert!(reading.status.contains(StatusFlags::REGISTER_RESET));
            assert_eq!(at(4)[0].reading().import_start_wh, reading.import_end_wh);
        }
        FaultKind::Rollover => {
            let reading = at(3)[0].reading();
            assert!(reading.import_end_wh < reading.import_start_wh, "{reading:?}");
            assert_eq!(reading.import_energy().0, record.import_wh, "energy across the rollover is what was measured");
        }
        FaultKind::ImpossibleJump => {
            let reading = at(3)[0].reading();
            assert!(reading.import_energy().0 >= 50_000_000, "{reading:?}");
            assert!(record.import_wh < 10_000, "the meter measured a household's energy");
        }
        FaultKind::Offline => {
            // Sequences 3..=6 arrive only at sequence 7, after meter 0's sequence 6.
            assert_eq!(sequences(&faulty), (1..=INTERVALS).collect::<Vec<_>>(), "backlog sent in order");
            let messages = subscriber.messages();
            let position = |meter: u32, sequence: u64| {
                let topic = format!("wattle/v1/site-0/{}/reading", meter_id(meter));
                messages.iter().position(|m| {
                    m.topic == topic
                        && serde_json::from_str::<Envelope>(&m.payload)
                            .ok()
                            .and_then(|e| e.open().ok())
                            .is_some_and(|s| s.reading().sequence.0 == sequence)
                })
            };
            assert!(position(1, 3) > position(0, 6), "the backlog arrives after the meter comes back");
        }
    }
    Ok(())
}

macro_rules! fault_tests {
    ($($name:ident => $kind:expr),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() -> anyhow::Result<()> {
            fault_is_visible($kind).await
        }
    )*};
}

fault_tests! {
    fault_bit_flip_is_on_the_wire => FaultKind::BitFlip,
    fault_wrong_key_is_on_the_wire => FaultKind::WrongKey,
    fault_equivocation_is_on_the_wire => FaultKind::Equivocation,
    fault_duplicate_is_on_the_wire => FaultKind::Duplicate,
    fault_sequence_gap_is_on_the_wire => FaultKind::SequenceGap,
    fault_clock_skew_is_on_the_wire => FaultKind::ClockSkew,
    fault_unsynced_clock_is_on_the_wire => FaultKind::UnsyncedClock,
    fault_counter_reset_is_on_the_wire => FaultKind::CounterReset,
    fault_rollover_is_on_the_wire => FaultKind::Rollover,
    fault_impossible_jump_is_on_the_wire => FaultKind::ImpossibleJump,
    fault_offline_is_on_the_wire => FaultKind::Offline,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_births_wills_and_backfill_on_the_documented_topics() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(dir.path(), "").await?;
    let subscriber = Subscriber::start(dir.path(), broker.port).await?;
    // A long run, so the fleet is still there to answer the backfill command.
    let mut sim = Process::spawn("sim", dir.path(), sim_command(dir.path(), broker.port, 10_000, &[]))?;
    poll_until("three readings of meter 1", Duration::from_secs(30), || {
        let count = subscriber.readings(1).len();
        async move { (count >= 3).then_some(()) }
    })
    .await?;
    let messages = subscriber.messages();
    for meter in 0..METERS {
        let birth = messages
            .iter()
            .find(|m| m.topic == format!("wattle/v1/site-0/{}/birth", meter_id(meter)))
            .context("birth message")?;
        let birth: firmware_sim::Birth = serde_json::from_str(&birth.payload)?;
        assert_eq!(birth.public_key, hex::encode(meter_key(5, meter).verifying_key().to_bytes()));
        assert_eq!(birth.interval_s, 900);
    }
    let online = messages.iter().find(|m| m.topic == "wattle/v1/site-0/connection/0/state").context("online state")?;
    assert!(online.payload.contains("\"online\":true"), "{}", online.payload);

    let originals: Vec<Envelope> = subscriber.readings(1).into_iter().take(3).map(|(envelope, _)| envelope).collect();
    assert!(originals.iter().all(|e| !e.backfill));
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1"])
        .args(["-t", &format!("wattle/v1/site-0/{}/cmd/backfill", meter_id(1)), "-m", r#"{"from":1,"to":3}"#])
        .status()?;
    anyhow::ensure!(status.success());
    let backfilled = poll_until("backfilled readings", Duration::from_secs(20), || {
        let answered: Vec<Envelope> =
            subscriber.readings(1).into_iter().map(|(envelope, _)| envelope).filter(|e| e.backfill).collect();
        async move { (answered.len() >= 3).then_some(answered) }
    })
    .await?;
    for (original, again) in originals.iter().zip(&backfilled) {
        assert_eq!(original.reading, again.reading, "backfill re-sends the same signed bytes");
        assert_eq!(original.signature, again.signature);
    }

    // Killed without a DISCONNECT: the broker publishes the connection's last will.
    drop(sim.kill());
    poll_until("last will published", Duration::from_secs(60), || {
        let offline = subscriber
            .messages()
            .iter()
            .any(|m| m.topic == "wattle/v1/site-0/connection/0/state" && m.payload.contains("\"online\":false"));
        async move { offline.then_some(()) }
    })
    .await?;
    Ok(())
}
