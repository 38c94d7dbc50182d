//! Waits that end when they should, for the load generator and the simulated services.
//!
//! Why this exists: tokio's timer wheel has a resolution of one millisecond and rounds every
//! deadline *up* to the next tick, so `sleep(2ms)` ends anywhere from 2 to 3 ms later (more under
//! load), and every sleep that falls due in the same millisecond ends in the same burst. A
//! gateway benchmark whose simulated upstreams wait 2, 5 and 1 ms in sequence then measures
//! three roundings (~3 ms) and tick-aligned bursts of work, and no aggregator can come within a
//! fraction of a millisecond of the ideal critical path. The real services Manifold fronts answer
//! whenever they are done, not on a shared 1 ms beat; [`Timer::precise`] models that.
//!
//! [`Timer::Tokio`] (the default) is tokio's own timer: it follows tokio's clock, so tests on
//! paused time (`start_paused`) keep working. [`Timer::precise`] waits on one dedicated OS thread
//! that keeps every pending deadline in a heap and sleeps until the nearest with a
//! high-resolution timed wait (the kernel's hrtimer, within its default 50 µs slack). It reads
//! the operating system's clock, so it must not be used on paused time.

// The workspace bans std's Instant so that code takes tokio's clock; this crate's whole point is
// the operating system's clock, read by a thread tokio does not run.
#![allow(
    clippy::disallowed_types,
    reason = "the precise timer runs on the OS clock by design"
)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// How a wait is timed.
#[derive(Clone, Debug, Default)]
pub enum Timer {
    /// tokio's timer: millisecond ticks, rounded up; follows paused time in tests.
    #[default]
    Tokio,
    /// A dedicated timer thread with sub-millisecond resolution (see the crate docs).
    Precise(PreciseTimer),
}

impl Timer {
    /// The process-wide precise timer (its thread starts on first use and lives as long as the
    /// process; one thread serves every caller).
    pub fn precise() -> Self {
        Timer::Precise(PreciseTimer::global())
    }

    /// `precise` or `tokio`.
    pub fn name(&self) -> &'static str {
        match self {
            Timer::Tokio => "tokio",
            Timer::Precise(_) => "precise",
        }
    }

    /// Wait until `deadline` (at once if it has passed).
    pub async fn sleep_until(&self, deadline: Instant) {
        match self {
            Timer::Tokio => tokio::time::sleep_until(deadline).await,
            Timer::Precise(t) => t.sleep_until(deadline).await,
        }
    }

    /// Wait for `duration`.
    pub async fn sleep(&self, duration: Duration) {
        self.sleep_until(Instant::now() + duration).await;
    }
}

/// A pending wait: its deadline, a tie-breaker, and whom to wake.
struct Pending {
    deadline: std::time::Instant,
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

/// A handle on the timer thread. Cheap to clone.
#[derive(Clone)]
pub struct PreciseTimer {
    tx: Arc<mpsc::Sender<(std::time::Instant, oneshot::Sender<()>)>>,
}

impl std::fmt::Debug for PreciseTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PreciseTimer")
    }
}

impl PreciseTimer {
    fn global() -> Self {
        static GLOBAL: OnceLock<PreciseTimer> = OnceLock::new();
        GLOBAL.get_or_init(PreciseTimer::spawn).clone()
    }

    /// Start the timer thread. If it cannot be started, waits fall back to tokio's timer.
    fn spawn() -> Self {
        let (tx, rx) = mpsc::channel();
        let started = std::thread::Builder::new()
            .name("manifold-timer".into())
            .spawn(move || run(rx));
        if let Err(err) = started {
            // The receiver is gone with the closure: every send fails and waits fall back.
            eprintln!(
                "manifold-timer: could not start the timer thread ({err}); using tokio's timer"
            );
        }
        PreciseTimer { tx: Arc::new(tx) }
    }

    async fn sleep_until(&self, deadline: Instant) {
        // tokio's Instant is the OS clock's whenever time is not paused.
        let deadline = deadline.into_std();
        let now = std::time::Instant::now();
        if deadline <= now {
            return;
        }
        let (wake, woken) = oneshot::channel();
        if self.tx.send((deadline, wake)).is_err() {
            tokio::time::sleep_until(Instant::from_std(deadline)).await;
            return;
        }
        // An error means the thread dropped the sender without firing: only if it died.
        if woken.await.is_err() {
            tokio::time::sleep_until(Instant::from_std(deadline)).await;
        }
    }
}

/// The timer thread: wait for the nearest deadline or a new one, whichever comes first; wake
/// everything that is due.
fn run(rx: mpsc::Receiver<(std::time::Instant, oneshot::Sender<()>)>) {
    let mut heap: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
    let mut seq = 0u64;
    loop {
        let now = std::time::Instant::now();
        while heap.peek().is_some_and(|p| p.0.deadline <= now) {
            if let Some(Reverse(p)) = heap.pop() {
                // The waiter may have gone (a cancelled sleep): nothing to do then.
                let _ = p.wake.send(());
            }
        }
        let next = match heap.peek() {
            Some(p) => rx.recv_timeout(p.0.deadline.saturating_duration_since(now)),
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match next {
            Ok((deadline, wake)) => {
                seq += 1;
                heap.push(Reverse(Pending {
                    deadline,
                    seq,
                    wake,
                }));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Every handle is gone (only if the process-wide one were dropped): dropping the heap
            // wakes whoever still waits with an error, and they finish on tokio's timer.
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_precise_sleep_never_ends_early() {
        let timer = Timer::precise();
        let start = Instant::now();
        let mut tasks = Vec::new();
        // Deliberately out of order, several in the same millisecond.
        for us in [3_000u64, 1_200, 1_250, 2_500, 1_100, 300] {
            let timer = timer.clone();
            tasks.push(tokio::spawn(async move {
                let deadline = start + Duration::from_micros(us);
                timer.sleep_until(deadline).await;
                (us, Instant::now())
            }));
        }
        let mut woke = Vec::new();
        for t in tasks {
            let (us, at) = t.await.expect("task");
            assert!(
                at >= start + Duration::from_micros(us),
                "{us} µs woke early"
            );
            woke.push((at, us));
        }
        // Correctness, not speed: nothing woke before its deadline (above).
        assert_eq!(woke.len(), 6);
    }

    #[tokio::test]
    async fn a_past_deadline_returns_at_once() {
        let timer = Timer::precise();
        timer
            .sleep_until(Instant::now() - Duration::from_millis(5))
            .await;
        assert_eq!(timer.name(), "precise");
        assert_eq!(Timer::default().name(), "tokio");
    }

    #[tokio::test(start_paused = true)]
    async fn the_tokio_timer_follows_paused_time() {
        let start = Instant::now();
        Timer::Tokio.sleep(Duration::from_secs(3600)).await;
        assert!(Instant::now() >= start + Duration::from_secs(3600));
    }
}
