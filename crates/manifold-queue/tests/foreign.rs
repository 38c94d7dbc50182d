//! Messages Manifold did not write: another producer on the stream or queue, or a replica of
//! another version. A task that decodes but fails the checks `enqueue` makes (a URL instead of a
//! path, a header a request cannot carry) is never delivered: it goes to the dead letters with
//! the reason, and the tasks behind it are delivered as usual. An event whose headers the broker
//! cannot carry is a permanent failure, not a panic.

use std::time::Duration;

use manifold_queue::test_support::{DropRabbit, DropStreams};
use manifold_queue::{
    EventsBackend, EventsConfig, NatsOptions, NatsQueue, Publisher, Queue, RabbitOptions,
    RabbitQueue, Task,
};

use crate::common::{task, unique};

const NATS: &str = "nats://127.0.0.1:4222";
const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// `task(n)` encoded, with `field` replaced by `value`, as a foreign producer would write it.
fn hostile(n: usize, field: &str, value: serde_json::Value) -> (String, Vec<u8>) {
    let t = task(n);
    let mut json: serde_json::Value = serde_json::from_slice(&t.encode().unwrap()).unwrap();
    json[field] = value;
    (t.id, serde_json::to_vec(&json).unwrap())
}

/// The hostile tasks each test writes: a URL in place of the path (it would go out as the
/// request target, sending the upstream's proxy elsewhere), a header split over two lines, a
/// header name with a space, and an idempotency key with a line break.
fn hostiles() -> Vec<(String, Vec<u8>)> {
    vec![
        hostile(
            1,
            "path_and_query",
            serde_json::json!("http://evil.example/steal"),
        ),
        hostile(
            2,
            "headers",
            serde_json::json!([["x-a", "1\r\nx-injected: yes"]]),
        ),
        hostile(3, "headers", serde_json::json!([["x a", "1"]])),
        hostile(
            4,
            "idempotency_key",
            serde_json::json!("k\r\nNats-Rollup: all"),
        ),
    ]
}

async fn lease_all(q: &dyn Queue, want: usize) -> Vec<Task> {
    let mut out = Vec::new();
    for _ in 0..20 {
        for lease in q.lease(10, Duration::from_millis(500)).await.unwrap() {
            out.push(lease.task.clone());
            q.ack(lease).await.unwrap();
        }
        if out.len() >= want && q.stats().await.unwrap().depth == 0 {
            break;
        }
    }
    out
}

