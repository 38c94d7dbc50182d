//! Against the real RabbitMQ on 127.0.0.1:5672 (guest/guest), with queues unique to the run.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use manifold_queue::{
    Backend, Backoff, DispatchPolicy, Dispatcher, Queue, QueueConfig, RabbitOptions, RabbitQueue,
    Selection,
};
use tokio_util::sync::CancellationToken;

use manifold_queue::test_support::DropRabbit;

use crate::common::{
    dispatcher_survives_a_broker_outage, survives_a_broker_outage, task, unique, wait_until, Flaky,
    Relay,
};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn options(queue: &str) -> RabbitOptions {
    RabbitOptions {
        url: URL.into(),
        queue: queue.into(),
        max_tasks: 10_000,
        max_bytes: 64 << 20,
        max_task_bytes: 64 * 1024,
        retry_after: Duration::from_secs(1),
    }
}

/// Deletes the run's queue (and its dead-letter queue) even if the test panics.
fn cleanup(queue: String) -> DropRabbit {
    DropRabbit {
        url: URL,
        queues: vec![queue.clone(), format!("{queue}.dead")],
        exchanges: Vec::new(),
    }
}

#[tokio::test]
async fn rabbitmq_enqueue_lease_nack_dead_letter_replay() {
    let name = unique("rmq_basic");
    let _cleanup = cleanup(name.clone());
    let q = RabbitQueue::connect(options(&name)).await.unwrap();
    let (a, b, c) = (task(1), task(2), task(3));
    for t in [&a, &b, &c] {
        q.enqueue(t.clone()).await.unwrap();
    }
    let leases = q.lease(10, Duration::from_secs(5)).await.unwrap();
    let mut leases = {
        let mut all = leases;
        while all.len() < 3 {
            let more = q.lease(10, Duration::from_secs(5)).await.unwrap();
            assert!(!more.is_empty(), "tasks missing");
            all.extend(more);
        }
        all
    };
    assert_eq!(leases.len(), 3);
    assert_eq!(q.stats().await.unwrap().in_flight, 3);
    leases.sort_by(|x, y| {
        x.task
            .enqueued_at
            .cmp(&y.task.enqueued_at)
            .then(x.task.id.cmp(&y.task.id))
    });
    let ids: HashSet<String> = leases.iter().map(|l| l.task.id.clone()).collect();
    assert_eq!(ids, [&a, &b, &c].iter().map(|t| t.id.clone()).collect());
    let mut it = leases.into_iter();
    let (la, mut lb, mut lc) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());

    q.ack(la).await.unwrap();
    lb.task.attempts += 1;
    lb.task.last_error = Some("upstream: status 503".into());
    let nacked = lb.task.id.clone();
    q.nack(lb, Duration::from_secs(2)).await.unwrap();
    // Held until due: not leasable right now.
    assert!(q.lease(10, Duration::ZERO).await.unwrap().is_empty());
    let again = q.lease(1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].task.id, nacked);
    assert_eq!(again[0].task.attempts, 1);
    assert_eq!(
        again[0].task.last_error.as_deref(),
        Some("upstream: status 503")
    );
    q.ack(again.into_iter().next().unwrap()).await.unwrap();

    lc.task.last_error = Some("upstream: status 400".into());
    let dead_id = lc.task.id.clone();
    q.dead_letter(lc).await.unwrap();
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.depth, stats.in_flight, stats.dead), (0, 0, 1));
    let listed = q.dead_letters(10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].last_error.as_deref(),
        Some("upstream: status 400")
    );
    // Listing does not consume.
    assert_eq!(q.stats().await.unwrap().dead, 1);
    assert_eq!(
        q.dead_letter_get(&dead_id).await.unwrap().unwrap().id,
        dead_id
    );
    assert!(q.dead_letter_get("nope").await.unwrap().is_none());

    assert_eq!(q.replay(&Selection::Id(dead_id.clone())).await.unwrap(), 1);
    let replayed = q.lease(1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(replayed[0].task.id, dead_id);
    assert_eq!(replayed[0].task.attempts, 0);
    q.dead_letter(replayed.into_iter().next().unwrap())
        .await
        .unwrap();
    assert_eq!(q.purge(&Selection::Id(dead_id)).await.unwrap(), 1);
    assert_eq!(q.stats().await.unwrap().dead, 0);
    q.destroy().await.unwrap();
}

