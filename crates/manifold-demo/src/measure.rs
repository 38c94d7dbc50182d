//! Start the shop and one gateway per strategy, then measure every scenario under every strategy.
//!
//! One gateway per strategy, rather than one gateway with renamed routes: each strategy is a
//! config file a user can run with `manifold serve -c FILE` exactly as the demo ran it (only the
//! upstream addresses are pointed at the sim's ephemeral ports), so the figures belong to those
//! files and nothing else. Only one gateway receives load at a time, so the idle ones cost
//! nothing but two loopback listeners each.

use crate::report::{
    CdfPoint, DemoReport, Gain, OffloadResult, ScenarioResult, StrategyResult, UpstreamCalls,
    Waterfall, WaterfallCall,
};
use crate::{Contrast, DemoError, DemoSpec, Scenario, Strategy};
use manifold_config::{Config, Endpoint, Mode, RouteKind};
use manifold_load::{LoadReport, LoadSpec};
use manifold_sim::{RunningSim, Sim, SimConfig, SimStats};
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

/// A contrast's two configs, compiled: without, then with.
type ContrastConfigs = (Contrast, [Config; 2]);

/// Run the demo: start the simulated shop and the gateways, measure each scenario under each
/// strategy with the same open-loop load, record one request alone per pair for the waterfall,
/// stop everything. `progress` is told each step (the CLI shows it on a terminal only).
pub async fn run(spec: &DemoSpec, mut progress: impl FnMut(&str)) -> Result<DemoReport, DemoError> {
    let shop_rows = !spec.strategies.is_empty() && !spec.scenarios.is_empty();
    if !shop_rows && spec.contrasts.is_empty() {
        return Err(DemoError::Input(
            "the demo needs at least one strategy and one scenario, or a contrast".into(),
        ));
    }
    // Check every config before starting anything.
    let configs = if shop_rows {
        spec.strategies
            .iter()
            .map(|s| compile(s, &spec.scenarios))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        Vec::new()
    };
    let contrasts = spec
        .contrasts
        .iter()
        .map(|c| {
            let one = [c.scenario];
            Ok((*c, [compile(&c.without, &one)?, compile(&c.with, &one)?]))
        })
        .collect::<Result<Vec<ContrastConfigs>, DemoError>>()?;

    // The contrasts run first, though their rows come last: the seed shop's gateways (one of
    // them offloading) then stop as the demo ends, instead of draining their queue in background
    // tasks, which log where the caller's subscriber does not reach, while contrasts run.
    let mut contrast_rows = Vec::new();
    let mut failed = None;
    for c in contrasts {
        match measure_contrast(spec, c, &mut progress).await {
            Ok(s) => contrast_rows.push(s),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let mut result = if let Some(e) = failed {
        Err(e)
    } else if !shop_rows {
        Ok(DemoReport {
            scenarios: Vec::new(),
        })
    } else {
        progress("starting the simulated shop");
        let mut shop = SimConfig::shop();
        shop.timer = spec.timer.clone();
        let sim = Sim::start(shop).await?;
        let stop = CancellationToken::new();
        let result = measure_all(spec, configs, &sim, &stop, &mut progress).await;
        stop.cancel();
        sim.shutdown().await;
        result
    };
    if let Ok(report) = &mut result {
        report.scenarios.extend(contrast_rows);
    }
    // The offload queues' files: the gateways have stopped writing (their tasks all delivered,
    // or the demo failed and says so).
    for s in &spec.strategies {
        let _ = std::fs::remove_dir_all(queue_dir(s.name));
    }
    for c in &spec.contrasts {
        for s in [c.without, c.with] {
            let _ = std::fs::remove_dir_all(queue_dir(&contrast_tag(c, &s)));
        }
    }
    result
}

/// Where a gateway keeps its offload queue: a directory of its own per process and gateway
/// (`tag`: the strategy, or the contrast and strategy), so two demos at once never share one,
/// and nothing is left in the working directory.
fn queue_dir(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("manifold-demo-{}-{tag}", std::process::id()))
}

/// A contrast's gateway's name, for its queue directory.
fn contrast_tag(c: &Contrast, s: &Strategy) -> String {
    format!("{}-{}", c.name, s.name)
}

/// Start and bind one strategy's gateway, pointed at the sim.
async fn start_target(
    strategy: &Strategy,
    config: Config,
    sim: &RunningSim,
    tag: &str,
    stop: &CancellationToken,
) -> Result<Target, DemoError> {
    let config = point_at_sim(config, sim, strategy, tag)?;
    let gateway = manifold_gateway::Gateway::bind(config.clone()).await?;
    let addr = gateway.local_addr();
    // The gateway logs through whatever the caller set up for this task.
    tokio::spawn(gateway.run(stop.child_token()).with_current_subscriber());
    Ok(Target {
        strategy: *strategy,
        config,
        addr,
    })
}

/// Set each result's gain: the first one's figure over its own.
fn with_gains(results: Vec<StrategyResult>, gain_on: Gain) -> Vec<StrategyResult> {
    let base = results.first().map(|b| gain_on.of(b));
    results
        .into_iter()
        .map(|r| {
            let own = gain_on.of(&r);
            StrategyResult {
                gain: match base {
                    Some(b) if own > 0.0 => b / own,
                    _ => 0.0,
                },
                ..r
            }
        })
        .collect()
}

/// One contrast: the shop with its service's replicas changed, a gateway per config, the
/// scenario measured without and then with the policy.
async fn measure_contrast(
    spec: &DemoSpec,
    (contrast, configs): ContrastConfigs,
    progress: &mut impl FnMut(&str),
) -> Result<ScenarioResult, DemoError> {
    let mut shop = SimConfig::shop();
    shop.timer = spec.timer.clone();
    let service = shop.services.get_mut(contrast.service).ok_or_else(|| {
        DemoError::Config(format!(
            "contrast {}: {:?} is not a service of the simulated shop",
            contrast.name, contrast.service
        ))
    })?;
    service.port = None;
    service.replicas = (contrast.replicas)(spec.duration);
    progress(&format!(
        "starting the shop for {}: {}",
        contrast.name, contrast.summary
    ));
    let sim = Sim::start(shop).await?;
    let stop = CancellationToken::new();
    let result = async {
        let mut targets = Vec::new();
        for (strategy, config) in [contrast.without, contrast.with].iter().zip(configs) {
            progress(&format!(
                "starting the {} gateway ({})",
                strategy.name, strategy.file
            ));
            let tag = contrast_tag(&contrast, strategy);
            targets.push(start_target(strategy, config, &sim, &tag, &stop).await?);
        }
        let mut results = Vec::new();
        for target in &targets {
            results.push(
                measure_one(
                    spec,
                    &contrast.scenario,
                    target,
                    &sim,
                    Some(contrast.service),
                    progress,
                )
                .await?,
            );
        }
        let results = with_gains(results, Gain::P99);
        Ok(ScenarioResult {
            name: contrast.name.to_owned(),
            ideal_ms: results
                .iter()
                .filter_map(|r| r.plan_ms)
                .min_by(|a, b| a.total_cmp(b)),
            request: format!("{} {}", contrast.scenario.method, contrast.scenario.path),
            rate: spec.rate,
            duration_s: spec.duration.as_secs_f64(),
            summary: Some(contrast.summary.to_owned()),
            gain_on: Gain::P99,
            strategies: results,
        })
    }
    .await;
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
        targets.push(start_target(strategy, config, sim, strategy.name, stop).await?);
    }

    let mut scenarios = Vec::new();
    for scenario in &spec.scenarios {
        let mut results: Vec<StrategyResult> = Vec::new();
        // A strategy runs the scenarios whose route its file declares.
        for target in targets
            .iter()
            .filter(|t| t.config.route(scenario.name).is_some())
        {
            results.push(measure_one(spec, scenario, target, sim, None, progress).await?);
        }
        let results = with_gains(results, Gain::P50);
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
            summary: None,
            gain_on: Gain::P50,
            strategies: results,
        });
    }
    Ok(DemoReport { scenarios })
}

