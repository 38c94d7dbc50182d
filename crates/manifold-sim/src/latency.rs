//! Latency distributions: how long a simulated endpoint takes before it answers.
//!
//! A distribution is written in `sim.toml` either as a short string or as a table:
//!
//! ```toml
//! latency = "150ms"                                     # fixed
//! latency = "10ms..20ms"                                # uniform between the two
//! latency = "99% 10ms, 1% 1s"                           # a tail mix of fixed parts
//! latency = { dist = "normal", mean = "100ms", stddev = "10ms" }
//! latency = { dist = "lognormal", median = "20ms", sigma = 0.5 }
//! latency = { dist = "mix", of = [ { weight = 0.99, latency = "10ms" }, { weight = 0.01, latency = "1s" } ] }
//! ```
//!
//! Sampling takes the caller's random number generator so a seeded run repeats exactly.

use std::fmt;
use std::time::Duration;

use rand::Rng;
use rand_distr::Distribution as _;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// The longest latency a distribution may produce: one hour. Samples above it are clamped, so a
/// heavy-tailed log-normal cannot park a request for days.
pub const MAX_LATENCY: Duration = Duration::from_secs(3600);

/// A latency distribution, validated: every parameter is finite and in range.
#[derive(Debug, Clone, PartialEq)]
pub enum Latency {
    /// Always the same duration.
    Fixed(Duration),
    /// Uniform between `min` and `max` (inclusive).
    Uniform {
        /// Lower bound.
        min: Duration,
        /// Upper bound.
        max: Duration,
    },
    /// Normal (Gaussian) with the given mean and standard deviation; negative samples become zero.
    Normal {
        /// Mean.
        mean: Duration,
        /// Standard deviation.
        stddev: Duration,
    },
    /// Log-normal: `median · e^(sigma·Z)` for a standard normal `Z`. The shape of most real service
    /// times: a hump near the median and a long right tail that grows with `sigma`.
    LogNormal {
        /// The median (50th percentile).
        median: Duration,
        /// The standard deviation of the logarithm.
        sigma: f64,
    },
    /// A weighted mix: each request picks one part with probability `weight / Σ weights`, then
    /// samples it. "99% 10 ms, 1% 1 s" is the classic tail.
    Mix(Vec<(f64, Latency)>),
}

impl Latency {
    /// A fixed latency in milliseconds (convenience for building configs in code).
    pub fn fixed_ms(ms: u64) -> Self {
        Self::Fixed(Duration::from_millis(ms))
    }

    /// Draw one latency.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Duration {
        let d = match self {
            Self::Fixed(d) => *d,
            Self::Uniform { min, max } => {
                if min == max {
                    *min
                } else {
                    let nanos = rng.random_range(nanos(*min)..=nanos(*max));
                    Duration::from_nanos(nanos)
                }
            }
            Self::Normal { mean, stddev } => {
                let z: f64 = rand_distr::StandardNormal.sample(rng);
                from_secs_clamped(mean.as_secs_f64() + stddev.as_secs_f64() * z)
            }
            Self::LogNormal { median, sigma } => {
                let z: f64 = rand_distr::StandardNormal.sample(rng);
                from_secs_clamped(median.as_secs_f64() * (sigma * z).exp())
            }
            Self::Mix(parts) => {
                let total: f64 = parts.iter().map(|(w, _)| w).sum();
                let mut pick = rng.random::<f64>() * total;
                let mut chosen = &parts[parts.len() - 1].1;
                for (w, part) in parts {
                    if pick < *w {
                        chosen = part;
                        break;
                    }
                    pick -= w;
                }
                return chosen.sample(rng);
            }
        };
        d.min(MAX_LATENCY)
    }

    /// The distribution's mean, where it has a closed form (used by docs, tests and the demo's
    /// "ideal" figures). Normal's clamp at zero is ignored.
    pub fn mean(&self) -> Duration {
        match self {
            Self::Fixed(d) => *d,
            Self::Uniform { min, max } => (*min + *max) / 2,
            Self::Normal { mean, .. } => *mean,
            Self::LogNormal { median, sigma } => {
                from_secs_clamped(median.as_secs_f64() * (sigma * sigma / 2.0).exp())
            }
            Self::Mix(parts) => {
                let total: f64 = parts.iter().map(|(w, _)| w).sum();
                let secs: f64 = parts
                    .iter()
                    .map(|(w, p)| w / total * p.mean().as_secs_f64())
                    .sum();
                from_secs_clamped(secs)
            }
        }
    }

    /// Check parameters; a message says what is wrong.
    pub(crate) fn validate(&self) -> Result<(), String> {
        match self {
            Self::Fixed(d) => check_max(*d),
            Self::Uniform { min, max } => {
                if min > max {
                    return Err(format!("uniform latency: min {min:?} is above max {max:?}"));
                }
                check_max(*max)
            }
            Self::Normal { mean, stddev } => {
                check_max(*mean)?;
                check_max(*stddev)
            }
            Self::LogNormal { median, sigma } => {
                if !sigma.is_finite() || *sigma < 0.0 || *sigma > 5.0 {
                    return Err(format!(
                        "lognormal latency: sigma must be between 0 and 5, got {sigma}"
                    ));
                }
                check_max(*median)
            }
            Self::Mix(parts) => {
                if parts.is_empty() {
                    return Err("mix latency: `of` needs at least one part".into());
                }
                for (w, p) in parts {
                    if !w.is_finite() || *w <= 0.0 {
                        return Err(format!("mix latency: weights must be above 0, got {w}"));
                    }
                    p.validate()?;
                }
                Ok(())
            }
        }
    }
}

