//! The span model of one request: a root span (SERVER for a request, CONSUMER for a background
//! delivery) and one span per call attempt, recorded as plain typed fields.
//!
//! Why not the OpenTelemetry SDK: a request here is a known shape (one root, a bounded number of
//! calls), so recording is a few `Instant::now()` reads and a push into a per-request vector;
//! attribute *names* and the protobuf are produced off the request path, in the exporter's task.
//! The SDK would build a key-value vector per span on the request path, take a lock in its span
//! processor per span and need a tracing-subscriber layer between us and it.
//!
//! Times are tokio's clock (so tests run on paused time) as offsets from the request's start; the
//! wall clock is read once per request, for the epoch the exporter adds the offsets to.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method};
use tokio::time::Instant;

use crate::context::{traceparent_bytes, SpanId, TraceId};
use crate::propagate::{new_span_id, new_trace_id, Incoming};
use crate::request_id::RequestId;
use crate::stats::DropReason;
use crate::tracer::Tracer;
use crate::url_path::UrlPath;

/// What the root span stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootKind {
    /// A request from a client (SERVER span).
    Server,
    /// A background delivery of an offloaded task (CONSUMER span, the child of the PRODUCER span
    /// that enqueued it, so it joins the request's trace).
    Consumer,
}

/// What is known about the request when it starts.
#[derive(Clone, Debug)]
pub struct RootInfo {
    /// SERVER or CONSUMER.
    pub kind: RootKind,
    /// `http.request.method`.
    pub method: Method,
    /// `http.route`: the route's pattern (low cardinality), or the queue for a delivery.
    pub route: Arc<str>,
    /// `url.path`: the path as received (a copy: see [`UrlPath::copied`]).
    pub path: UrlPath,
}

/// The longest request method telemetry records as sent (every standard one and any
/// plausible extension fits).
pub const METHOD_MAX: usize = 32;

/// What telemetry records of a client's method (the SERVER span's name and
/// `http.request.method`, the access log): the method as sent, or `_OTHER` (the semantic
/// conventions' name for a method the instrumentation does not know) when it is longer than
/// [`METHOD_MAX`]. Why: a request no route takes may carry any token as its method, as long as
/// the request head may be (hundreds of KB), and it was recorded whole in its span and log line.
pub fn recorded_method(method: &Method) -> Method {
    if method.as_str().len() <= METHOD_MAX {
        return method.clone();
    }
    // A valid token, so never the default.
    Method::from_bytes(b"_OTHER").unwrap_or_default()
}

/// How the request ended.
#[derive(Clone, Debug, Default)]
pub struct ServerOutcome {
    /// `http.response.status_code`.
    pub status: u16,
    /// Bytes of the response body (`http.response.body.size`).
    pub response_bytes: u64,
    /// Optional calls that failed while the request still answered (a partial answer).
    pub partial: Vec<Arc<str>>,
    /// `error.type` for a 5xx (`deadline`, `upstream`, …); the status code is used when `None`.
    pub error_type: Option<Cow<'static, str>>,
    /// How long the gateway waited on the client's request body (the time from its reader
    /// finding nothing yet to the next part arriving, summed; zero for a request without a
    /// body or one whose body came with its head). Why recorded: a composed route reads the
    /// whole body before any call, so a client trickling its upload made that time look like
    /// the gateway's own in the trace store ([`crate::store::OwnTime`]).
    pub client_wait: Duration,
}

impl ServerOutcome {
    /// SERVER spans are errors on 5xx only (a 4xx is the client's fault, per the conventions).
    pub fn is_error(&self) -> bool {
        self.status >= 500
    }
}

/// Why this attempt was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttemptKind {
    /// The first attempt.
    #[default]
    First,
    /// A retry after a failed attempt.
    Retry,
    /// A hedge sent while an earlier attempt was still running.
    Hedge,
}

impl AttemptKind {
    /// The `manifold.attempt.kind` value.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptKind::First => "first",
            AttemptKind::Retry => "retry",
            AttemptKind::Hedge => "hedge",
        }
    }
}

/// Where a call's answer came from, when it went through the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// The in-process tier.
    L1,
    /// The shared tier (Redis).
    L2,
    /// Not cached: this attempt filled it.
    Miss,
    /// Waited on another request's fill of the same key.
    Coalesced,
    /// Served stale while revalidating.
    Stale,
}

impl CacheOutcome {
    /// The `manifold.cache.outcome` value (and the `tier` label of the cache metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::L1 => "l1",
            CacheOutcome::L2 => "l2",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Coalesced => "coalesced",
            CacheOutcome::Stale => "stale",
        }
    }
}

