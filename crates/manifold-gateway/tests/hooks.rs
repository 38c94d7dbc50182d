//! Completion hooks and the saga's compensation (issue 17 items 4-5), end to end on loopback:
//! real upstream servers, the gateway with its embedded queue, and NATS for `[events]`.
//!
//! The saga: payment succeeds, shipping dies after `max_attempts`, and the `on_dead` hook
//! refunds the payment exactly once, with its own idempotency key; the order's status says
//! shipping is `dead` and names the refund, whose own status is `done`.

use crate::support::*;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("gwhooks_{tag}_{}_{nanos}", std::process::id())
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The checkout: `payment` (sync) then `shipping` (async) with `hooks` on it.
fn config(ups: &[(&str, String)], dir: &TempDir, hooks: &str, events: &str) -> String {
    let mut upstreams = String::new();
    for (name, url) in ups {
        upstreams.push_str(&format!(
            "[upstreams.{name}]\nendpoints = [\"{url}\"]\ntimeout = \"2s\"\n"
        ));
    }
    format!(
        r#"{events}
[queue]
backend = "embedded"
path = "{}"
backoff_base = "20ms"
backoff_max = "50ms"
max_attempts = 3

{upstreams}
[routes.checkout]
method = "POST"
path = "/checkout"
  [[routes.checkout.calls]]
  name = "payment"
  upstream = "payment"
  method = "POST"
  path = "/payments"
  body = {{ amount = "{{request.body.total}}" }}
  [[routes.checkout.calls]]
  name = "shipping"
  upstream = "shipping"
  method = "POST"
  path = "/shipping/labels"
  body = {{ address = "{{request.body.address}}" }}
  mode = "async"
{hooks}
  [routes.checkout.response]
  status = 202
  body = {{ payment = "{{payment.id}}", shipping = "{{shipping.task_id}}" }}
"#,
        dir.0.display()
    )
}

