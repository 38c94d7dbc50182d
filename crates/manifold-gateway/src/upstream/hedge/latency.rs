//! An upstream's live latency percentile, from its own recent good answers: what `hedge.after =
//! "p95"` waits for before sending a second attempt.
//!
//! A ring of the last [`RING`] latencies (microseconds, one relaxed store per answer) and the
//! percentile computed from it every [`EVERY`] answers, cached in one atomic: reading the
//! estimate on every call costs one load; recomputing (a copy and a selection over 256 values)
//! is amortised over 16 answers. No lock: a racing recompute or a torn window only mixes
//! samples of the same recent past. Until [`MIN_SAMPLES`] answers were seen, there is no
//! estimate and the hedge waits a fixed [`FALLBACK`].

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Recent answers kept.
pub(crate) const RING: usize = 256;
/// Answers needed before the percentile is trusted.
pub(crate) const MIN_SAMPLES: u64 = 32;
/// The percentile is recomputed every this many answers.
pub(crate) const EVERY: u64 = 16;
/// The hedge delay while there is no estimate yet: a typical p95 for a service answering in
/// tens of milliseconds, short enough to rescue a straggler and long enough not to double a
/// cold start's traffic.
pub(crate) const FALLBACK: Duration = Duration::from_millis(50);

const NO_ESTIMATE: u64 = u64::MAX;

/// Recent latencies of one upstream and their `percentile`.
#[derive(Debug)]
pub(crate) struct Latency {
    /// In (0, 100].
    percentile: f64,
    ring: Box<[AtomicU32]>,
    seen: AtomicU64,
    estimate_us: AtomicU64,
}

impl Latency {
    /// `percentile` is clamped into (0, 100] (NaN becomes 100: hedge late rather than often).
    pub(crate) fn new(percentile: f64) -> Self {
        let percentile = if percentile.is_nan() {
            100.0
        } else {
            percentile.clamp(f64::MIN_POSITIVE, 100.0)
        };
        Latency {
            percentile,
            ring: (0..RING).map(|_| AtomicU32::new(0)).collect(),
            seen: AtomicU64::new(0),
            estimate_us: AtomicU64::new(NO_ESTIMATE),
        }
    }

    /// Count one good answer that took `took`.
    pub(crate) fn record(&self, took: Duration) {
        let us = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        // The remainder is below RING.
        self.ring[(n % RING as u64) as usize].store(us, Ordering::Relaxed);
        let seen = n + 1;
        if seen >= MIN_SAMPLES && seen.is_multiple_of(EVERY) {
            self.recompute(seen);
        }
    }

    /// The percentile of the recent answers, once there are enough.
    pub(crate) fn estimate(&self) -> Option<Duration> {
        match self.estimate_us.load(Ordering::Relaxed) {
            NO_ESTIMATE => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    fn recompute(&self, seen: u64) {
        let n = usize::try_from(seen).unwrap_or(RING).min(RING);
        let mut samples = [0u32; RING];
        for (s, cell) in samples.iter_mut().zip(self.ring.iter()).take(n) {
            *s = cell.load(Ordering::Relaxed);
        }
        let samples = &mut samples[..n];
        // The nearest-rank percentile: the smallest sample at or above `percentile`% of them.
        let rank = ((self.percentile / 100.0) * n as f64).ceil() as usize;
        let k = rank.clamp(1, n) - 1;
        let (_, v, _) = samples.select_nth_unstable(k);
        self.estimate_us.store(u64::from(*v), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn no_estimate_until_enough_answers_then_the_percentile() {
        let l = Latency::new(95.0);
        for _ in 0..MIN_SAMPLES - 1 {
            l.record(10 * MS);
        }
        assert_eq!(l.estimate(), None);
        // 100 answers: 1..=100 ms; p95 is 95 ms.
        let l = Latency::new(95.0);
        for ms in 1..=100u64 {
            l.record(Duration::from_millis(ms));
        }
        // Recomputed at 96 answers (1..=96): rank ceil(0.95 × 96) = 92.
        assert_eq!(l.estimate(), Some(92 * MS));
        for ms in 101..=112u64 {
            l.record(Duration::from_millis(ms));
        }
        assert_eq!(l.estimate(), Some(107 * MS), "at 112: rank 107");
    }

    #[test]
    fn the_ring_forgets_the_old_past() {
        let l = Latency::new(50.0);
        for _ in 0..RING {
            l.record(Duration::from_secs(1));
        }
        assert_eq!(l.estimate(), Some(Duration::from_secs(1)));
        for _ in 0..RING {
            l.record(2 * MS);
        }
        assert_eq!(l.estimate(), Some(2 * MS));
        // Absurd latencies saturate; absurd percentiles are clamped.
        l.record(Duration::MAX);
        let l = Latency::new(f64::NAN);
        for ms in 1..=32u64 {
            l.record(Duration::from_millis(ms));
        }
        assert_eq!(l.estimate(), Some(32 * MS));
    }
}
