//! `manifold bench hedge`: the tail a hedged request cuts, and what it costs upstream.
//!
//! One upstream of two replicas (by default) whose requests take a log-normal ~10 ms, except
//! 2% that straggle at 20× their sampled latency (The Tail at Scale's garbage collections and
//! queue spikes). The same route is measured without and with
//! `hedge = { after = "p95", max = 1, budget = 0.05 }`, interleaved round by round. Goal (issue
//! 13): p99.9 at least 10× lower with hedging, for at most 5% extra upstream requests (counted
//! at the sim, cancelled losers included). The anchor is Dean and Barroso's figure: p99.9 from
//! 1,800 to 74 ms for 2% more requests.

use crate::variants::{
    self, check_median, check_range, check_replicas, Goal, Load, Variant, VariantResult,
    VariantsReport, PATH, SERVICE,
};
use crate::BenchError;
use manifold_sim::SimConfig;
use std::time::Duration;

/// The hedge measured (ARCHITECTURE.md's example).
pub const HEDGE_POLICY: &str = r#"hedge = { after = "p95", max = 1, budget = 0.05 }"#;

/// What to run.
#[derive(Debug, Clone)]
pub struct HedgeSpec {
    /// Replicas of the upstream (at least 2, so a hedge has somewhere else to go).
    pub replicas: usize,
    /// The median of a request's latency.
    pub median: Duration,
    /// The share of requests that straggle.
    pub straggler_rate: f64,
    /// How many times slower a straggler is.
    pub straggler_scale: f64,
    /// Load, duration and rounds.
    pub load: Load,
}

impl Default for HedgeSpec {
    /// About 60 s: 300 req/s, 3 rounds of 8 s per variant, after 2 s of warm-up each.
    fn default() -> Self {
        HedgeSpec {
            replicas: 2,
            median: Duration::from_millis(10),
            straggler_rate: 0.02,
            straggler_scale: 20.0,
            load: Load::at(300.0),
        }
    }
}

impl HedgeSpec {
    /// A short run for smoke tests and `--quick` (about 10 s).
    pub fn quick() -> Self {
        let mut s = Self::default();
        s.load.quick();
        s
    }

    fn check(&self) -> Result<(), BenchError> {
        check_replicas(self.replicas, 2..=16)?;
        check_median("median", self.median)?;
        check_range("straggler rate", self.straggler_rate, 0.0..=1.0)?;
        check_range("straggler scale", self.straggler_scale, 1.0..=1000.0)
    }

    /// The simulated upstream: `replicas` identical replicas, each with the stragglers.
    pub fn sim_config(&self) -> Result<SimConfig, BenchError> {
        let replica = format!(
            "{{ straggler_rate = {}, straggler_scale = {} }}",
            self.straggler_rate, self.straggler_scale
        );
        let replicas = vec![replica; self.replicas].join(", ");
        let toml = format!(
            r#"seed = 13
[services.{SERVICE}]
replicas = [{replicas}]
  [[services.{SERVICE}.endpoints]]
  path = "{PATH}"
  latency = {{ dist = "lognormal", median = "{median}", sigma = 0.1 }}
"#,
            median = humantime::format_duration(self.median),
        );
        SimConfig::from_toml(&toml).map_err(|e| BenchError::Setup(format!("simulator config: {e}")))
    }

    /// Without, then with, the hedge. Both balance the same way (the default).
    pub(crate) fn variants() -> Vec<Variant> {
        vec![
            Variant {
                name: "without hedge".into(),
                policy: String::new(),
            },
            Variant {
                name: "hedged".into(),
                policy: HEDGE_POLICY.into(),
            },
        ]
    }
}

