use manifold_config::{compile, ErrorKind, Mode, RouteKind};
use std::time::Duration;

const UPSTREAMS: &str = r#"[upstreams.a]
endpoints = ["http://127.0.0.1:7001"]
[upstreams.b]
endpoints = ["http://127.0.0.1:7002", "http://127.0.0.1:7012/base/"]
"#;

fn errors(src: &str) -> Vec<(usize, usize, ErrorKind, String)> {
    match compile("t.toml".as_ref(), src) {
        Ok(_) => panic!("expected errors for:\n{src}"),
        Err(e) => {
            let rendered = e.to_string();
            assert!(rendered.contains("t.toml:"), "{rendered}");
            e.errors
                .into_iter()
                .map(|e| (e.line, e.column, e.kind, e.message))
                .collect()
        }
    }
}

/// The 1-based line of the first line containing `needle`.
fn line_of(src: &str, needle: &str) -> usize {
    src.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle} not in source"))
        + 1
}

fn one(src: &str, kind: ErrorKind, needle_line: &str, message_part: &str) {
    let errs = errors(src);
    assert!(
        errs.iter().any(|(line, col, k, msg)| *k == kind
            && *line == line_of(src, needle_line)
            && *col > 0
            && msg.contains(message_part)),
        "wanted {kind:?} on the line of {needle_line:?} mentioning {message_part:?}, got {errs:#?}"
    );
}

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
fn server_limits_compile_and_bad_ones_name_the_line() {
    let ok = format!(
        "[server]\nbody_read_timeout = \"5s\"\nmax_connections = 64\ndrain_timeout = \"0s\"\n{UPSTREAMS}[routes.r]\npath = \"/r\"\nproxy = \"a\"\n"
    );
    let config = compile("t.toml".as_ref(), &ok).expect("valid");
    assert_eq!(config.server.body_read_timeout, Duration::from_secs(5));
    assert_eq!(config.server.max_connections, 64);
    assert_eq!(config.server.drain_timeout, Duration::ZERO);
    // Defaults where unset.
    let plain = format!("{UPSTREAMS}[routes.r]\npath = \"/r\"\nproxy = \"a\"\n");
    let config = compile("t.toml".as_ref(), &plain).expect("valid");
    assert_eq!(config.server.body_read_timeout, Duration::from_secs(30));
    assert_eq!(config.server.max_connections, 8192);

    let bad = format!(
        "[server]\nheader_read_timeout = \"0s\"\nbody_read_timeout = \"soon\"\nmax_connections = 0\n{UPSTREAMS}[routes.r]\npath = \"/r\"\nproxy = \"a\"\n"
    );
    one(
        &bad,
        ErrorKind::Value,
        "header_read_timeout",
        "`server.header_read_timeout` must be more than 0",
    );
    one(
        &bad,
        ErrorKind::Value,
        "body_read_timeout",
        "`server.body_read_timeout`: \"soon\" is not a duration",
    );
    one(
        &bad,
        ErrorKind::Value,
        "max_connections",
        "`server.max_connections` must be more than 0",
    );
}

