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

mod node;
mod simulator;
#[cfg(test)]
mod tests;

pub(crate) use node::union_len;
pub use simulator::{simulate, simulate_root, SimBuffers, Simulator};

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
