//! One stored request's calls and its exact critical path, from the plan.
//!
//! Computed when someone asks (admin), never on the request path.
//!
//! - **Per call**, from its attempt spans: started = the first attempt's start; first byte and
//!   ended = the winning attempt's (the last one that was not cancelled); ready = the latest end
//!   among the plan inputs that ran (for a call without inputs: the client's body wait, below;
//!   0 without one); queued = started − ready.
//! - **The path**: start at the awaited call that ended last (ties: the lower index), step to
//!   its binding input (the input whose end is its ready time; ties: the lower index) until a
//!   call without inputs. The plan says which call waited for which; timestamps only say which
//!   input came last, so two calls that merely happened to run back to back are never mistaken
//!   for a dependency.
//! - **Slack** (how much later a call could have ended without delaying the answer), by a
//!   backward pass: an awaited call has at most `last_end − end`; a call with dependents at
//!   most `min over dependents d of (ready(d) − end) + slack(d)`; a call nothing waits for has
//!   none (`None`). Path calls have 0.
//! - **Manifold's own time**: before the first path call, each path call's `started − ready`,
//!   and after the last one — less the **client's** share: `min(client_wait, before)` of the
//!   time before the first path call (`ServerOutcome::client_wait`, how long the gateway's body
//!   reader waited on the client). Why there: a composed route reads the whole request body
//!   before its first call starts, so a client trickling its upload made all of that wait look
//!   like the gateway's. A route without a plan (a proxy route) streams the body to its
//!   upstream during the call, so there the wait overlaps the call and is not carved out of
//!   anything: its numbers are as they were, client 0.
//! - **The accounting** is the analyzer's: a [`CpGraph`] whose root is the request and whose
//!   blocking children are exactly the path's calls (and the client's wait, from the request's
//!   start, when there was one), walked by [`critical_path`]. Path calls never overlap, but
//!   they may touch (a call starting the very instant its input ended, as on paused time);
//!   Jaeger's walk reads touching siblings as concurrent, so the store runs it with the
//!   smallest positive overlap allowance, which accepts a zero overlap and no other.
//!   Its sections are the waterfall's "who was waited for", and the root's exclusive time is
//!   Manifold's own — equal to the sum above, which the tests check. The client's wait ends
//!   before the first path call starts (it is capped by `before`), so it is one more sibling
//!   before them, touching at most.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use manifold_trace::{critical_path, CpGraph, Semantics};

use super::shape::PlanShape;
use crate::span::{CallRecord, FinishedTrace};

/// One call of a stored request.
#[derive(Debug, Clone)]
pub struct CallTiming {
    /// The call's index in the (effective) shape.
    pub index: usize,
    /// Its name.
    pub name: Arc<str>,
    /// When its last input ended; for a call without inputs, the client's body wait (0 for
    /// none): a composed route's calls start only once the body is read.
    pub ready: Duration,
    /// The first attempt's start.
    pub started: Duration,
    /// The winning attempt's first byte.
    pub first_byte: Option<Duration>,
    /// The winning attempt's end.
    pub ended: Duration,
    /// `started − ready`: Manifold's own delay before sending it.
    pub queued: Duration,
    /// Attempt spans recorded (retries and hedges included).
    pub attempts: u32,
    /// Index of the winning attempt in `FinishedTrace::calls`.
    pub winner: usize,
    /// Indexes of all its attempts in `FinishedTrace::calls`, in the order they ended.
    pub spans: Vec<usize>,
    /// On the critical path.
    pub on_path: bool,
    /// How much later it could have ended without delaying the answer (`None`: nothing waits).
    pub slack: Option<Duration>,
    /// Its time on the critical path (its duration when on the path, else 0).
    pub critical: Duration,
}

/// The time when no call on the path was running: Manifold's own, and the client's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnTime {
    /// Waiting on the client's request body, before the first path call: `min(client_wait,
    /// time before the first path call)`, 0 for a route without a plan (see the module's
    /// notes). Not Manifold's, so not in [`OwnTime::total`].
    pub client: Duration,
    /// Before the first path call started, less `client`.
    pub before: Duration,
    /// Between each path call's inputs being ready and its start, summed.
    pub between: Duration,
    /// After the last path call ended.
    pub after: Duration,
}

impl OwnTime {
    /// Manifold's own: all of it but the client's wait.
    pub fn total(&self) -> Duration {
        self.before + self.between + self.after
    }
}