/// The endpoint an attempt went to (`server.address`, `server.port`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or IP literal.
    pub address: Arc<str>,
    /// Port (the scheme's default when the URL has none).
    pub port: u16,
    /// `https` rather than `http` (for `url.full`).
    pub https: bool,
}

/// What is known about a call attempt when it starts.
#[derive(Clone, Debug)]
pub struct CallInfo {
    /// The call's name in the route (`manifold.call`; the span's name).
    pub call: Arc<str>,
    /// `[upstreams.NAME]` (`manifold.upstream`).
    pub upstream: Arc<str>,
    /// `http.request.method`.
    pub method: Method,
    /// `url.path` as sent (shared with the request when it can be: no copy per attempt).
    pub path: UrlPath,
    /// The endpoint, for an attempt that goes out (CLIENT span); `None` for an answer from the
    /// cache or a coalesced wait (INTERNAL span) or an enqueue (PRODUCER span).
    pub endpoint: Option<Endpoint>,
    /// 1 for the first attempt (`manifold.attempt`; `http.request.resend_count` is this − 1).
    pub attempt: u32,
    /// First, retry or hedge.
    pub attempt_kind: AttemptKind,
    /// The call is handed to the queue (PRODUCER span; `manifold.queue.enqueue`).
    pub enqueue: bool,
}

/// How a call attempt ended.
#[derive(Clone, Debug, Default)]
pub struct CallOutcome {
    /// The upstream's status, when it answered.
    pub status: Option<u16>,
    /// `error.type`: the classified failure (`timeout`, `connect`, `reset`, …) when there was no
    /// answer; the status code is used for an error status when `None`.
    pub error_type: Option<Cow<'static, str>>,
    /// Where the answer came from, when the call is cached.
    pub cache: Option<CacheOutcome>,
    /// Response body bytes, when known.
    pub response_bytes: Option<u64>,
    /// Dropped before it ended (a hedge that lost, a request that gave up).
    pub cancelled: bool,
}

impl CallOutcome {
    /// A failure for the tail rule: a 5xx or no answer at all (cancelled attempts are not).
    pub fn is_failure(&self) -> bool {
        match self.status {
            Some(s) => s >= 500,
            None => self.error_type.is_some() && !self.cancelled,
        }
    }

    /// CLIENT spans are errors on any 4xx or 5xx, and on no answer (the conventions' rule).
    pub fn is_error(&self) -> bool {
        match self.status {
            Some(s) => s >= 400,
            None => self.error_type.is_some() && !self.cancelled,
        }
    }
}

/// One ended call span.
#[derive(Clone, Debug)]
pub struct CallRecord {
    /// This span's id (the `traceparent` parent the upstream received).
    pub span_id: SpanId,
    /// What it was.
    pub info: CallInfo,
    /// Start, as an offset from the request's start.
    pub start: Duration,
    /// First response byte, as an offset, when recorded.
    pub first_byte: Option<Duration>,
    /// End, as an offset.
    pub end: Duration,
    /// How it ended.
    pub outcome: CallOutcome,
}

/// One ended request with all its spans: what the exporter encodes and the trace store keeps.
#[derive(Clone, Debug)]
pub struct FinishedTrace {
    /// The trace.
    pub trace_id: TraceId,
    /// The root span.
    pub span_id: SpanId,
    /// The caller's span (remote parent), if it sent one.
    pub parent: Option<SpanId>,
    /// The head decision.
    pub sampled: bool,
    /// The tail decision: exported or not.
    pub kept: bool,
    /// The caller's `tracestate`, passed on.
    pub tracestate: Option<String>,
    /// `X-Request-Id`, received or generated (shared with the answer's header).
    pub request_id: RequestId,
    /// Wall-clock start, nanoseconds since the Unix epoch.
    pub epoch_ns: u64,
    /// How long the request took.
    pub duration: Duration,
    /// What the request was.
    pub root: RootInfo,
    /// How it ended.
    pub outcome: ServerOutcome,
    /// Every call span, in the order they ended.
    pub calls: Vec<CallRecord>,
}

impl FinishedTrace {
    /// The root is an error, or some call failed (5xx, or no answer).
    pub fn failed(&self) -> bool {
        self.outcome.is_error() || self.calls.iter().any(|c| c.outcome.is_failure())
    }

    /// Spans in this trace (root plus calls).
    pub fn span_count(&self) -> usize {
        1 + self.calls.len()
    }
}

