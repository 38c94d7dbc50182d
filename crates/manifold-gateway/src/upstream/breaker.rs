//! One endpoint's circuit breaker (issue 13, item 3): outlier ejection by failure rate.
//!
//! Closed, it counts attempts and failures over a sliding window (a ring of ten buckets of a
//! tenth of `window` each, on tokio's clock). When the failure rate reaches `failure_rate` with
//! at least `min_requests` in the window, it *trips*; the upstream's [`super::endpoints`]
//! decides whether it may open (no more than `max_ejected` of the endpoints are out at once) and
//! calls [`Breaker::open`]. Open, it takes no traffic for `open_for`; then exactly one attempt is
//! let through as a probe (half-open). The probe's success closes the breaker (with a fresh
//! window and `open_for` back to the configured one); its failure opens it again for twice as
//! long, up to `max_open_for`, so a dependency that stays down is probed ever more rarely
//! instead of every few seconds; a probe that says nothing (cancelled, the route's deadline)
//! hands the probe to the next attempt.
//!
//! The state is behind one small mutex per endpoint, taken once per attempt's end and, while an
//! endpoint is ejected, by picks that look at it: never an upstream-wide lock.

use manifold_config::policy::BreakerPolicy;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Buckets in the sliding window: the window's precision is a tenth of its length.
const BUCKETS: u64 = 10;
/// The shortest bucket, so that an absurdly short `window` cannot make every attempt a bucket.
const MIN_BUCKET: Duration = Duration::from_millis(1);

/// What an attempt's end says about the endpoint's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// It answered (any status below 500).
    Success,
    /// It failed in a way that is its fault: connect, reset, its own timeout, a 5xx.
    Failure,
    /// Nothing: cancelled, the route's deadline, a failure of the client's input.
    Neutral,
}

/// What recording a verdict did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    None,
    /// Closed, and the window crossed the threshold: the caller may [`Breaker::open`] it.
    Tripped,
    /// The probe succeeded: closed again.
    Closed,
    /// The probe failed: open again, for longer.
    Reopened,
}

/// Whether an endpoint may take an attempt now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gate {
    /// Closed: normal traffic.
    Closed,
    /// Open, and its `open_for` has passed with no probe out: the next attempt may probe it.
    ProbeReady,
    /// Open (or half-open with its probe out): no traffic.
    Shut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    epoch: u64,
    total: u32,
    failed: u32,
}

#[derive(Debug)]
struct State {
    mode: Mode,
    /// How long the next (re)opening lasts.
    open_for: Duration,
    base: Instant,
    buckets: [Bucket; BUCKETS as usize],
}

/// The breaker of one endpoint.
#[derive(Debug)]
pub(super) struct Breaker {
    policy: BreakerPolicy,
    /// One bucket's length in nanoseconds (≥ 1 ms).
    bucket_ns: u128,
    state: Mutex<State>,
}

