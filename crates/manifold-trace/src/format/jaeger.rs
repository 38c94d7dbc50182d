//! Jaeger: the UI / `/api/traces` JSON (`traceID`, µs numbers, `processes` map) and the
//! api_v2 protobuf-JSON (`traceId` in base64, RFC 3339 `startTime`, `"0.000225s"` durations,
//! `process` inline or `processMap`), as a whole trace, an envelope `{"data":[…]}`, a gRPC-gateway
//! chunk `{"result":{"spans":[…]}}` or a single span.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    parse_duration, parse_rfc3339, push_span_sized, service_sym, span_id, text_or_empty, trace_id,
    Attrs, BStr, FormatError, NumOrText, RawTrace, TidCache, Value,
};
use crate::model::{flags, Interner, Link, Span, WarningKind, Warnings};

pub(crate) mod fast;

#[derive(Deserialize, Default)]
struct JTag<'a> {
    #[serde(borrow)]
    key: Option<BStr<'a>>,
    #[serde(borrow)]
    value: Option<Value<'a>>,
    #[serde(rename = "vStr", borrow)]
    v_str: Option<BStr<'a>>,
    #[serde(rename = "vInt64", borrow)]
    v_int: Option<NumOrText<'a>>,
    #[serde(rename = "vBool")]
    v_bool: Option<bool>,
    #[serde(rename = "vFloat64")]
    v_float: Option<f64>,
}

impl<'a> JTag<'a> {
    fn value(&self) -> Value<'_> {
        if let Some(v) = &self.value {
            return v.clone();
        }
        if let Some(s) = &self.v_str {
            return Value::Str(Cow::Borrowed(s));
        }
        if let Some(i) = self.v_int.as_ref().and_then(|n| n.as_i64()) {
            return Value::Int(i);
        }
        if let Some(b) = self.v_bool {
            return Value::Bool(b);
        }
        if let Some(f) = self.v_float {
            return Value::Float(f);
        }
        Value::Other
    }
}

#[derive(Deserialize, Default)]
struct JLog<'a> {
    #[serde(borrow, default)]
    fields: Option<Vec<JTag<'a>>>,
}

/// Span tags folded into [`Attrs`] while they are parsed (no per-span `Vec` of tags).
#[derive(Default)]
struct TagSummary(Attrs);

impl<'de> Deserialize<'de> for TagSummary {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TagSummary;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of tags")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<TagSummary, A::Error> {
                let mut a = Attrs::default();
                while let Some(t) = seq.next_element::<JTag<'de>>()? {
                    a.add(text_or_empty(&t.key), &t.value());
                }
                Ok(TagSummary(a))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<TagSummary, E> {
                Ok(TagSummary::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// Span logs folded into an error flag while they are parsed.
#[derive(Default)]
struct LogSummary(Attrs);

impl<'de> Deserialize<'de> for LogSummary {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = LogSummary;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of logs")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<LogSummary, A::Error> {
                let mut a = Attrs::default();
                while let Some(l) = seq.next_element::<JLog<'de>>()? {
                    for f in l.fields.iter().flatten() {
                        a.add_log_field(text_or_empty(&f.key), &f.value());
                    }
                }
                Ok(LogSummary(a))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<LogSummary, E> {
                Ok(LogSummary::default())
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct JRef<'a> {
    #[serde(rename = "refType", alias = "ref_type", borrow)]
    ref_type: Option<BStr<'a>>,
    #[serde(rename = "traceID", alias = "traceId", borrow)]
    trace_id: Option<BStr<'a>>,
    #[serde(rename = "spanID", alias = "spanId", borrow)]
    span_id: Option<BStr<'a>>,
}

#[derive(Deserialize, Default)]
struct JProcess<'a> {
    #[serde(rename = "serviceName", borrow)]
    service_name: Option<BStr<'a>>,
    #[serde(borrow, default)]
    tags: Option<Vec<JTag<'a>>>,
}

#[derive(Deserialize)]
struct JProcessEntry<'a> {
    #[serde(rename = "processID", alias = "processId", borrow)]
    process_id: Option<BStr<'a>>,
    #[serde(borrow)]
    process: Option<JProcess<'a>>,
}

