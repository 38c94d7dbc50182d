//! The adaptive limit's controller: Netflix concurrency-limits' Gradient2, in windows.
//!
//! **Why Gradient2 and not Envoy's gradient controller.** Envoy measures its baseline (minRTT)
//! by periodically letting only a handful of requests through for a while and shedding
//! everything else — in a healthy gateway that is a scheduled outage. Gradient2 keeps the
//! baseline as a slow-moving average of the measured latency instead, so nothing is ever shed
//! to measure it. Per window of admitted requests:
//!
//! ```text
//! short    = median latency of the window
//! long     = baseline: drops quickly toward short, rises slowly (≈ 30 s)
//! gradient = clamp(TOLERANCE × long / short, 0.5, 1)
//! limit    = limit × (1 − s) + (limit × gradient + q) × s
//!            (s = 0.2 when that raises the limit, 1 when it lowers it;
//!             q = √limit while within tolerance, 0 past it)
//! ```
//!
//! While latency stays within `TOLERANCE` of the baseline the gradient is 1 and the limit grows
//! by √limit per window (smoothed); when latency rises past it (queueing: more requests in
//! flight than the gateway can work on) *and* the runtime's scheduling lag says the gateway's
//! own CPU is congested, the limit falls, by at most half per window, and settles where
//! latency is about `TOLERANCE` × the baseline.
//!
//! **What the limit protects, and slow upstreams.** The limit bounds the gateway's own work —
//! CPU, memory, tasks — so that under overload the requests it admits are answered at about
//! their unloaded latency and the rest get a fast 503 they can retry elsewhere. A request that
//! waits on a slow upstream costs the gateway almost nothing while it waits, yet its latency
//! is what the controller sees. Four things keep such requests from shrinking the limit
//! pathologically:
//! - **the limit only falls while the gateway's own CPU is congested**: the runtime's
//!   scheduling lag (how long a task that yields waits to run again, probed every 10 ms by the
//!   limiter) must be at least `CONGESTED_LAG`. Requests waiting on a slow upstream leave the
//!   runtime idle, so however slow they are the limit does not fall (it may grow). The lag also
//!   covers what no request's latency includes: the wait of a readable connection before the
//!   gateway reads its request;
//! - the window's *median*, not its mean: a minority of requests on a slow route does not move
//!   it;
//! - nothing changes while fewer than half the limit's requests are in flight (Gradient2's
//!   "application limited" rule): a latency rise at low concurrency is not the gateway's
//!   queueing, so it neither shrinks nor grows the limit;
//! - the limit never goes below its floor, and the baseline follows a lasting change of level
//!   within about 30 s.
//!
//! What remains (the gateway's CPU congested *and* its main route's upstream turning slower at
//! the same time) may shed more than needed for a while; a fixed `concurrency = N` is there for
//! operators who prefer a number they chose.

use std::time::Duration;
use tokio::time::Instant;

/// Latency may rise to this multiple of the baseline before the limit falls (Gradient2's
/// default `rttTolerance`).
const TOLERANCE: f64 = 1.5;
/// How much of each window's new limit is taken when it is higher (Gradient2's default).
const SMOOTHING: f64 = 0.2;
/// … and when it is lower, none (as Envoy's gradient controller): an overload from a standing
/// start must be met within a few windows, not the dozens Gradient2's smoothing would take
/// from a generous limit, while every admitted request adds to the backlog.
const SMOOTHING_DOWN: f64 = 1.0;
/// The least a window lasts (Envoy's default sampling interval).
const WINDOW: Duration = Duration::from_millis(100);
/// The fewest samples a window needs before it counts.
const MIN_SAMPLES: usize = 10;
/// Samples kept per window for its median (the rest of a busy window is not stored).
const MAX_SAMPLES: usize = 256;
/// How many windows the baseline takes to follow a rise in latency (≈ 30 s at 100 ms).
const BASELINE_RISE_WINDOWS: f64 = 300.0;
/// How much of a fall in latency the baseline takes per window.
const BASELINE_FALL: f64 = 0.5;
/// The runtime's scheduling lag at or above which the gateway's own CPU is busy: below it the
/// limit does not fall, whatever the latency says (a slow upstream, not the gateway).
pub(crate) const CONGESTED_LAG: Duration = Duration::from_micros(500);

/// The controller's bounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// The limit never goes below this.
    pub(crate) min: usize,
    /// Where the limit starts.
    pub(crate) initial: usize,
    /// The limit never goes above this.
    pub(crate) max: usize,
}

/// One window's samples.
#[derive(Debug)]
struct Window {
    start: Instant,
    /// Latencies, seconds (at most `MAX_SAMPLES`).
    samples: Vec<f64>,
    /// The most requests in flight seen at a sample's end.
    peak_in_flight: usize,
}