/// One scenario under one strategy: warm up, measure under open-loop load, count what the sim
/// saw (cache answers, offloaded work done after the answer, the requests `watch` received),
/// record one request alone.
async fn measure_one(
    spec: &DemoSpec,
    scenario: &Scenario,
    target: &Target,
    sim: &RunningSim,
    watch: Option<&str>,
    progress: &mut impl FnMut(&str),
) -> Result<StrategyResult, DemoError> {
    let name = format!("{} · {}", scenario.name, target.strategy.name);
    let shape = Shape::of(&target.config, scenario.name);
    if spec.warmup_requests > 0 {
        progress(&format!("{name}: warming up"));
        sim.reset_stats();
        let mut warm = load_spec(spec, scenario, target.addr);
        warm.duration = None;
        warm.requests = Some(spec.warmup_requests);
        // A different seed: the measurement's keys are not all pre-warmed.
        warm.seed = warm.seed.wrapping_add(1);
        let w = manifold_load::run(warm).await?;
        // Let the warm-up's offloaded work finish, so it is not counted as the measurement's.
        shape
            .wait_offloaded(sim, (w.sent - w.errors) * shape.offloaded.len() as u64)
            .await;
    }
    progress(&format!(
        "{name}: {} req/s for {:.0?}",
        spec.rate, spec.duration
    ));
    sim.reset_stats();
    let load = manifold_load::run(load_spec(spec, scenario, target.addr)).await?;
    let answered = tokio::time::Instant::now();
    let stats = sim.stats();
    let cache_hit_ratio = shape.cache_hit_ratio(&stats, load.sent);
    let upstream = watch
        .map(|service| upstream_calls(&target.config, scenario.name, service, &stats, load.sent));
    let offloaded = if shape.offloaded.is_empty() {
        None
    } else {
        progress(&format!("{name}: waiting for the offloaded calls"));
        let accepted = (load.sent - load.errors) * shape.offloaded.len() as u64;
        let delivered = shape.wait_offloaded(sim, accepted).await;
        let drained_after_ms = answered.elapsed().as_secs_f64() * 1000.0;
        progress(&format!(
            "{name}: following a few tasks with status_url?wait"
        ));
        let status_path = &target.config.queue.status_path;
        let ready_p50_ms =
            crate::follow::label_ready_p50_ms(scenario, target.addr, status_path).await;
        Some(OffloadResult {
            calls: shape.offloaded.iter().map(|(c, _)| c.clone()).collect(),
            accepted,
            delivered,
            drained_after_ms,
            ready_p50_ms,
        })
    };
    let waterfall = if spec.waterfall {
        progress(&format!("{name}: one request alone, for the waterfall"));
        Some(waterfall(spec, scenario, target.addr, sim, &shape).await?)
    } else {
        None
    };
    Ok(StrategyResult {
        name: target.strategy.name.to_owned(),
        p50_ms: load.latency_ms.p50,
        p99_ms: load.latency_ms.p99,
        plan_ms: plan_ms(&target.config, scenario.name),
        gain: 1.0,
        sent: load.sent,
        errors: load.errors,
        config: target.strategy.file.to_owned(),
        cache_hit_ratio,
        offloaded,
        upstream,
        cdf: cdf(&load),
        waterfall,
    })
}