#[derive(Deserialize)]
struct JSpan<'a> {
    #[serde(rename = "traceID", alias = "traceId", borrow)]
    trace_id: Option<BStr<'a>>,
    #[serde(rename = "spanID", alias = "spanId", borrow)]
    span_id: Option<BStr<'a>>,
    #[serde(rename = "parentSpanID", alias = "parentSpanId", borrow)]
    parent_span_id: Option<BStr<'a>>,
    #[serde(rename = "operationName", borrow)]
    operation_name: Option<BStr<'a>>,
    #[serde(borrow)]
    references: Option<Vec<JRef<'a>>>,
    #[serde(rename = "startTime", borrow)]
    start_time: Option<NumOrText<'a>>,
    #[serde(borrow)]
    duration: Option<NumOrText<'a>>,
    tags: Option<TagSummary>,
    logs: Option<LogSummary>,
    #[serde(rename = "processID", alias = "processId", borrow)]
    process_id: Option<BStr<'a>>,
    #[serde(borrow)]
    process: Option<JProcess<'a>>,
}

/// Any Jaeger object: envelope, trace, chunk or span (all fields optional).
#[derive(Deserialize)]
struct JObj<'a> {
    #[serde(borrow)]
    data: Option<Vec<JObj<'a>>>,
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    #[serde(rename = "traceID", alias = "traceId", borrow)]
    trace_id: Option<BStr<'a>>,
    #[serde(borrow)]
    spans: Option<Vec<JSpan<'a>>>,
    #[serde(borrow)]
    processes: Option<HashMap<BStr<'a>, JProcess<'a>>>,
    #[serde(rename = "processMap", borrow)]
    process_map: Option<Vec<JProcessEntry<'a>>>,
    // single-span fields
    #[serde(rename = "spanID", alias = "spanId", borrow)]
    span_id: Option<BStr<'a>>,
    #[serde(rename = "parentSpanID", alias = "parentSpanId", borrow)]
    parent_span_id: Option<BStr<'a>>,
    #[serde(rename = "operationName", borrow)]
    operation_name: Option<BStr<'a>>,
    #[serde(borrow)]
    references: Option<Vec<JRef<'a>>>,
    #[serde(rename = "startTime", borrow)]
    start_time: Option<NumOrText<'a>>,
    #[serde(borrow)]
    duration: Option<NumOrText<'a>>,
    tags: Option<TagSummary>,
    logs: Option<LogSummary>,
    #[serde(rename = "processID", alias = "processId", borrow)]
    process_id: Option<BStr<'a>>,
    #[serde(borrow)]
    process: Option<JProcess<'a>>,
}

impl<'a> JObj<'a> {
    fn into_single_span(self) -> Option<JSpan<'a>> {
        self.span_id.as_ref()?;
        Some(JSpan {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_span_id: self.parent_span_id,
            operation_name: self.operation_name,
            references: self.references,
            start_time: self.start_time,
            duration: self.duration,
            tags: self.tags,
            logs: self.logs,
            process_id: self.process_id,
            process: self.process,
        })
    }
}

/// True when the bytes look like Jaeger (v1 or api_v2) rather than Zipkin or OTLP.
pub fn looks_like(obj_keys: &[&str]) -> bool {
    obj_keys.iter().any(|k| {
        matches!(
            *k,
            "traceID" | "spanID" | "processes" | "processMap" | "operationName" | "spans" | "data"
        )
    })
}

/// Parse one Jaeger unit (any of the shapes above).
pub fn parse(
    bytes: &[u8],
    interner: &mut Interner,
    warnings: &mut Warnings,
) -> Result<Vec<RawTrace>, FormatError> {
    let obj: JObj<'_> = serde_json::from_slice(bytes)?;
    let mut out = Vec::new();
    convert_obj(obj, interner, warnings, &mut out)?;
    Ok(out)
}