/// Gradient2 over windows of admitted requests' latencies. Pure: time comes in with the
/// samples, so tests drive it on paused (or made-up) time.
#[derive(Debug)]
pub(crate) struct Gradient {
    bounds: Bounds,
    limit: f64,
    /// The baseline latency, seconds (`None` until the first window).
    baseline: Option<f64>,
    window: Window,
}

impl Gradient {
    pub(crate) fn new(bounds: Bounds, now: Instant) -> Self {
        let min = bounds.min.max(1);
        let max = bounds.max.max(min);
        let bounds = Bounds {
            min,
            initial: bounds.initial.clamp(min, max),
            max,
        };
        Gradient {
            bounds,
            limit: bounds.initial as f64,
            baseline: None,
            window: Window {
                start: now,
                samples: Vec::with_capacity(MAX_SAMPLES),
                peak_in_flight: 0,
            },
        }
    }

    /// The current limit.
    pub(crate) fn limit(&self) -> usize {
        // In bounds by construction; the cast of a finite, clamped value is exact enough.
        self.limit as usize
    }

    /// The baseline latency, when one has been measured.
    #[cfg(test)]
    pub(crate) fn baseline(&self) -> Option<Duration> {
        self.baseline.map(Duration::from_secs_f64)
    }

    /// Record one admitted request's latency, ending at `now` with `in_flight` requests (itself
    /// included) in flight and the runtime's scheduling lag at `lag`. Returns the new limit
    /// when a window closed.
    pub(crate) fn sample(
        &mut self,
        now: Instant,
        latency: Duration,
        in_flight: usize,
        lag: Duration,
    ) -> Option<usize> {
        let w = &mut self.window;
        if w.samples.len() < MAX_SAMPLES {
            w.samples.push(latency.as_secs_f64());
        }
        w.peak_in_flight = w.peak_in_flight.max(in_flight);
        if now.saturating_duration_since(w.start) < WINDOW || w.samples.len() < MIN_SAMPLES {
            return None;
        }
        let short = median(&mut w.samples);
        let peak = w.peak_in_flight;
        w.samples.clear();
        w.peak_in_flight = 0;
        w.start = now;
        self.update(short, peak, lag >= CONGESTED_LAG);
        Some(self.limit())
    }

    /// Record a request that did not end (its client went away) after `latency`: its latency
    /// is at least that. It counts as [`Gradient::sample`] does only when it is already above
    /// the baseline — evidence of slowness the window must not lose (under an overload, clients
    /// that give up take the slowest requests with them) — and otherwise not at all: a client
    /// that cancels at once must not pass for a fast answer and drag the baseline down, which
    /// would make every real answer look slow.
    pub(crate) fn sample_at_least(
        &mut self,
        now: Instant,
        latency: Duration,
        in_flight: usize,
        lag: Duration,
    ) -> Option<usize> {
        let above = self
            .baseline
            .is_some_and(|base| latency.as_secs_f64() > base);
        if !above {
            return None;
        }
        self.sample(now, latency, in_flight, lag)
    }

    fn update(&mut self, short: f64, peak_in_flight: usize, congested: bool) {
        // A window of zero latencies (a clock that did not move) says nothing.
        if !(short.is_finite() && short > 0.0) {
            return;
        }
        let long = match self.baseline {
            None => short,
            Some(long) if short < long => long + (short - long) * BASELINE_FALL,
            Some(long) => long + (short - long) / BASELINE_RISE_WINDOWS,
        };
        self.baseline = Some(long);
        // Application limited: this window's latency says nothing about the limit.
        if (peak_in_flight as f64) < self.limit / 2.0 {
            return;
        }
        // Latency up while the runtime has time to spare is someone else's (an upstream's): the
        // limit bounds the gateway's own work, so it only falls while that work queues.
        let gradient = if congested {
            (TOLERANCE * long / short).clamp(0.5, 1.0)
        } else {
            1.0
        };
        // Gradient2 always adds a queue allowance of √limit. Past the tolerance it is not
        // added: at the small limits a congested gateway settles at (a core keeps busy with a
        // handful of requests), √limit is a large share of the limit — at 13, the limit would
        // settle where latency is TOLERANCE × 13 / (13 − √13) ≈ 2.1× the baseline instead of
        // 1.5× — and the admitted requests' tail is what the limit is for.
        let queue = if gradient < 1.0 {
            0.0
        } else {
            self.limit.sqrt()
        };
        let target = self.limit * gradient + queue;
        let smoothing = if target < self.limit {
            SMOOTHING_DOWN
        } else {
            SMOOTHING
        };
        let next = self.limit * (1.0 - smoothing) + target * smoothing;
        self.limit = next.clamp(self.bounds.min as f64, self.bounds.max as f64);
        tracing::debug!(
            limit = self.limit as usize,
            median_ms = short * 1e3,
            baseline_ms = long * 1e3,
            peak_in_flight,
            congested,
            "adaptive concurrency window"
        );
    }
}

