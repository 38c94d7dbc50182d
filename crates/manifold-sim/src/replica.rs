//! How one replica misbehaves on its own: errors, stragglers, and turning slow mid-run.
//!
//! A balancer, a circuit breaker, retries and hedges only show their worth against replicas that
//! differ: one failing part of its traffic, one whose requests now and then take twenty times
//! longer, one that turns slow while the load runs. These are per replica (an endpoint's own
//! `faults` are per endpoint and the same on every replica), drawn from the replica's own seeded
//! generator so a run repeats, and all off by default.

use std::time::Duration;

use rand::Rng;

use crate::config::ReplicaConfig;
use crate::latency::MAX_LATENCY;

/// The largest multiplier any scale may be.
const MAX_SCALE: f64 = 1000.0;

/// Check a replica's settings; the message starts with the key at fault.
pub(crate) fn validate(r: &ReplicaConfig) -> Result<(), String> {
    let scale = |key: &str, v: f64, min: f64| {
        if v.is_finite() && (min..=MAX_SCALE).contains(&v) {
            Ok(())
        } else {
            Err(format!(
                "{key} must be between {min} and {MAX_SCALE}, got {v}"
            ))
        }
    };
    let rate = |key: &str, v: f64| {
        if v.is_finite() && (0.0..=1.0).contains(&v) {
            Ok(())
        } else {
            Err(format!("{key} must be a probability in 0..=1, got {v}"))
        }
    };
    scale("latency_scale", r.latency_scale, 0.0)?;
    rate("error_rate", r.error_rate)?;
    if !(400..=599).contains(&r.error_status) {
        return Err(format!(
            "error_status must be an error status (400–599), got {}",
            r.error_status
        ));
    }
    rate("straggler_rate", r.straggler_rate)?;
    // A straggler is slower by definition; a replica may turn faster (a recovery), so
    // `slow_scale` may be below 1.
    scale("straggler_scale", r.straggler_scale, 1.0)?;
    scale("slow_scale", r.slow_scale, 0.0)?;
    Ok(())
}

/// A replica's behaviour, ready to draw from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Behaviour {
    pub(crate) latency_scale: f64,
    error_rate: f64,
    error_status: u16,
    straggler_rate: f64,
    straggler_scale: f64,
    slow_after: Option<Duration>,
    slow_scale: f64,
}

/// What one request on this replica is dealt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Draw {
    /// Multiplies the endpoint's sampled latency.
    pub(crate) scale: f64,
    /// Answer this status instead of the reply (unless the endpoint drew a fault of its own).
    pub(crate) error: Option<u16>,
    /// Whether the request is a straggler.
    pub(crate) straggler: bool,
}

impl Behaviour {
    pub(crate) fn of(r: &ReplicaConfig) -> Self {
        Behaviour {
            latency_scale: r.latency_scale,
            error_rate: r.error_rate,
            error_status: r.error_status,
            straggler_rate: r.straggler_rate,
            straggler_scale: r.straggler_scale,
            slow_after: r.slow_after,
            slow_scale: r.slow_scale,
        }
    }

    /// Whether this replica ever draws (errors or stragglers): a plain replica uses no random
    /// numbers of its own.
    fn draws(&self) -> bool {
        self.error_rate > 0.0 || self.straggler_rate > 0.0
    }

    /// Whether the replica turns slow at some point (the caller then reads the clock).
    pub(crate) fn turns_slow(&self) -> bool {
        self.slow_after.is_some()
    }

    /// Deal one request. `since` is the time since the sim started or was last reset (read only
    /// when [`Behaviour::turns_slow`]). A drawing replica takes exactly two numbers from `rng`
    /// per request, whatever they decide, so one replica's sequence never depends on another
    /// setting's outcome.
    pub(crate) fn draw<R: Rng + ?Sized>(&self, rng: &mut R, since: Duration) -> Draw {
        let mut scale = self.latency_scale;
        let mut error = None;
        let mut straggler = false;
        if self.draws() {
            let (e, s): (f64, f64) = (rng.random(), rng.random());
            if e < self.error_rate {
                error = Some(self.error_status);
            }
            if s < self.straggler_rate {
                straggler = true;
                scale *= self.straggler_scale;
            }
        }
        if self.slow_after.is_some_and(|after| since >= after) {
            scale *= self.slow_scale;
        }
        Draw {
            scale,
            error,
            straggler,
        }
    }
}