fn convert_obj(
    obj: JObj<'_>,
    interner: &mut Interner,
    warnings: &mut Warnings,
    out: &mut Vec<RawTrace>,
) -> Result<(), FormatError> {
    if let Some(data) = obj.data {
        for t in data {
            convert_obj(t, interner, warnings, out)?;
        }
        return Ok(());
    }
    if let Some(raw) = obj.result {
        let inner: JObj<'_> = serde_json::from_str(raw.get())?;
        if inner.spans.is_some() || inner.span_id.is_some() || inner.data.is_some() {
            return convert_obj(inner, interner, warnings, out);
        }
        // api_v3: OTLP inside `result`
        let traces = super::otlp::parse(raw.get().as_bytes(), interner, warnings)?;
        out.extend(traces);
        return Ok(());
    }
    if obj.spans.is_none() {
        if let Some(span) = obj.into_single_span() {
            let procs = Processes::default();
            let mut cache = TidCache::default();
            convert_span(span, "", &procs, interner, warnings, &mut cache, out);
            return Ok(());
        }
        return Err(FormatError::Shape(
            "a JSON object with none of `data`, `spans`, `resourceSpans`, `result` or span fields"
                .into(),
        ));
    }
    let default_tid = obj.trace_id.as_deref().map(trace_id).unwrap_or_default();
    let mut procs = Processes::default();
    if let Some(map) = obj.processes {
        for (k, p) in map {
            procs.add(k.0.into_owned(), &p, interner);
        }
    }
    if let Some(list) = obj.process_map {
        for e in list {
            if let (Some(id), Some(p)) = (e.process_id, e.process) {
                procs.add(id.0.into_owned(), &p, interner);
            }
        }
    }
    let spans = obj.spans.unwrap_or_default();
    let mut cache = TidCache::default();
    if let Some(raw) = obj.trace_id.as_deref() {
        cache.get(raw);
    }
    let first = out.len();
    for s in spans {
        convert_span(s, &default_tid, &procs, interner, warnings, &mut cache, out);
    }
    if let Some(t) = out.get_mut(first) {
        t.spans.shrink_to_fit();
    }
    Ok(())
}

#[derive(Default)]
struct Processes {
    /// Service and host symbols by process id (interned once per process, not per span).
    map: crate::model::FxHashMap<String, (u32, Option<u32>)>,
}

impl Processes {
    fn add(&mut self, id: String, p: &JProcess<'_>, interner: &mut Interner) {
        let svc = service_sym(p.service_name.as_deref(), interner);
        let mut a = Attrs::default();
        for t in p.tags.iter().flatten() {
            a.add(text_or_empty(&t.key), &t.value());
        }
        let host = a.host.map(|h| interner.intern(&h));
        self.map.insert(id, (svc, host));
    }
}

fn time_us_or_rfc3339(v: &NumOrText<'_>) -> Option<i64> {
    match v {
        NumOrText::Text(t) => parse_rfc3339(t).or_else(|| {
            t.trim()
                .parse::<i64>()
                .ok()
                .and_then(|us| us.checked_mul(1000))
        }),
        _ => v.as_i64().and_then(|us| us.checked_mul(1000)),
    }
}

fn duration_us_or_text(v: &NumOrText<'_>) -> Option<i64> {
    match v {
        NumOrText::Text(t) => match t.trim().parse::<f64>() {
            Ok(us) if us.is_finite() => Some((us * 1000.0).round() as i64),
            _ => parse_duration(t),
        },
        NumOrText::Num(super::Num::Float(f)) if f.is_finite() => Some((f * 1000.0).round() as i64),
        _ => v.as_i64().and_then(|us| us.checked_mul(1000)),
    }
}

fn convert_span(
    s: JSpan<'_>,
    default_tid: &str,
    procs: &Processes,
    interner: &mut Interner,
    warnings: &mut Warnings,
    cache: &mut TidCache,
    out: &mut Vec<RawTrace>,
) {
    let refs = s.references.iter().flatten().map(|r| RefIn {
        ref_type: r.ref_type.as_deref(),
        trace_id: r.trace_id.as_deref(),
        span_id: r.span_id.as_deref(),
    });
    let input = SpanIn {
        trace_id: s.trace_id.as_deref(),
        span_id: s.span_id.as_deref(),
        parent_span_id: s.parent_span_id.as_deref(),
        operation: s.operation_name.as_deref(),
        start: s.start_time.as_ref(),
        duration: s.duration.as_ref(),
        process: s.process.as_ref(),
        process_id: s.process_id.as_deref(),
    };
    let attrs = s.tags.map(|t| t.0).unwrap_or_default();
    let log_error = s.logs.is_some_and(|l| l.0.error);
    convert_span_in(
        input,
        refs,
        attrs,
        log_error,
        (default_tid, procs, cache, 1, None),
        interner,
        warnings,
        out,
    );
}

