//! Which endpoint an attempt goes to: round robin, or power of two choices over peak-EWMA cost
//! (issue 13, item 2), picked by the upstream's `balance` key.
//!
//! P2C in linkerd's and Finagle's form: draw two distinct endpoints at random and take the one
//! with the lower cost, `RTT estimate × (in flight + 1)`. Two random candidates rather than the
//! global minimum is what keeps every gateway (and every thread) from herding onto the same
//! momentarily cheapest endpoint, while still steering away from a slow one: the slowest
//! endpoint is only chosen when it is drawn against itself, never with n ≥ 2 distinct draws.
//!
//! The RTT estimate is *peak* EWMA: an answer slower than the estimate replaces it at once (a
//! replica turning slow is believed immediately), a faster one only pulls it down with weight
//! `1 - e^(-Δt/decay)`, and with no answers it decays toward zero, so an endpoint that was slow
//! or failing is tried again after a while instead of starving forever. An estimate decayed to
//! nothing is unknown, not free: with attempts in flight it is priced as a fresh endpoint's
//! (see [`Load::cost`]).
//!
//! The hot path takes no upstream-wide lock: the draw uses a thread-local small RNG, in-flight
//! counts are atomics, and each endpoint's estimate sits behind its own small mutex held for a
//! few float operations (contended only by attempts on that same endpoint).

use manifold_config::policy::{DEFAULT_RTT, EWMA_DECAY};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// An upstream's balancer over its endpoints (by index into the current set).
#[derive(Debug)]
pub(super) enum Balancer {
    /// Each endpoint in turn (the next that may take traffic).
    RoundRobin(AtomicUsize),
    /// Power of two choices over [`Load::cost`].
    P2c,
}

impl Balancer {
    pub(super) fn new(kind: manifold_config::policy::Balance) -> Self {
        match kind {
            manifold_config::policy::Balance::RoundRobin => {
                Balancer::RoundRobin(AtomicUsize::new(0))
            }
            manifold_config::policy::Balance::P2c => Balancer::P2c,
        }
    }

    /// The index (below `n`) of the endpoint the next attempt goes to, among those `eligible`
    /// says may take traffic; `None` when none may. `cost` is read for P2C's two candidates only.
    pub(super) fn pick(
        &self,
        n: usize,
        eligible: impl Fn(usize) -> bool,
        cost: impl Fn(usize) -> f64,
    ) -> Option<usize> {
        match self {
            Balancer::RoundRobin(next) => {
                if n == 0 {
                    return None;
                }
                // Wrapping on overflow only restarts the cycle.
                let start = next.fetch_add(1, Ordering::Relaxed) % n;
                (0..n).map(|k| (start + k) % n).find(|&i| eligible(i))
            }
            Balancer::P2c => p2c(n, &eligible, &cost),
        }
    }
}

fn p2c(n: usize, eligible: &dyn Fn(usize) -> bool, cost: &dyn Fn(usize) -> f64) -> Option<usize> {
    match n {
        0 => return None,
        1 => return eligible(0).then_some(0),
        _ => {}
    }
    // The common case, every endpoint eligible: two draws, no allocation.
    let (a, b) = two_distinct(n);
    let (a, b) = if eligible(a) && eligible(b) {
        (a, b)
    } else {
        let ok: Vec<usize> = (0..n).filter(|&i| eligible(i)).collect();
        match ok.len() {
            0 => return None,
            1 => return ok.first().copied(),
            m => {
                let (x, y) = two_distinct(m);
                (ok[x], ok[y])
            }
        }
    };
    // A tie (e.g. two fresh endpoints) goes to the first draw, itself random.
    Some(if cost(b) < cost(a) { b } else { a })
}

thread_local! {
    /// Cheap, per thread, seeded from the OS once: the draw needs no cryptographic quality and
    /// must not contend across threads.
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_os_rng());
}

/// Two distinct indices below `n` (n ≥ 2), uniformly.
fn two_distinct(n: usize) -> (usize, usize) {
    RNG.with(|r| {
        let mut r = r.borrow_mut();
        let a = r.random_range(0..n);
        // Draw from the n - 1 others and skip over `a`.
        let b = r.random_range(0..n - 1);
        (a, if b >= a { b + 1 } else { b })
    })
}

/// One endpoint's load as P2C sees it: a peak-EWMA RTT estimate and the attempts in flight.
#[derive(Debug)]
pub(super) struct Load {
    in_flight: AtomicUsize,
    rtt: Mutex<Rtt>,
}

