//! Cache policies on calls and routes, and the `[cache]` section.

use super::*;

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
