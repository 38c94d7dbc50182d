//! Hostile files against the reader's limits: what is kept of huge strings, units and traces,
//! and that deep nesting is an error rather than a crash.

use super::driver::{read_stream_with, FastPaths};
use super::*;
use crate::limits::{Limits, MAX_NAME};
use crate::model::{Sym, WarningKind};

fn read_with(doc: &[u8], limits: Limits) -> (Result<Vec<RawTrace>, ReadError>, Interner, Warnings) {
    let mut i = Interner::new();
    let mut w = Warnings::default();
    let mut out = Vec::new();
    let res = read_stream_with(
        Box::new(io::Cursor::new(doc.to_vec())),
        Path::new("hostile.json"),
        &mut i,
        &mut w,
        &mut |t, _, _| out.push(t),
        FastPaths::All,
        limits,
    )
    .map(|_| out);
    (res, i, w)
}

/// Bytes of every name the interner keeps.
fn kept(i: &Interner) -> usize {
    (0..i.len()).map(|k| i.name(k as Sym).len()).sum()
}

fn jaeger(op: &str, svc: &str, tid: &str) -> String {
    format!(
        r#"{{"data":[{{"traceID":"{tid}","spans":[{{"traceID":"{tid}","spanID":"a1","operationName":"{op}","references":[],"startTime":1,"duration":2,"processID":"p1","tags":[{{"key":"http.route","type":"string","value":"{op}"}}]}}],"processes":{{"p1":{{"serviceName":"{svc}","tags":[{{"key":"hostname","value":"{svc}"}}]}}}}}}]}}"#
    )
}

/// A 64 MiB operation name (also the route) keeps at most one name's worth of text: it was
/// interned whole, twice, and copied into every report row (600 MB of it took 8.7 GB).
#[test]
fn a_64_mib_span_name_keeps_one_name_of_text() {
    let huge = "n".repeat(64 << 20);
    let (res, i, w) = read_with(jaeger(&huge, "svc", "aa").as_bytes(), Limits::DEFAULT);
    let traces = res.expect("read");
    assert_eq!(traces.len(), 1);
    assert_eq!(traces[0].spans.len(), 1);
    assert!(
        kept(&i) <= MAX_NAME + 16,
        "{} bytes of names kept",
        kept(&i)
    );
    assert!(i.name(traces[0].spans[0].operation).ends_with('…'));
    assert!(w.count(WarningKind::LongTextCut) >= 1);
    let e = w.examples.iter().find(|e| e.starts_with("long_text_cut:"));
    assert!(
        e.is_some_and(|e| e.contains("hostile.json") && e.contains("at byte 9")),
        "{:?}",
        w.examples
    );
}

/// Every place a string can be, in each format, huge at once: names, services, hosts, routes
/// and trace ids are kept cut, the strings in the buffer cut to the string limit.
#[test]
fn huge_strings_anywhere_keep_bounded_text() {
    let huge = "z".repeat(3 << 20);
    let limits = Limits::DEFAULT;
    let otlp = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"{huge}"}}}}]}},"scopeSpans":[{{"spans":[{{"traceId":"{huge}","spanId":"{huge}","name":"{huge}","startTimeUnixNano":"1","endTimeUnixNano":"9","attributes":[{{"key":"{huge}","value":{{"stringValue":"{huge}"}}}},{{"key":"http.url","value":{{"stringValue":"http://h/{huge}"}}}}]}}]}}]}}]}}"#
    );
    let zipkin = format!(
        r#"[{{"traceId":"{huge}","id":"{huge}","name":"{huge}","timestamp":1,"duration":1,"localEndpoint":{{"serviceName":"{huge}","ipv4":"{huge}"}},"tags":{{"http.path":"{huge}","{huge}":"x"}}}}]"#
    );
    // an escape sends the Jaeger object through the general parser, which copies
    let esc = format!("{huge}\\n");
    for doc in [
        jaeger(&huge, &huge, &huge),
        jaeger(&esc, &esc, "aa"),
        otlp,
        zipkin,
    ] {
        let (res, i, w) = read_with(doc.as_bytes(), limits);
        let traces = res.expect("read");
        assert_eq!(traces.len(), 1, "{}", &doc[..40]);
        assert!(kept(&i) <= 8 * MAX_NAME, "{} bytes of names kept", kept(&i));
        assert!(
            traces[0].trace_id.len() <= MAX_NAME,
            "{}",
            traces[0].trace_id.len()
        );
        assert!(w.count(WarningKind::LongTextCut) >= 1);
    }
}

