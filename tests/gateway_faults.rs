//! What the gateway and the ledger make of each fault kind of the simulator (the wire side is in
//! `fleet.rs`). One shared run — mosquitto, a ledger node, the gateway and the fleet as real
//! processes — gives each fault kind a meter of its own beside clean meters; it runs once, until
//! the outbox is empty and no sequence is missing, and leaves behind what the ledger committed,
//! what the gateway quarantined and its counters. Then one test per kind checks its meter: which
//! of its readings the ledger holds (each exactly once, identified by the digest of the bytes the
//! meter signed), its quarantine entries with their reasons, and the counters it moved.
//! docs/mqtt.md's fault table states the same outcomes.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use domain::reading::{ClockStatus, Envelope, SignedReading, StatusFlags};
use firmware_sim::faults::ALL_FAULTS;
use firmware_sim::{FaultKind, Truth};

use crate::support::{
    clock_args, complete_truth, configure_ledger, get_json, ledger_readings, log_tails, metrics, poll_until,
    spawn_sim_with, start_gateway, start_single_ledger, LedgerReading, Mosquitto, CLUSTER_SERIAL,
};

/// Meter `i` has fault `ALL_FAULTS[i]`; then `JUMP_BY_BACKFILL`; the rest are clean.
const METERS: u32 = ALL_FAULTS.len() as u32 + 3;
/// An impossible jump that is not sent live (a sequence gap too), so it arrives by backfill.
const JUMP_BY_BACKFILL: u32 = ALL_FAULTS.len() as u32;
const CLEAN: [u32; 2] = [JUMP_BY_BACKFILL + 1, JUMP_BY_BACKFILL + 2];
/// Every fault starts at this sequence; offline and unsynced-clock last 4 intervals (to 8).
const FAULT_AT: u64 = 5;
/// Enough intervals after the faults that every gap is revealed by a later reading.
const INTERVALS: u64 = 12;
const SEED: u64 = 31;
const PRICE: &str = "0.25";
const EPOCH: &str = "2026-09-01T00:00:00Z";
/// 900 s intervals at 3,600x: four intervals a second.
const SPEED: u32 = 3_600;
/// The default clock-skew fault shifts intervals by this much.
const SKEW_S: i64 = 420;

fn meter_of(kind: FaultKind) -> u32 {
    u32::from(kind.code()) - 1
}

/// Sequences of a meter that must not reach the ledger: the impossible jumps.
fn absent(meter: u32) -> &'static [u64] {
    if meter == meter_of(FaultKind::ImpossibleJump) || meter == JUMP_BY_BACKFILL {
        &[FAULT_AT]
    } else {
        &[]
    }
}

/// What the shared run left behind once it settled (its processes are stopped by then).
struct Outcome {
    truth: Truth,
    /// The readings the ledger logged, in log order, with their results.
    ledger: Vec<LedgerReading>,
    /// Per meter, from its customer's ledger account: energy imported (Wh), intervals settled.
    accounts: BTreeMap<u32, (u64, u64)>,
    /// The gateway's quarantine, oldest first.
    quarantine: Vec<serde_json::Value>,
    /// The gateway's counters.
    metrics: BTreeMap<String, u64>,
    /// Why the run did not settle within its deadline, if it did not.
    unsettled: Option<String>,
    /// Log tails of the processes, for failure messages.
    logs: String,
}

static OUTCOME: tokio::sync::OnceCell<Result<Outcome, String>> = tokio::sync::OnceCell::const_new();

/// The shared run's outcome: the first test to ask runs it, the others wait for it. Its processes
/// live and die inside `run`, so nothing outlives it whichever test's runtime drove it.
async fn outcome() -> anyhow::Result<&'static Outcome> {
    let result = OUTCOME.get_or_init(|| async { run().await.map_err(|error| format!("{error:#}")) }).await;
    result.as_ref().map_err(|error| anyhow::anyhow!("the shared fault run failed: {error}"))
}

