//! Errors on the critical path, as CRISP measures them (uber-research/CRISP, `crisp/graph.py`).
//!
//! A failed span on the critical path is time the request spent on work it threw away, so CRISP
//! reports, per trace:
//!
//! * the **error critical path** (`computeErrorsOnCriticalPath`): the critical-path nodes that
//!   fail, plus their critical-path ancestors (so the failures keep their call paths);
//! * **exclusive time** of each failing node on it (`errCPCallpathTimeExclusive`, and
//!   `errOpTimeExclusive` / `errCallpathTimeExclusive` in the older test files): the node's
//!   critical-path exclusive time — its duration minus the durations of its critical children,
//!   the same number as [`PathNode::exclusive`](crate::PathNode) — summed per call path (CRISP
//!   prefixes the call path with the synthetic root `errorCriticalPathSyntheticRoot`);
//! * **error counts** (`errCPErrCounts`, `errCounts`): `computeErrorStats` run over the error
//!   critical path: a failing node with a failing child there *propagated* an error, a failing
//!   node without one raised it (*self*), a healthy node with a failing child *stopped* it;
//!   CRISP prints them as `[self, propagated, stopped]`;
//! * **inclusive error time** (`errOpTimeInclusive`): a failing node's whole duration; a healthy
//!   node on the error path is charged the inclusive error time of its children there;
//! * **time saved on the critical path** (`timeSavedOnCP`, CRISP's `ComputeAllSeriesTimeSaved`):
//!   how much shorter the root would be if every failing span (with its subtree) took no time.
//!   The children of each span are cut into parallel blocks (transitively overlapping siblings,
//!   separated with CRISP's `happensBefore`); inside a block each chain of spans in series keeps
//!   its start offsets and gaps but shrinks by what its members save, recursively; the block
//!   saves what its last-ending chain saves, minus the overlap with the next block;
//! * **the critical path without the failures** (`noErrCP`): see [`no_error_critical_path`].
//!
//! Sources. The stored copy of CRISP's `crisp/graph.py` (and `crisp/models.py` for `PBlock`)
//! holds `computeErrorsOnCriticalPath`, `computeErrorStats`, `happensBefore`, `getPBlocks` and
//! the `ComputeAllSeriesTimeSaved*` family, which are followed here (ties broken as
//! [`critical_path`](crate::critical_path) breaks them). The code that turns the error path into
//! CRISP's maps (and `noErrCP`) was not in it, so how exclusive, inclusive and count values are
//! keyed and summed is taken from CRISP's 33 test files, every value of which this reproduces.
//! CRISP's own `checkResults` never fails on a map (it returns the message, which is truthy),
//! so those files were never checked against CRISP's code.

use crate::critical::{CpGraph, CriticalPath, Semantics};

/// CRISP's `ErrCountsData`: how a node on the error critical path took part in the errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ErrCounts {
    /// The node failed and none of its children on the error path did.
    pub self_errors: u32,
    /// The node failed and so did one of its children on the error path.
    pub propagated: u32,
    /// The node succeeded although one of its children on the error path failed.
    pub stopped: u32,
}

impl ErrCounts {
    /// CRISP's `toArray()` order: `[self, propagated, stopped]`.
    pub fn to_array(self) -> [u32; 3] {
        [self.self_errors, self.propagated, self.stopped]
    }

    /// True when the node took no part in an error (CRISP leaves it out of the counts).
    pub fn is_empty(self) -> bool {
        self.self_errors == 0 && self.propagated == 0 && self.stopped == 0
    }
}

/// One node of the error critical path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrCpNode {
    /// The node.
    pub node: u32,
    /// Its parent on the (error) critical path; None for the root.
    pub parent: Option<u32>,
    /// Whether the span itself failed.
    pub error: bool,
    /// Critical-path exclusive time (ns); counted as error time only when `error`.
    pub exclusive: i64,
    /// Inclusive error time (ns): the duration if the node failed, else the sum over its
    /// children on the error path.
    pub inclusive: i64,
    /// How the node took part in the errors.
    pub counts: ErrCounts,
}

