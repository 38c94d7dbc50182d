//! Jaeger: the UI / `/api/traces` JSON (`traceID`, µs numbers, `processes` map) and the
//! api_v2 protobuf-JSON (`traceId` in base64, RFC 3339 `startTime`, `"0.000225s"` durations,
//! `process` inline or `processMap`), as a whole trace, an envelope `{"data":[…]}`, a gRPC-gateway
//! chunk `{"result":{"spans":[…]}}` or a single span.

use super::{trace_id, FormatError, RawTrace, TidCache};
use crate::model::{Interner, Warnings};

mod convert;
pub(crate) mod fast;
mod schema;

use convert::{convert_span_in, Processes, RefIn, SpanIn};
use schema::{JObj, JSpan};

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
    if let Some(inner) = obj.result {
        if inner.spans.is_some() || inner.span_id.is_some() || inner.data.is_some() {
            convert_obj(*inner, interner, warnings, &mut out)?;
        } else {
            // api_v3: OTLP inside `result`, which the OTLP reader unwraps itself.
            out = super::otlp::parse(bytes, interner, warnings)?;
        }
        return Ok(out);
    }
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
    if let Some(inner) = obj.result {
        // A `result` wrapper below the top (inside `data`): Jaeger's own JSON only.
        return convert_obj(*inner, interner, warnings, out);
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
            procs.add(&k.0, &p, interner);
        }
    }
    if let Some(list) = obj.process_map {
        for e in list {
            if let (Some(id), Some(p)) = (e.process_id, e.process) {
                procs.add(&id.0, &p, interner);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{flags, SpanId, SpanKind};

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

    /// api_v3 wraps OTLP/JSON in `result`: this reader hands the document to the OTLP one.
    #[test]
    fn api_v3_otlp_inside_result() {
        let json = br#"{"result":{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},
            "scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"op",
            "kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000"}]}]}]}}"#;
        let mut i = Interner::new();
        let mut w = Warnings::default();
        let t = parse(json, &mut i, &mut w).expect("parse");
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].spans.len(), 1);
        assert_eq!(i.name(t[0].spans[0].service), "svc");
        assert_eq!(t[0].spans[0].duration, 1_000_000_000);
    }

    #[test]
    fn not_a_trace() {
        let mut i = Interner::new();
        let mut w = Warnings::default();
        assert!(parse(br#"{"hello":1}"#, &mut i, &mut w).is_err());
        assert!(parse(b"[1,2", &mut i, &mut w).is_err());
    }
}
