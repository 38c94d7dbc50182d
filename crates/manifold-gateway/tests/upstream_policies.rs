//! The upstream stack's policies through the whole gateway (issue 13, items 4 and 7): a dead
//! endpoint among two costs no failed request, on composed and proxy routes alike, and a body
//! the client streamed reaches the live endpoint whole.

use crate::support::*;
use serde_json::json;

fn dead_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

#[tokio::test]
async fn a_dead_endpoint_among_two_costs_no_failed_request() {
    let live = Upstream::start(vec![("*", "/", Reply::json(1, json!({"ok": true})))]).await;
    let dead = dead_addr();
    let gw = TestGateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["http://{dead}", "{live}"]
[routes.pass]
path = "/pass/{{*rest}}"
proxy = "u"
[routes.pass_post]
method = "POST"
path = "/pass/{{*rest}}"
proxy = "u"
[routes.composed]
path = "/composed"
  [[routes.composed.calls]]
  name = "x"
  upstream = "u"
  method = "POST"
  path = "/x"
"#,
        live = live.url()
    ))
    .await;
    for n in 0..6 {
        let (status, _, _) = send("GET", &gw.url("/pass/a"), None).await;
        assert_eq!(status, 200, "proxied GET {n}");
        let (status, _, _) = send("POST", &gw.url("/pass/b"), Some("{\"n\":1}")).await;
        assert_eq!(status, 200, "proxied POST {n}");
        let (status, _, body) = send("GET", &gw.url("/composed"), None).await;
        assert_eq!(
            status,
            200,
            "composed POST {n}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let seen = live.requests();
    assert_eq!(
        seen.len(),
        18,
        "each request reached the live endpoint once"
    );
    let posts: Vec<_> = seen
        .iter()
        .filter(|s| s.path_and_query.ends_with("/b"))
        .collect();
    assert_eq!(posts.len(), 6);
    assert!(
        posts.iter().all(|s| &s.body[..] == b"{\"n\":1}"),
        "the body arrived whole"
    );
}

/// One endpoint answering 503, one answering 200, in turn; calls retried on 503 when they may be.
#[tokio::test]
async fn a_503_is_retried_on_the_other_endpoint_only_for_calls_that_may_be_repeated() {
    let busy = Upstream::start(vec![("*", "/", Reply::raw(1, 503, "{}"))]).await;
    let live = Upstream::start(vec![("*", "/", Reply::json(1, json!({"ok": true})))]).await;
    let gw = TestGateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["{busy}", "{live}"]
balance = "round_robin"
retry = {{ attempts = 2, on = ["503"], backoff = "1ms" }}
[routes.get]
path = "/get"
  [[routes.get.calls]]
  name = "read"
  upstream = "u"
  path = "/r"
[routes.safe_post]
path = "/safe"
  [[routes.safe_post.calls]]
  name = "charge"
  upstream = "u"
  method = "POST"
  path = "/c"
  idempotent = true
[routes.once_get]
path = "/once-get"
  [[routes.once_get.calls]]
  name = "peek"
  upstream = "u"
  path = "/p"
  idempotent = false
[routes.once_post]
path = "/once"
  [[routes.once_post.calls]]
  name = "charge"
  upstream = "u"
  method = "POST"
  path = "/c"
  idempotent = false
"#,
        busy = busy.url(),
        live = live.url()
    ))
    .await;
    for n in 0..4 {
        let (status, _, body) = send("GET", &gw.url("/get"), None).await;
        assert_eq!(status, 200, "GET {n}: {}", String::from_utf8_lossy(&body));
        let (status, _, body) = send("GET", &gw.url("/safe"), None).await;
        assert_eq!(
            status,
            200,
            "idempotent POST {n}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    // Sent once: every other one lands on the busy endpoint and its 503 is the answer (a GET
    // too, when its call says `idempotent = false`).
    let sent = || busy.requests().len() + live.requests().len();
    let before = sent();
    let mut failed = 0;
    for path in ["/once", "/once", "/once-get", "/once-get"] {
        let (status, _, body) = send("GET", &gw.url(path), None).await;
        if status == 502 {
            failed += 1;
            let b = json(&body);
            assert_eq!(b["error"]["upstream_status"], 503);
            assert_eq!(b["error"]["attempts"], 1);
            assert_eq!(b["error"]["retry_stopped"], "not_idempotent");
            assert_eq!(
                b["error"]["endpoint"],
                busy.addr.expect("listening").to_string()
            );
        }
    }
    assert_eq!(failed, 2);
    assert_eq!(
        sent() - before,
        4,
        "each call that may not be repeated was sent once"
    );
}

/// A straggling replica: the hedge answers from the other, and the straggler's request is
/// cancelled (its connection closed).
#[tokio::test]
async fn a_straggler_is_hedged_and_cancelled() {
    let slow = Upstream::start(vec![(
        "*",
        "/",
        Reply::json(10_000, json!({"from": "slow"})),
    )])
    .await;
    let fast = Upstream::start(vec![("*", "/", Reply::json(1, json!({"from": "fast"})))]).await;
    let gw = TestGateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["{slow}", "{fast}"]
balance = "round_robin"
timeout = "20s"
hedge = {{ after = "20ms", max = 1, budget = 1.0 }}
[routes.get]
path = "/get"
response.body = "{{read}}"
  [[routes.get.calls]]
  name = "read"
  upstream = "u"
  path = "/r"
"#,
        slow = slow.url(),
        fast = fast.url()
    ))
    .await;
    let start = tokio::time::Instant::now();
    for n in 0..4 {
        let (status, _, body) = send("GET", &gw.url("/get"), None).await;
        assert_eq!(status, 200, "GET {n}: {}", String::from_utf8_lossy(&body));
        assert_eq!(json(&body), json!({"from": "fast"}));
    }
    assert!(
        start.elapsed() < std::time::Duration::from_secs(5),
        "no call waited for the straggler"
    );
    // The straggler saw its requests cancelled (allow its server a moment to notice).
    let mut cancelled = 0;
    for _ in 0..100 {
        let seen = slow.requests();
        cancelled = seen.iter().filter(|s| s.cancelled).count();
        if !seen.is_empty() && cancelled == seen.len() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let seen = slow.requests().len();
    assert!(
        seen >= 1,
        "round robin sent some calls to the straggler first"
    );
    assert_eq!(cancelled, seen, "every straggling request was cancelled");
}
