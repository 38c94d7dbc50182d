//! Outputs: the `--json` contract, the terminal report, the self-contained HTML page and the
//! route plan (TOML) — all rendered from an [`Analyzer`] without I/O.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::analysis::{Analyzer, Dist, OpKey, RecKind, Snapshot};

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
        .values()
        .filter(|c| c.critical_total > 0)
        .map(|c| CallPath {
            path: c.path.clone(),
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

/// The terminal report: hotspots, then recommendations by saving.
pub fn render_text(r: &JsonReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} traces, {} spans, {} services; end-to-end p50 {:.2} ms, p99 {:.2} ms",
        r.traces, r.spans, r.services, r.latency.p50_ms, r.latency.p99_ms
    );
    if !r.warning_kinds.is_empty() {
        let parts: Vec<String> = r
            .warning_kinds
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(o, "warnings: {}", parts.join(", "));
    }
    let _ = writeln!(o, "\nHotspots (share of critical-path time)");
    let _ = writeln!(
        o,
        "  {:>6}  {:>10}  {:>10}  service:operation",
        "share", "p50 ms", "p99 ms"
    );
    for h in r.hotspots.iter().take(15) {
        let _ = writeln!(
            o,
            "  {:>5.1}%  {:>10.3}  {:>10.3}  {}:{}",
            h.share * 100.0,
            h.critical_ms_p50,
            h.critical_ms_p99,
            h.service,
            h.operation
        );
    }
    let _ = writeln!(o, "\nRecommendations (saving by re-simulating the traces)");
    if r.recommendations.is_empty() {
        let _ = writeln!(
            o,
            "  none: no pattern found whose removal shortens the critical path"
        );
    }
    for (i, rec) in r.recommendations.iter().take(15).enumerate() {
        let _ = writeln!(
            o,
            "  {}. {:<19} {}:{}  saves p50 {:.2} ms ({:.1}% of all end-to-end time) in {} traces",
            i + 1,
            rec.kind,
            rec.service,
            rec.operation,
            rec.saving_ms,
            rec.saving_share * 100.0,
            rec.evidence.traces
        );
        let _ = writeln!(
            o,
            "     {}; e.g. trace {}",
            rec.evidence.detail,
            rec.evidence.example_trace_ids.join(", ")
        );
    }
    if let Some(w) = &r.what_if {
        let _ = writeln!(
            o,
            "\nWhat if {} ({} spans matched)",
            w.changes.join(" + "),
            w.matched_spans
        );
        let _ = writeln!(
            o,
            "  {:<40} {:>10} {:>10} {:>10} {:>10}",
            "endpoint", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        for e in &w.endpoints {
            let name = format!("{}:{}", e.service, e.operation);
            let _ = writeln!(
                o,
                "  {:<40} {:>10.2} {:>10.2} {:>10.2} {:>10.2}  before",
                name, e.before.p50_ms, e.before.p90_ms, e.before.p99_ms, e.before.max_ms
            );
            let _ = writeln!(
                o,
                "  {:<40} {:>10.2} {:>10.2} {:>10.2} {:>10.2}  after",
                "", e.after.p50_ms, e.after.p90_ms, e.after.p99_ms, e.after.max_ms
            );
        }
    }
    o
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

fn waterfall(o: &mut String, title: &str, s: &Snapshot) {
    let total = s.duration.max(1) as f64;
    let row_h = 18.0;
    let label_w = 360.0;
    let bar_w = 640.0;
    let h = row_h * s.rows.len() as f64 + 24.0;
    let _ = writeln!(
        o,
        "<h2>{} — trace {} ({:.2} ms)</h2>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" class=\"wf\">",
        esc(title),
        esc(&s.trace_id),
        s.duration as f64 / 1e6,
        label_w + bar_w + 10.0,
        h
    );
    for (i, r) in s.rows.iter().enumerate() {
        let y = 20.0 + row_h * i as f64;
        let x = label_w + bar_w * (r.offset.max(0) as f64 / total);
        let w = (bar_w * (r.duration as f64 / total)).max(1.0);
        let label = format!(
            "{}{}:{}",
            "  ".repeat(r.depth.min(20) as usize),
            r.service,
            r.operation
        );
        let _ = writeln!(
            o,
            "<text x=\"4\" y=\"{:.1}\" class=\"lbl\">{}</text><rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"12\" class=\"{}\"><title>{} {:.3} ms</title></rect>",
            y + 10.0,
            esc(&label),
            y,
            if r.error { "span err" } else { "span" },
            esc(&format!("{}:{}", r.service, r.operation)),
            r.duration as f64 / 1e6
        );
    }
    for (a, b, row) in &s.sections {
        let y = 20.0 + row_h * *row as f64;
        let x = label_w + bar_w * (*a as f64 / total);
        let w = (bar_w * ((b - a) as f64 / total)).max(1.0);
        let _ = writeln!(
            o,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"4\" class=\"cp\"/>",
            y + 12.0
        );
    }
    let _ = writeln!(o, "</svg>");
}

/// One self-contained HTML page: hotspot table, recommendations, waterfalls of the median and
/// slowest trace with the critical path highlighted.
pub fn render_html(an: &Analyzer, r: &JsonReport) -> String {
    let mut o = String::new();
    o.push_str("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>manifold analyze</title><style>\n");
    o.push_str("body{font:14px system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left}td.n{text-align:right}");
    o.push_str(".wf .lbl{font:11px monospace;fill:#333}.wf .span{fill:#9ab}.wf .err{fill:#d88}.wf .cp{fill:#c00}.legend span{display:inline-block;width:12px;height:4px;background:#c00;margin-right:4px}\n");
    o.push_str("</style></head><body>\n<h1>Where the time went</h1>\n");
    let _ = writeln!(
        o,
        "<p>{} traces, {} spans, {} services. End-to-end p50 {:.2} ms, p99 {:.2} ms. {} warnings.</p>",
        r.traces, r.spans, r.services, r.latency.p50_ms, r.latency.p99_ms, r.warnings
    );
    o.push_str("<h2>Hotspots</h2>\n<table><tr><th>service</th><th>operation</th><th>share of critical path</th><th>p50 ms</th><th>p99 ms</th></tr>\n");
    for h in r.hotspots.iter().take(30) {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{:.1}%</td><td class=\"n\">{:.3}</td><td class=\"n\">{:.3}</td></tr>",
            esc(&h.service),
            esc(&h.operation),
            h.share * 100.0,
            h.critical_ms_p50,
            h.critical_ms_p99
        );
    }
    o.push_str("</table>\n<h2>Recommendations</h2>\n<table><tr><th>kind</th><th>service:operation</th><th>saving p50 ms</th><th>share</th><th>evidence</th></tr>\n");
    for rec in &r.recommendations {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}:{}</td><td class=\"n\">{:.2}</td><td class=\"n\">{:.1}%</td><td>{} ({} traces; e.g. {})</td></tr>",
            esc(&rec.kind),
            esc(&rec.service),
            esc(&rec.operation),
            rec.saving_ms,
            rec.saving_share * 100.0,
            esc(&rec.evidence.detail),
            rec.evidence.traces,
            esc(&rec.evidence.example_trace_ids.join(", "))
        );
    }
    o.push_str("</table>\n<p class=\"legend\"><span></span>critical path</p>\n");
    if let Some(m) = an.median_snapshot() {
        waterfall(&mut o, "Median trace", m);
    }
    if let Some(s) = &an.slowest {
        waterfall(&mut o, "Slowest trace", s);
    }
    o.push_str("</body></html>\n");
    o
}

