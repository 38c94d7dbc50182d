//! The tracer: sampling options and where finished requests go. One per gateway, cloned cheaply.

use std::sync::Arc;
use std::time::Duration;

use crate::error::TelemetryError;
use crate::otlp::ExportHandle;
use crate::propagate::Incoming;
use crate::sample::{Sampler, TailRule};
use crate::span::{FinishedTrace, RequestTrace, RootInfo};
use crate::stats::{DropReason, SpanStats};

/// The most spans one request may record by default. A plan bounds its calls and the retry and
/// hedge policies bound attempts, so this only guards memory against a bug or an absurd config.
pub const DEFAULT_MAX_SPANS_PER_TRACE: usize = 1024;

/// Tracing options (the `[telemetry]` section, converted by the gateway).
#[derive(Clone, Debug)]
pub struct TracingOptions {
    /// `sample_ratio`: the share of new traces sampled at the head, `0.0..=1.0`.
    pub sample_ratio: f64,
    /// `keep_slower_than`: the tail rule keeps every request at least this slow.
    pub keep_slower_than: Option<Duration>,
    /// The per-request span cap (spans past it are dropped and counted).
    pub max_spans_per_trace: usize,
}

impl Default for TracingOptions {
    fn default() -> Self {
        TracingOptions {
            sample_ratio: 1.0,
            keep_slower_than: None,
            max_spans_per_trace: DEFAULT_MAX_SPANS_PER_TRACE,
        }
    }
}

/// Starts request traces and routes finished ones to the exporter.
#[derive(Clone, Debug)]
pub struct Tracer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    sampler: Sampler,
    tail: TailRule,
    max_spans: usize,
    sink: Option<ExportHandle>,
    stats: Arc<SpanStats>,
}

impl Tracer {
    /// A tracer exporting kept traces to `sink` (none: recorded for the trace store only).
    /// `stats` is shared with the exporter and the metrics (`SpanStats::default()` to start).
    pub fn new(
        options: &TracingOptions,
        sink: Option<ExportHandle>,
        stats: Arc<SpanStats>,
    ) -> Result<Tracer, TelemetryError> {
        if options.max_spans_per_trace < 2 || options.max_spans_per_trace > 1 << 20 {
            return Err(TelemetryError::Option {
                name: "max_spans_per_trace",
                value: options.max_spans_per_trace.to_string(),
                reason: "must be from 2 to 1048576",
            });
        }
        Ok(Tracer {
            inner: Arc::new(Inner {
                sampler: Sampler::new(options.sample_ratio)?,
                tail: TailRule {
                    keep_slower_than: options.keep_slower_than,
                },
                max_spans: options.max_spans_per_trace,
                sink,
                stats,
            }),
        })
    }

    /// Start recording a request (SERVER root) or a delivery (CONSUMER root, `incoming.parent`
    /// being the `traceparent` stored with the task at enqueue).
    pub fn start(&self, incoming: Incoming, root: RootInfo) -> RequestTrace {
        RequestTrace::new(self.clone(), incoming, root, 0, tokio::time::Instant::now())
    }

    /// [`Tracer::start`] with room for `calls` call spans (a route's known number of calls):
    /// the spans are pushed into one vector as they end, which otherwise grows (and is
    /// reallocated) on the first and the fifth. `start`: when the request started, as its
    /// caller already read it (the clock is read once per request where it can be).
    pub fn start_with_calls(
        &self,
        incoming: Incoming,
        root: RootInfo,
        calls: usize,
        start: tokio::time::Instant,
    ) -> RequestTrace {
        RequestTrace::new(self.clone(), incoming, root, calls, start)
    }

    /// The span counters.
    pub fn stats(&self) -> &Arc<SpanStats> {
        &self.inner.stats
    }

    pub(crate) fn sampler(&self) -> &Sampler {
        &self.inner.sampler
    }

    pub(crate) fn tail(&self) -> &TailRule {
        &self.inner.tail
    }

    pub(crate) fn max_spans(&self) -> usize {
        self.inner.max_spans
    }

    /// Hand a finished trace to the exporter if the tail rule kept it; never waits.
    pub(crate) fn submit(&self, trace: &Arc<FinishedTrace>) {
        let by_tail = trace.kept && !trace.sampled;
        self.inner.stats.trace_decided(trace.kept, by_tail);
        if !trace.kept {
            return;
        }
        if let Some(sink) = &self.inner.sink {
            if !sink.offer(Arc::clone(trace)) {
                self.inner
                    .stats
                    .dropped(DropReason::QueueFull, trace.span_count() as u64);
            }
        }
    }
}
