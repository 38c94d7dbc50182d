//! A call's `idempotent` (issue 13 items 4 and 8): which calls may be sent twice, and the rule
//! that a non-idempotent call to an upstream that would repeat it must say so explicitly.

use manifold_config::{compile, Call, Config, ErrorKind, RouteKind};

use crate::support::{errors, line_of};

/// Upstreams: `plain` (defaults: retries connect failures only), `retrying` (also on 503 and
/// timeouts), `hedging`, `once` (attempts = 1, so its `on` never matters).
const UPSTREAMS: &str = r#"[upstreams.plain]
endpoints = ["http://127.0.0.1:7001"]
[upstreams.retrying]
endpoints = ["http://127.0.0.1:7002"]
retry = { on = ["connect", "503", "timeout"] }
[upstreams.hedging]
endpoints = ["http://127.0.0.1:7003", "http://127.0.0.1:7004"]
hedge = { after = "p95" }
[upstreams.once]
endpoints = ["http://127.0.0.1:7005"]
retry = { attempts = 1, on = ["503"] }
[upstreams.connect_only]
endpoints = ["http://127.0.0.1:7006"]
retry = { attempts = 5, on = ["connect"] }
"#;

/// A route `r` with one call to `upstream`, with `extra` lines in the call.
fn route(upstream: &str, extra: &str) -> String {
    format!(
        "{UPSTREAMS}\n[routes.r]\nmethod = \"POST\"\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"c\"\n  upstream = \"{upstream}\"\n{extra}\n"
    )
}

fn compiled(src: &str) -> Config {
    compile("t.toml".as_ref(), src).unwrap_or_else(|e| panic!("{e}\n--- for:\n{src}"))
}

fn call(src: &str) -> Call {
    let cfg = compiled(src);
    let RouteKind::Compose(plan) = &cfg.routes[0].kind else {
        panic!("a composed route")
    };
    plan.calls[0].clone()
}

#[test]
fn a_post_to_an_upstream_that_retries_past_connect_must_say_whether_it_is_idempotent() {
    let src = route("retrying", "  method = \"POST\"");
    let errs = errors(&src);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    let (line, col, kind, msg) = &errs[0];
    // At the call's method (the value, after `  method = `).
    let at = (line_of(&src, "  method = \"POST\""), 12, ErrorKind::Value);
    assert_eq!((*line, *col, *kind), at);
    for part in [
        "route `r`, call `c`",
        "POST is not idempotent",
        "upstream `retrying`",
        "retries on 503, timeout",
        "set `idempotent = true` if repeating it is safe",
        "`idempotent = false` to send it once",
        "connect failures are still retried",
    ] {
        assert!(msg.contains(part), "{msg:?} should say {part:?}");
    }
}

#[test]
fn a_hedging_upstream_needs_it_too_and_any_non_idempotent_method_counts() {
    for m in ["POST", "PATCH", "post", "PURGE"] {
        let src = route("hedging", &format!("  method = \"{m}\""));
        let errs = errors(&src);
        assert_eq!(errs.len(), 1, "{m}: {errs:#?}");
        assert!(
            errs[0].3.contains("upstream `hedging` hedges"),
            "{m}: {}",
            errs[0].3
        );
        assert_eq!(
            errs[0].0,
            line_of(&src, &format!("  method = \"{m}\"")),
            "{m}"
        );
    }
}

#[test]
fn saying_it_either_way_is_accepted_and_is_what_the_call_carries() {
    for up in ["retrying", "hedging"] {
        let yes = call(&route(up, "  method = \"POST\"\n  idempotent = true"));
        assert!(yes.idempotent);
        let no = call(&route(up, "  method = \"POST\"\n  idempotent = false"));
        assert!(!no.idempotent);
    }
    // Explicit beats the method both ways.
    assert!(!call(&route("retrying", "  idempotent = false")).idempotent);
    assert!(call(&route("plain", "  method = \"PATCH\"\n  idempotent = true")).idempotent);
}

#[test]
fn the_idempotent_methods_need_nothing() {
    for m in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"] {
        for up in ["plain", "retrying", "hedging"] {
            let c = call(&route(up, &format!("  method = \"{m}\"")));
            assert!(c.idempotent, "{m} to {up}");
        }
    }
    assert!(call(&route("retrying", "")).idempotent, "GET by default");
}

#[test]
fn a_post_is_sent_once_where_nothing_but_a_connect_failure_is_repeated() {
    for up in ["plain", "once", "connect_only"] {
        let c = call(&route(up, "  method = \"POST\""));
        assert!(!c.idempotent, "{up}");
    }
}

#[test]
fn a_call_sending_an_idempotency_key_or_queued_is_idempotent() {
    let keyed = call(&route(
        "retrying",
        "  method = \"POST\"\n  headers = { Idempotency-Key = \"{header.idempotency-key}\" }",
    ));
    assert!(keyed.idempotent);
    // The dispatcher delivers an async call at least once, with the same key on every attempt.
    let queued = call(&route("hedging", "  method = \"POST\"\n  mode = \"async\""));
    assert!(queued.idempotent);
}

#[test]
fn every_offending_call_is_named() {
    let src = format!(
        "{UPSTREAMS}\n[routes.r]\nmethod = \"POST\"\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"a\"\n  upstream = \"retrying\"\n  method = \"POST\"\n  [[routes.r.calls]]\n  name = \"b\"\n  upstream = \"hedging\"\n  method = \"PATCH\"\n  [[routes.r.calls]]\n  name = \"fine\"\n  upstream = \"plain\"\n  method = \"POST\"\n"
    );
    let errs = errors(&src);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs[0].3.contains("call `a`") && errs[0].3.contains("`retrying`"));
    assert!(errs[1].3.contains("call `b`") && errs[1].3.contains("`hedging`"));
}

#[test]
fn idempotent_is_a_boolean_and_not_for_publish_calls() {
    let src = route("plain", "  idempotent = \"yes\"");
    let errs = errors(&src);
    assert_eq!(errs[0].2, ErrorKind::Syntax, "{errs:#?}");
    assert!(errs[0].3.contains("invalid type: string"), "{errs:#?}");

    let src = format!(
        "{UPSTREAMS}\n[events]\nbackend = \"nats\"\n[routes.r]\nmethod = \"POST\"\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"e\"\n  mode = \"publish\"\n  subject = \"orders.created\"\n  body = \"{{request.body}}\"\n  idempotent = true\n"
    );
    let errs = errors(&src);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].0, line_of(&src, "idempotent = true"));
    assert!(
        errs[0]
            .3
            .contains("`idempotent` does not apply to a publish call"),
        "{errs:#?}"
    );
}