#[derive(Debug, Clone, Copy)]
struct Rtt {
    /// The estimate in nanoseconds as of `at`.
    ns: f64,
    at: Instant,
}

impl Rtt {
    /// The estimate at `now`, decayed toward zero since the last update.
    fn decayed(&self, now: Instant) -> f64 {
        self.ns * weight(now.saturating_duration_since(self.at))
    }
}

/// An estimate below this (1 µs: below any answer through a socket, loopback included) has
/// decayed away: the endpoint's cost is unknown, not cheap.
const UNKNOWN_BELOW_NS: f64 = 1_000.0;

/// How much of an estimate `elapsed` old is kept: `e^(-elapsed / decay)`.
fn weight(elapsed: Duration) -> f64 {
    (-elapsed.as_secs_f64() / EWMA_DECAY.as_secs_f64()).exp()
}

fn nanos(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

impl Load {
    /// A fresh endpoint: linkerd's default estimate (30 ms) until it answers.
    pub(super) fn new(now: Instant) -> Self {
        Load {
            in_flight: AtomicUsize::new(0),
            rtt: Mutex::new(Rtt {
                ns: nanos(DEFAULT_RTT),
                at: now,
            }),
        }
    }

    /// An attempt starts on this endpoint.
    pub(super) fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// An attempt on this endpoint ended (however it ended).
    pub(super) fn end(&self) {
        // Never below zero, even if a caller ended more than it started.
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// P2C's cost at `now`: the decayed estimate × (in flight + 1), in nanoseconds.
    ///
    /// An estimate decayed to (almost) nothing — an endpoint idle for a few minutes after its
    /// last answer, exactly zero after about two hours — says nothing about the endpoint, yet
    /// multiplied by any number in flight it stayed (almost) zero: the endpoint won every pair
    /// however many attempts it already held, so every pick of a burst went to it before its
    /// first answer could say what it costs (Finagle's peak EWMA guards the same case). Such an
    /// endpoint costs nothing while idle, so it is still tried at once; with attempts in flight
    /// it costs what a fresh endpoint does ([`DEFAULT_RTT`]) until an answer brings a real
    /// estimate.
    pub(super) fn cost(&self, now: Instant) -> f64 {
        let mut estimate = self.estimate_ns(now);
        // usize → f64 loses precision only past 2^53 attempts in flight.
        #[allow(clippy::cast_precision_loss)]
        let pending = self.in_flight() as f64;
        if pending > 0.0 && estimate < UNKNOWN_BELOW_NS {
            estimate = nanos(DEFAULT_RTT);
        }
        estimate * (pending + 1.0)
    }

    /// The RTT estimate at `now`, in nanoseconds.
    pub(super) fn estimate_ns(&self, now: Instant) -> f64 {
        // A poisoned lock only means another thread panicked mid-update of two plain numbers.
        let rtt = *self
            .rtt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        rtt.decayed(now)
    }

    /// An answer took `sample`: a peak replaces the estimate, a lower one pulls it down with
    /// the weight of the time since the last update.
    pub(super) fn observe(&self, now: Instant, sample: Duration) {
        let sample = nanos(sample);
        let mut rtt = self
            .rtt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if sample > rtt.ns {
            rtt.ns = sample;
        } else {
            let keep = weight(now.saturating_duration_since(rtt.at));
            rtt.ns = rtt.ns * keep + sample * (1.0 - keep);
        }
        rtt.at = now;
    }

    /// An attempt was abandoned after `elapsed` without an answer: its RTT is at least that, so
    /// it counts only when it is above the (decayed) estimate, as a peak.
    pub(super) fn observe_at_least(&self, now: Instant, elapsed: Duration) {
        let mut rtt = self
            .rtt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let sample = nanos(elapsed);
        if sample > rtt.decayed(now) {
            rtt.ns = sample;
            rtt.at = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use manifold_config::policy::Balance;

    fn all(_: usize) -> bool {
        true
    }

    #[test]
    fn round_robin_takes_each_eligible_endpoint_in_turn() {
        let b = Balancer::new(Balance::RoundRobin);
        let picks: Vec<_> = (0..7).filter_map(|_| b.pick(3, all, |_| 0.0)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(b.pick(0, all, |_| 0.0), None);
        let picks: Vec<_> = (0..4)
            .filter_map(|_| b.pick(3, |i| i != 1, |_| 0.0))
            .collect();
        assert!(picks.iter().all(|&i| i != 1), "{picks:?}");
        assert_eq!(b.pick(3, |_| false, |_| 0.0), None);
    }

    #[test]
    fn p2c_prefers_the_lower_cost_and_still_draws_the_other() {
        let b = Balancer::new(Balance::P2c);
        // Endpoint 0 is ten times dearer than 1 and 2.
        let cost = |i: usize| if i == 0 { 10.0 } else { 1.0 };
        let mut counts = [0u32; 3];
        for _ in 0..3000 {
            let i = b.pick(3, all, cost).expect("a pick");
            counts[i] += 1;
        }
        // With distinct draws the dearest endpoint is never the lower of two.
        assert_eq!(counts[0], 0, "{counts:?}");
        assert!(counts[1] > 1000 && counts[2] > 1000, "{counts:?}");

        // Two endpoints: the cheap one always wins the pair, until its cost (in flight) rises.
        let cost = |i: usize| if i == 0 { 2.0 } else { 1.0 };
        assert!((0..100).all(|_| b.pick(2, all, cost) == Some(1)));
        // Only one eligible: it is taken whatever its cost; none: none.
        assert!((0..100).all(|_| b.pick(3, |i| i == 0, cost) == Some(0)));
        assert_eq!(b.pick(3, |_| false, cost), None);
        assert_eq!(b.pick(1, all, cost), Some(0));
        assert_eq!(b.pick(0, all, cost), None);
    }

    #[test]
    fn nan_and_infinite_costs_never_panic_and_still_pick() {
        let b = Balancer::new(Balance::P2c);
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, f64::MAX] {
            for _ in 0..50 {
                assert!(b.pick(3, all, |_| bad).is_some_and(|i| i < 3), "{bad}");
                let mixed = |i: usize| if i == 0 { bad } else { 1.0 };
                assert!(b.pick(2, all, mixed).is_some(), "{bad}");
            }
        }
    }

    #[test]
    fn two_distinct_draws_are_distinct_and_cover_every_pair() {
        let mut seen = [[false; 4]; 4];
        for _ in 0..2000 {
            let (a, b) = two_distinct(4);
            assert_ne!(a, b);
            seen[a][b] = true;
        }
        for (a, row) in seen.iter().enumerate() {
            for (b, &s) in row.iter().enumerate() {
                assert_eq!(s, a != b, "({a}, {b})");
            }
        }
    }

    const MS: f64 = 1e6;

    #[tokio::test(start_paused = true)]
    async fn a_peak_replaces_the_estimate_and_lower_samples_decay_into_it() {
        let load = Load::new(Instant::now());
        assert!((load.estimate_ns(Instant::now()) - 30.0 * MS).abs() < 1.0);

        // Slower than the estimate: believed at once.
        load.observe(Instant::now(), Duration::from_millis(200));
        assert!((load.estimate_ns(Instant::now()) - 200.0 * MS).abs() < 1.0);

        // A fast answer right after barely moves it (no time has passed to forget the peak)…
        load.observe(Instant::now(), Duration::from_millis(10));
        assert!(load.estimate_ns(Instant::now()) > 199.0 * MS);

        // … while one decay period later it weighs 1 - 1/e.
        tokio::time::advance(EWMA_DECAY).await;
        let now = Instant::now();
        load.observe(now, Duration::from_millis(10));
        let e = (-1.0f64).exp();
        let want = 200.0 * MS * e + 10.0 * MS * (1.0 - e);
        assert!(
            (load.estimate_ns(now) - want).abs() < MS,
            "{} for {want}",
            load.estimate_ns(now)
        );
        // The estimate decays toward zero when nothing is observed.
        tokio::time::advance(EWMA_DECAY * 10).await;
        assert!(load.estimate_ns(Instant::now()) < MS);
    }

    #[tokio::test(start_paused = true)]
    async fn cost_counts_attempts_in_flight_and_lower_bounds_only_raise_it() {
        let load = Load::new(Instant::now());
        let now = Instant::now();
        assert!((load.cost(now) - 30.0 * MS).abs() < 1.0);
        load.start();
        load.start();
        assert!((load.cost(now) - 90.0 * MS).abs() < 1.0);
        load.end();
        load.end();
        load.end(); // one end too many stays at zero
        assert_eq!(load.in_flight(), 0);

        // A cancelled attempt shorter than the estimate says nothing…
        load.observe_at_least(now, Duration::from_millis(5));
        assert!((load.cost(now) - 30.0 * MS).abs() < 1.0);
        // … a longer one is a peak.
        load.observe_at_least(now, Duration::from_millis(300));
        assert!((load.cost(now) - 300.0 * MS).abs() < 1.0);
    }
}
