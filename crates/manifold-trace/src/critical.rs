//! The critical path of one trace: which span was the one being waited for at every instant.
//!
//! The input is a [`CpGraph`] — start, end and the *blocking* children of each node — so the live
//! gateway can build one from its own spans without the trace-file model. [`CpGraph::from_trace`]
//! builds it from a [`Trace`] with Jaeger's preparation: non-blocking edges (`FOLLOWS_FROM`,
//! producer→consumer) are cut with their whole subtree, and every child is clipped to its parent
//! (a child entirely outside its parent is left out).
//!
//! The walk is Jaeger's: start from the child that finished last, recurse into it, then step back
//! to the child that finished before that one started, and so on; the time between them is the
//! parent's own. With `overlap_allowance > 0` the step back also accepts a predecessor that
//! overlaps its successor by less than that fraction of the parent's duration, provided no other
//! sibling starts or ends inside the overlap — CRISP's `happensBefore`, which absorbs clock skew
//! between siblings.
//!
//! Two outputs, deliberately separate:
//! * `sections` tile the root's interval exactly, in time order, without overlap (what is drawn);
//! * `nodes[..].exclusive` is the accounting (what is aggregated): a span's duration minus the
//!   durations of its children on the path, never below zero. In Jaeger mode this equals the sum
//!   of the span's sections; with an overlap allowance it charges the small overlaps to the
//!   children and takes them from the parent, exactly as CRISP does.

use crate::model::{Children, Link, SpanKind, Trace, WarningKind, Warnings};

/// Start, end and blocking children of every node, plus the root: all the critical path needs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CpGraph {
    /// Root node.
    pub root: u32,
    /// Effective start of each node (ns).
    pub start: Vec<i64>,
    /// Effective end of each node (ns); `end >= start`.
    pub end: Vec<i64>,
    /// Blocking children of each node, ordered by (start, index). Nodes not reachable from the
    /// root through these lists are not on any path.
    pub children: Children,
}

impl CpGraph {
    /// Build a graph from raw parts; ends before starts are raised to the start.
    pub fn new(
        root: u32,
        start: Vec<i64>,
        mut end: Vec<i64>,
        mut children: Vec<Vec<u32>>,
    ) -> CpGraph {
        for (e, s) in end.iter_mut().zip(start.iter()) {
            if *e < *s {
                *e = *s;
            }
        }
        for list in &mut children {
            list.sort_by_key(|&c| (start.get(c as usize).copied().unwrap_or(0), c));
        }
        CpGraph {
            root,
            start,
            end,
            children: Children::from_lists(children),
        }
    }

    /// Jaeger's preparation of a trace: drop non-blocking subtrees, clip children to parents.
    pub fn from_trace(trace: &Trace, warnings: &mut Warnings) -> CpGraph {
        let n = trace.spans.len();
        let mut start: Vec<i64> = trace.spans.iter().map(|s| s.start).collect();
        let mut end: Vec<i64> = trace.spans.iter().map(|s| s.end().max(s.start)).collect();
        let all_children = trace.children();
        // which children block their parent (each node has one parent, so a flag per node)
        let mut blocking = vec![false; n];
        let mut count = vec![0u32; n + 1];
        let mut stack = Vec::with_capacity(n);
        stack.push(trace.root);
        while let Some(p) = stack.pop() {
            let pu = p as usize;
            let (ps, pe) = (start[pu], end[pu]);
            let pkind = trace.spans[pu].kind;
            for &c in &all_children[pu] {
                let cu = c as usize;
                let cs = &trace.spans[cu];
                if cs.link == Link::FollowsFrom
                    || (pkind == SpanKind::Producer && cs.kind == SpanKind::Consumer)
                {
                    continue; // the parent does not wait for it
                }
                let (s, e) = (start[cu], end[cu]);
                if s >= ps {
                    if s >= pe {
                        warnings.add(WarningKind::ChildOutsideParent);
                        continue;
                    }
                    if e > pe {
                        warnings.add(WarningKind::ChildOutlivesParent);
                        end[cu] = pe;
                    }
                } else if e <= ps {
                    warnings.add(WarningKind::ChildOutsideParent);
                    continue;
                } else {
                    warnings.add(WarningKind::ChildOutlivesParent);
                    start[cu] = ps;
                    end[cu] = e.min(pe);
                }
                blocking[cu] = true;
                count[pu + 1] += 1;
                stack.push(c);
            }
        }
        let mut children = Children::with_counts(count);
        for (p, kids) in all_children.iter().enumerate() {
            for &c in kids {
                if blocking[c as usize] {
                    children.place(p, c);
                }
            }
        }
        let st = &start;
        children.sort_each(|c| (st[c as usize], c));
        CpGraph {
            root: trace.root,
            start,
            end,
            children,
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.start.len()
    }

    /// True when there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.start.is_empty()
    }

    /// Duration of a node.
    pub fn duration(&self, i: u32) -> i64 {
        self.end[i as usize] - self.start[i as usize]
    }