async fn run() -> anyhow::Result<Outcome> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let clock = clock_args(EPOCH, SPEED, domain::clock::wall_clock_now().0);
    configure_ledger(dir.path(), METERS, SEED, PRICE)?;
    let (mut ledger, ledger_url) = start_single_ledger(dir.path(), &clock).await?;
    let broker = Mosquitto::start(dir.path(), "").await?;
    let (mut gateway, gateway_url) =
        start_gateway(dir.path(), "gw-faults", broker.port, std::slice::from_ref(&ledger_url), &clock).await?;
    let mut faults: Vec<(FaultKind, u32)> = ALL_FAULTS.iter().map(|kind| (*kind, meter_of(*kind))).collect();
    faults.extend([(FaultKind::ImpossibleJump, JUMP_BY_BACKFILL), (FaultKind::SequenceGap, JUMP_BY_BACKFILL)]);
    let mut extra: Vec<String> =
        faults.iter().flat_map(|(kind, meter)| ["--fault".to_string(), format!("{kind}@{meter}:{FAULT_AT}")]).collect();
    // The fleet keeps answering backfill after its last interval; it is stopped when settled.
    extra.extend(["--linger-s".to_string(), "300".to_string()]);
    let sim = spawn_sim_with(dir.path(), broker.port, (METERS, SEED, INTERVALS), EPOCH, &clock, &extra)?;
    let truth =
        complete_truth(dir.path(), METERS, INTERVALS).await.with_context(|| log_tails(&[&gateway, &ledger, &sim]))?;

    // Settled: nothing waits in the outbox, no sequence is missing, and every meter has at least
    // the readings it should have in the ledger (more would fail the tests below).
    let settled = poll_until("the run settled", Duration::from_secs(60), || {
        let http = http.clone();
        let (gateway_url, ledger_url) = (gateway_url.clone(), ledger_url.clone());
        async move {
            let counters = metrics(&http, &gateway_url).await?;
            if counters.get("wattle_gateway_outbox_depth") != Some(&0)
                || counters.get("wattle_gateway_gap_sequences_open") != Some(&0)
            {
                return None;
            }
            for meter in 0..METERS {
                let account = customer_account(&http, &ledger_url, meter).await?;
                if account.1 < INTERVALS - absent(meter).len() as u64 {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    let unsettled = settled.err().map(|error| format!("{error:#}"));

    let ledger_readings = ledger_readings(&http, &ledger_url).await.context("the ledger's readings")?;
    let mut accounts = BTreeMap::new();
    for meter in 0..METERS {
        accounts.insert(meter, customer_account(&http, &ledger_url, meter).await.context("an account")?);
    }
    let operator = crate::support::gateway_client(dir.path())?;
    let mut quarantine = Vec::new();
    loop {
        let from = quarantine.last().and_then(|entry: &serde_json::Value| entry["id"].as_u64()).map_or(0, |id| id + 1);
        let page =
            get_json(&operator, &format!("{gateway_url}/v1/quarantine?from={from}")).await.context("quarantine")?;
        let entries = page["entries"].as_array().context("quarantine entries")?;
        if entries.is_empty() {
            break;
        }
        quarantine.extend(entries.iter().cloned());
    }
    let counters = metrics(&http, &gateway_url).await.context("the gateway's metrics")?;
    for process in [&mut gateway, &mut ledger] {
        anyhow::ensure!(process.try_wait().is_none(), "{} exited during the run", process.name);
    }
    let logs = log_tails(&[&gateway, &ledger, &sim]);
    Ok(Outcome { truth, ledger: ledger_readings, accounts, quarantine, metrics: counters, unsettled, logs })
}

/// A meter's customer account in the ledger: (energy imported in Wh, intervals settled).
async fn customer_account(http: &reqwest::Client, ledger_url: &str, meter: u32) -> Option<(u64, u64)> {
    let customer = firmware_sim::customer_id(meter);
    let account = get_json(http, &format!("{ledger_url}/v1/customers/{customer}/account")).await?;
    Some((account["energy_import_wh"].as_u64()?, account["intervals_settled"].as_u64()?))
}

impl Outcome {
    /// What the meter stores (and re-sends on backfill) for `sequence`.
    fn stored(&self, meter: u32, sequence: u64) -> SignedReading {
        self.truth.fleet.stored_reading(meter, sequence)
    }

    /// What the meter sent live for `sequence`.
    fn on_the_wire(&self, meter: u32, sequence: u64) -> Vec<Envelope> {
        let fleet = &self.truth.fleet;
        let stored = self.stored(meter, sequence);
        fleet
            .emissions(meter, &stored, |earlier| fleet.stored_reading(meter, earlier))
            .into_iter()
            .map(|e| e.envelope)
            .collect()
    }

    /// The readings the ledger settled, in log order.
    fn settled(&self) -> impl Iterator<Item = &LedgerReading> {
        self.ledger.iter().filter(|reading| reading.result == "accepted")
    }

    /// How often the ledger settled the reading with this digest.
    fn in_ledger(&self, digest: &str) -> usize {
        self.settled().filter(|reading| reading.digest == digest).count()
    }

    /// The meter's quarantine entries: (reason, digest).
    fn quarantined(&self, meter: u32) -> Vec<(String, String)> {
        let topic = firmware_sim::reading_topic("site-0", &firmware_sim::meter_id(meter));
        self.quarantine
            .iter()
            .filter(|entry| entry["source"] == topic.as_str())
            .map(|entry| {
                (
                    entry["reason"].as_str().unwrap_or("?").to_string(),
                    entry["digest"].as_str().unwrap_or("-").to_string(),
                )
            })
            .collect()
    }

    /// A gateway counter (0 if it was never reported).
    fn counter(&self, name: &str) -> u64 {
        self.metrics.get(name).copied().unwrap_or(0)
    }

    fn rejected(&self, reason: &str) -> u64 {
        self.counter(&format!("wattle_gateway_readings_rejected_total{{reason=\"{reason}\"}}"))
    }

    /// What the run left for `meter`, for failure messages.
    fn describe(&self, meter: u32) -> String {
        let sequences: Vec<String> = (1..=INTERVALS)
            .map(|sequence| {
                format!("{sequence}:{}", self.in_ledger(&self.stored(meter, sequence).digest().to_string()))
            })
            .collect();
        format!(
            "meter {meter}: ledger copies per sequence [{}]; account {:?}; quarantine {:?}\nunsettled: {:?}\n\
             gateway metrics: {:?}\n{}",
            sequences.join(" "),
            self.accounts.get(&meter),
            self.quarantined(meter),
            self.unsettled,
            self.metrics,
            self.logs
        )
    }

    /// The ledger holds each of the meter's readings exactly once, as the meter signed it,
    /// except the `absent` sequences, which it does not hold at all; the meter's account carries
    /// exactly the energy the meter measured over the readings held.
    fn assert_ledger_holds(&self, meter: u32) {
        let absent = absent(meter);
        for sequence in 1..=INTERVALS {
            let copies = self.in_ledger(&self.stored(meter, sequence).digest().to_string());
            let expected = usize::from(!absent.contains(&sequence));
            assert_eq!(copies, expected, "sequence {sequence} in the ledger\n{}", self.describe(meter));
        }
        let measured_wh: u64 = self
            .truth
            .records
            .iter()
            .filter(|record| record.meter == meter && !absent.contains(&record.sequence))
            .map(|record| record.import_wh)
            .sum();
        let settled = INTERVALS - absent.len() as u64;
        assert_eq!(self.accounts.get(&meter), Some(&(measured_wh, settled)), "account\n{}", self.describe(meter));
    }

    /// The gaps of the run: the sequences of bit-flip, wrong-key, sequence-gap and the jump by
    /// backfill went missing; three were filled by backfill, the jump closed as quarantined.
    fn assert_gaps(&self) {
        let gaps = [
            ("wattle_gateway_gap_sequences_opened_total", 4),
            ("wattle_gateway_gap_sequences_filled_total", 3),
            ("wattle_gateway_gap_sequences_quarantined_total", 1),
            ("wattle_gateway_gap_sequences_unfilled_total", 0),
            ("wattle_gateway_gap_sequences_open", 0),
        ];
        for (name, value) in gaps {
            assert_eq!(self.counter(name), value, "{name}\n{}", self.describe(0));
        }
        assert!(self.counter("wattle_gateway_backfill_requests_total") >= 1, "{}", self.describe(0));
    }
}

/// The flipped copy fails the signature check and is quarantined; its sequence is a gap, filled
/// by backfill with the intact reading, which the ledger holds once.
#[tokio::test]
async fn bit_flip_is_quarantined_and_the_intact_reading_backfilled() -> anyhow::Result<()> {
    let run = outcome().await?;
    let meter = meter_of(FaultKind::BitFlip);
    let wire = run.on_the_wire(meter, FAULT_AT);
    assert_eq!(wire.len(), 1);
    // The flip lands in a field that still decodes, so only the signature can catch it.
    let flipped = wire[0].open().context("the flipped reading decodes")?;
    assert_ne!(flipped.bytes(), run.stored(meter, FAULT_AT).bytes());
    let flipped_digest = flipped.digest().to_string();
    assert_eq!(
        run.quarantined(meter),
        [("bad_signature".to_string(), flipped_digest.clone())],
        "{}",
        run.describe(meter)
    );
    assert_eq!(run.in_ledger(&flipped_digest), 0);
    run.assert_ledger_holds(meter);
    run.assert_gaps();
    Ok(())
}

/// Signed with a key that is not the meter's: quarantined as `bad_signature` (the bytes are the
/// meter's true reading, so its digest is the true one); the meter's own signature comes by
/// backfill, and the ledger holds it once.
#[tokio::test]
async fn wrong_key_is_quarantined_and_the_true_reading_backfilled() -> anyhow::Result<()> {
    let run = outcome().await?;
    let meter = meter_of(FaultKind::WrongKey);
    let stored = run.stored(meter, FAULT_AT);
    let wire = run.on_the_wire(meter, FAULT_AT);
    assert_eq!(wire.len(), 1);
    assert_ne!(wire[0].signature, hex::encode(stored.signature()), "another key signed it");
    let digest = stored.digest().to_string();
    assert_eq!(run.quarantined(meter), [("bad_signature".to_string(), digest)], "{}", run.describe(meter));
    assert_eq!(run.rejected("bad_signature"), 2, "bit-flip and wrong-key\n{}", run.describe(meter));
    run.assert_ledger_holds(meter);
    run.assert_gaps();
    Ok(())
}

/// The first reading of the sequence is accepted; the second, validly signed with other bytes,
/// is quarantined as `equivocation` and never reaches the ledger.
#[tokio::test]
async fn equivocation_keeps_the_first_reading_and_quarantines_the_second() -> anyhow::Result<()> {
    let run = outcome().await?;
    let meter = meter_of(FaultKind::Equivocation);
    let wire = run.on_the_wire(meter, FAULT_AT);
    assert_eq!(wire.len(), 2);
    let first = wire[0].open()?;
    let second = wire[1].open()?;
    assert_eq!(first, run.stored(meter, FAULT_AT));
    assert_eq!(second.reading().sequence, first.reading().sequence);
    let second_digest = second.digest().to_string();
    assert_eq!(
        run.quarantined(meter),
        [("equivocation".to_string(), second_digest.clone())],
        "{}",
        run.describe(meter)
    );
    assert_eq!(run.in_ledger(&second_digest), 0);
    assert_eq!(run.rejected("equivocation"), 1);
    run.assert_ledger_holds(meter);
    Ok(())
}

/// The second copy is dropped at the gateway and counted; nothing is quarantined and the ledger
/// never sees the copy.
#[tokio::test]
async fn duplicate_is_dropped_and_counted() -> anyhow::Result<()> {
    let run = outcome().await?;
    let meter = meter_of(FaultKind::Duplicate);
    let wire = run.on_the_wire(meter, FAULT_AT);
    assert_eq!(wire.len(), 2);
    assert_eq!(wire[0], wire[1]);
    assert_eq!(run.quarantined(meter), [], "{}", run.describe(meter));
    assert_eq!(run.counter("wattle_gateway_duplicates_dropped_total"), 1, "{}", run.describe(meter));
    assert_eq!(run.counter("wattle_gateway_duplicates_total"), 0, "the ledger was not asked twice");
    run.assert_ledger_holds(meter);
    Ok(())
}

/// Nothing is sent live for the sequence: the next reading reveals the gap, backfill fills it.
#[tokio::test]
async fn sequence_gap_is_filled_by_backfill() -> anyhow::Result<()> {
    let run = outcome().await?;
    let meter = meter_of(FaultKind::SequenceGap);
    assert_eq!(run.on_the_wire(meter, FAULT_AT), []);
    assert_eq!(run.quarantined(meter), [], "{}", run.describe(meter));
    run.assert_ledger_holds(meter);
    run.assert_gaps();
    Ok(())
}

/// A clock 420 s ahead (inside the gateway's window) is not corrected: every reading from the
/// fault on reaches the ledger with the interval the meter signed, shifted by 420 s.
#[tokio::test]
async fn clock_skew_is_accepted_with_its_own_interval() -> anyhow::Result<()> {
    let run = outcome().await?;
    let meter = meter_of(FaultKind::ClockSkew);
    for sequence in 1..=INTERVALS {
        let reading = run.stored(meter, sequence);
        let skew = if sequence >= FAULT_AT { SKEW_S } else { 0 };
        assert_eq!(reading.reading().interval_start.0, run.truth.fleet.interval_start(sequence).0 + skew);
    }
    assert_eq!(run.quarantined(meter), [], "{}", run.describe(meter));
    // The digests cover the interval: the ledger holds the shifted intervals, none moved back.
    run.assert_ledger_holds(meter);
    Ok(())
}

/// Readings with an unsynchronised clock are accepted; the status travels in the signed bytes the
/// ledger holds.
#[tokio::test]
async fn unsynced_clock_is_accepted_with_its_clock_status() -> anyhow::Result<()> {
    let run = outcome().await?;
    let meter = meter_of(FaultKind::UnsyncedClock);
    let unsynced = FAULT_AT..FAULT_AT + 4;
    for sequence in 1..=INTERVALS {
        let expected =
            if unsynced.contains(&sequence) { ClockStatus::Unsynchronized } else { ClockStatus::Synchronized };
        assert_eq!(run.stored(meter, sequence).reading().clock_status, expected, "sequence {sequence}");
    }
    assert_eq!(run.quarantined(meter), [], "{}", run.describe(meter));
    run.assert_ledger_holds(meter);
    Ok(())
}

/// Registers restarting at zero with the reset flag are accepted, and the energy settled is what
/// the meter measured.
#[tokio::test]
async fn counter_reset_is_accepted_with_the_measured_energy() -> anyhow::Result<()> {
    let run = outcome().await?;
    let meter = meter_of(FaultKind::CounterReset);
    let reset = run.stored(meter, FAULT_AT);
    assert!(reset.reading().status.contains(StatusFlags::REGISTER_RESET));
    assert_eq!(reset.reading().import_start_wh, 0);
    assert!(run.stored(meter, FAULT_AT - 1).reading().import_end_wh > reset.reading().import_end_wh);
    assert_eq!(run.quarantined(meter), [], "{}", run.describe(meter));
    run.assert_ledger_holds(meter);
    Ok(())
}

/// The import register passes its modulus: accepted, and the energy is what was measured across
/// the modulus, not a negative or huge difference.
#[tokio::test]
async fn rollover_is_accepted_with_the_energy_across_the_modulus() -> anyhow::Result<()> {
    let run = outcome().await?;
    let meter = meter_of(FaultKind::Rollover);
    let rollover = run.stored(meter, FAULT_AT);
    assert!(rollover.reading().import_end_wh < rollover.reading().import_start_wh, "{:?}", rollover.reading());
    assert_eq!(run.quarantined(meter), [], "{}", run.describe(meter));
    run.assert_ledger_holds(meter);
    Ok(())
}

/// A validly signed reading with more energy than the connection can carry is quarantined once as
/// `implausible_energy` and never reaches the ledger. Its sequence is settled as quarantined, not
/// treated as a gap: asking the meter again would only bring the same signed bytes. The readings
/// after it (whose registers continue from the jump) are accepted with their measured energy.
#[tokio::test]
async fn impossible_jump_is_quarantined_once_and_the_following_readings_accepted() -> anyhow::Result<()> {
    let run = outcome().await?;
    let meter = meter_of(FaultKind::ImpossibleJump);
    let jump = run.stored(meter, FAULT_AT);
    assert_eq!(run.on_the_wire(meter, FAULT_AT), [jump.to_envelope(false)]);
    assert_eq!(run.stored(meter, FAULT_AT + 1).reading().import_start_wh, jump.reading().import_end_wh);
    let expected = [("implausible_energy".to_string(), jump.digest().to_string())];
    assert_eq!(run.quarantined(meter), expected, "{}", run.describe(meter));
    run.assert_ledger_holds(meter);
    // Never asked for: the run's only gaps are the other faults' (see `assert_gaps`).
    run.assert_gaps();
    Ok(())
}

/// The same jump, missed live and brought by backfill: quarantined once, and its gap closed as
/// quarantined (not asked for again, not reported unfilled).
#[tokio::test]
async fn impossible_jump_arriving_by_backfill_closes_its_gap_as_quarantined() -> anyhow::Result<()> {
    let run = outcome().await?;
    let meter = JUMP_BY_BACKFILL;
    assert_eq!(run.on_the_wire(meter, FAULT_AT), []);
    let expected = [("implausible_energy".to_string(), run.stored(meter, FAULT_AT).digest().to_string())];
    assert_eq!(run.quarantined(meter), expected, "{}", run.describe(meter));
    assert_eq!(run.rejected("implausible_energy"), 2, "{}", run.describe(meter));
    run.assert_ledger_holds(meter);
    run.assert_gaps();
    Ok(())
}

/// Offline for four intervals, the meter sends its backlog when it returns: every reading is
/// accepted once, and the ledger committed them in sequence order (no gap was opened for them).
#[tokio::test]
async fn offline_backlog_is_accepted_once_in_order() -> anyhow::Result<()> {
    let run = outcome().await?;
    let meter = meter_of(FaultKind::Offline);
    for sequence in FAULT_AT..FAULT_AT + 4 {
        assert_eq!(run.on_the_wire(meter, sequence), [], "offline at {sequence}");
    }
    let back: Vec<u64> = run
        .on_the_wire(meter, FAULT_AT + 4)
        .iter()
        .map(|envelope| envelope.open().map(|signed| signed.reading().sequence.0))
        .collect::<Result<_, _>>()?;
    assert_eq!(back, (FAULT_AT..=FAULT_AT + 4).collect::<Vec<_>>(), "the backlog, then the current reading");
    assert_eq!(run.quarantined(meter), [], "{}", run.describe(meter));
    run.assert_ledger_holds(meter);
    let positions: Vec<usize> = (1..=INTERVALS)
        .map(|sequence| {
            let digest = run.stored(meter, sequence).digest().to_string();
            run.settled().position(|reading| reading.digest == digest).unwrap_or(usize::MAX)
        })
        .collect();
    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "commit order {positions:?}\n{}", run.describe(meter));
    run.assert_gaps();
    Ok(())
}

/// The run as a whole: it settled; clean meters are untouched; the ledger holds nothing but the
/// readings the per-kind tests expect, none twice; the quarantine holds only the faults' entries.
#[tokio::test]
async fn clean_meters_are_untouched_and_nothing_else_reaches_the_ledger() -> anyhow::Result<()> {
    let run = outcome().await?;
    assert_eq!(run.unsettled, None, "{}", run.describe(0));
    for meter in CLEAN {
        assert_eq!(run.quarantined(meter), [], "{}", run.describe(meter));
        run.assert_ledger_holds(meter);
    }
    let expected: usize = (0..METERS).map(|meter| INTERVALS as usize - absent(meter).len()).sum();
    assert_eq!(run.settled().count(), expected, "the ledger holds exactly the expected readings\n{}", run.describe(0));
    let unsettled: Vec<&LedgerReading> = run.ledger.iter().filter(|reading| reading.result != "accepted").collect();
    assert_eq!(unsettled, Vec::<&LedgerReading>::new(), "the gateway sent the ledger nothing to refuse");
    let quarantined_meters: Vec<u32> = (0..METERS).filter(|meter| !run.quarantined(*meter).is_empty()).collect();
    let faulty = [FaultKind::BitFlip, FaultKind::WrongKey, FaultKind::Equivocation, FaultKind::ImpossibleJump];
    let mut expected_meters: Vec<u32> = faulty.iter().map(|kind| meter_of(*kind)).collect();
    expected_meters.push(JUMP_BY_BACKFILL);
    expected_meters.sort_unstable();
    assert_eq!(quarantined_meters, expected_meters, "{}", run.describe(0));
    assert_eq!(
        run.quarantine.len(),
        expected_meters.len(),
        "one entry each, none from the ledger\n{}",
        run.describe(0)
    );
    let rejected: BTreeMap<&str, u64> = run
        .metrics
        .iter()
        .filter_map(|(name, value)| {
            let reason = name.strip_prefix("wattle_gateway_readings_rejected_total{reason=\"")?.strip_suffix("\"}")?;
            Some((reason, *value))
        })
        .collect();
    let expected_rejected = BTreeMap::from([("bad_signature", 2), ("equivocation", 1), ("implausible_energy", 2)]);
    assert_eq!(rejected, expected_rejected, "{}", run.describe(0));
    Ok(())
}
