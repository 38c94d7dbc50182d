//! Finished traces as OTLP protobuf: attribute names (OpenTelemetry HTTP semantic conventions,
//! plus `manifold.*` for what they do not name) are attached here, in the exporter's task, never
//! on the request path.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use crate::span::{CallRecord, FinishedTrace, RootKind};

/// Attribute names, in one place (STYLE.md: events and metrics named in one typed place).
pub mod attr {
    /// HTTP method.
    pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
    /// The route pattern.
    pub const HTTP_ROUTE: &str = "http.route";
    /// The path.
    pub const URL_PATH: &str = "url.path";
    /// The full URL of a client request.
    pub const URL_FULL: &str = "url.full";
    /// The endpoint's host.
    pub const SERVER_ADDRESS: &str = "server.address";
    /// The endpoint's port.
    pub const SERVER_PORT: &str = "server.port";
    /// The response status.
    pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
    /// Response body size.
    pub const HTTP_RESPONSE_BODY_SIZE: &str = "http.response.body.size";
    /// Attempts before this one (semconv: 0 for the first).
    pub const HTTP_REQUEST_RESEND_COUNT: &str = "http.request.resend_count";
    /// The failure's class.
    pub const ERROR_TYPE: &str = "error.type";
    /// The call's name in the route.
    pub const CALL: &str = "manifold.call";
    /// The `[upstreams.NAME]`.
    pub const UPSTREAM: &str = "manifold.upstream";
    /// Attempt number, from 1.
    pub const ATTEMPT: &str = "manifold.attempt";
    /// `first`, `retry` or `hedge`.
    pub const ATTEMPT_KIND: &str = "manifold.attempt.kind";
    /// `l1`, `l2`, `miss`, `coalesced` or `stale`.
    pub const CACHE_OUTCOME: &str = "manifold.cache.outcome";
    /// The call was handed to the queue.
    pub const QUEUE_ENQUEUE: &str = "manifold.queue.enqueue";
    /// The attempt was dropped before it ended (a losing hedge).
    pub const CANCELLED: &str = "manifold.cancelled";
    /// Optional calls that failed in a partial answer.
    pub const PARTIAL_CALLS: &str = "manifold.partial_calls";
    /// The `X-Request-Id`.
    pub const REQUEST_ID: &str = "manifold.request_id";
    /// Milliseconds from the call's start to its first response byte.
    pub const FIRST_BYTE_MS: &str = "manifold.first_byte_ms";
}

/// The resource every batch carries.
#[derive(Clone, Debug)]
pub struct ResourceInfo {
    /// `service.name`.
    pub service_name: String,
}

pub(crate) const SCOPE_NAME: &str = "manifold-telemetry";
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

