//! `[cache] memcached = [...]`: the Memcached shared tier's keys compile, and every mistake
//! (both tiers, bad addresses, stray keys, unsafe prefixes) names its line.

use manifold_config::{compile, describe, ErrorKind};
use std::time::Duration;

const UPSTREAMS: &str = r#"[upstreams.a]
endpoints = ["http://127.0.0.1:7001"]
"#;

const LOCKED_CALL: &str = r#"[routes.p]
path = "/p/{id}"
  [[routes.p.calls]]
  name = "user"
  upstream = "a"
  path = "/users/{path.id}"
  cache = { ttl = "30s", stale = "1m", lock = "2s" }
"#;

fn errors(src: &str) -> Vec<(usize, ErrorKind, String)> {
    match compile("t.toml".as_ref(), src) {
        Ok(_) => panic!("expected errors for:\n{src}"),
        Err(e) => e
            .errors
            .into_iter()
            .map(|e| (e.line, e.kind, e.message))
            .collect(),
    }
}

/// One error of `kind` on the line holding `needle`, whose message contains every `parts`.
fn one(src: &str, kind: ErrorKind, needle: &str, parts: &[&str]) {
    let line = src.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let errs = errors(src);
    assert!(
        errs.iter()
            .any(|(l, k, m)| *l == line && *k == kind && parts.iter().all(|p| m.contains(p))),
        "wanted {kind:?} on line {line} mentioning {parts:?}, got {errs:#?}"
    );
}

#[test]
fn memcached_keys_compile_and_check_describes_the_tier() {
    let src = format!(
        r#"{UPSTREAMS}[cache]
memcached = ["127.0.0.1:11211", "cache-2.internal:11211", "[::1]:11212"]
prefix = "shop:"
memcached_timeout = "20ms"
memcached_retry_after = "3s"
memcached_max_item_bytes = 2097152
{LOCKED_CALL}"#
    );
    let config = compile("t.toml".as_ref(), &src).unwrap_or_else(|e| panic!("{e}"));
    let c = &config.cache;
    assert_eq!(
        c.memcached,
        ["127.0.0.1:11211", "cache-2.internal:11211", "[::1]:11212"]
    );
    assert!(c.redis.is_none());
    assert_eq!(c.prefix, "shop:");
    assert_eq!(c.memcached_timeout, Duration::from_millis(20));
    assert_eq!(c.memcached_retry_after, Duration::from_secs(3));
    assert_eq!(c.memcached_max_item_bytes, 2 << 20);
    // `lock` needs a shared tier, and memcached is one.
    let call = match &config.routes[0].kind {
        manifold_config::RouteKind::Compose(plan) => &plan.calls[0],
        _ => panic!("a compose route"),
    };
    assert_eq!(
        call.cache.as_ref().unwrap().lock,
        Some(Duration::from_secs(2))
    );
    let text = describe(&config);
    assert!(
        text.contains("cache: in-process 67108864 bytes + memcached 127.0.0.1:11211, cache-2.internal:11211, [::1]:11212 (consistent hashing over 3 server(s)"),
        "{text}"
    );
    // Defaults.
    let src = format!("{UPSTREAMS}[cache]\nmemcached = [\"127.0.0.1:11211\"]\n");
    let c = compile("t.toml".as_ref(), &src).unwrap().cache;
    assert_eq!(
        (
            c.memcached_timeout,
            c.memcached_retry_after,
            c.memcached_max_item_bytes
        ),
        (Duration::from_millis(50), Duration::from_secs(1), 1 << 20)
    );
    // Without a shared tier, `check` says so; with Redis, it names it (without a password).
    let config = compile("t.toml".as_ref(), UPSTREAMS).unwrap();
    assert!(describe(&config).contains("no shared tier"));
    let src = format!("{UPSTREAMS}[cache]\nredis = \"redis://u:hunter2@127.0.0.1:6379\"\n");
    let text = describe(&compile("t.toml".as_ref(), &src).unwrap());
    assert!(
        text.contains("+ redis redis://u:***@127.0.0.1:6379") && !text.contains("hunter2"),
        "{text}"
    );
}

#[test]
fn redis_and_memcached_together_is_an_error_naming_both_keys() {
    let src = format!(
        "{UPSTREAMS}[cache]\nredis = \"redis://127.0.0.1:6379\"\nmemcached = [\"127.0.0.1:11211\"] # here\n"
    );
    one(
        &src,
        ErrorKind::Value,
        "# here",
        &["`cache.redis`", "`cache.memcached`", "both"],
    );
}

#[test]
fn bad_memcached_settings_name_the_line() {
    let with = |line: &str| format!("{UPSTREAMS}[cache]\n{line} # here\n");
    for (line, part) in [
        ("memcached = []", "no server"),
        ("memcached = [\"localhost\"]", "host:port"),
        ("memcached = [\"127.0.0.1:0\"]", "port"),
        ("memcached = [\"127.0.0.1:99999\"]", "port"),
        ("memcached = [\"::1:11211\"]", "brackets"),
        ("memcached = [\"bad host:11211\"]", "spaces"),
        ("memcached = [\"a:1\", \"a:1\"]", "twice"),
        (
            "memcached_timeout = \"20ms\"",
            "only applies to the Memcached tier",
        ),
        (
            "memcached_max_item_bytes = 4096",
            "only applies to the Memcached tier",
        ),
    ] {
        one(&with(line), ErrorKind::Value, "# here", &[part]);
    }
    let many: Vec<String> = (1..=65).map(|p| format!("\"h:{p}\"")).collect();
    one(
        &with(&format!("memcached = [{}]", many.join(", "))),
        ErrorKind::Value,
        "# here",
        &["at most 64"],
    );
    let mc = |line: &str| {
        format!("{UPSTREAMS}[cache]\nmemcached = [\"127.0.0.1:11211\"]\n{line} # here\n")
    };
    for (line, part) in [
        ("memcached_timeout = \"0s\"", "more than 0"),
        (
            "memcached_retry_after = \"soon\"",
            "cache.memcached_retry_after",
        ),
        ("memcached_max_item_bytes = 10", "memcached_max_item_bytes"),
        ("memcached_max_item_bytes = 2000000000", "outside"),
        ("prefix = \"é:\"", "printable ASCII"),
        ("redis_timeout = \"10ms\"", "only applies to the Redis tier"),
    ] {
        one(&mc(line), ErrorKind::Value, "# here", &[part]);
    }
    let long = format!("prefix = \"{}\"", "p".repeat(151));
    one(&mc(&long), ErrorKind::Value, "# here", &["at most 150"]);
    // `prefix` applies to memcached: no "only applies to Redis" error with it.
    let src = mc("prefix = \"ok:\"");
    assert!(compile("t.toml".as_ref(), &src).is_ok());
    // A type mistake is a syntax error on its line.
    one(
        &with("memcached = \"127.0.0.1:11211\""),
        ErrorKind::Syntax,
        "# here",
        &["expected a sequence"],
    );
}

#[test]
fn a_lock_without_any_shared_tier_names_both_choices() {
    let src = format!("{UPSTREAMS}{LOCKED_CALL}");
    let errs = errors(&src);
    assert!(
        errs.iter().any(|(_, k, m)| *k == ErrorKind::Value
            && m.contains("[cache] redis")
            && m.contains("memcached")),
        "{errs:#?}"
    );
}
