//! The main listener's concurrency limit (`[server] concurrency`): how many requests the
//! gateway works on at once. `max_connections` bounds sockets, but one HTTP/2 connection may
//! carry 200 streams, each starting a composition; every request (every stream) takes a
//! [`Permit`] before any work, and past the limit it is answered 503 with `Retry-After` at
//! once, never queued: a queue would only add its wait to every answer and hold the memory of
//! requests whose clients may have given up.
//!
//! The permit is taken before routing (an unknown path's 404 costs as little as the 503 would,
//! so there is nothing to gain by routing first) and given back when the answer's head is
//! ready: streaming a proxied body to the client is bounded by the connection limit and flow
//! control, and a slow reader must not count as the gateway's work.
//!
//! Only the client listener is limited: the admin listener (`/healthz`, `/readyz`, `/config`)
//! has its own connection limit and is never shed, so probes answer while the gateway sheds.
//! The client listener serves no health endpoint of its own.
//!
//! `concurrency = N` admits exactly N; `"adaptive"` (the default) moves the limit with the
//! latency of admitted requests ([`gradient`]), less the time they waited on their clients'
//! bodies ([`wait`]): a client sending slowly must not make the gateway look slow. While it
//! waits on its client's body, a request lends its slot back ([`wait`]): it does no work.

mod gradient;
mod parse;
mod wait;

use gradient::{Bounds, Gradient};
use manifold_config::policy::Concurrency;
pub(crate) use parse::{ParseBudget, Refused as ParseRefused};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
pub(crate) use wait::{ClientWait, Metered, WaitMeter};

/// What a shed request's `Retry-After` says: soon, since an overload passes in seconds.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The adaptive limit's floor, per core (and at least `ADAPTIVE_MIN`). A gateway whose own work
/// per request is a fraction of a millisecond keeps a core busy with two or three requests in
/// flight (Little's law: 4,000 req/s × 0.5 ms = 2), so a higher floor would let a queue form
/// under overload and the limit could never protect latency. A healthy gateway never meets the
/// floor: the limit starts well above it and only falls while the gateway's own CPU is
/// congested *and* latency has risen with at least half the limit in flight.
const ADAPTIVE_MIN_PER_CORE: usize = 2;
const ADAPTIVE_MIN: usize = 4;
/// Where the adaptive limit starts: generous, so a burst at start is not shed before anything
/// was measured.
const ADAPTIVE_INITIAL: usize = 1000;
/// The adaptive limit's ceiling: the connection limit times a few streams each (HTTP/1 can
/// never have more in flight than connections; HTTP/2 can), capped.
const STREAMS_PER_CONNECTION: u64 = 4;
const ADAPTIVE_MAX_CAP: u64 = 1_000_000;
/// Shedding is logged at most this often (a warn per shed request would add to the overload).
const SHED_LOG_EVERY: Duration = Duration::from_secs(10);
/// How often the runtime's scheduling lag is probed.
const PROBE_EVERY: Duration = Duration::from_millis(10);
/// Probes in a row that found nothing in flight before the probe stops until the next request
/// (100 ms): an idle gateway should not wake its runtime a hundred times a second.
const QUIET_PROBES: u32 = 10;

/// The limit and what is in flight under it.
#[derive(Debug)]
pub(crate) struct Limiter {
    in_flight: AtomicUsize,
    limit: AtomicUsize,
    /// Slots lent back by requests waiting on their clients' bodies ([`wait`]), and how many
    /// may be at once.
    lent: AtomicUsize,
    lent_max: usize,
    /// The controller of an adaptive limit (none for a fixed one).
    adaptive: Option<Mutex<Gradient>>,
    /// The runtime's scheduling lag, µs, as last probed (adaptive only).
    lag_us: AtomicU64,
    /// Where shed requests are counted (`Stats::shed_requests`).
    stats: Arc<crate::respond::Stats>,
    /// When shedding was last logged, and the count then.
    logged: Mutex<(Option<Instant>, u64)>,
    /// The probe has stopped for want of traffic and waits on `probe_wake` (adaptive only).
    probe_idle: AtomicBool,
    /// Where an idle probe waits; shared with it, so that it can wait without keeping the
    /// limiter alive (the limiter's drop wakes it to end).
    probe_wake: Arc<Notify>,
}

