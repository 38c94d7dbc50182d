//! The retry budget of Finagle and linkerd: over a sliding window, retries may add at most
//! `ratio` of the upstream's requests, plus a reserve of `min_per_second` × window so that a
//! quiet upstream can still be retried. When an upstream fails everything, its load grows by
//! `ratio` at most instead of multiplying by `attempts` (no retry storm).
//!
//! Why counters in one-second buckets rather than Finagle's token bucket with a TTL: both give
//! the same bound; buckets need no lock. Each bucket is two atomics, each packing the second it
//! belongs to with its count, so rolling a bucket over to a new second and counting in it are
//! one compare-and-swap, and a stale bucket is recognised by its stamp. A withdrawal counts
//! itself first and takes itself back if the sum then exceeds the allowance, so concurrent
//! retries may refuse each other but never overdraw together.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// One-second buckets over the window.
const BUCKETS: usize = 10;
/// The bits of a packed cell that hold the count (the rest hold the second).
const COUNT_BITS: u32 = 40;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
/// Seconds are stamped modulo 2^24 (194 days); only differences under [`BUCKETS`] matter.
const STAMP_MASK: u64 = (1 << (64 - COUNT_BITS)) - 1;

/// A retry (or hedge) budget shared by every call to one upstream.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    ratio: f64,
    /// `min_per_second` × window, in retries.
    reserve: f64,
    epoch: Instant,
    requests: [AtomicU64; BUCKETS],
    retries: [AtomicU64; BUCKETS],
}

impl RetryBudget {
    /// Retries ≤ `ratio` × requests + `min_per_second` × `window` (whole seconds, 1 to 10: the
    /// window is [`manifold_config::policy::BUDGET_WINDOW`]). A ratio that is not a finite
    /// number ≥ 0 allows no retry beyond the reserve.
    pub(crate) fn new(ratio: f64, min_per_second: u32, window: Duration) -> Self {
        let secs = window.as_secs().clamp(1, BUCKETS as u64);
        let ratio = if ratio.is_finite() && ratio > 0.0 {
            ratio
        } else {
            0.0
        };
        RetryBudget {
            ratio,
            reserve: f64::from(min_per_second) * secs as f64,
            epoch: Instant::now(),
            requests: Default::default(),
            retries: Default::default(),
        }
    }

    /// Count one request (a call, not an attempt).
    pub(crate) fn deposit(&self) {
        self.deposit_at(Instant::now());
    }

    /// Take one retry from the budget, if it allows one now.
    pub(crate) fn try_withdraw(&self) -> bool {
        self.try_withdraw_at(Instant::now())
    }

    pub(crate) fn deposit_at(&self, now: Instant) {
        let sec = self.second(now);
        add(&self.requests[slot(sec)], sec, 1);
    }

    pub(crate) fn try_withdraw_at(&self, now: Instant) -> bool {
        let sec = self.second(now);
        let allowed = |retries: u64| {
            let requests = sum(&self.requests, sec) as f64;
            retries as f64 <= self.ratio * requests + self.reserve
        };
        // Cheap refusal first, then count and check again (see the module's doc).
        if !allowed(sum(&self.retries, sec) + 1) {
            return false;
        }
        let cell = &self.retries[slot(sec)];
        add(cell, sec, 1);
        if allowed(sum(&self.retries, sec)) {
            return true;
        }
        add(cell, sec, -1);
        false
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs() & STAMP_MASK
    }
}

fn slot(sec: u64) -> usize {
    // `BUCKETS` fits any integer type; the remainder is below it.
    (sec % BUCKETS as u64) as usize
}

/// The count in `cell` if it belongs to the window ending at `sec`.
fn live(cell: u64, sec: u64) -> u64 {
    let stamp = cell >> COUNT_BITS;
    let age = sec.wrapping_sub(stamp) & STAMP_MASK;
    if age < BUCKETS as u64 {
        cell & COUNT_MASK
    } else {
        0
    }
}

fn sum(cells: &[AtomicU64; BUCKETS], sec: u64) -> u64 {
    cells
        .iter()
        .map(|c| live(c.load(Ordering::SeqCst), sec))
        .sum()
}

