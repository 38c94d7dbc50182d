//! Publish events through the gateway against the real brokers: the client gets the receipt at
//! once; a subscriber (core NATS on the subject, or a RabbitMQ queue bound to the exchange)
//! gets the rendered body with its idempotency key; and an event accepted while the broker is
//! unreachable stays in the outbox and goes out once the broker is back.

use crate::support::*;
use futures::StreamExt;
use manifold_queue::test_support::{DropRabbit, Relay};
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const NATS: &str = "127.0.0.1:4222";
const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A name unique to this run and call.
fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("gwtest_{tag}_{}_{nanos}", std::process::id())
}

/// A directory removed on drop.
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

/// `order` answers `{"id": 7}`; `shipped` publishes `{order_id, address}` under `subject`.
fn config(order: &str, events: &str, subject: &str, dir: &TempDir) -> String {
    format!(
        r#"
[queue]
backend = "embedded"
path = "{}"
backoff_base = "50ms"
backoff_max = "200ms"

{events}

[upstreams.order]
endpoints = ["{order}"]

[routes.checkout]
method = "POST"
path = "/checkout"
  [[routes.checkout.calls]]
  name = "order"
  upstream = "order"
  method = "POST"
  path = "/orders"
  [[routes.checkout.calls]]
  name = "shipped"
  mode = "publish"
  subject = "{subject}"
  headers = {{ x-tenant = "acme" }}
  body = {{ order_id = "{{order.id}}", address = "{{request.body.address}}" }}
  [routes.checkout.response]
  status = 202
  body = {{ order = "{{order.id}}", event = "{{shipped.task_id}}", key = "{{shipped.idempotency_key}}" }}
"#,
        dir.0.display()
    )
}

/// The trace the client's checkout request belongs to (its `traceparent`).
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// POST /checkout with a client idempotency key and trace context; returns the JSON answer.
async fn checkout(gw: &TestGateway) -> serde_json::Value {
    let req = http::Request::post(gw.url("/checkout"))
        .header("content-type", "application/json")
        .header("idempotency-key", "client-key-1")
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .header("x-request-id", "req-publish-1")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            br#"{"address": "1 Main St"}"#,
        )))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let status = resp.status();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
    let body = json(&body);
    assert_eq!(body["order"], 7);
    assert!(!body["event"].as_str().expect("a task id").is_empty());
    assert_eq!(body["key"], checkout_key("client-key-1", "shipped"));
    body
}

async fn queue_status(gw: &TestGateway) -> serde_json::Value {
    let (s, _, b) = send("GET", &format!("http://{}/queue", gw.admin), None).await;
    assert_eq!(s, 200);
    json(&b)
}