/// Operation symbols of the last few names, by address. Only for input that is never copied
/// (the fast readers borrow every string from the unit's bytes, which stay put while it is
/// converted), where the same address and length always mean the same text; a repeated name
/// then costs no hashing.
#[derive(Default)]
pub(crate) struct OpCache {
    last: [(usize, usize, u32); 4],
    next: usize,
}

impl OpCache {
    fn intern(&mut self, name: &str, interner: &mut Interner) -> u32 {
        let key = (name.as_ptr() as usize, name.len());
        for &(p, l, sym) in &self.last {
            if (p, l) == key {
                return sym;
            }
        }
        let sym = interner.intern(name);
        self.last[self.next % 4] = (key.0, key.1, sym);
        self.next += 1;
        sym
    }
}

/// One reference of a span, as written.
#[derive(Clone, Copy)]
struct RefIn<'s> {
    ref_type: Option<&'s str>,
    trace_id: Option<&'s str>,
    span_id: Option<&'s str>,
}

/// The fields of a span that the conversion reads, whichever parser found them.
struct SpanIn<'s> {
    trace_id: Option<&'s str>,
    span_id: Option<&'s str>,
    parent_span_id: Option<&'s str>,
    operation: Option<&'s str>,
    start: Option<&'s NumOrText<'s>>,
    duration: Option<&'s NumOrText<'s>>,
    process: Option<&'s JProcess<'s>>,
    process_id: Option<&'s str>,
}

