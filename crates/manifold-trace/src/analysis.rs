//! Aggregation across traces, recommendations with re-simulated savings, what-if and route plans.
//!
//! Everything is online: each trace is assembled, its critical path computed, its patterns
//! detected and re-simulated, and then it is dropped. What stays is per-operation aggregates
//! (bounded distributions), per-recommendation savings, a bounded sample of traces for the HTML
//! waterfalls, and the set of call fingerprints already seen (for cache detection). Memory grows
//! with the largest trace and the number of distinct operations, not with the input.

use crate::assemble::assemble;
use crate::critical::{critical_path, CpGraph, Semantics};
use crate::format::RawTrace;
use crate::model::{fingerprint, FxHashMap, Interner, Sym, Trace, Warnings};
use crate::sim::{Plan, SimBuffers, Simulator};
use crate::skew::correct_clock_skew;

mod aggregate;
mod dist;
mod plan;
mod recommend;
mod snapshot;
mod what_if;

pub use aggregate::{
    CallPathAgg, EndpointAgg, OpAgg, OpKey, PlanAgg, PlanSample, RecAgg, RecKind, Snapshot,
    SnapshotRow,
};
pub use dist::Dist;
pub use plan::MAX_PLAN_CALLS;
pub use what_if::{WhatIf, WhatIfError};

/// Analysis options.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Critical-path semantics (overlap allowance).
    pub semantics: Semantics,
    /// Skip clock-skew correction.
    pub no_skew_correction: bool,
    /// Changes to simulate on every trace (applied together).
    pub what_if: Vec<WhatIf>,
    /// Endpoint whose route plan to derive (`SERVICE:OPERATION`, an operation, or a substring).
    pub emit_plan: Option<String>,
}

/// The running analysis.
#[derive(Debug)]
pub struct Analyzer {
    /// Options.
    pub opts: Options,
    /// Names.
    pub interner: Interner,
    /// Warnings.
    pub warnings: Warnings,
    /// Traces analyzed.
    pub traces: u64,
    /// Spans analyzed.
    pub spans: u64,
    /// Summed end-to-end time (ns).
    pub total_latency: i128,
    /// End-to-end latency of all traces.
    pub latency: Dist,
    /// Per operation.
    pub ops: FxHashMap<OpKey, OpAgg>,
    /// Per endpoint.
    pub endpoints: FxHashMap<OpKey, EndpointAgg>,
    /// Per call path (hash → aggregate).
    pub callpaths: FxHashMap<u64, CallPathAgg>,
    /// Candidate recommendations.
    pub recs: FxHashMap<(RecKind, OpKey), RecAgg>,
    /// Services seen.
    pub services: FxHashMap<Sym, ()>,
    /// Call fingerprints seen (cache detection).
    seen_calls: FxHashMap<u64, ()>,
    /// What-if: spans matched.
    pub what_if_matched: u64,
    /// What-if: latency after, all traces.
    pub what_if_after: Dist,
    /// The slowest trace.
    pub slowest: Option<Snapshot>,
    /// A deterministic sample of traces (for the median waterfall).
    pub sample: Vec<Snapshot>,
    /// Route plan evidence.
    pub plan: PlanAgg,
    /// Lists and maps of one trace's analysis, kept for the next trace.
    scratch: Scratch,
}

/// What [`Analyzer::add_trace`] builds for every trace, kept from one trace to the next so that
/// a trace costs no allocation for them once the largest has been seen.
#[derive(Debug, Default)]
struct Scratch {
    /// Nodes reachable from the root.
    reachable: Vec<u32>,
    /// The walk's stack for `reachable`.
    stack: Vec<u32>,
    /// Per operation in this trace: (critical time, spans).
    per_op: FxHashMap<OpKey, (i64, u64)>,
    /// Per node: on the critical path.
    on_path: Vec<bool>,
    /// Per node on the path: the hash of its call path.
    path_hash: Vec<u64>,
    /// The plan of the simulation at hand.
    plan: Plan,
    /// One node's children as (operation, position), sorted.
    groups: Vec<(OpKey, u32)>,
    /// One group of same-operation children.
    members: Vec<u32>,
    /// Start and end events of one group.
    events: Vec<(i64, i32)>,
    /// The simulator's lists.
    sim: SimBuffers,
}

