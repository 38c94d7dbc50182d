//! A route's plan as the trace store needs it: call names and who waits for whom.
//!
//! The gateway converts `manifold_config::Plan` into this when it compiles a route (this crate
//! does not depend on the config crate). It is checked here once — indexes in range, no cycle —
//! so reading a stored request never has to doubt it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::TelemetryError;

/// The most calls a shape may have (a plan is far smaller; this guards the `u32` indexes).
const MAX_CALLS: usize = 4096;

/// A route's calls and their dependencies, numbered as in the plan.
#[derive(Debug, Clone)]
pub struct PlanShape {
    calls: Vec<Arc<str>>,
    deps: Vec<Vec<u32>>,
    dependents: Vec<Vec<u32>>,
    awaited: Vec<bool>,
    /// Dependencies before dependents.
    order: Vec<u32>,
    by_name: HashMap<Arc<str>, u32>,
}

impl PlanShape {
    /// `calls[i]` is call `i`'s name (what its spans carry as `manifold.call`); `deps[i]` the
    /// calls it waits for; `answer_waits_for` the calls the answer waits for (the gateway's
    /// executor waits for every call, so it passes them all).
    pub fn new(
        calls: Vec<Arc<str>>,
        deps: Vec<Vec<u32>>,
        answer_waits_for: Vec<u32>,
    ) -> Result<PlanShape, TelemetryError> {
        let n = calls.len();
        let bad = |reason: &'static str, value: String| TelemetryError::Option {
            name: "plan shape",
            value,
            reason,
        };
        if n > MAX_CALLS {
            return Err(bad("more than 4096 calls", n.to_string()));
        }
        if deps.len() != n {
            return Err(bad(
                "needs one dependency list per call",
                format!("{} lists for {n} calls", deps.len()),
            ));
        }
        let mut by_name = HashMap::with_capacity(n);
        for (i, c) in calls.iter().enumerate() {
            if by_name.insert(Arc::clone(c), i as u32).is_some() {
                return Err(bad("call names must be unique", c.to_string()));
            }
        }
        let mut dependents = vec![Vec::new(); n];
        let mut indegree = vec![0u32; n];
        for (i, list) in deps.iter().enumerate() {
            for &d in list {
                if d as usize >= n || d as usize == i {
                    return Err(bad(
                        "a dependency names no other call",
                        format!("call {i} waits for {d}"),
                    ));
                }
                dependents[d as usize].push(i as u32);
                indegree[i] += 1;
            }
        }
        let mut awaited = vec![false; n];
        for &a in &answer_waits_for {
            *awaited.get_mut(a as usize).ok_or_else(|| {
                bad(
                    "the answer waits for a call that does not exist",
                    a.to_string(),
                )
            })? = true;
        }
        // Kahn's order; a cycle leaves calls out.
        let mut order: Vec<u32> = (0..n as u32)
            .filter(|&i| indegree[i as usize] == 0)
            .collect();
        let mut k = 0;
        while k < order.len() {
            let c = order[k] as usize;
            k += 1;
            for &d in &dependents[c] {
                indegree[d as usize] -= 1;
                if indegree[d as usize] == 0 {
                    order.push(d);
                }
            }
        }
        if order.len() != n {
            return Err(bad("the dependencies have a cycle", format!("{n} calls")));
        }
        Ok(PlanShape {
            calls,
            deps,
            dependents,
            awaited,
            order,
            by_name,
        })
    }

    /// A shape for spans with no plan (a proxy route): every distinct call name is a call of
    /// its own that the answer waits for.
    pub(crate) fn independent(names: Vec<Arc<str>>) -> PlanShape {
        let n = names.len();
        let by_name = names
            .iter()
            .enumerate()
            .map(|(i, c)| (Arc::clone(c), i as u32))
            .collect();
        PlanShape {
            calls: names,
            deps: vec![Vec::new(); n],
            dependents: vec![Vec::new(); n],
            awaited: vec![true; n],
            order: (0..n as u32).collect(),
            by_name,
        }
    }

    /// This shape plus calls it does not know (a span naming no call of the plan): each is
    /// independent and nothing waits for it.
    pub(crate) fn with_extra(&self, extra: &[Arc<str>]) -> PlanShape {
        let mut s = self.clone();
        for name in extra {
            let i = s.calls.len() as u32;
            s.calls.push(Arc::clone(name));
            s.deps.push(Vec::new());
            s.dependents.push(Vec::new());
            s.awaited.push(false);
            s.order.push(i);
            s.by_name.insert(Arc::clone(name), i);
        }
        s
    }

    /// Number of calls.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// True for a plan without calls.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Call `i`'s name.
    pub fn name(&self, i: usize) -> &Arc<str> {
        &self.calls[i]
    }

    /// The index of the call with this name.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).map(|&i| i as usize)
    }

    pub(crate) fn deps(&self, i: usize) -> &[u32] {
        &self.deps[i]
    }

    pub(crate) fn dependents(&self, i: usize) -> &[u32] {
        &self.dependents[i]
    }

    pub(crate) fn awaited(&self, i: usize) -> bool {
        self.awaited[i]
    }

    pub(crate) fn order(&self) -> &[u32] {
        &self.order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<Arc<str>> {
        n.iter().map(|s| Arc::from(*s)).collect()
    }

    #[test]
    fn refuses_what_no_plan_can_be() {
        assert!(PlanShape::new(names(&["a", "b"]), vec![vec![1], vec![0]], vec![0, 1]).is_err());
        assert!(PlanShape::new(names(&["a"]), vec![vec![0]], vec![0]).is_err());
        assert!(PlanShape::new(names(&["a"]), vec![vec![7]], vec![0]).is_err());
        assert!(PlanShape::new(names(&["a"]), vec![], vec![0]).is_err());
        assert!(PlanShape::new(names(&["a"]), vec![vec![]], vec![3]).is_err());
        assert!(PlanShape::new(names(&["a", "a"]), vec![vec![], vec![]], vec![]).is_err());
        let s = PlanShape::new(
            names(&["a", "b", "c"]),
            vec![vec![2], vec![], vec![1]],
            vec![0],
        )
        .expect("a chain declared backwards");
        assert_eq!(s.order(), &[1, 2, 0]);
    }
}
