//! What flows between calls: reads versus `after`, the route's `enqueue` key, and the warning for
//! a required call that reads an optional one.

use manifold_config::{compile, Enqueue, ErrorKind, RouteKind};

use crate::support::line_of;

const UPSTREAM: &str = "[upstreams.u]\nendpoints = [\"http://127.0.0.1:7001\"]\n";

fn plan(cfg: &manifold_config::Config, route: &str) -> manifold_config::Plan {
    match cfg.route(route).map(|r| &r.kind) {
        Some(RouteKind::Compose(p)) => p.clone(),
        other => panic!("route {route}: {other:?}"),
    }
}

#[test]
fn a_required_call_reading_an_optional_one_is_a_warning_with_its_location() {
    let src = format!(
        r#"{UPSTREAM}
[routes.r]
path = "/r"
  [[routes.r.calls]]
  name = "recs"
  upstream = "u"
  optional = true
  [[routes.r.calls]]
  name = "top"
  upstream = "u"
  path = "/top/{{recs.first}}"
  [[routes.r.calls]]
  name = "soft"
  upstream = "u"
  path = "/soft/{{recs.first}}"
  optional = true
  [[routes.r.calls]]
  name = "later"
  upstream = "u"
  after = ["recs"]
"#
    );
    let cfg = compile("t.toml".as_ref(), &src).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.warnings.len(), 1, "{:#?}", cfg.warnings);
    let w = &cfg.warnings[0];
    assert_eq!(w.line, line_of(&src, "name = \"top\""));
    assert!(w.column > 0);
    assert!(
        w.message
            .contains("call `top` is required and reads `recs`, which is optional"),
        "{}",
        w.message
    );
    let shown = w.to_string();
    assert!(
        shown.starts_with("t.toml:") && shown.contains(": warning: "),
        "{shown}"
    );

    // Reads are the data edges; `after` orders only.
    let p = plan(&cfg, "r");
    let reads: Vec<&[usize]> = p.calls.iter().map(|c| c.reads.as_slice()).collect();
    assert_eq!(reads, [&[][..], &[0], &[0], &[]]);
    assert_eq!(p.deps[3], vec![0]);
}

#[test]
fn enqueue_defaults_to_on_success_and_takes_eager() {
    let route = |name: &str, enqueue: &str| {
        format!(
            r#"
[routes.{name}]
method = "POST"
path = "/{name}"
{enqueue}
  [[routes.{name}.calls]]
  name = "ship"
  upstream = "u"
  method = "POST"
  mode = "async"
"#
        )
    };
    let src = format!(
        "{UPSTREAM}{}{}{}",
        route("a", ""),
        route("b", "enqueue = \"eager\""),
        route("c", "enqueue = \"on_success\"")
    );
    let cfg = compile("t.toml".as_ref(), &src).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan(&cfg, "a").enqueue, Enqueue::OnSuccess);
    assert_eq!(plan(&cfg, "b").enqueue, Enqueue::Eager);
    assert_eq!(plan(&cfg, "c").enqueue, Enqueue::OnSuccess);
    let text = manifold_config::describe(&cfg);
    assert!(text.contains("enqueue: eager"), "{text}");
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
}

#[test]
fn enqueue_is_refused_where_it_means_nothing_or_is_misspelt() {
    let cases = [
        (
            "enqueue = \"later\"",
            "  [[routes.r.calls]]\n  name = \"s\"\n  upstream = \"u\"\n  mode = \"async\"\n",
            "is not one of",
        ),
        (
            "enqueue = \"eager\"",
            "  [[routes.r.calls]]\n  name = \"s\"\n  upstream = \"u\"\n",
            "this route has none",
        ),
        (
            "enqueue = \"eager\"",
            "proxy = \"u\"\n",
            "not to a proxy route",
        ),
    ];
    for (key, rest, part) in cases {
        let src = format!("{UPSTREAM}\n[routes.r]\npath = \"/r\"\n{key}\n{rest}");
        let errs = match compile("t.toml".as_ref(), &src) {
            Ok(_) => panic!("expected an error for {key} with\n{rest}"),
            Err(e) => e.errors,
        };
        assert!(
            errs.iter().any(|e| e.kind == ErrorKind::Value
                && e.line == line_of(&src, key)
                && e.message.contains(part)),
            "{key}: {errs:#?}"
        );
    }
}

/// The query parameters and headers a plan reads, from every template of the route (a call's
/// path, query, headers and body, its cache key, the response), once each and sorted (headers
/// in lower case): the gateway judges only these for UTF-8.
#[test]
fn a_plan_lists_the_query_parameters_and_headers_it_reads() {
    let src = format!(
        r#"{UPSTREAM}
[routes.r]
path = "/r"
  [[routes.r.calls]]
  name = "a"
  upstream = "u"
  path = "/a/{{query.zeta}}"
  query = {{ x = "{{query.alpha}}" }}
  headers = {{ x-tenant = "{{query.tenant}}", x-as = "{{header.X-User}}" }}
  cache = {{ ttl = "1s", key = "page:{{query.page}}:{{header.accept-language}}" }}
  [[routes.r.calls]]
  name = "b"
  upstream = "u"
  path = "/b/{{header.x-user}}"
  body = {{ v = "{{query.alpha}}" }}
  [routes.r.response]
  body = {{ a = "{{a}}", m = "{{query.mode}}", h = "{{header.x-trace}}" }}
[routes.none]
path = "/none"
  [[routes.none.calls]]
  name = "a"
  upstream = "u"
  path = "/a"
"#
    );
    let cfg = compile("t.toml".as_ref(), &src).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        plan(&cfg, "r").query_reads,
        ["alpha", "mode", "page", "tenant", "zeta"]
    );
    assert_eq!(
        plan(&cfg, "r").header_reads,
        ["accept-language", "x-trace", "x-user"]
    );
    assert!(plan(&cfg, "none").query_reads.is_empty());
    assert!(plan(&cfg, "none").header_reads.is_empty());
}
