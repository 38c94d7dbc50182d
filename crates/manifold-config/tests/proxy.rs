//! Proxy route keys and the edge's settings: `escaped_slashes`, `server.trusted_proxies`, `server.error_detail`.

use manifold_config::{compile, ErrorKind, EscapedSlashes, RouteKind};

use crate::support::{errors, line_of};

const BASE: &str = r#"[upstreams.a]
endpoints = ["http://127.0.0.1:7001"]
"#;

fn escaped(src: &str, route: &str) -> EscapedSlashes {
    let config = compile("t.toml".as_ref(), src).unwrap_or_else(|e| panic!("{e}"));
    match &config.route(route).unwrap().kind {
        RouteKind::Proxy {
            escaped_slashes, ..
        } => *escaped_slashes,
        RouteKind::Compose(_) => panic!("not a proxy route"),
    }
}

#[test]
fn escaped_slashes_default_to_reject_and_routes_may_keep_them() {
    let src = format!(
        "{BASE}[routes.p]\npath = \"/p/{{*r}}\"\nproxy = \"a\"\n[routes.k]\npath = \"/k/{{*r}}\"\nproxy = \"a\"\nescaped_slashes = \"keep\"\n"
    );
    assert_eq!(escaped(&src, "p"), EscapedSlashes::Reject);
    assert_eq!(escaped(&src, "k"), EscapedSlashes::Keep);
    let src = format!("[server]\nescaped_slashes = \"keep\"\n{src}");
    assert_eq!(escaped(&src, "p"), EscapedSlashes::Keep);
}

#[test]
fn proxy_key_errors_name_the_line() {
    let src = format!(
        r#"[server]
escaped_slashes = "decode"
trusted_proxies = ["10.0.0.0/8", "10.1.2.3/8", "proxy.internal", "fd00::/8"]
{BASE}
[routes.p]
path = "/p//{{*r}}"
proxy = "a"
escaped_slashes = "pass"
[routes.c]
path = "/c"
escaped_slashes = "keep"
  [[routes.c.calls]]
  name = "x"
  upstream = "a"
  path = "/x"
"#
    );
    let errs = errors(&src);
    let has = |needle: &str, part: &str| {
        assert!(
            errs.iter().any(|(line, col, k, msg)| *k == ErrorKind::Value
                && *line == line_of(&src, needle)
                && *col > 0
                && msg.contains(part)),
            "wanted an error on the line of {needle:?} mentioning {part:?}, got {errs:#?}"
        )
    };
    has(
        "escaped_slashes = \"decode\"",
        "`server.escaped_slashes` is \"decode\"",
    );
    has(
        "trusted_proxies",
        "\"10.1.2.3/8\" has bits set past its /8 prefix; did you mean \"10.0.0.0/8\"?",
    );
    has(
        "trusted_proxies",
        "\"proxy.internal\" is not an IP address or CIDR",
    );
    has("path = \"/p//", "matched after normalization");
    has("escaped_slashes = \"pass\"", "`routes.p.escaped_slashes`");
    has("escaped_slashes = \"keep\"", "applies to proxy routes only");
    assert_eq!(errs.len(), 6, "{errs:#?}");
}

#[test]
fn trusted_proxies_compile_to_networks() {
    let src = format!("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n{BASE}");
    let config = compile("t.toml".as_ref(), &src).unwrap();
    let nets: Vec<String> = config
        .server
        .trusted_proxies
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(nets, ["10.0.0.0/8", "::1/128"]);
    assert!(compile("t.toml".as_ref(), BASE)
        .unwrap()
        .server
        .trusted_proxies
        .is_empty());
}

#[test]
fn error_detail_is_full_or_brief() {
    use manifold_config::ErrorDetail;
    let c = compile("t.toml".as_ref(), "").expect("empty config");
    assert_eq!(c.server.error_detail, ErrorDetail::Full);
    let c = compile("t.toml".as_ref(), "[server]\nerror_detail = \"brief\"\n").expect("valid");
    assert_eq!(c.server.error_detail, ErrorDetail::Brief);
    let e = compile("t.toml".as_ref(), "[server]\nerror_detail = \"none\"\n").expect_err("bad");
    assert!(
        e.errors.iter().any(|e| e.line == 2
            && e.message.contains("\"full\"")
            && e.message.contains("\"brief\"")),
        "{e}"
    );
}

/// `check` says when the edge settings are not the defaults, on a line of their own.
#[test]
fn check_prints_the_edge_settings_when_they_are_set() {
    let text = manifold_config::describe(&compile("t.toml".as_ref(), BASE).expect("valid"));
    assert!(!text.contains("edge:"), "{text}");
    let src = format!(
        "[server]\nerror_detail = \"brief\"\ntrusted_proxies = [\"10.0.0.0/8\"]\n[telemetry]\nparent_sampled = \"ignore\"\n{BASE}"
    );
    let text = manifold_config::describe(&compile("t.toml".as_ref(), &src).expect("valid"));
    let edge = text
        .lines()
        .find(|l| l.starts_with("edge: "))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(
        edge,
        "edge: error detail brief; traceparent sampling ignored; 1 trusted proxy"
    );
}
