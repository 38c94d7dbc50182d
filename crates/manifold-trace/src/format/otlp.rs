//! OTLP/JSON: `{"resourceSpans":[…]}` (also the older `instrumentationLibrarySpans`), one
//! `resourceSpans` element, or Jaeger api_v3's `{"result":{"resourceSpans":[…]}}`. Ids in hex or
//! base64, enums as numbers or names, 64-bit nanosecond times as strings or numbers.

use std::borrow::Cow;

use serde::Deserialize;

use super::{
    service_sym, span_id, text_or_empty, Attrs, BStr, FormatError, NumOrText, RawTrace, Value,
};
use crate::model::{Interner, Span, SpanKind, WarningKind, Warnings};

#[derive(Deserialize)]
struct AnyValue<'a> {
    #[serde(rename = "stringValue", borrow)]
    string_value: Option<BStr<'a>>,
    #[serde(rename = "intValue", borrow)]
    int_value: Option<NumOrText<'a>>,
    #[serde(rename = "boolValue")]
    bool_value: Option<bool>,
    #[serde(rename = "doubleValue", borrow)]
    double_value: Option<NumOrText<'a>>,
}

impl<'a> AnyValue<'a> {
    fn value(&self) -> Value<'_> {
        if let Some(s) = &self.string_value {
            return Value::Str(Cow::Borrowed(s));
        }
        if let Some(i) = self.int_value.as_ref().and_then(|n| n.as_i64()) {
            return Value::Int(i);
        }
        if let Some(b) = self.bool_value {
            return Value::Bool(b);
        }
        if let Some(d) = &self.double_value {
            if let NumOrText::Num(super::Num::Float(f)) = d {
                return Value::Float(*f);
            }
            if let Some(i) = d.as_i64() {
                return Value::Int(i);
            }
        }
        Value::Other
    }
}

#[derive(Deserialize)]
struct KeyValue<'a> {
    #[serde(borrow)]
    key: Option<BStr<'a>>,
    #[serde(borrow)]
    value: Option<AnyValue<'a>>,
}

#[derive(Deserialize)]
struct Resource<'a> {
    #[serde(borrow)]
    attributes: Option<Vec<KeyValue<'a>>>,
}

#[derive(Deserialize)]
struct Status<'a> {
    #[serde(borrow)]
    code: Option<NumOrText<'a>>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    name: Option<BStr<'a>>,
}

#[derive(Deserialize)]
struct OSpan<'a> {
    #[serde(rename = "traceId", borrow)]
    trace_id: Option<BStr<'a>>,
    #[serde(rename = "spanId", borrow)]
    span_id: Option<BStr<'a>>,
    #[serde(rename = "parentSpanId", borrow)]
    parent_span_id: Option<BStr<'a>>,
    #[serde(borrow)]
    name: Option<BStr<'a>>,
    #[serde(borrow)]
    kind: Option<NumOrText<'a>>,
    #[serde(rename = "startTimeUnixNano", borrow)]
    start: Option<NumOrText<'a>>,
    #[serde(rename = "endTimeUnixNano", borrow)]
    end: Option<NumOrText<'a>>,
    #[serde(borrow)]
    attributes: Option<Vec<KeyValue<'a>>>,
    #[serde(borrow)]
    status: Option<Status<'a>>,
    #[serde(borrow)]
    events: Option<Vec<Event<'a>>>,
}

#[derive(Deserialize)]
struct ScopeSpans<'a> {
    #[serde(borrow)]
    spans: Option<Vec<OSpan<'a>>>,
}

#[derive(Deserialize)]
struct ResourceSpans<'a> {
    #[serde(borrow)]
    resource: Option<Resource<'a>>,
    #[serde(rename = "scopeSpans", alias = "instrumentationLibrarySpans", borrow)]
    scope_spans: Option<Vec<ScopeSpans<'a>>>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "resourceSpans", alias = "resource_spans", borrow)]
    resource_spans: Option<Vec<ResourceSpans<'a>>>,
    #[serde(rename = "scopeSpans", alias = "instrumentationLibrarySpans", borrow)]
    scope_spans: Option<Vec<ScopeSpans<'a>>>,
    #[serde(borrow)]
    resource: Option<Resource<'a>>,
    #[serde(borrow)]
    result: Option<Box<Envelope<'a>>>,
}

/// Parse an OTLP/JSON document, one `resourceSpans` element, or an api_v3 `result` wrapper.
pub fn parse(
    bytes: &[u8],
    interner: &mut Interner,
    warnings: &mut Warnings,
) -> Result<Vec<RawTrace>, FormatError> {
    let env: Envelope<'_> = serde_json::from_slice(bytes)?;
    let mut out: Vec<RawTrace> = Vec::new();
    convert(env, interner, warnings, &mut out)?;
    Ok(out)
}