/// `latency × scale`, capped at [`MAX_LATENCY`] (scales multiply: 1000 × 1000 × an hour would
/// park a request for decades).
pub(crate) fn scaled(latency: Duration, scale: f64) -> Duration {
    let secs = latency.as_secs_f64() * scale;
    if secs.is_nan() || secs <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(secs)
        .unwrap_or(MAX_LATENCY)
        .min(MAX_LATENCY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn replica(f: impl FnOnce(&mut ReplicaConfig)) -> Behaviour {
        let mut r = ReplicaConfig::default();
        f(&mut r);
        validate(&r).unwrap();
        Behaviour::of(&r)
    }

    fn deal(b: &Behaviour, seed: u64, n: usize, since: Duration) -> Vec<Draw> {
        let mut rng = SmallRng::seed_from_u64(seed);
        (0..n).map(|_| b.draw(&mut rng, since)).collect()
    }

    #[test]
    fn off_by_default() {
        let b = replica(|_| {});
        let d = deal(&b, 1, 1000, Duration::from_secs(3600));
        assert!(d.iter().all(|d| *d
            == Draw {
                scale: 1.0,
                error: None,
                straggler: false
            }));
    }

    #[test]
    fn same_seed_same_sequence() {
        let b = replica(|r| {
            r.error_rate = 0.3;
            r.straggler_rate = 0.1;
        });
        let a = deal(&b, 7, 500, Duration::ZERO);
        assert_eq!(a, deal(&b, 7, 500, Duration::ZERO));
        assert_ne!(a, deal(&b, 8, 500, Duration::ZERO));
    }

    #[test]
    fn rates_over_many_requests() {
        let b = replica(|r| {
            r.error_rate = 0.5;
            r.error_status = 500;
            r.straggler_rate = 0.02;
            r.straggler_scale = 20.0;
        });
        let n = 100_000;
        let d = deal(&b, 3, n, Duration::ZERO);
        let errors = d.iter().filter(|d| d.error == Some(500)).count() as f64 / n as f64;
        let stragglers = d.iter().filter(|d| d.straggler).count() as f64 / n as f64;
        // Binomial sd: 0.0016 at 0.5, 0.00044 at 0.02.
        assert!((errors - 0.5).abs() < 0.01, "{errors}");
        assert!((stragglers - 0.02).abs() < 0.003, "{stragglers}");
        assert!(d
            .iter()
            .all(|d| d.scale == if d.straggler { 20.0 } else { 1.0 }));
        // The two draws are independent: about 2% of the errors are stragglers too.
        let both = d
            .iter()
            .filter(|d| d.straggler && d.error.is_some())
            .count() as f64;
        assert!((both / n as f64 - 0.01).abs() < 0.002, "{both}");
    }

    #[test]
    fn turns_slow_after_its_time_and_scales_multiply() {
        let b = replica(|r| {
            r.latency_scale = 2.0;
            r.slow_after = Some(Duration::from_secs(5));
            r.slow_scale = 20.0;
        });
        assert!(b.turns_slow());
        let mut rng = SmallRng::seed_from_u64(1);
        assert_eq!(b.draw(&mut rng, Duration::from_millis(4999)).scale, 2.0);
        assert_eq!(b.draw(&mut rng, Duration::from_secs(5)).scale, 40.0);
        assert_eq!(b.draw(&mut rng, Duration::from_secs(60)).scale, 40.0);
        assert!(!replica(|_| {}).turns_slow());
    }

    #[test]
    fn absurd_values_are_refused() {
        type Setter = Box<dyn Fn(&mut ReplicaConfig)>;
        let bad: Vec<(Setter, &str)> = vec![
            (Box::new(|r| r.error_rate = 1.5), "error_rate"),
            (Box::new(|r| r.error_rate = f64::NAN), "error_rate"),
            (Box::new(|r| r.straggler_rate = -0.1), "straggler_rate"),
            (Box::new(|r| r.straggler_scale = 0.5), "straggler_scale"),
            (
                Box::new(|r| r.straggler_scale = f64::INFINITY),
                "straggler_scale",
            ),
            (Box::new(|r| r.slow_scale = 1e9), "slow_scale"),
            (Box::new(|r| r.latency_scale = -1.0), "latency_scale"),
            (Box::new(|r| r.error_status = 200), "error_status"),
            (Box::new(|r| r.error_status = 600), "error_status"),
        ];
        for (f, key) in bad {
            let mut r = ReplicaConfig::default();
            f(&mut r);
            let err = validate(&r).unwrap_err();
            assert!(err.starts_with(key), "{err}");
        }
    }

    #[test]
    fn scaled_latency_is_capped() {
        assert_eq!(
            scaled(Duration::from_millis(10), 20.0),
            Duration::from_millis(200)
        );
        assert_eq!(scaled(MAX_LATENCY, 1000.0 * 1000.0), MAX_LATENCY);
        assert_eq!(scaled(Duration::from_millis(10), 0.0), Duration::ZERO);
    }
}
