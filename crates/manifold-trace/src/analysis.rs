//! Aggregation across traces, recommendations with re-simulated savings, what-if and route plans.
//!
//! Everything is online: each trace is assembled, its critical path computed, its patterns
//! detected and re-simulated, and then it is dropped. What stays is per-operation aggregates
//! (bounded distributions), per-recommendation savings, a bounded sample of traces for the HTML
//! waterfalls, and the set of call fingerprints already seen (for cache detection). Memory grows
//! with the largest trace and the number of distinct operations, not with the input.

use std::collections::BTreeMap;

use crate::assemble::assemble;
use crate::critical::{critical_path, CpGraph, Semantics};
use crate::format::RawTrace;
use crate::model::{fingerprint, flags, FxHashMap, Interner, Sym, Trace, Warnings};
use crate::sim::{Plan, SimBuffers, Simulator, NO_GROUP};
use crate::skew::correct_clock_skew;

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

/// A change to simulate, as given to `--what-if`.
#[derive(Debug, Clone, PartialEq)]
pub enum WhatIf {
    /// `parallelize:SERVICE:OP` — the calls made by SERVICE:OP all start together.
    Parallelize(String, String),
    /// `speedup:SERVICE:OP=50%` — SERVICE:OP's own work takes this fraction less time.
    Speedup(String, String, f64),
    /// `async:SERVICE:OP` — nothing waits for SERVICE:OP.
    Async(String, String),
    /// `cache:SERVICE:OP=0.9` — this fraction of SERVICE:OP calls are cache hits (take no time).
    Cache(String, String, f64),
    /// `batch:SERVICE:OP` — sequential sibling calls to SERVICE:OP become one call.
    Batch(String, String),
}

/// A `--what-if` that could not be parsed (config error).
#[derive(Debug, thiserror::Error)]
#[error("config: bad --what-if {spec:?}: {reason}")]
pub struct WhatIfError {
    /// The text given.
    pub spec: String,
    /// What is wrong.
    pub reason: String,
}

impl WhatIf {
    /// Parse `KIND:SERVICE:OP[=VALUE]`.
    pub fn parse(spec: &str) -> Result<WhatIf, WhatIfError> {
        let err = |r: &str| WhatIfError {
            spec: spec.to_string(),
            reason: r.to_string(),
        };
        let (kind, rest) = spec
            .split_once(':')
            .ok_or_else(|| err("expected KIND:SERVICE:OPERATION"))?;
        let (target, value) = match kind {
            "speedup" | "cache" => {
                let (t, v) = rest
                    .rsplit_once('=')
                    .ok_or_else(|| err("expected =VALUE"))?;
                (t, Some(v.trim()))
            }
            _ => (rest, None),
        };
        let (svc, op) = target
            .split_once(':')
            .ok_or_else(|| err("expected SERVICE:OPERATION"))?;
        if svc.is_empty() || op.is_empty() {
            return Err(err("empty service or operation"));
        }
        let (svc, op) = (svc.to_string(), op.to_string());
        Ok(match kind {
            "parallelize" => WhatIf::Parallelize(svc, op),
            "async" => WhatIf::Async(svc, op),
            "batch" => WhatIf::Batch(svc, op),
            "speedup" => {
                let v = value.unwrap_or("");
                let pct = if let Some(p) = v.strip_suffix('%') {
                    p.trim().parse::<f64>().map(|x| x / 100.0)
                } else {
                    v.parse::<f64>()
                }
                .map_err(|_| err("speedup wants a percentage like 50%"))?;
                if !(0.0..=1.0).contains(&pct) {
                    return Err(err("speedup must be between 0% and 100%"));
                }
                WhatIf::Speedup(svc, op, pct)
            }
            "cache" => {
                let v = value.unwrap_or("");
                let h = if let Some(p) = v.strip_suffix('%') {
                    p.trim().parse::<f64>().map(|x| x / 100.0)
                } else {
                    v.parse::<f64>()
                }
                .map_err(|_| err("cache wants a hit ratio like 0.9"))?;
                if !(0.0..=1.0).contains(&h) {
                    return Err(err("hit ratio must be between 0 and 1"));
                }
                WhatIf::Cache(svc, op, h)
            }
            _ => {
                return Err(err(
                    "KIND is one of parallelize, speedup, async, cache, batch",
                ))
            }
        })
    }

