//! openraft's async runtime for the ledger: Tokio, except that openraft's randomness (election
//! timeouts) comes from a per-thread generator that the deterministic simulation seeds. In
//! production the generator is seeded from the operating system, exactly like `rand::thread_rng`.
//!
//! The node's other sources of nondeterminism live here too, so the simulation can fix them:
//! transaction ids ([`new_tx_id`], from the same generator) and the time stamped on the
//! transactions a node proposes ([`NodeClock`]).

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

use openraft::async_runtime::TokioOneShotSender;
use openraft::{AsyncRuntime, OptionalSend, TokioInstant};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

thread_local! {
    static RNG: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// Seeds this thread's generator: everything openraft draws on this thread from now on follows
/// from `seed`. The simulation calls this on its single runtime thread.
pub fn seed_thread_rng(seed: u64) {
    RNG.with(|rng| *rng.borrow_mut() = Some(StdRng::seed_from_u64(seed)));
}

fn with_rng<T>(draw: impl FnOnce(&mut StdRng) -> T) -> T {
    RNG.with(|rng| draw(rng.borrow_mut().get_or_insert_with(StdRng::from_entropy)))
}

/// A handle to this thread's generator.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadRng;

impl RngCore for ThreadRng {
    fn next_u32(&mut self) -> u32 {
        with_rng(RngCore::next_u32)
    }
    fn next_u64(&mut self) -> u64 {
        with_rng(RngCore::next_u64)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        with_rng(|rng| rng.fill_bytes(dest));
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        with_rng(|rng| rng.try_fill_bytes(dest))
    }
}

/// Tokio with a seedable random source.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LedgerRuntime;

impl AsyncRuntime for LedgerRuntime {
    type JoinError = tokio::task::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = tokio::task::JoinHandle<T>;
    type Sleep = tokio::time::Sleep;
    type Instant = TokioInstant;
    type TimeoutError = tokio::time::error::Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = tokio::time::Timeout<T>;
    type ThreadLocalRng = ThreadRng;
    type OneshotSender<T: OptionalSend> = TokioOneShotSender<T>;
    type OneshotReceiver<T: OptionalSend> = tokio::sync::oneshot::Receiver<T>;
    type OneshotReceiverError = tokio::sync::oneshot::error::RecvError;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        tokio::task::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        tokio::time::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        tokio::time::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(duration: Duration, future: F) -> Self::Timeout<R, F> {
        tokio::time::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(deadline: Self::Instant, future: F) -> Self::Timeout<R, F> {
        tokio::time::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        join_error.is_panic()
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        ThreadRng
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        (TokioOneShotSender(sender), receiver)
    }
}

/// A fresh transaction id from this thread's generator (seeded in the simulation).
pub fn new_tx_id() -> domain::ids::TxId {
    use rand::Rng as _;
    domain::ids::TxId(ThreadRng.gen())
}

/// The time a node stamps on the transactions it proposes.
#[derive(Debug, Clone, Copy)]
pub enum NodeClock {
    /// The process clock (real, or simulated from a shared real-time anchor).
    Process(domain::clock::Clock),
    /// Tokio's clock from `start` at `anchor`: under the simulation's paused time this is
    /// virtual time, the same for every replica in the process and for every run of a seed.
    Runtime { start: domain::ids::UnixMillis, anchor: tokio::time::Instant },
}

impl NodeClock {
    pub fn now(&self) -> domain::ids::UnixMillis {
        match self {
            NodeClock::Process(clock) => clock.now(),
            NodeClock::Runtime { start, anchor } => {
                let elapsed = i64::try_from(anchor.elapsed().as_millis()).unwrap_or(i64::MAX);
                domain::ids::UnixMillis(start.0.saturating_add(elapsed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn a_seed_fixes_the_draws() {
        let draws = |seed| {
            seed_thread_rng(seed);
            (0..8).map(|_| LedgerRuntime::thread_rng().gen_range(0..1_000_000u32)).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
    }
}
