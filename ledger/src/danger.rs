//! Planted bugs, for proving that the deterministic simulation catches real ones. Each switch is
//! per thread and off unless a test turns it on; no configuration, flag or API reaches it.

use std::cell::Cell;

thread_local! {
    static DEDUP_OFF: Cell<bool> = const { Cell::new(false) };
}

/// Turns deduplication off on this thread: a replayed reading settles again (the canary).
pub fn set_dedup_off(off: bool) {
    DEDUP_OFF.with(|flag| flag.set(off));
}

/// Whether the canary is planted on this thread.
pub(crate) fn dedup_off() -> bool {
    DEDUP_OFF.with(Cell::get)
}
