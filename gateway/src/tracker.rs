//! Per-meter sequence and register tracking, sans-IO (DESIGN.md, "duplicates, replays, backfill,
//! gaps"): a duplicate is dropped and counted, an equivocation rejected, a sequence past the next
//! one opens a gap (asked for again on the meter's backfill topic), a sequence inside a gap fills
//! it. Registers never go backwards unless the meter reports a reset; the energy of one interval
//! must be physically possible; the interval must not end in the future beyond a window. A
//! skewed or unsynced clock is never corrected: the reading keeps its own interval and flags.
//! A reading its meter signed that fails one of those checks still settles its sequence: the meter
//! would only send the same signed bytes again, so its sequence is neither a gap nor asked for. A
//! gateway-attested reading that fails leaves its sequence open: the gateway attests it again.

use std::collections::BTreeMap;
use std::sync::Mutex;

use domain::codec::{DecodeError, Reader, Writer};
use domain::ids::MeterId;
use domain::reading::{Reading, ReadingDigest, StatusFlags};

/// Most missing sequences tracked per meter; a larger hole is reported unfillable at once.
pub const MISSING_PER_METER_MAX: u64 = 4_096 * 4;

/// What the gateway remembers of one meter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeterState {
    /// The site from the meter's topic (backfill commands go to its site's topic).
    pub site: String,
    /// Highest sequence accepted (0: none yet).
    pub highest: u64,
    /// Register values at the end of the highest accepted reading.
    pub import_end_wh: u64,
    pub export_end_wh: u64,
    /// Missing sequences, as sorted disjoint inclusive ranges.
    pub missing: Vec<(u64, u64)>,
    /// Backfill requests sent for the current missing ranges.
    pub requests: u32,
    /// End of the highest settled reading's interval (Unix seconds; 0 before the first): where
    /// the next gateway-attested reading of an unsigned meter starts.
    pub interval_end_s: i64,
}

impl MeterState {
    pub fn missing_count(&self) -> u64 {
        self.missing.iter().map(|(from, to)| to - from + 1).sum()
    }

    fn remove_missing(&mut self, sequence: u64) -> bool {
        let Some(position) = self.missing.iter().position(|&(from, to)| from <= sequence && sequence <= to) else {
            return false;
        };
        let (from, to) = self.missing[position];
        self.missing.remove(position);
        if sequence < to {
            self.missing.insert(position, (sequence + 1, to));
        }
        if from < sequence {
            self.missing.insert(position, (from, sequence - 1));
        }
        if self.missing.is_empty() {
            self.requests = 0;
        }
        true
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::new();
        writer
            .short_bytes(self.site.as_bytes())
            .u64(self.highest)
            .u64(self.import_end_wh)
            .u64(self.export_end_wh)
            .u32(self.requests)
            .u32(self.missing.len() as u32);
        for &(from, to) in &self.missing {
            writer.u64(from).u64(to);
        }
        writer.i64(self.interval_end_s);
        writer.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let site =
            String::from_utf8(reader.short_bytes()?.to_vec()).map_err(|_| DecodeError::invalid("site", "not UTF-8"))?;
        let highest = reader.u64()?;
        let import_end_wh = reader.u64()?;
        let export_end_wh = reader.u64()?;
        let requests = reader.u32()?;
        let count = reader.u32()? as usize;
        if count > reader.remaining() / 16 {
            return Err(DecodeError::invalid("missing", "count exceeds bytes"));
        }
        let missing: Vec<(u64, u64)> =
            (0..count).map(|_| Ok((reader.u64()?, reader.u64()?))).collect::<Result<_, DecodeError>>()?;
        // Sorted, disjoint, non-empty ranges above 0 and below the highest sequence: what `settle`
        // and `missing_count` rely on.
        let mut floor = 0u64;
        for &(from, to) in &missing {
            if from <= floor || to < from || to >= highest {
                return Err(DecodeError::invalid("missing", "ranges not sorted, disjoint and below the highest"));
            }
            floor = to;
        }
        // States written before the field existed end here.
        let interval_end_s = if reader.remaining() > 0 { reader.i64()? } else { 0 };
        reader.finish()?;
        Ok(MeterState { site, highest, import_end_wh, export_end_wh, missing, requests, interval_end_s })
    }
}

/// Per-meter states changed by one batch, kept as copies: the shared states change only once the
/// batch is durable ([`commit_durably`]), so a failed write leaves memory as it was on disk.
#[derive(Debug, Default)]
pub struct Staged {
    changed: BTreeMap<MeterId, MeterState>,
}