/// Longest the demo waits for offloaded calls to be delivered after the load ends.
const OFFLOAD_WAIT: Duration = Duration::from_secs(60);

/// What of a route's plan the sim can confirm beyond latency.
struct Shape {
    /// Cached calls' upstream services, and how many cached calls each receives per request.
    cached: Vec<(String, u64)>,
    /// Offloaded calls: (call name, upstream service).
    offloaded: Vec<(String, String)>,
}

impl Shape {
    fn of(config: &Config, route: &str) -> Shape {
        let mut shape = Shape {
            cached: Vec::new(),
            offloaded: Vec::new(),
        };
        if let Some(RouteKind::Compose(plan)) = config.route(route).map(|r| &r.kind) {
            for call in &plan.calls {
                if call.mode == Mode::Async {
                    shape
                        .offloaded
                        .push((call.name.clone(), call.upstream_name.clone()));
                } else if call.cache.is_some() {
                    match shape
                        .cached
                        .iter_mut()
                        .find(|(u, _)| *u == call.upstream_name)
                    {
                        Some((_, n)) => *n += 1,
                        None => shape.cached.push((call.upstream_name.clone(), 1)),
                    }
                }
            }
        }
        shape
    }

    /// The share of cached calls that did not reach their upstream during a measurement of
    /// `sent` requests (`None` when the plan caches nothing).
    fn cache_hit_ratio(&self, stats: &SimStats, sent: u64) -> Option<f64> {
        let expected: u64 = self.cached.iter().map(|(_, n)| n * sent).sum();
        if expected == 0 {
            return None;
        }
        let reached: u64 = self
            .cached
            .iter()
            .map(|(service, _)| stats.service_calls(service))
            .sum();
        Some((1.0 - reached as f64 / expected as f64).clamp(0.0, 1.0))
    }

