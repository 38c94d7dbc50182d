//! What the report draws: one request's waterfall and the latency distribution.

use std::net::SocketAddr;
use std::time::Duration;

use manifold_load::LoadReport;
use manifold_sim::RunningSim;

use super::load_spec;
use super::shape::Shape;
use crate::report::{CdfPoint, Waterfall, WaterfallCall};
use crate::{DemoError, DemoSpec, Scenario};

/// Most points kept for one latency distribution in the chart.
const MAX_CDF_POINTS: usize = 400;

/// Send one request with nothing else in flight and read the upstream calls the sim recorded
/// for it.
pub(super) async fn waterfall(
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
pub(super) fn cdf(load: &LoadReport) -> Vec<CdfPoint> {
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