/// Add `delta` to the bucket of second `sec`, starting it over if it held an older second.
fn add(cell: &AtomicU64, sec: u64, delta: i64) {
    let _ = cell.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
        let count = if v >> COUNT_BITS == sec {
            v & COUNT_MASK
        } else {
            0
        };
        let count = count.saturating_add_signed(delta).min(COUNT_MASK);
        Some((sec << COUNT_BITS) | count)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const WINDOW: Duration = Duration::from_secs(10);

    #[test]
    fn a_quiet_upstream_gets_the_reserve_and_a_busy_one_the_ratio() {
        let b = RetryBudget::new(0.2, 1, WINDOW);
        let t0 = b.epoch;
        // No requests: the reserve of 1/s over 10 s.
        let granted = (0..50).filter(|_| b.try_withdraw_at(t0)).count();
        assert_eq!(granted, 10);
        // 100 requests in the window: 20 more.
        for _ in 0..100 {
            b.deposit_at(t0);
        }
        let granted = (0..50).filter(|_| b.try_withdraw_at(t0)).count();
        assert_eq!(granted, 20);
        // Ten seconds on, all of it has left the window.
        let later = t0 + WINDOW;
        let granted = (0..50).filter(|_| b.try_withdraw_at(later)).count();
        assert_eq!(granted, 10);
    }

    #[test]
    fn no_budget_means_no_retry() {
        for ratio in [0.0, -1.0, f64::NAN, f64::NEG_INFINITY] {
            let b = RetryBudget::new(ratio, 0, WINDOW);
            for _ in 0..100 {
                b.deposit_at(b.epoch);
            }
            assert!(!b.try_withdraw_at(b.epoch), "{ratio}");
        }
    }

    proptest! {
        /// Whatever the arrivals and outcomes: at every second a retry was granted, the ten
        /// seconds ending then hold at most `ratio` × their requests + `min_per_second` × 10
        /// retries; over the whole run, at most `ratio` × all requests + the reserve once per
        /// ten seconds. And when calls fail with a reserve, the budget is not merely refusing.
        #[test]
        fn retries_never_exceed_ratio_times_requests_plus_the_reserve(
            ratio in 0.0f64..1.0,
            min in 0u32..5,
            steps in proptest::collection::vec((0u64..700, proptest::bool::ANY, 0u8..4), 1..600),
        ) {
            let b = RetryBudget::new(ratio, min, WINDOW);
            let mut at = b.epoch;
            let secs = 1 + steps.iter().map(|s| s.0).sum::<u64>() / 1000;
            let mut requests = vec![0u64; secs as usize + 1];
            let mut retries = vec![0u64; secs as usize + 1];
            let mut failures = 0u64;
            for (gap_ms, fails, wanted) in steps {
                at += Duration::from_millis(gap_ms);
                let s = at.duration_since(b.epoch).as_secs() as usize;
                b.deposit_at(at);
                requests[s] += 1;
                if fails {
                    failures += u64::from(wanted > 0);
                    // A call tries up to `wanted` retries, stopping at the first refusal.
                    for _ in 0..wanted {
                        if !b.try_withdraw_at(at) {
                            break;
                        }
                        retries[s] += 1;
                    }
                }
            }
            let reserve = f64::from(min) * 10.0;
            for end in (0..requests.len()).filter(|&s| retries[s] > 0) {
                let start = end.saturating_sub(BUCKETS - 1);
                let req: u64 = requests[start..=end].iter().sum();
                let ret: u64 = retries[start..=end].iter().sum();
                prop_assert!(
                    ret as f64 <= ratio * req as f64 + reserve + 1e-9,
                    "{ret} retries for {req} requests in seconds {start}..={end}"
                );
            }
            let all_req: u64 = requests.iter().sum();
            let all_ret: u64 = retries.iter().sum();
            let windows = (requests.len() as f64 / 10.0).ceil() + 1.0;
            prop_assert!(all_ret as f64 <= ratio * all_req as f64 + reserve * windows + 1e-9);
            if min > 0 && failures > 0 {
                prop_assert!(retries.iter().sum::<u64>() > 0);
            }
        }
    }
}