    /// Distinct idempotency keys the offloaded calls' services answered since the last reset.
    fn delivered(&self, stats: &SimStats) -> u64 {
        self.offloaded
            .iter()
            .filter_map(|(_, service)| stats.services.get(service))
            .flat_map(|s| s.endpoints.values())
            .map(|e| e.idempotency_keys)
            .sum()
    }

    /// Wait (at most [`OFFLOAD_WAIT`]) until `want` offloaded calls were delivered; returns how
    /// many were.
    async fn wait_offloaded(&self, sim: &RunningSim, want: u64) -> u64 {
        let until = tokio::time::Instant::now() + OFFLOAD_WAIT;
        loop {
            let done = self.delivered(&sim.stats());
            if done >= want || tokio::time::Instant::now() >= until {
                return done;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Compile a strategy's config and check that it declares at least one scenario's route, as a
/// composed route.
fn compile(strategy: &Strategy, scenarios: &[Scenario]) -> Result<Config, DemoError> {
    let config = manifold_config::compile(strategy.file.as_ref(), strategy.source)
        .map_err(|e| DemoError::Config(format!("strategy {}: {e}", strategy.name)))?;
    let mut any = false;
    for s in scenarios {
        match config.route(s.name) {
            Some(r) if matches!(r.kind, RouteKind::Compose(_)) => any = true,
            Some(_) => {
                return Err(DemoError::Config(format!(
                    "strategy {} ({}): route {:?} is not a composed route",
                    strategy.name, strategy.file, s.name
                )))
            }
            None => {}
        }
    }
    if !any {
        let names: Vec<&str> = scenarios.iter().map(|s| s.name).collect();
        return Err(DemoError::Config(format!(
            "strategy {} ({}) has none of the routes {names:?}",
            strategy.name, strategy.file
        )));
    }
    Ok(config)
}

/// What `service` received during a measurement of `sent` requests, against what the route's
/// plan asks of it.
fn upstream_calls(
    config: &Config,
    route: &str,
    service: &str,
    stats: &SimStats,
    sent: u64,
) -> UpstreamCalls {
    let per_request = match config.route(route).map(|r| &r.kind) {
        Some(RouteKind::Compose(plan)) => plan
            .calls
            .iter()
            .filter(|c| c.upstream_name == service)
            .count() as u64,
        _ => 0,
    };
    let planned = per_request * sent;
    let calls = stats.service_calls(service);
    UpstreamCalls {
        service: service.to_owned(),
        calls,
        planned,
        by_replica: stats
            .services
            .get(service)
            .map(|s| s.replicas.iter().map(|r| r.calls).collect())
            .unwrap_or_default(),
        extra_pct: if planned > 0 {
            (calls as f64 - planned as f64) / planned as f64 * 100.0
        } else {
            0.0
        },
    }
}

/// Listen on ephemeral loopback ports and send each upstream's calls to the sim's service of the
/// same name: every replica of it is an endpoint.
fn point_at_sim(
    mut config: Config,
    sim: &RunningSim,
    strategy: &Strategy,
    tag: &str,
) -> Result<Config, DemoError> {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.listen = Some(loopback);
    config.server.admin = loopback;
    config.queue.path = queue_dir(tag);
    for upstream in &mut config.upstreams {
        let addrs = sim.addrs(&upstream.name);
        if addrs.is_empty() {
            return Err(DemoError::Config(format!(
                "strategy {} ({}): upstream {:?} is not a service of the simulated shop (it has {})",
                strategy.name,
                strategy.file,
                upstream.name,
                sim.services().join(", ")
            )));
        }
        upstream.endpoints = addrs
            .into_iter()
            .map(|addr| Endpoint {
                url: format!("http://{addr}"),
                scheme: "http".to_owned(),
                authority: addr.to_string(),
                base_path: String::new(),
            })
            .collect();
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
    load.timer = spec.timer.clone();
    load.method = http::Method::from_bytes(scenario.method.as_bytes()).unwrap_or_default();
    if let Some(body) = scenario.body {
        load.headers = vec![("content-type".into(), "application/json".into())];
        load.body = Some(body.to_owned());
    }
    load.duration = Some(spec.duration);
    load.timeout = spec.timeout;
    if let Some(keys) = scenario.keys {
        load.keys = keys;
    }
    load
}

/// Send one request with nothing else in flight and read the upstream calls the sim recorded
/// for it.
async fn waterfall(
    spec: &DemoSpec,
    scenario: &Scenario,
    addr: SocketAddr,
    sim: &RunningSim,
    shape: &Shape,
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
    // Offloaded calls run after the answer: draw them too.
    shape
        .wait_offloaded(
            sim,
            (report.sent - report.errors) * shape.offloaded.len() as u64,
        )
        .await;
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

    fn calls_of(s: &Strategy, route: &str) -> Vec<(String, String, Option<Duration>)> {
        let config = compile(s, crate::SCENARIOS).unwrap();
        match &config.route(route).unwrap().kind {
            RouteKind::Compose(p) => p
                .calls
                .iter()
                .map(|c| (c.name.clone(), c.upstream_name.clone(), c.expect))
                .collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn every_strategy_compiles_with_the_seed_critical_paths() {
        let want = [
            ("sequential", "checkout", Some(750.0)),
            ("sequential", "profile", Some(300.0)),
            ("concurrent", "checkout", Some(450.0)),
            ("concurrent", "profile", Some(200.0)),
            // A miss costs what the concurrent plan costs; a hit no upstream call at all.
            ("cached", "profile", Some(200.0)),
            ("cached", "checkout", None),
            // The label leaves the critical path: order → payment → confirm.
            ("offloaded", "checkout", Some(400.0)),
            ("offloaded", "profile", None),
        ];
        for (strategy, route, ms) in want {
            let s = crate::STRATEGIES
                .iter()
                .find(|s| s.name == strategy)
                .unwrap();
            let config = compile(s, crate::SCENARIOS).unwrap();
            assert_eq!(plan_ms(&config, route), ms, "{strategy} {route}");
        }
    }

    #[test]
    fn every_strategy_makes_the_same_calls_as_the_baseline() {
        for s in crate::STRATEGIES {
            for route in ["checkout", "profile"] {
                let config = compile(s, crate::SCENARIOS).unwrap();
                if config.route(route).is_some() {
                    assert_eq!(
                        calls_of(s, route),
                        calls_of(&crate::SEQUENTIAL, route),
                        "{} {route}",
                        s.name
                    );
                }
            }
        }
    }

    #[test]
    fn the_cached_and_offloaded_files_change_what_their_names_say() {
        let cached = compile(&crate::CACHED, crate::SCENARIOS).unwrap();
        let shape = Shape::of(&cached, "profile");
        assert_eq!(
            shape.cached,
            [("users".to_owned(), 1), ("orders".to_owned(), 1)]
        );
        assert!(shape.offloaded.is_empty());
        let offloaded = compile(&crate::OFFLOADED, crate::SCENARIOS).unwrap();
        let shape = Shape::of(&offloaded, "checkout");
        assert_eq!(
            shape.offloaded,
            [("shipping".to_owned(), "shipping".to_owned())]
        );
        assert!(shape.cached.is_empty());
    }

    #[test]
    fn a_strategy_with_none_of_the_routes_is_a_config_error() {
        let err = compile(
            &crate::CONCURRENT,
            &[Scenario {
                name: "nope",
                ..crate::CHECKOUT
            }],
        )
        .unwrap_err();
        assert!(matches!(err, DemoError::Config(_)), "{err}");
        assert!(
            err.to_string().contains("none of the routes [\"nope\"]"),
            "{err}"
        );
    }

    #[test]
    fn the_contrasts_change_one_service_of_the_shop() {
        let orders = (crate::HEDGED_ROWS.replicas)(Duration::from_secs(9));
        assert_eq!(orders.len(), 2);
        assert_eq!(orders[0].straggler_rate, 0.0);
        assert_eq!(
            (orders[1].straggler_rate, orders[1].straggler_scale),
            (0.1, 4.0)
        );
        let payment = (crate::BALANCED_ROWS.replicas)(Duration::from_secs(9));
        assert_eq!(payment.len(), 3);
        assert!(payment[..2].iter().all(|r| r.slow_after.is_none()));
        assert_eq!(payment[2].slow_after, Some(Duration::from_secs(3)));
        assert_eq!(payment[2].slow_scale, 5.0);
        for c in crate::CONTRASTS {
            assert!(
                SimConfig::shop().services.contains_key(c.service),
                "{}",
                c.name
            );
        }
    }

    /// The contrast files compile, declare their scenario's route and make the same calls as
    /// the concurrent plan; each changes only the keys its name says.
    #[test]
    fn the_contrast_files_make_the_concurrent_calls_with_their_policy() {
        use manifold_config::policy::Balance;
        for c in crate::CONTRASTS {
            for s in [c.without, c.with] {
                assert_eq!(
                    calls_of(&s, c.scenario.name),
                    calls_of(&crate::CONCURRENT, c.scenario.name),
                    "{} {}",
                    c.name,
                    s.name
                );
            }
        }
        let policies = |s: &Strategy, up: &str| {
            let config = compile(s, crate::SCENARIOS).unwrap();
            config
                .upstreams
                .iter()
                .find(|u| u.name == up)
                .map(|u| u.policies.clone())
                .unwrap()
        };
        assert!(policies(&crate::CONCURRENT, "orders").hedge.is_none());
        assert!(policies(&crate::HEDGED, "orders").hedge.is_some());
        assert_eq!(
            policies(&crate::ROUND_ROBIN, "payment").balance,
            Balance::RoundRobin
        );
        assert_eq!(policies(&crate::P2C, "payment").balance, Balance::P2c);
    }

    /// The contrast machinery with two files today's compiler accepts: the shop's orders
    /// service gets its straggling replicas, both are endpoints, the gain is read on p99 and the
    /// sim counts the orders requests.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_contrast_runs_on_its_own_shop_and_counts_the_changed_service() {
        let contrast = Contrast {
            name: "same",
            summary: "orders straggles",
            without: crate::CONCURRENT,
            with: crate::CACHED,
            ..crate::HEDGED_ROWS
        };
        let spec = DemoSpec {
            strategies: Vec::new(),
            scenarios: Vec::new(),
            contrasts: vec![contrast],
            rate: 10.0,
            duration: Duration::from_millis(500),
            warmup_requests: 1,
            waterfall: false,
            ..DemoSpec::quick()
        };
        let report = run(&spec, |_| {}).await.unwrap();
        assert!(report.all_ok(), "{}", report.table());
        assert_eq!(report.scenarios.len(), 1);
        let s = &report.scenarios[0];
        assert_eq!((s.name.as_str(), s.gain_on), ("same", Gain::P99));
        assert_eq!(s.summary.as_deref(), Some("orders straggles"));
        let names: Vec<&str> = s.strategies.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["concurrent", "cached"]);
        let u = s.strategies[0].upstream.as_ref().unwrap();
        // No hedge, no retry on success: one orders request per profile request.
        assert_eq!((u.service.as_str(), u.calls, u.planned), ("orders", 5, 5));
        assert_eq!(u.by_replica.len(), 2, "{u:?}");
        assert_eq!(u.by_replica.iter().sum::<u64>(), 5, "{u:?}");
        assert_eq!(s.strategies[0].gain, 1.0);
        let want = s.strategies[0].p99_ms / s.strategies[1].p99_ms;
        assert!((s.strategies[1].gain - want).abs() < 1e-9);
        assert!(report.table().contains("on p99"), "{}", report.table());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_run_answers_every_request_and_draws_each_waterfall() {
        let spec = DemoSpec {
            rate: 10.0,
            duration: Duration::from_millis(500),
            warmup_requests: 1,
            contrasts: Vec::new(),
            ..DemoSpec::quick()
        };
        let mut steps = Vec::new();
        let report = run(&spec, |s| steps.push(s.to_owned())).await.unwrap();
        assert!(report.all_ok(), "{}", report.table());
        assert_eq!(report.scenarios.len(), 2);
        let checkout = &report.scenarios[0];
        let names: Vec<&str> = checkout
            .strategies
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["sequential", "concurrent", "offloaded"]);
        assert_eq!(checkout.ideal_ms, Some(400.0));
        for r in &checkout.strategies {
            assert_eq!(r.sent, 5);
            // Nothing beats the sum of the service times on the critical path.
            assert!(r.p50_ms >= r.plan_ms.unwrap(), "{r:?}");
            assert!(!r.cdf.is_empty());
            assert_eq!(r.cdf.last().unwrap().fraction, 1.0);
            let w = r.waterfall.as_ref().unwrap();
            // order, payment, inventory, shipping, confirm: five upstream calls, one each (the
            // offloaded label too, after the answer).
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
        // Offloaded: every accepted label was created, once per idempotency key, from the queue
        // (so after the order it reads, like any call).
        let off = &checkout.strategies[2];
        let o = off.offloaded.as_ref().unwrap();
        assert_eq!((o.accepted, o.delivered), (5, 5), "{o:?}");
        // A client following the receipts' status_url saw every label done, after the answer.
        let ready = o.ready_p50_ms.expect("followed with status_url?wait");
        assert!(ready > 0.0, "{o:?}");
        let w = off.waterfall.as_ref().unwrap();
        let call = |p: &str| w.calls.iter().find(|c| c.label.starts_with(p)).unwrap();
        assert!(
            call("shipping").start_ms >= call("order · POST /orders").end_ms,
            "{w:?}"
        );
        assert!(checkout.strategies[..2]
            .iter()
            .all(|r| r.offloaded.is_none()));

        let profile = &report.scenarios[1];
        let names: Vec<&str> = profile.strategies.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["sequential", "concurrent", "cached"]);
        let cached = &profile.strategies[2];
        let h = cached.cache_hit_ratio.unwrap();
        assert!((0.0..=1.0).contains(&h), "{h}");
        assert!(profile.strategies[..2]
            .iter()
            .all(|r| r.cache_hit_ratio.is_none()));
        assert!(steps.iter().any(|s| s.contains("checkout · offloaded")));
    }
}
