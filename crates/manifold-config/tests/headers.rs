//! A call's header names are parsed once, at load, beside the names as written: the gateway
//! sends the parsed ones (a custom name would otherwise be copied into a new buffer per call).

use manifold_config::{compile, RouteKind};

#[test]
fn call_header_names_are_parsed_at_load_in_the_order_of_the_headers() {
    let src = r#"[upstreams.u]
endpoints = ["http://127.0.0.1:7001"]
[routes.r]
method = "GET"
path = "/r"
  [[routes.r.calls]]
  name = "c"
  upstream = "u"
  path = "/x"
  headers = { X-Request-Id = "{query.rid}", accept = "application/json", x-b = "b" }
"#;
    let cfg = compile("t.toml".as_ref(), src).unwrap_or_else(|e| panic!("{e}"));
    let RouteKind::Compose(plan) = &cfg.routes[0].kind else {
        panic!("a composed route")
    };
    let call = &plan.calls[0];
    assert_eq!(call.headers.len(), 3);
    assert_eq!(call.header_names.len(), call.headers.len());
    for ((written, _), parsed) in call.headers.iter().zip(&call.header_names) {
        assert_eq!(parsed.as_str(), written, "lower-cased as written, in order");
    }
    assert!(call.header_names.iter().any(|h| h == "x-request-id"));
}
