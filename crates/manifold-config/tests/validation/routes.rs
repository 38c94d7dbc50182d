//! Routes and calls: the DAG they compile to, and each rule's error naming what and where.

use super::*;

#[test]
fn the_architecture_example_shape_compiles_into_a_dag() {
    let src = format!(
        r#"{UPSTREAMS}
[routes.checkout]
method = "post"
path = "/checkout"
deadline = "1s"
  [[routes.checkout.calls]]
  name = "order"
  upstream = "a"
  method = "POST"
  path = "/orders"
  body = "{{request.body}}"
  expect = "150ms"
  [[routes.checkout.calls]]
  name = "payment"
  upstream = "b"
  method = "POST"
  path = "/payments"
  body = {{ order_id = "{{order.id}}", amount = "{{request.body.total}}" }}
  expect = "200ms"
  [[routes.checkout.calls]]
  name = "inventory"
  upstream = "b"
  path = "/inventory/{{order.id}}"
  expect = "100ms"
  [[routes.checkout.calls]]
  name = "confirm"
  upstream = "a"
  path = "/orders/{{order.id}}/confirm"
  after = ["payment", "inventory"]
  expect = "50ms"
"#
    );
    let cfg = compile("t.toml".as_ref(), &src).unwrap();
    let route = cfg.route("checkout").unwrap();
    assert_eq!(route.method, http::Method::POST);
    let RouteKind::Compose(plan) = &route.kind else {
        panic!()
    };
    assert_eq!(plan.deps, vec![vec![], vec![0], vec![0], vec![0, 1, 2]]);
    assert_eq!(plan.roots, vec![0]);
    assert_eq!(plan.levels, vec![vec![0], vec![1, 2], vec![3]]);
    assert!(plan.reads_request_body);
    let (path, total) = plan.critical_path().unwrap();
    assert_eq!(path, vec![0, 1, 3]);
    assert_eq!(total, std::time::Duration::from_millis(400));
    assert_eq!(plan.calls[0].mode, Mode::Sync);
    assert_eq!(cfg.upstream("b").unwrap().endpoints[1].base_path, "/base");
    let text = manifold_config::describe(&cfg);
    assert!(
        text.contains(
            "critical path: order → payment → confirm = 400ms (one after another: 500ms)"
        ),
        "{text}"
    );
    assert!(text.contains("level 1: payment, inventory"), "{text}");
}

#[test]
fn unknown_upstream() {
    let src = format!("{UPSTREAMS}[routes.r]\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"x\"\n  upstream = \"nope\"\n");
    one(
        &src,
        ErrorKind::UnknownName,
        "upstream = \"nope\"",
        "unknown upstream `nope`",
    );
}

#[test]
fn unknown_call_reference() {
    let src = format!("{UPSTREAMS}[routes.r]\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"x\"\n  upstream = \"a\"\n  path = \"/x/{{ghost.id}}\"\n");
    one(
        &src,
        ErrorKind::UnknownName,
        "ghost",
        "unknown call `ghost`",
    );
}

#[test]
fn unknown_path_parameter() {
    let src = format!("{UPSTREAMS}[routes.r]\npath = \"/r/{{id}}\"\n  [[routes.r.calls]]\n  name = \"x\"\n  upstream = \"a\"\n  path = \"/x/{{path.idd}}\"\n");
    one(
        &src,
        ErrorKind::UnknownName,
        "path.idd",
        "no parameter `idd`",
    );
}

#[test]
fn after_naming_nothing() {
    let src = format!("{UPSTREAMS}[routes.r]\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"x\"\n  upstream = \"a\"\n  after = [\"later\"]\n");
    one(
        &src,
        ErrorKind::UnknownName,
        "after = ",
        "`after` names `later`",
    );
}

#[test]
fn duplicate_call_names() {
    let src = format!("{UPSTREAMS}[routes.r]\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"x\"\n  upstream = \"a\"\n  [[routes.r.calls]]\n  name = \"x\" # again\n  upstream = \"b\"\n");
    one(
        &src,
        ErrorKind::Duplicate,
        "# again",
        "two calls are named `x`",
    );
}

