//! `manifold bench retry-storm`: retries against an upstream in trouble, with and without a
//! budget.
//!
//! One upstream of two replicas answering in ~5 ms, each failing half its requests with 503.
//! The same route is measured with plain retries (`attempts = 3`, with a budget set so high it
//! never binds: `budget = 1.0, min_per_second = 10000`, the largest values the config allows)
//! and with the default budget (`budget = 0.2, min_per_second = 10`, Finagle's and linkerd's),
//! both retrying on `503` only, interleaved round by round. Plain retries multiply the load on a
//! failing upstream (with independent failures at rate p, by 1 + p + p², 1.75× at 50%, toward 3×
//! as p nears 1): the storm that keeps it down. Goal (issue 13): with the budget, upstream
//! requests at most 1.2× the offered ones plus the minimum (its reserve: `min_per_second` × the
//! 10 s window, see [`budgeted_bound`]); the success rate of both is reported, since the
//! budget's price is the failures it no longer hides.

use crate::variants::{
    self, check_range, check_replicas, Goal, Load, Variant, VariantResult, VariantsReport, PATH,
    SERVICE,
};
use crate::BenchError;
use manifold_sim::SimConfig;
use std::time::Duration;

/// Plain retries: a budget that never binds (the largest ratio and a minimum far above any
/// rate measured here).
pub const PLAIN_RETRY: &str = r#"retry = { attempts = 3, budget = 1.0, min_per_second = 10000, backoff = "25ms", on = ["503"] }"#;

/// The default budget (ARCHITECTURE.md's example), retrying on 503 only.
pub const BUDGETED_RETRY: &str = r#"retry = { attempts = 3, budget = 0.2, min_per_second = 10, backoff = "25ms", on = ["503"] }"#;

/// The budgeted variant's ratio and minimum, as in [`BUDGETED_RETRY`].
const BUDGET: f64 = 0.2;
const MIN_PER_SECOND: f64 = 10.0;

/// What to run.
#[derive(Debug, Clone)]
pub struct RetryStormSpec {
    /// Replicas of the upstream (each fails at `error_rate`).
    pub replicas: usize,
    /// The upstream's latency.
    pub latency: Duration,
    /// The share of requests each replica answers 503.
    pub error_rate: f64,
    /// Load, duration and rounds.
    pub load: Load,
}

impl Default for RetryStormSpec {
    /// About 60 s: 200 req/s, 3 rounds of 8 s per variant, after 2 s of warm-up each.
    fn default() -> Self {
        RetryStormSpec {
            replicas: 2,
            latency: Duration::from_millis(5),
            error_rate: 0.5,
            load: Load::at(200.0),
        }
    }
}

impl RetryStormSpec {
    /// A short run for smoke tests and `--quick` (about 10 s).
    pub fn quick() -> Self {
        let mut s = Self::default();
        s.load.quick();
        s
    }

    fn check(&self) -> Result<(), BenchError> {
        check_replicas(self.replicas, 1..=16)?;
        if self.latency > Duration::from_secs(10) {
            return Err(BenchError::Spec(format!(
                "latency must be at most 10s, got {:?}",
                self.latency
            )));
        }
        check_range("error rate", self.error_rate, 0.0..=1.0)
    }

    /// The simulated upstream: every replica failing at `error_rate` with 503.
    pub fn sim_config(&self) -> Result<SimConfig, BenchError> {
        let replica = format!("{{ error_rate = {}, error_status = 503 }}", self.error_rate);
        let toml = format!(
            r#"seed = 19
[services.{SERVICE}]
replicas = [{replicas}]
  [[services.{SERVICE}.endpoints]]
  path = "{PATH}"
  latency = "{latency}"
"#,
            replicas = vec![replica; self.replicas].join(", "),
            latency = humantime::format_duration(self.latency),
        );
        SimConfig::from_toml(&toml).map_err(|e| BenchError::Setup(format!("simulator config: {e}")))
    }

    /// Plain retries (the baseline), then the budgeted ones.
    pub(crate) fn variants() -> Vec<Variant> {
        vec![
            Variant {
                name: "plain".into(),
                policy: PLAIN_RETRY.into(),
            },
            Variant {
                name: "budgeted".into(),
                policy: BUDGETED_RETRY.into(),
            },
        ]
    }

    /// What plain retries send per offered request with independent failures: 1 + p + p² for
    /// three attempts.
    pub fn plain_expected(&self) -> f64 {
        1.0 + self.error_rate + self.error_rate * self.error_rate
    }
}

/// The most upstream requests per offered request the budget allows in a measurement of
/// `duration` at `rate`: the first attempts, `budget` of them again, and the minimum. The
/// minimum is a reserve of `min_per_second` × the budget's 10 s window (Finagle's
/// `RetryBudget`: `minRetriesPerSec × ttl`), so a measurement shorter than the window may spend
/// a whole window's reserve: 10 × 10 s over 8 s at 200 req/s is 0.0625, not 10/200.
pub fn budgeted_bound(rate: f64, duration: Duration) -> f64 {
    let window = manifold_config::policy::BUDGET_WINDOW;
    let secs = duration.as_secs_f64();
    1.0 + BUDGET + MIN_PER_SECOND * secs.max(window.as_secs_f64()) / (rate * secs)
}

