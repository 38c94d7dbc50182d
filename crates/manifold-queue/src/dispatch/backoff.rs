//! Exponential backoff with full jitter.
//!
//! After failure number `n` (1-based) the ceiling is `base · 2^(n-1)`, capped at `max`, and the
//! delay is uniform in `0..=ceiling` ("full jitter", AWS Architecture Blog, 2015): retries of
//! many tasks that failed together spread out instead of returning as one wave.

use std::time::Duration;

use rand::Rng;

/// The retry delay policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling after the first failure.
    pub base: Duration,
    /// Largest ceiling.
    pub max: Duration,
}

impl Backoff {
    /// The ceiling after `failures` failures (at least 1).
    pub fn ceiling(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(63);
        let factor = 1u64 << doublings;
        let base_ms = u64::try_from(self.base.as_millis()).unwrap_or(u64::MAX);
        let max_ms = u64::try_from(self.max.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(base_ms.saturating_mul(factor).min(max_ms))
    }

    /// A delay drawn uniformly from `0..=ceiling(failures)`.
    pub fn delay(&self, failures: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = u64::try_from(self.ceiling(failures).as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rng.random_range(0..=ceiling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn policy() -> Backoff {
        Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let b = policy();
        let ceilings: Vec<u64> = (1..=8).map(|n| b.ceiling(n).as_millis() as u64).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn delays_stay_under_the_ceiling_and_spread_out() {
        let b = policy();
        let mut rng = SmallRng::seed_from_u64(7);
        let delays: Vec<Duration> = (0..2000).map(|_| b.delay(4, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(800)));
        let low = delays
            .iter()
            .filter(|d| **d < Duration::from_millis(400))
            .count();
        // Uniform on 0..=800: about half below the middle.
        assert!((800..1200).contains(&low), "{low} of 2000 below the middle");
    }
}
