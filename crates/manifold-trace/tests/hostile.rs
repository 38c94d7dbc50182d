//! What `manifold analyze` writes for hostile files: every output stays proportionate to what
//! the file holds, however long its names or however many its endpoints.

use std::io::Cursor;
use std::path::Path;

use manifold_trace::analysis::{Analyzer, Options, WhatIf};
use manifold_trace::read::analyze_stream;
use manifold_trace::report;

fn analyze(doc: String, opts: Options) -> Analyzer {
    let mut an = Analyzer::new(opts);
    analyze_stream(
        &mut an,
        Box::new(Cursor::new(doc.into_bytes())),
        Path::new("hostile.json"),
    )
    .expect("read");
    an
}

/// One trace: root `op` of service `svc` making `calls` sequential calls to `child`.
fn trace(tid: usize, svc: &str, op: &str, child: &str, calls: usize) -> String {
    let mut spans = vec![format!(
        r#"{{"traceID":"{tid:x}","spanID":"1","operationName":"{op}","references":[],"startTime":1000,"duration":100000,"processID":"p1"}}"#
    )];
    for k in 0..calls {
        spans.push(format!(
            r#"{{"traceID":"{tid:x}","spanID":"{:x}","operationName":"{child}","references":[{{"refType":"CHILD_OF","spanID":"1"}}],"startTime":{},"duration":1000,"processID":"p1"}}"#,
            k + 2,
            2000 + 2000 * k
        ));
    }
    format!(
        r#"{{"traceID":"{tid:x}","spans":[{}],"processes":{{"p1":{{"serviceName":"{svc}"}}}}}}"#,
        spans.join(",")
    )
}

/// A 16 MiB operation name is printed at most a few times a KiB, in every output (it was
/// printed whole about three times in the text report, six in JSON, seven in the HTML page:
/// 600 MB of it made 1.9, 3.8 and 4.4 GB).
#[test]
fn a_huge_name_does_not_swell_the_reports() {
    let huge = "n".repeat(16 << 20);
    let doc = format!(r#"{{"data":[{}]}}"#, trace(1, &huge, &huge, &huge, 3));
    let an = analyze(doc, Options::default());
    let rep = report::build(&an);
    let json = serde_json::to_string_pretty(&rep).expect("json");
    let text = report::render_text(&rep);
    let html = report::render_html(&an, &rep);
    for (what, out) in [("json", &json), ("text", &text), ("html", &html)] {
        assert!(out.len() < 64 << 10, "{what}: {} bytes", out.len());
    }
    assert_eq!(rep.traces, 1);
    // and the terminal report says what was cut, and where
    assert!(
        text.contains("long_text_cut: hostile.json: in the unit at byte 9"),
        "{text}"
    );
}

/// Many endpoints: the terminal report and the HTML page show the first ones and say how many
/// more there are (the JSON has them all).
#[test]
fn many_endpoints_are_summed_up_in_the_text_and_html_reports() {
    let traces: Vec<String> = (0..60)
        .map(|k| trace(k + 1, "s", &format!("root{k}"), &format!("call{k}"), 3))
        .collect();
    let doc = format!(r#"{{"data":[{}]}}"#, traces.join(","));
    let opts = Options {
        what_if: vec![WhatIf::parse("speedup:s:call0=50%").expect("what-if")],
        ..Options::default()
    };
    let an = analyze(doc, opts);
    let rep = report::build(&an);
    let endpoints = rep.what_if.as_ref().map_or(0, |w| w.endpoints.len());
    assert_eq!(endpoints, 60);
    let text = report::render_text(&rep);
    assert_eq!(text.matches(" before\n").count(), 15, "{text}");
    assert!(
        text.contains("… and 45 more endpoints (all of them in --json)"),
        "{text}"
    );
    let recs = rep.recommendations.len();
    assert!(recs > 50, "{recs} recommendations");
    let html = report::render_html(&an, &rep);
    assert_eq!(html.matches("<tr><td>batch</td>").count(), 50);
    assert!(
        html.contains(&format!("… and {} more recommendations", recs - 50)),
        "{html}"
    );
}
