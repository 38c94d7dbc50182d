//! Outputs: the `--json` contract, the terminal report, the self-contained HTML page and the
//! route plan (TOML) — all rendered from an [`Analyzer`] without I/O.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::analysis::{Analyzer, Dist, OpKey, RecKind};

mod html;
mod plan;
mod text;

pub use html::render_html;
pub use plan::render_plan;
pub use text::render_text;

/// Share of an operation's critical time above which it counts as dominating (slow-dependency).
pub const DOMINATING_SHARE: f64 = 0.3;

/// The `--json` document. Field names are the contract (see `docs/analyze.md`).
#[derive(Debug, Clone, Serialize)]
pub struct JsonReport {
    /// Traces analyzed.
    pub traces: u64,
    /// Spans analyzed.
    pub spans: u64,
    /// Distinct services.
    pub services: u64,
    /// Warnings (total count).
    pub warnings: u64,
    /// Warnings by kind.
    pub warning_kinds: BTreeMap<String, u64>,
    /// Warning examples.
    pub warning_examples: Vec<String>,
    /// The overlap allowance used (0 = Jaeger).
    pub skew_tolerance: f64,
    /// End-to-end latency over all traces.
    pub latency: Latency,
    /// Operations by share of summed critical-path time.
    pub hotspots: Vec<Hotspot>,
    /// Recommendations by saving.
    pub recommendations: Vec<Recommendation>,
    /// Per endpoint (root operation).
    pub endpoints: Vec<Endpoint>,
    /// Call paths by critical time.
    pub call_paths: Vec<CallPath>,
    /// The `--what-if` result, when asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub what_if: Option<WhatIfResult>,
}

/// Latency percentiles (ms).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    /// Count.
    pub count: u64,
    /// p50.
    pub p50_ms: f64,
    /// p90.
    pub p90_ms: f64,
    /// p99.
    pub p99_ms: f64,
    /// max.
    pub max_ms: f64,
}

/// One hotspot.
#[derive(Debug, Clone, Serialize)]
pub struct Hotspot {
    /// Service.
    pub service: String,
    /// Operation.
    pub operation: String,
    /// Fraction of summed critical-path time.
    pub share: f64,
    /// Median per-trace critical contribution (ms), over traces containing the operation.
    pub critical_ms_p50: f64,
    /// p99 of the same.
    pub critical_ms_p99: f64,
    /// Summed critical time (ms).
    pub critical_ms_total: f64,
    /// Spans of this operation.
    pub spans: u64,
}

/// One recommendation.
#[derive(Debug, Clone, Serialize)]
pub struct Recommendation {
    /// `parallelize`, `batch`, `cache`, `async`, `retry`, `limited-concurrency`, `slow-dependency`.
    pub kind: String,
    /// Service.
    pub service: String,
    /// Operation.
    pub operation: String,
    /// Median per-trace saving over the affected traces (ms), by re-simulation.
    pub saving_ms: f64,
    /// Total saving over total end-to-end time of all traces.
    pub saving_share: f64,
    /// Evidence.
    pub evidence: Evidence,
}

/// Evidence behind a recommendation.
#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    /// Traces showing the pattern.
    pub traces: u64,
    /// Calls involved.
    pub calls: u64,
    /// Example trace ids.
    pub example_trace_ids: Vec<String>,
    /// p50 end-to-end latency of the affected traces (ms).
    pub affected_p50_ms: f64,
    /// One line of explanation.
    pub detail: String,
}

/// Per endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    /// Root service.
    pub service: String,
    /// Root operation.
    pub operation: String,
    /// Latency.
    pub latency: Latency,
    /// Hotspots within this endpoint.
    pub hotspots: Vec<Hotspot>,
}

/// A call path.
#[derive(Debug, Clone, Serialize)]
pub struct CallPath {
    /// `service:op -> …`.
    pub path: String,
    /// Fraction of summed critical-path time.
    pub share: f64,
    /// Times on a critical path.
    pub count: u64,
}

