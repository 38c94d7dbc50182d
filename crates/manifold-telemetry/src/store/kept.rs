//! What one route keeps: the last N requests (a ring), the slowest N (a min-heap on duration),
//! and the failed requests of the last `errors_for` (a time-ordered deque, also capped), with
//! one index by trace id. A request held by several of them is stored once; it leaves with the
//! last one holding it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::context::TraceId;
use crate::span::FinishedTrace;

/// The bounds of one route's store (checked by [`super::TraceStore::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The last N requests.
    pub recent: usize,
    /// The N slowest requests since start.
    pub slowest: usize,
    /// Failed requests are kept this long …
    pub errors_for: Duration,
    /// … and at most this many.
    pub max_errors: usize,
}

#[derive(Debug)]
struct Held {
    trace: Arc<FinishedTrace>,
    /// How many of the three containers hold it (1 to 3).
    holders: u8,
}

/// One route's requests. Not synchronised: the store keeps it behind the route's mutex.
#[derive(Debug, Default)]
pub(crate) struct Kept {
    held: HashMap<u64, Held>,
    /// The latest held request of each trace id (a client may reuse its trace id across
    /// requests; the others are still found by a scan).
    by_id: HashMap<TraceId, u64>,
    recent: VecDeque<u64>,
    slowest: BinaryHeap<Reverse<(Duration, u64)>>,
    errors: VecDeque<(Instant, u64)>,
}

impl Kept {
    /// Keep `trace` (numbered `seq`, increasing) where the bounds say. A few pushes and pops,
    /// no allocation beyond the containers' amortised growth to their bounds.
    pub(crate) fn record(&mut self, b: &Bounds, seq: u64, trace: Arc<FinishedTrace>, now: Instant) {
        let mut holders = 0u8;
        if b.recent > 0 {
            self.recent.push_back(seq);
            holders += 1;
            while self.recent.len() > b.recent {
                if let Some(old) = self.recent.pop_front() {
                    self.release(old);
                }
            }
        }
        if b.slowest > 0 {
            let d = trace.duration;
            if self.slowest.len() < b.slowest {
                self.slowest.push(Reverse((d, seq)));
                holders += 1;
            } else if self
                .slowest
                .peek()
                .is_some_and(|Reverse((min, _))| d > *min)
            {
                if let Some(Reverse((_, old))) = self.slowest.pop() {
                    self.release(old);
                }
                self.slowest.push(Reverse((d, seq)));
                holders += 1;
            }
        }
        self.expire(b, now);
        if b.max_errors > 0 && trace.failed() {
            self.errors.push_back((now, seq));
            holders += 1;
            while self.errors.len() > b.max_errors {
                if let Some((_, old)) = self.errors.pop_front() {
                    self.release(old);
                }
            }
        }
        if holders > 0 {
            self.by_id.insert(trace.trace_id, seq);
            self.held.insert(seq, Held { trace, holders });
        }
    }

    /// Let failed requests older than `errors_for` go.
    pub(crate) fn expire(&mut self, b: &Bounds, now: Instant) {
        while let Some(&(at, seq)) = self.errors.front() {
            if now.saturating_duration_since(at) < b.errors_for {
                break;
            }
            self.errors.pop_front();
            self.release(seq);
        }
    }

    fn release(&mut self, seq: u64) {
        let Some(h) = self.held.get_mut(&seq) else {
            return;
        };
        h.holders = h.holders.saturating_sub(1);
        if h.holders == 0 {
            if let Some(h) = self.held.remove(&seq) {
                if self.by_id.get(&h.trace.trace_id) == Some(&seq) {
                    self.by_id.remove(&h.trace.trace_id);
                }
            }
        }
    }

    /// Every request held, with its number.
    pub(crate) fn all(&self) -> impl Iterator<Item = (u64, &Arc<FinishedTrace>)> {
        self.held.iter().map(|(&seq, h)| (seq, &h.trace))
    }

    /// The latest held request of trace `id`.
    pub(crate) fn find(&self, id: &TraceId) -> Option<(u64, &Arc<FinishedTrace>)> {
        if let Some(seq) = self.by_id.get(id) {
            if let Some(h) = self.held.get(seq) {
                return Some((*seq, &h.trace));
            }
        }
        self.all()
            .filter(|(_, t)| t.trace_id == *id)
            .max_by_key(|(seq, _)| *seq)
    }

    /// Requests held (each once).
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    /// The sizes of the ring, the slowest heap and the error deque.
    #[cfg(test)]
    pub(crate) fn sizes(&self) -> (usize, usize, usize) {
        (self.recent.len(), self.slowest.len(), self.errors.len())
    }
}
