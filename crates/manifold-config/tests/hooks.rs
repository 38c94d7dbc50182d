//! `on_done` / `on_dead` (issue 17 items 4-5): hooks go only to configured upstreams or
//! `[events]` subjects, read what their call can read plus the settled task, and every misuse is
//! refused with its file:line:col.

use manifold_config::{compile, HookTarget, RouteKind};

const BASE: &str = r#"[upstreams.order]
endpoints = ["http://127.0.0.1:7001"]
[upstreams.payment]
endpoints = ["http://127.0.0.1:7002"]
[upstreams.shipping]
endpoints = ["http://127.0.0.1:7004"]
[upstreams.notify]
endpoints = ["http://127.0.0.1:7005"]

[routes.checkout]
method = "POST"
path = "/checkout"
  [[routes.checkout.calls]]
  name = "payment"
  upstream = "payment"
  method = "POST"
  path = "/payments"
  [[routes.checkout.calls]]
  name = "shipping"
  upstream = "shipping"
  method = "POST"
  path = "/labels"
  mode = "async"
"#;

fn with(extra: &str) -> String {
    format!("{BASE}{extra}\n")
}

fn errors(src: &str) -> Vec<String> {
    match compile("t.toml".as_ref(), src) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .errors
            .iter()
            .map(|e| format!("{}:{}: {}", e.line, e.column, e.message))
            .collect(),
    }
}

fn one_error(src: &str, needle: &str) -> String {
    let errs = errors(src);
    let hit = errs.iter().find(|e| e.contains(needle)).cloned();
    hit.unwrap_or_else(|| panic!("no error containing {needle:?}: {errs:#?}"))
}

#[test]
fn the_saga_compiles_and_the_hook_reads_make_the_call_wait_for_payment() {
    let src = with(
        r#"  on_dead = { upstream = "payment", path = "/payments/{payment.id}/refund", body = { reason = "{task.error}", tries = "{task.attempts}" } }
  on_done = { upstream = "notify", method = "PUT", path = "/hooks/{task.id}", body = "{task.result}" }"#,
    );
    let cfg = compile("t.toml".as_ref(), &src).unwrap_or_else(|e| panic!("{e}"));
    let RouteKind::Compose(plan) = &cfg.routes[0].kind else {
        panic!("composed")
    };
    let shipping = &plan.calls[1];
    assert_eq!(
        shipping.reads,
        [0],
        "the hook reads payment: the call waits for it"
    );
    let dead = shipping.hooks.on_dead.as_ref().unwrap();
    assert!(
        matches!(&dead.target, HookTarget::Upstream { name, method, .. } if name == "payment" && method == "POST")
    );
    let done = shipping.hooks.on_done.as_ref().unwrap();
    assert!(matches!(&done.target, HookTarget::Upstream { method, .. } if method == "PUT"));
}

#[test]
fn an_unknown_upstream_is_refused_where_it_is_named() {
    let e = one_error(
        &with(r#"  on_dead = { upstream = "refunds", path = "/r" }"#),
        "unknown upstream `refunds`",
    );
    // Line 24 of the file, at the upstream's name.
    assert!(e.starts_with("24:"), "{e}");
    assert!(e.contains("on_dead"), "{e}");
}

#[test]
fn hooks_of_hooks_are_refused() {
    let e = one_error(
        &with(
            r#"  on_done = { upstream = "notify", path = "/h", on_done = { upstream = "notify", path = "/h2" } }"#,
        ),
        "hooks of hooks are not allowed",
    );
    assert!(e.starts_with("24:"), "{e}");
}

#[test]
fn hostile_and_wrong_templates_are_refused() {
    let cases = [
        // Never a URL: the path is a path on the configured upstream.
        (
            r#"  on_dead = { upstream = "payment", path = "http://evil.example/x" }"#,
            "must start with `/`",
        ),
        // A settle-time value that could reshape the URL.
        (
            r#"  on_done = { upstream = "notify", path = "/h/{task.result}" }"#,
            "only {task.id} and {task.attempts}",
        ),
        (
            r#"  on_dead = { upstream = "notify", path = "/h/{task.error}" }"#,
            "only {task.id} and {task.attempts}",
        ),
        // Settle-time values in headers.
        (
            r#"  on_dead = { upstream = "notify", path = "/h", headers = { x-why = "{task.error}" } }"#,
            "cannot read `{task.*}`",
        ),
        // What the settlement does not have.
        (
            r#"  on_dead = { upstream = "notify", path = "/h", body = "{task.result}" }"#,
            "a dead task has no result",
        ),
        (
            r#"  on_done = { upstream = "notify", path = "/h", body = "{task.error}" }"#,
            "a done task has no error",
        ),
        (
            r#"  on_done = { upstream = "notify", path = "/h", body = "{task.secret}" }"#,
            "the settled task offers",
        ),
        // Unknown calls and no target.
        (
            r#"  on_done = { upstream = "notify", path = "/h", body = "{nope.id}" }"#,
            "unknown call `nope`",
        ),
        (r#"  on_done = { path = "/h" }"#, "say where the hook goes"),
        (
            r#"  on_done = { upstream = "notify", publish = "a.b", path = "/h" }"#,
            "not both",
        ),
        (r#"  on_done = { upstream = "notify" }"#, "needs a `path`"),
        // Publishing needs [events] and a plain subject.
        (
            r#"  on_done = { publish = "shipping.done" }"#,
            "no `[events]` section",
        ),
    ];
    for (extra, needle) in cases {
        one_error(&with(extra), needle);
    }
    let events = "[events]\nbackend = \"nats\"\n";
    let src = format!(
        "{events}{}",
        with(r#"  on_done = { publish = "shipping.*" }"#)
    );
    assert!(!errors(&src).is_empty(), "a wildcard subject");
    let src = format!(
        "{events}{}",
        with(r#"  on_done = { publish = "shipping.done" }"#)
    );
    assert_eq!(errors(&src), Vec::<String>::new());
    // A publish hook's header names become AMQP field names (short strings): a longer one is
    // refused here, at its key, not when the first task settles and its hook cannot be written.
    let long = "x".repeat(256);
    let src = format!(
        "{events}{}",
        with(&format!(
            r#"  on_done = {{ publish = "shipping.done", headers = {{ {long} = "1" }} }}"#
        ))
    );
    let err = one_error(&src, "an event header name is at most 255 bytes");
    assert!(err.starts_with("26:"), "{err}");
    let src = format!(
        "{events}{}",
        with(&format!(
            r#"  on_done = {{ publish = "shipping.done", headers = {{ {} = "1" }} }}"#,
            "x".repeat(255)
        ))
    );
    assert_eq!(errors(&src), Vec::<String>::new());
}

#[test]
fn a_sync_call_has_no_hooks_and_task_is_no_source_elsewhere() {
    let src = BASE.replace(
        "  path = \"/payments\"\n",
        "  path = \"/payments\"\n  on_done = { upstream = \"notify\", path = \"/h\" }\n",
    );
    one_error(&src, "only mode = \"async\" or \"publish\" calls have them");
    let src = with(r#"  body = { id = "{task.id}" }"#);
    one_error(&src, "unknown call `task`");
}

#[test]
fn manifold_schema_covers_the_hook_keys() {
    let schema = manifold_config::json_schema().to_string();
    for key in ["on_done", "on_dead", "publish"] {
        assert!(
            schema.contains(&format!("\"{key}\"")),
            "{key} missing from the schema"
        );
    }
}