/// A unit over the unit limit is skipped with a warning that names the file and the place;
/// the units around it are read.
#[test]
fn a_unit_over_the_limit_is_skipped_and_said() {
    let small = r#"{"traceID":"1","spans":[{"traceID":"1","spanID":"a","operationName":"x","startTime":1,"duration":2}]}"#;
    // larger than one read of the file, so that the fast readers hand it to the scanner
    let big_tags = r#"{"key":"k","value":"v"},"#.repeat(20_000);
    let big = format!(
        r#"{{"traceID":"2","spans":[{{"traceID":"2","spanID":"a","operationName":"x","startTime":1,"duration":2,"tags":[{big_tags}{{"key":"k","value":"v"}}]}}]}}"#
    );
    let limits = Limits {
        unit: 4096,
        fast: 1024,
        ..Limits::DEFAULT
    };
    let doc = format!(r#"{{"data":[{small},{big},{small}]}}"#);
    let (res, _, w) = read_with(doc.as_bytes(), limits);
    assert_eq!(res.expect("read").len(), 2);
    assert_eq!(w.count(WarningKind::UnitTooLarge), 1);
    let at = doc.find(r#"{"traceID":"2""#).expect("big");
    let want = format!("hostile.json: the unit at byte {at} is {} bytes", big.len());
    assert!(
        w.examples.iter().any(|e| e.contains(&want)),
        "{want:?} in {:?}",
        w.examples
    );
    // the same unit as a whole file, and as a line of NDJSON
    for doc in [big.clone(), format!("{small}\n{big}\n")] {
        let (res, _, w) = read_with(doc.as_bytes(), limits);
        assert!(res.is_ok());
        assert_eq!(w.count(WarningKind::UnitTooLarge), 1);
    }
}

/// A trace keeps at most the span limit, whether it comes whole or loose across units.
#[test]
fn spans_past_the_limit_of_a_trace_are_dropped() {
    let span = |k: usize| {
        format!(
            r#"{{"traceID":"1","spanID":"{k:x}","operationName":"x","startTime":1,"duration":2}}"#
        )
    };
    let spans: Vec<String> = (1..=25).map(span).collect();
    let limits = Limits {
        trace_spans: 10,
        ..Limits::DEFAULT
    };
    let whole = format!(
        r#"{{"data":[{{"traceID":"1","spans":[{}]}}]}}"#,
        spans.join(",")
    );
    let loose = spans.join("\n");
    for doc in [whole, loose] {
        let (res, _, w) = read_with(doc.as_bytes(), limits);
        let t = res.expect("read");
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].spans.len(), 10);
        assert_eq!(w.count(WarningKind::TraceTooLarge), 15);
        assert!(w.examples.iter().any(|e| e.contains("more than 10 spans")));
    }
}

/// Nesting a million deep is an error naming the file where a parser has to descend into it,
/// and ignored where a value is only skipped; never a stack overflow.
#[test]
fn deep_nesting_is_an_error_or_ignored_not_a_crash() {
    let d = 1_000_000;
    let errors = [
        format!("{}{}", "[".repeat(d), "]".repeat(d)),
        format!(r#"{{"data":[{}1{}]}}"#, r#"{"a":"#.repeat(d), "}".repeat(d)),
        format!(
            r#"{{"resourceSpans":[{}{}]}}"#,
            "[".repeat(d),
            "]".repeat(d)
        ),
    ];
    for doc in errors {
        let (res, _, _) = read_with(doc.as_bytes(), Limits::DEFAULT);
        let e = res.expect_err("not a trace");
        assert!(e.to_string().contains("hostile.json"), "{e}");
    }
    let ignored = format!(
        r#"{{"data":[{{"traceID":"1","spans":[{{"spanID":"a","operationName":"x","startTime":1,"duration":1,"tags":[{{"key":"k","value":{}{}}}]}}]}}]}}"#,
        "[".repeat(d),
        "]".repeat(d)
    );
    let (res, _, _) = read_with(ignored.as_bytes(), Limits::DEFAULT);
    assert_eq!(res.expect("a tag value is not read").len(), 1);
}