impl Breaker {
    pub(super) fn new(policy: &BreakerPolicy, now: Instant) -> Self {
        let bucket = (policy.window / 10).max(MIN_BUCKET);
        Breaker {
            policy: policy.clone(),
            bucket_ns: bucket.as_nanos(),
            state: Mutex::new(State {
                mode: Mode::Closed,
                open_for: policy.open_for,
                base: now,
                buckets: [Bucket::default(); BUCKETS as usize],
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a panic mid-update of plain numbers: keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the endpoint is out of the rotation (open or half-open): what the ejection cap
    /// counts.
    pub(super) fn is_ejected(&self) -> bool {
        self.state().mode != Mode::Closed
    }

    /// The state `/metrics` shows.
    pub(super) fn metric_state(&self) -> manifold_telemetry::metrics::BreakerState {
        use manifold_telemetry::metrics::BreakerState;
        match self.state().mode {
            Mode::Closed => BreakerState::Closed,
            Mode::Open { .. } => BreakerState::Open,
            Mode::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    pub(super) fn gate(&self, now: Instant) -> Gate {
        match self.state().mode {
            Mode::Closed => Gate::Closed,
            Mode::Open { until } if until <= now => Gate::ProbeReady,
            Mode::HalfOpen { probing: false } => Gate::ProbeReady,
            Mode::Open { .. } | Mode::HalfOpen { probing: true } => Gate::Shut,
        }
    }

    /// Take the probe if it is free: true for exactly one caller per half-open period.
    pub(super) fn claim_probe(&self, now: Instant) -> bool {
        let mut s = self.state();
        match s.mode {
            Mode::Open { until } if until <= now => {}
            Mode::HalfOpen { probing: false } => {}
            _ => return false,
        }
        s.mode = Mode::HalfOpen { probing: true };
        true
    }

    /// Open a closed breaker (after it [`Change::Tripped`] and the ejection cap allowed it).
    /// False when it was no longer closed.
    pub(super) fn open(&self, now: Instant) -> bool {
        let mut s = self.state();
        if s.mode != Mode::Closed {
            return false;
        }
        s.mode = Mode::Open {
            until: now + s.open_for,
        };
        true
    }

    /// Count an attempt's end. `probe` says whether the attempt was this breaker's probe.
    pub(super) fn record(&self, now: Instant, probe: bool, verdict: Verdict) -> Change {
        let mut s = self.state();
        match (s.mode, probe) {
            (Mode::HalfOpen { probing: true }, true) => match verdict {
                Verdict::Success => {
                    s.mode = Mode::Closed;
                    s.open_for = self.policy.open_for;
                    s.buckets = [Bucket::default(); BUCKETS as usize];
                    Change::Closed
                }
                Verdict::Failure => {
                    let cap = self.policy.max_open_for.max(self.policy.open_for);
                    s.open_for = s.open_for.saturating_mul(2).min(cap);
                    s.mode = Mode::Open {
                        until: now + s.open_for,
                    };
                    Change::Reopened
                }
                Verdict::Neutral => {
                    s.mode = Mode::HalfOpen { probing: false };
                    Change::None
                }
            },
            // Attempts that were in flight when it opened say nothing new.
            (Mode::Closed, false) => self.count(&mut s, now, verdict),
            _ => Change::None,
        }
    }

    fn count(&self, s: &mut State, now: Instant, verdict: Verdict) -> Change {
        if verdict == Verdict::Neutral {
            return Change::None;
        }
        let epoch = self.epoch(s, now);
        let slot = &mut s.buckets[(epoch % BUCKETS) as usize];
        if slot.epoch != epoch {
            *slot = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        slot.total = slot.total.saturating_add(1);
        if verdict == Verdict::Success {
            return Change::None;
        }
        slot.failed = slot.failed.saturating_add(1);
        let (total, failed) = s
            .buckets
            .iter()
            .filter(|b| b.epoch <= epoch && b.epoch + BUCKETS > epoch && b.total > 0)
            .fold((0u64, 0u64), |(t, f), b| {
                (t + u64::from(b.total), f + u64::from(b.failed))
            });
        // u64 → f64 is exact below 2^53 attempts in one window.
        #[allow(clippy::cast_precision_loss)]
        let rate = failed as f64 / total as f64;
        // `>=` with a NaN threshold is false: a NaN rate never trips (the config refuses it).
        if total >= u64::from(self.policy.min_requests.max(1)) && rate >= self.policy.failure_rate {
            Change::Tripped
        } else {
            Change::None
        }
    }

    fn epoch(&self, s: &State, now: Instant) -> u64 {
        let since = now.saturating_duration_since(s.base).as_nanos();
        u64::try_from(since / self.bucket_ns).unwrap_or(u64::MAX - BUCKETS)
    }
}

/// How many of `n` endpoints may be ejected at once: `max_ejected × n` rounded down, but at
/// least one, so a single-endpoint upstream's breaker still opens (its calls then fail at once
/// with `breaker_open` instead of waiting on a dead dependency) and a small fraction of a few
/// endpoints still ejects the worst one (as Envoy's `max_ejection_percent` ejects the first
/// host whatever the percentage). Zero (or NaN) disables ejection.
pub(super) fn max_ejected(fraction: f64, n: usize) -> usize {
    if fraction.is_nan() || fraction <= 0.0 || n == 0 {
        return 0;
    }
    #[allow(clippy::cast_precision_loss)]
    let cap = (fraction * n as f64).floor();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let cap = if cap >= n as f64 { n } else { cap as usize };
    cap.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            failure_rate: 0.5,
            min_requests: 10,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(30),
            max_ejected: 0.5,
        }
    }

    fn feed(b: &Breaker, ok: u32, failed: u32) -> Vec<Change> {
        let now = Instant::now();
        let mut out = Vec::new();
        for _ in 0..ok {
            out.push(b.record(now, false, Verdict::Success));
        }
        for _ in 0..failed {
            out.push(b.record(now, false, Verdict::Failure));
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn it_trips_at_the_threshold_with_enough_requests_and_not_before() {
        let b = Breaker::new(&policy(), Instant::now());
        // 4 of 9 failed: below both the rate and min_requests.
        assert!(feed(&b, 5, 4).iter().all(|c| *c == Change::None));
        // The 10th request is a failure: 5 of 10 = 0.5, at the threshold.
        assert_eq!(feed(&b, 0, 1), [Change::Tripped]);
        // Neutral outcomes are not requests.
        let b = Breaker::new(&policy(), Instant::now());
        for _ in 0..20 {
            assert_eq!(
                b.record(Instant::now(), false, Verdict::Neutral),
                Change::None
            );
        }
        // 9 failures alone: too few requests.
        assert!(feed(&b, 0, 9).iter().all(|c| *c == Change::None));
        // 6 ok + 5 failed over min_requests: 5/11 < 0.5.
        let b = Breaker::new(&policy(), Instant::now());
        assert!(feed(&b, 6, 5).iter().all(|c| *c == Change::None));
        assert_eq!(b.gate(Instant::now()), Gate::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_older_than_the_window_are_forgotten() {
        let b = Breaker::new(&policy(), Instant::now());
        feed(&b, 0, 9);
        tokio::time::advance(Duration::from_secs(11)).await;
        // Nine failures ago no longer count: one more is 1 of 1, below min_requests.
        assert_eq!(feed(&b, 0, 1), [Change::None]);
        feed(&b, 0, 8);
        assert_eq!(feed(&b, 0, 1), [Change::Tripped]);
    }

    #[tokio::test(start_paused = true)]
    async fn open_then_one_probe_decides_and_open_for_doubles_up_to_the_cap() {
        let b = Breaker::new(&policy(), Instant::now());
        assert!(b.open(Instant::now()));
        assert!(!b.open(Instant::now()), "opens once");
        assert!(b.is_ejected());
        assert_eq!(b.gate(Instant::now()), Gate::Shut);
        assert!(!b.claim_probe(Instant::now()));

        // 5 s, 10 s, 20 s, then capped at 30 s.
        for open_for in [5, 10, 20, 30, 30] {
            tokio::time::advance(Duration::from_secs(open_for) - Duration::from_millis(1)).await;
            assert_eq!(b.gate(Instant::now()), Gate::Shut, "{open_for}");
            tokio::time::advance(Duration::from_millis(1)).await;
            assert_eq!(b.gate(Instant::now()), Gate::ProbeReady);
            assert!(b.claim_probe(Instant::now()), "one probe");
            assert!(!b.claim_probe(Instant::now()), "and only one");
            assert_eq!(b.gate(Instant::now()), Gate::Shut);
            // Another attempt's end (in flight since before it opened) changes nothing.
            assert_eq!(
                b.record(Instant::now(), false, Verdict::Success),
                Change::None
            );
            assert_eq!(
                b.record(Instant::now(), true, Verdict::Failure),
                Change::Reopened
            );
        }

        // A probe that says nothing hands the probe on.
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(b.claim_probe(Instant::now()));
        assert_eq!(
            b.record(Instant::now(), true, Verdict::Neutral),
            Change::None
        );
        assert!(b.claim_probe(Instant::now()));
        assert_eq!(
            b.record(Instant::now(), true, Verdict::Success),
            Change::Closed
        );
        assert!(!b.is_ejected());
        assert_eq!(b.gate(Instant::now()), Gate::Closed);

        // Closed with a fresh window, and the next opening lasts the configured 5 s again.
        assert_eq!(feed(&b, 0, 1), [Change::None]);
        assert!(b.open(Instant::now()));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.gate(Instant::now()), Gate::ProbeReady);
    }

    #[tokio::test(start_paused = true)]
    async fn two_concurrent_picks_after_open_for_get_one_probe() {
        let b = std::sync::Arc::new(Breaker::new(&policy(), Instant::now()));
        b.open(Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        let now = Instant::now();
        let claims: Vec<bool> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    let b = &b;
                    s.spawn(move || b.claim_probe(now))
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("no panic"))
                .collect()
        });
        assert_eq!(claims.iter().filter(|c| **c).count(), 1, "{claims:?}");
    }

    #[test]
    fn the_ejection_cap_rounds_down_but_lets_one_go() {
        assert_eq!(max_ejected(0.5, 1), 1);
        assert_eq!(max_ejected(0.5, 2), 1);
        assert_eq!(max_ejected(0.5, 3), 1);
        assert_eq!(max_ejected(0.5, 4), 2);
        assert_eq!(max_ejected(1.0, 3), 3);
        assert_eq!(max_ejected(7.0, 3), 3);
        assert_eq!(max_ejected(f64::INFINITY, 3), 3);
        assert_eq!(max_ejected(0.0, 3), 0);
        assert_eq!(max_ejected(f64::NAN, 3), 0);
        assert_eq!(max_ejected(0.5, 0), 0);
    }
}
