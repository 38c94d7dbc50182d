//! Counters of what happened to spans: exported, and dropped by reason. Shared by the tracer, the
//! exporter and the metrics renderer (`manifold_telemetry_spans_*_total`).

use std::sync::atomic::{AtomicU64, Ordering};

/// Why spans were dropped; each is a `reason` label value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The export queue was full (collector slow or down): the request did not wait.
    QueueFull,
    /// The collector refused the batch, timed out, or could not be reached.
    ExportFailed,
    /// A request had more spans than the per-trace cap.
    TraceTooLarge,
    /// A call span ended after its request had ended (a detached hedge, a late cancel).
    Late,
}

impl DropReason {
    /// Every reason, in rendering order.
    pub const ALL: [DropReason; 4] = [
        DropReason::QueueFull,
        DropReason::ExportFailed,
        DropReason::TraceTooLarge,
        DropReason::Late,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::ExportFailed => "export_failed",
            DropReason::TraceTooLarge => "trace_too_large",
            DropReason::Late => "late",
        }
    }
}

/// Span counters; all relaxed atomics (they are statistics, not synchronisation).
#[derive(Debug, Default)]
pub struct SpanStats {
    exported: AtomicU64,
    dropped: [AtomicU64; 4],
    traces_kept: AtomicU64,
    traces_kept_by_tail: AtomicU64,
    traces_sampled_out: AtomicU64,
}

impl SpanStats {
    pub(crate) fn exported(&self, spans: u64) {
        self.exported.fetch_add(spans, Ordering::Relaxed);
    }

    pub(crate) fn dropped(&self, reason: DropReason, spans: u64) {
        self.dropped[reason as usize].fetch_add(spans, Ordering::Relaxed);
    }

    pub(crate) fn trace_decided(&self, kept: bool, by_tail: bool) {
        let counter = match (kept, by_tail) {
            (false, _) => &self.traces_sampled_out,
            (true, false) => &self.traces_kept,
            (true, true) => &self.traces_kept_by_tail,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Spans the collector accepted.
    pub fn exported_total(&self) -> u64 {
        self.exported.load(Ordering::Relaxed)
    }

    /// Spans dropped for one reason.
    pub fn dropped_total(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].load(Ordering::Relaxed)
    }

    /// Traces kept by the head decision (sampled by ratio or by the parent).
    pub fn traces_kept_total(&self) -> u64 {
        self.traces_kept.load(Ordering::Relaxed)
    }

    /// Traces the head decision dropped and the tail rule kept (an error, or slow).
    pub fn traces_kept_by_tail_total(&self) -> u64 {
        self.traces_kept_by_tail.load(Ordering::Relaxed)
    }

    /// Traces not exported (not sampled, not an error, not slow).
    pub fn traces_sampled_out_total(&self) -> u64 {
        self.traces_sampled_out.load(Ordering::Relaxed)
    }
}