#[tokio::test]
async fn rabbitmq_unacked_lease_returns_when_the_holder_dies() {
    let name = unique("rmq_crash");
    let _cleanup = cleanup(name.clone());
    let t = task(9);
    {
        let q = RabbitQueue::connect(options(&name)).await.unwrap();
        q.enqueue(t.clone()).await.unwrap();
        assert_eq!(q.lease(1, Duration::from_secs(5)).await.unwrap().len(), 1);
        // Dropped holding the lease: the connection closes and the broker requeues it.
    }
    let q = RabbitQueue::connect(options(&name)).await.unwrap();
    let again = q.lease(1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].task.id, t.id);
    assert_eq!(again[0].task.idempotency_key, t.idempotency_key);
    q.ack(again.into_iter().next().unwrap()).await.unwrap();
    q.destroy().await.unwrap();
}

#[tokio::test]
async fn rabbitmq_full_queue_refuses_with_queue_full() {
    let name = unique("rmq_full");
    let _cleanup = cleanup(name.clone());
    // A producer never starts a consumer, so the tasks stay ready in the broker.
    let q = RabbitQueue::connect(RabbitOptions {
        max_tasks: 3,
        ..options(&name)
    })
    .await
    .unwrap();
    for n in 1..=3 {
        q.enqueue(task(n)).await.unwrap();
    }
    // The broker's x-max-length refuses the 4th, exactly, with no caching involved.
    let err = q.enqueue(task(4)).await.unwrap_err();
    assert!(err.is_full(), "{err}");
    assert!(err.to_string().contains("x-max-length = 3"), "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
    assert_eq!(q.stats().await.unwrap().depth, 3);
    q.destroy().await.unwrap();
}

#[tokio::test]
async fn rabbitmq_max_bytes_refuses_with_queue_full() {
    let name = unique("rmq_bytes");
    let _cleanup = cleanup(name.clone());
    // The bound is exactly the bodies of the first two tasks.
    let (a, b, c) = (task(1), task(2), task(3));
    let size = |t: &manifold_queue::Task| t.encode().unwrap().len() as u64;
    let q = RabbitQueue::connect(RabbitOptions {
        max_bytes: size(&a) + size(&b),
        ..options(&name)
    })
    .await
    .unwrap();
    q.enqueue(a).await.unwrap();
    q.enqueue(b).await.unwrap();
    let err = q.enqueue(c).await.unwrap_err();
    assert!(err.is_full(), "{err}");
    assert!(err.to_string().contains("x-max-length-bytes"), "{err}");
    assert_eq!(q.stats().await.unwrap().depth, 2);
    q.destroy().await.unwrap();
}

#[tokio::test]
async fn rabbitmq_existing_queue_with_other_bounds_is_a_clear_config_error() {
    let name = unique("rmq_args");
    let _cleanup = cleanup(name.clone());
    // Declared by an older version, without arguments.
    let conn = lapin::Connection::connect(URL, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        name.as_str().into(),
        lapin::options::QueueDeclareOptions::durable(),
        lapin::types::FieldTable::default(),
    )
    .await
    .unwrap();
    let _ = conn.close(200, "declared".into()).await;
    let err = RabbitQueue::connect(options(&name)).await.err().unwrap();
    let text = err.to_string();
    eprintln!("{text}");
    assert_eq!(err.kind(), manifold_queue::ErrorKind::Config, "{text}");
    assert!(text.contains("x-max-length"), "{text}");
    assert!(text.contains("delete_queue"), "{text}");

    // Declared by us with other bounds.
    let other = unique("rmq_args2");
    let _cleanup2 = cleanup(other.clone());
    RabbitQueue::connect(options(&other)).await.unwrap();
    let err = RabbitQueue::connect(RabbitOptions {
        max_tasks: 5,
        ..options(&other)
    })
    .await
    .err()
    .unwrap();
    let text = err.to_string();
    eprintln!("{text}");
    assert_eq!(err.kind(), manifold_queue::ErrorKind::Config, "{text}");
    assert!(text.contains("x-max-length"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_dispatcher_retries_with_a_stable_idempotency_key() {
    let name = unique("rmq_dispatch");
    let _cleanup = cleanup(name.clone());
    let q = Arc::new(RabbitQueue::connect(options(&name)).await.unwrap());
    let mut keys = std::collections::HashMap::new();
    for n in 0..6 {
        let t = task(n);
        keys.insert(t.id.clone(), t.idempotency_key.clone());
        q.enqueue(t).await.unwrap();
    }
    let upstream = Arc::new(Flaky::new(2));
    let policy = DispatchPolicy {
        backoff: Backoff {
            base: Duration::from_millis(20),
            max: Duration::from_millis(100),
        },
        lease_wait: Duration::from_millis(200),
        ..DispatchPolicy::default()
    };
    let dispatcher = Dispatcher::new(q.clone(), Arc::clone(&upstream), policy);
    let metrics = dispatcher.metrics();
    let stop = CancellationToken::new();
    let run = tokio::spawn(dispatcher.run(stop.clone()));
    wait_until(|| metrics.snapshot().delivered == 6).await;
    stop.cancel();
    assert!(run.await.unwrap().drained);
    for (id, seen) in upstream.seen() {
        assert_eq!(seen.len(), 3, "two 503s then success for {id}");
        assert!(seen.iter().all(|k| *k == keys[&id]));
    }
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.depth, stats.dead), (0, 0));
    q.destroy().await.unwrap();
}

#[tokio::test]
async fn rabbitmq_backend_opens_from_queue_config() {
    let name = unique("rmq_config");
    let _cleanup = cleanup(name.clone());
    let dir = crate::common::TempDir::new("rmq_config");
    let cfg: QueueConfig = serde_json::from_value(serde_json::json!({
        "backend": "rabbitmq", "url": URL, "queue": name, "path": dir.path()
    }))
    .unwrap();
    let q = manifold_queue::open(&cfg).await.unwrap();
    assert_eq!(q.backend(), Backend::Rabbitmq);
    q.enqueue(task(1)).await.unwrap();
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.backend.as_str(), stats.depth), ("rabbitmq", 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_recovers_after_the_broker_connection_is_cut() {
    let name = unique("rmq_outage");
    let _cleanup = cleanup(name.clone());
    let relay = Relay::start("127.0.0.1:5672").await.unwrap();
    let q = RabbitQueue::connect(RabbitOptions {
        url: format!("amqp://guest:guest@{}/%2f", relay.addr),
        ..options(&name)
    })
    .await
    .unwrap();
    survives_a_broker_outage(&q, &relay, "rabbitmq").await;
    let _ = q.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_dispatcher_keeps_delivering_after_the_broker_connection_is_cut() {
    let name = unique("rmq_outage_dispatch");
    let _cleanup = cleanup(name.clone());
    let relay = Relay::start("127.0.0.1:5672").await.unwrap();
    let q = Arc::new(
        RabbitQueue::connect(RabbitOptions {
            url: format!("amqp://guest:guest@{}/%2f", relay.addr),
            ..options(&name)
        })
        .await
        .unwrap(),
    );
    dispatcher_survives_a_broker_outage(q.clone(), &relay, "rabbitmq").await;
    let _ = q.close().await;
}

/// RabbitMQ with `[cache] redis`: statuses live in Redis, so a second replica answers for a
/// task the first accepted and delivered, and its long poll is woken by the first one's write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_statuses_in_redis_are_shared_by_replicas() {
    use manifold_queue::{Outcome, State};
    let name = unique("rmq_status");
    let _cleanup = cleanup(name.clone());
    let cfg: QueueConfig = serde_json::from_value(serde_json::json!({
        "backend": "rabbitmq", "url": URL, "queue": name
    }))
    .unwrap();
    let prefix = format!("{name}:");
    let redis = Some(("redis://127.0.0.1:6379", prefix.as_str()));
    let a = manifold_queue::open_with_redis(&cfg, redis).await.unwrap();
    let b = manifold_queue::open_with_redis(&cfg, redis).await.unwrap();
    let t = task(1);
    let id = t.id.clone();
    assert!(b.task_status(&id).await.unwrap().is_none());
    a.enqueue(t).await.unwrap();
    assert_eq!(
        b.task_status(&id).await.unwrap().unwrap().status,
        State::Queued
    );
    let mut lease = a
        .lease(1, Duration::from_secs(5))
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        b.task_status(&id).await.unwrap().unwrap().status,
        State::Delivering
    );
    let poll = {
        let (b, id) = (Arc::clone(&b), id.clone());
        tokio::spawn(async move { b.wait_status(&id, Duration::from_secs(60)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!poll.is_finished());
    lease.outcome = Some(Outcome {
        status: 200,
        body: Some(br#"{"label":"R-1"}"#.to_vec()),
    });
    a.ack(lease).await.unwrap();
    let s = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("woken by the other replica's write")
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(s.status, State::Done);
    assert_eq!(s.result, Some(serde_json::json!({"label": "R-1"})));
    for bad in ["", "../x", "é", &"f".repeat(5000)] {
        assert!(b.task_status(bad).await.unwrap().is_none());
    }
}

/// RabbitMQ without Redis: statuses in a local file, kept across a restart.
#[tokio::test]
async fn rabbitmq_statuses_without_redis_are_local_and_durable() {
    use manifold_queue::State;
    let name = unique("rmq_status_local");
    let _cleanup = cleanup(name.clone());
    let dir = crate::common::TempDir::new("rmq_status_local");
    let cfg: QueueConfig = serde_json::from_value(serde_json::json!({
        "backend": "rabbitmq", "url": URL, "queue": name, "path": dir.path()
    }))
    .unwrap();
    let t = task(1);
    let id = t.id.clone();
    {
        let q = manifold_queue::open_with_redis(&cfg, None).await.unwrap();
        q.enqueue(t).await.unwrap();
        let mut lease = q
            .lease(1, Duration::from_secs(5))
            .await
            .unwrap()
            .pop()
            .unwrap();
        lease.task.attempts = 1;
        lease.task.last_error = Some("upstream: status 500".into());
        q.dead_letter(lease).await.unwrap();
        assert_eq!(
            q.task_status(&id).await.unwrap().unwrap().status,
            State::Dead
        );
        q.close().await.unwrap();
    }
    let q = manifold_queue::open_with_redis(&cfg, None).await.unwrap();
    let s = q.task_status(&id).await.unwrap().unwrap();
    assert_eq!((s.status, s.attempts), (State::Dead, 1));
    q.replay(&Selection::Id(id.clone())).await.unwrap();
    assert_eq!(
        q.task_status(&id).await.unwrap().unwrap().status,
        State::Queued
    );
}

/// RabbitMQ (statuses in Redis): the `on_done` hook is stored before the parent's ack, with the
/// parent's answer in its body; another replica sees the parent name it and the hook's own
/// status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_ack_stores_the_on_done_hook_with_the_result() {
    use manifold_queue::hooks::{BodyTpl, Hook, Hooks, Piece, Target, TaskRef, TaskVar};
    use manifold_queue::{Outcome, State};
    let name = unique("rmq_hooks");
    let _cleanup = cleanup(name.clone());
    let cfg: QueueConfig = serde_json::from_value(serde_json::json!({
        "backend": "rabbitmq", "url": URL, "queue": name
    }))
    .unwrap();
    let prefix = format!("{name}:");
    let redis = Some(("redis://127.0.0.1:6379", prefix.as_str()));
    let a = manifold_queue::open_with_redis(&cfg, redis).await.unwrap();
    let b = manifold_queue::open_with_redis(&cfg, redis).await.unwrap();
    let mut parent = task(1);
    parent.hooks = Some(Box::new(Hooks {
        on_done: Some(Hook {
            id: manifold_queue::hooks::new_id(),
            target: Target::Upstream {
                upstream: "notify".into(),
                method: "POST".into(),
                path: vec![
                    Piece::Lit("/hooks/".into()),
                    Piece::Task(TaskRef {
                        var: TaskVar::Id,
                        steps: vec![],
                    }),
                ],
            },
            headers: vec![],
            body: Some(BodyTpl::Task(TaskRef {
                var: TaskVar::Result,
                steps: vec![],
            })),
        }),
        on_dead: None,
    }));
    let pid = parent.id.clone();
    a.enqueue(parent).await.unwrap();
    let mut lease = a
        .lease(1, Duration::from_secs(5))
        .await
        .unwrap()
        .pop()
        .unwrap();
    lease.outcome = Some(Outcome {
        status: 201,
        body: Some(br#"{"label":"R-2"}"#.to_vec()),
    });
    a.ack(lease).await.unwrap();
    let s = b.task_status(&pid).await.unwrap().unwrap();
    assert_eq!(s.status, State::Done);
    let hook_id = s.hooks["on_done"].clone();
    // `a`'s consumer may already hold the hook (RabbitMQ pushes up to the prefetch).
    let hook = a
        .lease(1, Duration::from_secs(5))
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(hook.task.id, hook_id);
    assert_eq!(hook.task.path_and_query, format!("/hooks/{pid}"));
    assert_eq!(hook.task.body, br#"{"label":"R-2"}"#);
    let hs = a.task_status(&hook_id).await.unwrap().unwrap();
    assert_eq!(hs.hook_of.as_deref(), Some(pid.as_str()));
    a.ack(hook).await.unwrap();
}

/// lapin is built without a TLS backend, and then opens an `amqps://` URL as plain TCP: the
/// broker on :5672 speaks plain AMQP, and such a URL reached it (credentials and tasks in the
/// clear while the URL says TLS). It must be refused before anything is sent.
#[tokio::test]
async fn an_amqps_url_is_refused_not_opened_in_plaintext() {
    let name = unique("rmq_amqps");
    let _cleanup = cleanup(name.clone());
    for url in [
        "amqps://guest:guest@127.0.0.1:5672/%2f",
        "AMQPS://guest:guest@127.0.0.1:5672/%2f",
    ] {
        let opts = RabbitOptions {
            url: url.into(),
            ..options(&name)
        };
        match RabbitQueue::connect(opts).await {
            Ok(_) => panic!("{url}: connected in plaintext"),
            Err(e) => {
                let text = e.to_string();
                assert!(
                    matches!(e, manifold_queue::QueueError::Config(_)),
                    "{url}: {text}"
                );
                assert!(text.contains("amqps://"), "{text}");
                assert!(!text.contains("guest:guest"), "the password leaks: {text}");
            }
        }
    }
}