/// The admin `/queue` status once `done` holds for it, or the last one after 600 polls 50 ms
/// apart (the caller's assertions then say what was missing).
async fn poll_status(
    gw: &TestGateway,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut status = json!(null);
    for _ in 0..600 {
        status = queue_status(gw).await;
        if done(&status) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    status
}

/// Waits until publishing has failed at least twice, checks the event is still queued, and
/// returns the status: what an accepted event looks like while the broker is unreachable.
async fn wait_for_failed_publishes(gw: &TestGateway) -> serde_json::Value {
    let failed = |s: &serde_json::Value| s["dispatch"]["failed_attempts"].as_u64().unwrap_or(0);
    let status = poll_status(gw, |s| failed(s) >= 2).await;
    assert!(failed(&status) >= 2, "no failed publish attempts: {status}");
    assert_eq!(status["queue"]["depth"], 1, "{status}");
    status
}

/// A RabbitMQ test's exchange and subscriber queue: unique to the run, deleted afterwards.
struct RabbitNames {
    exchange: String,
    queue: String,
    _cleanup: DropRabbit,
}

impl RabbitNames {
    fn new() -> Self {
        let (exchange, queue) = (unique("ev_x"), unique("ev_q"));
        let _cleanup = DropRabbit {
            url: AMQP,
            queues: vec![queue.clone()],
            exchanges: vec![exchange.clone()],
        };
        RabbitNames {
            exchange,
            queue,
            _cleanup,
        }
    }
}

/// Declares `queue` and binds it to `exchange` with `pattern`: the subscriber's side. The
/// connection is returned so it outlives the channel.
async fn bind_queue(
    queue: &str,
    exchange: &str,
    pattern: &str,
) -> (lapin::Connection, lapin::Channel) {
    use lapin::options::{QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let conn = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        pattern.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    (conn, ch)
}

/// The first message on `queue` (auto-acked), polling up to `tries` times 50 ms apart.
async fn get_one(
    ch: &lapin::Channel,
    queue: &str,
    tries: usize,
) -> Option<lapin::message::Delivery> {
    use lapin::options::BasicGetOptions;
    for _ in 0..tries {
        if let Some(m) = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            return Some(m.delivery);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test]
async fn publish_calls_reach_nats_subscribers() {
    let dir = TempDir::new("publish_nats");
    let subject = format!("{}.orders.created", unique("ev"));
    let order = Upstream::start(vec![("POST", "/orders", Reply::json(0, json!({"id": 7})))]).await;
    let nc = async_nats::connect(NATS).await.unwrap();
    let mut sub = nc.subscribe(subject.clone()).await.unwrap();
    nc.flush().await.unwrap();
    let events = format!("[events]\nbackend = \"nats\"\nurl = \"nats://{NATS}\"");
    let gw = TestGateway::start(&config(&order.url(), &events, &subject, &dir)).await;

    checkout(&gw).await;
    let msg = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .expect("the event was never published")
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(body, json!({"order_id": 7, "address": "1 Main St"}));
    let headers = msg.headers.expect("headers");
    let get = |n: &str| headers.get(n).map(|v| v.as_str().to_owned());
    assert_eq!(
        get("Idempotency-Key").as_deref(),
        Some(checkout_key("client-key-1", "shipped").as_str())
    );
    assert_eq!(
        get("Nats-Msg-Id").as_deref(),
        Some(checkout_key("client-key-1", "shipped").as_str())
    );
    assert_eq!(get("Content-Type").as_deref(), Some("application/json"));
    assert_eq!(get("x-tenant").as_deref(), Some("acme"));
    // The event joins the request's trace: its parent is the enqueue's PRODUCER span, a new
    // span of the client's trace (not the client's own span).
    let tp = get("traceparent").expect("a traceparent on the event");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[1], TRACE_ID, "{tp}");
    assert_ne!(parts[2], "00f067aa0ba902b7", "{tp}");
    assert_eq!(get("x-request-id").as_deref(), Some("req-publish-1"));
    gw.shutdown().await;
}

#[tokio::test]
async fn publish_calls_reach_rabbitmq_queues_bound_to_the_exchange() {
    use lapin::types::AMQPValue;

    let dir = TempDir::new("publish_rabbit");
    let rabbit = RabbitNames::new();
    let (exchange, queue) = (&rabbit.exchange, &rabbit.queue);
    let order = Upstream::start(vec![("POST", "/orders", Reply::json(0, json!({"id": 7})))]).await;
    let events =
        format!("[events]\nbackend = \"rabbitmq\"\nurl = \"{AMQP}\"\nexchange = \"{exchange}\"");
    // The gateway declares the exchange at start; the subscriber binds its queue to it.
    let gw = TestGateway::start(&config(&order.url(), &events, "orders.created", &dir)).await;
    let (_conn, ch) = bind_queue(queue, exchange, "orders.*").await;

    checkout(&gw).await;
    let got = get_one(&ch, queue, 600).await;
    let delivery = got.expect("the event never reached the bound queue");
    let body: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(body, json!({"order_id": 7, "address": "1 Main St"}));
    assert_eq!(delivery.routing_key.as_str(), "orders.created");
    let props = &delivery.properties;
    assert_eq!(
        props.message_id().as_ref().map(|s| s.as_str()),
        Some(checkout_key("client-key-1", "shipped").as_str())
    );
    assert_eq!(*props.delivery_mode(), Some(2));
    let headers = props.headers().as_ref().expect("headers").inner();
    match headers.get("Idempotency-Key") {
        Some(AMQPValue::LongString(s)) => {
            assert_eq!(s.to_string(), checkout_key("client-key-1", "shipped"))
        }
        other => panic!("Idempotency-Key header: {other:?}"),
    }

    gw.shutdown().await;
}

#[tokio::test]
async fn events_accepted_while_the_broker_is_unreachable_wait_in_the_outbox() {
    let dir = TempDir::new("publish_outage");
    let subject = format!("{}.orders.created", unique("ev"));
    let order = Upstream::start(vec![("POST", "/orders", Reply::json(0, json!({"id": 7})))]).await;
    let nc = async_nats::connect(NATS).await.unwrap();
    let mut sub = nc.subscribe(subject.clone()).await.unwrap();
    nc.flush().await.unwrap();
    // The gateway reaches NATS only through the relay; it connects at start, then NATS goes
    // away for it before the request.
    let relay = Relay::start(NATS).await.unwrap();
    let events = format!(
        "[events]\nbackend = \"nats\"\nurl = \"nats://{}\"\ntimeout = \"500ms\"",
        relay.addr
    );
    let gw = TestGateway::start(&config(&order.url(), &events, &subject, &dir)).await;
    relay.cut();

    // Accepted: the event is in the outbox, whatever the broker's state.
    checkout(&gw).await;
    // Publishing fails and is retried; the task stays queued.
    let status = wait_for_failed_publishes(&gw).await;
    assert_eq!(status["queue"]["dead"], 0, "{status}");
    assert_eq!(status["dispatch"]["delivered"], 0, "{status}");

    // NATS is back for the gateway: a retry publishes the event.
    relay.restore();
    let msg = tokio::time::timeout(Duration::from_secs(60), sub.next())
        .await
        .expect("the event was never published after the broker came back")
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(body, json!({"order_id": 7, "address": "1 Main St"}));
    let key = msg.headers.as_ref().and_then(|h| h.get("Idempotency-Key"));
    assert_eq!(
        key.map(|v| v.as_str()),
        Some(checkout_key("client-key-1", "shipped").as_str())
    );
    // Acked only after the broker confirmed: the outbox empties. The dispatcher counts a delivery
    // once the queue has settled it, so the two are read together, not one after the other.
    let delivered = |s: &serde_json::Value| s["dispatch"]["delivered"].as_u64().unwrap_or(0);
    let status = poll_status(&gw, |s| s["queue"]["depth"] == 0 && delivered(s) >= 1).await;
    assert_eq!(status["queue"]["depth"], 0, "{status}");
    assert!(delivered(&status) >= 1, "{status}");
    gw.shutdown().await;
}

#[tokio::test]
async fn rabbitmq_events_accepted_during_an_outage_go_out_after_it() {
    let dir = TempDir::new("publish_rabbit_outage");
    let rabbit = RabbitNames::new();
    let (exchange, queue) = (&rabbit.exchange, &rabbit.queue);
    let order = Upstream::start(vec![("POST", "/orders", Reply::json(0, json!({"id": 7})))]).await;
    let relay = Relay::start("127.0.0.1:5672").await.unwrap();
    let events = format!(
        "[events]\nbackend = \"rabbitmq\"\nurl = \"amqp://guest:guest@{}/%2f\"\nexchange = \"{exchange}\"\ntimeout = \"1s\"",
        relay.addr
    );
    let gw = TestGateway::start(&config(&order.url(), &events, "orders.created", &dir)).await;
    let (_conn, ch) = bind_queue(queue, exchange, "orders.#").await;
    relay.cut();

    checkout(&gw).await;
    wait_for_failed_publishes(&gw).await;

    relay.restore();
    let got = get_one(&ch, queue, 1200).await;
    let delivery = got.expect("the event never reached the bound queue after the outage");
    let body: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(body, json!({"order_id": 7, "address": "1 Main St"}));
    let status = poll_status(&gw, |s| s["queue"]["depth"] == 0).await;
    assert_eq!(status["queue"]["depth"], 0, "{status}");

    gw.shutdown().await;
}

#[tokio::test]
async fn a_wrong_events_url_fails_the_start_loudly() {
    let dir = TempDir::new("publish_bad_url");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let events =
        format!("[events]\nbackend = \"nats\"\nurl = \"nats://{closed}\"\ntimeout = \"1s\"");
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{}",
        config("http://127.0.0.1:9", &events, "orders.created", &dir)
    );
    let cfg = manifold_config::compile("t.toml".as_ref(), &toml).unwrap();
    let err = manifold_gateway::Gateway::bind(cfg).await.unwrap_err();
    assert!(err.to_string().starts_with("events: "), "{err}");
}
