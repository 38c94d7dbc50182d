//! Start the shop and one gateway per strategy, then measure every scenario under every strategy.
//!
//! One gateway per strategy, rather than one gateway with renamed routes: each strategy is a
//! config file a user can run with `manifold serve -c FILE` exactly as the demo ran it (only the
//! upstream addresses are pointed at the sim's ephemeral ports), so the figures belong to those
//! files and nothing else. Only one gateway receives load at a time, so the idle ones cost
//! nothing but two loopback listeners each.

use crate::report::{
    CdfPoint, DemoReport, ScenarioResult, StrategyResult, Waterfall, WaterfallCall,
};
use crate::{DemoError, DemoSpec, Scenario, Strategy};
use manifold_config::{Config, Endpoint, RouteKind};
use manifold_load::{LoadReport, LoadSpec};
use manifold_sim::{RunningSim, Sim, SimConfig};
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::instrument::WithSubscriber as _;

/// Most points kept for one latency distribution in the chart.
const MAX_CDF_POINTS: usize = 400;

/// One strategy's running gateway and its compiled config.
struct Target {
    strategy: Strategy,
    config: Config,
    addr: SocketAddr,
}

/// Run the demo: start the simulated shop and the gateways, measure each scenario under each
/// strategy with the same open-loop load, record one request alone per pair for the waterfall,
/// stop everything. `progress` is told each step (the CLI shows it on a terminal only).
pub async fn run(spec: &DemoSpec, mut progress: impl FnMut(&str)) -> Result<DemoReport, DemoError> {
    if spec.strategies.is_empty() || spec.scenarios.is_empty() {
        return Err(DemoError::Input(
            "the demo needs at least one strategy and one scenario".into(),
        ));
    }
    // Check every config before starting anything.
    let configs = spec
        .strategies
        .iter()
        .map(|s| compile(s, &spec.scenarios))
        .collect::<Result<Vec<_>, _>>()?;

    progress("starting the simulated shop");
    let sim = Sim::start(SimConfig::shop()).await?;
    let stop = CancellationToken::new();
    let result = measure_all(spec, configs, &sim, &stop, &mut progress).await;
    stop.cancel();
    sim.shutdown().await;
    result
}

async fn measure_all(
    spec: &DemoSpec,
    configs: Vec<Config>,
    sim: &RunningSim,
    stop: &CancellationToken,
    progress: &mut impl FnMut(&str),
) -> Result<DemoReport, DemoError> {
    let mut targets = Vec::new();
    for (strategy, config) in spec.strategies.iter().zip(configs) {
        progress(&format!(
            "starting the {} gateway ({})",
            strategy.name, strategy.file
        ));
        let config = point_at_sim(config, sim, strategy)?;
        let gateway = manifold_gateway::Gateway::bind(config.clone()).await?;
        let addr = gateway.local_addr();
        // The gateway logs through whatever the caller set up for this task.
        tokio::spawn(gateway.run(stop.child_token()).with_current_subscriber());
        targets.push(Target {
            strategy: *strategy,
            config,
            addr,
        });
    }

    let mut scenarios = Vec::new();
    for scenario in &spec.scenarios {
        let mut results: Vec<StrategyResult> = Vec::new();
        for target in &targets {
            let name = format!("{} · {}", scenario.name, target.strategy.name);
            if spec.warmup_requests > 0 {
                progress(&format!("{name}: warming up"));
                let mut warm = load_spec(spec, scenario, target.addr);
                warm.duration = None;
                warm.requests = Some(spec.warmup_requests);
                manifold_load::run(warm).await?;
            }
            progress(&format!(
                "{name}: {} req/s for {:.0?}",
                spec.rate, spec.duration
            ));
            let load = manifold_load::run(load_spec(spec, scenario, target.addr)).await?;
            let waterfall = if spec.waterfall {
                progress(&format!("{name}: one request alone, for the waterfall"));
                Some(waterfall(spec, scenario, target.addr, sim).await?)
            } else {
                None
            };
            let base_p50 = results.first().map_or(load.latency_ms.p50, |b| b.p50_ms);
            results.push(StrategyResult {
                name: target.strategy.name.to_owned(),
                p50_ms: load.latency_ms.p50,
                p99_ms: load.latency_ms.p99,
                plan_ms: plan_ms(&target.config, scenario.name),
                gain: if load.latency_ms.p50 > 0.0 {
                    base_p50 / load.latency_ms.p50
                } else {
                    0.0
                },
                sent: load.sent,
                errors: load.errors,
                config: target.strategy.file.to_owned(),
                cdf: cdf(&load),
                waterfall,
            });
        }
        let ideal_ms = results
            .iter()
            .filter_map(|r| r.plan_ms)
            .min_by(|a, b| a.total_cmp(b));
        scenarios.push(ScenarioResult {
            name: scenario.name.to_owned(),
            ideal_ms,
            request: format!("{} {}", scenario.method, scenario.path),
            rate: spec.rate,
            duration_s: spec.duration.as_secs_f64(),
            strategies: results,
        });
    }
    Ok(DemoReport { scenarios })
}

