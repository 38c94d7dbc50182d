//! The events publisher against the real brokers: NATS core (a subscriber on the subject),
//! NATS JetStream (a stream capturing the subject acks and de-duplicates) and RabbitMQ (a queue
//! bound to the topic exchange). Subjects, streams, exchanges and queues are unique per run and
//! deleted afterwards.

use std::time::Duration;

use manifold_queue::test_support::{DropRabbit, DropStreams};
use manifold_queue::{EventsBackend, EventsConfig, Publisher, Task};

use crate::common::unique;

const NATS: &str = "nats://127.0.0.1:4222";
const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn event(subject: &str) -> Task {
    Task::event(
        "client-key-1:shipping",
        subject,
        vec![("x-tenant".into(), "acme".into())],
        br#"{"order_id":7}"#.to_vec(),
    )
}

#[cfg(feature = "nats")]
#[tokio::test]
async fn nats_core_subscribers_receive_the_event_with_its_key() {
    use futures::StreamExt;
    let subject = format!("{}.created", unique("events"));
    let client = async_nats::connect(NATS).await.unwrap();
    let mut sub = client.subscribe(subject.clone()).await.unwrap();
    client.flush().await.unwrap();

    let cfg = EventsConfig {
        url: Some(NATS.into()),
        ..EventsConfig::new(EventsBackend::Nats)
    };
    let publisher = Publisher::connect(&cfg).await.unwrap();
    publisher.publish(&event(&subject)).await.unwrap();

    let msg = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("no event within 10 s")
        .unwrap();
    assert_eq!(&msg.payload[..], br#"{"order_id":7}"#);
    let headers = msg.headers.expect("headers");
    let get = |n: &str| headers.get(n).map(|v| v.as_str().to_owned());
    assert_eq!(
        get("Idempotency-Key").as_deref(),
        Some("client-key-1:shipping")
    );
    assert_eq!(get("Nats-Msg-Id").as_deref(), Some("client-key-1:shipping"));
    assert_eq!(get("Content-Type").as_deref(), Some("application/json"));
    assert_eq!(get("x-tenant").as_deref(), Some("acme"));
    publisher.close().await;
}

#[cfg(feature = "nats")]
#[tokio::test]
async fn nats_streams_capturing_the_subject_ack_and_deduplicate() {
    let name = unique("events_stream");
    let _cleanup = DropStreams {
        url: NATS,
        streams: vec![name.clone()],
    };
    let subject = format!("{name}.orders.created");
    let client = async_nats::connect(NATS).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("{name}.orders.>")],
        ..Default::default()
    })
    .await
    .unwrap();

    let publisher = Publisher::connect(&EventsConfig::new(EventsBackend::Nats))
        .await
        .unwrap();
    let e = event(&subject);
    publisher.publish(&e).await.unwrap();
    // A retry of the same event (same idempotency key) is stored once.
    publisher.publish(&e).await.unwrap();

    let mut stream = js.get_stream(&name).await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    assert_eq!(state.messages, 1);
    let stored = stream.get_raw_message(state.first_sequence).await.unwrap();
    assert_eq!(&stored.payload[..], br#"{"order_id":7}"#);
    assert_eq!(stored.subject.as_str(), subject);
}

#[cfg(feature = "rabbitmq")]
#[tokio::test]
async fn rabbitmq_queues_bound_to_the_exchange_receive_the_event() {
    use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::{AMQPValue, FieldTable};

    let exchange = unique("events_x");
    let queue = unique("events_q");
    let _cleanup = DropRabbit {
        url: AMQP,
        queues: vec![queue.clone()],
        exchanges: vec![exchange.clone()],
    };
    let cfg = EventsConfig {
        url: Some(AMQP.into()),
        exchange: Some(exchange.clone()),
        ..EventsConfig::new(EventsBackend::Rabbitmq)
    };
    // The publisher declares the exchange; a subscriber binds its queue with a pattern.
    let publisher = Publisher::connect(&cfg).await.unwrap();
    let conn = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        queue.as_str().into(),
        exchange.as_str().into(),
        "orders.*".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();

    publisher.publish(&event("orders.created")).await.unwrap();
    // Routed to nobody: confirmed and dropped by the broker, as topic exchanges do.
    publisher.publish(&event("invoices.created")).await.unwrap();

    let got = ch
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the event is in the bound queue (confirmed before publish returned)");
    let delivery = got.delivery;
    assert_eq!(delivery.data, br#"{"order_id":7}"#);
    assert_eq!(delivery.routing_key.as_str(), "orders.created");
    let props = &delivery.properties;
    assert_eq!(
        props.message_id().as_ref().map(|s| s.as_str()),
        Some("client-key-1:shipping")
    );
    assert_eq!(
        props.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    assert_eq!(*props.delivery_mode(), Some(2));
    let headers = props.headers().as_ref().expect("headers").inner();
    let text = |n: &str| match headers.get(n) {
        Some(AMQPValue::LongString(s)) => Some(s.to_string()),
        _ => None,
    };
    assert_eq!(
        text("Idempotency-Key").as_deref(),
        Some("client-key-1:shipping")
    );
    assert_eq!(text("x-tenant").as_deref(), Some("acme"));
    let more = ch
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    assert!(more.is_none(), "only orders.* is bound");

    publisher.close().await;
}

#[cfg(any(feature = "nats", feature = "rabbitmq"))]
#[tokio::test]
async fn a_bad_url_fails_at_connect_and_non_events_are_refused() {
    // A closed local port: connecting fails loudly instead of at the first publish.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = EventsConfig {
        url: Some(format!("nats://127.0.0.1:{port}")),
        timeout: Duration::from_secs(2),
        ..EventsConfig::new(EventsBackend::Nats)
    };
    assert!(Publisher::connect(&cfg).await.is_err());
    let publisher = Publisher::connect(&EventsConfig::new(EventsBackend::Nats))
        .await
        .unwrap();
    let plain = Task::new("k", "shipping", "POST", "/x", vec![], b"{}".to_vec());
    let e = publisher.publish(&plain).await.unwrap_err();
    assert!(!e.is_retryable(), "{e}");
}

/// As for the queue: an `amqps://` URL would be opened as plain TCP by this build's lapin, so
/// the publisher refuses it instead of publishing in the clear.
#[tokio::test]
async fn an_amqps_events_url_is_refused_not_opened_in_plaintext() {
    let exchange = unique("events_amqps");
    let _cleanup = DropRabbit {
        url: AMQP,
        queues: Vec::new(),
        exchanges: vec![exchange.clone()],
    };
    let cfg = EventsConfig {
        url: Some("amqps://guest:guest@127.0.0.1:5672/%2f".into()),
        exchange: Some(exchange),
        ..EventsConfig::new(EventsBackend::Rabbitmq)
    };
    match Publisher::connect(&cfg).await {
        Ok(_) => panic!("connected in plaintext"),
        Err(e) => assert!(e.to_string().contains("amqps://"), "{e}"),
    }
}