/// The error critical path of one trace, in the critical path's pre-order.
pub fn error_critical_path(
    g: &CpGraph,
    cp: &CriticalPath,
    is_error: impl Fn(u32) -> bool,
) -> Vec<ErrCpNode> {
    const NONE: usize = usize::MAX;
    let mut at = vec![NONE; g.len()];
    for (k, n) in cp.nodes.iter().enumerate() {
        if let Some(slot) = at.get_mut(n.node as usize) {
            *slot = k;
        }
    }
    let m = cp.nodes.len();
    let error: Vec<bool> = cp.nodes.iter().map(|n| is_error(n.node)).collect();
    let mut on_path = error.clone();
    let mut failing_child = vec![false; m];
    let mut inclusive: Vec<i64> = cp
        .nodes
        .iter()
        .zip(&error)
        .map(|(n, &e)| if e { g.duration(n.node) } else { 0 })
        .collect();
    // pre-order: every child comes after its parent, so walking backwards finishes children first
    for k in (0..m).rev() {
        if !on_path[k] {
            continue;
        }
        let Some(p) = cp.nodes[k].parent else {
            continue;
        };
        let pk = at.get(p as usize).copied().unwrap_or(NONE);
        if pk == NONE {
            continue;
        }
        on_path[pk] = true;
        failing_child[pk] |= error[k];
        if !error[pk] {
            inclusive[pk] += inclusive[k];
        }
    }
    let mut out = Vec::new();
    for (k, n) in cp.nodes.iter().enumerate() {
        if !on_path[k] {
            continue;
        }
        let counts = match (error[k], failing_child[k]) {
            (true, true) => ErrCounts {
                propagated: 1,
                ..ErrCounts::default()
            },
            (true, false) => ErrCounts {
                self_errors: 1,
                ..ErrCounts::default()
            },
            (false, true) => ErrCounts {
                stopped: 1,
                ..ErrCounts::default()
            },
            (false, false) => ErrCounts::default(),
        };
        out.push(ErrCpNode {
            node: n.node,
            parent: n.parent,
            error: error[k],
            exclusive: n.exclusive,
            inclusive: inclusive[k],
            counts,
        });
    }
    out
}

/// CRISP's `timeSavedOnCP` (`ComputeAllSeriesTimeSaved`) for the root of `g`, in ns.
///
/// Recursion follows the span tree, so its depth is the trace's depth.
pub fn time_saved_on_cp(g: &CpGraph, sem: Semantics, is_error: impl Fn(u32) -> bool) -> i64 {
    if (g.root as usize) >= g.len() {
        return 0;
    }
    Saver::new(g, sem, &is_error).node(g.root)
}

/// CRISP's `noErrCP`: the critical path the trace would have had without its failures, as
/// `(node, exclusive ns)` in path pre-order, nodes with no time left out.
///
/// Every failing span is removed with its subtree, every other span is shortened by what
/// [`time_saved_on_cp`] says its failures cost it, and the critical path of what is left is
/// accounted like [`PathNode::exclusive`](crate::PathNode): a node's shortened duration minus
/// the shortened durations of its critical children. The path itself is chosen on the spans'
/// recorded times (with the failures removed). CRISP's source for this field was not found;
/// this rule is derived from its 16 test files that expect it and reproduces all of them.
pub fn no_error_critical_path(
    g: &CpGraph,
    sem: Semantics,
    is_error: impl Fn(u32) -> bool,
) -> Vec<(u32, i64)> {
    if (g.root as usize) >= g.len() || is_error(g.root) {
        return Vec::new();
    }
    let kept: Vec<Vec<u32>> = (0..g.len())
        .map(|p| {
            g.children
                .get(p)
                .unwrap_or(&[])
                .iter()
                .copied()
                .filter(|&c| !is_error(c))
                .collect()
        })
        .collect();
    let healthy = CpGraph::new(g.root, g.start.clone(), g.end.clone(), kept);
    let cp = crate::critical::critical_path(&healthy, sem);
    let saver = Saver::new(g, sem, &is_error);
    let shortened = |n: u32| g.duration(n) - saver.node(n);
    let mut kids_time = vec![0i64; g.len()];
    for n in &cp.nodes {
        if let Some(p) = n.parent {
            kids_time[p as usize] += shortened(n.node);
        }
    }
    cp.nodes
        .iter()
        .map(|n| {
            (
                n.node,
                (shortened(n.node) - kids_time[n.node as usize]).max(0),
            )
        })
        .filter(|&(_, t)| t > 0)
        .collect()
}

struct Saver<'a> {
    g: &'a CpGraph,
    sem: Semantics,
    is_error: &'a dyn Fn(u32) -> bool,
    /// Time saved per node, once computed (every node's depends only on its subtree).
    memo: std::cell::RefCell<Vec<Option<i64>>>,
}

/// A parallel block: transitively overlapping siblings.
struct Block {
    parent: u32,
    start: i64,
    end: i64,
    first: u32,
    spans: Vec<u32>,
    overlap: i64,
}

