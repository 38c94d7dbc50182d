//! Re-simulating a trace under a change: how long would this request have taken if …?
//!
//! The model reads dependencies off the timeline, conservatively. Under each span, a child that
//! started after a sibling had finished is taken to depend on it (it may need its result); a
//! child with no such sibling starts at its original offset from the parent's start. The gaps
//! are the parent's own work and are kept (scaled by a speedup of the parent). After its last
//! child a parent still does its trailing work. With no change this reproduces every duration
//! exactly; a change then moves work and the dependents follow:
//!
//! * `scale[i]` — span i's own work (its gaps, or its whole duration for a leaf) × factor;
//! * `removed[i]` — span i takes no time (a cache hit, or a call made asynchronous): its
//!   dependents proceed from the moment it was issued;
//! * `parallel[i]` — all of span i's calls start together where the first one started; the
//!   parent's own work between them is kept, after the join;
//! * `group[i]` — calls in one group (same parent) start together where the group's first call
//!   started (a batch, or waves of limited concurrency lifted); whatever waited for any of them
//!   waits for all of them.

use crate::critical::CpGraph;

/// Per-span instructions for one simulation of one trace.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Own-work factor per span (1.0 = unchanged).
    pub scale: Vec<f64>,
    /// Spans that take no time.
    pub removed: Vec<bool>,
    /// Spans whose calls all start together.
    pub parallel: Vec<bool>,
    /// Group id per span (`NO_GROUP` = none).
    pub group: Vec<u32>,
}

/// The absence of a group.
pub const NO_GROUP: u32 = u32::MAX;

impl Plan {
    /// A plan that changes nothing.
    pub fn identity(n: usize) -> Plan {
        Plan {
            scale: vec![1.0; n],
            removed: vec![false; n],
            parallel: vec![false; n],
            group: vec![NO_GROUP; n],
        }
    }

    /// Back to the plan that changes nothing, for `n` nodes, keeping the lists' memory (the
    /// analysis builds one plan per candidate recommendation of every trace).
    pub fn reset(&mut self, n: usize) {
        self.scale.clear();
        self.scale.resize(n, 1.0);
        self.removed.clear();
        self.removed.resize(n, false);
        self.parallel.clear();
        self.parallel.resize(n, false);
        self.group.clear();
        self.group.resize(n, NO_GROUP);
    }

    /// True when the plan changes nothing.
    pub fn is_identity(&self) -> bool {
        self.scale.iter().all(|&f| f == 1.0)
            && !self.removed.iter().any(|&r| r)
            && !self.parallel.iter().any(|&p| p)
            && self.group.iter().all(|&g| g == NO_GROUP)
    }
}

/// New duration of every node under `plan` (index = node). Unreachable nodes keep 0.
pub fn simulate(g: &CpGraph, plan: &Plan) -> Vec<i64> {
    let mut sim = Simulator::new(g);
    if plan.scale.len() >= g.len() {
        sim.evaluate_all(plan);
    }
    sim.dur
}

/// New end-to-end duration of the root under `plan`.
pub fn simulate_root(g: &CpGraph, plan: &Plan) -> i64 {
    let d = simulate(g, plan);
    d.get(g.root as usize).copied().unwrap_or(0)
}

/// What a plan asks of one node. [`Plan`] answers from its lists; [`Unchanged`] is the plan that
/// changes nothing, so the unchanged durations are computed without building one.
trait Changes {
    fn removed(&self, i: usize) -> bool;
    fn scale(&self, i: usize) -> f64;
    fn parallel(&self, i: usize) -> bool;
    fn group(&self, i: usize) -> u32;
}

impl Changes for Plan {
    fn removed(&self, i: usize) -> bool {
        self.removed[i]
    }
    fn scale(&self, i: usize) -> f64 {
        self.scale[i]
    }
    fn parallel(&self, i: usize) -> bool {
        self.parallel[i]
    }
    fn group(&self, i: usize) -> u32 {
        self.group[i]
    }
}

struct Unchanged;

impl Changes for Unchanged {
    fn removed(&self, _: usize) -> bool {
        false
    }
    fn scale(&self, _: usize) -> f64 {
        1.0
    }
    fn parallel(&self, _: usize) -> bool {
        false
    }
    fn group(&self, _: usize) -> u32 {
        NO_GROUP
    }
}

