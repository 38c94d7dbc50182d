//! The parse budget (`max_parsed_bytes`): composed routes' request bodies and calls' answers.
//! Parsed, a JSON text can take ~100× its size; an answer is parsed again for every request
//! that reads it, cache hits included.

use crate::compose_hostile::post_bytes;
use crate::support::*;
use serde_json::json;
use std::time::Duration;

/// How long the dependent call `slow` takes: the requests holding shares stay in flight while
/// the refused ones are sent, even on a machine that stalls for a while.
const SLOW_MS: u64 = 4000;

/// A body's first few hundred bytes, for a failure message (a passed-through answer is 64 KiB).
fn clip(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
}

fn config(up: &Upstream) -> String {
    format!(
        r#"
[upstreams.u]
endpoints = ["{}"]
timeout = "10s"
[routes.t]
path = "/t"
  [[routes.t.calls]]
  name = "big"
  upstream = "u"
  path = "/big"
  cache = {{ ttl = "60s" }}
  [[routes.t.calls]]
  name = "slow"
  upstream = "u"
  path = "/slow"
  after = ["big"]
  [routes.t.response]
  body = {{ n = "{{big.0}}", slow = "{{slow.ok}}" }}
[routes.opt]
path = "/opt"
  [[routes.opt.calls]]
  name = "big"
  upstream = "u"
  path = "/big"
  optional = true
  [[routes.opt.calls]]
  name = "quick"
  upstream = "u"
  path = "/quick"
[routes.huge]
path = "/huge"
  [[routes.huge.calls]]
  name = "huge"
  upstream = "u"
  path = "/huge"
"#,
        up.url()
    )
}

/// While the answers of the requests in flight hold the budget, a required call's answer is
/// refused (503 `shed`, `Retry-After`, naming the upstream) and an optional one's is `null` with
/// `Manifold-Partial`; an answer that alone would exceed the budget is a 502 `too_large`; the
/// shares come back when their requests end. Cache hits take shares as misses do.
#[tokio::test]
async fn parsed_answers_are_bounded_by_the_parse_budget() {
    // 8 KiB of numbers: ~270 KB parsed (estimated); three fit in 1 MiB at once, a fourth not.
    let big = format!("[{}0]", "0,".repeat(4 * 1024));
    // 64 KiB of one-member objects: ~7 MB parsed, more than the whole budget.
    let huge = format!("[{}{{\"a\":0}}]", "{\"a\":0},".repeat(8 * 1024));
    let up = Upstream::start(vec![
        ("GET", "/big", Reply::raw(0, 200, &big)),
        ("GET", "/huge", Reply::raw(0, 200, &huge)),
        ("GET", "/slow", Reply::json(SLOW_MS, json!({"ok": true}))),
        ("GET", "/quick", Reply::json(0, json!({"ok": true}))),
    ])
    .await;
    let gw = TestGateway::start_with_server("max_parsed_bytes = 1048576", &config(&up)).await;

    let (status, _, body) = send("GET", &gw.url("/huge"), None).await;
    assert_eq!(status, 502, "{}", clip(&body));
    let error = &json(&body)["error"];
    assert_eq!(error["kind"], "too_large", "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("max_parsed_bytes"), "{message}");

    // Three requests whose `big` answers (one miss, then hits) hold the budget while `slow`,
    // sent only once `big` is parsed, keeps them in flight.
    let url = gw.url("/t");
    let holding: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { send("GET", &url, None).await })
        })
        .collect();
    let slow_seen = || {
        up.requests()
            .iter()
            .filter(|s| s.path_and_query == "/slow")
            .count()
    };
    for _ in 0..200 {
        if slow_seen() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        slow_seen(),
        3,
        "the three requests parsed `big` and sent `slow`"
    );

    let (status, headers, body) = send("GET", &gw.url("/t"), None).await;
    assert_eq!(status, 503, "{}", clip(&body));
    let error = &json(&body)["error"];
    assert_eq!(error["kind"], "shed", "{error}");
    assert_eq!(error["call"], "big", "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("upstream `u`") && message.contains("max_parsed_bytes"),
        "{message}"
    );
    assert!(headers.contains_key("retry-after"), "{headers:?}");

    let (status, headers, body) = send("GET", &gw.url("/opt"), None).await;
    assert_eq!(status, 200, "{}", clip(&body));
    assert_eq!(partial_names(&headers), "big");
    let partial = headers["manifold-partial"].to_str().unwrap_or_default();
    assert!(partial.contains("kind=shed"), "{partial}");

    for h in holding {
        let (status, _, body) = h.await.expect("a request");
        assert_eq!(status, 200, "{}", clip(&body));
        assert_eq!(json(&body), json!({"n": 0, "slow": true}));
    }
    // Their shares came back: the same requests are served again.
    let (status, _, body) = send("GET", &gw.url("/opt"), None).await;
    assert_eq!(status, 200, "{}", clip(&body));
    let (status, _, body) = send("GET", &gw.url("/t"), None).await;
    assert_eq!(status, 200, "{}", clip(&body));
}

/// Parsed, a JSON body takes up to ~100× its size (`[{"a":0},…]`: a B-tree node per object),
/// so the body limit does not bound what a few clients' bodies take together: the parse budget
/// (`max_parsed_bytes`) does. A body that alone would exceed it is 413; while the bodies of the
/// requests in flight hold it, another is 503 `shed` with `Retry-After`; their shares come back
/// when they end. Small bodies (under 4 KiB) are not counted.
#[tokio::test]
async fn parsed_request_bodies_are_bounded_by_the_parse_budget() {
    // Slow enough that the four requests below are surely in flight together.
    let up = Upstream::start(vec![(
        "POST",
        "/slow",
        Reply::json(2500, json!({"ok": true})),
    )])
    .await;
    let gw = TestGateway::start_with_server(
        "max_body_bytes = 1048576\nmax_parsed_bytes = 1048576",
        &format!(
            r#"
[upstreams.u]
endpoints = ["{}"]
timeout = "10s"
[routes.t]
method = "POST"
path = "/t"
  [[routes.t.calls]]
  name = "c"
  upstream = "u"
  method = "POST"
  path = "/slow"
  body = {{ n = "{{request.body.0}}" }}
"#,
            up.url()
        ),
    )
    .await;
    // 64 KiB of one-member objects: ~7 MB parsed, more than the whole budget.
    let hostile = format!("[{}{{\"a\":0}}]", "{\"a\":0},".repeat(8 * 1024));
    let (status, body) = post_bytes(&gw.url("/t"), hostile.as_bytes()).await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["error"]["kind"], "body_too_large");
    // 8 KiB of numbers: ~270 KB each, three fit in the budget at once, a fourth does not.
    let numbers = format!("[{}0]", "0,".repeat(4 * 1024));
    let url = gw.url("/t");
    let sent: Vec<_> = (0..4)
        .map(|_| {
            let (url, body) = (url.clone(), numbers.clone());
            tokio::spawn(async move { post_bytes(&url, body.as_bytes()).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for s in sent {
        let (status, body) = s.await.expect("a request");
        if status == 503 {
            assert_eq!(json(&body)["error"]["kind"], "shed");
        }
        statuses.push(status.as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 503]);
    // Their shares came back.
    let (status, _) = post_bytes(&gw.url("/t"), numbers.as_bytes()).await;
    assert_eq!(status, 200);
    // A small body is never counted.
    let (status, _) = post_bytes(&gw.url("/t"), b"[1]").await;
    assert_eq!(status, 200);
}
