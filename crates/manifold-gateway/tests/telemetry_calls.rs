//! Telemetry end to end, per kind of call: a retried call's attempts, an offloaded call's
//! PRODUCER → CONSUMER → CLIENT chain, a cached call's fill and answers.

use crate::promtool;
use crate::support::*;
use crate::telemetry::{attrs, hex, sample, scrape, spans, CLIENT_SPAN, TRACE_ID};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_retried_call_has_one_span_per_attempt_the_failed_one_an_error() {
    let bad = Upstream::start(vec![("GET", "/a", Reply::raw(0, 503, "{}"))]).await;
    let good = Upstream::start(vec![("GET", "/a", Reply::json(0, json!({"id": 1})))]).await;
    let collector = Upstream::start(vec![("POST", "/v1/traces", Reply::raw(0, 200, ""))]).await;
    let gw = TestGateway::start(&format!(
        r#"
[telemetry]
otlp = {{ endpoint = "{}" }}

[upstreams.svc]
endpoints = ["{}", "{}"]
retry = {{ attempts = 2, on = ["503"], backoff = "1ms" }}

[routes.one]
method = "GET"
path = "/one"
  [[routes.one.calls]]
  name = "a"
  upstream = "svc"
  path = "/a"
"#,
        collector.url(),
        bad.url(),
        good.url()
    ))
    .await;
    // The balancer picks the first endpoint at random: send until the bad one was tried first.
    for _ in 0..40 {
        let (status, _, _) = send("GET", &gw.url("/one"), None).await;
        assert_eq!(status, 200);
        if !bad.requests().is_empty() {
            break;
        }
    }
    assert!(
        !bad.requests().is_empty(),
        "the 503 endpoint was never picked"
    );
    let tp = bad.requests()[0].headers["traceparent"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    let trace_id = tp.split('-').nth(1).expect("trace id").to_owned();
    let mut attempts = Vec::new();
    for _ in 0..100 {
        attempts = spans(&collector)
            .into_iter()
            .filter(|s| hex(&s.trace_id) == trace_id && s.kind == SpanKind::Client as i32)
            .collect();
        if attempts.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    attempts.sort_by_key(|s| s.start_time_unix_nano);
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    let (first, retry) = (attrs(&attempts[0]), attrs(&attempts[1]));
    assert_eq!(first["manifold.attempt"], "1");
    assert_eq!(first["manifold.attempt.kind"], "first");
    assert_eq!(first["http.response.status_code"], "503");
    assert_eq!(first["error.type"], "503");
    assert_eq!(
        attempts[0].status.as_ref().map(|s| s.code),
        Some(opentelemetry_proto::tonic::trace::v1::status::StatusCode::Error as i32)
    );
    assert_eq!(retry["manifold.attempt"], "2");
    assert_eq!(retry["manifold.attempt.kind"], "retry");
    assert_eq!(retry["http.request.resend_count"], "1");
    assert_eq!(retry["http.response.status_code"], "200");
    // Each attempt's upstream request names its own span.
    assert_eq!(
        tp,
        format!("00-{trace_id}-{}-01", hex(&attempts[0].span_id))
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn an_offloaded_call_is_delivered_in_the_requests_trace_and_the_queue_is_measured() {
    let dir = std::env::temp_dir().join(format!("manifold-telemetry-q-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let up = Upstream::start(vec![
        ("POST", "/orders", Reply::json(0, json!({"id": 7}))),
        ("POST", "/hook", Reply::json(0, json!({}))),
    ])
    .await;
    let collector = Upstream::start(vec![("POST", "/v1/traces", Reply::raw(0, 200, ""))]).await;
    let gw = TestGateway::start(&format!(
        r#"
[telemetry]
otlp = {{ endpoint = "{}" }}

[queue]
backend = "embedded"
path = "{}"

[upstreams.svc]
endpoints = ["{}"]

[routes.checkout]
method = "POST"
path = "/checkout"
  [[routes.checkout.calls]]
  name = "order"
  upstream = "svc"
  method = "POST"
  path = "/orders"
  [[routes.checkout.calls]]
  name = "notify"
  upstream = "svc"
  method = "POST"
  path = "/hook"
  body = {{ order = "{{order.id}}" }}
  mode = "async"
"#,
        collector.url(),
        dir.display(),
        up.url()
    ))
    .await;
    let tp = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let resp = client()
        .request(
            Request::post(gw.url("/checkout"))
                .header("traceparent", &tp)
                // The task key is then the client's, scoped: still, the delivery's spans name
                // the call, not a piece of the key.
                .header("idempotency-key", "order-42")
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("answer");
    assert!(resp.status().is_success(), "{}", resp.status());
    let mut delivered = None;
    for _ in 0..100 {
        if let Some(r) = up
            .requests()
            .into_iter()
            .find(|r| r.path_and_query == "/hook")
        {
            delivered = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered = delivered.expect("the task was delivered");
    let sent = delivered.headers["traceparent"].to_str().expect("ASCII");
    assert!(
        sent.starts_with(&format!("00-{TRACE_ID}-")),
        "the delivery is in the request's trace: {sent}"
    );

    // PRODUCER (enqueue) child of the SERVER span; CONSUMER (delivery) child of the PRODUCER;
    // the delivery's CLIENT span child of the CONSUMER, named by what the upstream received.
    let mut got = Vec::new();
    for _ in 0..100 {
        got = spans(&collector);
        if got.len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kind = |k: SpanKind| got.iter().filter(move |s| s.kind == k as i32);
    let server = kind(SpanKind::Server).next().expect("SERVER span");
    let producer = kind(SpanKind::Producer).next().expect("PRODUCER span");
    let consumer = kind(SpanKind::Consumer).next().expect("CONSUMER span");
    assert_eq!(producer.parent_span_id, server.span_id);
    assert_eq!(consumer.parent_span_id, producer.span_id);
    assert_eq!(hex(&consumer.trace_id), TRACE_ID);
    let delivery = kind(SpanKind::Client)
        .find(|s| s.parent_span_id == consumer.span_id)
        .expect("the delivery's attempt span");
    assert_eq!(sent, format!("00-{TRACE_ID}-{}-01", hex(&delivery.span_id)));
    assert_eq!(attrs(delivery)["manifold.call"], "notify");

    let text = scrape(&gw).await;
    assert_eq!(
        sample(
            &text,
            "manifold_queue_deliveries_total{queue=\"embedded\",outcome=\"ok\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "manifold_queue_depth{queue=\"embedded\"}"),
        Some(0.0)
    );
    if promtool::available() {
        promtool::assert_passes(&text);
    }
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_cache_fill_is_a_miss_and_a_cache_answer_an_internal_span() {
    let up = Upstream::start(vec![("GET", "/a", Reply::json(0, json!({"id": 1})))]).await;
    let collector = Upstream::start(vec![("POST", "/v1/traces", Reply::raw(0, 200, ""))]).await;
    let gw = TestGateway::start(&format!(
        r#"
[telemetry]
otlp = {{ endpoint = "{}" }}

[upstreams.svc]
endpoints = ["{}"]

[routes.one]
method = "GET"
path = "/one"
  [[routes.one.calls]]
  name = "a"
  upstream = "svc"
  path = "/a"
  cache = {{ ttl = "60s" }}
"#,
        collector.url(),
        up.url()
    ))
    .await;
    for _ in 0..2 {
        let (status, _, _) = send("GET", &gw.url("/one"), None).await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        up.requests().len(),
        1,
        "the second answer came from the cache"
    );
    let mut got = Vec::new();
    for _ in 0..100 {
        got = spans(&collector);
        if got.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let outcomes: Vec<(i32, String)> = got
        .iter()
        .filter(|s| s.kind != SpanKind::Server as i32)
        .map(|s| {
            let a = attrs(s);
            (
                s.kind,
                a.get("manifold.cache.outcome").cloned().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        outcomes.contains(&(SpanKind::Client as i32, "miss".to_owned())),
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&(SpanKind::Internal as i32, "l1".to_owned())),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.len(),
        2,
        "no span for the fill's own wait: {outcomes:?}"
    );
    let text = scrape(&gw).await;
    assert_eq!(
        sample(
            &text,
            "manifold_cache_hits_total{route=\"one\",call=\"a\",tier=\"l1\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "manifold_cache_misses_total{route=\"one\",call=\"a\"}"
        ),
        Some(1.0)
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_hedge_is_a_span_of_its_own_and_the_loser_is_recorded_cancelled() {
    let slow = Upstream::start(vec![(
        "*",
        "/",
        Reply::json(10_000, json!({"from": "slow"})),
    )])
    .await;
    let fast = Upstream::start(vec![("*", "/", Reply::json(1, json!({"from": "fast"})))]).await;
    let collector = Upstream::start(vec![("POST", "/v1/traces", Reply::raw(0, 200, ""))]).await;
    let gw = TestGateway::start(&format!(
        r#"
[telemetry]
otlp = {{ endpoint = "{}" }}

[upstreams.u]
endpoints = ["{}", "{}"]
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
        collector.url(),
        slow.url(),
        fast.url()
    ))
    .await;
    // Round robin: within two requests one goes to the straggler first and is hedged.
    for _ in 0..2 {
        let (status, _, _) = send("GET", &gw.url("/get"), None).await;
        assert_eq!(status, 200);
    }
    let tp = slow.requests()[0].headers["traceparent"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    let trace_id = tp.split('-').nth(1).expect("trace id").to_owned();
    let mut attempts = Vec::new();
    for _ in 0..100 {
        attempts = spans(&collector)
            .into_iter()
            .filter(|s| hex(&s.trace_id) == trace_id && s.kind == SpanKind::Client as i32)
            .collect();
        if attempts.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    attempts.sort_by_key(|s| s.start_time_unix_nano);
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    let (first, hedge) = (attrs(&attempts[0]), attrs(&attempts[1]));
    assert_eq!(first["manifold.attempt.kind"], "first");
    assert_eq!(
        first["manifold.cancelled"], "true",
        "the straggler lost: {first:?}"
    );
    assert_eq!(
        tp,
        format!("00-{trace_id}-{}-01", hex(&attempts[0].span_id))
    );
    assert_eq!(hedge["manifold.attempt.kind"], "hedge");
    assert_eq!(hedge["manifold.attempt"], "2");
    assert_eq!(hedge["http.response.status_code"], "200");
    gw.shutdown().await;
}
