//! One clock for every process: real time, or simulated time that starts at an instant and runs
//! at a speed factor from a shared real-time anchor, so that the simulator, the gateway and the
//! ledger leader all agree on "now" in an accelerated run.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::ids::UnixMillis;

/// Which time a process runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Wall-clock time.
    Real,
    /// Simulated time: at real instant `anchor` it is `start`, and it runs `speed` times as fast.
    Simulated { start: UnixMillis, anchor: UnixMillis, speed: u32 },
}

/// Wall-clock milliseconds since the epoch. The one place the domain crate reads a clock.
pub fn wall_clock_now() -> UnixMillis {
    let elapsed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    UnixMillis(i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
}

impl Clock {
    /// The time now on this clock.
    pub fn now(&self) -> UnixMillis {
        self.at_real(wall_clock_now())
    }

    /// The time on this clock at real instant `real` (pure).
    pub fn at_real(&self, real: UnixMillis) -> UnixMillis {
        match *self {
            Clock::Real => real,
            Clock::Simulated { start, anchor, speed } => {
                UnixMillis(start.0.saturating_add((real.0 - anchor.0).saturating_mul(i64::from(speed))))
            }
        }
    }

    /// Real milliseconds until this clock shows `target` (0 if it already has).
    pub fn real_millis_until(&self, target: UnixMillis) -> u64 {
        let now = self.now();
        let clock_millis = (target.0 - now.0).max(0);
        let speed = match self {
            Clock::Real => 1,
            Clock::Simulated { speed, .. } => i64::from((*speed).max(1)),
        };
        u64::try_from((clock_millis + speed - 1) / speed).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_clock_runs_at_speed_from_the_anchor() {
        let clock = Clock::Simulated { start: UnixMillis(1_000_000), anchor: UnixMillis(500), speed: 60 };
        assert_eq!(clock.at_real(UnixMillis(500)), UnixMillis(1_000_000));
        assert_eq!(clock.at_real(UnixMillis(1_500)), UnixMillis(1_060_000));
    }
}
