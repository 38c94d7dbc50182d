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
    sim.b.dur
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

/// A list shorter than the graph changes nothing past its end.
impl Changes for Plan {
    fn removed(&self, i: usize) -> bool {
        self.removed.get(i).copied().unwrap_or(false)
    }
    fn scale(&self, i: usize) -> f64 {
        self.scale.get(i).copied().unwrap_or(1.0)
    }
    fn parallel(&self, i: usize) -> bool {
        self.parallel.get(i).copied().unwrap_or(false)
    }
    fn group(&self, i: usize) -> u32 {
        self.group.get(i).copied().unwrap_or(NO_GROUP)
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
    /// Every node has at most one parent: runs may be incremental.
    tree: bool,
    /// `b.base` holds the durations under the unchanged plan.
    has_base: bool,
    b: SimBuffers,
}

/// The lists of a [`Simulator`], handed from one graph's simulator to the next so that a
/// trace costs no allocation for them once the largest has been seen.
#[derive(Debug, Default)]
pub struct SimBuffers {
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
    /// Durations under the unchanged plan.
    base: Vec<i64>,
    /// Durations of the current run (equal to `base` between incremental runs).
    dur: Vec<i64>,
    dirty: Vec<bool>,
    dirty_list: Vec<u32>,
    stack: Vec<u32>,
    scratch: Scratch,
}

impl<'g> Simulator<'g> {
    /// Prepare the simulations of `g`.
    pub fn new(g: &'g CpGraph) -> Simulator<'g> {
        Simulator::with_buffers(g, SimBuffers::default())
    }

    /// Prepare the simulations of `g` in the lists of an earlier simulator
    /// ([`Self::into_buffers`]).
    pub fn with_buffers(g: &'g CpGraph, mut b: SimBuffers) -> Simulator<'g> {
        let n = g.len();
        for v in [&mut b.order, &mut b.rank, &mut b.preds, &mut b.dirty_list] {
            v.clear();
        }
        b.at.clear();
        b.at.resize(n, NONE);
        b.parent.clear();
        b.parent.resize(n, NONE);
        b.dur.clear();
        b.dur.resize(n, 0);
        b.dirty.clear();
        b.dirty.resize(n, false);
        let mut sim = Simulator {
            g,
            tree: true,
            has_base: false,
            b,
        };
        if (g.root as usize) >= n {
            return sim;
        }
        let b = &mut sim.b;
        b.stack.clear();
        b.stack.push(g.root);
        while let Some(i) = b.stack.pop() {
            b.order.push(i);
            let kids = &g.children[i as usize];
            b.stack.extend_from_slice(kids);
            if b.at[i as usize] != NONE {
                sim.tree = false; // reached twice
                continue;
            }
            b.at[i as usize] = b.rank.len() as u32;
            for &c in kids {
                if b.parent[c as usize] != NONE || c == g.root {
                    sim.tree = false;
                }
                b.parent[c as usize] = i;
            }
            let k = kids.len();
            if k <= 1 {
                // one child: first by end, and before itself only if it lasts no time
                for &c in kids {
                    b.rank.push(0);
                    b.preds
                        .push(u32::from(g.end[c as usize] <= g.start[c as usize]));
                }
                continue;
            }
            let by_end = &mut b.scratch.members;
            by_end.clear();
            by_end.extend(0..k);
            by_end.sort_by_key(|&j| (g.end[kids[j] as usize], j));
            let base = b.rank.len();
            b.rank.resize(base + k, 0);
            for (r, &j) in by_end.iter().enumerate() {
                b.rank[base + j] = r as u32;
            }
            for &c in kids {
                let cs = g.start[c as usize];
                let p = by_end.partition_point(|&x| g.end[kids[x] as usize] <= cs);
                b.preds.push(p as u32);
            }
        }
        sim
    }

    /// The lists, for the next graph's simulator.
    pub fn into_buffers(self) -> SimBuffers {
        self.b
    }

    /// New end-to-end duration of the root under `plan` (0 if the plan is shorter than the
    /// graph, as [`simulate_root`]).
    pub fn root_duration(&mut self, plan: &Plan) -> i64 {
        let root = self.g.root as usize;
        if self.b.order.is_empty() || plan.scale.len() < self.g.len() {
            return 0;
        }
        if !self.tree {
            self.evaluate_all(plan);
            return self.b.dur[root];
        }
        if !self.has_base {
            self.evaluate_all(&Unchanged);
            self.b.base.clear();
            self.b.base.extend_from_slice(&self.b.dur);
            self.has_base = true;
        }
        let b = &mut self.b;
        // the nodes the plan touches (unreached ones too: they are never evaluated, and
        // marking them costs less than telling them apart), and their ancestors
        let n = b.dirty.len();
        let (Some(removed), Some(parallel), Some(group), Some(scale)) = (
            plan.removed.get(..n),
            plan.parallel.get(..n),
            plan.group.get(..n),
            plan.scale.get(..n),
        ) else {
            // a plan shorter than the graph: as a full simulation reads it, and then back
            // to the unchanged durations that incremental runs start from
            self.evaluate_all(plan);
            let out = self.b.dur[root];
            self.b.dur.copy_from_slice(&self.b.base);
            return out;
        };
        for i in 0..n {
            if !(removed[i] | parallel[i] | (group[i] != NO_GROUP) | (scale[i] != 1.0)) {
                continue;
            }
            let mut x = i as u32;
            while x != NONE && !b.dirty[x as usize] {
                b.dirty[x as usize] = true;
                b.dirty_list.push(x);
                x = b.parent[x as usize];
            }
        }
        if b.dirty_list.is_empty() {
            return b.dur[root];
        }
        for k in (0..self.b.order.len()).rev() {
            let i = self.b.order[k];
            if self.b.dirty[i as usize] {
                self.b.dur[i as usize] = self.node(plan, i);
            }
        }
        let b = &mut self.b;
        let out = b.dur[root];
        for &i in &b.dirty_list {
            b.dur[i as usize] = b.base[i as usize];
            b.dirty[i as usize] = false;
        }
        b.dirty_list.clear();
        out
    }

    /// Every reachable node, children first, into `dur`.
    fn evaluate_all<C: Changes>(&mut self, plan: &C) {
        self.b.dur.iter_mut().for_each(|d| *d = 0);
        for k in (0..self.b.order.len()).rev() {
            let i = self.b.order[k];
            self.b.dur[i as usize] = self.node(plan, i);
        }
    }

    fn node<C: Changes>(&mut self, plan: &C, i: u32) -> i64 {
        let b = &mut self.b;
        let at = b.at[i as usize] as usize;
        let k = self.g.children[i as usize].len();
        simulate_node(
            self.g,
            plan,
            i,
            &b.rank[at..at + k],
            &b.preds[at..at + k],
            &b.dur,
            &mut b.scratch,
        )
    }
}

#[derive(Debug, Default)]
struct Scratch {
    /// Fenwick tree of (new end, original end) prefix maxima.
    fen: Vec<(i64, i64)>,
    /// Children already placed as members of a group.
    done: Vec<bool>,
    /// One group's members (and, while preparing, children sorted by end).
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
    if k == 1 {
        // what the loop below does for one child, which has no sibling before it
        let c = kids[0] as usize;
        return (scaled(g.start[c] - ps, f) + new_dur[c] + scaled(trailing, f)).max(0);
    }
    // children in their order; a Fenwick tree over the children sorted by original end holds
    // prefix maxima of (new end, original end) of those already placed
    let Scratch { fen, done, members } = s;
    fen.clear();
    fen.resize(k + 1, (i64::MIN, i64::MIN));
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
        let (pred_new, pred_orig) = fen_query(fen, preds[j] as usize);
        let start_rel = if pred_orig != i64::MIN {
            pred_new + scaled(cs - pred_orig, f)
        } else {
            scaled(cs - ps, f)
        };
        let grp = plan.group(c);
        if grp == NO_GROUP {
            // alone: no later child looks at `done[j]` (only members of a group are marked)
            let end = start_rel + new_dur[c];
            fen_update(fen, rank[j] as usize + 1, end, g.end[c]);
            max_new_end = max_new_end.max(end);
            continue;
        }
        // the group starts together; whatever waits for one of them waits for all
        members.clear();
        let mut grp_end = i64::MIN;
        for m in j..k {
            let cm = kids[m] as usize;
            if !done[m] && plan.group(cm) == grp {
                grp_end = grp_end.max(start_rel + new_dur[cm]);
                done[m] = true;
                members.push(m);
            }
        }
        for &m in members.iter() {
            fen_update(fen, rank[m] as usize + 1, grp_end, g.end[kids[m] as usize]);
        }
        max_new_end = max_new_end.max(grp_end);
    }
    (max_new_end + scaled(trailing, f)).max(0)
}

fn fen_update(fen: &mut [(i64, i64)], mut pos: usize, vnew: i64, vorig: i64) {
    while let Some(slot) = fen.get_mut(pos) {
        slot.0 = slot.0.max(vnew);
        slot.1 = slot.1.max(vorig);
        pos += pos & pos.wrapping_neg();
    }
}

fn fen_query(fen: &[(i64, i64)], mut pos: usize) -> (i64, i64) {
    let (mut a, mut b) = (i64::MIN, i64::MIN);
    while pos > 0 && pos < fen.len() {
        a = a.max(fen[pos].0);
        b = b.max(fen[pos].1);
        pos -= pos & pos.wrapping_neg();
    }
    (a, b)
}

/// The time covered by at least one of `kids` (overlaps counted once): what the children take
/// of their parent, the rest being its own time. Shared with the route-plan evidence.
pub(crate) fn union_len(g: &CpGraph, kids: &[u32]) -> i64 {
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

    #[test]
    fn simulator_runs_start_from_the_unchanged_durations() {
        let g = checkout();
        let mut sim = Simulator::new(&g);
        let mut p = Plan::identity(g.len());
        p.removed[2] = true;
        assert_eq!(sim.root_duration(&p), 450);
        // the next run does not see the payment removed
        p.reset(g.len());
        p.scale[2] = 0.5;
        assert_eq!(sim.root_duration(&p), 600);
        p.reset(g.len());
        assert_eq!(sim.root_duration(&p), 750);
        // a plan too short for the graph gives 0 (as `simulate_root`), one with a short list
        // reads no change past its end; neither changes the runs after it
        assert_eq!(sim.root_duration(&Plan::identity(2)), 0);
        let mut short = Plan::identity(g.len());
        short.removed.truncate(g.len() - 1);
        short.removed[1] = true;
        assert_eq!(sim.root_duration(&short), 650);
        assert_eq!(simulate_root(&g, &short), 650);
        p.parallel[0] = true;
        assert_eq!(sim.root_duration(&p), 350);
        p.reset(g.len());
        assert_eq!(sim.root_duration(&p), 750);
    }

    #[test]
    fn a_node_with_two_parents_is_simulated_in_full() {
        // node 3 is a child of both 1 and 2 (only `CpGraph::new` can say so)
        let g = CpGraph::new(
            0,
            vec![0, 10, 50, 60],
            vec![100, 40, 90, 70],
            vec![vec![1, 2], vec![3], vec![3], vec![]],
        );
        let mut sim = Simulator::new(&g);
        for i in 0..g.len() {
            let mut p = Plan::identity(g.len());
            p.removed[i] = i > 0;
            p.scale[3] = 0.5;
            assert_eq!(sim.root_duration(&p), simulate_root(&g, &p), "{i}");
        }
    }

    #[test]
    fn buffers_carry_over_to_another_graph() {
        let big = checkout();
        let small = graph(&[(0, 100, None), (10, 50, Some(0))]);
        let mut sim = Simulator::new(&big);
        let mut p = Plan::identity(big.len());
        p.removed[1] = true;
        assert_eq!(sim.root_duration(&p), 650);
        let mut sim = Simulator::with_buffers(&small, sim.into_buffers());
        let mut q = Plan::identity(small.len());
        assert_eq!(sim.root_duration(&q), 100);
        q.scale[1] = 0.0;
        assert_eq!(sim.root_duration(&q), 50);
        let mut sim = Simulator::with_buffers(&big, sim.into_buffers());
        assert_eq!(sim.root_duration(&p), 650);
    }
}
