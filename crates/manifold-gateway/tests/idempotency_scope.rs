//! Whose retry is it? A task's idempotency key is derived from the client's `Idempotency-Key`,
//! but a client key only names a retry of the same request: the same route, from the same
//! principal. The same key on another route, or from another `Authorization`, is another
//! request, and its task must not be taken for a duplicate (an upstream honouring the key, or
//! JetStream's duplicate window for events, would drop it: an accepted task lost).

use crate::support::*;
use serde_json::json;
use std::time::Duration;

/// A call name as long as a config may write one: with a 96-byte client key, the key derived
/// from both must still be a valid task key (at most 128 bytes).
const LONG_CALL: &str = "notify_the_warehouse_partner_that_the_order_is_ready_to_ship_now";

fn config(upstream: &str, dir: &std::path::Path) -> String {
    let route = |name: &str, path: &str, call: &str| {
        format!(
            r#"
[routes.{name}]
method = "POST"
path = "{path}"
  [[routes.{name}.calls]]
  name = "{call}"
  upstream = "notify"
  method = "POST"
  path = "/notify/{name}"
  body = {{ n = "{{request.body.n}}" }}
  mode = "async"
  [routes.{name}.response]
  status = 202
  body = {{ key = "{{{call}.idempotency_key}}" }}
"#
        )
    };
    format!(
        r#"
[queue]
backend = "embedded"
path = "{}"
backoff_base = "50ms"
backoff_max = "200ms"

[upstreams.notify]
endpoints = ["{upstream}"]
{}{}{}"#,
        dir.display(),
        route("a", "/a", "notify"),
        route("b", "/b", "notify"),
        route("long", "/long", LONG_CALL),
    )
}

