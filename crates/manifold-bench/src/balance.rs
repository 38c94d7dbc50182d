//! `manifold bench balance`: what choosing the endpoint by its cost is worth when one replica
//! is slow.
//!
//! One upstream of three replicas answering in a log-normal ~10 ms, one of them 20× slower
//! (a replica on a noisy host, a bad disk, a long garbage collection). The same route is
//! measured with `balance = "round_robin"` and with `balance = "p2c"` (power of two choices over
//! peak-EWMA cost), interleaved round by round. Goal (issue 13): p99 at least 3× lower with p2c.
//! Anchors: C3 (~3× lower tail than Cassandra's dynamic snitch) and Buoyant's measurement (round
//! robin degraded above p95, peak-EWMA only above p99.9).

use crate::variants::{
    self, check_median, check_range, check_replicas, Goal, Load, Variant, VariantResult,
    VariantsReport, PATH, SERVICE,
};
use crate::BenchError;
use manifold_sim::SimConfig;
use std::time::Duration;

/// What to run.
#[derive(Debug, Clone)]
pub struct BalanceSpec {
    /// Replicas of the upstream (at least 2); the last one is the slow one.
    pub replicas: usize,
    /// The median latency of a healthy replica.
    pub median: Duration,
    /// How many times slower the slow replica is.
    pub slow_scale: f64,
    /// Load, duration and rounds.
    pub load: Load,
}

impl Default for BalanceSpec {
    /// About 60 s: 200 req/s, 3 rounds of 8 s per variant, after 2 s of warm-up each.
    fn default() -> Self {
        BalanceSpec {
            replicas: 3,
            median: Duration::from_millis(10),
            slow_scale: 20.0,
            load: Load::at(200.0),
        }
    }
}

impl BalanceSpec {
    /// A short run for smoke tests and `--quick` (about 10 s).
    pub fn quick() -> Self {
        let mut s = Self::default();
        s.load.quick();
        s
    }

    fn check(&self) -> Result<(), BenchError> {
        check_replicas(self.replicas, 2..=16)?;
        check_median("median", self.median)?;
        check_range("slow scale", self.slow_scale, 1.0..=1000.0)
    }

    /// The simulated upstream: healthy replicas, then the slow one.
    pub fn sim_config(&self) -> Result<SimConfig, BenchError> {
        let mut replicas = vec!["{}".to_owned(); self.replicas.saturating_sub(1)];
        replicas.push(format!("{{ latency_scale = {} }}", self.slow_scale));
        let toml = format!(
            r#"seed = 17
[services.{SERVICE}]
replicas = [{replicas}]
  [[services.{SERVICE}.endpoints]]
  path = "{PATH}"
  latency = {{ dist = "lognormal", median = "{median}", sigma = 0.1 }}
"#,
            replicas = replicas.join(", "),
            median = humantime::format_duration(self.median),
        );
        SimConfig::from_toml(&toml).map_err(|e| BenchError::Setup(format!("simulator config: {e}")))
    }

    /// Round robin (the baseline), then p2c.
    pub(crate) fn variants() -> Vec<Variant> {
        vec![
            Variant {
                name: "round_robin".into(),
                policy: r#"balance = "round_robin""#.into(),
            },
            Variant {
                name: "p2c".into(),
                policy: r#"balance = "p2c""#.into(),
            },
        ]
    }
}

/// The goal: p99 at least 3× lower with p2c than with round robin.
pub(crate) fn goal(results: &[VariantResult]) -> Goal {
    let (Some(rr), Some(p2c)) = (results.first(), results.get(1)) else {
        return Goal {
            what: "two variants measured".into(),
            met: false,
        };
    };
    let gain = variants::ratio(rr.pooled_ms.p99, p2c.pooled_ms.p99);
    Goal {
        what: format!(
            "p99 (all rounds' requests) at least 3× lower with p2c than with round robin: \
             {:.1} → {:.1} ms ({gain:.1}×)",
            rr.pooled_ms.p99, p2c.pooled_ms.p99
        ),
        met: gain >= 3.0,
    }
}

/// Run the balance benchmark. `progress` is told what is being measured.
pub async fn run(
    spec: &BalanceSpec,
    mut progress: impl FnMut(&str),
) -> Result<VariantsReport, BenchError> {
    spec.check()?;
    let setup = format!(
        "one upstream of {} replicas answering `GET {PATH}` in a log-normal {:?} median (sigma 0.1), the last one {}× slower",
        spec.replicas, spec.median, spec.slow_scale
    );
    variants::run(
        "balance",
        setup,
        spec.sim_config()?,
        BalanceSpec::variants(),
        &spec.load,
        goal,
        &mut progress,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::variants::tests::{parsed, result};

    #[test]
    fn one_replica_of_three_is_twenty_times_slower() {
        let cfg = BalanceSpec::default().sim_config().unwrap();
        let scales: Vec<f64> = cfg.services[SERVICE]
            .replicas
            .iter()
            .map(|r| r.latency_scale)
            .collect();
        assert_eq!(scales, [1.0, 1.0, 20.0]);
    }

    #[test]
    fn the_variants_name_their_balancer() {
        let eps: Vec<String> = (1..=3).map(|p| format!("http://127.0.0.1:{p}")).collect();
        let got: Vec<(String, String)> = BalanceSpec::variants()
            .iter()
            .map(|v| {
                let t = parsed(&variants::gateway_toml(&eps, v));
                let u = &t["upstreams"]["u"];
                assert_eq!(u["endpoints"].as_array().map(Vec::len), Some(3));
                assert!(u.get("retry").is_none() && u.get("hedge").is_none());
                (
                    v.name.clone(),
                    u["balance"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("round_robin".to_owned(), "round_robin".to_owned()),
                ("p2c".to_owned(), "p2c".to_owned())
            ]
        );
    }

    #[test]
    fn absurd_specs_are_refused() {
        for bad in [
            BalanceSpec {
                replicas: 0,
                ..BalanceSpec::quick()
            },
            BalanceSpec {
                replicas: 1000,
                ..BalanceSpec::quick()
            },
            BalanceSpec {
                slow_scale: f64::INFINITY,
                ..BalanceSpec::quick()
            },
        ] {
            assert!(matches!(bad.check(), Err(BenchError::Spec(_))), "{bad:?}");
        }
    }

    #[test]
    fn the_goal_is_the_p99_ratio() {
        assert!(
            goal(&[
                result("rr", 210.0, 220.0, 0.0),
                result("p2c", 70.0, 200.0, 0.0)
            ])
            .met
        );
        assert!(
            !goal(&[
                result("rr", 210.0, 220.0, 0.0),
                result("p2c", 71.0, 100.0, 0.0)
            ])
            .met
        );
        assert!(!goal(&[]).met);
    }
}