/// The goal: p99.9 at least 10× lower with the hedge, at most 5% extra upstream requests.
pub(crate) fn goal(results: &[VariantResult]) -> Goal {
    let (Some(without), Some(with)) = (results.first(), results.get(1)) else {
        return Goal {
            what: "two variants measured".into(),
            met: false,
        };
    };
    let gain = variants::ratio(without.pooled_ms.p999, with.pooled_ms.p999);
    let extra = with.extra_pct.median;
    Goal {
        what: format!(
            "p99.9 (all rounds' requests) at least 10× lower with the hedge for at most 5% extra \
             upstream requests: {:.1} → {:.1} ms ({gain:.1}×), {extra:+.1}% upstream requests",
            without.pooled_ms.p999, with.pooled_ms.p999
        ),
        met: gain >= 10.0 && extra <= 5.0,
    }
}

/// Run the hedge benchmark. `progress` is told what is being measured.
pub async fn run(
    spec: &HedgeSpec,
    mut progress: impl FnMut(&str),
) -> Result<VariantsReport, BenchError> {
    spec.check()?;
    let setup = format!(
        "one upstream of {} replicas answering `GET {PATH}` in a log-normal {:?} median (sigma 0.1), {:.1}% of requests straggling at {}× their latency",
        spec.replicas,
        spec.median,
        spec.straggler_rate * 100.0,
        spec.straggler_scale
    );
    variants::run(
        "hedge",
        setup,
        spec.sim_config()?,
        HedgeSpec::variants(),
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
    fn the_sim_has_the_stragglers_on_every_replica() {
        let cfg = HedgeSpec::default().sim_config().unwrap();
        let svc = &cfg.services[SERVICE];
        assert_eq!(svc.replicas.len(), 2);
        for r in &svc.replicas {
            assert_eq!((r.straggler_rate, r.straggler_scale), (0.02, 20.0));
            assert_eq!((r.error_rate, r.slow_after), (0.0, None));
        }
    }

    #[test]
    fn the_variants_differ_only_by_the_hedge() {
        let eps = vec![
            "http://127.0.0.1:1".to_owned(),
            "http://127.0.0.1:2".to_owned(),
        ];
        let [without, with] = &HedgeSpec::variants()[..] else {
            panic!("two variants")
        };
        let a = parsed(&variants::gateway_toml(&eps, without));
        let b = parsed(&variants::gateway_toml(&eps, with));
        assert!(a["upstreams"]["u"].get("hedge").is_none());
        let h = &b["upstreams"]["u"]["hedge"];
        assert_eq!(h["after"].as_str(), Some("p95"));
        assert_eq!(h["max"].as_integer(), Some(1));
        assert_eq!(h["budget"].as_float(), Some(0.05));
        let mut b_without = b.clone();
        if let Some(u) = b_without["upstreams"]["u"].as_table_mut() {
            u.remove("hedge");
        }
        assert_eq!(a, b_without);
    }

    #[test]
    fn absurd_specs_are_refused() {
        for bad in [
            HedgeSpec {
                replicas: 1,
                ..HedgeSpec::quick()
            },
            HedgeSpec {
                median: Duration::ZERO,
                ..HedgeSpec::quick()
            },
            HedgeSpec {
                straggler_rate: f64::NAN,
                ..HedgeSpec::quick()
            },
            HedgeSpec {
                straggler_scale: 0.0,
                ..HedgeSpec::quick()
            },
        ] {
            assert!(matches!(bad.check(), Err(BenchError::Spec(_))), "{bad:?}");
        }
    }

    #[test]
    fn the_goal_needs_both_the_gain_and_the_small_cost() {
        assert!(goal(&[result("a", 10.0, 200.0, 0.0), result("b", 10.0, 19.0, 4.9)]).met);
        assert!(!goal(&[result("a", 10.0, 200.0, 0.0), result("b", 10.0, 21.0, 4.0)]).met);
        assert!(!goal(&[result("a", 10.0, 200.0, 0.0), result("b", 10.0, 15.0, 6.0)]).met);
        assert!(!goal(&[result("a", 10.0, 200.0, 0.0)]).met);
        let g = goal(&[result("a", 10.0, 200.0, 0.0), result("b", 10.0, 20.0, 4.0)]);
        assert!(
            g.what.contains("200.0 → 20.0 ms (10.0×), +4.0%"),
            "{}",
            g.what
        );
    }
}