    fn target(&self) -> (&str, &str) {
        match self {
            WhatIf::Parallelize(s, o) | WhatIf::Async(s, o) | WhatIf::Batch(s, o) => (s, o),
            WhatIf::Speedup(s, o, _) | WhatIf::Cache(s, o, _) => (s, o),
        }
    }

    /// The text form.
    pub fn describe(&self) -> String {
        match self {
            WhatIf::Parallelize(s, o) => format!("parallelize:{s}:{o}"),
            WhatIf::Async(s, o) => format!("async:{s}:{o}"),
            WhatIf::Batch(s, o) => format!("batch:{s}:{o}"),
            WhatIf::Speedup(s, o, p) => format!("speedup:{s}:{o}={}%", p * 100.0),
            WhatIf::Cache(s, o, h) => format!("cache:{s}:{o}={h}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// A distribution that is exact up to 4096 values, then a log histogram (buckets 1% apart).
#[derive(Debug, Clone, Default)]
pub struct Dist {
    exact: Vec<i64>,
    hist: Option<BTreeMap<i32, u64>>,
    count: u64,
    sum: i128,
    max: i64,
}

const EXACT_LIMIT: usize = 4096;

impl Dist {
    /// Add a value (ns).
    pub fn add(&mut self, v: i64) {
        self.count += 1;
        self.sum += i128::from(v);
        self.max = if self.count == 1 { v } else { self.max.max(v) };
        if let Some(h) = &mut self.hist {
            *h.entry(bucket(v)).or_insert(0) += 1;
            return;
        }
        self.exact.push(v);
        if self.exact.len() > EXACT_LIMIT {
            let mut h = BTreeMap::new();
            for &x in &self.exact {
                *h.entry(bucket(x)).or_insert(0) += 1;
            }
            self.exact = Vec::new();
            self.hist = Some(h);
        }
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of values.
    pub fn sum(&self) -> i128 {
        self.sum
    }

    /// Largest value.
    pub fn max(&self) -> i64 {
        self.max
    }

    /// The q-quantile (nearest rank), 0 when empty.
    pub fn quantile(&self, q: f64) -> i64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        match &self.hist {
            None => {
                let mut v = self.exact.clone();
                let idx = (rank - 1) as usize;
                let (_, x, _) = v.select_nth_unstable(idx);
                *x
            }
            Some(h) => {
                let mut seen = 0;
                for (b, n) in h {
                    seen += n;
                    if seen >= rank {
                        return unbucket(*b).min(self.max);
                    }
                }
                self.max
            }
        }
    }
}

fn bucket(v: i64) -> i32 {
    if v <= 0 {
        return i32::MIN + 1;
    }
    ((v as f64).ln() / 1.01f64.ln()).floor() as i32
}

fn unbucket(b: i32) -> i64 {
    if b == i32::MIN + 1 {
        return 0;
    }
    (1.01f64.powi(b) * 1.005) as i64
}

// ---------------------------------------------------------------------------------------------

/// (service, operation) symbols.
pub type OpKey = (Sym, Sym);

/// Aggregate for one (service, operation).
#[derive(Debug, Clone, Default)]
pub struct OpAgg {
    /// Summed exclusive critical time (ns).
    pub critical_total: i128,
    /// Per-trace critical contribution, over traces containing the operation.
    pub per_trace: Dist,
    /// Spans seen.
    pub spans: u64,
}

/// Aggregate for one endpoint (root service, root operation).
#[derive(Debug, Clone, Default)]
pub struct EndpointAgg {
    /// End-to-end latency of its traces.
    pub latency: Dist,
    /// Per-operation aggregates within this endpoint.
    pub ops: FxHashMap<OpKey, OpAgg>,
    /// What-if: latency after the change.
    pub what_if_after: Dist,
}

/// Aggregate for one call path (root → … → operation).
#[derive(Debug, Clone, Default)]
pub struct CallPathAgg {
    /// `service:op -> service:op -> …`.
    pub path: String,
    /// Summed exclusive critical time (ns).
    pub critical_total: i128,
    /// Times it was on a critical path.
    pub count: u64,
}

/// Recommendation kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecKind {
    /// Calls under one span run one after another.
    Parallelize,
    /// Many sequential calls to one operation (N+1).
    Batch,
    /// Identical calls repeated.
    Cache,
    /// A write at the end that nothing waits for.
    Async,
    /// Calls repeated after errors.
    Retry,
    /// Calls running in waves of k.
    LimitedConcurrency,
    /// One operation dominating.
    SlowDependency,
}

impl RecKind {
    /// The name used in reports.
    pub fn as_str(&self) -> &'static str {
        match self {
            RecKind::Parallelize => "parallelize",
            RecKind::Batch => "batch",
            RecKind::Cache => "cache",
            RecKind::Async => "async",
            RecKind::Retry => "retry",
            RecKind::LimitedConcurrency => "limited-concurrency",
            RecKind::SlowDependency => "slow-dependency",
        }
    }
}

/// Evidence and simulated savings for one candidate recommendation.
#[derive(Debug, Clone, Default)]
pub struct RecAgg {
    /// Traces where the pattern occurred.
    pub traces: u64,
    /// Calls involved.
    pub calls: u64,
    /// Per-trace saving (ns).
    pub saving: Dist,
    /// End-to-end latency of the affected traces before.
    pub before: Dist,
    /// Up to 3 example trace ids.
    pub examples: Vec<String>,
    /// Largest concurrency seen (limited-concurrency), errors seen (retry), repeats (cache).
    pub detail: u64,
}

/// One trace kept for the HTML waterfall.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Trace id.
    pub trace_id: String,
    /// End-to-end duration (ns).
    pub duration: i64,
    /// Rows in depth-first order: (depth, service, operation, start offset ns, duration ns, on critical path, error).
    pub rows: Vec<SnapshotRow>,
    /// Critical sections (start offset ns, end offset ns, row index).
    pub sections: Vec<(i64, i64, usize)>,
}

/// One row of a [`Snapshot`].
#[derive(Debug, Clone)]
pub struct SnapshotRow {
    /// Tree depth.
    pub depth: u32,
    /// Service.
    pub service: String,
    /// Operation.
    pub operation: String,
    /// Offset from the trace start (ns).
    pub offset: i64,
    /// Duration (ns).
    pub duration: i64,
    /// On the critical path.
    pub critical: bool,
    /// Reported an error.
    pub error: bool,
}

const SAMPLE: usize = 256;

/// Route-plan evidence for one endpoint.
#[derive(Debug, Clone, Default)]
pub struct PlanAgg {
    /// Endpoint (service, operation).
    pub endpoint: Option<OpKey>,
    /// Downstream calls in first-seen order.
    pub calls: Vec<OpKey>,
    /// HTTP method / path seen per call.
    pub call_http: FxHashMap<OpKey, (Sym, Sym)>,
    /// Root HTTP method / path.
    pub root_http: (Sym, Sym),
    /// (a, b) → (traces with both, traces where a ended before b started).
    pub order: FxHashMap<(OpKey, OpKey), (u64, u64)>,
    /// Per trace: (lead, trailing, per-call (key, summed duration, first start, last end)) — kept
    /// for the plan's latency (bounded by the number of traces of one endpoint).
    pub samples: Vec<PlanSample>,
    /// Observed latency.
    pub latency: Dist,
    /// Calls nothing waited for (write at the end).
    pub async_calls: Vec<OpKey>,
}

/// One trace's view of a route (for plan latency).
#[derive(Debug, Clone)]
pub struct PlanSample {
    /// Root's own time before the first call and after the last.
    pub own: i64,
    /// Calls: key, summed duration.
    pub calls: Vec<(OpKey, i64)>,
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
            let interner = &self.interner;
            let spans = &trace.spans;
            let agg = self.callpaths.entry(h).or_insert_with(|| {
                let mut names = Vec::new();
                let mut cur = Some(n.node);
                let mut guard = 0;
                while let Some(c) = cur {
                    let sp = &spans[c as usize];
                    names.push(format!(
                        "{}:{}",
                        interner.name(sp.service),
                        interner.name(sp.operation)
                    ));
                    cur = sp.parent;
                    guard += 1;
                    if guard > 10_000 {
                        break;
                    }
                }
                names.reverse();
                CallPathAgg {
                    path: names.join(" -> "),
                    ..Default::default()
                }
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

    #[allow(clippy::too_many_arguments)] // one call site per pattern; a struct would only rename them
    fn record(
        &mut self,
        kind: RecKind,
        key: OpKey,
        trace: &Trace,
        sim: &mut Simulator,
        plan: &Plan,
        e2e: i64,
        calls: u64,
        detail: u64,
    ) {
        let after = sim.root_duration(plan);
        let r = self.recs.entry((kind, key)).or_default();
        r.traces += 1;
        r.calls += calls;
        r.saving.add((e2e - after).max(0));
        r.before.add(e2e);
        r.detail = r.detail.max(detail);
        if r.examples.len() < 3 && !r.examples.contains(&trace.trace_id) {
            r.examples.push(trace.trace_id.clone());
        }
    }

    fn recommend(
        &mut self,
        trace: &Trace,
        g: &CpGraph,
        sim: &mut Simulator,
        sc: &mut Scratch,
        e2e: i64,
    ) {
        let Scratch {
            reachable,
            per_op,
            on_path,
            plan,
            groups,
            members,
            events,
            ..
        } = sc;
        let n = trace.spans.len();
        let key_of = |i: u32| -> OpKey {
            let s = &trace.spans[i as usize];
            (s.service, s.operation)
        };
        let mut parallel_parents: Vec<OpKey> = Vec::new();
        let mut batch: FxHashMap<OpKey, Vec<Vec<u32>>> = FxHashMap::default();
        let mut waves: FxHashMap<OpKey, (Vec<Vec<u32>>, u64)> = FxHashMap::default();
        let mut retries: FxHashMap<OpKey, Vec<u32>> = FxHashMap::default();
        let mut asyncs: FxHashMap<OpKey, Vec<u32>> = FxHashMap::default();
        for &p in reachable.iter() {
            let kids = &g.children[p as usize];
            if kids.is_empty() {
                continue;
            }
            // sequential siblings of different operations under an on-path parent
            if on_path[p as usize] && kids.len() >= 2 {
                let mut min_end = i64::MAX;
                let mut min_key: Option<OpKey> = None;
                let mut found = false;
                for &c in kids {
                    let (cs, ce) = (g.start[c as usize], g.end[c as usize]);
                    if cs >= min_end && min_key != Some(key_of(c)) {
                        found = true;
                    }
                    if ce < min_end {
                        min_end = ce;
                        min_key = Some(key_of(c));
                    }
                }
                if found && !parallel_parents.contains(&key_of(p)) {
                    parallel_parents.push(key_of(p));
                }
            }
            let last_start = kids
                .iter()
                .map(|&c| g.start[c as usize])
                .max()
                .unwrap_or(i64::MIN);
            for &c in kids {
                let s = &trace.spans[c as usize];
                // async: a write on the path that nothing after it waits for
                // the caller's side of a call, not a server handling one
                let is_call = !matches!(
                    s.kind,
                    crate::model::SpanKind::Server | crate::model::SpanKind::Consumer
                );
                if is_call
                    && on_path[c as usize]
                    && s.has(flags::WRITE)
                    && g.end[c as usize] >= last_start
                {
                    let later = kids
                        .iter()
                        .any(|&o| o != c && g.start[o as usize] >= g.end[c as usize]);
                    if !later {
                        asyncs.entry(key_of(c)).or_default().push(c);
                    }
                }
            }
            if kids.len() < 2 {
                continue;
            }
            // same-operation groups: the children sorted by (operation, position), so each
            // group lists its members in their order
            groups.clear();
            groups.extend(kids.iter().enumerate().map(|(j, &c)| (key_of(c), j as u32)));
            groups.sort_unstable();
            let mut at = 0;
            while at < groups.len() {
                let k = groups[at].0;
                let len = groups[at..].iter().take_while(|x| x.0 == k).count();
                let run = at..at + len;
                at += len;
                if len < 2 {
                    continue;
                }
                members.clear();
                members.extend(groups[run].iter().map(|&(_, j)| kids[j as usize]));
                let conc = max_concurrency(g, members, events);
                if members.len() >= 3 && conc == 1 {
                    batch.entry(k).or_default().push(members.clone());
                } else if members.len() >= 3 && conc >= 2 && (conc as usize) < members.len() {
                    let e = waves.entry(k).or_default();
                    e.0.push(members.clone());
                    e.1 = e.1.max(conc);
                }
                // retry: an errored call followed by another call of the same operation
                let mut failed = Vec::new();
                for &a in members.iter() {
                    if !trace.spans[a as usize].has(flags::ERROR) {
                        continue;
                    }
                    if members
                        .iter()
                        .any(|&b| b != a && g.start[b as usize] >= g.end[a as usize])
                    {
                        failed.push(a);
                    }
                }
                if !failed.is_empty() {
                    retries.entry(k).or_default().extend(failed);
                }
            }
        }
        for k in parallel_parents {
            plan.reset(n);
            let mut cnt = 0;
            for i in ops_of(trace, k) {
                plan.parallel[i] = true;
                cnt += g.children[i].len() as u64;
            }
            self.record(RecKind::Parallelize, k, trace, sim, plan, e2e, cnt, 0);
        }
        for (k, groups) in batch {
            plan.reset(n);
            let mut cnt = 0;
            for (gi, m) in groups.iter().enumerate() {
                for &c in m {
                    plan.group[c as usize] = gi as u32;
                    cnt += 1;
                }
            }
            self.record(RecKind::Batch, k, trace, sim, plan, e2e, cnt, 0);
        }
        for (k, (groups, conc)) in waves {
            plan.reset(n);
            let mut cnt = 0;
            for (gi, m) in groups.iter().enumerate() {
                for &c in m {
                    plan.group[c as usize] = gi as u32;
                    cnt += 1;
                }
            }
            self.record(
                RecKind::LimitedConcurrency,
                k,
                trace,
                sim,
                plan,
                e2e,
                cnt,
                conc,
            );
        }
        for (k, failed) in retries {
            plan.reset(n);
            for &c in &failed {
                plan.removed[c as usize] = true;
            }
            let cnt = failed.len() as u64;
            self.record(RecKind::Retry, k, trace, sim, plan, e2e, cnt, cnt);
        }
        for (k, calls) in asyncs {
            plan.reset(n);
            for &c in &calls {
                plan.removed[c as usize] = true;
            }
            self.record(
                RecKind::Async,
                k,
                trace,
                sim,
                plan,
                e2e,
                calls.len() as u64,
                0,
            );
        }
        // cache: calls whose fingerprint was seen before (in this trace or an earlier one)
        let mut repeats: FxHashMap<OpKey, Vec<u32>> = FxHashMap::default();
        for &i in reachable.iter() {
            let s = &trace.spans[i as usize];
            if !s.has(flags::HAS_ARGS) || s.has(flags::WRITE) || s.has(flags::ERROR) {
                continue;
            }
            if self.seen_calls.insert(s.call_key, ()).is_some() {
                repeats.entry((s.service, s.operation)).or_default().push(i);
            }
        }
        for (k, calls) in repeats {
            plan.reset(n);
            for &c in &calls {
                plan.removed[c as usize] = true;
            }
            let cnt = calls.len() as u64;
            self.record(RecKind::Cache, k, trace, sim, plan, e2e, cnt, cnt);
        }
        // slow dependency: the operations with the largest critical share in this trace
        if e2e > 0 {
            let mut top: Vec<(OpKey, i64)> = per_op
                .iter()
                .map(|(k, v)| (*k, v.0))
                .filter(|(_, c)| *c * 5 >= e2e)
                .collect();
            top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            top.truncate(2);
            for (k, _) in top {
                plan.reset(n);
                let mut cnt = 0;
                for i in ops_of(trace, k) {
                    plan.scale[i] = 0.5;
                    cnt += 1;
                }
                self.record(RecKind::SlowDependency, k, trace, sim, plan, e2e, cnt, 0);
            }
        }
    }

    fn what_if(
        &mut self,
        trace: &Trace,
        g: &CpGraph,
        sim: &mut Simulator,
        plan: &mut Plan,
        e2e: i64,
        endpoint: OpKey,
    ) {
        if self.opts.what_if.is_empty() {
            return;
        }
        let n = trace.spans.len();
        plan.reset(n);
        let mut group_id = 0u32;
        let changes = self.opts.what_if.clone();
        for w in &changes {
            let (svc, op) = w.target();
            let (Some(s), Some(o)) = (self.interner.get(svc), self.interner.get(op)) else {
                continue;
            };
            let matches: Vec<usize> = ops_of(trace, (s, o)).collect();
            self.what_if_matched += matches.len() as u64;
            for &i in &matches {
                match w {
                    WhatIf::Parallelize(..) => plan.parallel[i] = true,
                    WhatIf::Speedup(_, _, pct) => plan.scale[i] *= 1.0 - pct,
                    WhatIf::Async(..) => plan.removed[i] = true,
                    WhatIf::Cache(_, _, h) => {
                        let mut key = trace.trace_id.as_bytes().to_vec();
                        key.extend_from_slice(&(i as u64).to_le_bytes());
                        let u = (fingerprint(&key) >> 11) as f64 / (1u64 << 53) as f64;
                        if u < *h {
                            plan.removed[i] = true;
                        }
                    }
                    WhatIf::Batch(..) => {}
                }
            }
            if let WhatIf::Batch(..) = w {
                // sequential sibling calls of the operation, per parent, become one group
                for p in g.reachable() {
                    let m: Vec<u32> = g.children[p as usize]
                        .iter()
                        .copied()
                        .filter(|&c| {
                            (
                                trace.spans[c as usize].service,
                                trace.spans[c as usize].operation,
                            ) == (s, o)
                        })
                        .collect();
                    if m.len() >= 2 {
                        for &c in &m {
                            if plan.group[c as usize] == NO_GROUP {
                                plan.group[c as usize] = group_id;
                            }
                        }
                        group_id += 1;
                    }
                }
            }
        }
        let after = sim.root_duration(plan);
        self.what_if_after.add(after);
        self.endpoints
            .entry(endpoint)
            .or_default()
            .what_if_after
            .add(after);
        let _ = e2e;
    }

    fn plan_evidence(&mut self, trace: &Trace, g: &CpGraph, endpoint: OpKey, e2e: i64) {
        let Some(sel) = self.opts.emit_plan.clone() else {
            return;
        };
        if !self.endpoint_matches(endpoint, &sel) {
            return;
        }
        if let Some(e) = self.plan.endpoint {
            if e != endpoint {
                return; // first matching endpoint wins
            }
        }
        self.plan.endpoint = Some(endpoint);
        let root = trace.root;
        let rs = &trace.spans[root as usize];
        if self.plan.root_http == (0, 0) {
            self.plan.root_http = (rs.http_method, rs.http_path);
        }
        self.plan.latency.add(e2e);
        // calls: the root's blocking children; a client span whose only child is the server is
        // named by the server (the upstream that does the work)
        let kids = &g.children[root as usize];
        let mut per_call: Vec<(OpKey, i64, i64, i64)> = Vec::new(); // key, dur, first start, last end
        for &c in kids {
            let cs = &trace.spans[c as usize];
            let mut key = (cs.service, cs.operation);
            let mut http = (cs.http_method, cs.http_path);
            let ck = &g.children[c as usize];
            if ck.len() == 1 {
                let srv = &trace.spans[ck[0] as usize];
                if srv.service != rs.service {
                    key = (srv.service, cs.operation);
                    if http.0 == 0 {
                        http.0 = srv.http_method;
                    }
                    if http.1 == 0 {
                        http.1 = srv.http_path;
                    }
                }
            } else if cs.service == rs.service && cs.kind == crate::model::SpanKind::Client {
                key = (cs.service, cs.operation);
            }
            if http.0 == 0 || http.1 == 0 {
                // "POST /orders" style operation names carry both
                let name = self.interner.name(cs.operation).to_string();
                if let Some((m, p)) = name.split_once(' ') {
                    if p.starts_with('/') && m.chars().all(|c| c.is_ascii_uppercase()) {
                        if http.0 == 0 {
                            http.0 = self.interner.intern(m);
                        }
                        if http.1 == 0 {
                            http.1 = self.interner.intern(p);
                        }
                    }
                }
            }
            self.plan.call_http.entry(key).or_insert(http);
            if !self.plan.calls.contains(&key) {
                self.plan.calls.push(key);
            }
            let (s, e) = (g.start[c as usize], g.end[c as usize]);
            match per_call.iter_mut().find(|x| x.0 == key) {
                Some(x) => {
                    x.1 += e - s;
                    x.2 = x.2.min(s);
                    x.3 = x.3.max(e);
                }
                None => per_call.push((key, e - s, s, e)),
            }
        }
        for a in 0..per_call.len() {
            for b in 0..per_call.len() {
                if a == b {
                    continue;
                }
                let entry = self
                    .plan
                    .order
                    .entry((per_call[a].0, per_call[b].0))
                    .or_insert((0, 0));
                entry.0 += 1;
                if per_call[a].3 <= per_call[b].2 {
                    entry.1 += 1;
                }
            }
        }
        let union = {
            let mut iv: Vec<(i64, i64)> = kids
                .iter()
                .map(|&c| (g.start[c as usize], g.end[c as usize]))
                .collect();
            iv.sort_unstable();
            let mut total = 0;
            let mut cur: Option<(i64, i64)> = None;
            for (s, e) in iv {
                cur = match cur {
                    Some((cs, ce)) if s <= ce => Some((cs, ce.max(e))),
                    Some((cs, ce)) => {
                        total += ce - cs;
                        Some((s, e))
                    }
                    None => Some((s, e)),
                };
            }
            if let Some((cs, ce)) = cur {
                total += ce - cs;
            }
            total
        };
        let own = e2e - union;
        if self.plan.samples.len() < 100_000 {
            // a call repeated under the root counts as one block, as long as it was observed to last
            let calls = per_call
                .iter()
                .map(|x| (x.0, (x.3 - x.2).min(x.1)))
                .collect();
            self.plan.samples.push(PlanSample { own, calls });
        }
    }

    /// True when `sel` names this endpoint (`SERVICE:OP`, `OP`, or a substring of either).
    pub fn endpoint_matches(&self, ep: OpKey, sel: &str) -> bool {
        let svc = self.interner.name(ep.0);
        let op = self.interner.name(ep.1);
        let full = format!("{svc}:{op}");
        sel == full || sel == op || full.contains(sel)
    }

    fn snapshot(
        &mut self,
        trace: &Trace,
        g: &CpGraph,
        cp: &crate::critical::CriticalPath,
        on_path: &[bool],
        e2e: i64,
    ) {
        let slowest = self.slowest.as_ref().is_none_or(|s| e2e > s.duration);
        let pos = (fingerprint(trace.trace_id.as_bytes()) % self.traces.max(1)) as usize;
        let keep_sample = self.sample.len() < SAMPLE || pos < SAMPLE;
        if !slowest && !keep_sample {
            return;
        }
        let t0 = g.start[trace.root as usize];
        let mut rows = Vec::new();
        let mut row_of = vec![usize::MAX; trace.spans.len()];
        let mut stack = vec![(trace.root, 0u32)];
        let children = trace.children();
        while let Some((i, d)) = stack.pop() {
            if rows.len() >= 2000 {
                break;
            }
            let s = &trace.spans[i as usize];
            row_of[i as usize] = rows.len();
            rows.push(SnapshotRow {
                depth: d,
                service: self.interner.name(s.service).to_string(),
                operation: self.interner.name(s.operation).to_string(),
                offset: s.start - t0,
                duration: s.duration,
                critical: on_path[i as usize],
                error: s.has(flags::ERROR),
            });
            for &c in children[i as usize].iter().rev() {
                stack.push((c, d + 1));
            }
        }
        let sections = cp
            .sections
            .iter()
            .filter(|s| row_of[s.node as usize] != usize::MAX)
            .map(|s| (s.start - t0, s.end - t0, row_of[s.node as usize]))
            .collect();
        let snap = Snapshot {
            trace_id: trace.trace_id.clone(),
            duration: e2e,
            rows,
            sections,
        };
        // one copy only when it is both the slowest and in the sample
        let (for_sample, for_slowest) = match (keep_sample, slowest) {
            (true, true) => (Some(snap.clone()), Some(snap)),
            (true, false) => (Some(snap), None),
            (false, _) => (None, Some(snap)),
        };
        if let Some(snap) = for_sample {
            if self.sample.len() < SAMPLE {
                self.sample.push(snap);
            } else {
                self.sample[pos] = snap;
            }
        }
        if for_slowest.is_some() {
            self.slowest = for_slowest;
        }
    }

    /// The sampled trace closest to the median latency.
    pub fn median_snapshot(&self) -> Option<&Snapshot> {
        let med = self.latency.quantile(0.5);
        self.sample
            .iter()
            .min_by_key(|s| ((s.duration - med).abs(), s.trace_id.clone()))
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
        assert!(WhatIf::parse("nope:a:b").is_err());
        assert!(WhatIf::parse("parallelize:a").is_err());
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