impl Limiter {
    /// The limit `[server] concurrency` asks for; an adaptive one's ceiling follows from
    /// `max_connections`, its floor from the cores. An adaptive limit probes the runtime's
    /// scheduling lag ([`probe`]) for as long as the limiter lives.
    pub(crate) fn new(
        concurrency: Concurrency,
        max_connections: u64,
        stats: Arc<crate::respond::Stats>,
    ) -> Arc<Self> {
        let limiter = Arc::new(Self::without_probe(concurrency, max_connections, stats));
        if limiter.adaptive.is_some() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(probe(
                    Arc::downgrade(&limiter),
                    Arc::clone(&limiter.probe_wake),
                ));
            }
        }
        limiter
    }

    fn without_probe(
        concurrency: Concurrency,
        max_connections: u64,
        stats: Arc<crate::respond::Stats>,
    ) -> Self {
        let ceiling = max_connections
            .saturating_mul(STREAMS_PER_CONNECTION)
            .min(ADAPTIVE_MAX_CAP);
        let (limit, adaptive) = match concurrency {
            Concurrency::Fixed(n) => (usize::try_from(n).unwrap_or(usize::MAX).max(1), None),
            Concurrency::Adaptive => {
                let max = ceiling;
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let bounds = Bounds {
                    min: cores
                        .saturating_mul(ADAPTIVE_MIN_PER_CORE)
                        .clamp(ADAPTIVE_MIN, ADAPTIVE_INITIAL),
                    initial: ADAPTIVE_INITIAL,
                    max: usize::try_from(max).unwrap_or(usize::MAX),
                };
                let g = Gradient::new(bounds, Instant::now());
                (g.limit(), Some(Mutex::new(g)))
            }
        };
        Limiter {
            in_flight: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            lent: AtomicUsize::new(0),
            lent_max: usize::try_from(ceiling).unwrap_or(usize::MAX),
            adaptive,
            lag_us: AtomicU64::new(0),
            stats,
            logged: Mutex::new((None, 0)),
            probe_idle: AtomicBool::new(false),
            probe_wake: Arc::new(Notify::new()),
        }
    }

    /// A permit for one request, or `None` when the limit is reached (the caller answers 503).
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let limit = self.limit.load(Ordering::Relaxed);
        let before = self.in_flight.fetch_add(1, Ordering::SeqCst);
        // After the increment, which the probe reads after raising the flag: either it sees
        // this request in flight or this request sees it idle (a plain load on x86).
        if self.probe_idle.load(Ordering::SeqCst) {
            self.wake_probe();
        }
        if before >= limit {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.count_shed(limit);
            return None;
        }
        Some(Permit {
            limiter: Arc::clone(self),
            start: Instant::now(),
            wait: None,
            settled: false,
        })
    }

    /// Restart an idle probe: traffic is back.
    #[cold]
    fn wake_probe(&self) {
        if self.probe_idle.swap(false, Ordering::SeqCst) {
            self.probe_wake.notify_one();
        }
    }

    /// The current limit.
    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// The adaptive limit's baseline latency, once measured.
    #[cfg(test)]
    pub(crate) fn baseline(&self) -> Option<Duration> {
        let g = self.adaptive.as_ref()?.lock().ok()?;
        g.baseline()
    }

    /// Requests holding a permit now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn count_shed(&self, limit: usize) {
        let total = self.stats.count_shed();
        let now = Instant::now();
        let Ok(mut logged) = self.logged.try_lock() else {
            return;
        };
        let due = logged
            .0
            .is_none_or(|at| now.saturating_duration_since(at) >= SHED_LOG_EVERY);
        if due {
            tracing::warn!(
                limit,
                shed = total - logged.1,
                adaptive = self.adaptive.is_some(),
                "concurrency limit reached: shedding requests with 503 + Retry-After"
            );
            *logged = (Some(now), total);
        }
    }
}

/// One admitted request. [`Permit::finish`] gives it back with the request's latency (for the
/// adaptive limit); dropped unfinished (the client went away, the request was cancelled), it is
/// given back with its time so far as a lower bound, counted only when that is already slower
/// than the baseline ([`Gradient::sample_at_least`]).
///
/// The latency is what the gateway and its upstreams control: from admission to the answer's
/// head, less the time spent waiting on the client's body ([`ClientWait`]). The answer's body
/// is not in it either (the permit is given back at its head).
#[derive(Debug)]
pub(crate) struct Permit {
    limiter: Arc<Limiter>,
    start: Instant,
    /// The time this request waited on its client's body, when it has one.
    wait: Option<ClientWait>,
    /// Finished or released: nothing left to record on drop.
    settled: bool,
}