/// The state shared by a request and its call spans (which may outlive a borrow: hedges).
#[derive(Debug)]
struct Shared {
    start: Instant,
    calls: Mutex<Calls>,
}

#[derive(Debug, Default)]
struct Calls {
    records: Vec<CallRecord>,
    ended: bool,
}

/// A request being recorded. Create with [`Tracer::start`]; end with [`RequestTrace::end`].
#[derive(Debug)]
pub struct RequestTrace {
    tracer: Tracer,
    trace_id: TraceId,
    span_id: SpanId,
    parent: Option<SpanId>,
    sampled: bool,
    tracestate: Option<String>,
    request_id: RequestId,
    epoch_ns: u64,
    root: RootInfo,
    shared: Arc<Shared>,
}

impl RequestTrace {
    pub(crate) fn new(
        tracer: Tracer,
        incoming: Incoming,
        root: RootInfo,
        calls: usize,
        start: Instant,
    ) -> RequestTrace {
        // Bounded: a hint from the config, never more than the span cap.
        let capacity = calls.min(tracer.max_spans());
        let epoch_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let (trace_id, parent) = match &incoming.parent {
            Some(p) => (p.trace_id, Some(p.parent_id)),
            None => (new_trace_id(), None),
        };
        // A caller not trusted with the flag picks its trace id as freely: the ratio decides on
        // a fresh random id, or an id whose low bytes are zero would be kept at any ratio.
        let sampled = match &incoming.parent {
            Some(_) if incoming.ignore_sampled => tracer.sampler().head(None, &new_trace_id()),
            parent => tracer.sampler().head(parent.as_ref(), &trace_id),
        };
        let request_id = incoming
            .request_id
            .unwrap_or_else(|| RequestId::of_trace(&trace_id));
        RequestTrace {
            tracer,
            trace_id,
            span_id: new_span_id(),
            parent,
            sampled,
            tracestate: incoming.tracestate,
            request_id,
            epoch_ns,
            root,
            shared: Arc::new(Shared {
                start,
                calls: Mutex::new(Calls {
                    records: Vec::with_capacity(capacity),
                    ended: false,
                }),
            }),
        }
    }

    /// The trace id (for logs, exemplars and the `X-Request-Id` default).
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// The root span's id.
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// The head sampling decision (the flag every outgoing `traceparent` carries).
    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// The `tracestate` to pass on with every upstream request, if the caller sent one.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// The `X-Request-Id` to pass on: the client's, or the trace id. Its header value clones
    /// without allocating.
    pub fn request_id(&self) -> &RequestId {
        &self.request_id
    }

    /// The request's `url.path` (its clones share it: a call that sends the same path can
    /// record it without a copy).
    pub fn path(&self) -> &UrlPath {
        &self.root.path
    }

    /// Start a call span now. Its `traceparent()` goes on the upstream request.
    pub fn start_call(&self, info: CallInfo) -> CallSpan {
        self.handle().start_call(info)
    }

    /// A cheap, cloneable handle that starts call spans of this request from wherever the call
    /// runs (deep in the upstream stack, or in a cache fill shared with other requests), while
    /// the request itself keeps the `RequestTrace` to end it.
    pub fn handle(&self) -> TraceHandle {
        TraceHandle {
            shared: Arc::clone(&self.shared),
            tracer: self.tracer.clone(),
            trace_id: self.trace_id,
            sampled: self.sampled,
        }
    }

    /// End the request: decide (head or tail) whether it is exported, hand it to the exporter if
    /// so, and return it (the trace store keeps it either way). Call spans still running are
    /// recorded as dropped (`late`) when they end.
    pub fn end(self, outcome: ServerOutcome) -> Arc<FinishedTrace> {
        self.end_at(outcome, Instant::now())
    }

    /// [`RequestTrace::end`] at `at`: the end as the caller already read it (the gateway reads
    /// the clock once for the request's end, its client's body wait up to then and its latency).
    pub fn end_at(self, outcome: ServerOutcome, at: Instant) -> Arc<FinishedTrace> {
        let duration = at.saturating_duration_since(self.shared.start);
        let calls = {
            let mut calls = self
                .shared
                .calls
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            calls.ended = true;
            std::mem::take(&mut calls.records)
        };
        let mut trace = FinishedTrace {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent: self.parent,
            sampled: self.sampled,
            kept: false,
            tracestate: self.tracestate,
            request_id: self.request_id,
            epoch_ns: self.epoch_ns,
            duration,
            root: self.root,
            outcome,
            calls,
        };
        trace.kept = self
            .tracer
            .tail()
            .keep(trace.sampled, trace.failed(), duration);
        let trace = Arc::new(trace);
        self.tracer.submit(&trace);
        trace
    }
}

