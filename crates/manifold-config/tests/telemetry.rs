//! `[telemetry]`: defaults, accepted values, and every bad value reported at its line.

use manifold_config::{compile, AccessLog, ParentSampled};
use std::time::Duration;

fn errors(src: &str) -> Vec<(usize, usize, String)> {
    match compile("t.toml".as_ref(), src) {
        Ok(_) => panic!("expected errors for:\n{src}"),
        Err(e) => e
            .errors
            .into_iter()
            .map(|e| (e.line, e.column, e.message))
            .collect(),
    }
}

fn bad(src: &str, line: usize, part: &str) {
    let errs = errors(src);
    assert!(
        errs.iter()
            .any(|(l, c, m)| *l == line && *c > 0 && m.contains(part)),
        "wanted an error on line {line} mentioning {part:?}, got {errs:#?}"
    );
}

#[test]
fn absent_section_has_metrics_and_tracing_without_export() {
    let c = compile("t.toml".as_ref(), "").expect("empty config");
    let t = c.telemetry;
    assert_eq!(t.service_name, "manifold");
    assert!((t.sample_ratio - 1.0).abs() < f64::EPSILON);
    assert!(t.otlp.is_none() && t.keep_slower_than.is_none());
    assert_eq!(t.access_log, AccessLog::Off);
    assert_eq!(t.parent_sampled, ParentSampled::Follow);
    assert!(t.metrics && t.tracing);
}

#[test]
fn parent_sampled_takes_its_three_values() {
    for (v, want) in [
        ("follow", ParentSampled::Follow),
        ("trusted_proxies", ParentSampled::TrustedProxies),
        ("ignore", ParentSampled::Ignore),
    ] {
        let src = format!("[telemetry]\nparent_sampled = \"{v}\"\n");
        let t = compile("t.toml".as_ref(), &src).expect("valid").telemetry;
        assert_eq!(t.parent_sampled, want, "{v}");
    }
}

#[test]
fn the_architecture_example_compiles() {
    let src = r#"[telemetry]
service_name = "edge"
sample_ratio = 0.25
keep_slower_than = "300ms"
otlp = { endpoint = "http://127.0.0.1:4318", timeout = "2s", queue_capacity = 100 }
access_log = "json"
"#;
    let t = compile("t.toml".as_ref(), src).expect("valid").telemetry;
    assert_eq!(t.service_name, "edge");
    assert!((t.sample_ratio - 0.25).abs() < f64::EPSILON);
    assert_eq!(t.keep_slower_than, Some(Duration::from_millis(300)));
    let o = t.otlp.expect("otlp");
    assert_eq!(o.endpoint, "http://127.0.0.1:4318");
    assert_eq!((o.timeout, o.queue_capacity), (Duration::from_secs(2), 100));
    assert_eq!(t.access_log, AccessLog::Json);
}

#[test]
fn an_integer_ratio_is_a_ratio() {
    for (src, want) in [("sample_ratio = 1", 1.0), ("sample_ratio = 0", 0.0)] {
        let t = compile("t.toml".as_ref(), &format!("[telemetry]\n{src}\n"))
            .expect("valid")
            .telemetry;
        assert!((t.sample_ratio - want).abs() < f64::EPSILON, "{src}");
    }
}