impl Analyzer {
    /// A new analysis.
    pub fn new(opts: Options) -> Analyzer {
        Analyzer {
            opts,
            interner: Interner::new(),
            warnings: Warnings::default(),
            traces: 0,
            spans: 0,
            total_latency: 0,
            latency: Dist::default(),
            ops: FxHashMap::default(),
            endpoints: FxHashMap::default(),
            callpaths: FxHashMap::default(),
            recs: FxHashMap::default(),
            services: FxHashMap::default(),
            seen_calls: FxHashMap::default(),
            what_if_matched: 0,
            what_if_after: Dist::default(),
            slowest: None,
            sample: Vec::new(),
            plan: PlanAgg::default(),
            scratch: Scratch::default(),
        }
    }

    /// Assemble and analyze one trace.
    pub fn add_raw(&mut self, raw: RawTrace) {
        let Some(trace) = assemble(raw.trace_id, raw.spans, &self.interner, &mut self.warnings)
        else {
            return;
        };
        self.add_trace(trace);
    }

    /// Analyze one assembled trace.
    pub fn add_trace(&mut self, mut trace: Trace) {
        if !self.opts.no_skew_correction {
            correct_clock_skew(&mut trace, &mut self.warnings);
        }
        let g = CpGraph::from_trace(&trace, &mut self.warnings);
        let cp = critical_path(&g, self.opts.semantics);
        let root = trace.root as usize;
        let e2e = g.duration(trace.root);
        self.traces += 1;
        self.spans += trace.spans.len() as u64;
        self.total_latency += i128::from(e2e);
        self.latency.add(e2e);
        for s in &trace.spans {
            self.services.insert(s.service, ());
        }
        let endpoint: OpKey = (trace.spans[root].service, trace.spans[root].operation);
        // the per-trace lists and maps are kept from trace to trace (emptied, not freed)
        let mut sc = std::mem::take(&mut self.scratch);
        g.reachable_into(&mut sc.reachable, &mut sc.stack);

        // per-operation critical contribution in this trace
        let per_op = &mut sc.per_op;
        per_op.clear();
        for &i in &sc.reachable {
            let s = &trace.spans[i as usize];
            per_op.entry((s.service, s.operation)).or_insert((0, 0)).1 += 1;
        }
        let on_path = &mut sc.on_path;
        on_path.clear();
        on_path.resize(trace.spans.len(), false);
        // call-path hash per node on the path (parents come before their children)
        let path_hash = &mut sc.path_hash;
        path_hash.clear();
        path_hash.resize(trace.spans.len(), 0);
        for n in &cp.nodes {
            let s = &trace.spans[n.node as usize];
            on_path[n.node as usize] = true;
            per_op.entry((s.service, s.operation)).or_insert((0, 0)).0 += n.exclusive;
            let parent_hash = n
                .parent
                .and_then(|p| path_hash.get(p as usize).copied())
                .unwrap_or(0);
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&parent_hash.to_le_bytes());
            key[8..12].copy_from_slice(&s.service.to_le_bytes());
            key[12..].copy_from_slice(&s.operation.to_le_bytes());
            let h = fingerprint(&key);
            path_hash[n.node as usize] = h;
            let agg = self.callpaths.entry(h).or_insert_with(|| CallPathAgg {
                parent: (parent_hash != 0).then_some(parent_hash),
                op: (s.service, s.operation),
                ..Default::default()
            });
            agg.critical_total += i128::from(n.exclusive);
            agg.count += 1;
        }
        let ep = self.endpoints.entry(endpoint).or_default();
        ep.latency.add(e2e);
        for (k, (crit, spans)) in per_op.iter() {
            let a = self.ops.entry(*k).or_default();
            a.critical_total += i128::from(*crit);
            a.per_trace.add(*crit);
            a.spans += spans;
            let b = ep.ops.entry(*k).or_default();
            b.critical_total += i128::from(*crit);
            b.per_trace.add(*crit);
            b.spans += spans;
        }

        let mut sim = Simulator::with_buffers(&g, std::mem::take(&mut sc.sim));
        sc.plan.reset(trace.spans.len());
        self.recommend(&trace, &g, &mut sim, &mut sc, e2e);
        self.what_if(&trace, &g, &mut sim, &mut sc.plan, e2e, endpoint);
        if self.opts.emit_plan.is_some() {
            self.plan_evidence(&trace, &g, endpoint, e2e);
        }
        sc.sim = sim.into_buffers();
        self.snapshot(&trace, &g, &cp, &sc.on_path, e2e);
        self.scratch = sc;
    }
}

