//! What the admin `/traces` endpoints answer: a summary per request, one request with its
//! waterfall, and the Jaeger JSON (`{"data": [...]}`) that `manifold analyze -` reads.
//!
//! Times are milliseconds from the request's start (fractions to the nanosecond) in the JSON
//! of the store, and Jaeger's microseconds since the epoch in the export.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::path::Analysis;
use super::Entry;
use crate::span::{CallRecord, FinishedTrace, RootKind};

/// The operation name of the client's body wait in the Jaeger export.
pub const CLIENT_BODY: &str = "client request body";

fn ms(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1e6
}

fn route_name<'a>(store: &'a super::TraceStore, e: &Entry) -> &'a str {
    store.route(e.route).map_or("", |r| &r.name)
}

/// One line of `GET /traces`.
pub fn summary(store: &super::TraceStore, e: &Entry, a: &Analysis) -> Value {
    let t = &e.trace;
    json!({
        "trace_id": t.trace_id.to_hex(),
        "request_id": t.request_id.as_str(),
        "route": route_name(store, e),
        "method": t.root.method.as_str(),
        "path": t.root.path.as_str(),
        "status": t.outcome.status,
        "start_unix_ms": t.epoch_ns / 1_000_000,
        "duration_ms": ms(t.duration),
        "failed": t.failed(),
        "exported": t.kept,
        "partial": t.outcome.partial.iter().map(|p| &**p).collect::<Vec<_>>(),
        "span_count": t.span_count(),
        "critical_path": a.path.iter().map(|&c| &*a.calls[c].name).collect::<Vec<_>>(),
        "manifold_ms": ms(a.own.total()),
        "client_ms": ms(a.own.client),
    })
}

fn attempt(r: &CallRecord) -> Value {
    let endpoint = r
        .info
        .endpoint
        .as_ref()
        .map(|e| format!("{}:{}", e.address, e.port));
    json!({
        "span_id": r.span_id.to_hex(),
        "attempt": r.info.attempt,
        "kind": r.info.attempt_kind.as_str(),
        "start_ms": ms(r.start),
        "first_byte_ms": r.first_byte.map(ms),
        "end_ms": ms(r.end),
        "status": r.outcome.status,
        "error": r.outcome.error_type.as_deref(),
        "endpoint": endpoint,
        "cache": r.outcome.cache.map(|c| c.as_str()),
        "cancelled": r.outcome.cancelled,
        "enqueue": r.info.enqueue,
    })
}

/// `GET /traces/{trace_id}`: the summary, each call's timings, the path, each call's slack and
/// Manifold's own time, and the walk's sections (who was waited for, when: a call, the client's
/// body, or Manifold).
pub fn detail(store: &super::TraceStore, e: &Entry, a: &Analysis) -> Value {
    let t = &e.trace;
    let mut out = summary(store, e, a);
    let calls: Vec<Value> = a
        .calls
        .iter()
        .map(|c| {
            let w = &t.calls[c.winner];
            let mut v = attempt(w);
            if let Value::Object(m) = &mut v {
                for k in [
                    "span_id",
                    "attempt",
                    "kind",
                    "start_ms",
                    "end_ms",
                    "cancelled",
                ] {
                    m.remove(k);
                }
            }
            let mut m = Map::new();
            m.insert("name".into(), json!(&*c.name));
            m.insert("upstream".into(), json!(&*w.info.upstream));
            m.insert("ready_ms".into(), json!(ms(c.ready)));
            m.insert("started_ms".into(), json!(ms(c.started)));
            m.insert("ended_ms".into(), json!(ms(c.ended)));
            m.insert("queued_ms".into(), json!(ms(c.queued)));
            m.insert("duration_ms".into(), json!(ms(c.ended - c.started)));
            m.insert("attempts".into(), json!(c.attempts));
            if let Value::Object(rest) = v {
                m.extend(rest);
            }
            m.insert("on_path".into(), json!(c.on_path));
            m.insert("slack_ms".into(), json!(c.slack.map(ms)));
            m.insert("critical_ms".into(), json!(ms(c.critical)));
            m.insert(
                "spans".into(),
                Value::Array(c.spans.iter().map(|&s| attempt(&t.calls[s])).collect()),
            );
            Value::Object(m)
        })
        .collect();
    let sections: Vec<Value> = a
        .sections
        .iter()
        .map(|s| {
            json!({
                "call": s.call.map(|c| &*a.calls[c].name),
                "client": s.client,
                "start_ms": ms(s.start),
                "end_ms": ms(s.end),
            })
        })
        .collect();
    if let Value::Object(m) = &mut out {
        m.insert("calls".into(), Value::Array(calls));
        m.insert(
            "manifold".into(),
            json!({
                "before_ms": ms(a.own.before),
                "between_ms": ms(a.own.between),
                "after_ms": ms(a.own.after),
                "total_ms": ms(a.own.total()),
            }),
        );
        m.insert("sections".into(), Value::Array(sections));
    }
    out
}

/// Jaeger's microseconds since the epoch for an offset into the request (floored, so an input
/// that ended at least 1 µs before its dependent started stays strictly before it).
fn us(t: &FinishedTrace, offset: Duration) -> u64 {
    (t.epoch_ns
        .saturating_add(u64::try_from(offset.as_nanos()).unwrap_or(u64::MAX)))
        / 1000
}

struct Processes {
    names: Vec<String>,
}

impl Processes {
    fn id(&mut self, service: &str) -> String {
        let i = match self.names.iter().position(|n| n == service) {
            Some(i) => i,
            None => {
                self.names.push(service.to_owned());
                self.names.len() - 1
            }
        };
        format!("p{i}")
    }
}