/// One export request for a batch of finished traces.
pub fn encode_batch<'a, I>(resource: &ResourceInfo, traces: I) -> ExportTraceServiceRequest
where
    I: IntoIterator<Item = &'a FinishedTrace>,
{
    let mut spans = Vec::new();
    for t in traces {
        spans.push(root_span(t));
        spans.extend(t.calls.iter().map(|c| call_span(t, c)));
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv_str("service.name", &resource.service_name),
                    kv_str("telemetry.sdk.name", SCOPE_NAME),
                    kv_str("telemetry.sdk.language", "rust"),
                ],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: SCOPE_NAME.to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..InstrumentationScope::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn root_span(t: &FinishedTrace) -> Span {
    let r = &t.root;
    let o = &t.outcome;
    let mut attributes = vec![kv_str(attr::HTTP_REQUEST_METHOD, r.method.as_str())];
    if !r.route.is_empty() {
        attributes.push(kv_str(attr::HTTP_ROUTE, &r.route));
    }
    attributes.extend([
        kv_str(attr::URL_PATH, &r.path),
        kv_int(attr::HTTP_RESPONSE_STATUS_CODE, i64::from(o.status)),
        kv_int(
            attr::HTTP_RESPONSE_BODY_SIZE,
            i64::try_from(o.response_bytes).unwrap_or(i64::MAX),
        ),
        kv_str(attr::REQUEST_ID, &t.request_id),
    ]);
    if !o.partial.is_empty() {
        let values = o.partial.iter().map(|c| str_value(c)).collect();
        attributes.push(kv(
            attr::PARTIAL_CALLS,
            any_value::Value::ArrayValue(ArrayValue { values }),
        ));
    }
    let error = o.is_error();
    if error {
        let kind = o
            .error_type
            .as_deref()
            .map_or_else(|| o.status.to_string(), str::to_owned);
        attributes.push(kv_str(attr::ERROR_TYPE, &kind));
    }
    let (kind, name) = match r.kind {
        RootKind::Server if r.route.is_empty() => (SpanKind::Server, r.method.to_string()),
        RootKind::Server => (SpanKind::Server, format!("{} {}", r.method, r.route)),
        RootKind::Consumer => (SpanKind::Consumer, format!("process {}", r.route)),
    };
    let mut flags = trace_flags(t) | FLAG_HAS_IS_REMOTE;
    if t.parent.is_some() {
        flags |= FLAG_IS_REMOTE;
    }
    Span {
        trace_id: t.trace_id.0.to_vec(),
        span_id: t.span_id.0.to_vec(),
        trace_state: t.tracestate.clone().unwrap_or_default(),
        parent_span_id: t.parent.map(|p| p.0.to_vec()).unwrap_or_default(),
        flags,
        name,
        kind: kind as i32,
        start_time_unix_nano: t.epoch_ns,
        end_time_unix_nano: t.epoch_ns.saturating_add(nanos(t.duration)),
        attributes,
        status: Some(status(error)),
        ..Span::default()
    }
}

fn call_span(t: &FinishedTrace, c: &CallRecord) -> Span {
    let i = &c.info;
    let o = &c.outcome;
    let mut attributes = Vec::with_capacity(14);
    attributes.push(kv_str(attr::HTTP_REQUEST_METHOD, i.method.as_str()));
    attributes.push(kv_str(attr::URL_PATH, &i.path));
    attributes.push(kv_str(attr::CALL, &i.call));
    attributes.push(kv_str(attr::UPSTREAM, &i.upstream));
    attributes.push(kv_int(attr::ATTEMPT, i64::from(i.attempt)));
    attributes.push(kv_str(attr::ATTEMPT_KIND, i.attempt_kind.as_str()));
    if i.attempt > 1 {
        attributes.push(kv_int(
            attr::HTTP_REQUEST_RESEND_COUNT,
            i64::from(i.attempt - 1),
        ));
    }
    if let Some(e) = &i.endpoint {
        attributes.push(kv_str(attr::SERVER_ADDRESS, &e.address));
        attributes.push(kv_int(attr::SERVER_PORT, i64::from(e.port)));
        let scheme = if e.https { "https" } else { "http" };
        let host = if e.address.contains(':') {
            format!("[{}]", e.address)
        } else {
            e.address.to_string()
        };
        attributes.push(kv_str(
            attr::URL_FULL,
            &format!("{scheme}://{host}:{}{}", e.port, i.path),
        ));
    }
    if let Some(s) = o.status {
        attributes.push(kv_int(attr::HTTP_RESPONSE_STATUS_CODE, i64::from(s)));
    }
    if let Some(b) = o.response_bytes {
        attributes.push(kv_int(
            attr::HTTP_RESPONSE_BODY_SIZE,
            i64::try_from(b).unwrap_or(i64::MAX),
        ));
    }
    if let Some(cache) = o.cache {
        attributes.push(kv_str(attr::CACHE_OUTCOME, cache.as_str()));
    }
    if i.enqueue {
        attributes.push(kv_bool(attr::QUEUE_ENQUEUE, true));
    }
    if o.cancelled {
        attributes.push(kv_bool(attr::CANCELLED, true));
    }
    if let Some(fb) = c.first_byte {
        let ms = fb.saturating_sub(c.start).as_secs_f64() * 1e3;
        attributes.push(kv(attr::FIRST_BYTE_MS, any_value::Value::DoubleValue(ms)));
    }
    let error = o.is_error();
    if error {
        let kind = match (&o.error_type, o.status) {
            (Some(kind), _) => kind.to_string(),
            (None, Some(s)) => s.to_string(),
            (None, None) => "_OTHER".to_owned(),
        };
        attributes.push(kv_str(attr::ERROR_TYPE, &kind));
    }
    let kind = if i.enqueue {
        SpanKind::Producer
    } else if i.endpoint.is_some() {
        SpanKind::Client
    } else {
        SpanKind::Internal
    };
    Span {
        trace_id: t.trace_id.0.to_vec(),
        span_id: c.span_id.0.to_vec(),
        trace_state: t.tracestate.clone().unwrap_or_default(),
        parent_span_id: t.span_id.0.to_vec(),
        flags: trace_flags(t) | FLAG_HAS_IS_REMOTE,
        name: i.call.to_string(),
        kind: kind as i32,
        start_time_unix_nano: t.epoch_ns.saturating_add(nanos(c.start)),
        end_time_unix_nano: t.epoch_ns.saturating_add(nanos(c.end)),
        attributes,
        status: Some(status(error)),
        ..Span::default()
    }
}

fn trace_flags(t: &FinishedTrace) -> u32 {
    u32::from(t.sampled)
}

fn status(error: bool) -> Status {
    Status {
        message: String::new(),
        code: if error {
            StatusCode::Error as i32
        } else {
            StatusCode::Unset as i32
        },
    }
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn str_value(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.to_owned())),
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn kv_str(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.to_owned()))
}

fn kv_int(key: &str, value: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value))
}

fn kv_bool(key: &str, value: bool) -> KeyValue {
    kv(key, any_value::Value::BoolValue(value))
}