/// The most hops a call path's name spells out; a deeper path shows its last ones after `…`.
/// The report sorts every call path by name, so a name as long as the path is O(n²) for a
/// chain of `n` nested spans.
pub const CALL_PATH_SHOWN: usize = 64;

impl Analyzer {
    /// The name of the call path whose hash is `hash`: `service:op -> service:op -> …`, from
    /// the root down, at most [`CALL_PATH_SHOWN`] hops (the nearest to the operation).
    pub fn call_path_name(&self, hash: u64) -> String {
        let mut names = Vec::new();
        let mut cur = Some(hash);
        // Bounded by the count, whatever the parent links (two paths sharing a hash could
        // make them loop).
        while let Some(agg) = cur.and_then(|h| self.callpaths.get(&h)) {
            if names.len() == CALL_PATH_SHOWN {
                names.push("…".to_owned());
                break;
            }
            names.push(format!(
                "{}:{}",
                self.interner.name(agg.op.0),
                self.interner.name(agg.op.1)
            ));
            cur = agg.parent;
        }
        names.reverse();
        names.join(" -> ")
    }
}

/// The spans of one operation.
fn ops_of(trace: &Trace, key: OpKey) -> impl Iterator<Item = usize> + '_ {
    trace
        .spans
        .iter()
        .enumerate()
        .filter(move |(_, s)| (s.service, s.operation) == key)
        .map(|(i, _)| i)
}

