//! Which endpoint an attempt goes to. Round robin today; the balancer is an enum so that
//! power-of-two-choices over peak-EWMA (issue 13, item 2) is one more variant, picked from the
//! upstream's `balance` key, with no change to the stack or its callers.

use std::sync::atomic::{AtomicUsize, Ordering};

/// An upstream's balancer over its `n` endpoints (by index into the stack's targets).
#[derive(Debug)]
pub(super) enum Balancer {
    /// Each endpoint in turn.
    RoundRobin(RoundRobin),
}

impl Balancer {
    /// The balancer an upstream gets today: round robin.
    pub(super) fn new(n: usize) -> Self {
        Balancer::RoundRobin(RoundRobin::new(n))
    }

    /// The index of the endpoint the next attempt goes to; `None` when there is none.
    pub(super) fn pick(&self) -> Option<usize> {
        match self {
            Balancer::RoundRobin(rr) => rr.pick(),
        }
    }
}

/// Each endpoint in turn, shared by every request without a lock.
#[derive(Debug)]
pub(super) struct RoundRobin {
    next: AtomicUsize,
    n: usize,
}

impl RoundRobin {
    pub(super) fn new(n: usize) -> Self {
        RoundRobin {
            next: AtomicUsize::new(0),
            n,
        }
    }

    fn pick(&self) -> Option<usize> {
        if self.n == 0 {
            return None;
        }
        // Wrapping on overflow only restarts the cycle.
        Some(self.next.fetch_add(1, Ordering::Relaxed) % self.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_takes_each_endpoint_in_turn() {
        let b = Balancer::new(3);
        let picks: Vec<_> = (0..7).filter_map(|_| b.pick()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(Balancer::new(0).pick(), None);
    }
}
