//! Zipkin v2 JSON: an array of spans (one trace or several), or one span. Fragments of one span
//! reported separately (one with the timestamp, another with the duration) are merged; a server
//! span that shares its id with the client span (`"shared": true`) becomes the client's child.

use std::collections::HashMap;

use serde::Deserialize;

use super::{service_sym, span_id, Attrs, BStr, FormatError, NumOrText, RawTrace, Value};
use crate::model::{flags, FxHashMap, Interner, Span, SpanId, SpanKind, WarningKind, Warnings};

#[derive(Deserialize)]
struct ZEndpoint<'a> {
    #[serde(rename = "serviceName", borrow)]
    service_name: Option<BStr<'a>>,
    #[serde(borrow)]
    ipv4: Option<BStr<'a>>,
    #[serde(borrow)]
    ipv6: Option<BStr<'a>>,
}

#[derive(Deserialize)]
struct ZAnnotation<'a> {
    #[serde(borrow)]
    value: Option<BStr<'a>>,
}

#[derive(Deserialize)]
struct ZSpan<'a> {
    #[serde(rename = "traceId", borrow)]
    trace_id: Option<BStr<'a>>,
    #[serde(borrow)]
    id: Option<BStr<'a>>,
    #[serde(rename = "parentId", borrow)]
    parent_id: Option<BStr<'a>>,
    #[serde(borrow)]
    name: Option<BStr<'a>>,
    #[serde(borrow)]
    kind: Option<BStr<'a>>,
    #[serde(borrow)]
    timestamp: Option<NumOrText<'a>>,
    #[serde(borrow)]
    duration: Option<NumOrText<'a>>,
    #[serde(rename = "localEndpoint", borrow)]
    local_endpoint: Option<ZEndpoint<'a>>,
    #[serde(borrow)]
    annotations: Option<Vec<ZAnnotation<'a>>>,
    #[serde(borrow)]
    tags: Option<HashMap<BStr<'a>, Value<'a>>>,
    shared: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ZUnit<'a> {
    #[serde(borrow)]
    Many(Vec<ZSpan<'a>>),
    #[serde(borrow)]
    One(Box<ZSpan<'a>>),
}

/// Parse a Zipkin v2 span array (or a single span).
pub fn parse(
    bytes: &[u8],
    interner: &mut Interner,
    warnings: &mut Warnings,
) -> Result<Vec<RawTrace>, FormatError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let spans: Vec<ZSpan<'_>> = if first == Some(b'[') {
        serde_json::from_slice(bytes)?
    } else {
        match serde_json::from_slice::<ZUnit<'_>>(bytes)? {
            ZUnit::Many(v) => v,
            ZUnit::One(s) => vec![*s],
        }
    };
    let mut out: Vec<RawTrace> = Vec::new();
    let mut cache = super::TidCache::default();
    for z in spans {
        let Some(id_text) = z.id.as_deref() else {
            warnings.add_with(WarningKind::MalformedSpan, || {
                "a Zipkin span without id".into()
            });
            continue;
        };
        let id = span_id(id_text, interner);
        let kind = z.kind.as_deref().map(SpanKind::parse).unwrap_or_default();
        let local = z.local_endpoint.as_ref();
        let service = service_sym(local.and_then(|e| e.service_name.as_deref()), interner);
        let operation = interner.intern(z.name.as_deref().unwrap_or(""));
        let start = z
            .timestamp
            .as_ref()
            .and_then(|v| v.as_i64())
            .filter(|&t| t != 0)
            .and_then(|us| us.checked_mul(1000));
        let duration = z
            .duration
            .as_ref()
            .and_then(|v| v.as_i64())
            .and_then(|us| us.checked_mul(1000));
        let mut span = Span::timed(id, service, operation, start, duration);
        span.kind = kind;
        if z.shared.unwrap_or(false) || kind == SpanKind::Server {
            span.flags |= flags::SERVER_SIDE;
        }
        if let Some(p) = z.parent_id.as_deref() {
            if !p.is_empty() {
                span.parent_id = Some(span_id(p, interner));
            }
        }
        let mut a = Attrs::default();
        // in key order: a map's own order changes from run to run (which of `http.path` and
        // `http.url` named the path did, and so did the report)
        let mut tags: Vec<_> = z.tags.iter().flatten().collect();
        tags.sort_unstable_by(|x, y| x.0 .0.cmp(&y.0 .0));
        for (k, v) in tags {
            a.add(k, v);
        }
        for an in z.annotations.iter().flatten() {
            if an
                .value
                .as_deref()
                .is_some_and(|v| v.eq_ignore_ascii_case("error"))
            {
                a.error = true;
            }
        }
        if let Some(e) = local {
            a.host = e
                .ipv4
                .as_deref()
                .or(e.ipv6.as_deref())
                .map(|h| crate::limits::head(h).to_string());
        }
        a.apply(&mut span, interner);
        let tid = cache.get(z.trace_id.as_deref().unwrap_or(""));
        super::push_span(&mut out, tid, span);
    }
    for t in &mut out {
        let spans = std::mem::take(&mut t.spans);
        t.spans = merge_fragments(spans, warnings);
    }
    Ok(out)
}

