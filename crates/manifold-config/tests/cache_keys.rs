//! Cache keys are inferred from the templates (issue 12, fault 2): every request value a cached
//! call or route reads is in its key, `shared` is only for proxy routes, and `manifold check`
//! says what each key is made of.

use manifold_config::cache_key::KeyInput;
use manifold_config::{compile, describe, Config, RouteKind};
use proptest::prelude::*;

const UPSTREAMS: &str = r#"[upstreams.users]
endpoints = ["http://127.0.0.1:7001"]
"#;

fn ok(src: &str) -> Config {
    compile("k.toml".as_ref(), src).unwrap_or_else(|e| panic!("{e}\n{src}"))
}

fn err(src: &str) -> String {
    match compile("k.toml".as_ref(), src) {
        Ok(_) => panic!("expected an error:\n{src}"),
        Err(e) => e.to_string(),
    }
}

fn header(n: &str) -> KeyInput {
    KeyInput::Header { name: n.into() }
}
fn query(n: &str) -> KeyInput {
    KeyInput::Query { name: n.into() }
}

const PROFILE: &str = r#"
[routes.profile]
method = "POST"
path = "/profile/{id}"
  [[routes.profile.calls]]
  name = "user"
  upstream = "users"
  path = "/users/{path.id}"
  [[routes.profile.calls]]
  name = "orders"
  upstream = "users"
  method = "POST"
  path = "/orders/{user.id}"
  query = { q = "{query.q}" }
  headers = { authorization = "{header.authorization}", x-lang = "lang-{header.accept-language}" }
  body = { who = "{request.body.user.id}", all = "{request.body}" }
  cache = { ttl = "30s", methods = ["POST"], key = "o:{header.x-tenant}" }
"#;

#[test]
fn a_cached_calls_key_covers_every_request_value_its_templates_read() {
    let cfg = ok(&format!("{UPSTREAMS}{PROFILE}"));
    let RouteKind::Compose(plan) = &cfg.routes[0].kind else {
        panic!()
    };
    let spec = plan.calls[1].cache.as_ref().unwrap();
    let body = |steps: &[&str]| KeyInput::Body {
        steps: steps
            .iter()
            .map(|s| manifold_config::template::Step {
                key: (*s).into(),
                index: None,
            })
            .collect(),
    };
    assert_eq!(
        spec.key_inputs,
        vec![
            query("q"),
            header("authorization"),
            header("accept-language"),
            body(&[]),
            body(&["user", "id"]),
            header("x-tenant"),
        ]
    );
    assert_eq!(spec.key_calls, vec!["user".to_owned()]);
    let text = describe(&cfg);
    assert!(
        text.contains(
            "cache key: key \"o:{header.x-tenant}\", upstream users, POST /orders/{user.id}?q={query.q}, sent headers authorization x-lang, sent body, query q, header authorization, header accept-language, body, body user.id, header x-tenant, result of user"
        ),
        "{text}"
    );
}