#[test]
fn cycles_are_named() {
    let src = format!(
        "{UPSTREAMS}[routes.r]\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"x\"\n  upstream = \"a\"\n  path = \"/{{z.id}}\"\n  [[routes.r.calls]]\n  name = \"y\"\n  upstream = \"a\"\n  path = \"/{{x.id}}\"\n  [[routes.r.calls]]\n  name = \"z\"\n  upstream = \"a\"\n  after = [\"y\"]\n"
    );
    let errs = errors(&src);
    let cycle = errs
        .iter()
        .find(|e| e.2 == ErrorKind::Cycle)
        .expect("a cycle error");
    assert!(
        cycle.3.contains("x → y → z → x")
            || cycle.3.contains("y → z → x → y")
            || cycle.3.contains("z → x → y → z"),
        "{}",
        cycle.3
    );
    // A call that reads itself is a cycle of one.
    let src = format!("{UPSTREAMS}[routes.r]\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"x\"\n  upstream = \"a\"\n  path = \"/{{x.id}}\"\n");
    one(&src, ErrorKind::Cycle, "name = \"x\"", "x → x");
}

#[test]
fn bad_durations_urls_methods_and_addresses() {
    let src = "[server]\nlisten = \"localhost\"\n[upstreams.a]\nendpoints = [\"ftp://x\", \"http://127.0.0.1:1?q=1\", \"not a url\"]\ntimeout = \"fast\"\n[routes.r]\npath = \"/r\"\nmethod = \"G E T\"\ndeadline = \"10 parsecs\"\nproxy = \"a\"\n";
    let errs = errors(src);
    let lines: Vec<usize> = errs.iter().map(|e| e.0).collect();
    for needle in ["listen", "endpoints", "timeout", "method", "deadline"] {
        assert!(
            lines.contains(&line_of(src, needle)),
            "no error on the {needle} line: {errs:#?}"
        );
    }
    assert!(
        errs.iter()
            .filter(|e| e.0 == line_of(src, "endpoints"))
            .count()
            == 3,
        "{errs:#?}"
    );
    assert!(errs
        .iter()
        .any(|e| e.3.contains("\"fast\" is not a duration")));
    // All of them at once, not one per run.
    assert!(errs.len() >= 7, "{errs:#?}");
}

#[test]
fn conflicting_routes() {
    let src = format!(
        "{UPSTREAMS}[routes.one]\npath = \"/u/{{id}}\"\nproxy = \"a\"\n[routes.two]\npath = \"/u/{{name}}\" # clash\nproxy = \"b\"\n[routes.three]\nmethod = \"POST\"\npath = \"/u/{{x}}\"\nproxy = \"b\"\n"
    );
    let errs = errors(&src);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    one(
        &src,
        ErrorKind::RouteConflict,
        "# clash",
        "both match GET /u/{name}",
    );
}

#[test]
fn async_results_are_receipts_only_the_response_may_read() {
    let ok = format!("{UPSTREAMS}[routes.r]\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"x\"\n  upstream = \"a\"\n  mode = \"async\"\n  [[routes.r.calls]]\n  name = \"y\"\n  upstream = \"b\"\n  after = [\"x\"]\n  [routes.r.response]\n  body = {{ task = \"{{x.task_id}}\" }}\n");
    let cfg = compile("t.toml".as_ref(), &ok).unwrap();
    let RouteKind::Compose(plan) = &cfg.routes[0].kind else {
        panic!()
    };
    assert_eq!(plan.calls[0].mode, Mode::Async);
    let src = format!("{UPSTREAMS}[routes.r]\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"x\"\n  upstream = \"a\"\n  mode = \"async\"\n  [[routes.r.calls]]\n  name = \"y\" # reader\n  upstream = \"b\"\n  path = \"/{{x.task_id}}\"\n");
    one(&src, ErrorKind::Value, "# reader", "which is async");
}

#[test]
fn syntax_and_unknown_keys_have_locations() {
    let src = "[upstreams.a]\nendpoints = [\"http://127.0.0.1:1\"]\ntimeot = \"1s\"\n";
    one(src, ErrorKind::Syntax, "timeot", "timeot");
    let src = "[routes.r\npath = 1\n";
    let errs = errors(src);
    assert_eq!(errs[0].0, 1);
}

#[test]
fn template_syntax_errors() {
    let src = format!("{UPSTREAMS}[routes.r]\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"x\"\n  upstream = \"a\"\n  path = \"/x/{{oops\"\n");
    one(&src, ErrorKind::UnknownName, "oops", "unclosed");
}

#[test]
fn a_route_needs_calls_or_proxy_not_both() {
    let src = format!("{UPSTREAMS}[routes.r]\npath = \"/r\"\n");
    one(&src, ErrorKind::Value, "[routes.r]", "neither");
    let src = format!("{UPSTREAMS}[routes.r]\npath = \"/r\"\nproxy = \"a\"\n  [[routes.r.calls]]\n  name = \"x\"\n  upstream = \"a\"\n");
    one(&src, ErrorKind::Value, "proxy = ", "not both");
}