    /// Nodes reachable from the root (the ones that count).
    pub fn reachable(&self) -> Vec<u32> {
        let mut out = Vec::new();
        self.reachable_into(&mut out, &mut Vec::new());
        out
    }

    /// [`Self::reachable`] into `out` (emptied first), in the same order, with `stack` as the
    /// walk's stack: both are built for every trace, and the analysis keeps them from trace to
    /// trace.
    pub(crate) fn reachable_into(&self, out: &mut Vec<u32>, stack: &mut Vec<u32>) {
        out.clear();
        stack.clear();
        stack.push(self.root);
        while let Some(i) = stack.pop() {
            if (i as usize) >= self.len() {
                continue;
            }
            out.push(i);
            stack.extend_from_slice(self.children.get(i as usize).unwrap_or(&[]));
        }
    }
}

/// How strictly a predecessor must precede its successor.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Semantics {
    /// CRISP's overlap allowance: the largest overlap accepted between consecutive critical
    /// siblings, as a fraction of their parent's duration. 0 is Jaeger's strict ordering;
    /// CRISP's default is 0.01.
    pub overlap_allowance: f64,
}

impl Semantics {
    /// Jaeger's semantics.
    pub const JAEGER: Semantics = Semantics {
        overlap_allowance: 0.0,
    };
    /// CRISP's default (1% of the parent's duration).
    pub const CRISP: Semantics = Semantics {
        overlap_allowance: 0.01,
    };
}

/// One stretch of time attributed to one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    /// The node waited for.
    pub node: u32,
    /// Start (ns).
    pub start: i64,
    /// End (ns), `> start`.
    pub end: i64,
}

/// A node on the critical path with its accounted time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathNode {
    /// The node.
    pub node: u32,
    /// Its parent on the path (None for the root).
    pub parent: Option<u32>,
    /// Exclusive critical time (ns): duration minus the durations of its children on the path.
    pub exclusive: i64,
}

/// The critical path of one trace.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CriticalPath {
    /// Chronological sections tiling the root's interval.
    pub sections: Vec<Section>,
    /// Nodes on the path, in pre-order (a node, then its critical children latest first).
    pub nodes: Vec<PathNode>,
}

impl CriticalPath {
    /// Sum of exclusive times (equals the root's duration unless an overlap was clamped).
    pub fn total_exclusive(&self) -> i64 {
        self.nodes.iter().map(|n| n.exclusive).sum()
    }
}

struct Frame {
    node: u32,
    lo: i64,
    cursor: i64,
    /// This node's chain is `chains[chain_at..chain_end]`; the chains of the frames above it
    /// follow it in the same list (frames are a stack, so one list serves them all).
    chain_at: usize,
    chain_end: usize,
    k: usize,
}

/// Compute the critical path of `g` under `sem`.
pub fn critical_path(g: &CpGraph, sem: Semantics) -> CriticalPath {
    let mut out = CriticalPath::default();
    if (g.root as usize) >= g.len() {
        return out;
    }
    let root = g.root;
    // at most every node once, and a section before, between and after each node's children
    out.nodes.reserve(g.len());
    out.sections.reserve(2 * g.len() + 1);
    let mut stack: Vec<Frame> = Vec::with_capacity(16);
    let mut chains: Vec<u32> = Vec::with_capacity(g.len());
    let mut scratch = Scratch::default();
    select_chain(g, root, sem, &mut chains, &mut scratch);
    out.nodes.push(PathNode {
        node: root,
        parent: None,
        exclusive: exclusive_of(g, root, &chains),
    });
    stack.push(Frame {
        node: root,
        lo: g.start[root as usize],
        cursor: g.end[root as usize],
        chain_at: 0,
        chain_end: chains.len(),
        k: 0,
    });
    while let Some(top) = stack.last_mut() {
        if top.chain_at + top.k < top.chain_end {
            let c = chains[top.chain_at + top.k];
            top.k += 1;
            let cu = c as usize;
            let c_hi = g.end[cu].min(top.cursor);
            if c_hi < top.cursor {
                out.sections.push(Section {
                    node: top.node,
                    start: c_hi.max(top.lo),
                    end: top.cursor,
                });
            }
            let lo = g.start[cu];
            let child_cursor = c_hi.max(lo);
            top.cursor = top.cursor.min(lo).max(top.lo);
            let parent = top.node;
            let chain_at = top.chain_end;
            chains.truncate(chain_at);
            select_chain(g, c, sem, &mut chains, &mut scratch);
            out.nodes.push(PathNode {
                node: c,
                parent: Some(parent),
                exclusive: exclusive_of(g, c, &chains[chain_at..]),
            });
            stack.push(Frame {
                node: c,
                lo,
                cursor: child_cursor,
                chain_at,
                chain_end: chains.len(),
                k: 0,
            });
        } else {
            if top.lo < top.cursor {
                out.sections.push(Section {
                    node: top.node,
                    start: top.lo,
                    end: top.cursor,
                });
            }
            stack.pop();
        }
    }
    out.sections.retain(|s| s.end > s.start);
    out.sections.reverse();
    out
}

