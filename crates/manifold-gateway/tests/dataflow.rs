//! What flows between calls when some fail or run late: a call whose input failed is not sent
//! (issue 12, fault 8), and optional stragglers at the deadline give a partial answer, not a 504
//! (fault 9).

use crate::support::*;
use serde_json::json;
use std::time::Duration;

/// `a` is optional and fails; `b` reads `{a.id}` (optional in `/soft`, required in `/hard`);
/// `c` reads `b`; `d` only comes `after` `a`.
fn failed_input_config(up: &Upstream) -> String {
    format!(
        r#"
[upstreams.u]
endpoints = ["{}"]

[routes.soft]
path = "/soft"
  [[routes.soft.calls]]
  name = "a"
  upstream = "u"
  path = "/a"
  optional = true
  [[routes.soft.calls]]
  name = "b"
  upstream = "u"
  path = "/b/"
  query = {{ q = "{{a.id}}" }}
  optional = true
  [[routes.soft.calls]]
  name = "c"
  upstream = "u"
  path = "/c/{{b.x}}"
  optional = true
  [[routes.soft.calls]]
  name = "d"
  upstream = "u"
  path = "/d"
  after = ["a"]

[routes.hard]
method = "POST"
path = "/hard"
  [[routes.hard.calls]]
  name = "a"
  upstream = "u"
  path = "/a"
  optional = true
  [[routes.hard.calls]]
  name = "b"
  upstream = "u"
  method = "DELETE"
  path = "/b/{{a.id}}"
"#,
        up.url()
    )
}

#[tokio::test]
async fn a_call_whose_input_failed_is_not_sent() {
    let up = Upstream::start(vec![
        ("GET", "/a", Reply::raw(5, 500, "{}")),
        ("*", "/b", Reply::json(0, json!({"x": 1}))),
        ("GET", "/c", Reply::json(0, json!({"c": 1}))),
        ("GET", "/d", Reply::json(0, json!({"d": 1}))),
    ])
    .await;
    let gw = TestGateway::start(&failed_input_config(&up)).await;

    // Optional readers: not sent, `null`, and named in Manifold-Partial, down the chain; the
    // call that only comes `after` the failed one still runs (ordering, no data).
    let (status, headers, body) = send("GET", &gw.url("/soft"), None).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        json(&body),
        json!({"a": null, "b": null, "c": null, "d": {"d": 1}})
    );
    assert_eq!(partial_names(&headers), "a, b, c");
    let paths: Vec<String> = up
        .requests()
        .into_iter()
        .map(|s| s.path_and_query)
        .collect();
    assert!(
        !paths
            .iter()
            .any(|p| p.starts_with("/b") || p.starts_with("/c")),
        "a call whose input failed reached the upstream: {paths:?}"
    );
    assert!(paths.iter().any(|p| p == "/d"), "{paths:?}");

    // A required reader: 502 naming it and its failed input; the DELETE never goes out (it
    // would have been `DELETE /b/`, another resource).
    let (status, _, body) = send("POST", &gw.url("/hard"), None).await;
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    let b = json(&body);
    assert_eq!(b["error"]["kind"], "input_unavailable", "{b}");
    assert_eq!(b["error"]["calls"], json!(["b", "a"]), "{b}");
    let message = b["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("input `a`"), "{message}");
    assert!(
        !up.requests().iter().any(|s| s.method == "DELETE"),
        "{:?}",
        up.requests()
    );
}

fn straggler_config(users: &Upstream, slow: &Upstream) -> String {
    format!(
        r#"
[upstreams.users]
endpoints = ["{}"]
[upstreams.slow]
endpoints = ["{}"]
timeout = "10s"

[routes.profile]
path = "/profile"
deadline = "300ms"
  [[routes.profile.calls]]
  name = "user"
  upstream = "users"
  path = "/users/1"
  [[routes.profile.calls]]
  name = "recs"
  upstream = "slow"
  path = "/recs"
  optional = true

[routes.summary]
path = "/summary"
deadline = "300ms"
  [[routes.summary.calls]]
  name = "recs"
  upstream = "slow"
  path = "/recs"
  optional = true
  [[routes.summary.calls]]
  name = "top"
  upstream = "users"
  path = "/users/{{recs.first}}"
"#,
        users.url(),
        slow.url()
    )
}

