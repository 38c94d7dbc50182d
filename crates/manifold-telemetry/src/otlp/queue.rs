//! The export queue between the request path and the exporter's task.
//!
//! Why not a channel: a tokio `mpsc` wakes its receiver on every send, so each finished request
//! scheduled the exporter's task once (and often unparked a sleeping worker thread for it), only
//! for the task to add one trace to its batch and go back to sleep. Here the request path pushes
//! under a short lock and wakes the exporter only twice per batch: when the queue goes from empty
//! to not empty (the batch's flush timer starts) and when it reaches a full batch. The bound is
//! the same: at most `capacity` traces wait, past it [`ExportQueue::offer`] refuses.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use crate::span::FinishedTrace;

/// Traces waiting for export, bounded.
#[derive(Debug)]
pub(crate) struct ExportQueue {
    pending: Mutex<Pending>,
    wake: Notify,
    capacity: usize,
    batch_spans: usize,
}

#[derive(Debug, Default)]
struct Pending {
    traces: Vec<Arc<FinishedTrace>>,
    spans: usize,
    /// No more offers are taken (the exporter is stopping).
    closed: bool,
    /// Every producer handle is gone: the exporter sends what waits and ends.
    orphaned: bool,
}

impl ExportQueue {
    pub(crate) fn new(capacity: usize, batch_spans: usize) -> ExportQueue {
        ExportQueue {
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            capacity,
            batch_spans,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queue a trace; `false` (nothing queued) when `capacity` traces wait already or the
    /// exporter has stopped. Never waits beyond the short lock.
    pub(crate) fn offer(&self, trace: Arc<FinishedTrace>) -> bool {
        let spans = trace.span_count();
        let wake = {
            let mut p = self.lock();
            if p.closed || p.traces.len() >= self.capacity {
                return false;
            }
            let was_empty = p.traces.is_empty();
            let was_short = p.spans < self.batch_spans;
            p.traces.push(trace);
            p.spans += spans;
            was_empty || (was_short && p.spans >= self.batch_spans)
        };
        if wake {
            self.wake.notify_one();
        }
        true
    }

    /// Wait until the queue has something (or was woken to look).
    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Whether a full batch waits.
    pub(crate) fn batch_ready(&self) -> bool {
        self.lock().spans >= self.batch_spans
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().traces.is_empty()
    }

    /// Take up to one batch (`batch_spans` spans, at least one trace) into `into`; its spans.
    pub(crate) fn take_batch(&self, into: &mut Vec<Arc<FinishedTrace>>) -> usize {
        let mut p = self.lock();
        let mut spans = 0;
        let mut n = 0;
        for t in &p.traces {
            if n > 0 && spans + t.span_count() > self.batch_spans {
                break;
            }
            spans += t.span_count();
            n += 1;
        }
        into.extend(p.traces.drain(..n));
        p.spans -= spans;
        spans
    }

    /// Refuse every later offer (the exporter is stopping).
    pub(crate) fn close(&self) {
        self.lock().closed = true;
    }

    /// Whether every producer handle is gone.
    pub(crate) fn orphaned(&self) -> bool {
        self.lock().orphaned
    }
}

/// The producers' side: when the last clone of the exporter's handle goes, the exporter is
/// told (as a channel's receiver learns that every sender is gone), so it does not wait forever.
#[derive(Debug)]
pub(crate) struct Producers(pub(crate) Arc<ExportQueue>);

impl Drop for Producers {
    fn drop(&mut self) {
        self.0.lock().orphaned = true;
        self.0.wake.notify_one();
    }
}