fn check_max(d: Duration) -> Result<(), String> {
    if d > MAX_LATENCY {
        Err(format!("latency {d:?} is above the 1h limit"))
    } else {
        Ok(())
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn from_secs_clamped(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(secs)
            .unwrap_or(MAX_LATENCY)
            .min(MAX_LATENCY)
    }
}

/// Parse a duration such as `150ms`, `1s`, `2m`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("bad duration {s:?}: {e}"))
}

/// Parse the short string forms: `150ms`, `10ms..20ms`, `99% 10ms, 1% 1s`.
pub(crate) fn parse_short(s: &str) -> Result<Latency, String> {
    let s = s.trim();
    if s.contains('%') {
        let mut parts = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            let (pct, dur) = part
                .split_once('%')
                .ok_or_else(|| format!("bad mix part {part:?}: expected `P% DURATION`"))?;
            let weight: f64 = pct
                .trim()
                .parse()
                .map_err(|_| format!("bad percentage {pct:?} in {s:?}"))?;
            parts.push((weight, parse_short(dur)?));
        }
        let l = Latency::Mix(parts);
        l.validate()?;
        return Ok(l);
    }
    if let Some((a, b)) = s.split_once("..") {
        let l = Latency::Uniform {
            min: parse_duration(a)?,
            max: parse_duration(b)?,
        };
        l.validate()?;
        return Ok(l);
    }
    let l = Latency::Fixed(parse_duration(s)?);
    l.validate()?;
    Ok(l)
}

/// The table form, as written in TOML.
#[derive(Deserialize)]
#[serde(tag = "dist", rename_all = "snake_case", deny_unknown_fields)]
enum Table {
    Fixed {
        value: DurationStr,
    },
    Uniform {
        min: DurationStr,
        max: DurationStr,
    },
    Normal {
        mean: DurationStr,
        stddev: DurationStr,
    },
    #[serde(alias = "log_normal")]
    Lognormal {
        median: DurationStr,
        sigma: f64,
    },
    Mix {
        of: Vec<MixPart>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MixPart {
    weight: f64,
    latency: Latency,
}

/// A duration written as a string (`"150ms"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DurationStr(pub(crate) Duration);

impl<'de> Deserialize<'de> for DurationStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(DurationStr)
            .map_err(de::Error::custom)
    }
}

/// Serde helper: an optional duration field written as a string (`"5s"`); absent is `None`.
pub(crate) fn de_opt_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    DurationStr::deserialize(d).map(|d| Some(d.0))
}

/// Serde helper: a duration field written as a string (`"2s"`).
pub(crate) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    DurationStr::deserialize(d).map(|d| d.0)
}