/// What-if result.
#[derive(Debug, Clone, Serialize)]
pub struct WhatIfResult {
    /// The changes, as given.
    pub changes: Vec<String>,
    /// Spans the changes matched.
    pub matched_spans: u64,
    /// Latency before.
    pub before: Latency,
    /// Latency after.
    pub after: Latency,
    /// Per endpoint.
    pub endpoints: Vec<WhatIfEndpoint>,
}

/// What-if per endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct WhatIfEndpoint {
    /// Root service.
    pub service: String,
    /// Root operation.
    pub operation: String,
    /// Before.
    pub before: Latency,
    /// After.
    pub after: Latency,
}

fn ms(ns: i64) -> f64 {
    ns as f64 / 1e6
}

fn latency(d: &Dist) -> Latency {
    Latency {
        count: d.count(),
        p50_ms: ms(d.quantile(0.5)),
        p90_ms: ms(d.quantile(0.9)),
        p99_ms: ms(d.quantile(0.99)),
        max_ms: ms(d.max()),
    }
}

fn hotspots(
    an: &Analyzer,
    ops: &crate::model::FxHashMap<OpKey, crate::analysis::OpAgg>,
    total: i128,
) -> Vec<Hotspot> {
    let mut v: Vec<Hotspot> = ops
        .iter()
        .filter(|(_, a)| a.critical_total > 0)
        .map(|(k, a)| Hotspot {
            service: an.interner.name(k.0).to_string(),
            operation: an.interner.name(k.1).to_string(),
            share: if total > 0 {
                a.critical_total as f64 / total as f64
            } else {
                0.0
            },
            critical_ms_p50: ms(a.per_trace.quantile(0.5)),
            critical_ms_p99: ms(a.per_trace.quantile(0.99)),
            critical_ms_total: a.critical_total as f64 / 1e6,
            spans: a.spans,
        })
        .collect();
    v.sort_by(|a, b| {
        b.share
            .total_cmp(&a.share)
            .then_with(|| a.service.cmp(&b.service))
            .then_with(|| a.operation.cmp(&b.operation))
    });
    v
}