#[test]
fn a_cached_routes_key_covers_what_its_calls_and_response_read() {
    let cfg = ok(&format!(
        r#"{UPSTREAMS}
[routes.page]
path = "/page/{{id}}"
cache = {{ ttl = "30s" }}
  [[routes.page.calls]]
  name = "user"
  upstream = "users"
  path = "/users/{{path.id}}"
  headers = {{ authorization = "{{header.authorization}}" }}
  [routes.page.response]
  headers = {{ x-q = "{{query.q}}" }}
  body = "{{user}}"

[routes.raw]
path = "/raw/{{*rest}}"
proxy = "users"
cache = {{ ttl = "30s", vary = ["Authorization"] }}

[routes.open]
path = "/open/{{*rest}}"
proxy = "users"
cache = {{ ttl = "30s", shared = true }}
"#
    ));
    let page = cfg.routes[0].cache.as_ref().unwrap();
    assert_eq!(
        page.key_inputs,
        vec![
            KeyInput::Path {
                index: 0,
                name: "id".into()
            },
            header("authorization"),
            query("q")
        ]
    );
    assert!(cfg.routes[2].cache.as_ref().unwrap().shared);
    let text = describe(&cfg);
    assert!(
        text.contains(
            "cache key: route page, GET path and query, path id, header authorization, query q\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("cache key: route raw, GET path and query, vary authorization; requests carrying cookie are not cached"),
        "{text}"
    );
    assert!(
        text.contains(
            "cache key: route open, GET path and query; shared: answers are given to every client"
        ),
        "{text}"
    );
    // `--json` carries the same.
    let json = serde_json::to_value(&cfg).unwrap();
    assert_eq!(
        json["routes"][0]["cache"]["key_inputs"][1],
        serde_json::json!({"source": "header", "name": "authorization"})
    );
}

#[test]
fn shared_is_only_for_proxy_routes_and_route_caches_cannot_key_on_a_body() {
    let on_call = err(&format!(
        r#"{UPSTREAMS}
[routes.r]
path = "/r"
  [[routes.r.calls]]
  name = "u"
  upstream = "users"
  path = "/u"
  cache = {{ ttl = "1s", shared = true }}
"#
    ));
    assert!(
        on_call.contains("k.toml:10:") && on_call.contains("cache.shared applies to a proxy route"),
        "{on_call}"
    );
    let on_compose = err(&format!(
        r#"{UPSTREAMS}
[routes.r]
path = "/r"
cache = {{ ttl = "1s", shared = true }}
  [[routes.r.calls]]
  name = "u"
  upstream = "users"
  path = "/u"
"#
    ));
    assert!(
        on_compose.contains("k.toml:6:") && on_compose.contains("applies to a proxy route"),
        "{on_compose}"
    );
    let body = err(&format!(
        r#"{UPSTREAMS}
[routes.r]
path = "/r"
cache = {{ ttl = "1s" }}
  [[routes.r.calls]]
  name = "u"
  upstream = "users"
  path = "/u/{{request.body.id}}"
"#
    ));
    assert!(
        body.contains("k.toml:6:") && body.contains("cannot be keyed on the request body"),
        "{body}"
    );
}

proptest! {
    /// Whatever headers and query values a cached call's templates read, each is in its key.
    #[test]
    fn every_read_is_in_the_key(
        headers in prop::collection::vec("[a-z][a-z0-9-]{0,8}", 0..4),
        queries in prop::collection::vec("[a-z][a-z0-9_]{0,8}", 0..4),
        in_key in any::<bool>(),
    ) {
        let sent: Vec<String> = headers
            .iter()
            .enumerate()
            .map(|(i, h)| format!("x-h{i} = \"v-{{header.{h}}}\""))
            .collect();
        let params: Vec<String> = queries
            .iter()
            .enumerate()
            .map(|(i, q)| format!("p{i} = \"{{query.{q}}}\""))
            .collect();
        let key = if in_key { ", key = \"k\"" } else { "" };
        let src = format!(
            "{UPSTREAMS}\n[routes.r]\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"c\"\n  upstream = \"users\"\n  path = \"/c\"\n  headers = {{ {} }}\n  query = {{ {} }}\n  cache = {{ ttl = \"1s\"{key} }}\n",
            sent.join(", "),
            params.join(", ")
        );
        let cfg = ok(&src);
        let RouteKind::Compose(plan) = &cfg.routes[0].kind else { panic!() };
        let inputs = &plan.calls[0].cache.as_ref().unwrap().key_inputs;
        for h in &headers {
            prop_assert!(inputs.contains(&header(h)), "{h} missing from {inputs:?}");
        }
        for q in &queries {
            prop_assert!(inputs.contains(&query(q)), "{q} missing from {inputs:?}");
        }
        let mut uniq = inputs.clone();
        uniq.dedup();
        prop_assert_eq!(uniq.len(), inputs.len());
    }
}

/// A route whose calls write tasks (async or publish) cannot be cached: a cached answer is
/// served without running the calls, so the second client got the first one's receipt (its
/// `task_id` and `status_url`: a capability to read that client's result) and its own task was
/// never written. A cache on an async call itself did nothing (the task is written, the cache
/// never consulted): refused rather than accepted and ignored.
#[test]
fn a_route_or_call_that_writes_tasks_cannot_be_cached() {
    const QUEUE: &str = "[queue]\nbackend = \"embedded\"\npath = \"/nonexistent/k\"\n";
    let route = format!(
        r#"{QUEUE}{UPSTREAMS}
[routes.r]
path = "/r/{{id}}"
cache = {{ ttl = "60s" }}
  [[routes.r.calls]]
  name = "user"
  upstream = "users"
  path = "/users/{{path.id}}"
  [[routes.r.calls]]
  name = "ship"
  upstream = "users"
  method = "POST"
  path = "/ship/{{path.id}}"
  mode = "async"
"#
    );
    let e = err(&route);
    assert!(e.contains("k.toml:9:"), "{e}");
    assert!(e.contains("route `r`"), "{e}");
    assert!(e.contains("`ship`"), "{e}");
    assert!(e.contains("receipt"), "{e}");
    let call = format!(
        r#"{QUEUE}{UPSTREAMS}
[routes.r]
path = "/r/{{id}}"
  [[routes.r.calls]]
  name = "ship"
  upstream = "users"
  method = "POST"
  path = "/ship/{{path.id}}"
  mode = "async"
  cache = {{ ttl = "60s", methods = ["POST"] }}
"#
    );
    let e = err(&call);
    assert!(e.contains("k.toml:15:"), "{e}");
    assert!(e.contains("`cache` does not apply to an async call"), "{e}");
    // The sync calls of a route may still be cached, and a route of sync calls too.
    ok(&format!(
        r#"{QUEUE}{UPSTREAMS}
[routes.r]
path = "/r/{{id}}"
  [[routes.r.calls]]
  name = "user"
  upstream = "users"
  path = "/users/{{path.id}}"
  cache = {{ ttl = "60s" }}
  [[routes.r.calls]]
  name = "ship"
  upstream = "users"
  method = "POST"
  path = "/ship/{{path.id}}"
  mode = "async"
"#
    ));
}