impl<'de> Deserialize<'de> for Latency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Latency;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a latency: \"150ms\", \"10ms..20ms\", \"99% 10ms, 1% 1s\" or a table with `dist`",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Latency, E> {
                parse_short(s).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Latency, A::Error> {
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let l = match t {
                    Table::Fixed { value } => Latency::Fixed(value.0),
                    Table::Uniform { min, max } => Latency::Uniform {
                        min: min.0,
                        max: max.0,
                    },
                    Table::Normal { mean, stddev } => Latency::Normal {
                        mean: mean.0,
                        stddev: stddev.0,
                    },
                    Table::Lognormal { median, sigma } => Latency::LogNormal {
                        median: median.0,
                        sigma,
                    },
                    Table::Mix { of } => {
                        Latency::Mix(of.into_iter().map(|p| (p.weight, p.latency)).collect())
                    }
                };
                l.validate().map_err(de::Error::custom)?;
                Ok(l)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    const N: usize = 200_000;

    fn samples(l: &Latency, seed: u64) -> Vec<f64> {
        let mut rng = SmallRng::seed_from_u64(seed);
        (0..N)
            .map(|_| l.sample(&mut rng).as_secs_f64() * 1000.0)
            .collect()
    }

    fn mean_sd(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let m = xs.iter().sum::<f64>() / n;
        let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0);
        (m, v.sqrt())
    }