fn ident(s: &str) -> String {
    let mut o: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    while o.contains("__") {
        o = o.replace("__", "_");
    }
    let o = o.trim_matches('_').to_string();
    if o.is_empty() || o.starts_with(|c: char| c.is_ascii_digit()) {
        format!("c_{o}")
    } else {
        o
    }
}

/// A path for the route file: template braces from trace names (`/products/{id}`) are not
/// Manifold templates, so they are neutralized.
fn plain_path(s: &str) -> String {
    s.replace(['{', '}'], "_")
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The route plan for `--emit-plan`: a Manifold route (TOML) running the endpoint's downstream
/// calls as the DAG its traces allow, with the latency that DAG would reach. `None` when no
/// trace matched the route selector.
pub fn render_plan(an: &Analyzer, route: &str) -> Option<String> {
    let p = &an.plan;
    let ep = p.endpoint?;
    let name = ident(route);
    let calls = &p.calls;
    // a → b kept when a finished before b started in every trace holding both
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); calls.len()];
    for (bi, b) in calls.iter().enumerate() {
        for (ai, a) in calls.iter().enumerate() {
            if ai == bi {
                continue;
            }
            if let Some((both, before)) = p.order.get(&(*a, *b)) {
                if *both > 0 && before == both {
                    deps[bi].push(ai);
                }
            }
        }
    }
    // transitive reduction
    let reach = |from: usize, to: usize, deps: &Vec<Vec<usize>>| -> bool {
        let mut stack = vec![from];
        let mut seen = vec![false; deps.len()];
        while let Some(x) = stack.pop() {
            for &d in &deps[x] {
                if d == to {
                    return true;
                }
                if !seen[d] {
                    seen[d] = true;
                    stack.push(d);
                }
            }
        }
        false
    };
    let mut direct: Vec<Vec<usize>> = vec![Vec::new(); calls.len()];
    for b in 0..calls.len() {
        for &a in &deps[b] {
            let implied = deps[b].iter().any(|&m| m != a && reach(m, a, &deps));
            if !implied {
                direct[b].push(a);
            }
        }
    }
    // plan latency per trace: own time + longest path through the DAG
    let mut planned = Dist::default();
    let mut all_parallel = Dist::default();
    for s in &p.samples {
        all_parallel.add(s.own + s.calls.iter().map(|c| c.1).max().unwrap_or(0));
        let dur = |k: OpKey| s.calls.iter().find(|c| c.0 == k).map_or(0, |c| c.1);
        let mut finish = vec![0i64; calls.len()];
        let order = topo(&deps);
        for &i in &order {
            let start = deps[i].iter().map(|&d| finish[d]).max().unwrap_or(0);
            finish[i] = start + dur(calls[i]);
        }
        planned.add(s.own + finish.iter().copied().max().unwrap_or(0));
    }
    let call_names: Vec<String> = {
        let mut used: Vec<String> = Vec::new();
        calls
            .iter()
            .map(|k| {
                let base = ident(&format!(
                    "{}_{}",
                    an.interner.name(k.0),
                    an.interner.name(k.1)
                ));
                let mut n = base.clone();
                let mut i = 2;
                while used.contains(&n) {
                    n = format!("{base}_{i}");
                    i += 1;
                }
                used.push(n.clone());
                n
            })
            .collect()
    };
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# Route plan derived by `manifold analyze --emit-plan {route}`"
    );
    let _ = writeln!(
        o,
        "# from {} traces of {}:{}.",
        p.latency.count(),
        an.interner.name(ep.0),
        an.interner.name(ep.1)
    );
    let _ = writeln!(
        o,
        "# observed p50 {:.2} ms, p99 {:.2} ms; this DAG would reach p50 {:.2} ms, p99 {:.2} ms",
        ms(p.latency.quantile(0.5)),
        ms(p.latency.quantile(0.99)),
        ms(planned.quantile(0.5)),
        ms(planned.quantile(0.99))
    );
    let _ = writeln!(
        o,
        "# with no call waiting for another it would reach p50 {:.2} ms, p99 {:.2} ms.",
        ms(all_parallel.quantile(0.5)),
        ms(all_parallel.quantile(0.99))
    );
    let _ = writeln!(
        o,
        "# A call keeps `after` another only if it started after that one ended in every trace;"
    );
    let _ = writeln!(
        o,
        "# calls whose order varied or that overlapped run side by side. Traces cannot show data"
    );
    let _ = writeln!(o, "# dependencies: delete an `after` whose call does not read the other's result. Fill in the endpoints.\n");
    let mut ups: Vec<Sym2> = Vec::new();
    for k in calls {
        let u = ident(an.interner.name(k.0));
        if !ups.iter().any(|x| x.0 == u) {
            ups.push(Sym2(u));
        }
    }
    for u in &ups {
        let _ = writeln!(o, "[upstreams.{}]\nendpoints = [\"http://127.0.0.1:8000\"]  # TODO: where {} listens\ntimeout = \"1s\"\n", u.0, u.0);
    }
    let (m, path) = p.root_http;
    let method = if m != 0 {
        an.interner.name(m).to_string()
    } else {
        "GET".into()
    };
    let rpath = if path != 0 {
        an.interner.name(path).to_string()
    } else {
        format!("/{name}")
    };
    let _ = writeln!(
        o,
        "[routes.{name}]\nmethod = {}\npath = {}\n",
        toml_str(&method),
        toml_str(&plain_path(&rpath))
    );
    for (i, k) in calls.iter().enumerate() {
        let (cm, cp) = p.call_http.get(k).copied().unwrap_or((0, 0));
        let cmeth = if cm != 0 {
            an.interner.name(cm).to_string()
        } else {
            "GET".into()
        };
        let cpath = if cp != 0 {
            an.interner.name(cp).to_string()
        } else {
            format!("/{}", ident(an.interner.name(k.1)))
        };
        let _ = writeln!(o, "  [[routes.{name}.calls]]");
        let _ = writeln!(o, "  name = {}", toml_str(&call_names[i]));
        let _ = writeln!(
            o,
            "  upstream = {}",
            toml_str(&ident(an.interner.name(k.0)))
        );
        let _ = writeln!(o, "  method = {}", toml_str(&cmeth));
        let _ = writeln!(o, "  path = {}", toml_str(&plain_path(&cpath)));
        if !direct[i].is_empty() {
            let names: Vec<String> = direct[i]
                .iter()
                .map(|&a| toml_str(&call_names[a]))
                .collect();
            let seen = direct[i]
                .iter()
                .map(|&a| p.order.get(&(calls[a], *k)).map_or(0, |x| x.0))
                .min()
                .unwrap_or(0);
            let _ = writeln!(
                o,
                "  # ran after {} in all {seen} traces holding both",
                names.join(", ")
            );
            let _ = writeln!(o, "  after = [{}]", names.join(", "));
        }
        if p.async_calls.contains(k) {
            let _ = writeln!(
                o,
                "  # nothing waited for this write: consider mode = \"async\""
            );
        }
        o.push('\n');
    }
    Some(o)
}

struct Sym2(String);

fn topo(deps: &[Vec<usize>]) -> Vec<usize> {
    let n = deps.len();
    let mut indeg = vec![0usize; n];
    let mut out_edges: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (b, ds) in deps.iter().enumerate() {
        for &a in ds {
            indeg[b] += 1;
            out_edges[a].push(b);
        }
    }
    let mut q: Vec<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(x) = q.pop() {
        order.push(x);
        for &y in &out_edges[x] {
            indeg[y] -= 1;
            if indeg[y] == 0 {
                q.push(y);
            }
        }
    }
    // a cycle cannot arise (a before b and b before a in every trace is impossible), but be safe
    for i in 0..n {
        if !order.contains(&i) {
            order.push(i);
        }
    }
    order
}
