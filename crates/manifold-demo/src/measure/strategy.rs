//! A strategy's config file, compiled and pointed at the sim, and what its plan predicts.

use std::net::SocketAddr;

use manifold_config::{Config, Endpoint, RouteKind};
use manifold_sim::{RunningSim, SimStats};

use super::queue_dir;
use crate::report::UpstreamCalls;
use crate::{DemoError, Scenario, Strategy};

/// Compile a strategy's config and check that it declares at least one scenario's route, as a
/// composed route.
pub(super) fn compile(strategy: &Strategy, scenarios: &[Scenario]) -> Result<Config, DemoError> {
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
pub(super) fn upstream_calls(
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
pub(super) fn point_at_sim(
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
pub(super) fn plan_ms(config: &Config, route: &str) -> Option<f64> {
    match &config.route(route)?.kind {
        RouteKind::Compose(plan) => plan.critical_path().map(|(_, d)| d.as_secs_f64() * 1000.0),
        _ => None,
    }
}
