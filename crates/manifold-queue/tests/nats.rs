//! Against the real NATS JetStream on 127.0.0.1:4222, with streams unique to the run.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use manifold_queue::{
    Backend, Backoff, DispatchPolicy, Dispatcher, NatsOptions, NatsQueue, Queue, QueueConfig,
    Selection,
};
use tokio_util::sync::CancellationToken;

use manifold_queue::test_support::DropStreams;

use crate::common::{
    dispatcher_survives_a_broker_outage, survives_a_broker_outage, task, unique, wait_until, Flaky,
    Relay,
};

const URL: &str = "nats://127.0.0.1:4222";

fn options(stream: &str) -> NatsOptions {
    NatsOptions {
        url: URL.into(),
        stream: stream.into(),
        consumer: format!("{stream}_c"),
        max_bytes: 64 << 20,
        max_tasks: 10_000,
        max_task_bytes: 64 * 1024,
        retry_after: Duration::from_secs(1),
        lease_timeout: Duration::from_secs(30),
        status: manifold_queue::StatusLimits::default(),
        max_age: Duration::from_secs(3600),
    }
}

/// Deletes the run's streams (and the dead-letter stream) even if the test panics.
fn cleanup(stream: String) -> DropStreams {
    DropStreams {
        url: URL,
        streams: vec![
            stream.clone(),
            format!("{stream}_dead"),
            format!("KV_{stream}_status"),
        ],
    }
}

#[tokio::test]
async fn nats_enqueue_lease_nack_dead_letter_replay() {
    let stream = unique("nats_basic");
    let _cleanup = cleanup(stream.clone());
    let q = NatsQueue::connect(options(&stream)).await.unwrap();
    let (a, b, c) = (task(1), task(2), task(3));
    for t in [&a, &b, &c] {
        q.enqueue(t.clone()).await.unwrap();
    }
    // Publishing the same task id again is deduplicated by the stream.
    q.enqueue(a.clone()).await.unwrap();
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.depth, stats.in_flight, stats.dead), (3, 0, 0));
    assert!(stats.oldest_age_ms.is_some());

    let mut leases = q.lease(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(leases.len(), 3);
    let ids: HashSet<String> = leases.iter().map(|l| l.task.id.clone()).collect();
    assert_eq!(ids, [&a, &b, &c].iter().map(|t| t.id.clone()).collect());
    assert_eq!(q.stats().await.unwrap().in_flight, 3);

    leases.sort_by(|x, y| x.task.id.cmp(&y.task.id));
    let mut leases = leases.into_iter();
    let (la, lb, lc) = (
        leases.next().unwrap(),
        leases.next().unwrap(),
        leases.next().unwrap(),
    );
    q.ack(la).await.unwrap();
    let nacked_id = lb.task.id.clone();
    q.nack(lb, Duration::from_secs(2)).await.unwrap();
    // Not due yet: an immediate lease finds nothing.
    assert!(q.lease(10, Duration::ZERO).await.unwrap().is_empty());
    let again = q.lease(1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].task.id, nacked_id);
    assert_eq!(
        again[0].task.attempts, 1,
        "attempts follow the delivery count"
    );
    q.ack(again.into_iter().next().unwrap()).await.unwrap();

    let mut dead = lc;
    dead.task.last_error = Some("upstream: status 400".into());
    let dead_id = dead.task.id.clone();
    q.dead_letter(dead).await.unwrap();
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.depth, stats.dead), (0, 1));
    let listed = q.dead_letters(10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].last_error.as_deref(),
        Some("upstream: status 400")
    );
    assert_eq!(
        q.dead_letter_get(&dead_id).await.unwrap().unwrap().id,
        dead_id
    );
    assert!(q.dead_letter_get("nope").await.unwrap().is_none());

    assert_eq!(q.replay(&Selection::Id(dead_id.clone())).await.unwrap(), 1);
    assert_eq!(q.stats().await.unwrap().dead, 0);
    let replayed = q.lease(1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(replayed[0].task.id, dead_id);
    assert_eq!(replayed[0].task.attempts, 0);
    let mut again_dead = replayed.into_iter().next().unwrap();
    again_dead.task.last_error = Some("still broken".into());
    q.dead_letter(again_dead).await.unwrap();
    assert_eq!(q.purge(&Selection::All).await.unwrap(), 1);
    assert_eq!(q.stats().await.unwrap().dead, 0);
    q.destroy().await.unwrap();
}