/// The most members running at once; `ev` is a list kept from call to call.
fn max_concurrency(g: &CpGraph, members: &[u32], ev: &mut Vec<(i64, i32)>) -> u64 {
    ev.clear();
    for &m in members {
        ev.push((g.start[m as usize], 1));
        ev.push((g.end[m as usize], -1));
    }
    ev.sort_unstable(); // ends (-1) sort before starts (+1) at the same instant
    let (mut cur, mut best) = (0i64, 0i64);
    for &(_, d) in ev.iter() {
        cur += i64::from(d);
        best = best.max(cur);
    }
    best.max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_if_parses() {
        assert_eq!(
            WhatIf::parse("speedup:db:SELECT x=50%").expect("ok"),
            WhatIf::Speedup("db".into(), "SELECT x".into(), 0.5)
        );
        assert_eq!(
            WhatIf::parse("cache:a:b=0.9").expect("ok"),
            WhatIf::Cache("a".into(), "b".into(), 0.9)
        );
        assert_eq!(
            WhatIf::parse("async:a:b:c").expect("ok"),
            WhatIf::Async("a".into(), "b:c".into())
        );
        assert!(WhatIf::parse("speedup:a:b=150%").is_err());
        // `=50` is the fraction 50, not 50%: the error says how a bare number reads.
        let e = WhatIf::parse("speedup:a:b=50").unwrap_err().to_string();
        assert!(e.contains("0.5 is 50%"), "{e}");
        assert!(WhatIf::parse("nope:a:b").is_err());
        assert!(WhatIf::parse("parallelize:a").is_err());
    }

    /// A chain of nested spans (an untrusted file can nest them as deep as it likes) has one
    /// call path per depth; each used to be spelled out in full, O(depth²) in time and memory.
    /// Names are now cut to their last hops, and the deepest still ends at the leaf.
    #[test]
    fn a_deep_chain_s_call_paths_are_named_by_their_last_hops() {
        use crate::model::{Span, SpanId};
        let depth = 2_000u32;
        let mut an = Analyzer::new(Options::default());
        let svc = an.interner.intern("svc");
        let spans: Vec<Span> = (0..depth)
            .map(|k| {
                let op = an.interner.intern(&format!("op{k}"));
                let d = i64::from(depth - k) * 10;
                let mut s = Span::new(SpanId::Hex(u64::from(k) + 1), svc, op, i64::from(k), d);
                s.parent = k.checked_sub(1);
                s
            })
            .collect();
        an.add_trace(Trace {
            trace_id: "t".into(),
            spans,
            root: 0,
        });
        assert_eq!(an.callpaths.len(), depth as usize);
        let rep = crate::report::build(&an);
        assert!(!rep.call_paths.is_empty());
        for c in &rep.call_paths {
            let hops = c.path.split(" -> ").count();
            assert!(hops <= 65, "{hops} hops in one call path's name");
        }
        let deepest = an
            .callpaths
            .iter()
            .find(|(_, c)| c.op.1 == an.interner.get("op1999").expect("op1999"))
            .map(|(h, _)| an.call_path_name(*h))
            .expect("the leaf's path");
        let shown: String = deepest.chars().take(120).collect();
        assert!(deepest.starts_with("… -> svc:op1936 -> "), "{shown}");
        assert!(deepest.ends_with("svc:op1998 -> svc:op1999"), "{deepest}");
        let root = an.call_path_name(fingerprint(&{
            let mut key = [0u8; 16];
            key[8..12].copy_from_slice(&svc.to_le_bytes());
            key[12..].copy_from_slice(&an.interner.get("op0").expect("op0").to_le_bytes());
            key
        }));
        assert_eq!(root, "svc:op0");
    }

    /// A root with more differently named children than any route has: the plan holds the
    /// first [`MAX_PLAN_CALLS`] (its pair table and DAG reduction grow much faster than the
    /// count: thousands took gigabytes and did not finish) and says how many it left out.
    #[test]
    fn a_plan_holds_at_most_max_plan_calls_and_says_what_it_left_out() {
        use crate::model::{Span, SpanId};
        let children = 100u32;
        let mut an = Analyzer::new(Options {
            emit_plan: Some("svc:root".into()),
            ..Options::default()
        });
        let svc = an.interner.intern("svc");
        let root = an.interner.intern("root");
        let mut spans = vec![Span::new(SpanId::Hex(1), svc, root, 0, 10_000)];
        for k in 0..children {
            let op = an.interner.intern(&format!("call{k}"));
            let mut s = Span::new(SpanId::Hex(u64::from(k) + 2), svc, op, i64::from(k) * 10, 5);
            s.parent = Some(0);
            spans.push(s);
        }
        an.add_trace(Trace {
            trace_id: "t".into(),
            spans,
            root: 0,
        });
        assert_eq!(an.plan.calls.len(), MAX_PLAN_CALLS);
        assert_eq!(
            an.plan.calls_left_out,
            u64::from(children) - MAX_PLAN_CALLS as u64
        );
        let toml = crate::report::render_plan(&an, "r").expect("a plan");
        assert_eq!(toml.matches("[[routes.r.calls]]").count(), MAX_PLAN_CALLS);
        assert!(
            toml.contains("# Only the first 64 calls are planned: 36 spans under the root"),
            "{toml}"
        );
    }

    /// Timestamps and durations near the ends of `i64` (an untrusted file can hold any) were
    /// multiplied and subtracted unchecked: a panic in a debug build, a wrong recommendation
    /// or waterfall offset (wrapped around) in a release one.
    #[test]
    fn extreme_times_neither_overflow_nor_wrap() {
        use crate::model::{Span, SpanId};
        let mut an = Analyzer::new(Options::default());
        let svc = an.interner.intern("svc");
        let op = an.interner.intern("op");
        // One span of ~127 years: its critical time times 5 is past i64::MAX.
        an.add_trace(Trace {
            trace_id: "long".into(),
            spans: vec![Span::new(
                SpanId::Hex(1),
                svc,
                op,
                0,
                4_000_000_000_000_000_000,
            )],
            root: 0,
        });
        assert!(an.recs.keys().any(|(k, _)| *k == RecKind::SlowDependency));
        // A child starting at the far end of time from its root.
        let mut child = Span::new(SpanId::Hex(3), svc, op, i64::MIN + 5, 1);
        child.parent = Some(0);
        an.add_trace(Trace {
            trace_id: "far".into(),
            spans: vec![Span::new(SpanId::Hex(2), svc, op, i64::MAX - 10, 5), child],
            root: 0,
        });
        let far = an
            .sample
            .iter()
            .find(|s| s.trace_id == "far")
            .expect("sampled");
        assert!(far.rows.iter().all(|r| r.offset <= 0), "{:?}", far.rows);
    }

    #[test]
    fn dist_quantiles() {
        let mut d = Dist::default();
        for v in 1..=100 {
            d.add(v);
        }
        assert_eq!(d.quantile(0.5), 50);
        assert_eq!(d.quantile(0.99), 99);
        let mut big = Dist::default();
        for v in 1..=10_000 {
            big.add(v * 1000);
        }
        let p50 = big.quantile(0.5) as f64;
        assert!((p50 - 5_000_000.0).abs() / 5_000_000.0 < 0.02, "{p50}");
    }
}