    fn quantile(xs: &[f64], q: f64) -> f64 {
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q) as usize]
    }

    #[derive(Deserialize)]
    struct Wrap {
        latency: Latency,
    }

    fn parse(toml_src: &str) -> Result<Latency, String> {
        toml::from_str::<Wrap>(toml_src)
            .map(|w| w.latency)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn fixed_is_exact() {
        let l = parse(r#"latency = "150ms""#).unwrap();
        assert_eq!(l, Latency::fixed_ms(150));
        let xs = samples(&l, 1);
        assert!(xs.iter().all(|x| (*x - 150.0).abs() < 1e-9));
    }

    #[test]
    fn uniform_mean_spread_and_bounds() {
        let l = parse(r#"latency = "10ms..30ms""#).unwrap();
        let xs = samples(&l, 2);
        assert!(xs.iter().all(|x| (10.0..=30.0).contains(x)));
        let (m, sd) = mean_sd(&xs);
        // Uniform(10, 30): mean 20, sd 20/√12 ≈ 5.774. Standard error of the mean ≈ 0.013.
        assert!((m - 20.0).abs() < 0.1, "mean {m}");
        assert!((sd - 20.0 / 12f64.sqrt()).abs() < 0.1, "sd {sd}");
    }

    #[test]
    fn normal_mean_and_sd() {
        let l = parse(r#"latency = { dist = "normal", mean = "100ms", stddev = "10ms" }"#).unwrap();
        let xs = samples(&l, 3);
        let (m, sd) = mean_sd(&xs);
        assert!((m - 100.0).abs() < 0.2, "mean {m}");
        assert!((sd - 10.0).abs() < 0.2, "sd {sd}");
        // About 68.3% within one sd.
        let within = xs.iter().filter(|x| (**x - 100.0).abs() <= 10.0).count() as f64 / N as f64;
        assert!((within - 0.6827).abs() < 0.01, "within {within}");
    }

    #[test]
    fn normal_never_negative() {
        let l = parse(r#"latency = { dist = "normal", mean = "1ms", stddev = "5ms" }"#).unwrap();
        let xs = samples(&l, 4);
        assert!(xs.iter().all(|x| *x >= 0.0));
        assert!(xs.contains(&0.0), "the clamp should be hit");
    }

    #[test]
    fn lognormal_median_and_tail() {
        let l = parse(r#"latency = { dist = "lognormal", median = "20ms", sigma = 0.5 }"#).unwrap();
        let xs = samples(&l, 5);
        let med = quantile(&xs, 0.5);
        assert!((med - 20.0).abs() < 0.3, "median {med}");
        // p99 = median · e^(0.5 · 2.3263) ≈ 63.95 ms.
        let p99 = quantile(&xs, 0.99);
        assert!((p99 - 63.95).abs() < 2.0, "p99 {p99}");
        let (m, _) = mean_sd(&xs);
        let want = l.mean().as_secs_f64() * 1000.0; // 20 · e^0.125 ≈ 22.66
        assert!((m - want).abs() < 0.2, "mean {m} vs {want}");
    }

    #[test]
    fn tail_mix_fraction() {
        let l = parse(r#"latency = "99% 10ms, 1% 1s""#).unwrap();
        let xs = samples(&l, 6);
        let slow = xs.iter().filter(|x| **x >= 999.0).count() as f64 / N as f64;
        let fast = xs.iter().filter(|x| (**x - 10.0).abs() < 1e-9).count() as f64 / N as f64;
        // Binomial sd of the fraction at p = 0.01, n = 200k: ≈ 0.00022.
        assert!((slow - 0.01).abs() < 0.0015, "slow fraction {slow}");
        assert!((slow + fast - 1.0).abs() < 1e-12);
        assert_eq!(quantile(&xs, 0.5), 10.0);
        assert_eq!(quantile(&xs, 0.995), 1000.0);
    }

    #[test]
    fn mix_table_with_nested_distributions() {
        let l = parse(
            r#"latency = { dist = "mix", of = [
                { weight = 3, latency = "10ms" },
                { weight = 1, latency = { dist = "uniform", min = "100ms", max = "200ms" } },
            ] }"#,
        )
        .unwrap();
        let xs = samples(&l, 7);
        let slow = xs.iter().filter(|x| **x >= 100.0).count() as f64 / N as f64;
        assert!((slow - 0.25).abs() < 0.005, "slow fraction {slow}");
        let (m, _) = mean_sd(&xs);
        assert!((m - l.mean().as_secs_f64() * 1000.0).abs() < 0.5);
    }

    #[test]
    fn same_seed_same_samples() {
        let l = parse(r#"latency = { dist = "lognormal", median = "5ms", sigma = 1.0 }"#).unwrap();
        assert_eq!(samples(&l, 9)[..100], samples(&l, 9)[..100]);
        assert_ne!(samples(&l, 9)[..100], samples(&l, 10)[..100]);
    }

    proptest::proptest! {
        /// Any string either parses to a valid distribution whose samples stay in range, or is
        /// an error; nothing panics.
        #[test]
        fn short_forms_never_panic(s in "[0-9a-z%,. ]{0,24}", seed in 0u64..1000) {
            if let Ok(l) = parse_short(&s) {
                proptest::prop_assert!(l.validate().is_ok());
                let mut rng = SmallRng::seed_from_u64(seed);
                for _ in 0..20 {
                    proptest::prop_assert!(l.sample(&mut rng) <= MAX_LATENCY);
                }
            }
        }

        #[test]
        fn uniform_samples_stay_within_bounds(a in 0u64..10_000, b in 0u64..10_000, seed in 0u64..1000) {
            let (min, max) = (a.min(b), a.max(b));
            let l = parse_short(&format!("{min}ms..{max}ms")).unwrap();
            let mut rng = SmallRng::seed_from_u64(seed);
            for _ in 0..50 {
                let d = l.sample(&mut rng);
                proptest::prop_assert!(d >= Duration::from_millis(min) && d <= Duration::from_millis(max));
            }
        }
    }

    #[test]
    fn bad_inputs_are_rejected_with_reasons() {
        for (src, needle) in [
            (r#"latency = "30ms..10ms""#, "above max"),
            (r#"latency = "fast""#, "bad duration"),
            (r#"latency = "0% 10ms""#, "above 0"),
            (
                r#"latency = { dist = "lognormal", median = "5ms", sigma = -1.0 }"#,
                "sigma",
            ),
            (r#"latency = { dist = "gamma", k = 1 }"#, "unknown variant"),
            (
                r#"latency = { dist = "fixed", value = "1ms", extra = 1 }"#,
                "unknown field",
            ),
            (r#"latency = "2h""#, "1h limit"),
        ] {
            let err = parse(src).unwrap_err();
            assert!(err.contains(needle), "{src}: {err}");
        }
    }
}