async fn checkout(gw: &TestGateway, key: Option<&str>) -> serde_json::Value {
    let mut b = http::Request::post(gw.url("/checkout")).header("content-type", "application/json");
    if let Some(k) = key {
        b = b.header("idempotency-key", k);
    }
    let body = Bytes::from_static(br#"{"total": 30, "address": "1 Main St"}"#);
    let resp = client()
        .request(b.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    json(&resp.into_body().collect().await.unwrap().to_bytes())
}

async fn status(gw: &TestGateway, id: &str, wait: &str) -> serde_json::Value {
    let resp = client()
        .request(
            http::Request::get(gw.url(&format!("/tasks/{id}?wait={wait}")))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "status of {id}");
    json(&resp.into_body().collect().await.unwrap().to_bytes())
}

/// Long-polls `id` until it is final (bounded: 60 polls of up to 1 s).
async fn settled(gw: &TestGateway, id: &str) -> serde_json::Value {
    for _ in 0..60 {
        let s = status(gw, id, "1s").await;
        if s["status"] == "done" || s["status"] == "dead" {
            return s;
        }
    }
    panic!("{id} never settled: {}", status(gw, id, "0s").await);
}

#[tokio::test]
async fn the_saga_refunds_a_payment_once_when_shipping_dies() {
    let dir = TempDir::new("saga");
    let payment = Upstream::start(vec![
        (
            "POST",
            "/payments/",
            Reply::json(0, json!({"refunded": true})),
        ),
        (
            "POST",
            "/payments",
            Reply::json(0, json!({"id": "p-9", "status": "paid"})),
        ),
    ])
    .await;
    let shipping = Upstream::start(vec![("POST", "/shipping", Reply::raw(0, 503, "{}"))]).await;
    let hooks = r#"  on_dead = { upstream = "payment", method = "POST", path = "/payments/{payment.id}/refund", body = { amount = "{request.body.total}", reason = "{task.error}", attempts = "{task.attempts}", shipping_task = "{task.id}" } }"#;
    let ups = [("payment", payment.url()), ("shipping", shipping.url())];
    let gw = TestGateway::start(&config(&ups, &dir, hooks, "")).await;

    let receipt = checkout(&gw, Some("order-77")).await;
    assert_eq!(receipt["payment"], "p-9");
    let id = receipt["shipping"].as_str().unwrap().to_owned();

    let parent = settled(&gw, &id).await;
    assert_eq!(parent["status"], "dead", "{parent}");
    assert_eq!(parent["attempts"], 3, "{parent}");
    let refund_id = parent["hooks"]["on_dead"]
        .as_str()
        .unwrap_or_else(|| panic!("the dead task names its refund: {parent}"))
        .to_owned();
    let refund = settled(&gw, &refund_id).await;
    assert_eq!(refund["status"], "done", "{refund}");
    assert_eq!(refund["hook_of"], id.as_str(), "{refund}");
    assert_eq!(refund["result"], json!({"refunded": true}), "{refund}");

    let refunds: Vec<Seen> = payment
        .requests()
        .into_iter()
        .filter(|s| s.path_and_query == "/payments/p-9/refund")
        .collect();
    assert_eq!(refunds.len(), 1, "exactly one refund: {refunds:?}");
    let r = &refunds[0];
    assert_eq!(r.method, "POST");
    assert_eq!(
        r.headers["idempotency-key"],
        format!("{}:on_dead", checkout_key("order-77", "shipping"))
    );
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(
        r.json(),
        json!({"amount": 30, "reason": "upstream: status 503", "attempts": 3, "shipping_task": id})
    );
    assert_eq!(
        shipping.requests().len(),
        3,
        "shipping tried max_attempts times"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn on_done_calls_an_upstream_with_the_tasks_result() {
    let dir = TempDir::new("done");
    let payment = Upstream::start(vec![(
        "POST",
        "/payments",
        Reply::json(0, json!({"id": "p-1"})),
    )])
    .await;
    let shipping = Upstream::start(vec![(
        "POST",
        "/shipping",
        Reply::json(0, json!({"label": "L-1", "tracking": "T-42"})),
    )])
    .await;
    let notify = Upstream::start(vec![(
        "PUT",
        "/hooks/",
        Reply::json(0, json!({"ok": true})),
    )])
    .await;
    let hooks = r#"  on_done = { upstream = "notify", method = "PUT", path = "/hooks/{task.id}", headers = { x-payment = "{payment.id}" }, body = "{task.result}" }
  on_dead = { upstream = "payment", path = "/payments/{payment.id}/refund" }"#;
    let ups = [
        ("payment", payment.url()),
        ("shipping", shipping.url()),
        ("notify", notify.url()),
    ];
    let gw = TestGateway::start(&config(&ups, &dir, hooks, "")).await;

    let id = checkout(&gw, None).await["shipping"]
        .as_str()
        .unwrap()
        .to_owned();
    let parent = settled(&gw, &id).await;
    assert_eq!(parent["status"], "done", "{parent}");
    let hook_id = parent["hooks"]["on_done"].as_str().unwrap().to_owned();
    assert!(parent["hooks"].get("on_dead").is_none(), "{parent}");
    let hook = settled(&gw, &hook_id).await;
    assert_eq!(hook["status"], "done", "{hook}");

    let seen = notify.find("/hooks/");
    assert_eq!(seen.method, "PUT");
    assert_eq!(seen.path_and_query, format!("/hooks/{id}"));
    assert_eq!(seen.headers["x-payment"], "p-1");
    assert_eq!(
        seen.headers["idempotency-key"],
        format!("{id}:shipping:on_done").as_str()
    );
    assert_eq!(seen.json(), json!({"label": "L-1", "tracking": "T-42"}));
    assert!(
        !payment
            .requests()
            .iter()
            .any(|s| s.path_and_query.contains("refund")),
        "no refund for a delivered task"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn on_done_publishes_through_events() {
    const NATS: &str = "127.0.0.1:4222";
    let dir = TempDir::new("publish");
    let subject = format!("{}.shipping.done", unique("ev"));
    let payment = Upstream::start(vec![(
        "POST",
        "/payments",
        Reply::json(0, json!({"id": "p-2"})),
    )])
    .await;
    let shipping = Upstream::start(vec![(
        "POST",
        "/shipping",
        Reply::json(0, json!({"label": "L-2"})),
    )])
    .await;
    let nc = async_nats::connect(NATS).await.unwrap();
    let mut sub = nc.subscribe(subject.clone()).await.unwrap();
    nc.flush().await.unwrap();
    let events = format!("[events]\nbackend = \"nats\"\nurl = \"nats://{NATS}\"\n");
    let hooks = format!("  on_done = {{ publish = \"{subject}\" }}");
    let ups = [("payment", payment.url()), ("shipping", shipping.url())];
    let gw = TestGateway::start(&config(&ups, &dir, &hooks, &events)).await;

    let id = checkout(&gw, Some("order-5")).await["shipping"]
        .as_str()
        .unwrap()
        .to_owned();
    let msg = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .expect("the on_done event was never published")
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
    // `attempts` is the status's: failed attempts, 0 for a label made at the first try.
    assert_eq!(
        body,
        json!({"task_id": id, "status": "done", "attempts": 0, "result": {"label": "L-2"}})
    );
    let headers = msg.headers.expect("headers");
    assert_eq!(
        headers.get("Idempotency-Key").map(|v| v.as_str()),
        Some(format!("{}:on_done", checkout_key("order-5", "shipping")).as_str())
    );
    let parent = settled(&gw, &id).await;
    let hook = settled(&gw, parent["hooks"]["on_done"].as_str().unwrap()).await;
    assert_eq!(hook["status"], "done", "{hook}");
    gw.shutdown().await;
}