/// POST `path` with `key` and `auth`; the key the task got, from the receipt.
async fn key_of(gw: &TestGateway, path: &str, key: &str, auth: Option<&str>) -> String {
    let mut headers = vec![("idempotency-key", key)];
    headers.extend(auth.map(|a| ("authorization", a)));
    let (status, _, body) = send_with("POST", &gw.url(path), &headers, Some(r#"{"n": 1}"#)).await;
    assert_eq!(status, 202, "{path}: {}", String::from_utf8_lossy(&body));
    json(&body)["key"]
        .as_str()
        .expect("the receipt's key")
        .to_owned()
}

#[tokio::test]
async fn a_client_key_is_scoped_to_its_route_and_its_authorization() {
    let dir = std::env::temp_dir().join(format!("manifold-idem-scope-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let notify = Upstream::start(vec![("POST", "/notify", Reply::json(0, json!({})))]).await;
    let gw = TestGateway::start(&config(&notify.url(), &dir)).await;

    let first = key_of(&gw, "/a", "k-1", Some("Bearer alice")).await;
    let retry = key_of(&gw, "/a", "k-1", Some("Bearer alice")).await;
    let other_route = key_of(&gw, "/b", "k-1", Some("Bearer alice")).await;
    let other_principal = key_of(&gw, "/a", "k-1", Some("Bearer mallory")).await;
    let anonymous = key_of(&gw, "/a", "k-1", None).await;
    let anonymous_retry = key_of(&gw, "/a", "k-1", None).await;

    assert_eq!(first, retry, "a retry of the same request keeps its key");
    assert_eq!(anonymous, anonymous_retry);
    let all = [&first, &other_route, &other_principal, &anonymous];
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert_ne!(a, b, "two different requests share a task key");
        }
        assert!(
            a.starts_with("k-1:notify:"),
            "{a}: the client's key and the call lead"
        );
        assert!(!a.contains("alice") && !a.contains("mallory"), "{a}");
    }

    // The longest client key with a long call name still makes a valid key, stable per request.
    let long_key = "k".repeat(96);
    let long = key_of(&gw, "/long", &long_key, None).await;
    assert!(long.len() <= 128, "{} bytes: {long}", long.len());
    assert_eq!(long, key_of(&gw, "/long", &long_key, None).await);

    // Every task is delivered with the key its receipt named, each its own.
    let seen = notify.requests_when(|s| s.len() >= 8).await;
    let mut delivered: Vec<String> = seen
        .iter()
        .map(|s| s.headers["idempotency-key"].to_str().unwrap().to_owned())
        .collect();
    delivered.sort();
    let mut expected = vec![
        first.clone(),
        retry,
        other_route,
        other_principal,
        anonymous,
        anonymous_retry,
        long.clone(),
        long,
    ];
    expected.sort();
    assert_eq!(delivered, expected);

    gw.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// A client key the gateway cannot use is refused, not ignored: taken as absent (as a key that
/// was not visible ASCII, or longer than 96 bytes, used to be), each retry became a new task
/// and the work was done once per retry. Up to 255 visible ASCII characters are taken.
#[tokio::test]
async fn an_unusable_client_key_is_the_clients_400_not_a_new_task_per_retry() {
    let dir = std::env::temp_dir().join(format!("manifold-idem-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let notify = Upstream::start(vec![("POST", "/notify", Reply::json(0, json!({})))]).await;
    // A route whose sync call acts before its async one: a refused key must stop both.
    let both = r#"
[routes.both]
method = "POST"
path = "/both"
  [[routes.both.calls]]
  name = "now"
  upstream = "notify"
  method = "POST"
  path = "/notify/now"
  [[routes.both.calls]]
  name = "later"
  upstream = "notify"
  method = "POST"
  path = "/notify/later"
  mode = "async"
  after = ["now"]
"#;
    let gw = TestGateway::start(&format!("{}{both}", config(&notify.url(), &dir))).await;

    // Longer than the old 96-byte bound: a retry keeps its key.
    let long_key = "k".repeat(255);
    let first = key_of(&gw, "/a", &long_key, None).await;
    assert_eq!(first, key_of(&gw, "/a", &long_key, None).await);

    for (key, what) in [
        ("clé-1", "beyond ASCII"),
        ("k\t1", "a tab"),
        ("", "empty"),
        (&"k".repeat(256)[..], "256 bytes"),
    ] {
        for path in ["/a", "/both"] {
            let (status, _, body) = send_with(
                "POST",
                &gw.url(path),
                &[("idempotency-key", key)],
                Some(r#"{"n": 1}"#),
            )
            .await;
            let text = String::from_utf8_lossy(&body);
            assert_eq!(status, 400, "{what} on {path}: {text}");
            assert!(
                text.contains("bad_input") && text.contains("Idempotency-Key"),
                "{what} on {path}: {text}"
            );
        }
    }

    // The two accepted requests' tasks, and nothing of the refused ones: not even the sync
    // call that would have run before the task was rendered.
    let seen = notify.requests_when(|s| s.len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(notify.requests().len(), 2, "{seen:?}");

    gw.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// Clients told apart by a session cookie: with `idempotency_scope = ["cookie"]` the same key
/// from two sessions is two tasks, and a session's retry is one; an HTTP/2-style cookie sent on
/// two lines counts whole (a session cookie in the second line still scopes the key). With the
/// default scope (`Authorization` alone) both sessions were one principal: the first to send a
/// key had the other's task taken for its duplicate.
#[tokio::test]
async fn a_deployment_that_names_its_session_cookie_scopes_keys_by_it() {
    let dir = std::env::temp_dir().join(format!("manifold-idem-cookie-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let notify = Upstream::start(vec![("POST", "/notify", Reply::json(0, json!({})))]).await;
    let toml = config(&notify.url(), &dir).replacen(
        "backoff_max = \"200ms\"",
        "backoff_max = \"200ms\"\nidempotency_scope = [\"cookie\"]",
        1,
    );
    let gw = TestGateway::start(&toml).await;
    let key_with = |cookies: &'static [&'static str]| {
        let gw = &gw;
        async move {
            let mut headers = vec![("idempotency-key", "k-1")];
            headers.extend(cookies.iter().map(|c| ("cookie", *c)));
            let (status, _, body) =
                send_with("POST", &gw.url("/a"), &headers, Some(r#"{"n": 1}"#)).await;
            assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
            json(&body)["key"].as_str().expect("a key").to_owned()
        }
    };
    let alice = key_with(&["theme=dark; session=alice"]).await;
    let alice_retry = key_with(&["theme=dark; session=alice"]).await;
    let bob = key_with(&["theme=dark; session=bob"]).await;
    let alice_two_lines = key_with(&["theme=dark", "session=alice"]).await;
    let bob_two_lines = key_with(&["theme=dark", "session=bob"]).await;
    assert_eq!(alice, alice_retry);
    // Joined with `; `, two crumbs are the cookie string they make.
    assert_eq!(alice, alice_two_lines);
    assert_ne!(alice, bob);
    assert_ne!(alice_two_lines, bob_two_lines);
    // An Authorization header is no longer part of the principal here.
    let mut headers = vec![
        ("idempotency-key", "k-1"),
        ("cookie", "theme=dark; session=alice"),
    ];
    headers.push(("authorization", "Bearer someone"));
    let (_, _, body) = send_with("POST", &gw.url("/a"), &headers, Some(r#"{"n": 1}"#)).await;
    assert_eq!(json(&body)["key"].as_str(), Some(alice.as_str()));
    gw.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}