#[tokio::test]
async fn nats_unacked_lease_is_redelivered_after_a_crash() {
    let stream = unique("nats_crash");
    let _cleanup = cleanup(stream.clone());
    let opts = NatsOptions {
        lease_timeout: Duration::from_secs(1),
        ..options(&stream)
    };
    let t = task(7);
    {
        let q = NatsQueue::connect(opts.clone()).await.unwrap();
        q.enqueue(t.clone()).await.unwrap();
        let leased = q.lease(1, Duration::from_secs(5)).await.unwrap();
        assert_eq!(leased.len(), 1);
        // The replica dies holding the lease: no ack, connection gone.
    }
    let q = NatsQueue::connect(opts).await.unwrap();
    let again = q.lease(1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(again.len(), 1, "the task came back after ack_wait");
    assert_eq!(again[0].task.id, t.id);
    assert_eq!(again[0].task.idempotency_key, t.idempotency_key);
    assert!(again[0].task.attempts >= 1);
    q.ack(again.into_iter().next().unwrap()).await.unwrap();
    assert_eq!(q.stats().await.unwrap().depth, 0);
    q.destroy().await.unwrap();
}

#[tokio::test]
async fn nats_replicas_share_one_stream_and_each_task_goes_to_one() {
    let stream = unique("nats_share");
    let _cleanup = cleanup(stream.clone());
    let r1 = NatsQueue::connect(options(&stream)).await.unwrap();
    let r2 = NatsQueue::connect(options(&stream)).await.unwrap();
    let mut all = HashSet::new();
    for n in 0..40 {
        let t = task(n);
        all.insert(t.id.clone());
        if n % 2 == 0 { &r1 } else { &r2 }.enqueue(t).await.unwrap();
    }
    let (mut got1, mut got2) = (Vec::new(), Vec::new());
    for _ in 0..100 {
        if got1.len() + got2.len() == 40 {
            break;
        }
        for (q, got) in [(&r1, &mut got1), (&r2, &mut got2)] {
            for lease in q.lease(5, Duration::from_millis(500)).await.unwrap() {
                got.push(lease.task.id.clone());
                q.ack(lease).await.unwrap();
            }
        }
    }
    assert!(
        !got1.is_empty() && !got2.is_empty(),
        "both replicas delivered"
    );
    let mut seen = HashSet::new();
    for id in got1.iter().chain(&got2) {
        assert!(seen.insert(id.clone()), "{id} delivered to two replicas");
    }
    assert_eq!(seen, all);
    r1.destroy().await.unwrap();
}

#[tokio::test]
async fn nats_full_stream_refuses_with_queue_full() {
    let stream = unique("nats_full");
    let _cleanup = cleanup(stream.clone());
    let q = NatsQueue::connect(NatsOptions {
        max_tasks: 2,
        ..options(&stream)
    })
    .await
    .unwrap();
    q.enqueue(task(1)).await.unwrap();
    q.enqueue(task(2)).await.unwrap();
    let err = q.enqueue(task(3)).await.unwrap_err();
    assert!(err.is_full(), "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
    q.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_dispatcher_retries_with_a_stable_idempotency_key() {
    let stream = unique("nats_dispatch");
    let _cleanup = cleanup(stream.clone());
    let q = Arc::new(NatsQueue::connect(options(&stream)).await.unwrap());
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
    assert_eq!(q.stats().await.unwrap().depth, 0);
    q.destroy().await.unwrap();
}

#[tokio::test]
async fn nats_backend_opens_from_queue_config() {
    let stream = unique("nats_config");
    let _cleanup = cleanup(stream.clone());
    let cfg: QueueConfig = config_from_json(&format!(
        r#"{{"backend": "nats", "url": "{URL}", "stream": "{stream}", "consumer": "{stream}_c"}}"#
    ));
    let q = manifold_queue::open(&cfg).await.unwrap();
    assert_eq!(q.backend(), Backend::Nats);
    q.enqueue(task(1)).await.unwrap();
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.backend.as_str(), stats.depth), ("nats", 1));
}

fn config_from_json(json: &str) -> QueueConfig {
    serde_json::from_str(json).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_recovers_after_the_server_connection_is_cut() {
    let stream = unique("nats_outage");
    let _cleanup = cleanup(stream.clone());
    let relay = Relay::start("127.0.0.1:4222").await.unwrap();
    let q = NatsQueue::connect(NatsOptions {
        url: format!("nats://{}", relay.addr),
        // A lease whose ack is lost in the outage comes back after this.
        lease_timeout: Duration::from_secs(5),
        ..options(&stream)
    })
    .await
    .unwrap();
    survives_a_broker_outage(&q, &relay, "nats").await;
    let _ = q.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_dispatcher_keeps_delivering_after_the_server_connection_is_cut() {
    let stream = unique("nats_outage_dispatch");
    let _cleanup = cleanup(stream.clone());
    let relay = Relay::start("127.0.0.1:4222").await.unwrap();
    let q = Arc::new(
        NatsQueue::connect(NatsOptions {
            url: format!("nats://{}", relay.addr),
            lease_timeout: Duration::from_secs(5),
            ..options(&stream)
        })
        .await
        .unwrap(),
    );
    dispatcher_survives_a_broker_outage(q.clone(), &relay, "nats").await;
    let _ = q.close().await;
}

/// Statuses live in the `<stream>_status` bucket: a second replica (its own connection, the
/// same stream) answers for a task it neither accepted nor delivered, and its long poll is
/// woken by the other replica's write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_status_is_answered_by_a_replica_that_did_not_deliver() {
    use manifold_queue::{Outcome, State};
    let stream = unique("nats_status");
    let _cleanup = cleanup(stream.clone());
    let a = NatsQueue::connect(options(&stream)).await.unwrap();
    let b = Arc::new(NatsQueue::connect(options(&stream)).await.unwrap());
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
    assert!(!poll.is_finished(), "not done yet");
    lease.outcome = Some(Outcome {
        status: 201,
        body: Some(br#"{"label":"L-7"}"#.to_vec()),
    });
    a.ack(lease).await.unwrap();
    let s = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("woken by the other replica's write, long before 60 s")
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(s.status, State::Done);
    assert_eq!(s.result, Some(serde_json::json!({"label": "L-7"})));
    let s = b.task_status(&id).await.unwrap().unwrap();
    assert_eq!((s.status, s.result_status), (State::Done, Some(201)));
    let steps: Vec<State> = s.history.iter().map(|h| h.status).collect();
    assert_eq!(steps, [State::Queued, State::Delivering, State::Done]);

    // Failing, then dead, seen from the other replica.
    let t = task(2);
    let id = t.id.clone();
    a.enqueue(t).await.unwrap();
    let mut lease = a
        .lease(1, Duration::from_secs(5))
        .await
        .unwrap()
        .pop()
        .unwrap();
    lease.task.attempts = 1;
    lease.task.last_error = Some("upstream: status 503".into());
    a.dead_letter(lease).await.unwrap();
    let s = b.task_status(&id).await.unwrap().unwrap();
    assert_eq!(s.status, State::Dead);
    assert_eq!(s.last_error.as_deref(), Some("upstream: status 503"));
    // Hostile ids are unknown, not errors (they cannot even be keys).
    for id in ["", "a.b", "a*", "../x", "é", &"f".repeat(5000)] {
        assert!(b.task_status(id).await.unwrap().is_none(), "{id:?}");
        assert!(b
            .wait_status(id, Duration::from_millis(10))
            .await
            .unwrap()
            .is_none());
    }
    a.destroy().await.unwrap();
}

/// NATS has no transaction spanning two messages: the `on_dead` hook is stored before the
/// parent is dead-lettered (at least once), under its pre-drawn id, so a second store of the same
/// hook (the parent delivered again after a crash in between) is dropped by the stream.
#[tokio::test]
async fn nats_dead_letter_stores_the_on_dead_hook_first_and_once() {
    use manifold_queue::hooks::{BodyTpl, Hook, Hooks, Piece, Target, TaskRef, TaskVar};
    let stream = unique("nats_hooks");
    let _cleanup = cleanup(stream.clone());
    let q = NatsQueue::connect(options(&stream)).await.unwrap();
    let mut parent = task(1);
    parent.hooks = Some(Box::new(Hooks {
        on_done: None,
        on_dead: Some(Hook {
            id: manifold_queue::hooks::new_id(),
            target: Target::Upstream {
                upstream: "payment".into(),
                method: "POST".into(),
                path: vec![Piece::Lit("/payments/p-9/refund".into())],
            },
            headers: vec![],
            body: Some(BodyTpl::Task(TaskRef {
                var: TaskVar::Error,
                steps: vec![],
            })),
        }),
    }));
    let pid = parent.id.clone();
    q.enqueue(parent).await.unwrap();
    let mut lease = q
        .lease(1, Duration::from_secs(2))
        .await
        .unwrap()
        .pop()
        .unwrap();
    lease.task.last_error = Some("upstream: status 503".into());
    let again =
        manifold_queue::hooks::follow_up(&lease.task, manifold_queue::HookKind::OnDead, None)
            .unwrap();
    q.dead_letter(lease).await.unwrap();
    // The same hook stored a second time: deduplicated by its id.
    q.enqueue(again).await.unwrap();
    assert_eq!(q.stats().await.unwrap().depth, 1);
    let status = q.task_status(&pid).await.unwrap().unwrap();
    let hook_id = status.hooks["on_dead"].clone();
    let hook = q
        .lease(1, Duration::from_secs(2))
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(hook.task.id, hook_id);
    assert_eq!(hook.task.path_and_query, "/payments/p-9/refund");
    assert_eq!(hook.task.body, br#""upstream: status 503""#);
    assert!(hook.task.idempotency_key.ends_with(":on_dead"));
    let hook_status = q.task_status(&hook_id).await.unwrap().unwrap();
    assert_eq!(hook_status.hook_of.as_deref(), Some(pid.as_str()));
    q.ack(hook).await.unwrap();
}
