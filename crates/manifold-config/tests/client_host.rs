//! A call's `host` header rendered from the client's request is a warning at its line: any
//! client could pick which virtual host of the upstream it reaches.

use manifold_config::compile;

use crate::support::line_of;

fn warnings(host: &str) -> (String, Vec<manifold_config::ConfigWarning>) {
    let src = format!(
        r#"[upstreams.u]
endpoints = ["http://127.0.0.1:7001"]
[routes.r]
method = "POST"
path = "/r/{{id}}"
  [[routes.r.calls]]
  name = "info"
  upstream = "u"
  path = "/info"
  [[routes.r.calls]]
  name = "c"
  upstream = "u"
  path = "/c"
  headers = {{ host = "{host}" }}
"#
    );
    let cfg = compile("t.toml".as_ref(), &src).unwrap_or_else(|e| panic!("{src}\n{e}"));
    (src, cfg.warnings)
}

#[test]
fn a_host_header_from_the_client_is_a_warning() {
    for (host, what) in [
        ("{header.host}", "request header `host`"),
        ("{query.tenant}.internal", "query parameter `tenant`"),
        ("{path.id}.internal", "path parameter `id`"),
        ("{request.body.site}", "request body"),
    ] {
        let (src, w) = warnings(host);
        assert_eq!(w.len(), 1, "{host}: {w:?}");
        assert_eq!(w[0].line, line_of(&src, "headers ="), "{host}");
        assert!(w[0].message.contains(what), "{host}: {}", w[0].message);
        assert!(w[0].message.contains("virtual host"), "{}", w[0].message);
    }
}

#[test]
fn a_fixed_host_or_one_from_a_call_is_not() {
    for host in ["api.internal", "{info.host}"] {
        let (_, w) = warnings(host);
        assert!(w.is_empty(), "{host}: {w:?}");
    }
}

/// A hook to an upstream sends its `host` as a call does (the delivery keeps a `Host` the task
/// carries): rendered from the client's request, it is the same warning, at the hook's line.
#[test]
fn a_hooks_host_header_from_the_client_is_a_warning() {
    let src = r#"[upstreams.u]
endpoints = ["http://127.0.0.1:7001"]
[routes.r]
method = "POST"
path = "/r"
  [[routes.r.calls]]
  name = "c"
  upstream = "u"
  path = "/c"
  mode = "async"
  on_done = { upstream = "u", path = "/done", headers = { host = "{header.x-site}" } }
  on_dead = { upstream = "u", path = "/dead", headers = { host = "api.internal" } }
"#;
    let cfg = compile("t.toml".as_ref(), src).unwrap_or_else(|e| panic!("{src}\n{e}"));
    let w = cfg.warnings;
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].line, line_of(src, "on_done ="));
    assert!(
        w[0].message.contains("request header `x-site`"),
        "{}",
        w[0].message
    );
    assert!(w[0].message.contains("on_done"), "{}", w[0].message);
}