const NONE: u32 = u32::MAX;

/// Many simulations of one graph, as the analysis runs them (one per candidate recommendation
/// of every trace): what does not depend on the plan is worked out once, and each run
/// recomputes only the nodes whose durations the plan can change.
///
/// Once per graph: the nodes in evaluation order, and for every child the order of its
/// siblings by end and how many siblings ended before it started (the sort and the binary
/// search the simulation of a node needs, which depend only on the timeline). Once per graph
/// too, lazily: every duration under the plan that changes nothing. A node's simulated
/// duration depends only on its own entries of the plan, its children's groups and its
/// children's simulated durations, so under a plan that touches a few nodes only those nodes
/// and their ancestors can differ from the unchanged durations; the others are taken as they
/// are. The answer is the same number a full simulation gives (a property test holds them
/// together on random traces and plans). A graph where a node has two parents (possible
/// through [`CpGraph::new`]) is simulated in full every time.
#[derive(Debug)]
pub struct Simulator<'g> {
    g: &'g CpGraph,
    /// Reachable nodes, each before its children (a node reached twice is listed twice).
    order: Vec<u32>,
    /// Per node: where its children's entries start in `rank` and `preds` (`NONE`: unreached).
    at: Vec<u32>,
    /// Per child (by position under its parent): its place among its siblings by (end, position).
    rank: Vec<u32>,
    /// Per child: how many of its siblings ended at or before it started.
    preds: Vec<u32>,
    /// Per node: its parent (`NONE` for the root and unreached nodes).
    parent: Vec<u32>,
    /// Every node has at most one parent: runs may be incremental.
    tree: bool,
    /// Durations under the unchanged plan, once computed (`None` before the first run).
    base: Option<Vec<i64>>,
    /// Durations of the current run (equal to `base` between incremental runs).
    dur: Vec<i64>,
    dirty: Vec<bool>,
    dirty_list: Vec<u32>,
    scratch: Scratch,
}