fn exclusive_of(g: &CpGraph, node: u32, chain: &[u32]) -> i64 {
    let own = g.duration(node);
    let kids: i64 = chain.iter().map(|&c| g.duration(c)).sum();
    (own - kids).max(0)
}

/// Lists [`select_chain`] reuses from node to node.
#[derive(Default)]
struct Scratch {
    sorted: Vec<u32>,
    starts: Vec<i64>,
    ends: Vec<i64>,
}

/// Append to `chain` the children of `node` on the critical path, latest-finishing first.
fn select_chain(g: &CpGraph, node: u32, sem: Semantics, chain: &mut Vec<u32>, s: &mut Scratch) {
    let kids = &g.children[node as usize];
    match kids {
        [] => return,
        [only] => {
            chain.push(*only);
            return;
        }
        _ => {}
    }
    let sorted = &mut s.sorted;
    sorted.clear();
    sorted.extend_from_slice(kids);
    // stable: among equal ends the first in (start, index) order wins, as in Jaeger
    sorted.sort_by(|a, b| g.end[*b as usize].cmp(&g.end[*a as usize]));
    let mut last = sorted[0];
    chain.push(last);
    let tolerant = sem.overlap_allowance > 0.0;
    let (starts, ends) = (&mut s.starts, &mut s.ends);
    starts.clear();
    ends.clear();
    if tolerant {
        starts.extend(kids.iter().map(|&c| g.start[c as usize]));
        ends.extend(kids.iter().map(|&c| g.end[c as usize]));
        starts.sort_unstable();
        ends.sort_unstable();
    }
    let parent_dur = g.duration(node);
    for &cn in &sorted[1..] {
        let (bs, be) = (g.start[cn as usize], g.end[cn as usize]);
        let (ls, le) = (g.start[last as usize], g.end[last as usize]);
        let before = if be < ls {
            true
        } else if tolerant && be < le && bs < ls && parent_dur > 0 {
            let overlap = (be - ls) as f64 / parent_dur as f64;
            overlap < sem.overlap_allowance
                && events_in(starts, ls, be) + events_in(ends, ls, be) == 2
        } else {
            false
        };
        if before {
            chain.push(cn);
            last = cn;
        }
    }
}

/// How many sorted values fall in `[lo, hi]`.
fn events_in(sorted: &[i64], lo: i64, hi: i64) -> usize {
    let a = sorted.partition_point(|&x| x < lo);
    let b = sorted.partition_point(|&x| x <= hi);
    b.saturating_sub(a)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A graph from `(start, duration, parent)` per span, span 0 the root: the unit tests of
    /// every module that walks critical paths build theirs with it.
    pub(crate) fn graph(spans: &[(i64, i64, Option<u32>)]) -> CpGraph {
        let start: Vec<i64> = spans.iter().map(|s| s.0).collect();
        let end: Vec<i64> = spans.iter().map(|s| s.0 + s.1).collect();
        let mut children = vec![Vec::new(); spans.len()];
        for (i, s) in spans.iter().enumerate() {
            if let Some(p) = s.2 {
                children[p as usize].push(i as u32);
            }
        }
        CpGraph::new(0, start, end, children)
    }

    #[test]
    fn jaeger_test1() {
        // C 1..101 with D 20..40 and E 50..60
        let g = graph(&[(1, 100, None), (20, 20, Some(0)), (50, 10, Some(0))]);
        let cp = critical_path(&g, Semantics::JAEGER);
        let s: Vec<(u32, i64, i64)> = cp
            .sections
            .iter()
            .map(|s| (s.node, s.start, s.end))
            .collect();
        assert_eq!(
            s,
            vec![
                (0, 1, 20),
                (1, 20, 40),
                (0, 40, 50),
                (2, 50, 60),
                (0, 60, 101)
            ]
        );
        assert_eq!(cp.total_exclusive(), 100);
    }

    #[test]
    fn crisp_overlap_allowance() {
        // CRISP case 10: A 0..1000, B 10..210, C 209..309, D 308..608
        let g = graph(&[
            (0, 1000, None),
            (10, 200, Some(0)),
            (209, 100, Some(0)),
            (308, 300, Some(0)),
        ]);
        let strict = critical_path(&g, Semantics::JAEGER);
        assert_eq!(strict.nodes.len(), 3); // A, D, B
        let tol = critical_path(&g, Semantics::CRISP);
        let ex: Vec<(u32, i64)> = tol.nodes.iter().map(|n| (n.node, n.exclusive)).collect();
        assert_eq!(ex, vec![(0, 400), (3, 300), (2, 100), (1, 200)]);
        let total: i64 = tol.sections.iter().map(|s| s.end - s.start).sum();
        assert_eq!(total, 1000);
    }
}
