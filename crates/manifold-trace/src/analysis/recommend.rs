//! Pattern detection on one trace, each candidate re-simulated to measure what it would save.

use super::{max_concurrency, ops_of, Analyzer, OpKey, RecKind, Scratch};
use crate::critical::CpGraph;
use crate::model::{flags, FxHashMap, Trace};
use crate::sim::{Plan, Simulator};

impl Analyzer {
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

    pub(super) fn recommend(
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
                // At least a fifth of the trace; in i128, as a span's time can be near i64::MAX.
                .filter(|(_, c)| i128::from(*c) * 5 >= i128::from(e2e))
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
}