/// Turn one parsed span into a [`Span`]: the single place that applies Jaeger's rules, shared by
/// the general parser ([`parse`]) and the fast trace parser ([`fast`]).
#[allow(clippy::too_many_arguments)]
fn convert_span_in<'s>(
    s: SpanIn<'s>,
    refs: impl Iterator<Item = RefIn<'s>>,
    mut a: Attrs,
    log_error: bool,
    (default_tid, procs, cache, expect, ops): (
        &str,
        &Processes,
        &mut TidCache,
        usize,
        Option<&mut OpCache>,
    ),
    interner: &mut Interner,
    warnings: &mut Warnings,
    out: &mut Vec<RawTrace>,
) {
    let Some(sid_text) = s.span_id else {
        warnings.add_with(WarningKind::MalformedSpan, || {
            "a Jaeger span without spanID".into()
        });
        return;
    };
    let raw_tid = s.trace_id.unwrap_or("");
    let tid: &str = if raw_tid.is_empty() {
        default_tid
    } else {
        cache.get(raw_tid)
    };
    let id = span_id(sid_text, interner);
    // the process's host, interned with the process table (not per span)
    let (mut service, mut host, mut proc_host) = (0u32, None, None);
    if let Some(p) = s.process {
        service = service_sym(p.service_name.as_deref(), interner);
        let mut a = Attrs::default();
        for t in p.tags.iter().flatten() {
            a.add(text_or_empty(&t.key), &t.value());
        }
        host = a.host;
    } else if let Some(pid) = s.process_id {
        if let Some((svc, h)) = procs.map.get(pid) {
            service = *svc;
            proc_host = *h;
        }
    }
    let op_name = s.operation.unwrap_or("");
    let operation = match ops {
        Some(c) => c.intern(op_name, interner),
        None => interner.intern(op_name),
    };
    let start = s.start.and_then(time_us_or_rfc3339);
    let duration = s.duration.and_then(duration_us_or_text);
    let mut span = Span::new(
        id,
        service,
        operation,
        start.unwrap_or(0),
        duration.unwrap_or(0),
    );
    if start.is_none() {
        span.flags |= flags::NO_START;
    }
    if duration.is_none() {
        span.flags |= flags::NO_DURATION;
    }
    // parent: the first reference into this trace (CHILD_OF before FOLLOWS_FROM)
    let mut parent: Option<(Link, &str)> = None;
    for r in refs {
        let Some(rs) = r.span_id else {
            continue;
        };
        if let Some(rt) = r.trace_id {
            if !rt.is_empty() && !tid.is_empty() && rt != raw_tid && trace_id(rt) != tid {
                warnings.add_with(WarningKind::ForeignReference, || {
                    format!("trace {tid}: span {sid_text} refers to trace {rt}")
                });
                continue;
            }
        }
        let link = match r.ref_type {
            Some(t) if t.eq_ignore_ascii_case("FOLLOWS_FROM") => Link::FollowsFrom,
            _ => Link::ChildOf,
        };
        match parent {
            None => parent = Some((link, rs)),
            Some((Link::FollowsFrom, _)) if link == Link::ChildOf => parent = Some((link, rs)),
            _ => {}
        }
    }
    if parent.is_none() {
        if let Some(p) = s.parent_span_id {
            if !p.is_empty() && !p.trim_start_matches('0').is_empty() {
                parent = Some((Link::ChildOf, p));
            }
        }
    }
    if let Some((link, p)) = parent {
        span.link = link;
        span.parent_id = Some(span_id(p, interner));
    }
    if log_error {
        a.error = true;
    }
    if a.host.is_none() {
        a.host = host;
    }
    let own_host = a.host.is_some();
    a.apply(&mut span, interner);
    if !own_host {
        if let Some(h) = proc_host {
            span.host = h;
        }
    }
    push_span_sized(out, tid, span, expect);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SpanId, SpanKind};

    #[test]
    fn v1_trace_object() {
        let json = br#"{"traceID":"t1","spans":[
            {"traceID":"t1","spanID":"a","operationName":"GET /x","references":[],"startTime":10,"duration":100,"processID":"p1",
             "tags":[{"key":"span.kind","type":"string","value":"server"},{"key":"http.status_code","type":"int64","value":500}]},
            {"spanID":"b","operationName":"db","references":[{"refType":"CHILD_OF","spanID":"a"}],"startTime":20,"duration":5,"processID":"p2",
             "logs":[{"timestamp":21,"fields":[{"key":"event","type":"string","value":"error"}]}]}
        ],"processes":{"p1":{"serviceName":"front","tags":[{"key":"hostname","type":"string","value":"h1"}]},"p2":{"serviceName":"db"}}}"#;
        let mut i = Interner::new();
        let mut w = Warnings::default();
        let t = parse(json, &mut i, &mut w).expect("parse");
        assert_eq!(t.len(), 1);
        let s = &t[0].spans;
        assert_eq!(s.len(), 2);
        assert_eq!(i.name(s[0].service), "front");
        assert_eq!(s[0].kind, SpanKind::Server);
        assert!(s[0].has(flags::ERROR) && s[1].has(flags::ERROR));
        assert_eq!(s[0].start, 10_000);
        assert_eq!(s[1].parent_id, Some(SpanId::parse("a", &mut i)));
        assert_eq!(i.name(s[0].host), "h1");
    }

    #[test]
    fn api_v2_protojson_chunk() {
        let json = br#"{"result":{"spans":[{"traceId":"AAAAAAAAAAAAAAAAAAAAAQ==","spanId":"AAAAAAAAAAM=","operationName":"op",
            "references":[{"traceId":"AAAAAAAAAAAAAAAAAAAAAQ==","spanId":"AAAAAAAAAAI=","refType":"CHILD_OF"}],
            "startTime":"2017-01-26T16:46:31.639875Z","duration":"0.000225s","tags":[{"key":"error","vType":"BOOL","vBool":true}],
            "process":{"serviceName":"svc"}}]}}"#;
        let mut i = Interner::new();
        let mut w = Warnings::default();
        let t = parse(json, &mut i, &mut w).expect("parse");
        assert_eq!(t[0].trace_id, "0000000000000001");
        let s = &t[0].spans[0];
        assert_eq!(s.id, SpanId::Hex(3));
        assert_eq!(s.parent_id, Some(SpanId::Hex(2)));
        assert_eq!(s.duration, 225_000);
        assert_eq!(s.start, 1_485_449_191_639_875_000);
        assert!(s.has(flags::ERROR));
    }

    #[test]
    fn not_a_trace() {
        let mut i = Interner::new();
        let mut w = Warnings::default();
        assert!(parse(br#"{"hello":1}"#, &mut i, &mut w).is_err());
        assert!(parse(b"[1,2", &mut i, &mut w).is_err());
    }
}