#[test]
fn bad_values_are_reported_at_their_line() {
    bad("[telemetry]\nsample_ratio = 1.5\n", 2, "from 0.0 to 1.0");
    bad("[telemetry]\nsample_ratio = -0.1\n", 2, "from 0.0 to 1.0");
    bad("[telemetry]\nsample_ratio = nan\n", 2, "from 0.0 to 1.0");
    bad("[telemetry]\nsample_ratio = inf\n", 2, "from 0.0 to 1.0");
    bad("[telemetry]\nkeep_slower_than = \"0s\"\n", 2, "more than 0");
    bad(
        "[telemetry]\nkeep_slower_than = \"soon\"\n",
        2,
        "not a duration",
    );
    bad("[telemetry]\nservice_name = \"\"\n", 2, "service_name");
    bad("[telemetry]\naccess_log = \"xml\"\n", 2, "\"json\"");
    bad(
        "[telemetry]\nparent_sampled = \"trusted\"\n",
        2,
        "\"follow\", \"trusted_proxies\" or \"ignore\"",
    );
    // https collectors are accepted (checked against the system's roots).
    let https = "[telemetry]\notlp = { endpoint = \"https://c:4318\" }\n";
    assert!(manifold_config::compile("t.toml".as_ref(), https).is_ok());
    bad(
        "[telemetry]\notlp = { endpoint = \"grpc://c:4317\" }\n",
        2,
        "scheme must be http",
    );
    bad(
        "[telemetry]\notlp = { endpoint = \"http://c:4318/?a=1\" }\n",
        2,
        "query",
    );
    bad(
        "[telemetry]\notlp = { endpoint = \"http://u:p@c:4318\" }\n",
        2,
        "user info",
    );
    bad(
        "[telemetry]\notlp = { endpoint = \"http://c:4318\", timeout = \"0s\" }\n",
        2,
        "timeout",
    );
    bad(
        "[telemetry]\notlp = { endpoint = \"http://c:4318\", queue_capacity = 0 }\n",
        2,
        "queue_capacity",
    );
    bad(
        "[telemetry]\notlp = { endpoint = \"http://c:4318\", queue_capacity = 99999999999 }\n",
        2,
        "queue_capacity",
    );
    bad("[telemetry]\nsampling = 1\n", 2, "unknown field");
    bad(
        "[telemetry]\ntracing = false\notlp = { endpoint = \"http://c:4318\" }\n",
        1,
        "no span would be exported",
    );
}

#[test]
fn the_trace_store_is_on_by_default_and_bounded_by_traces() {
    use manifold_config::TraceStoreSettings;
    let t = compile("t.toml".as_ref(), "").expect("empty").telemetry;
    assert_eq!(t.traces, Some(TraceStoreSettings::default()));
    let t = compile(
        "t.toml".as_ref(),
        "[telemetry]\ntraces = { recent = 5, slowest = 0, errors_for = \"90s\" }\n",
    )
    .expect("valid")
    .telemetry;
    assert_eq!(
        t.traces,
        Some(TraceStoreSettings {
            recent: 5,
            slowest: 0,
            errors_for: Duration::from_secs(90),
            max_errors: 100,
        })
    );
    for off in [
        "traces = false",
        "traces = { recent = 0 }",
        "tracing = false",
        "tracing = false\ntraces = false",
    ] {
        let t = compile("t.toml".as_ref(), &format!("[telemetry]\n{off}\n"))
            .expect("valid")
            .telemetry;
        assert_eq!(t.traces, None, "{off}");
    }
    let t = compile("t.toml".as_ref(), "[telemetry]\ntraces = true\n")
        .expect("valid")
        .telemetry;
    assert_eq!(t.traces, Some(TraceStoreSettings::default()));
}

#[test]
fn bad_trace_store_bounds_name_the_key() {
    bad(
        "[telemetry]\ntraces = { recent = -1 }\n",
        2,
        "traces.recent",
    );
    bad(
        "[telemetry]\ntraces = { recent = 1.5 }\n",
        2,
        "traces.recent",
    );
    bad(
        "[telemetry]\ntraces = { slowest = 99999999999 }\n",
        2,
        "traces.slowest` must be a whole number from 0 to 10000",
    );
    bad(
        "[telemetry]\ntraces = { max_errors = \"10\" }\n",
        2,
        "traces.max_errors",
    );
    bad(
        "[telemetry]\ntraces = { errors_for = \"0s\" }\n",
        2,
        "errors_for",
    );
    bad(
        "[telemetry]\ntraces = { errors_for = \"forever\" }\n",
        2,
        "errors_for",
    );
    bad(
        "[telemetry]\ntraces = { errors_for = \"2d\" }\n",
        2,
        "at most 24h",
    );
    bad(
        "[telemetry]\ntraces = { keep = 3 }\n",
        2,
        "unknown key `keep`",
    );
    bad(
        "[telemetry]\ntraces = \"yes\"\n",
        2,
        "true, false or a table",
    );
    bad(
        "[telemetry]\ntracing = false\ntraces = { recent = 10 }\n",
        3,
        "tracing = false",
    );
}