#[test]
fn examples_in_the_repository_are_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // Gateway configs only (simulator configs are named sim*.toml).
        if path.extension().is_some_and(|e| e == "toml") && !name.starts_with("sim") {
            manifold_config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            checked += 1;
        }
    }
    assert!(checked >= 1);
}

/// A duration that parses but that the clock cannot add (`Instant::now() + d` panicked on every
/// request to the route) or that sums past `Duration::MAX` (`describe` panicked in `manifold
/// check`) is refused with its line; so is a zero deadline or call timeout, which would fail
/// every request before anything is sent.
#[test]
fn absurd_deadlines_timeouts_and_hints_are_refused_with_their_line() {
    let huge = "18446744073709551615s";
    for (key, value, part) in [
        ("deadline", huge, "at most 24h"),
        ("deadline", "0s", "more than 0"),
        ("deadline", "25h", "at most 24h"),
    ] {
        let src = format!(
            "{UPSTREAMS}[routes.r]\npath = \"/r\"\n{key} = \"{value}\"\n  [[routes.r.calls]]\n  name = \"x\"\n  upstream = \"a\"\n  path = \"/x\"\n"
        );
        one(&src, ErrorKind::Value, &format!("{key} = "), part);
    }
    for (key, value, part) in [
        ("timeout", huge, "at most 24h"),
        ("timeout", "0ms", "more than 0"),
        ("expect", huge, "longer than a year"),
    ] {
        let src = format!(
            "{UPSTREAMS}[routes.r]\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"x\"\n  upstream = \"a\"\n  path = \"/x\"\n  {key} = \"{value}\"\n  [[routes.r.calls]]\n  name = \"y\"\n  upstream = \"a\"\n  path = \"/y/{{x.id}}\"\n  {key} = \"{value}\"\n"
        );
        one(&src, ErrorKind::Value, &format!("{key} = "), part);
    }
    // Every other duration key has the same ceiling (here a cache TTL).
    let src = format!(
        "{UPSTREAMS}[routes.r]\npath = \"/r\"\nproxy = \"a\"\ncache = {{ ttl = \"{huge}\" }}\n"
    );
    one(&src, ErrorKind::Value, "ttl = ", "longer than a year");
}

/// A call, a hook or a composed response setting a framing or hop-by-hop header is refused at
/// its key: `content-length = "{request.body.n}"` let a client have the call's rendered body
/// sent cut short (hyper sends the length it is given), before fields the template adds.
#[test]
fn framing_and_hop_by_hop_headers_cannot_be_set() {
    for name in [
        "content-length",
        "Transfer-Encoding",
        "te",
        "trailer",
        "connection",
        "keep-alive",
        "proxy-connection",
        "upgrade",
    ] {
        let call = format!(
            r#"{UPSTREAMS}
[routes.r]
path = "/r"
  [[routes.r.calls]]
  name = "c"
  upstream = "a"
  method = "POST"
  headers = {{ {name} = "{{request.body.n}}" }}
  body = {{ note = "{{request.body.note}}", role = "user" }}
"#
        );
        one(
            &call,
            ErrorKind::Value,
            &format!("headers = {{ {name}"),
            &format!("header `{name}` cannot be set"),
        );
        let response = format!(
            r#"{UPSTREAMS}
[routes.r]
path = "/r"
  [[routes.r.calls]]
  name = "c"
  upstream = "a"
  [routes.r.response]
  headers = {{ {name} = "7" }}
"#
        );
        one(
            &response,
            ErrorKind::Value,
            &format!("headers = {{ {name}"),
            &format!("response header `{name}` cannot be set"),
        );
        let hook = format!(
            r#"[queue]
backend = "embedded"
path = "/nonexistent/q"
{UPSTREAMS}
[routes.r]
path = "/r"
  [[routes.r.calls]]
  name = "c"
  upstream = "a"
  mode = "async"
  on_done = {{ upstream = "b", path = "/done", headers = {{ {name} = "1" }} }}
"#
        );
        one(
            &hook,
            ErrorKind::Value,
            "on_done = {",
            &format!("header `{name}` cannot be set"),
        );
    }
    // Other headers, and a publish call's message headers, are as before.
    let fine = format!(
        r#"{UPSTREAMS}
[routes.r]
path = "/r"
  [[routes.r.calls]]
  name = "c"
  upstream = "a"
  headers = {{ x-content-length = "{{request.body.n}}", content-type = "text/plain" }}
"#
    );
    compile("t.toml".as_ref(), &fine).expect("compiles");
}