/// Starts call spans of one request; see [`RequestTrace::handle`]. Spans started after the
/// request ended are dropped and counted (`late`), like any span that ends after it.
#[derive(Clone, Debug)]
pub struct TraceHandle {
    shared: Arc<Shared>,
    tracer: Tracer,
    trace_id: TraceId,
    sampled: bool,
}

impl TraceHandle {
    /// Start a call span now. Its `traceparent()` goes on the upstream request.
    // Inlined into the gateway (another crate) so that the span is built where it is kept,
    // not built here and moved (a ~200-byte copy an attempt).
    #[inline]
    pub fn start_call(&self, info: CallInfo) -> CallSpan {
        CallSpan {
            shared: Arc::clone(&self.shared),
            tracer: self.tracer.clone(),
            trace_id: self.trace_id,
            span_id: new_span_id(),
            sampled: self.sampled,
            start: Instant::now(),
            first_byte: None,
            info: Some(info),
        }
    }

    /// The trace id.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }
}

/// One call attempt being recorded. Dropping it without [`CallSpan::end`] records it as
/// cancelled (a hedge that lost, a request that gave up), so the trace shows every attempt.
#[derive(Debug)]
pub struct CallSpan {
    shared: Arc<Shared>,
    tracer: Tracer,
    trace_id: TraceId,
    span_id: SpanId,
    sampled: bool,
    start: Instant,
    first_byte: Option<Instant>,
    info: Option<CallInfo>,
}

impl CallSpan {
    /// This span's id.
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// The `traceparent` for the upstream request: this span as the parent.
    // Inlined into the gateway: the value is built where it is inserted.
    #[inline]
    pub fn traceparent(&self) -> HeaderValue {
        let value = traceparent_bytes(&self.trace_id, &self.span_id, self.sampled);
        HeaderValue::from_bytes(&value).expect("hex digits and dashes are a valid header value")
    }

    /// Record the first response byte (headers received), now.
    pub fn first_byte(&mut self) {
        self.first_byte.get_or_insert_with(Instant::now);
    }

    /// Record the first response byte at `at` (taken where the headers arrived, when the span
    /// itself is elsewhere); the first mark wins.
    // Inlined into the gateway: a store, not a call.
    #[inline]
    pub fn first_byte_at(&mut self, at: Instant) {
        self.first_byte.get_or_insert(at);
    }

    /// Forget this span: nothing is recorded (a span started in case it was needed, such as a
    /// cache wait that turned out to be this request's own fill, told by the fill's spans).
    pub fn discard(mut self) {
        self.info = None;
    }

    /// End the attempt now.
    // Inlined into the gateway, so that an attempt ending its span does not move the span
    // into this call first (a ~200-byte copy an attempt).
    #[inline]
    pub fn end(mut self, outcome: CallOutcome) {
        self.record(outcome, Instant::now());
    }

    /// End the attempt at `at`: its end as the caller already read it (the upstream stack
    /// reads the clock when an attempt ends, for its endpoint's latency; a second read here
    /// was ~40 instructions an attempt).
    #[inline]
    pub fn end_at(mut self, outcome: CallOutcome, at: Instant) {
        self.record(outcome, at);
    }

    fn record(&mut self, outcome: CallOutcome, now: Instant) {
        let Some(info) = self.info.take() else {
            return;
        };
        let since = |t: Instant| t.saturating_duration_since(self.shared.start);
        let record = CallRecord {
            span_id: self.span_id,
            info,
            start: since(self.start),
            first_byte: self.first_byte.map(since),
            end: since(now),
            outcome,
        };
        let mut calls = self
            .shared
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if calls.ended {
            drop(calls);
            self.tracer.stats().dropped(DropReason::Late, 1);
        } else if calls.records.len() + 1 >= self.tracer.max_spans() {
            drop(calls);
            self.tracer.stats().dropped(DropReason::TraceTooLarge, 1);
        } else {
            calls.records.push(record);
        }
    }
}

impl Drop for CallSpan {
    fn drop(&mut self) {
        if self.info.is_some() {
            self.record(
                CallOutcome {
                    cancelled: true,
                    ..CallOutcome::default()
                },
                Instant::now(),
            );
        }
    }
}