/// Compile a strategy's config and check it has a composed route for every scenario.
fn compile(strategy: &Strategy, scenarios: &[Scenario]) -> Result<Config, DemoError> {
    let config = manifold_config::compile(strategy.file.as_ref(), strategy.source)
        .map_err(|e| DemoError::Config(format!("strategy {}: {e}", strategy.name)))?;
    for s in scenarios {
        match config.route(s.name) {
            Some(r) if matches!(r.kind, RouteKind::Compose(_)) => {}
            Some(_) => {
                return Err(DemoError::Config(format!(
                    "strategy {} ({}): route {:?} is not a composed route",
                    strategy.name, strategy.file, s.name
                )))
            }
            None => {
                return Err(DemoError::Config(format!(
                    "strategy {} ({}) has no route {:?}",
                    strategy.name, strategy.file, s.name
                )))
            }
        }
    }
    Ok(config)
}

/// Listen on ephemeral loopback ports and send each upstream's calls to the sim's service of the
/// same name.
fn point_at_sim(
    mut config: Config,
    sim: &RunningSim,
    strategy: &Strategy,
) -> Result<Config, DemoError> {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.listen = loopback;
    config.server.admin = loopback;
    for upstream in &mut config.upstreams {
        let addr = sim.addr(&upstream.name).ok_or_else(|| {
            DemoError::Config(format!(
                "strategy {} ({}): upstream {:?} is not a service of the simulated shop (it has {})",
                strategy.name,
                strategy.file,
                upstream.name,
                sim.services().join(", ")
            ))
        })?;
        upstream.endpoints = vec![Endpoint {
            url: format!("http://{addr}"),
            scheme: "http".to_owned(),
            authority: addr.to_string(),
            base_path: String::new(),
        }];
    }
    Ok(config)
}

/// The critical path of a route's plan, in ms.
fn plan_ms(config: &Config, route: &str) -> Option<f64> {
    match &config.route(route)?.kind {
        RouteKind::Compose(plan) => plan.critical_path().map(|(_, d)| d.as_secs_f64() * 1000.0),
        _ => None,
    }
}

fn load_spec(spec: &DemoSpec, scenario: &Scenario, addr: SocketAddr) -> LoadSpec {
    let mut load = LoadSpec::new(format!("http://{addr}{}", scenario.path), spec.rate);
    load.method = http::Method::from_bytes(scenario.method.as_bytes()).unwrap_or_default();
    if let Some(body) = scenario.body {
        load.headers = vec![("content-type".into(), "application/json".into())];
        load.body = Some(body.to_owned());
    }
    load.duration = Some(spec.duration);
    load.timeout = spec.timeout;
    load
}

/// Send one request with nothing else in flight and read the upstream calls the sim recorded
/// for it.
async fn waterfall(
    spec: &DemoSpec,
    scenario: &Scenario,
    addr: SocketAddr,
    sim: &RunningSim,
) -> Result<Waterfall, DemoError> {
    // The measurement has finished (the load generator waits for every answer), but the gateway
    // may still be closing upstream calls of timed-out requests: give it a moment.
    tokio::time::sleep(Duration::from_millis(50)).await;
    sim.reset_stats();
    let mut one = load_spec(spec, scenario, addr);
    one.duration = None;
    one.requests = Some(1);
    let t0 = sim.now_ms();
    let report = manifold_load::run(one).await?;
    let stats = sim.stats_with_calls();
    let mut calls = Vec::new();
    for (service, s) in &stats.services {
        for replica in &s.replicas {
            for (endpoint, e) in &replica.endpoints {
                for c in e.recent.iter().flatten() {
                    calls.push(WaterfallCall {
                        label: format!("{service} · {endpoint}"),
                        start_ms: (c.start_ms - t0).max(0.0),
                        end_ms: (c.end_ms - t0).max(0.0),
                    });
                }
            }
        }
    }
    calls.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
    Ok(Waterfall {
        total_ms: report.latency_ms.max,
        calls,
    })
}