impl Staged {
    /// The meter's state for this batch: its staged copy, made from `base` on first use.
    pub fn state(&mut self, base: &Mutex<BTreeMap<MeterId, MeterState>>, meter: &MeterId) -> &mut MeterState {
        self.changed.entry(meter.clone()).or_insert_with(|| {
            base.lock().expect("tracker lock is never poisoned").get(meter).cloned().unwrap_or_default()
        })
    }

    /// Whether no meter is staged.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty()
    }

    /// Keeps only the meters whose state `keep` says changed.
    pub fn retain(&mut self, mut keep: impl FnMut(&MeterId) -> bool) {
        self.changed.retain(|meter, _| keep(meter));
    }

    /// The staged states, to write with the batch.
    pub fn changes(&self) -> Vec<(MeterId, MeterState)> {
        self.changed.iter().map(|(meter, state)| (meter.clone(), state.clone())).collect()
    }
}

/// Writes the staged states with `write` (the batch's one durable write) and installs them in
/// `tracker` only if it succeeded. Callers serialise: one batch is staged and committed at a time.
pub fn commit_durably<E>(
    tracker: &Mutex<BTreeMap<MeterId, MeterState>>,
    staged: Staged,
    write: impl FnOnce(Vec<(MeterId, MeterState)>) -> Result<(), E>,
) -> Result<(), E> {
    write(staged.changes())?;
    tracker.lock().expect("tracker lock is never poisoned").extend(staged.changed);
    Ok(())
}

/// The configured limits of the checks.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest power a metering point can carry (W): a reading may hold at most this power
    /// times its interval's length.
    pub max_power_w: u64,
    /// How far past the gateway's clock an interval may end.
    pub clock_ahead_s_max: i64,
}

/// The fate of one verified reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Store and forward it. `gap_opened`: sequences newly found missing; `filled`: it was one.
    Accept { gap_opened: u64, filled: bool },
    /// The same signed bytes again: dropped and counted.
    Duplicate,
    /// Other signed bytes for a sequence already settled: rejected as `equivocation`; the
    /// tracking is unchanged.
    Equivocation { detail: String },
    /// Validly signed, but its content fails a check: rejected with a reason code and detail,
    /// and its sequence settled all the same (the signer would only send the same bytes again; an
    /// attesting gateway continues from where this one ended, so a lasting fault such as a
    /// replaced meter costs one or two quarantined intervals, never a loop). `gap_opened`: sequences newly found missing
    /// before it; `was_missing`: it closed a gap, which backfill cannot fill with other bytes.
    Reject { reason: &'static str, detail: String, gap_opened: u64, was_missing: bool },
}

/// Checks one reading whose signature verified; `seen` is the digest accepted earlier for the
/// same (meter, sequence), if any. Updates `state` when it settles the reading's sequence.
pub fn check(
    state: &mut MeterState,
    seen: Option<ReadingDigest>,
    reading: &Reading,
    digest: ReadingDigest,
    now_s: i64,
    limits: Limits,
) -> Verdict {
    match seen {
        Some(earlier) if earlier == digest => return Verdict::Duplicate,
        Some(_) => {
            return Verdict::Equivocation {
                detail: format!(
                    "meter {} sent other signed bytes for sequence {}",
                    reading.meter_id, reading.sequence.0
                ),
            }
        }
        None => {}
    }
    match content_fault(state, reading, now_s, limits) {
        None => {
            let (gap_opened, filled) = settle(state, reading);
            Verdict::Accept { gap_opened, filled }
        }
        Some((reason, detail)) => {
            let (gap_opened, was_missing) = settle(state, reading);
            Verdict::Reject { reason, detail, gap_opened, was_missing }
        }
    }
}