#[tokio::test]
async fn optional_stragglers_at_the_deadline_give_a_partial_answer() {
    let users = Upstream::start(vec![("GET", "/users", Reply::json(5, json!({"n": "ann"})))]).await;
    let slow = Upstream::start(vec![("GET", "/recs", Reply::json(10_000, json!({})))]).await;
    let gw = TestGateway::start(&straggler_config(&users, &slow)).await;

    let (status, headers, body) = send("GET", &gw.url("/profile"), None).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body), json!({"user": {"n": "ann"}, "recs": null}));
    assert_eq!(partial_names(&headers), "recs");
    // The straggler was cut off, not left running.
    let mut cancelled = false;
    for _ in 0..200 {
        if slow.find("/recs").cancelled {
            cancelled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(cancelled, "the optional straggler was never cancelled");

    // A required call still waiting for the straggler cannot be answered: 504, naming both.
    let (status, _, body) = send("GET", &gw.url("/summary"), None).await;
    assert_eq!(status, 504, "{}", String::from_utf8_lossy(&body));
    let b = json(&body);
    assert_eq!(b["error"]["kind"], "deadline");
    let mut calls: Vec<&str> = b["error"]["calls"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c.as_str()).collect())
        .unwrap_or_default();
    calls.sort_unstable();
    assert_eq!(calls, ["recs", "top"], "{b}");
}

#[tokio::test]
async fn an_optional_enqueue_still_running_at_the_deadline_gives_a_partial_answer() {
    // An eager optional async call whose write hangs (NATS unreachable: the publish waits for
    // an ack up to 5 s) is the only call left at the 300 ms deadline.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let stream = format!("mfx_straggler_{}_{nanos}", std::process::id());
    let _cleanup = manifold_queue::test_support::DropStreams {
        url: "nats://127.0.0.1:4222",
        streams: vec![
            stream.clone(),
            format!("{stream}_dead"),
            format!("KV_{stream}_status"),
        ],
    };
    let relay = manifold_queue::test_support::Relay::start("127.0.0.1:4222")
        .await
        .unwrap();
    let users = Upstream::start(vec![("GET", "/users", Reply::json(5, json!({"n": "ann"})))]).await;
    let gw = TestGateway::start(&format!(
        r#"
[queue]
backend = "nats"
url = "nats://{}"
stream = "{stream}"

[upstreams.users]
endpoints = ["{}"]

[routes.signup]
method = "POST"
path = "/signup"
deadline = "300ms"
enqueue = "eager"
  [[routes.signup.calls]]
  name = "user"
  upstream = "users"
  path = "/users/1"
  [[routes.signup.calls]]
  name = "audit"
  upstream = "users"
  method = "POST"
  path = "/audit"
  body = {{ user = "{{user.n}}" }}
  mode = "async"
  optional = true
  [routes.signup.response]
  body = {{ user = "{{user}}", audit = "{{audit.task_id}}" }}
"#,
        relay.addr,
        users.url()
    ))
    .await;
    relay.cut();

    let (status, headers, body) = send("POST", &gw.url("/signup"), Some("{}")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body), json!({"user": {"n": "ann"}, "audit": null}));
    assert_eq!(partial_names(&headers), "audit");
    // The gateway stops while its NATS broker is cut: the queue's close waits on a flush of
    // the NATS client, which waited for the broker without end (the gateway still ran 60 s
    // after the stop) until closes were bounded (`manifold_queue`'s `close` module).
    gw.shutdown_within(std::time::Duration::from_secs(20)).await;
}