impl<'a> Saver<'a> {
    fn new(g: &'a CpGraph, sem: Semantics, is_error: &'a dyn Fn(u32) -> bool) -> Saver<'a> {
        Saver {
            g,
            sem,
            is_error,
            memo: std::cell::RefCell::new(vec![None; g.len()]),
        }
    }

    fn start(&self, n: u32) -> i64 {
        self.g.start[n as usize]
    }
    fn end(&self, n: u32) -> i64 {
        self.g.end[n as usize]
    }

    /// CRISP's `happensBefore`: `before` ends before `later` starts, or overlaps it by less than
    /// the allowance with no other event of `set` inside the overlap.
    fn hb(&self, parent: u32, set: &[u32], before: u32, later: u32) -> bool {
        let (bs, be) = (self.start(before), self.end(before));
        let (ls, le) = (self.start(later), self.end(later));
        if be < ls {
            return true;
        }
        let pd = self.g.duration(parent);
        if be < le
            && bs < ls
            && pd > 0
            && ((be - ls) as f64 / pd as f64) < self.sem.overlap_allowance
        {
            let events: usize = set
                .iter()
                .map(|&c| {
                    usize::from(self.start(c) >= ls && self.start(c) <= be)
                        + usize::from(self.end(c) >= ls && self.end(c) <= be)
                })
                .sum();
            return events == 2;
        }
        false
    }

    /// Spans ordered latest end first (ties: earlier start, then lower index), as CRISP pops them.
    fn latest_first(&self, spans: &[u32]) -> Vec<u32> {
        let mut v = spans.to_vec();
        v.sort_by_key(|&c| (std::cmp::Reverse(self.end(c)), self.start(c), c));
        v
    }

    /// `computeTimeSavedOnCPReal` with the all-series block rule.
    fn node(&self, n: u32) -> i64 {
        if let Some(Some(v)) = self.memo.borrow().get(n as usize) {
            return *v;
        }
        let v = self.node_uncached(n);
        if let Some(slot) = self.memo.borrow_mut().get_mut(n as usize) {
            *slot = Some(v);
        }
        v
    }

    fn node_uncached(&self, n: u32) -> i64 {
        if (self.is_error)(n) {
            return self.g.duration(n);
        }
        let kids = self.g.children.get(n as usize).unwrap_or(&[]);
        if kids.is_empty() {
            return 0;
        }
        let saved: i64 = self.blocks(n, kids).iter().map(|b| self.block(b)).sum();
        saved.clamp(0, self.g.duration(n))
    }

    /// `getPBlocks`: children cut into parallel blocks, latest block first.
    fn blocks(&self, parent: u32, kids: &[u32]) -> Vec<Block> {
        let sorted = self.latest_first(kids);
        let mut out = Vec::new();
        let new_block = |c: u32, overlap: i64| Block {
            parent,
            start: self.start(c),
            end: self.end(c),
            first: c,
            spans: vec![c],
            overlap,
        };
        let mut cur = new_block(sorted[0], 0);
        for &c in &sorted[1..] {
            if self.hb(parent, kids, c, cur.first) {
                let overlap = (self.end(c) - cur.start).max(0);
                out.push(std::mem::replace(&mut cur, new_block(c, overlap)));
            } else {
                cur.spans.push(c);
                if self.start(c) < self.start(cur.first) {
                    cur.first = c;
                    cur.start = self.start(c);
                }
            }
        }
        out.push(cur);
        out
    }

    /// `ComputeAllSeriesTimeSavedForPBlock`.
    fn block(&self, b: &Block) -> i64 {
        let preds = self.direct_predecessors(b);
        let sorted = self.latest_first(&b.spans);
        let lrc = sorted[0];
        // GetCandidateBlockEndingSpans: the spans in parallel with the last-ending one
        let mut candidates = vec![lrc];
        for &s in &sorted[1..] {
            if self.hb(b.parent, &sorted, s, lrc) {
                break;
            }
            candidates.push(s);
        }
        let mut cache: Vec<Option<i64>> = vec![None; b.spans.len()];
        let mut longest = i64::MIN;
        for &c in &candidates {
            let saved = self.chain(b, &preds, &mut cache, c);
            longest = longest.max(self.end(c) - saved);
        }
        (b.end - longest - b.overlap).max(0)
    }

    /// `GetNonTransitiveHBInPBlock`: for each span of the block (by position in `b.spans`), the
    /// spans that end before it starts with nothing in series between them.
    fn direct_predecessors(&self, b: &Block) -> Vec<Vec<u32>> {
        let pos = |n: u32| b.spans.iter().position(|&x| x == n).unwrap_or(0);
        let mut preds: Vec<Vec<u32>> = vec![Vec::new(); b.spans.len()];
        let sorted = self.latest_first(&b.spans);
        let mut in_flight = vec![sorted[0]];
        for &s in &sorted[1..] {
            let mut finished = Vec::new();
            for &f in &in_flight {
                if self.end(s) > self.start(f) {
                    continue;
                }
                let fp = pos(f);
                if preds[fp].is_empty() {
                    preds[fp].push(s);
                    continue;
                }
                let in_series = preds[fp]
                    .iter()
                    .filter(|&&p| self.end(s) <= self.start(p))
                    .count();
                if in_series == preds[fp].len() {
                    finished.push(f);
                } else if in_series == 0 {
                    preds[fp].push(s);
                }
            }
            in_flight.retain(|f| !finished.contains(f));
            in_flight.push(s);
        }
        preds
    }

    /// `ComputeAllSeriesTimeSavedForNode`: how much earlier `n` ends when it and its chain of
    /// predecessors shrink, keeping its distance to the closest predecessor.
    fn chain(&self, b: &Block, preds: &[Vec<u32>], cache: &mut [Option<i64>], n: u32) -> i64 {
        let k = b.spans.iter().position(|&x| x == n).unwrap_or(0);
        if let Some(v) = cache[k] {
            return v;
        }
        let own = self.node(n);
        let mut distance = self.start(n) - b.start;
        let mut latest_pred_end = b.start;
        for &p in &preds[k] {
            distance = (self.start(n) - self.end(p)).min(distance).max(0);
            let saved = self.chain(b, preds, cache, p);
            latest_pred_end = latest_pred_end.max(self.end(p) - saved);
        }
        let new_end = latest_pred_end + distance + (self.g.duration(n) - own);
        let saved = (self.end(n) - new_end).max(0);
        cache[k] = Some(saved);
        saved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::critical::critical_path;
    use crate::critical::tests::graph;

    #[test]
    fn stopped_and_self_errors() {
        // CRISP case 11: A 0..100 calls B 30..60, which fails
        let g = graph(&[(0, 100, None), (30, 30, Some(0))]);
        let cp = critical_path(&g, Semantics::CRISP);
        let e = error_critical_path(&g, &cp, |n| n == 1);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].counts.to_array(), [0, 0, 1]);
        assert_eq!(e[1].counts.to_array(), [1, 0, 0]);
        assert_eq!((e[1].exclusive, e[0].inclusive), (30, 30));
        assert_eq!(time_saved_on_cp(&g, Semantics::CRISP, |n| n == 1), 30);
    }

    #[test]
    fn skewed_series_save_all_but_the_overlaps() {
        // CRISP case 19: three failing children in series, each overlapping the next by 5
        let g = graph(&[
            (0, 600, None),
            (10, 200, Some(0)),
            (205, 100, Some(0)),
            (300, 300, Some(0)),
        ]);
        assert_eq!(time_saved_on_cp(&g, Semantics::CRISP, |n| n > 0), 590);
        assert_eq!(time_saved_on_cp(&g, Semantics::CRISP, |_| false), 0);
        assert_eq!(time_saved_on_cp(&g, Semantics::CRISP, |n| n == 0), 600);
    }

    #[test]
    fn the_path_without_failures_is_shortened() {
        // CRISP case 13: A 0..100 > B 10..70 > {C 25..45, D 30..50 fails}
        let g = graph(&[
            (0, 100, None),
            (10, 60, Some(0)),
            (25, 20, Some(1)),
            (30, 20, Some(1)),
        ]);
        let failed = |n: u32| n == 3;
        assert_eq!(time_saved_on_cp(&g, Semantics::CRISP, failed), 5);
        let ok = no_error_critical_path(&g, Semantics::CRISP, failed);
        assert_eq!(ok, vec![(0, 40), (1, 35), (2, 20)]);
        // B did not fail and has no failing child on the path: only B stopped D's error
        let cp = critical_path(&g, Semantics::CRISP);
        let e = error_critical_path(&g, &cp, failed);
        let counts: Vec<(u32, [u32; 3])> =
            e.iter().map(|e| (e.node, e.counts.to_array())).collect();
        assert_eq!(counts, vec![(0, [0, 0, 0]), (1, [0, 0, 1]), (3, [1, 0, 0])]);
        // the root fails: nothing is left
        assert!(no_error_critical_path(&g, Semantics::CRISP, |n| n == 0).is_empty());
    }
}