impl<'g> Simulator<'g> {
    /// Prepare the simulations of `g`.
    pub fn new(g: &'g CpGraph) -> Simulator<'g> {
        let n = g.len();
        let mut sim = Simulator {
            g,
            order: Vec::with_capacity(n),
            at: vec![NONE; n],
            rank: Vec::with_capacity(n),
            preds: Vec::with_capacity(n),
            parent: vec![NONE; n],
            tree: true,
            base: None,
            dur: vec![0; n],
            dirty: vec![false; n],
            dirty_list: Vec::new(),
            scratch: Scratch::default(),
        };
        if (g.root as usize) >= n {
            return sim;
        }
        let mut stack = vec![g.root];
        while let Some(i) = stack.pop() {
            sim.order.push(i);
            let kids = &g.children[i as usize];
            stack.extend(kids.iter().copied());
            if sim.at[i as usize] != NONE {
                sim.tree = false; // reached twice
                continue;
            }
            sim.at[i as usize] = sim.rank.len() as u32;
            for &c in kids {
                if sim.parent[c as usize] != NONE || c == g.root {
                    sim.tree = false;
                }
                sim.parent[c as usize] = i;
            }
            let k = kids.len();
            let by_end = &mut sim.scratch.members;
            by_end.clear();
            by_end.extend(0..k);
            by_end.sort_by_key(|&j| (g.end[kids[j] as usize], j));
            let base = sim.rank.len();
            sim.rank.resize(base + k, 0);
            for (r, &j) in by_end.iter().enumerate() {
                sim.rank[base + j] = r as u32;
            }
            for &c in kids {
                let cs = g.start[c as usize];
                let p = by_end.partition_point(|&x| g.end[kids[x] as usize] <= cs);
                sim.preds.push(p as u32);
            }
        }
        sim
    }

    /// New end-to-end duration of the root under `plan` (0 if the plan is shorter than the
    /// graph, as [`simulate_root`]).
    pub fn root_duration(&mut self, plan: &Plan) -> i64 {
        let root = self.g.root as usize;
        if self.order.is_empty() || plan.scale.len() < self.g.len() {
            return 0;
        }
        if !self.tree {
            self.evaluate_all(plan);
            return self.dur[root];
        }
        if self.base.is_none() {
            self.evaluate_all(&Unchanged);
            self.base = Some(self.dur.clone());
        }
        for k in 0..self.order.len() {
            let i = self.order[k] as usize;
            let touched = plan.removed[i]
                || plan.parallel[i]
                || plan.group[i] != NO_GROUP
                || plan.scale[i] != 1.0;
            let mut x = i as u32;
            while touched && x != NONE && !self.dirty[x as usize] {
                self.dirty[x as usize] = true;
                self.dirty_list.push(x);
                x = self.parent[x as usize];
            }
        }
        if self.dirty_list.is_empty() {
            return self.dur[root];
        }
        for k in (0..self.order.len()).rev() {
            let i = self.order[k];
            if self.dirty[i as usize] {
                self.dur[i as usize] = self.node(plan, i);
            }
        }
        let out = self.dur[root];
        if let Some(base) = &self.base {
            for &i in &self.dirty_list {
                self.dur[i as usize] = base[i as usize];
                self.dirty[i as usize] = false;
            }
        }
        self.dirty_list.clear();
        out
    }

    /// Every reachable node, children first, into `dur`.
    fn evaluate_all<C: Changes>(&mut self, plan: &C) {
        self.dur.iter_mut().for_each(|d| *d = 0);
        for k in (0..self.order.len()).rev() {
            let i = self.order[k];
            self.dur[i as usize] = self.node(plan, i);
        }
    }

    fn node<C: Changes>(&mut self, plan: &C, i: u32) -> i64 {
        let at = self.at[i as usize] as usize;
        let k = self.g.children[i as usize].len();
        simulate_node(
            self.g,
            plan,
            i,
            &self.rank[at..at + k],
            &self.preds[at..at + k],
            &self.dur,
            &mut self.scratch,
        )
    }
}

#[derive(Debug, Default)]
struct Scratch {
    fen_new: Vec<i64>,
    fen_orig: Vec<i64>,
    new_end: Vec<i64>,
    done: Vec<bool>,
    members: Vec<usize>,
}

fn scaled(x: i64, f: f64) -> i64 {
    if f == 1.0 {
        x
    } else {
        (x as f64 * f).round() as i64
    }
}

/// One node's new duration from its children's (`new_dur`); `rank` and `preds` are its
/// children's entries of [`Simulator`].
fn simulate_node<C: Changes>(
    g: &CpGraph,
    plan: &C,
    i: u32,
    rank: &[u32],
    preds: &[u32],
    new_dur: &[i64],
    s: &mut Scratch,
) -> i64 {
    let iu = i as usize;
    if plan.removed(iu) {
        return 0;
    }
    let f = plan.scale(iu);
    let (ps, pe) = (g.start[iu], g.end[iu]);
    let kids = &g.children[iu];
    if kids.is_empty() {
        return scaled(pe - ps, f);
    }
    let k = kids.len();
    let last_end = kids.iter().map(|&c| g.end[c as usize]).max().unwrap_or(ps);
    let trailing = pe - last_end;
    if plan.parallel(iu) {
        let lead = g.start[kids[0] as usize] - ps;
        let union = union_len(g, kids);
        let self_time = (pe - ps) - union;
        let longest = kids.iter().map(|&c| new_dur[c as usize]).max().unwrap_or(0);
        return (scaled(lead, f) + longest + scaled(self_time - lead, f)).max(0);
    }
    // children in their order; Fenwick trees over the children sorted by original end hold
    // prefix maxima of (new end, original end) of those already placed
    let Scratch {
        fen_new,
        fen_orig,
        new_end,
        done,
        members,
    } = s;
    fen_new.clear();
    fen_new.resize(k + 1, i64::MIN);
    fen_orig.clear();
    fen_orig.resize(k + 1, i64::MIN);
    new_end.clear();
    new_end.resize(k, 0);
    done.clear();
    done.resize(k, false);
    let mut max_new_end = i64::MIN;
    for j in 0..k {
        if done[j] {
            continue;
        }
        let c = kids[j] as usize;
        let cs = g.start[c];
        // predecessors: siblings already placed whose original end <= cs
        let (pred_new, pred_orig) = fen_query(fen_new, fen_orig, preds[j] as usize);
        let start_rel = if pred_orig != i64::MIN {
            pred_new + scaled(cs - pred_orig, f)
        } else {
            scaled(cs - ps, f)
        };
        let grp = plan.group(c);
        members.clear();
        if grp != NO_GROUP {
            members.extend((j..k).filter(|&m| !done[m] && plan.group(kids[m] as usize) == grp));
        } else {
            members.push(j);
        }
        let mut grp_end = i64::MIN;
        for &m in members.iter() {
            let cm = kids[m] as usize;
            new_end[m] = start_rel + new_dur[cm];
            grp_end = grp_end.max(new_end[m]);
            done[m] = true;
        }
        for &m in members.iter() {
            let cm = kids[m] as usize;
            let val = if members.len() > 1 {
                grp_end
            } else {
                new_end[m]
            };
            fen_update(fen_new, fen_orig, rank[m] as usize + 1, val, g.end[cm]);
        }
        max_new_end = max_new_end.max(grp_end);
    }
    (max_new_end + scaled(trailing, f)).max(0)
}

fn fen_update(fnew: &mut [i64], forig: &mut [i64], mut pos: usize, vnew: i64, vorig: i64) {
    while pos < fnew.len() {
        fnew[pos] = fnew[pos].max(vnew);
        forig[pos] = forig[pos].max(vorig);
        pos += pos & pos.wrapping_neg();
    }
}

fn fen_query(fnew: &[i64], forig: &[i64], mut pos: usize) -> (i64, i64) {
    let (mut a, mut b) = (i64::MIN, i64::MIN);
    while pos > 0 {
        a = a.max(fnew[pos]);
        b = b.max(forig[pos]);
        pos -= pos & pos.wrapping_neg();
    }
    (a, b)
}

fn union_len(g: &CpGraph, kids: &[u32]) -> i64 {
    let mut iv: Vec<(i64, i64)> = kids
        .iter()
        .map(|&c| (g.start[c as usize], g.end[c as usize]))
        .collect();
    iv.sort_unstable();
    let mut total = 0;
    let mut cur: Option<(i64, i64)> = None;
    for (s, e) in iv {
        match cur {
            Some((cs, ce)) if s <= ce => cur = Some((cs, ce.max(e))),
            Some((cs, ce)) => {
                total += ce - cs;
                cur = Some((s, e));
            }
            None => cur = Some((s, e)),
        }
    }
    if let Some((cs, ce)) = cur {
        total += ce - cs;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::critical::tests::graph;

    // checkout: 750 ms sequential (order 100, payment 300, inventory 200, confirm 100, 50 own)
    fn checkout() -> CpGraph {
        graph(&[
            (0, 750, None),
            (10, 100, Some(0)),
            (120, 300, Some(0)),
            (430, 200, Some(0)),
            (640, 100, Some(0)),
        ])
    }

    #[test]
    fn identity_reproduces() {
        let g = checkout();
        let d = simulate(&g, &Plan::identity(g.len()));
        assert_eq!(d, vec![750, 100, 300, 200, 100]);
    }

    #[test]
    fn removing_a_call_moves_its_dependents() {
        let g = checkout();
        let mut p = Plan::identity(g.len());
        p.removed[2] = true; // payment
        assert_eq!(simulate_root(&g, &p), 450);
    }

    #[test]
    fn parallel_keeps_own_work() {
        let g = checkout();
        let mut p = Plan::identity(g.len());
        p.parallel[0] = true;
        // lead 10 + longest 300 + (own 50 - lead 10)
        assert_eq!(simulate_root(&g, &p), 350);
    }

    #[test]
    fn group_starts_together_and_joins() {
        let g = checkout();
        let mut p = Plan::identity(g.len());
        p.group[2] = 7;
        p.group[3] = 7; // payment and inventory together: 10+100+10 + 300 + 10 + 100 + 10
        assert_eq!(simulate_root(&g, &p), 540);
    }

    #[test]
    fn speedup_scales_own_work_only() {
        let g = checkout();
        let mut p = Plan::identity(g.len());
        p.scale[2] = 0.5;
        assert_eq!(simulate_root(&g, &p), 600);
        let mut q = Plan::identity(g.len());
        q.scale[0] = 0.0; // the parent's own 50 ms vanish
        assert_eq!(simulate_root(&g, &q), 700);
    }
}