/// The first check the reading's content fails, with its reason code and detail.
fn content_fault(state: &MeterState, reading: &Reading, now_s: i64, limits: Limits) -> Option<(&'static str, String)> {
    let import = reading.import_energy().0;
    let export = reading.export_energy().0;
    let seconds = u64::try_from(reading.interval_end.0 - reading.interval_start.0).unwrap_or(0);
    let energy_max_wh = limits.max_power_w.saturating_mul(seconds) / 3_600;
    if import.max(export) > energy_max_wh {
        return Some((
            "implausible_energy",
            format!(
                "{import} Wh imported, {export} Wh exported in {seconds} s; at most {energy_max_wh} Wh is physically \
                 possible at {} kW",
                limits.max_power_w / 1_000
            ),
        ));
    }
    if reading.interval_end.0 > now_s + limits.clock_ahead_s_max {
        return Some((
            "clock_future",
            format!(
                "the interval ends at {}, more than {} s after the gateway's clock ({now_s})",
                reading.interval_end.0, limits.clock_ahead_s_max
            ),
        ));
    }
    let sequence = reading.sequence.0;
    let reset = reading.status.contains(StatusFlags::REGISTER_RESET);
    // `checked_add`: after `u64::MAX` there is no next sequence to check against.
    if state.highest > 0 && state.highest.checked_add(1) == Some(sequence) && !reset {
        let backwards = reading.import_start_wh < state.import_end_wh || reading.export_start_wh < state.export_end_wh;
        // (A register passing its modulus does so inside one reading, whose end is then below its
        // start; the next reading starts where that one ended.)
        if backwards {
            return Some((
                "register_backwards",
                format!(
                    "meter {} sequence {}: import register starts at {} Wh after ending at {} Wh, without a reset flag",
                    reading.meter_id, sequence, reading.import_start_wh, state.import_end_wh
                ),
            ));
        }
    }
    None
}