/// The cumulative latency distribution from the load report's histogram (µs → ms), thinned to
/// at most [`MAX_CDF_POINTS`] points.
fn cdf(load: &LoadReport) -> Vec<CdfPoint> {
    let h = &load.histogram;
    let total = h.len();
    if total == 0 {
        return Vec::new();
    }
    let mut seen = 0u64;
    let mut points: Vec<CdfPoint> = h
        .iter_recorded()
        .map(|v| {
            seen += v.count_since_last_iteration();
            CdfPoint {
                ms: h.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0,
                fraction: seen as f64 / total as f64,
            }
        })
        .collect();
    if points.len() > MAX_CDF_POINTS {
        let step = points.len().div_ceil(MAX_CDF_POINTS);
        let last = points[points.len() - 1];
        points = points.into_iter().step_by(step).collect();
        if points.last() != Some(&last) {
            points.push(last);
        }
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_strategy_compiles_with_a_route_per_scenario_and_the_seed_critical_paths() {
        let want = [
            ("sequential", "checkout", 750.0),
            ("sequential", "profile", 300.0),
            ("concurrent", "checkout", 450.0),
            ("concurrent", "profile", 200.0),
        ];
        for (strategy, route, ms) in want {
            let s = crate::STRATEGIES
                .iter()
                .find(|s| s.name == strategy)
                .unwrap();
            let config = compile(s, crate::SCENARIOS).unwrap();
            assert_eq!(plan_ms(&config, route), Some(ms), "{strategy} {route}");
        }
    }

    #[test]
    fn both_strategies_make_the_same_calls() {
        let calls = |s: &Strategy| {
            let config = compile(s, crate::SCENARIOS).unwrap();
            config
                .routes
                .iter()
                .map(|r| match &r.kind {
                    RouteKind::Compose(p) => p
                        .calls
                        .iter()
                        .map(|c| (c.name.clone(), c.upstream_name.clone(), c.expect))
                        .collect::<Vec<_>>(),
                    _ => Vec::new(),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(calls(&crate::SEQUENTIAL), calls(&crate::CONCURRENT));
    }

    #[test]
    fn a_missing_route_is_a_config_error() {
        let err = compile(
            &crate::CONCURRENT,
            &[Scenario {
                name: "nope",
                ..crate::CHECKOUT
            }],
        )
        .unwrap_err();
        assert!(matches!(err, DemoError::Config(_)), "{err}");
        assert!(err.to_string().contains("no route \"nope\""), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_run_answers_every_request_and_draws_each_waterfall() {
        let spec = DemoSpec {
            rate: 10.0,
            duration: Duration::from_millis(500),
            warmup_requests: 1,
            ..DemoSpec::quick()
        };
        let mut steps = Vec::new();
        let report = run(&spec, |s| steps.push(s.to_owned())).await.unwrap();
        assert!(report.all_ok(), "{}", report.table());
        assert_eq!(report.scenarios.len(), 2);
        let checkout = &report.scenarios[0];
        assert_eq!(checkout.ideal_ms, Some(450.0));
        for r in &checkout.strategies {
            assert_eq!(r.sent, 5);
            // Nothing beats the sum of the service times on the critical path.
            assert!(r.p50_ms >= r.plan_ms.unwrap(), "{r:?}");
            assert!(!r.cdf.is_empty());
            assert_eq!(r.cdf.last().unwrap().fraction, 1.0);
            let w = r.waterfall.as_ref().unwrap();
            // order, payment, inventory, shipping, confirm: five upstream calls, one each.
            assert_eq!(w.calls.len(), 5, "{w:?}");
        }
        // Sequential: no two calls overlap. Concurrent: payment, inventory and shipping do.
        let overlaps = |w: &Waterfall| {
            w.calls
                .windows(2)
                .filter(|p| p[1].start_ms < p[0].end_ms)
                .count()
        };
        let seq = checkout.strategies[0].waterfall.as_ref().unwrap();
        let conc = checkout.strategies[1].waterfall.as_ref().unwrap();
        assert_eq!(overlaps(seq), 0, "{seq:?}");
        assert!(overlaps(conc) >= 2, "{conc:?}");
        assert!(steps.iter().any(|s| s.contains("checkout · concurrent")));
    }
}