#[tokio::test]
async fn nats_foreign_tasks_that_fail_validation_are_dead_lettered_not_delivered() {
    let stream = unique("nats_foreign");
    let _cleanup = DropStreams {
        url: NATS,
        streams: vec![
            stream.clone(),
            format!("{stream}_dead"),
            format!("KV_{stream}_status"),
        ],
    };
    let q = NatsQueue::connect(NatsOptions {
        url: NATS.into(),
        stream: stream.clone(),
        consumer: format!("{stream}_c"),
        max_bytes: 64 << 20,
        max_tasks: 10_000,
        max_task_bytes: 64 * 1024,
        retry_after: Duration::from_secs(1),
        lease_timeout: Duration::from_secs(30),
        status: manifold_queue::StatusLimits::default(),
        max_age: Duration::from_secs(3600),
    })
    .await
    .unwrap();
    let client = async_nats::connect(NATS).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let bad = hostiles();
    for (_, bytes) in &bad {
        js.publish(format!("{stream}.tasks"), bytes.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let good = task(9);
    q.enqueue(good.clone()).await.unwrap();

    let delivered = lease_all(&q, 1).await;
    let ids: Vec<&str> = delivered.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, [good.id.as_str()], "only the valid task is delivered");
    // Junk on a dead-letter subject does not hide the real dead letters.
    js.publish(format!("{stream}.dead.junk"), "not a task".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(
        dead.len(),
        bad.len(),
        "every hostile task is kept as a dead letter"
    );
    for (id, _) in &bad {
        let d = dead.iter().find(|t| &t.id == id).expect("dead-lettered");
        let why = d.last_error.as_deref().unwrap_or_default();
        assert!(why.contains("not deliverable"), "{why}");
    }
    q.destroy().await.unwrap();
}

#[tokio::test]
async fn rabbitmq_foreign_tasks_that_fail_validation_are_dead_lettered_not_delivered() {
    use lapin::options::BasicPublishOptions;
    let name = unique("rmq_foreign");
    let _cleanup = DropRabbit {
        url: AMQP,
        queues: vec![name.clone(), format!("{name}.dead")],
        exchanges: Vec::new(),
    };
    let q = RabbitQueue::connect(RabbitOptions {
        url: AMQP.into(),
        queue: name.clone(),
        max_tasks: 10_000,
        max_bytes: 64 << 20,
        max_task_bytes: 64 * 1024,
        retry_after: Duration::from_secs(1),
    })
    .await
    .unwrap();
    let conn = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let bad = hostiles();
    for (_, bytes) in &bad {
        ch.basic_publish(
            "".into(),
            name.as_str().into(),
            BasicPublishOptions::default(),
            bytes,
            lapin::BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let good = task(9);
    q.enqueue(good.clone()).await.unwrap();

    let delivered = lease_all(&q, 1).await;
    let ids: Vec<&str> = delivered.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, [good.id.as_str()], "only the valid task is delivered");
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(
        dead.len(),
        bad.len(),
        "every hostile task is kept as a dead letter"
    );
    for (id, _) in &bad {
        let d = dead.iter().find(|t| &t.id == id).expect("dead-lettered");
        let why = d.last_error.as_deref().unwrap_or_default();
        assert!(why.contains("not deliverable"), "{why}");
    }
    let _ = conn.close(200, "done".into()).await;
    q.destroy().await.unwrap();
}

#[tokio::test]
async fn nats_event_headers_the_broker_cannot_carry_are_a_permanent_error_not_a_panic() {
    let subject = format!("{}.created", unique("events_bad"));
    let cfg = EventsConfig {
        url: Some(NATS.into()),
        ..EventsConfig::new(EventsBackend::Nats)
    };
    let publisher = Publisher::connect(&cfg).await.unwrap();
    let with = |headers: Vec<(String, String)>, key: &str| {
        Task::event(key, subject.as_str(), headers, b"{}".to_vec())
    };
    for event in [
        with(vec![("x a".into(), "1".into())], "k:1"),
        with(vec![("x-a:b".into(), "1".into())], "k:2"),
        with(vec![("x-a".into(), "1\r\nNats-Rollup: all".into())], "k:3"),
        with(vec![], "k\r\nNats-Rollup: all"),
    ] {
        // Run where a panic is caught, so one bad case does not hide the others.
        let p = &publisher;
        let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(async move {
            p.publish(&event).await
        }))
        .await;
        let err = outcome
            .expect("publishing an event with a bad header panicked")
            .expect_err("an event with a bad header was published");
        assert!(!err.is_retryable(), "{err}");
    }
    publisher.close().await;
}

/// An event's subject is published as the gateway's NATS user: one in the server's own `$`
/// namespaces is a request to the server (`$JS.API.STREAM.DELETE.<stream>` deletes the stream,
/// `$KV.<bucket>.<key>` writes a key), never an event. A task carrying one (another producer on
/// the outbox, a stored hook) is refused, and the stream is still there.
#[tokio::test]
async fn nats_event_subjects_in_the_servers_namespaces_are_refused() {
    let stream = unique("events_sys");
    let _cleanup = DropStreams {
        url: NATS,
        streams: vec![stream.clone()],
    };
    let client = async_nats::connect(NATS).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{stream}.in")],
        ..Default::default()
    })
    .await
    .unwrap();
    let cfg = EventsConfig {
        url: Some(NATS.into()),
        ..EventsConfig::new(EventsBackend::Nats)
    };
    let publisher = Publisher::connect(&cfg).await.unwrap();
    let event = Task::event(
        "k:1",
        format!("$JS.API.STREAM.DELETE.{stream}"),
        vec![],
        b"{}".to_vec(),
    );
    let sent = publisher.publish(&event).await;
    assert!(
        js.get_stream(&stream).await.is_ok(),
        "the event deleted the stream"
    );
    let err = sent.expect_err("an event to the JetStream API was published");
    assert!(!err.is_retryable(), "{err}");
    publisher.close().await;
}

/// AMQP header names are short strings (at most 255 bytes): a longer one is cut at its length
/// byte and the rest read as further headers (and in a debug build the client panics). A task
/// carrying one is refused before it is sent.
#[tokio::test]
async fn rabbitmq_event_header_names_beyond_255_bytes_are_refused() {
    let exchange = unique("events_long");
    let _cleanup = DropRabbit {
        url: AMQP,
        queues: Vec::new(),
        exchanges: vec![exchange.clone()],
    };
    let cfg = EventsConfig {
        url: Some(AMQP.into()),
        exchange: Some(exchange.clone()),
        ..EventsConfig::new(EventsBackend::Rabbitmq)
    };
    let publisher = Publisher::connect(&cfg).await.unwrap();
    let long = format!("x-{}", "a".repeat(300));
    let event = Task::event(
        "k:1",
        "orders.created",
        vec![(long, "1".into())],
        b"{}".to_vec(),
    );
    let p = &publisher;
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(async move {
        p.publish(&event).await
    }))
    .await;
    let err = outcome
        .expect("publishing an event with a long header name panicked")
        .expect_err("an event with a 302-byte header name was published");
    assert!(!err.is_retryable(), "{err}");
    publisher.close().await;
}