/// Records that the meter's reading for its sequence has arrived, accepted or not: a sequence past
/// the highest opens a gap for those in between and moves the registers to where this reading
/// ends (the meter signed them, so the next reading is checked against them even when this one
/// was rejected); one inside a gap closes it. Returns (sequences found missing, closed a gap).
fn settle(state: &mut MeterState, reading: &Reading) -> (u64, bool) {
    let sequence = reading.sequence.0;
    if sequence <= state.highest {
        return (0, state.remove_missing(sequence));
    }
    let mut gap_opened = 0;
    // `sequence > highest`, so `highest + 1` cannot overflow; the gap's end is computed with
    // checked arithmetic, since `from + room` can pass `u64::MAX` near the top of the range.
    let from = state.highest + 1;
    if state.highest > 0 && sequence > from {
        let to = sequence - 1;
        let room = MISSING_PER_METER_MAX.saturating_sub(state.missing_count());
        let tracked_to = from.checked_add(room.max(1) - 1).map_or(to, |end| end.min(to));
        if room > 0 {
            state.missing.push((from, tracked_to));
            gap_opened = tracked_to - from + 1;
            // A new gap gets its full share of backfill requests (the count covers all of the
            // meter's missing ranges, which are asked for together).
            state.requests = 0;
        }
    }
    state.highest = sequence;
    state.import_end_wh = reading.import_end_wh;
    state.export_end_wh = reading.export_end_wh;
    state.interval_end_s = reading.interval_end.0;
    (gap_opened, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::ids::{KeyId, Sequence, UnixSeconds};

    const LIMITS: Limits = Limits { max_power_w: 1_000_000, clock_ahead_s_max: 300 };

    fn reading(sequence: u64, import_start: u64, energy: u64) -> Reading {
        Reading::import_interval(
            MeterId::new("M1").expect("id"),
            KeyId(1),
            Sequence(sequence),
            UnixSeconds(900 * sequence as i64),
            import_start,
            energy,
        )
    }

    fn run(state: &mut MeterState, reading: &Reading, seen: Option<ReadingDigest>) -> Verdict {
        let digest = ReadingDigest::of(&reading.encode().expect("valid"));
        check(state, seen, reading, digest, 1_000_000, LIMITS)
    }

    #[test]
    fn gaps_open_and_fill_and_duplicates_are_told_from_equivocations() {
        let mut state = MeterState::default();
        assert_eq!(run(&mut state, &reading(1, 0, 10), None), Verdict::Accept { gap_opened: 0, filled: false });
        assert_eq!(run(&mut state, &reading(5, 40, 10), None), Verdict::Accept { gap_opened: 3, filled: false });
        assert_eq!(state.missing, vec![(2, 4)]);
        assert_eq!(run(&mut state, &reading(3, 20, 10), None), Verdict::Accept { gap_opened: 0, filled: true });
        assert_eq!(state.missing, vec![(2, 2), (4, 4)]);
        let again = reading(3, 20, 10);
        let digest = ReadingDigest::of(&again.encode().expect("valid"));
        assert_eq!(run(&mut state, &again, Some(digest)), Verdict::Duplicate);
        let other = ReadingDigest([9; 32]);
        assert!(matches!(run(&mut state, &again, Some(other)), Verdict::Equivocation { .. }));
        let decoded = MeterState::decode(&state.encode()).expect("decodes");
        assert_eq!(decoded, state);
        // A new gap resets the request count, so it is asked for as often as the first was.
        state.requests = 4;
        assert_eq!(run(&mut state, &reading(8, 80, 10), None), Verdict::Accept { gap_opened: 2, filled: false });
        assert_eq!((state.requests, state.missing.clone()), (0, vec![(2, 2), (4, 4), (6, 7)]));
    }

    #[test]
    fn registers_energy_and_clock_are_checked() {
        let mut state = MeterState::default();
        run(&mut state, &reading(1, 1_000, 10), None);
        assert!(matches!(
            run(&mut state, &reading(2, 500, 10), None),
            Verdict::Reject { reason: "register_backwards", .. }
        ));
        // The rejected reading settled sequence 2 where it ended (510): 3 is checked against that.
        assert!(matches!(
            run(&mut state, &reading(3, 100, 10), None),
            Verdict::Reject { reason: "register_backwards", .. }
        ));
        let mut reset = reading(4, 0, 10);
        reset.status = StatusFlags::new(StatusFlags::REGISTER_RESET).expect("defined");
        assert!(matches!(run(&mut state, &reset, None), Verdict::Accept { .. }));
        assert!(matches!(
            run(&mut state, &reading(5, 10, 300_000), None),
            Verdict::Reject { reason: "implausible_energy", .. }
        ));
        let future = reading(2_000, 10, 10);
        assert!(matches!(run(&mut state, &future, None), Verdict::Reject { reason: "clock_future", .. }));
    }

    /// An impossible jump is validly signed, so backfill would only bring it again: whether it
    /// arrives live or by backfill, it is rejected once and its sequence is settled, never asked
    /// for; the readings after it, whose registers continue from the jump, are accepted.
    #[test]
    fn the_energy_limit_scales_with_the_interval() {
        // 1 MW for 15 minutes is 250 kWh; for one minute 16.7 kWh; for an hour 1 MWh.
        let at = |seconds: i64, energy: u64| {
            let mut reading = reading(1, 0, energy);
            reading.interval_end = UnixSeconds(reading.interval_start.0 + seconds);
            matches!(run(&mut MeterState::default(), &reading, None), Verdict::Accept { .. })
        };
        assert!(at(900, 250_000) && !at(900, 250_001));
        assert!(at(60, 16_666) && !at(60, 16_667));
        assert!(at(3_600, 1_000_000) && !at(3_600, 1_000_001));
    }

    #[test]
    fn a_signed_reading_that_fails_a_check_settles_its_sequence() {
        let mut state = MeterState::default();
        assert_eq!(run(&mut state, &reading(1, 0, 10), None), Verdict::Accept { gap_opened: 0, filled: false });
        // Live: sequence 2 jumps; 3 continues from where 2 ended and reveals no gap.
        let verdict = run(&mut state, &reading(2, 10, 300_000), None);
        assert!(
            matches!(verdict, Verdict::Reject { reason: "implausible_energy", gap_opened: 0, was_missing: false, .. }),
            "{verdict:?}"
        );
        assert_eq!(run(&mut state, &reading(3, 300_010, 10), None), Verdict::Accept { gap_opened: 0, filled: false });
        assert!(state.missing.is_empty(), "nothing to ask for: {state:?}");
        // By backfill: 5 jumps but is missed live; 6 reveals the gap; 5 arrives and closes it.
        assert_eq!(run(&mut state, &reading(4, 300_020, 10), None), Verdict::Accept { gap_opened: 0, filled: false });
        assert_eq!(run(&mut state, &reading(6, 600_030, 10), None), Verdict::Accept { gap_opened: 1, filled: false });
        assert_eq!(state.missing, vec![(5, 5)]);
        let verdict = run(&mut state, &reading(5, 300_030, 300_000), None);
        assert!(
            matches!(verdict, Verdict::Reject { reason: "implausible_energy", gap_opened: 0, was_missing: true, .. }),
            "{verdict:?}"
        );
        assert!(state.missing.is_empty(), "the gap is closed, not left for backfill: {state:?}");
        assert_eq!(state.requests, 0);
        // A rejected reading past a gap still reveals the gap before it.
        let verdict = run(&mut state, &reading(9, 600_060, 300_000), None);
        assert!(matches!(verdict, Verdict::Reject { gap_opened: 2, .. }), "{verdict:?}");
        assert_eq!(state.missing, vec![(7, 8)]);
        assert_eq!(run(&mut state, &reading(10, 900_070, 10), None), Verdict::Accept { gap_opened: 0, filled: false });
    }

    fn reading_at(sequence: u64, import_start: u64, energy: u64) -> Reading {
        Reading::import_interval(
            MeterId::new("M1").expect("id"),
            KeyId(1),
            Sequence(sequence),
            UnixSeconds(900_000),
            import_start,
            energy,
        )
    }

    /// Sequences near `u64::MAX`: a gap up to the last possible sequence is tracked exactly, and
    /// readings after the highest possible one are still told apart (no overflow, checked
    /// arithmetic everywhere the next sequence is computed).
    #[test]
    fn sequences_up_to_u64_max_do_not_overflow() {
        let mut state = MeterState::default();
        let near = u64::MAX - 3;
        assert_eq!(run(&mut state, &reading_at(near, 0, 10), None), Verdict::Accept { gap_opened: 0, filled: false });
        assert_eq!(
            run(&mut state, &reading_at(u64::MAX, 40, 10), None),
            Verdict::Accept { gap_opened: 2, filled: false }
        );
        assert_eq!(state.missing, vec![(u64::MAX - 2, u64::MAX - 1)]);
        assert_eq!(state.missing_count(), 2);
        assert_eq!(
            run(&mut state, &reading_at(u64::MAX - 1, 30, 10), None),
            Verdict::Accept { gap_opened: 0, filled: true }
        );
        // Nothing follows the last sequence; an old one still fills its gap, unchecked against a
        // "next" that does not exist.
        assert_eq!(
            run(&mut state, &reading_at(u64::MAX - 2, 0, 10), None),
            Verdict::Accept { gap_opened: 0, filled: true }
        );
        assert!(state.missing.is_empty());
        assert_eq!(state.highest, u64::MAX);
        let decoded = MeterState::decode(&state.encode()).expect("decodes");
        assert_eq!(decoded, state);
    }

    /// A persisted state whose missing ranges are not sorted, disjoint and below the highest
    /// sequence is refused on decode (it would make the gap arithmetic overflow).
    #[test]
    fn inconsistent_missing_ranges_are_refused_on_decode() {
        let bad = [vec![(5, 3)], vec![(2, 3), (3, 4)], vec![(2, 30)], vec![(0, 1)]];
        for missing in bad {
            let state = MeterState { highest: 10, missing: missing.clone(), ..MeterState::default() };
            assert!(MeterState::decode(&state.encode()).is_err(), "{missing:?} decoded");
        }
        let good = MeterState { highest: 10, missing: vec![(2, 3), (5, 9)], ..MeterState::default() };
        assert_eq!(MeterState::decode(&good.encode()).expect("decodes"), good);
    }

    /// The in-memory states change only after the batch's durable write succeeded: a failed
    /// write (an injected store error) leaves them exactly as they were, and the same batch
    /// checked again after it gives the same verdicts as the first time.
    #[test]
    fn a_failed_durable_write_leaves_the_tracker_unchanged() {
        let tracker = Mutex::new(BTreeMap::new());
        let meter = MeterId::new("M1").expect("id");
        let check_batch = |tracker: &Mutex<BTreeMap<MeterId, MeterState>>| {
            let mut staged = Staged::default();
            let verdicts: Vec<Verdict> = [reading(1, 0, 10), reading(4, 30, 10)]
                .iter()
                .map(|reading| run(staged.state(tracker, &meter), reading, None))
                .collect();
            (staged, verdicts)
        };
        let (staged, first) = check_batch(&tracker);
        let failed: Result<(), &str> = commit_durably(&tracker, staged, |_| Err("disk full"));
        assert_eq!(failed, Err("disk full"));
        assert!(tracker.lock().expect("lock").is_empty(), "the failed batch changed the tracker");
        let (staged, again) = check_batch(&tracker);
        assert_eq!(again, first, "a redelivered batch is judged as the first time");
        let mut written = Vec::new();
        commit_durably(&tracker, staged, |changes| {
            written = changes;
            Ok::<(), ()>(())
        })
        .expect("written");
        let state = tracker.lock().expect("lock")[&meter].clone();
        assert_eq!((state.highest, state.missing.clone()), (4, vec![(2, 3)]));
        assert_eq!(written, vec![(meter, state)]);
    }
}