/// The goal: with the budget, upstream requests at most (1 + budget)× offered plus the minimum.
pub(crate) fn goal(
    rate: f64,
    duration: Duration,
    plain_expected: f64,
    results: &[VariantResult],
) -> Goal {
    let (Some(plain), Some(budgeted)) = (results.first(), results.get(1)) else {
        return Goal {
            what: "two variants measured".into(),
            met: false,
        };
    };
    let bound = budgeted_bound(rate, duration);
    let got = budgeted.upstream_per_offered.median;
    Goal {
        what: format!(
            "upstream requests per offered request with the budget at most {:.1} + the minimum's reserve ({MIN_PER_SECOND}/s × {:.0} s window over {:.0} s at {rate:.0}/s) = {bound:.4}: {got:.4} \
             (plain retries: {:.3}, 1 + p + p² = {plain_expected:.3}); success {:.1}% budgeted, {:.1}% plain",
            1.0 + BUDGET,
            manifold_config::policy::BUDGET_WINDOW.as_secs_f64(),
            duration.as_secs_f64(),
            plain.upstream_per_offered.median,
            budgeted.success_pct.median,
            plain.success_pct.median
        ),
        met: got <= bound,
    }
}

/// Run the retry-storm benchmark. `progress` is told what is being measured.
pub async fn run(
    spec: &RetryStormSpec,
    mut progress: impl FnMut(&str),
) -> Result<VariantsReport, BenchError> {
    spec.check()?;
    let setup = format!(
        "one upstream of {} replicas answering `GET {PATH}` in {:?}, each failing {:.0}% of requests with 503",
        spec.replicas,
        spec.latency,
        spec.error_rate * 100.0
    );
    let (rate, duration, expected) = (spec.load.rate, spec.load.duration, spec.plain_expected());
    variants::run(
        "retry-storm",
        setup,
        spec.sim_config()?,
        RetryStormSpec::variants(),
        &spec.load,
        |r| goal(rate, duration, expected, r),
        &mut progress,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::variants::tests::{parsed, result};

    #[test]
    fn every_replica_fails_half_its_requests() {
        let cfg = RetryStormSpec::default().sim_config().unwrap();
        let svc = &cfg.services[SERVICE];
        assert_eq!(svc.replicas.len(), 2);
        for r in &svc.replicas {
            assert_eq!((r.error_rate, r.error_status), (0.5, 503));
        }
        assert_eq!(RetryStormSpec::default().plain_expected(), 1.75);
    }

    #[test]
    fn plain_is_unbudgeted_and_budgeted_has_the_default_budget() {
        let eps = vec![
            "http://127.0.0.1:1".to_owned(),
            "http://127.0.0.1:2".to_owned(),
        ];
        let retry = |v: &Variant| {
            parsed(&variants::gateway_toml(&eps, v))["upstreams"]["u"]["retry"].clone()
        };
        let vs = RetryStormSpec::variants();
        let (plain, budgeted) = (retry(&vs[0]), retry(&vs[1]));
        for r in [&plain, &budgeted] {
            assert_eq!(r["attempts"].as_integer(), Some(3));
            assert_eq!(r["backoff"].as_str(), Some("25ms"));
            let on: Vec<&str> = r["on"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|v| v.as_str())
                .collect();
            assert_eq!(on, ["503"]);
        }
        assert_eq!(plain["budget"].as_float(), Some(1.0));
        assert_eq!(plain["min_per_second"].as_integer(), Some(10_000));
        assert_eq!(budgeted["budget"].as_float(), Some(BUDGET));
        assert_eq!(
            budgeted["min_per_second"].as_integer(),
            Some(MIN_PER_SECOND as i64)
        );
    }

    #[test]
    fn absurd_specs_are_refused() {
        for bad in [
            RetryStormSpec {
                replicas: 0,
                ..RetryStormSpec::quick()
            },
            RetryStormSpec {
                error_rate: 1.5,
                ..RetryStormSpec::quick()
            },
            RetryStormSpec {
                latency: Duration::from_secs(3600),
                ..RetryStormSpec::quick()
            },
        ] {
            assert!(matches!(bad.check(), Err(BenchError::Spec(_))), "{bad:?}");
        }
    }

    #[test]
    fn the_goal_bounds_the_budgeted_amplification() {
        let d = Duration::from_secs(8);
        // 8 s at 200 req/s: 1.2 + 10 × 10 / 1600 = 1.2625. Over 20 s: 1.2 + 10 × 20 / 4000.
        assert!((budgeted_bound(200.0, d) - 1.2625).abs() < 1e-12);
        assert!((budgeted_bound(200.0, Duration::from_secs(20)) - 1.25).abs() < 1e-12);
        let runs = |extra| {
            [
                result("plain", 1.0, 1.0, 75.0),
                result("b", 1.0, 1.0, extra),
            ]
        };
        assert!(goal(200.0, d, 1.75, &runs(26.0)).met);
        assert!(!goal(200.0, d, 1.75, &runs(26.5)).met);
        let g = goal(200.0, d, 1.75, &runs(20.0));
        assert!(
            g.what.contains("= 1.2625: 1.2000 (plain retries: 1.750"),
            "{}",
            g.what
        );
    }
}
