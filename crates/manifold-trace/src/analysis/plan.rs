//! Route-plan evidence (`--emit-plan`): which endpoint is selected and how its calls behave.

use super::{Analyzer, OpKey, PlanSample};
use crate::critical::CpGraph;
use crate::model::Trace;
use crate::sim::union_len;

/// The most distinct calls a route plan holds. The plan keeps the order of every pair of calls
/// (k² entries) and derives the DAG by a transitive reduction that grows much faster than k²;
/// a root with thousands of differently named children (an untrusted trace file can have them)
/// took gigabytes and did not finish. No route a person would write has more.
pub const MAX_PLAN_CALLS: usize = 64;

impl Analyzer {
    pub(super) fn plan_evidence(&mut self, trace: &Trace, g: &CpGraph, endpoint: OpKey, e2e: i64) {
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
            if !self.plan.calls.contains(&key) {
                if self.plan.calls.len() == MAX_PLAN_CALLS {
                    self.plan.calls_left_out += 1;
                    continue;
                }
                self.plan.calls.push(key);
            }
            self.plan.call_http.entry(key).or_insert(http);
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
        let union = union_len(g, kids);
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
}
