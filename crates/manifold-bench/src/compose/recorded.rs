//! The ideal as BENCHMARKS.md defines it: each request's critical path of the service times the
//! upstreams recorded for its calls.

use super::OverRecorded;
use crate::Spread;
use manifold_sim::RunningSim;
use std::collections::HashMap;

/// The checkout's five calls as the simulator keys them (service, endpoint), in the order
/// order, payment, inventory, shipping, confirm.
pub(super) const CHECKOUT_CALLS: [(&str, &str); 5] = [
    ("order", "POST /orders"),
    ("payment", "POST /payments"),
    ("inventory", "POST /inventory/reserve"),
    ("shipping", "POST /shipping/labels"),
    ("order", "POST /orders/{id}/confirm"),
];

/// Each request's critical path, ms, of the service times the simulator recorded for its calls:
/// order + the longest of payment, inventory and shipping + confirm, for every request whose
/// five calls all answered `ok` and are all still in the call log (joined by `X-Request-Id`).
pub fn recorded_critical_paths(stats: &manifold_sim::SimStats) -> Vec<f64> {
    let mut by_id: HashMap<&str, [Option<f64>; 5]> = HashMap::new();
    for (i, (service, endpoint)) in CHECKOUT_CALLS.iter().enumerate() {
        let Some(s) = stats.services.get(*service) else {
            continue;
        };
        for r in &s.replicas {
            let calls = r.endpoints.get(*endpoint).and_then(|e| e.recent.as_ref());
            for c in calls.into_iter().flatten() {
                if let (Some(id), "ok") = (c.request_id.as_deref(), c.outcome.as_str()) {
                    by_id.entry(id).or_default()[i] = Some(c.end_ms - c.start_ms);
                }
            }
        }
    }
    by_id
        .values()
        .filter_map(|&[o, p, i, s, c]| Some(o? + p?.max(i?).max(s?) + c?))
        .collect()
}

/// The `q`-quantile (0..=1) of `v` by nearest rank; `None` when empty.
pub(super) fn quantile(v: &mut [f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// One run's recorded ideal beside the target's latency: (ideal p50, ideal p99, added p50,
/// added p99, requests joined).
pub(super) type RecordedRun = (f64, f64, f64, f64, usize);

pub(super) fn recorded_run(sim: &RunningSim, r: &manifold_load::LoadReport) -> Option<RecordedRun> {
    let mut paths = recorded_critical_paths(&sim.stats_with_calls());
    let n = paths.len();
    let p50 = quantile(&mut paths, 0.50)?;
    let p99 = quantile(&mut paths, 0.99)?;
    Some((p50, p99, r.latency_ms.p50 - p50, r.latency_ms.p99 - p99, n))
}

pub(super) fn over_recorded(runs: &[RecordedRun]) -> Option<OverRecorded> {
    if runs.is_empty() {
        return None;
    }
    let col = |f: fn(&RecordedRun) -> f64| Spread::of(&runs.iter().map(f).collect::<Vec<_>>());
    Some(OverRecorded {
        ideal_p50_ms: col(|r| r.0),
        ideal_p99_ms: col(|r| r.1),
        added_p50_ms: col(|r| r.2),
        added_p99_ms: col(|r| r.3),
        requests: runs.iter().map(|r| r.4).min().unwrap_or(0),
    })
}
