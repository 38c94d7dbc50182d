//! Random keys for `{key}`: uniform, or Zipf-distributed like real popularity (a few hot keys,
//! a long tail), which is what caches see.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::Distribution;

use crate::LoadError;

/// How `{key}` is drawn; keys run from 1 to `n`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyDist {
    /// Every key in 1..=n equally likely.
    Uniform {
        /// Number of keys.
        n: u64,
    },
    /// Key `k` drawn with probability proportional to `1 / k^s` (`s = 0` is uniform; real
    /// popularity is often near 1).
    Zipf {
        /// Number of keys.
        n: u64,
        /// The exponent.
        s: f64,
    },
}

/// A seeded key stream.
pub(crate) struct KeySampler {
    rng: SmallRng,
    kind: Kind,
}

enum Kind {
    Uniform(u64),
    Zipf(rand_distr::Zipf<f64>),
}

impl KeyDist {
    /// A seeded sampler; errors on `n = 0` or a bad exponent.
    pub(crate) fn sampler(&self, seed: u64) -> Result<KeySampler, LoadError> {
        let kind = match *self {
            KeyDist::Uniform { n } => {
                if n == 0 {
                    return Err(LoadError::Input("key count must be at least 1".into()));
                }
                Kind::Uniform(n)
            }
            KeyDist::Zipf { n, s } => {
                if n == 0 {
                    return Err(LoadError::Input("key count must be at least 1".into()));
                }
                if !s.is_finite() || s < 0.0 {
                    return Err(LoadError::Input(format!(
                        "zipf exponent must be 0 or more, got {s}"
                    )));
                }
                Kind::Zipf(
                    rand_distr::Zipf::new(n as f64, s)
                        .map_err(|e| LoadError::Input(format!("zipf({n}, {s}): {e}")))?,
                )
            }
        };
        Ok(KeySampler {
            rng: SmallRng::seed_from_u64(seed),
            kind,
        })
    }
}

impl KeySampler {
    pub(crate) fn next_key(&mut self) -> u64 {
        match &self.kind {
            Kind::Uniform(n) => self.rng.random_range(1..=*n),
            Kind::Zipf(z) => z.sample(&mut self.rng) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(d: KeyDist, n: usize) -> Vec<u64> {
        let mut s = d.sampler(7).unwrap();
        let mut c = vec![0u64; 101];
        for _ in 0..n {
            let k = s.next_key();
            assert!((1..=100).contains(&k), "key {k}");
            c[k as usize] += 1;
        }
        c
    }

    #[test]
    fn uniform_keys_are_even() {
        const N: usize = 100_000;
        let c = counts(KeyDist::Uniform { n: 100 }, N);
        // Each key: Binomial(100k, 0.01), mean 1000, sd ≈ 31.5. ±5 sd.
        for (k, n) in c.iter().enumerate().skip(1) {
            assert!((842..=1158).contains(n), "key {k}: {n}");
        }
    }

    #[test]
    fn zipf_keys_follow_the_power_law() {
        const N: usize = 100_000;
        let c = counts(KeyDist::Zipf { n: 100, s: 1.0 }, N);
        let h: f64 = (1..=100).map(|k| 1.0 / k as f64).sum(); // H_100 ≈ 5.187
        for k in [1usize, 2, 10] {
            let want = N as f64 / (k as f64 * h);
            let sd = (want * (1.0 - want / N as f64)).sqrt();
            let got = c[k] as f64;
            assert!((got - want).abs() < 5.0 * sd, "key {k}: {got} vs {want:.0}");
        }
        assert!(c[1] > 5 * c[10]);
    }

    #[test]
    fn seeded() {
        let d = KeyDist::Zipf { n: 1000, s: 1.1 };
        let a: Vec<u64> = {
            let mut s = d.sampler(3).unwrap();
            (0..50).map(|_| s.next_key()).collect()
        };
        let b: Vec<u64> = {
            let mut s = d.sampler(3).unwrap();
            (0..50).map(|_| s.next_key()).collect()
        };
        assert_eq!(a, b);
    }

    #[test]
    fn bad_parameters() {
        assert!(KeyDist::Uniform { n: 0 }.sampler(1).is_err());
        assert!(KeyDist::Zipf { n: 10, s: -1.0 }.sampler(1).is_err());
        assert!(KeyDist::Zipf { n: 10, s: f64::NAN }.sampler(1).is_err());
    }
}
