//! Manifold's own telemetry: what the gateway knows about each request, made visible.
//!
//! A gateway is the one place that knows each request's call graph exactly. This crate records it
//! cheaply and hands it on:
//!
//! * [`context`] and [`propagate`] — W3C Trace Context: `traceparent` / `tracestate` in and out,
//!   `X-Request-Id`, id generation;
//! * [`span`] and [`tracer`] — a SERVER (or CONSUMER) span per request and one span per call
//!   attempt, recorded as typed fields on tokio's clock and held until the request ends, so the
//!   [`sample`] tail rule can keep every error and every slow request;
//! * [`otlp`] — OTLP/HTTP protobuf export from a bounded queue that drops and counts, never
//!   blocks;
//! * [`metrics`] — Prometheus families recorded with atomics, rendered as the text format or
//!   OpenMetrics with exemplars;
//! * [`stats`] — what happened to spans (exported, dropped by reason);
//! * [`store`] — the live trace store: recent, slow and failed requests per route, each with
//!   its exact critical path from the plan (the analyzer's accounting, `manifold-trace`).
//!
//! The gateway wires these in; `docs/telemetry.md` is the guide.
#![doc = include_str!("../../../docs/telemetry.md")]

pub mod context;
pub mod error;
pub mod log_out;
pub mod metrics;
pub mod otlp;
pub mod propagate;
pub mod request_id;
pub mod sample;
pub mod span;
pub mod stats;
pub mod store;
pub mod tracer;
pub mod url_path;

pub use context::{SpanId, TraceId, TraceParent};
pub use error::TelemetryError;
pub use propagate::Incoming;
pub use request_id::RequestId;
pub use span::{
    recorded_method, AttemptKind, CacheOutcome, CallInfo, CallOutcome, CallRecord, CallSpan,
    Endpoint, FinishedTrace, RequestTrace, RootInfo, RootKind, ServerOutcome, TraceHandle,
    METHOD_MAX,
};
pub use stats::{DropReason, SpanStats};
pub use tracer::{Tracer, TracingOptions};
pub use url_path::{recorded_path, UrlPath, URL_PATH_MAX};