impl Permit {
    /// When the request was admitted: its start, for whatever else times it (its trace), so
    /// that the clock is read once at a request's start.
    pub(crate) fn started(&self) -> Instant {
        self.start
    }

    /// Where the request's body reader counts the time it waits on the client (kept out of
    /// the latency the adaptive limit measures).
    pub(crate) fn client_wait(&mut self) -> ClientWait {
        let limiter = &self.limiter;
        self.wait
            .get_or_insert_with(|| ClientWait::lending(limiter))
            .clone()
    }

    /// The answer's head is ready (at `ended`, when its caller read the clock for it already):
    /// record its latency and give the slot back.
    pub(crate) fn finish(mut self, ended: Option<Instant>) {
        self.settled = true;
        self.record(ended.unwrap_or_else(Instant::now), false);
        // `Drop` gives the slot back.
    }

    /// Give the slot back without a latency: a request whose duration says nothing about the
    /// gateway's work (a status read, a long poll).
    pub(crate) fn release(mut self) {
        self.settled = true;
    }

    /// Feed this request's latency at `now` to the adaptive limit (`at_least`: it did not end).
    fn record(&self, now: Instant, at_least: bool) {
        let l = &self.limiter;
        let Some(adaptive) = &l.adaptive else {
            return;
        };
        let in_flight = l.in_flight.load(Ordering::Relaxed);
        let lag = Duration::from_micros(l.lag_us.load(Ordering::Relaxed));
        let waited = self.wait.as_ref().map_or(Duration::ZERO, |w| w.waited(now));
        let latency = now
            .saturating_duration_since(self.start)
            .saturating_sub(waited);
        if let Ok(mut g) = adaptive.lock() {
            let next = if at_least {
                g.sample_at_least(now, latency, in_flight, lag)
            } else {
                g.sample(now, latency, in_flight, lag)
            };
            if let Some(limit) = next {
                l.limit.store(limit, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Limiter {
    fn drop(&mut self) {
        // An idle probe waits on the notify, not on a timer: wake it to find the limiter gone.
        self.probe_wake.notify_one();
    }
}

/// Measure, every `PROBE_EVERY`, how long a task that yields waits to run again: the time a
/// newly readable connection or a woken request waits for the gateway's CPU. It is the signal
/// that the gateway's *own* work queues (a slow upstream leaves it near zero), and it also
/// covers the wait before a request is read, which no request's latency includes. Smoothed
/// (EWMA, ¼ per probe); ends with the limiter.
///
/// Why it stops when idle: with nothing in flight for [`QUIET_PROBES`] probes there is no
/// latency to protect, and probing cost an idle gateway ~200 wake-ups a second (0.8 % of a core
/// here). It then reports no lag and waits for the next admitted request to restart it
/// ([`Limiter::try_acquire`]); a restarted probe measures within `PROBE_EVERY`.
async fn probe(limiter: std::sync::Weak<Limiter>, wake: Arc<Notify>) {
    let mut smoothed = 0.0f64;
    let mut quiet = 0u32;
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let start = Instant::now();
        tokio::task::yield_now().await;
        let lag = start.elapsed().as_secs_f64() * 1e6;
        smoothed += (lag - smoothed) / 4.0;
        let Some(l) = limiter.upgrade() else {
            return;
        };
        l.lag_us.store(smoothed as u64, Ordering::Relaxed);
        if l.in_flight.load(Ordering::SeqCst) != 0 {
            quiet = 0;
            continue;
        }
        quiet += 1;
        if quiet < QUIET_PROBES {
            continue;
        }
        l.probe_idle.store(true, Ordering::SeqCst);
        // A request admitted before the flag was up did not see it: it is in flight now.
        if l.in_flight.load(Ordering::SeqCst) != 0 {
            l.probe_idle.store(false, Ordering::SeqCst);
            quiet = 0;
            continue;
        }
        l.lag_us.store(0, Ordering::Relaxed);
        // No strong reference while waiting: the limiter's drop wakes this to end.
        drop(l);
        wake.notified().await;
        smoothed = 0.0;
        quiet = 0;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.settled && self.limiter.adaptive.is_some() {
            // Cancelled: the client went away before the answer's head was ready.
            self.record(Instant::now(), true);
        }
        // A slot lent while the request waited on its client is out of the count already.
        if !self.wait.as_ref().is_some_and(ClientWait::settle) {
            self.limiter.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod socket_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_fixed_limit_admits_exactly_n() {
        let l = Limiter::new(Concurrency::Fixed(2), 8192, Arc::default());
        let a = l.try_acquire().expect("first");
        let b = l.try_acquire().expect("second");
        assert!(l.try_acquire().is_none());
        assert!(l.try_acquire().is_none());
        assert_eq!(l.stats.shed_requests(), 2);
        a.finish(None);
        let c = l.try_acquire().expect("a slot came back");
        assert!(l.try_acquire().is_none());
        drop(b);
        drop(c);
        assert_eq!(l.in_flight.load(Ordering::Relaxed), 0);
        assert_eq!(l.limit(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_adaptive_limit_starts_generous_and_is_bounded_by_connections() {
        let l = Limiter::new(Concurrency::Adaptive, 8192, Arc::default());
        assert_eq!(l.limit(), ADAPTIVE_INITIAL);
        // A tiny connection limit caps the ceiling, never below the floor.
        let l = Limiter::new(Concurrency::Adaptive, 1, Arc::default());
        assert!(l.limit() >= ADAPTIVE_MIN && l.limit() < 16, "{}", l.limit());
        let l = Limiter::new(Concurrency::Adaptive, u64::MAX, Arc::default());
        assert_eq!(l.limit(), ADAPTIVE_INITIAL);
    }

    #[tokio::test(start_paused = true)]
    async fn finished_permits_feed_the_adaptive_limit() {
        let l = Limiter::new(Concurrency::Adaptive, 8192, Arc::default());
        // Windows of 600 requests in flight at once (above half the limit), each taking 2 ms:
        // steady latency under load, so the limit grows.
        for _ in 0..20 {
            let permits: Vec<Permit> = (0..600).filter_map(|_| l.try_acquire()).collect();
            assert_eq!(permits.len(), 600);
            tokio::time::advance(Duration::from_millis(2)).await;
            for p in permits {
                p.finish(None);
            }
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        assert!(l.limit() > ADAPTIVE_INITIAL, "{}", l.limit());
        assert_eq!(l.in_flight.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn the_probe_measures_a_busy_runtime_and_ends_with_the_limiter() {
        let l = Limiter::new(Concurrency::Adaptive, 8192, Arc::default());
        // A request in flight, so the probe keeps probing.
        let busy = l.try_acquire().expect("admitted");
        // A task that hogs this (current-thread) runtime for 5 ms at a time: the probe's
        // yield waits behind it.
        let hog = tokio::spawn(async {
            for _ in 0..40 {
                std::thread::sleep(Duration::from_millis(5));
                tokio::task::yield_now().await;
            }
        });
        hog.await.expect("the hog");
        assert!(
            l.lag_us.load(Ordering::Relaxed) > 500,
            "{} µs",
            l.lag_us.load(Ordering::Relaxed)
        );
        drop(busy);
        let weak = Arc::downgrade(&l);
        drop(l);
        // The probe held no strong reference; it ends at its next tick.
        tokio::time::sleep(PROBE_EVERY * 3).await;
        assert!(weak.upgrade().is_none());
    }

    /// An adaptive limiter without its probe, its runtime lag pinned at `lag` (the gateway's
    /// CPU congested or not), and a baseline of 2 ms measured under load.
    async fn pinned(lag: Duration) -> Arc<Limiter> {
        let l = Arc::new(Limiter::without_probe(
            Concurrency::Adaptive,
            8192,
            Arc::default(),
        ));
        l.lag_us.store(lag.as_micros() as u64, Ordering::Relaxed);
        windows(&l, 5, |_| Duration::ZERO, Duration::from_millis(2), true).await;
        assert!(
            l.limit() >= ADAPTIVE_INITIAL,
            "a steady baseline: {}",
            l.limit()
        );
        l
    }

    /// `n` windows of as many requests in flight at once as the limit admits: each waits
    /// `client(i)` on its client's body, then the gateway works `work` on it; `finish`: they
    /// end with an answer (else their clients go away).
    async fn windows(
        l: &Arc<Limiter>,
        n: usize,
        client: impl Fn(usize) -> Duration,
        work: Duration,
        finish: bool,
    ) {
        for w in 0..n {
            let n = l.limit();
            let mut permits: Vec<Permit> = (0..n).filter_map(|_| l.try_acquire()).collect();
            assert_eq!(permits.len(), n);
            let mut meters: Vec<WaitMeter> = permits
                .iter_mut()
                .map(|p| p.client_wait().meter())
                .collect();
            let waits = client(w);
            for m in &mut meters {
                m.polled(!waits.is_zero());
            }
            tokio::time::advance(waits).await;
            // A client that went away did so while still sending (when it sent slowly).
            if finish || waits.is_zero() {
                for m in &mut meters {
                    m.polled(false);
                }
            }
            tokio::time::advance(work).await;
            for p in permits {
                if finish {
                    p.finish(None);
                } else {
                    drop(p);
                }
            }
            drop(meters);
            tokio::time::advance(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn clients_trickling_their_bodies_do_not_shrink_the_limit() {
        // The gateway's CPU is congested (the limit may fall), and every request's client takes
        // 500 ms to send its body while the gateway and its upstream answer in 2 ms.
        let l = pinned(Duration::from_millis(2)).await;
        let base = l.limit();
        let slow_client = |_| Duration::from_millis(500);
        windows(&l, 10, slow_client, Duration::from_millis(2), true).await;
        assert!(l.limit() >= base, "{} < {base}", l.limit());
        // The gateway's own latency rising is still seen, slow clients or not.
        windows(&l, 5, slow_client, Duration::from_millis(20), true).await;
        assert!(l.limit() < base, "{} !< {base}", l.limit());
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_requests_count_only_as_evidence_of_slowness() {
        let l = pinned(Duration::from_millis(2)).await;
        let base = l.limit();
        // Clients that go away at once are no fast answers: nothing moves.
        windows(&l, 10, |_| Duration::ZERO, Duration::ZERO, false).await;
        assert_eq!(l.limit(), base);
        // Nor do clients that go away while still sending their bodies (their wait is theirs).
        windows(&l, 10, |_| Duration::from_secs(1), Duration::ZERO, false).await;
        assert_eq!(l.limit(), base);
        // Clients that give up on requests the gateway has worked on for 20 ms (10× the
        // baseline): that slowness counts, and the congested gateway's limit falls.
        windows(&l, 5, |_| Duration::ZERO, Duration::from_millis(20), false).await;
        assert!(l.limit() < base, "{} !< {base}", l.limit());
        assert_eq!(l.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_permit_records_nothing() {
        let l = pinned(Duration::from_millis(2)).await;
        let base = l.limit();
        for _ in 0..5 {
            let permits: Vec<Permit> = (0..base).filter_map(|_| l.try_acquire()).collect();
            tokio::time::advance(Duration::from_millis(50)).await;
            permits.into_iter().for_each(Permit::release);
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        assert_eq!(l.limit(), base);
        assert_eq!(l.in_flight(), 0);
    }

    /// Let the probe run through `d` of paused time.
    async fn run_for(d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            tokio::time::sleep(PROBE_EVERY / 2).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_probe_stops_while_nothing_is_in_flight_and_restarts_with_a_request() {
        let l = Limiter::new(Concurrency::Adaptive, 8192, Arc::default());
        let idle = |l: &Limiter| l.probe_idle.load(Ordering::SeqCst);
        run_for(PROBE_EVERY * (QUIET_PROBES + 2)).await;
        assert!(idle(&l), "no traffic: the probe waits");
        // A request restarts it, and while it is in flight the probe keeps probing.
        let p = l.try_acquire().expect("admitted");
        assert!(!idle(&l));
        run_for(PROBE_EVERY * (QUIET_PROBES * 3)).await;
        assert!(!idle(&l), "a request in flight: the probe keeps going");
        p.finish(None);
        run_for(PROBE_EVERY * (QUIET_PROBES + 2)).await;
        assert!(idle(&l));
        // A shed request is traffic too (the overload the probe is for): it restarts it.
        l.limit.store(0, Ordering::Relaxed);
        assert!(l.try_acquire().is_none());
        assert!(!idle(&l));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_probe_ends_with_the_limiter() {
        let l = Limiter::new(Concurrency::Adaptive, 8192, Arc::default());
        let wake = Arc::clone(&l.probe_wake);
        run_for(PROBE_EVERY * (QUIET_PROBES + 2)).await;
        assert!(l.probe_idle.load(Ordering::SeqCst));
        assert_eq!(
            Arc::strong_count(&wake),
            3,
            "the limiter's, the probe's and ours"
        );
        drop(l);
        run_for(PROBE_EVERY * 3).await;
        assert_eq!(Arc::strong_count(&wake), 1, "the probe ended");
    }
}
