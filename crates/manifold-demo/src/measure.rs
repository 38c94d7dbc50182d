//! Start the shop and one gateway per strategy, then measure every scenario under every strategy.
//!
//! One gateway per strategy, rather than one gateway with renamed routes: each strategy is a
//! config file a user can run with `manifold serve -c FILE` exactly as the demo ran it (only the
//! upstream addresses are pointed at the sim's ephemeral ports), so the figures belong to those
//! files and nothing else. Only one gateway receives load at a time, so the idle ones cost
//! nothing but two loopback listeners each.

use crate::report::{DemoReport, Gain, OffloadResult, ScenarioResult, StrategyResult};
use crate::{Contrast, DemoError, DemoSpec, Scenario, Strategy};
use manifold_config::Config;
use manifold_load::LoadSpec;
use manifold_sim::{RunningSim, Sim, SimConfig};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;
use tracing::instrument::WithSubscriber as _;

mod chart;
mod shape;
mod strategy;
use chart::{cdf, waterfall};
use shape::Shape;
use strategy::{compile, plan_ms, point_at_sim, upstream_calls};

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

#[cfg(test)]
mod tests;