/// The median of `xs` (not empty), reordering it.
fn median(xs: &mut [f64]) -> f64 {
    let mid = xs.len() / 2;
    let (_, m, _) = xs.select_nth_unstable_by(mid, f64::total_cmp);
    *m
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds {
        min: 16,
        initial: 100,
        max: 10_000,
    };
    /// A runtime whose run queue is long: the gateway's own CPU is busy.
    const BUSY: Duration = Duration::from_millis(2);

    /// Feed `windows` windows of `per_window` requests each taking `latency`, with `in_flight`
    /// in flight, advancing paused time; the limit after each window.
    async fn run(
        g: &mut Gradient,
        windows: usize,
        per_window: usize,
        latency: Duration,
        in_flight: impl Fn(usize) -> usize,
    ) -> Vec<usize> {
        let step = WINDOW / per_window as u32;
        let mut limits = Vec::new();
        for _ in 0..windows {
            for _ in 0..per_window {
                tokio::time::advance(step).await;
                let n = in_flight(g.limit());
                if let Some(l) = g.sample(Instant::now(), latency, n, BUSY) {
                    limits.push(l);
                }
            }
        }
        limits
    }

    #[tokio::test(start_paused = true)]
    async fn steady_latency_under_load_never_shrinks_the_limit() {
        let mut g = Gradient::new(BOUNDS, Instant::now());
        // Busy (in flight = the limit) at a steady 2 ms: the limit only grows.
        let limits = run(&mut g, 50, 20, Duration::from_millis(2), |l| l).await;
        assert!(!limits.is_empty());
        assert!(limits.windows(2).all(|w| w[1] >= w[0]), "{limits:?}");
        assert!(limits.iter().all(|&l| l >= BOUNDS.initial), "{limits:?}");
        assert!(g.limit() > BOUNDS.initial, "grew: {}", g.limit());
    }

    #[tokio::test(start_paused = true)]
    async fn latency_doubling_under_load_lowers_the_limit_and_recovery_raises_it() {
        let mut g = Gradient::new(BOUNDS, Instant::now());
        run(&mut g, 20, 20, Duration::from_millis(2), |l| l).await;
        let before = g.limit();
        // Queueing: latency doubles while every slot is busy.
        run(&mut g, 10, 20, Duration::from_millis(4), |l| l).await;
        let during = g.limit();
        assert!(during < before, "{during} !< {before}");
        // Latency stays up longer: never below the floor (the baseline creeps up meanwhile).
        let limits = run(&mut g, 100, 20, Duration::from_millis(4), |l| l).await;
        assert!(limits.iter().all(|&l| l >= BOUNDS.min), "{limits:?}");
        let low = g.limit();
        // Back to 2 ms: the limit rises again.
        run(&mut g, 20, 20, Duration::from_millis(2), |l| l).await;
        assert!(g.limit() > low, "{} !> {low}", g.limit());
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_tolerance_a_small_limit_falls_instead_of_growing_by_its_queue_allowance() {
        // A congested gateway's limit is small: 13 in flight keep its core busy.
        let bounds = Bounds {
            min: 4,
            initial: 13,
            max: 10_000,
        };
        let mut g = Gradient::new(bounds, Instant::now());
        // The baseline: 2 ms, measured while little was in flight (the limit does not move).
        let limits = run(&mut g, 20, 20, Duration::from_millis(2), |_| 1).await;
        assert!(limits.iter().all(|&l| l == 13), "{limits:?}");
        // Then 1.8× the baseline with the limit in flight: past the 1.5× tolerance, so the
        // limit must fall. With Gradient2's √limit added regardless it would rise
        // (13 × 1.5 / 1.8 + √13 ≈ 14.4) and settle near 2.1× the baseline.
        let limits = run(&mut g, 5, 20, Duration::from_micros(3600), |l| l).await;
        assert!(limits[0] < 13, "{limits:?}");
        assert!(limits.windows(2).all(|w| w[1] <= w[0]), "{limits:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn slow_requests_at_low_concurrency_change_nothing() {
        let mut g = Gradient::new(BOUNDS, Instant::now());
        run(&mut g, 20, 20, Duration::from_millis(2), |_| 5).await;
        let before = g.limit();
        // A slow upstream: every request takes 10× longer, but few are in flight.
        run(&mut g, 50, 20, Duration::from_millis(20), |_| 5).await;
        assert_eq!(g.limit(), before);
    }

    #[tokio::test(start_paused = true)]
    async fn a_latency_rise_while_the_runtime_is_idle_does_not_shrink_the_limit() {
        let mut g = Gradient::new(BOUNDS, Instant::now());
        run(&mut g, 20, 20, Duration::from_millis(2), |l| l).await;
        let before = g.limit();
        // Busy with requests that wait 5× longer on an upstream, the runtime idle meanwhile.
        let step = WINDOW / 20;
        for _ in 0..(50 * 20) {
            tokio::time::advance(step).await;
            let n = g.limit();
            let _ = g.sample(Instant::now(), Duration::from_millis(10), n, Duration::ZERO);
        }
        assert!(g.limit() >= before, "{} < {before}", g.limit());
        // The same with the runtime congested: it falls.
        run(&mut g, 10, 20, Duration::from_millis(10), |l| l).await;
        assert!(g.limit() < before, "{} !< {before}", g.limit());
    }

    #[tokio::test(start_paused = true)]
    async fn a_minority_of_slow_requests_does_not_move_the_limit_down() {
        let mut g = Gradient::new(BOUNDS, Instant::now());
        run(&mut g, 20, 20, Duration::from_millis(2), |l| l).await;
        let before = g.limit();
        // One request in four waits 500 ms on a slow upstream: the median does not move.
        let step = WINDOW / 20;
        for i in 0..400u32 {
            tokio::time::advance(step).await;
            let latency = if i % 4 == 0 {
                Duration::from_millis(500)
            } else {
                Duration::from_millis(2)
            };
            let _ = g.sample(Instant::now(), latency, g.limit(), BUSY);
        }
        assert!(g.limit() >= before, "{} < {before}", g.limit());
    }

    /// Why answers that cost nothing must not be samples (the handler releases the permits of
    /// requests no route serves): windows flooded with 20 µs answers drag the baseline down,
    /// and the routed requests' unchanged 2 ms then reads as a 100× rise.
    #[tokio::test(start_paused = true)]
    async fn a_flood_of_free_answers_would_drag_the_baseline_down() {
        let mut g = Gradient::new(BOUNDS, Instant::now());
        run(&mut g, 20, 20, Duration::from_millis(2), |l| l).await;
        let before = g.limit();
        run(&mut g, 10, 20, Duration::from_micros(20), |l| l).await;
        assert!(g.baseline().expect("measured") < Duration::from_micros(100));
        run(&mut g, 5, 20, Duration::from_millis(2), |l| l).await;
        assert!(g.limit() < before / 4, "{} vs {before}", g.limit());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lasting_change_of_level_becomes_the_new_baseline() {
        let mut g = Gradient::new(BOUNDS, Instant::now());
        run(&mut g, 20, 20, Duration::from_millis(2), |l| l).await;
        // A lasting 3× slower level, busy throughout: the limit falls to the floor at worst…
        run(&mut g, 600, 20, Duration::from_millis(6), |l| l).await;
        let baseline = g.baseline().expect("measured");
        // … and within ~60 s the baseline is close enough to the new level that it grows again.
        assert!(baseline > Duration::from_millis(4), "{baseline:?}");
        let low = g.limit();
        run(&mut g, 50, 20, Duration::from_millis(6), |l| l).await;
        assert!(g.limit() > low, "{} !> {low}", g.limit());
    }

    #[tokio::test(start_paused = true)]
    async fn few_samples_or_zero_latencies_do_not_close_or_break_a_window() {
        let mut g = Gradient::new(BOUNDS, Instant::now());
        // Nine samples over a second: not enough for a window.
        for _ in 0..9 {
            tokio::time::advance(Duration::from_millis(111)).await;
            assert_eq!(
                g.sample(Instant::now(), Duration::from_millis(1), 100, BUSY),
                None
            );
        }
        // Zero latencies: windows close but nothing changes.
        let mut g = Gradient::new(BOUNDS, Instant::now());
        run(&mut g, 5, 20, Duration::ZERO, |l| l).await;
        assert_eq!(g.limit(), BOUNDS.initial);
        assert!(g.baseline().is_none());
    }

    #[test]
    fn bounds_are_made_consistent() {
        let now = Instant::now();
        let g = Gradient::new(
            Bounds {
                min: 0,
                initial: 0,
                max: 0,
            },
            now,
        );
        assert_eq!(g.limit(), 1);
        let g = Gradient::new(
            Bounds {
                min: 50,
                initial: 10,
                max: 20,
            },
            now,
        );
        assert_eq!(g.limit(), 50);
    }
}