#[test]
fn drain_delay_and_h2_idle_timeout_have_defaults_and_are_checked() {
    let plain = format!("{UPSTREAMS}[routes.r]\npath = \"/r\"\nproxy = \"a\"\n");
    let config = compile("t.toml".as_ref(), &plain).expect("valid");
    assert_eq!(config.server.drain_delay, Duration::from_secs(5));
    assert_eq!(config.server.h2_idle_timeout, Duration::from_secs(300));
    let ok = format!(
        "[server]\ndrain_delay = \"0s\"\nh2_idle_timeout = \"250ms\"\n{UPSTREAMS}[routes.r]\npath = \"/r\"\nproxy = \"a\"\n"
    );
    let config = compile("t.toml".as_ref(), &ok).expect("valid");
    assert_eq!(config.server.drain_delay, Duration::ZERO);
    assert_eq!(config.server.h2_idle_timeout, Duration::from_millis(250));
    let bad = format!(
        "[server]\ndrain_delay = \"later\"\nh2_idle_timeout = \"0s\"\n{UPSTREAMS}[routes.r]\npath = \"/r\"\nproxy = \"a\"\n"
    );
    one(
        &bad,
        ErrorKind::Value,
        "drain_delay",
        "`server.drain_delay`: \"later\" is not a duration",
    );
    one(
        &bad,
        ErrorKind::Value,
        "h2_idle_timeout",
        "`server.h2_idle_timeout` must be more than 0",
    );
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

/// A route with one sync call `order` and a publish call `shipped`; `extra` is spliced into the
/// publish call's table, `events` after the upstreams.
fn publish_route(events: &str, extra: &str) -> String {
    format!(
        "{UPSTREAMS}{events}[routes.r]\nmethod = \"POST\"\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"order\"\n  upstream = \"a\"\n  [[routes.r.calls]]\n  name = \"shipped\"\n  mode = \"publish\" # mode\n{extra}"
    )
}

const EVENTS: &str = "[events]\nbackend = \"nats\"\n";

#[test]
fn publish_calls_compile_with_their_subject_and_are_described() {
    let src = publish_route(
        EVENTS,
        "  subject = \"orders.created\"\n  body = { order_id = \"{order.id}\" }\n  headers = { x-tenant = \"{header.x-tenant}\" }\n  [routes.r.response]\n  status = 202\n  body = { order = \"{order}\", event = \"{shipped.task_id}\" }\n",
    );
    let cfg = compile("t.toml".as_ref(), &src).unwrap();
    let RouteKind::Compose(plan) = &cfg.routes[0].kind else {
        panic!()
    };
    let call = &plan.calls[1];
    assert_eq!(call.mode, Mode::Publish);
    assert_eq!(call.subject.as_deref(), Some("orders.created"));
    assert_eq!(call.upstream_name, "");
    // It reads `order`, so it runs after it.
    assert_eq!(plan.deps[1], vec![0]);
    let events = cfg.events.as_ref().expect("[events]");
    assert_eq!(events.backend, manifold_queue::EventsBackend::Nats);
    let text = manifold_config::describe(&cfg);
    assert!(
        text.contains("shipped ⇢ publish orders.created  (after order)"),
        "{text}"
    );

    let src = publish_route(
        "[events]\nbackend = \"rabbitmq\"\nexchange = \"shop.events\"\ntimeout = \"2s\"\n",
        "  subject = \"orders.created\"\n  body = \"{request.body}\"\n",
    );
    let cfg = compile("t.toml".as_ref(), &src).unwrap();
    let events = cfg.events.unwrap();
    assert_eq!(events.exchange_or_default(), "shop.events");
    assert_eq!(events.timeout, Duration::from_secs(2));
}

#[test]
fn publish_call_rules_name_the_line() {
    // No [events] section to publish to.
    let src = publish_route("", "  subject = \"orders.created\"\n  body = {}\n");
    one(&src, ErrorKind::Value, "# mode", "no `[events]` section");
    // No subject.
    let src = publish_route(EVENTS, "  body = {}\n");
    one(&src, ErrorKind::Value, "# mode", "needs a `subject`");
    // No body.
    let src = publish_route(EVENTS, "  subject = \"orders.created\"\n");
    one(&src, ErrorKind::Value, "# mode", "needs a `body`");
    // Subjects are literal, dot-separated, without spaces or wildcards.
    for (bad, why) in [
        ("orders.*", "wildcard"),
        ("orders.>", "wildcard"),
        ("orders created", "no spaces"),
        ("", "empty"),
        ("orders..created", "empty token"),
    ] {
        let src = publish_route(
            EVENTS,
            &format!("  subject = \"{bad}\" # subject\n  body = {{}}\n"),
        );
        one(&src, ErrorKind::Value, "# subject", why);
    }
    let long = "a".repeat(256);
    let src = publish_route(
        EVENTS,
        &format!("  subject = \"{long}\" # subject\n  body = {{}}\n"),
    );
    one(&src, ErrorKind::Value, "# subject", "at most 255");
    // An upstream (or any HTTP-only key) would be silently ignored: refused.
    let src = publish_route(
        EVENTS,
        "  subject = \"orders.created\"\n  body = {}\n  upstream = \"a\" # up\n",
    );
    one(&src, ErrorKind::Value, "# up", "remove `upstream`");
    for key in [
        "method = \"POST\"",
        "path = \"/x\"",
        "timeout = \"1s\"",
        "query = { a = \"b\" }",
    ] {
        let src = publish_route(
            EVENTS,
            &format!("  subject = \"orders.created\"\n  body = {{}}\n  {key} # key\n"),
        );
        one(
            &src,
            ErrorKind::Value,
            "# key",
            "does not apply to a publish call",
        );
    }
    // `subject` on a call that is not a publish call.
    let src = format!("{UPSTREAMS}[routes.r]\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"x\"\n  upstream = \"a\"\n  subject = \"orders.created\" # subject\n");
    one(
        &src,
        ErrorKind::Value,
        "# subject",
        "only applies to mode = \"publish\"",
    );
    // A call that is neither: no upstream.
    let src = format!(
        "{UPSTREAMS}[routes.r]\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"x\" # name\n"
    );
    one(&src, ErrorKind::Value, "# name", "has no `upstream`");
    // An unknown mode lists the three.
    let src = format!("{UPSTREAMS}[routes.r]\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"x\"\n  upstream = \"a\"\n  mode = \"fire\" # mode\n");
    one(&src, ErrorKind::Value, "# mode", "\"publish\"");
    // Its result is a receipt: another call may order after it, not read it.
    let src = publish_route(
        EVENTS,
        "  subject = \"orders.created\"\n  body = {}\n  [[routes.r.calls]]\n  name = \"reader\" # reader\n  upstream = \"b\"\n  path = \"/{shipped.task_id}\"\n",
    );
    one(
        &src,
        ErrorKind::Value,
        "# reader",
        "which publishes an event",
    );
    let ok = publish_route(
        EVENTS,
        "  subject = \"orders.created\"\n  body = {}\n  [[routes.r.calls]]\n  name = \"later\"\n  upstream = \"b\"\n  after = [\"shipped\"]\n",
    );
    compile("t.toml".as_ref(), &ok).unwrap();
}

#[test]
fn bad_events_sections_are_located() {
    let route = "  subject = \"orders.created\"\n  body = {}\n";
    for (section, why) in [
        ("[events]\nurl = \"nats://127.0.0.1:4222\"\n", "backend"),
        ("[events]\nbackend = \"kafka\"\n", "kafka"),
        (
            "[events]\nbackend = \"nats\"\nexchange = \"x\"\n",
            "exchange only applies",
        ),
        (
            "[events]\nbackend = \"rabbitmq\"\nurl = \"nats://h:4222\"\n",
            "does not suit",
        ),
        ("[events]\nbackend = \"nats\"\ntimeout = \"soon\"\n", "soon"),
        ("[events]\nbackend = \"nats\"\nsubjekt = \"x\"\n", "subjekt"),
    ] {
        let src = publish_route(section, route);
        one(&src, ErrorKind::Value, "[events]", why);
    }
}

#[test]
fn bad_queue_sections_are_located() {
    let src = format!("{UPSTREAMS}[queue]\nbackend = \"carrier-pigeon\"\n");
    one(&src, ErrorKind::Value, "[queue]", "[queue]");
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

const CACHED_CALL: &str = r#"[routes.p]
path = "/p/{id}"
  [[routes.p.calls]]
  name = "user"
  upstream = "a"
  path = "/users/{path.id}"
  headers = { accept-language = "{header.accept-language}" }
"#;

#[test]
fn cache_policies_compile_into_typed_config() {
    let src = format!(
        r#"{UPSTREAMS}
[cache]
max_bytes = 1048576
max_entry_bytes = 65536
redis = "redis://127.0.0.1:6379/2"
prefix = "shop:"
redis_timeout = "20ms"
{CACHED_CALL}  cache = {{ ttl = "30s", stale = "5m", errors = "5s", respect_cache_control = true, vary = ["Accept-Language"], early_refresh = 1.0, lock = "2s" }}
  [[routes.p.calls]]
  name = "orders"
  upstream = "b"
  method = "POST"
  path = "/orders"
  cache = {{ ttl = "1s", methods = ["GET", "post"], key = "orders:{{user.id}}" }}
[routes.whole]
path = "/whole/{{id}}"
proxy = "a"
cache = {{ ttl = "10s", key = "w:{{path.id}}" }}
"#
    );
    let config = compile("t.toml".as_ref(), &src).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.cache.max_bytes, 1_048_576);
    assert_eq!(config.cache.max_entry_bytes, 65_536);
    assert_eq!(
        config.cache.redis.as_deref(),
        Some("redis://127.0.0.1:6379/2")
    );
    assert_eq!(config.cache.prefix, "shop:");
    assert_eq!(config.cache.redis_timeout, Duration::from_millis(20));
    let RouteKind::Compose(plan) = &config.route("p").unwrap().kind else {
        panic!("compose")
    };
    let user = plan.calls[0].cache.as_ref().unwrap();
    assert_eq!(user.ttl, Duration::from_secs(30));
    assert_eq!(user.stale, Duration::from_secs(300));
    assert_eq!(user.errors, Some(Duration::from_secs(5)));
    assert!(user.respect_cache_control);
    assert_eq!(user.vary, vec!["accept-language".to_owned()]);
    assert_eq!(user.early_refresh, Some(1.0));
    assert_eq!(user.lock, Some(Duration::from_secs(2)));
    assert!(user.key.is_none());
    let orders = plan.calls[1].cache.as_ref().unwrap();
    assert_eq!(orders.methods, vec![http::Method::GET, http::Method::POST]);
    assert_eq!(
        plan.deps[1],
        vec![0],
        "the key template reads `user`: a dependency"
    );
    let whole = config.route("whole").unwrap().cache.as_ref().unwrap();
    assert!(whole.key.is_some());
    // Defaults without a [cache] section.
    let src = format!("{UPSTREAMS}{CACHED_CALL}  cache = {{ ttl = \"1s\" }}\n");
    let config = compile("t.toml".as_ref(), &src).unwrap();
    assert_eq!(config.cache.max_bytes, 64 * 1024 * 1024);
    assert!(config.cache.redis.is_none());
    let RouteKind::Compose(plan) = &config.routes[0].kind else {
        panic!()
    };
    let spec = plan.calls[0].cache.as_ref().unwrap();
    assert_eq!((spec.stale, spec.errors), (Duration::ZERO, None));
    assert_eq!(spec.methods, vec![http::Method::GET]);
}

#[test]
fn cache_policy_errors_name_the_line() {
    let with = |policy: &str| format!("{UPSTREAMS}{CACHED_CALL}  cache = {policy} # here\n");
    one(
        &with("{ ttl = \"soon\" }"),
        ErrorKind::Value,
        "# here",
        "cache.ttl",
    );
    one(
        &with("{ stale = \"1s\" }"),
        ErrorKind::Syntax,
        "# here",
        "ttl",
    );
    one(
        &with("{ ttl = \"1s\", tll = 1 }"),
        ErrorKind::Syntax,
        "# here",
        "tll",
    );
    one(
        &with("{ ttl = \"1s\", stale = \"x\" }"),
        ErrorKind::Value,
        "# here",
        "cache.stale",
    );
    one(
        &with("{ ttl = \"1s\", errors = \"-1s\" }"),
        ErrorKind::Value,
        "# here",
        "cache.errors",
    );
    one(
        &with("{ ttl = \"1s\", vary = [\"x-tenant\"] }"),
        ErrorKind::UnknownName,
        "# here",
        "does not send",
    );
    one(
        &with("{ ttl = \"1s\", vary = [\"bad header\"] }"),
        ErrorKind::Value,
        "# here",
        "not a header name",
    );
    one(
        &with("{ ttl = \"1s\", key = \"{nope.id}\" }"),
        ErrorKind::UnknownName,
        "# here",
        "cache.key",
    );
    one(
        &with("{ ttl = \"1s\", key = \"{user.id}\" }"),
        ErrorKind::Cycle,
        "name = \"user\"",
        "cycle",
    );
    one(
        &with("{ ttl = \"1s\", early_refresh = -1.0 }"),
        ErrorKind::Value,
        "# here",
        "early_refresh",
    );
    one(
        &with("{ ttl = \"1s\", lock = \"2s\" }"),
        ErrorKind::Value,
        "# here",
        "[cache] redis",
    );
    one(
        &with("{ ttl = \"1s\", methods = [\"POST\"] }"),
        ErrorKind::Value,
        "# here",
        "methods",
    );
    // A POST call is cached only when it opts in.
    let src = format!("{UPSTREAMS}[routes.r]\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"x\"\n  upstream = \"a\"\n  method = \"POST\"\n  cache = {{ ttl = \"1s\" }} # post\n");
    one(&src, ErrorKind::Value, "# post", "methods = [\"POST\"]");
    // A whole route: GET only, and its key reads the request, not calls.
    let src = format!("{UPSTREAMS}[routes.r]\nmethod = \"POST\"\npath = \"/r\"\nproxy = \"a\"\ncache = {{ ttl = \"1s\" }} # route\n");
    one(&src, ErrorKind::Value, "# route", "GET only");
    let src = format!("{UPSTREAMS}[routes.r]\npath = \"/r\"\ncache = {{ ttl = \"1s\", key = \"{{x.id}}\" }} # route\n  [[routes.r.calls]]\n  name = \"x\"\n  upstream = \"a\"\n");
    one(&src, ErrorKind::UnknownName, "# route", "unknown call");
}

#[test]
fn cache_section_errors_name_the_line() {
    let with = |line: &str| {
        format!("{UPSTREAMS}[cache]\nredis = \"redis://127.0.0.1:6379\"\n{line} # here\n")
    };
    one(
        &with("max_bytes = 0"),
        ErrorKind::Value,
        "# here",
        "cache.max_bytes",
    );
    one(
        &with("max_entry_bytes = 0"),
        ErrorKind::Value,
        "# here",
        "cache.max_entry_bytes",
    );
    one(
        &with("redis_timeout = \"fast\""),
        ErrorKind::Value,
        "# here",
        "cache.redis_timeout",
    );
    one(
        &with("redis_timeout = \"0s\""),
        ErrorKind::Value,
        "# here",
        "more than 0",
    );
    one(
        &with("prefix = \"\""),
        ErrorKind::Value,
        "# here",
        "cache.prefix",
    );
    one(&with("size = 1"), ErrorKind::Syntax, "# here", "size");
    let src = format!("{UPSTREAMS}[cache]\nredis = \"http://127.0.0.1:6379\" # here\n");
    one(&src, ErrorKind::Value, "# here", "redis://");
    let src = format!("{UPSTREAMS}[cache]\nredis = \"redis://user:hunter2@\" # here\n");
    let errs = errors(&src);
    assert!(
        errs.iter().all(|e| !e.3.contains("hunter2")),
        "passwords are never echoed: {errs:#?}"
    );
    one(&src, ErrorKind::Value, "# here", "no host");
    let src = format!("{UPSTREAMS}[cache]\nprefix = \"a:\" # here\n");
    one(
        &src,
        ErrorKind::Value,
        "# here",
        "only applies to the Redis tier",
    );
}
