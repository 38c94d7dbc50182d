//! Durable offload through the gateway: the client gets the receipt at once; the upstream gets
//! the call later, with an idempotency key, even when it was down at accept time.

use crate::support::*;
use serde_json::json;
use std::time::Duration;

fn config(order: &str, shipping: &str, dir: &std::path::Path) -> String {
    format!(
        r#"
[queue]
backend = "embedded"
path = "{}"
backoff_base = "50ms"
backoff_max = "200ms"

[upstreams.order]
endpoints = ["{order}"]
[upstreams.shipping]
endpoints = ["{shipping}"]
timeout = "1s"

[routes.checkout]
method = "POST"
path = "/checkout"
  [[routes.checkout.calls]]
  name = "order"
  upstream = "order"
  method = "POST"
  path = "/orders"
  [[routes.checkout.calls]]
  name = "shipping"
  upstream = "shipping"
  method = "POST"
  path = "/shipping/labels"
  body = {{ order_id = "{{order.id}}", address = "{{request.body.address}}" }}
  mode = "async"
  [routes.checkout.response]
  status = 202
  body = {{ order = "{{order.id}}", shipping = "{{shipping.task_id}}" }}
"#,
        dir.display()
    )
}

#[tokio::test]
async fn async_calls_answer_with_a_receipt_and_are_delivered_later() {
    let dir = std::env::temp_dir().join(format!("manifold-offload-{}", std::process::id()));
    let order = Upstream::start(vec![("POST", "/orders", Reply::json(0, json!({"id": 7})))]).await;
    // The shipping service is down when the request is accepted: nothing listens there yet.
    let spare = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let shipping_addr = spare.local_addr().unwrap();
    drop(spare);
    let gw = TestGateway::start(&config(
        &order.url(),
        &format!("http://{shipping_addr}"),
        &dir,
    ))
    .await;

    let req = http::Request::post(gw.url("/checkout"))
        .header("content-type", "application/json")
        .header("idempotency-key", "client-key-1")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            br#"{"address": "1 Main St"}"#,
        )))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 202);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let body = json(&body);
    assert_eq!(body["order"], 7);
    let task_id = body["shipping"].as_str().expect("a task id").to_owned();
    assert!(!task_id.is_empty());

    // Now the shipping service comes up on that address; the dispatcher's retries reach it.
    let listener = tokio::net::TcpListener::bind(shipping_addr).await.unwrap();
    let shipping = Upstream::serve(
        listener,
        vec![("POST", "/shipping", Reply::json(0, json!({"label": "L"})))],
    );
    let delivered = shipping.requests_when(|s| !s.is_empty()).await;
    let seen = delivered
        .into_iter()
        .next()
        .expect("the queued call was never delivered");
    assert_eq!(seen.path_and_query, "/shipping/labels");
    assert_eq!(seen.json(), json!({"order_id": 7, "address": "1 Main St"}));
    assert_eq!(
        seen.headers["idempotency-key"],
        checkout_key("client-key-1", "shipping")
    );

    let (s, _, b) = send("GET", &format!("http://{}/queue", gw.admin), None).await;
    assert_eq!(s, 200);
    assert!(
        json(&b)["dispatch"].is_object(),
        "{}",
        String::from_utf8_lossy(&b)
    );
    gw.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// A configured header whose rendered value holds non-ASCII text (a name from the client's
/// body, `José`) is a valid header value: a sync call sends it as UTF-8 bytes, and so must the
/// same call made async. It was dropped from the task without a word (the task kept only header
/// values that are visible ASCII), so the upstream got the call without the header, e.g. without
/// the tenant or user it acts for, while the client got its 202.
#[tokio::test]
async fn an_async_call_keeps_a_header_whose_rendered_value_is_not_ascii() {
    let dir = std::env::temp_dir().join(format!("manifold-offload-utf8-{}", std::process::id()));
    let up = Upstream::start(vec![("POST", "/", Reply::json(0, json!({"ok": true})))]).await;
    let gw = TestGateway::start(&format!(
        r#"
[queue]
backend = "embedded"
path = "{}"
backoff_base = "50ms"
backoff_max = "200ms"
[upstreams.u]
endpoints = ["{}"]
[routes.r]
method = "POST"
path = "/r"
  [[routes.r.calls]]
  name = "now"
  upstream = "u"
  method = "POST"
  path = "/now"
  headers = {{ x-user = "{{request.body.user}}" }}
  [[routes.r.calls]]
  name = "later"
  upstream = "u"
  method = "POST"
  path = "/later"
  headers = {{ x-user = "{{request.body.user}}" }}
  mode = "async"
"#,
        dir.display(),
        up.url()
    ))
    .await;
    let (status, body) =
        crate::compose_hostile::post_bytes(&gw.url("/r"), r#"{"user": "José"}"#.as_bytes()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let is_later = |s: &Seen| s.path_and_query == "/later";
    let later = up
        .requests_when(|seen| seen.iter().any(is_later))
        .await
        .into_iter()
        .find(is_later)
        .expect("the async call was never delivered");
    let now = up.find("/now");
    assert_eq!(now.headers["x-user"].as_bytes(), "José".as_bytes());
    assert_eq!(
        later.headers.get("x-user").map(http::HeaderValue::as_bytes),
        Some("José".as_bytes()),
        "the async call lost its header"
    );
    gw.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// A client body that renders a task larger than `[queue] max_task_bytes` is refused as the
/// client's (413, as docs/offload.md says), not answered 503 `queue` ("try again"), which told
/// the client to send the same body again and again; nothing is written or delivered, and a
/// body that fits still is.
#[tokio::test]
async fn a_task_larger_than_max_task_bytes_is_the_clients_413_not_a_503() {
    let dir = std::env::temp_dir().join(format!("manifold-offload-big-{}", std::process::id()));
    let up = Upstream::start(vec![("POST", "/", Reply::json(0, json!({"ok": true})))]).await;
    // The defaults' proportions: a body the gateway reads (1 MiB) may render a task larger
    // than the queue keeps (512 KiB).
    let gw = TestGateway::start_with_server(
        "max_body_bytes = 65536",
        &format!(
            r#"
[queue]
backend = "embedded"
path = "{}"
max_task_bytes = 4096
[upstreams.u]
endpoints = ["{}"]
[routes.r]
method = "POST"
path = "/r"
  [[routes.r.calls]]
  name = "later"
  upstream = "u"
  method = "POST"
  path = "/later"
  body = "{{request.body}}"
  mode = "async"
"#,
            dir.display(),
            up.url()
        ),
    )
    .await;
    let big = serde_json::to_vec(&json!({"note": "x".repeat(8192)})).expect("json");
    let (status, body) = crate::compose_hostile::post_bytes(&gw.url("/r"), &big).await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 413, "{text}");
    assert_eq!(json(&body)["error"]["call"], "later", "{text}");
    let (status, body) =
        crate::compose_hostile::post_bytes(&gw.url("/r"), br#"{"note": "small"}"#).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    up.requests_when(|s| !s.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent: Vec<serde_json::Value> = up.requests().iter().map(|s| s.json()).collect();
    assert_eq!(sent, [json!({"note": "small"})]);
    gw.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}