/// Who the request waited for during one stretch of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stretch {
    /// The call (index into [`Analysis::calls`]), or `None` for Manifold itself or the client.
    pub call: Option<usize>,
    /// The client's request body (then `call` is `None`).
    pub client: bool,
    /// Start, from the request's start.
    pub start: Duration,
    /// End.
    pub end: Duration,
}

/// A stored request, explained.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    /// The calls that ran, in plan order.
    pub calls: Vec<CallTiming>,
    /// The critical path: indexes into `calls`, first to last.
    pub path: Vec<usize>,
    /// Manifold's own time, by the plan.
    pub own: OwnTime,
    /// Manifold's own time as the critical-path walk accounted it (equals `own.total()`).
    pub own_critical: Duration,
    /// The client's wait as the walk accounted it (equals `own.client`).
    pub client_critical: Duration,
    /// The walk's sections: the waterfall's answer to "what was being waited for".
    pub sections: Vec<Stretch>,
}

fn ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn from_ns(v: i64) -> Duration {
    Duration::from_nanos(u64::try_from(v).unwrap_or(0))
}

/// Explain `trace` with its route's `shape` (`None`: no plan, as for a proxy route).
pub fn analyze(trace: &FinishedTrace, shape: Option<&PlanShape>) -> Analysis {
    // Only a plan reads the body before its calls (see the module's notes).
    let planned = shape.is_some();
    let shape = effective_shape(&trace.calls, shape);
    let n = shape.len();
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (r, rec) in trace.calls.iter().enumerate() {
        if let Some(i) = shape.index(&rec.info.call) {
            groups[i].push(r);
        }
    }
    // Per call: (started, ended) for the calls that ran.
    let mut ran: Vec<Option<(Duration, Duration, usize)>> = vec![None; n];
    for (i, g) in groups.iter().enumerate() {
        let Some(started) = g.iter().map(|&r| trace.calls[r].start).min() else {
            continue;
        };
        let winner = g
            .iter()
            .rev()
            .copied()
            .find(|&r| !trace.calls[r].outcome.cancelled)
            .or_else(|| g.last().copied());
        if let Some(w) = winner {
            ran[i] = Some((started, trace.calls[w].end.max(started), w));
        }
    }
    let end_of = |i: usize| ran[i].map(|r| r.1);
    let mut ready: Vec<Duration> = (0..n)
        .map(|i| {
            shape
                .deps(i)
                .iter()
                .filter_map(|&d| end_of(d as usize))
                .max()
                .unwrap_or(Duration::ZERO)
        })
        .collect();

    // The path, from the awaited call that ended last back through binding inputs.
    let mut path_rev: Vec<usize> = Vec::new();
    let last = (0..n)
        .filter(|&i| shape.awaited(i))
        .filter_map(|i| end_of(i).map(|e| (e, i)))
        .fold(None, |best: Option<(Duration, usize)>, (e, i)| match best {
            Some((be, _)) if be >= e => best,
            _ => Some((e, i)),
        });
    let mut cur = last.map(|(_, i)| i);
    while let Some(c) = cur {
        path_rev.push(c);
        cur = shape
            .deps(c)
            .iter()
            .filter_map(|&d| end_of(d as usize).map(|e| (e, d as usize)))
            .filter(|&(e, _)| e == ready[c])
            .map(|(_, d)| d)
            .min();
        if path_rev.len() > n {
            break; // unreachable with an acyclic shape; a guard, not a rule
        }
    }
    let mut on_path = vec![false; n];
    for &c in &path_rev {
        on_path[c] = true;
    }

    // Slack, dependents first.
    let last_end = last.map_or(Duration::ZERO, |(e, _)| e);
    let mut slack: Vec<Option<Duration>> = vec![None; n];
    for &i in shape.order().iter().rev() {
        let i = i as usize;
        let Some(end) = end_of(i) else { continue };
        let mut s = shape.awaited(i).then(|| last_end.saturating_sub(end));
        for &d in shape.dependents(i) {
            let d = d as usize;
            if let (Some(_), Some(sd)) = (end_of(d), slack[d]) {
                let via = ready[d].saturating_sub(end) + sd;
                s = Some(s.map_or(via, |s| s.min(via)));
            }
        }
        slack[i] = if on_path[i] { Some(Duration::ZERO) } else { s };
    }

    // Manifold's own time, by the plan; the client's wait first, capped by the time before
    // the first path call (all of the request when no call ran).
    let path: Vec<usize> = path_rev.iter().rev().copied().collect();
    let mut own = OwnTime::default();
    let before = path
        .first()
        .map_or(trace.duration, |&c| ran[c].map_or(Duration::ZERO, |r| r.0));
    if planned {
        own.client = trace.outcome.client_wait.min(before);
        // A call without inputs was ready once the body was read, not at the request's start.
        for (i, r) in ready.iter_mut().enumerate() {
            if shape.deps(i).is_empty() {
                *r = own.client;
            }
        }
    }
    own.before = before - own.client;
    if let Some(&last) = path.last() {
        own.between = path[1..]
            .iter()
            .map(|&c| ran[c].map_or(Duration::ZERO, |r| r.0.saturating_sub(ready[c])))
            .sum();
        own.after = trace
            .duration
            .saturating_sub(end_of(last).unwrap_or(Duration::ZERO));
    }

    // The accounting, by the analyzer's walk over the client's wait and the path's calls.
    let mut start = vec![0i64];
    let mut end = vec![ns(trace.duration)];
    let mut node_call = vec![Node::Request];
    if own.client > Duration::ZERO {
        start.push(0);
        end.push(ns(own.client));
        node_call.push(Node::Client);
    }
    for &c in &path {
        if let Some((s, e, _)) = ran[c] {
            if e > s {
                start.push(ns(s));
                end.push(ns(e));
                node_call.push(Node::Call(c));
            }
        }
    }
    let mut children = vec![Vec::new(); node_call.len()];
    children[0] = (1..node_call.len() as u32).collect();
    let graph = CpGraph::new(0, start, end, children);
    let cp = critical_path(
        &graph,
        Semantics {
            overlap_allowance: f64::MIN_POSITIVE,
        },
    );
    let mut critical = vec![Duration::ZERO; n];
    let (mut own_critical, mut client_critical) = (Duration::ZERO, Duration::ZERO);
    for node in &cp.nodes {
        let exclusive = from_ns(node.exclusive);
        match node_call[node.node as usize] {
            Node::Request => own_critical = exclusive,
            Node::Client => client_critical = exclusive,
            Node::Call(c) => critical[c] = exclusive,
        }
    }

    let mut calls = Vec::new();
    let mut position = vec![usize::MAX; n];
    for i in 0..n {
        let Some((started, ended, winner)) = ran[i] else {
            continue;
        };
        position[i] = calls.len();
        let w: &CallRecord = &trace.calls[winner];
        calls.push(CallTiming {
            index: i,
            name: Arc::clone(shape.name(i)),
            ready: ready[i],
            started,
            first_byte: w.first_byte,
            ended,
            queued: started.saturating_sub(ready[i]),
            attempts: groups[i].len() as u32,
            winner,
            spans: groups[i].clone(),
            on_path: on_path[i],
            slack: slack[i],
            critical: critical[i],
        });
    }
    let sections = cp
        .sections
        .iter()
        .map(|s| {
            let who = node_call[s.node as usize];
            Stretch {
                call: match who {
                    Node::Call(c) => Some(position[c]),
                    Node::Request | Node::Client => None,
                },
                client: who == Node::Client,
                start: from_ns(s.start),
                end: from_ns(s.end),
            }
        })
        .collect();
    Analysis {
        calls,
        path: path.iter().map(|&c| position[c]).collect(),
        own,
        own_critical,
        client_critical,
        sections,
    }
}

/// What a node of the walk's graph stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    /// The request itself: its exclusive time is Manifold's own.
    Request,
    /// The client's body wait.
    Client,
    /// A path call (its index in the shape).
    Call(usize),
}

/// The route's shape, plus any call the spans name that it does not know; without a shape,
/// every call name is an independent call.
fn effective_shape<'a>(records: &[CallRecord], shape: Option<&'a PlanShape>) -> Cow<'a, PlanShape> {
    let mut unknown: Vec<Arc<str>> = Vec::new();
    for r in records {
        let known = shape.is_some_and(|s| s.index(&r.info.call).is_some());
        if !known && !unknown.iter().any(|u| **u == *r.info.call) {
            unknown.push(Arc::clone(&r.info.call));
        }
    }
    match shape {
        Some(s) if unknown.is_empty() => Cow::Borrowed(s),
        Some(s) => Cow::Owned(s.with_extra(&unknown)),
        None => Cow::Owned(PlanShape::independent(unknown)),
    }
}
