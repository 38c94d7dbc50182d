//! The simulator: one trace's graph prepared once (evaluation order, each child's siblings by
//! end), then simulated under many plans, incrementally where the plan touches few nodes.

use super::node::{simulate_node, Scratch};
use super::{Changes, Plan, Unchanged, NO_GROUP};
use crate::critical::CpGraph;

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
