//! Building the telemetry of a config: each route's names and metric handles, and the trace
//! store's view of the routes (their plans' shapes). Run at start and at each reload, never per
//! request.

use super::{CallTele, RouteTele};
use crate::respond::REQUEST_ID;
use manifold_config::{Config, RouteKind};
use manifold_telemetry as tm;
use manifold_telemetry::metrics::Metrics;
use std::sync::Arc;

/// The trace store for the compiled routes: each compose route's plan as a [`tm::store::PlanShape`]
/// (the executor waits for every call, so the answer waits for them all); proxy routes have none.
pub(super) fn trace_store(
    config: &Config,
    bounds: &manifold_config::TraceStoreSettings,
) -> Result<tm::store::TraceStore, tm::TelemetryError> {
    let bounds = tm::store::Bounds {
        recent: bounds.recent as usize,
        slowest: bounds.slowest as usize,
        errors_for: bounds.errors_for,
        max_errors: bounds.max_errors as usize,
    };
    tm::store::TraceStore::new(bounds, store_routes(config)?)
}

/// Each route as the trace store knows it: its name and, for a compose route, its plan's shape.
pub(super) fn store_routes(
    config: &Config,
) -> Result<Vec<tm::store::RouteSpec>, tm::TelemetryError> {
    let mut routes = Vec::with_capacity(config.routes.len());
    for r in &config.routes {
        let shape = match &r.kind {
            RouteKind::Compose(plan) => {
                let n = plan.calls.len() as u32;
                Some(tm::store::PlanShape::new(
                    plan.calls
                        .iter()
                        .map(|c| Arc::from(c.name.as_str()))
                        .collect(),
                    plan.deps
                        .iter()
                        .map(|d| d.iter().map(|&i| i as u32).collect())
                        .collect(),
                    (0..n).collect(),
                )?)
            }
            _ => None,
        };
        routes.push(tm::store::RouteSpec {
            name: Arc::from(r.name.as_str()),
            shape,
        });
    }
    Ok(routes)
}

/// Each route's names and metric handles, by route index.
pub(super) fn route_handles(config: &Config, metrics: Option<&Metrics>) -> Vec<RouteTele> {
    config
        .routes
        .iter()
        .enumerate()
        .map(|(index, r)| {
            let calls = match &r.kind {
                RouteKind::Compose(plan) => {
                    plan.calls
                        .iter()
                        .map(|c| {
                            let upstream = config
                                .upstreams
                                .get(c.upstream)
                                .map_or("", |u| u.name.as_str());
                            Arc::new(CallTele {
                                name: Arc::from(c.name.as_str()),
                                sets_tracestate: c.headers.iter().any(|(n, _)| {
                                    n.eq_ignore_ascii_case(tm::propagate::TRACESTATE)
                                }),
                                sets_request_id: c
                                    .headers
                                    .iter()
                                    .any(|(n, _)| n.eq_ignore_ascii_case(REQUEST_ID.as_str())),
                                metrics: metrics.map(|m| m.call(&r.name, &c.name, upstream)),
                            })
                        })
                        .collect()
                }
                _ => Vec::new(),
            };
            RouteTele {
                index,
                proxy: matches!(r.kind, RouteKind::Proxy { .. }),
                name: Arc::from(r.name.as_str()),
                template: Arc::from(r.path.as_str()),
                metrics: metrics.map(|m| m.route(&r.name)),
                calls,
            }
        })
        .collect()
}