/// Build the JSON document from an analysis.
pub fn build(an: &Analyzer) -> JsonReport {
    let total_critical: i128 = an.ops.values().map(|a| a.critical_total).sum();
    let hs = hotspots(an, &an.ops, total_critical);
    let share_of = |k: OpKey| -> f64 {
        an.ops.get(&k).map_or(0.0, |a| {
            if total_critical > 0 {
                a.critical_total as f64 / total_critical as f64
            } else {
                0.0
            }
        })
    };
    let mut recs: Vec<Recommendation> = Vec::new();
    for ((kind, key), r) in &an.recs {
        let saving = r.saving.quantile(0.5);
        if saving <= 0 || r.traces == 0 {
            continue;
        }
        if *kind == RecKind::SlowDependency && share_of(*key) < DOMINATING_SHARE {
            continue;
        }
        let svc = an.interner.name(key.0).to_string();
        let op = an.interner.name(key.1).to_string();
        let detail = match kind {
            RecKind::Parallelize => format!("{svc}:{op} makes calls one after another; started together they would overlap"),
            RecKind::Batch => format!(
                "{:.0} sequential calls to {svc}:{op} per trace under one parent (N+1); one batched call instead",
                r.calls as f64 / r.traces as f64
            ),
            RecKind::Cache => format!("{} calls repeated an identical earlier call to {svc}:{op}", r.detail),
            RecKind::Async => format!("{svc}:{op} writes at the end and nothing waits for its result; queue it"),
            RecKind::Retry => format!("{} failed calls to {svc}:{op} were repeated; the saving is the failed attempts' time", r.detail),
            RecKind::LimitedConcurrency => format!("calls to {svc}:{op} run in waves of at most {}; all at once instead", r.detail),
            RecKind::SlowDependency => format!(
                "{svc}:{op} holds {:.0}% of critical-path time; saving shown for making its own work 50% faster",
                share_of(*key) * 100.0
            ),
        };
        recs.push(Recommendation {
            kind: kind.as_str().to_string(),
            service: svc,
            operation: op,
            saving_ms: ms(saving),
            saving_share: if an.total_latency > 0 {
                r.saving.sum() as f64 / an.total_latency as f64
            } else {
                0.0
            },
            evidence: Evidence {
                traces: r.traces,
                calls: r.calls,
                example_trace_ids: r.examples.clone(),
                affected_p50_ms: ms(r.before.quantile(0.5)),
                detail,
            },
        });
    }
    recs.sort_by(|a, b| {
        b.saving_share
            .total_cmp(&a.saving_share)
            .then(b.saving_ms.total_cmp(&a.saving_ms))
            .then_with(|| a.kind.cmp(&b.kind))
            .then_with(|| a.service.cmp(&b.service))
            .then_with(|| a.operation.cmp(&b.operation))
    });
    let mut endpoints: Vec<Endpoint> = an
        .endpoints
        .iter()
        .map(|(k, e)| {
            let t: i128 = e.ops.values().map(|a| a.critical_total).sum();
            Endpoint {
                service: an.interner.name(k.0).to_string(),
                operation: an.interner.name(k.1).to_string(),
                latency: latency(&e.latency),
                hotspots: hotspots(an, &e.ops, t),
            }
        })
        .collect();
    endpoints.sort_by(|a, b| {
        b.latency
            .count
            .cmp(&a.latency.count)
            .then_with(|| a.operation.cmp(&b.operation))
    });
    let mut call_paths: Vec<CallPath> = an
        .callpaths
        .iter()
        .filter(|(_, c)| c.critical_total > 0)
        .map(|(h, c)| CallPath {
            path: an.call_path_name(*h),
            share: if total_critical > 0 {
                c.critical_total as f64 / total_critical as f64
            } else {
                0.0
            },
            count: c.count,
        })
        .collect();
    call_paths.sort_by(|a, b| {
        b.share
            .total_cmp(&a.share)
            .then_with(|| a.path.cmp(&b.path))
    });
    call_paths.truncate(50);
    let what_if = (!an.opts.what_if.is_empty()).then(|| {
        let mut eps: Vec<WhatIfEndpoint> = an
            .endpoints
            .iter()
            .map(|(k, e)| WhatIfEndpoint {
                service: an.interner.name(k.0).to_string(),
                operation: an.interner.name(k.1).to_string(),
                before: latency(&e.latency),
                after: latency(&e.what_if_after),
            })
            .collect();
        eps.sort_by(|a, b| {
            b.before
                .count
                .cmp(&a.before.count)
                .then_with(|| a.operation.cmp(&b.operation))
        });
        WhatIfResult {
            changes: an.opts.what_if.iter().map(|w| w.describe()).collect(),
            matched_spans: an.what_if_matched,
            before: latency(&an.latency),
            after: latency(&an.what_if_after),
            endpoints: eps,
        }
    });
    JsonReport {
        traces: an.traces,
        spans: an.spans,
        services: an.services.keys().filter(|s| **s != 0).count() as u64,
        warnings: an
            .warnings
            .nonzero()
            .iter()
            .filter(|(k, _)| !k.is_informational())
            .map(|(_, n)| n)
            .sum(),
        warning_kinds: an
            .warnings
            .nonzero()
            .into_iter()
            .map(|(k, n)| (k.as_str().to_string(), n))
            .collect(),
        warning_examples: an.warnings.examples.clone(),
        skew_tolerance: an.opts.semantics.overlap_allowance,
        latency: latency(&an.latency),
        hotspots: hs,
        recommendations: recs,
        endpoints,
        call_paths,
        what_if,
    }
}