/// Merge fragments of one span (same id, same side of the call) and mark a server half that
/// shares its id with a client half. Idempotent, so it can run again when a trace's spans
/// arrive in several units.
pub fn merge_fragments(spans: Vec<Span>, warnings: &mut Warnings) -> Vec<Span> {
    let mut index: FxHashMap<(SpanId, bool), usize> = FxHashMap::default();
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for s in spans {
        let key = (s.id, s.has(flags::SERVER_SIDE));
        match index.get(&key) {
            Some(&i) => {
                merge_into(&mut out[i], s);
                warnings.add(WarningKind::MergedFragment);
            }
            None => {
                index.insert(key, out.len());
                out.push(s);
            }
        }
    }
    for s in &mut out {
        if s.has(flags::SERVER_SIDE) && index.contains_key(&(s.id, false)) {
            s.flags |= flags::SHARED;
        }
    }
    out
}

fn merge_into(a: &mut Span, b: Span) {
    let a_start = (!a.has(flags::NO_START)).then_some(a.start);
    let b_start = (!b.has(flags::NO_START)).then_some(b.start);
    let a_dur = (!a.has(flags::NO_DURATION)).then_some(a.duration);
    let b_dur = (!b.has(flags::NO_DURATION)).then_some(b.duration);
    let start = match (a_start, b_start) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    let end_of = |s: Option<i64>, d: Option<i64>| -> Option<i64> { Some(s?.saturating_add(d?)) };
    let dur = match (end_of(a_start, a_dur), end_of(b_start, b_dur), start) {
        (Some(x), Some(y), Some(s)) => Some(x.max(y) - s),
        (Some(x), None, Some(s)) => Some((x - s).max(b_dur.unwrap_or(0))),
        (None, Some(y), Some(s)) => Some((y - s).max(a_dur.unwrap_or(0))),
        _ => a_dur.or(b_dur),
    };
    if let Some(s) = start {
        a.start = s;
        a.flags &= !flags::NO_START;
    }
    if let Some(d) = dur {
        a.duration = d;
        a.flags &= !flags::NO_DURATION;
    }
    a.flags |= b.flags & (flags::ERROR | flags::WRITE | flags::HAS_ARGS);
    if a.parent_id.is_none() {
        a.parent_id = b.parent_id;
    }
    if a.kind == SpanKind::Unspecified {
        a.kind = b.kind;
    }
    if a.service == 0 {
        a.service = b.service;
    }
    if a.operation == 0 {
        a.operation = b.operation;
    }
    if a.http_method == 0 {
        a.http_method = b.http_method;
    }
    if a.http_path == 0 {
        a.http_path = b.http_path;
    }
    if a.host == 0 {
        a.host = b.host;
    }
    if b.has(flags::HAS_ARGS) {
        a.call_key = b.call_key;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_fragments_and_marks_shared() {
        let json = br#"[
          {"traceId":"1","id":"2","name":"get","kind":"CLIENT","timestamp":100,"localEndpoint":{"serviceName":"a","ipv4":"1.1.1.1"}},
          {"traceId":"1","id":"2","duration":50,"localEndpoint":{"serviceName":"a"},"kind":"CLIENT"},
          {"traceId":"1","id":"2","name":"get /x","kind":"SERVER","shared":true,"timestamp":110,"duration":30,"localEndpoint":{"serviceName":"b","ipv4":"2.2.2.2"},"tags":{"error":"boom"}}
        ]"#;
        let mut i = Interner::new();
        let mut w = Warnings::default();
        let t = parse(json, &mut i, &mut w).expect("parse");
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].spans.len(), 2);
        assert_eq!(w.count(WarningKind::MergedFragment), 1);
        let client = &t[0].spans[0];
        assert_eq!((client.start, client.duration), (100_000, 50_000));
        let server = &t[0].spans[1];
        assert!(server.has(flags::SHARED) && server.has(flags::ERROR));
    }
}
