//! When a route's tasks are written (issue 12, fault 10): by default (`enqueue = "on_success"`)
//! only once every required call succeeded, so a failed request leaves no task to deliver;
//! `enqueue = "eager"` keeps writing them as soon as they are rendered.

use crate::support::*;
use serde_json::json;
use std::time::Duration;

/// `/ok/...` and `/fail/...`: an order, an async shipping call reading it, then a required
/// `confirm` that comes after the shipping call (so under `eager` the task is durable before
/// `confirm` even starts) and succeeds or fails. `/fail-eager` is `/fail` with `enqueue = "eager"`.
fn config(order: &Upstream, shipping: &str, dir: &std::path::Path, queue_extra: &str) -> String {
    let route = |name: &str, confirm: &str, enqueue: &str, optional: bool| {
        format!(
            r#"
[routes.{name}]
method = "POST"
path = "/{name}"
{enqueue}
  [[routes.{name}.calls]]
  name = "order"
  upstream = "order"
  method = "POST"
  path = "/orders"
  [[routes.{name}.calls]]
  name = "shipping"
  upstream = "shipping"
  method = "POST"
  path = "/shipping/labels"
  body = {{ order_id = "{{order.id}}", route = "{name}" }}
  mode = "async"
  optional = {optional}
  [[routes.{name}.calls]]
  name = "confirm"
  upstream = "order"
  method = "POST"
  path = "/{confirm}/{{order.id}}"
  after = ["shipping"]
  [routes.{name}.response]
  status = 202
  body = {{ order = "{{order.id}}", shipping = "{{shipping.task_id}}", key = "{{shipping.idempotency_key}}" }}
"#
        )
    };
    format!(
        r#"
[queue]
backend = "embedded"
path = "{}"
backoff_base = "50ms"
backoff_max = "100ms"
{queue_extra}

[upstreams.order]
endpoints = ["{}"]
[upstreams.shipping]
endpoints = ["{shipping}"]
timeout = "1s"
connect_timeout = "200ms"
{}{}{}{}"#,
        dir.display(),
        order.url(),
        route("ok", "confirm", "", false),
        route("fail", "reject", "", false),
        route("fail-eager", "reject", "enqueue = \"eager\"", false),
        route("soft", "confirm", "", true),
    )
}

async fn order_upstream() -> Upstream {
    Upstream::start(vec![
        ("POST", "/orders", Reply::json(0, json!({"id": 7}))),
        ("POST", "/confirm", Reply::json(0, json!({"ok": true}))),
        ("POST", "/reject", Reply::raw(0, 500, "{}")),
    ])
    .await
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "manifold-enqueue-{tag}-{}-{nanos}",
        std::process::id()
    ))
}

async fn queue_depth(gw: &TestGateway) -> u64 {
    let (s, _, b) = send("GET", &format!("http://{}/queue", gw.admin), None).await;
    assert_eq!(s, 200);
    let b = json(&b);
    b["queue"]["depth"]
        .as_u64()
        .unwrap_or_else(|| panic!("no depth in {b}"))
}

/// Wait (generously) until the upstream has seen a request matching `pred`.
async fn wait_for(up: &Upstream, what: &str, pred: impl Fn(&Seen) -> bool) -> Seen {
    for _ in 0..400 {
        if let Some(s) = up.requests().into_iter().find(&pred) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what}: never seen; saw {:?}", up.requests());
}

#[tokio::test]
async fn a_failed_request_leaves_no_task_behind() {
    let dir = temp_dir("fail");
    let order = order_upstream().await;
    let shipping = Upstream::start(vec![(
        "POST",
        "/shipping",
        Reply::json(0, json!({"label": "L"})),
    )])
    .await;
    let gw = TestGateway::start(&config(&order, &shipping.url(), &dir, "")).await;

    // The required `confirm` fails after the shipping call was rendered: the client gets the
    // error, and no task exists to deliver (a retry would otherwise ship twice).
    let (status, _, body) = send("POST", &gw.url("/fail"), Some("{}")).await;
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["error"]["call"], "confirm");
    // Depth first: a task that existed and was already delivered was seen by the upstream
    // before it left the queue, so together these two cannot miss one.
    assert_eq!(
        queue_depth(&gw).await,
        0,
        "a failed request left a task queued"
    );
    assert!(
        shipping.requests().is_empty(),
        "a failed request's task was delivered: {:?}",
        shipping.requests()
    );

    // A request that succeeds has its task written before the answer; the receipt it carries
    // is the task that is delivered.
    let (status, _, body) = send("POST", &gw.url("/ok"), Some("{}")).await;
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
    let b = json(&body);
    let task_id = b["shipping"].as_str().expect("a task id").to_owned();
    assert_eq!(b["key"], format!("{task_id}:shipping"));
    let seen = wait_for(&shipping, "the successful request's task", |_| true).await;
    assert_eq!(seen.json(), json!({"order_id": 7, "route": "ok"}));
    assert_eq!(
        seen.headers["idempotency-key"],
        format!("{task_id}:shipping")
    );

    // `eager` keeps the old behaviour where it is chosen: the task was written before
    // `confirm` failed, and it is delivered although the client got an error.
    let (status, _, _) = send("POST", &gw.url("/fail-eager"), Some("{}")).await;
    assert_eq!(status, 502);
    wait_for(&shipping, "the eager route's task", |s| {
        s.json()["route"] == "fail-eager"
    })
    .await;
    assert!(
        !shipping
            .requests()
            .iter()
            .any(|s| s.json()["route"] == "fail"),
        "{:?}",
        shipping.requests()
    );

    gw.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn a_task_that_cannot_be_written_fails_the_request_after_its_calls_succeeded() {
    let dir = temp_dir("full");
    let order = order_upstream().await;
    // Nobody listens for shipping: the first task stays queued and fills the queue.
    let spare = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let shipping = format!("http://{}", spare.local_addr().unwrap());
    drop(spare);
    let gw = TestGateway::start(&config(
        &order,
        &shipping,
        &dir,
        "max_tasks = 1\nretry_after = \"3s\"",
    ))
    .await;

    let (status, _, body) = send("POST", &gw.url("/ok"), Some("{}")).await;
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
    let (status, headers, body) = send("POST", &gw.url("/ok"), Some("{}")).await;
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    let b = json(&body);
    assert_eq!(b["error"]["kind"], "queue_full", "{b}");
    assert_eq!(b["error"]["call"], "shipping", "{b}");
    assert_eq!(headers["retry-after"], "3");
    // The write came last: every required call of the refused request had run.
    let confirms = order
        .requests()
        .iter()
        .filter(|s| s.path_and_query.starts_with("/confirm"))
        .count();
    assert_eq!(confirms, 2);

    // An optional call's task that cannot be written: the answer stands, without it.
    let (status, headers, body) = send("POST", &gw.url("/soft"), Some("{}")).await;
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["shipping"], serde_json::Value::Null);
    assert_eq!(partial_names(&headers), "shipping");

    gw.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}