fn convert(
    env: Envelope<'_>,
    interner: &mut Interner,
    warnings: &mut Warnings,
    out: &mut Vec<RawTrace>,
) -> Result<(), FormatError> {
    if let Some(inner) = env.result {
        return convert(*inner, interner, warnings, out);
    }
    if let Some(list) = env.resource_spans {
        for rs in list {
            convert_resource(rs, interner, warnings, out);
        }
        return Ok(());
    }
    if env.scope_spans.is_some() {
        convert_resource(
            ResourceSpans {
                resource: env.resource,
                scope_spans: env.scope_spans,
            },
            interner,
            warnings,
            out,
        );
        return Ok(());
    }
    Err(FormatError::Shape(
        "a JSON object without `resourceSpans`".into(),
    ))
}

fn convert_resource(
    rs: ResourceSpans<'_>,
    interner: &mut Interner,
    warnings: &mut Warnings,
    out: &mut Vec<RawTrace>,
) {
    let mut res = Attrs::default();
    for kv in rs
        .resource
        .iter()
        .flat_map(|r| r.attributes.iter().flatten())
    {
        if let Some(v) = &kv.value {
            res.add(text_or_empty(&kv.key), &v.value());
        }
    }
    let service = service_sym(res.service.as_deref(), interner);
    let mut cache = super::TidCache::default();
    for ss in rs.scope_spans.into_iter().flatten() {
        for s in ss.spans.into_iter().flatten() {
            let (Some(tid), Some(sid)) = (s.trace_id.as_deref(), s.span_id.as_deref()) else {
                warnings.add_with(WarningKind::MalformedSpan, || {
                    "an OTLP span without traceId or spanId".into()
                });
                continue;
            };
            let raw_tid = tid;
            let id = span_id(sid, interner);
            let operation = interner.intern(text_or_empty(&s.name));
            let start = s
                .start
                .as_ref()
                .and_then(|v| v.as_i64())
                .filter(|&t| t != 0);
            let end = s.end.as_ref().and_then(|v| v.as_i64()).filter(|&t| t != 0);
            let duration = match (start, end) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                _ => None,
            };
            let mut span = Span::timed(id, service, operation, start, duration);
            span.kind = match &s.kind {
                Some(NumOrText::Text(t)) => SpanKind::parse(t),
                Some(n) => n
                    .as_i64()
                    .map(|k| SpanKind::parse(&k.to_string()))
                    .unwrap_or_default(),
                None => SpanKind::Unspecified,
            };
            if let Some(p) = s.parent_span_id.as_deref() {
                if !p.is_empty() {
                    span.parent_id = Some(span_id(p, interner));
                }
            }
            let mut a = Attrs::default();
            for kv in s.attributes.iter().flatten() {
                if let Some(v) = &kv.value {
                    a.add(text_or_empty(&kv.key), &v.value());
                }
            }
            if let Some(code) = s.status.as_ref().and_then(|st| st.code.as_ref()) {
                let is_err = match code {
                    NumOrText::Text(t) => {
                        t.eq_ignore_ascii_case("STATUS_CODE_ERROR")
                            || t.eq_ignore_ascii_case("ERROR")
                            || t.trim() == "2"
                    }
                    n => n.as_i64() == Some(2),
                };
                if is_err {
                    a.error = true;
                }
            }
            for e in s.events.iter().flatten() {
                if e.name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case("exception"))
                {
                    a.error = true;
                }
            }
            if a.host.is_none() {
                a.host = res.host.clone();
            }
            a.apply(&mut span, interner);
            super::push_span(out, cache.get(raw_tid), span);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::flags;

    #[test]
    fn hex_and_base64_enums_as_names() {
        let json = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},
          "scopeSpans":[{"spans":[
            {"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174","name":"a","kind":"SPAN_KIND_SERVER",
             "startTimeUnixNano":"1000","endTimeUnixNano":"5000","status":{"code":"STATUS_CODE_ERROR"}},
            {"traceId":"W47/95gDgQPSabYzgT/GDA==","spanId":"7uGbfsPBsXU=","parentSpanId":"7uGbfsPBsXQ=","name":"b","kind":3,
             "startTimeUnixNano":2000,"endTimeUnixNano":3000}
          ]}]}]}"#;
        let mut i = Interner::new();
        let mut w = Warnings::default();
        let t = parse(json, &mut i, &mut w).expect("parse");
        assert_eq!(t.len(), 1, "hex and base64 ids name the same trace");
        let s = &t[0].spans;
        assert_eq!(s[0].kind, SpanKind::Server);
        assert!(s[0].has(flags::ERROR));
        assert_eq!(s[0].duration, 4000);
        assert_eq!(s[1].kind, SpanKind::Client);
        assert_eq!(s[1].parent_id, Some(s[0].id));
        assert_eq!(i.name(s[1].service), "svc");
    }
}