fn jspan(
    t: &FinishedTrace,
    span_id: String,
    parent: Option<(&str, String)>,
    operation: &str,
    (start, end): (Duration, Duration),
    process: String,
    tags: Vec<Value>,
) -> Value {
    let (s, e) = (us(t, start), us(t, end));
    let references: Vec<Value> = parent
        .into_iter()
        .map(|(kind, id)| json!({"refType": kind, "traceID": t.trace_id.to_hex(), "spanID": id}))
        .collect();
    json!({
        "traceID": t.trace_id.to_hex(),
        "spanID": span_id,
        "operationName": operation,
        "references": references,
        "startTime": s,
        "duration": e.saturating_sub(s),
        "tags": tags,
        "processID": process,
    })
}

fn tag(key: &str, value: Value) -> Value {
    let ty = match &value {
        Value::Bool(_) => "bool",
        Value::Number(_) => "int64",
        _ => "string",
    };
    json!({"key": key, "type": ty, "value": value})
}

fn call_tags(r: &CallRecord) -> Vec<Value> {
    let kind = if r.info.enqueue {
        "producer"
    } else if r.info.endpoint.is_some() {
        "client"
    } else {
        "internal"
    };
    let mut tags = vec![
        tag("span.kind", json!(kind)),
        tag("manifold.attempt", json!(r.info.attempt)),
        tag("manifold.attempt.kind", json!(r.info.attempt_kind.as_str())),
    ];
    if let Some(s) = r.outcome.status {
        tags.push(tag("http.response.status_code", json!(s)));
    }
    if r.outcome.is_error() {
        tags.push(tag("error", json!(true)));
    }
    if r.outcome.cancelled {
        tags.push(tag("manifold.cancelled", json!(true)));
    }
    tags
}

/// One request as a Jaeger trace: the root span (SERVER; CONSUMER for a delivery) in the
/// `service` process, every call in its upstream's process, `CHILD_OF` the root. A call with
/// several attempts gets a span of its own (first attempt's start to the winner's end) with
/// its attempts as children, a cancelled one (a hedge that lost) `FOLLOWS_FROM`, so it never
/// counts as waited for. The client's body wait ([`super::OwnTime::client`]), when there was
/// one, is a [`CLIENT_BODY`] span from the request's start, `CHILD_OF` the root in the
/// `service` process: the analyzer's walk then sees it as a blocking child and does not count
/// it as the root's own. `manifold analyze` then accounts the same time to the same names
/// (service = upstream, operation = call) as the store does.
pub fn jaeger_trace(service: &str, e: &Entry, a: &Analysis) -> Value {
    let t = &e.trace;
    let mut procs = Processes { names: Vec::new() };
    let root_id = t.span_id.to_hex();
    let root_kind = match t.root.kind {
        RootKind::Server => "server",
        RootKind::Consumer => "consumer",
    };
    let mut root_tags = vec![
        tag("span.kind", json!(root_kind)),
        tag("http.request.method", json!(t.root.method.as_str())),
        tag("http.route", json!(&*t.root.route)),
        tag("http.response.status_code", json!(t.outcome.status)),
    ];
    if t.outcome.is_error() {
        root_tags.push(tag("error", json!(true)));
    }
    let op = format!("{} {}", t.root.method, t.root.route);
    let mut spans = vec![jspan(
        t,
        root_id.clone(),
        None,
        &op,
        (Duration::ZERO, t.duration),
        procs.id(service),
        root_tags,
    )];
    if a.own.client > Duration::ZERO {
        // An id no call has: the root's, one bit flipped (a call's own span flips the top bit
        // of an attempt's id; this flips another, of the root's).
        let mut id = t.span_id.0;
        id[0] ^= 0x40;
        spans.push(jspan(
            t,
            crate::context::SpanId(id).to_hex(),
            Some(("CHILD_OF", root_id.clone())),
            CLIENT_BODY,
            (Duration::ZERO, a.own.client),
            procs.id(service),
            vec![tag("span.kind", json!("internal"))],
        ));
    }
    for c in &a.calls {
        let w = &t.calls[c.winner];
        let proc = procs.id(&w.info.upstream);
        if c.spans.len() == 1 {
            spans.push(jspan(
                t,
                w.span_id.to_hex(),
                Some(("CHILD_OF", root_id.clone())),
                &c.name,
                (w.start, w.end),
                proc,
                call_tags(w),
            ));
            continue;
        }
        // The call's own span: an id no attempt has (the first attempt's, top bit flipped).
        let mut id = t.calls[c.spans[0]].span_id.0;
        id[0] ^= 0x80;
        let call_id = crate::context::SpanId(id).to_hex();
        spans.push(jspan(
            t,
            call_id.clone(),
            Some(("CHILD_OF", root_id.clone())),
            &c.name,
            (c.started, c.ended),
            proc.clone(),
            vec![
                tag("span.kind", json!("internal")),
                tag("manifold.attempts", json!(c.attempts)),
            ],
        ));
        for &s in &c.spans {
            let r = &t.calls[s];
            let link = if r.outcome.cancelled {
                "FOLLOWS_FROM"
            } else {
                "CHILD_OF"
            };
            spans.push(jspan(
                t,
                r.span_id.to_hex(),
                Some((link, call_id.clone())),
                &c.name,
                (r.start, r.end.min(c.ended).max(r.start)),
                procs.id(&r.info.upstream),
                call_tags(r),
            ));
        }
    }
    let processes: Map<String, Value> = procs
        .names
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("p{i}"), json!({"serviceName": n, "tags": []})))
        .collect();
    json!({
        "traceID": t.trace_id.to_hex(),
        "spans": spans,
        "processes": processes,
    })
}
