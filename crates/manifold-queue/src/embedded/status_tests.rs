//! Task statuses in the embedded store: written with the task's own transitions.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::status::{Outcome, State as S};
use crate::testutil::TempDir;

fn task(n: usize) -> Task {
    Task::new(
        format!("key-{n}"),
        "shipping",
        "POST",
        "/labels",
        vec![],
        format!("{{\"n\":{n}}}").into_bytes(),
    )
}

async fn status(q: &EmbeddedQueue, id: &str) -> Option<S> {
    q.task_status(id).await.unwrap().map(|s| s.status)
}

/// The `delivering` write is not awaited by `lease`: wait until it is visible.
async fn eventually(q: &EmbeddedQueue, id: &str, want: S) {
    for _ in 0..500 {
        if status(q, id).await == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("{id} never became {want:?}: {:?}", status(q, id).await);
}

#[tokio::test]
async fn queued_delivering_retrying_done_with_the_result() {
    let dir = TempDir::new("st-flow");
    let q = EmbeddedQueue::open(EmbeddedOptions::at(dir.path()))
        .await
        .unwrap();
    let t = task(1);
    let id = t.id.clone();
    assert_eq!(status(&q, &id).await, None);
    q.enqueue(t).await.unwrap();
    assert_eq!(status(&q, &id).await, Some(S::Queued));
    let mut lease = q.lease(1, Duration::ZERO).await.unwrap().pop().unwrap();
    eventually(&q, &id, S::Delivering).await;
    lease.task.attempts = 1;
    lease.task.last_error = Some("upstream: status 503".into());
    q.nack(lease, Duration::ZERO).await.unwrap();
    let s = q.task_status(&id).await.unwrap().unwrap();
    assert_eq!((s.status, s.attempts), (S::Retrying, 1));
    assert_eq!(s.last_error.as_deref(), Some("upstream: status 503"));
    let mut lease = q.lease(1, Duration::ZERO).await.unwrap().pop().unwrap();
    lease.outcome = Some(Outcome {
        status: 201,
        body: Some(br#"{"tracking":"T-9"}"#.to_vec()),
    });
    q.ack(lease).await.unwrap();
    let s = q.task_status(&id).await.unwrap().unwrap();
    assert_eq!(s.status, S::Done);
    assert_eq!(s.result_status, Some(201));
    assert_eq!(s.result, Some(serde_json::json!({"tracking": "T-9"})));
    assert!(s.expires_at.is_some());
}

#[tokio::test]
async fn dead_then_replayed() {
    let dir = TempDir::new("st-dead");
    let q = EmbeddedQueue::open(EmbeddedOptions::at(dir.path()))
        .await
        .unwrap();
    let t = task(2);
    let id = t.id.clone();
    q.enqueue(t).await.unwrap();
    let mut lease = q.lease(1, Duration::ZERO).await.unwrap().pop().unwrap();
    lease.task.attempts = 3;
    lease.task.last_error = Some("upstream: status 500".into());
    q.dead_letter(lease).await.unwrap();
    let s = q.task_status(&id).await.unwrap().unwrap();
    assert_eq!((s.status, s.attempts), (S::Dead, 3));
    q.replay(&Selection::Id(id.clone())).await.unwrap();
    let s = q.task_status(&id).await.unwrap().unwrap();
    assert_eq!((s.status, s.attempts), (S::Queued, 0));
    let steps: Vec<S> = s.history.iter().map(|h| h.status).collect();
    assert_eq!(steps, [S::Queued, S::Delivering, S::Dead, S::Queued]);
}

#[tokio::test]
async fn long_poll_wakes_on_done_and_not_before() {
    let dir = TempDir::new("st-poll");
    let q = Arc::new(
        EmbeddedQueue::open(EmbeddedOptions::at(dir.path()))
            .await
            .unwrap(),
    );
    let t = task(3);
    let id = t.id.clone();
    q.enqueue(t).await.unwrap();
    let poll = {
        let (q, id) = (Arc::clone(&q), id.clone());
        tokio::spawn(async move { q.wait_status(&id, Duration::from_secs(60)).await })
    };
    let lease = q.lease(1, Duration::ZERO).await.unwrap().pop().unwrap();
    eventually(&q, &id, S::Delivering).await;
    assert!(
        !poll.is_finished(),
        "a delivering task does not end the poll"
    );
    q.ack(lease).await.unwrap();
    // Returns well before its 60 s wait: woken by the commit, not by a timer.
    let s = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("the poll ends when the task is done")
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(s.status, S::Done);
    assert!(q.shared.watchers.is_empty());
}

#[tokio::test]
async fn hostile_ids_are_unknown_not_errors() {
    let dir = TempDir::new("st-hostile");
    let q = EmbeddedQueue::open(EmbeddedOptions::at(dir.path()))
        .await
        .unwrap();
    for id in [
        "",
        "../../etc/passwd",
        "é",
        "a\0b",
        &"f".repeat(100_000),
        "00000000000000000000000000000000",
    ] {
        assert!(q.task_status(id).await.unwrap().is_none(), "{id:?}");
        assert!(q
            .wait_status(id, Duration::from_millis(1))
            .await
            .unwrap()
            .is_none());
    }
}

#[tokio::test]
async fn finished_statuses_expire_and_are_bounded_in_number() {
    let dir = TempDir::new("st-bounds");
    let mut opts = EmbeddedOptions::at(dir.path());
    opts.status.max_statuses = 3;
    let q = EmbeddedQueue::open(opts).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..6 {
        let t = task(n);
        ids.push(t.id.clone());
        q.enqueue(t).await.unwrap();
        let lease = q.lease(1, Duration::ZERO).await.unwrap().pop().unwrap();
        q.ack(lease).await.unwrap();
    }
    // One more commit runs the eviction for the last ack too.
    q.enqueue(task(99)).await.unwrap();
    let mut kept = Vec::new();
    for id in &ids {
        kept.push(q.task_status(id).await.unwrap().is_some());
    }
    assert_eq!(kept, [false, false, false, true, true, true]);

    let dir = TempDir::new("st-ttl");
    let mut opts = EmbeddedOptions::at(dir.path());
    opts.status.result_ttl = Duration::from_millis(1);
    let q = EmbeddedQueue::open(opts).await.unwrap();
    let t = task(7);
    let id = t.id.clone();
    q.enqueue(t).await.unwrap();
    let lease = q.lease(1, Duration::ZERO).await.unwrap().pop().unwrap();
    q.ack(lease).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(
        q.task_status(&id).await.unwrap().is_none(),
        "expired is 404"
    );
}

#[tokio::test]
async fn done_survives_a_reopen_and_delivering_becomes_retrying() {
    let dir = TempDir::new("st-reopen");
    let (done_id, busy_id) = {
        let q = EmbeddedQueue::open(EmbeddedOptions::at(dir.path()))
            .await
            .unwrap();
        let (a, b) = (task(1), task(2));
        let ids = (a.id.clone(), b.id.clone());
        q.enqueue(a).await.unwrap();
        let mut lease = q.lease(1, Duration::ZERO).await.unwrap().pop().unwrap();
        lease.outcome = Some(Outcome {
            status: 200,
            body: Some(b"{\"ok\":true}".to_vec()),
        });
        q.ack(lease).await.unwrap();
        q.enqueue(b).await.unwrap();
        let lease = q.lease(1, Duration::ZERO).await.unwrap().pop().unwrap();
        eventually(&q, &ids.1, S::Delivering).await;
        // The process "dies" holding the lease.
        std::mem::forget(lease);
        ids
    };
    let q = EmbeddedQueue::open(EmbeddedOptions::at(dir.path()))
        .await
        .unwrap();
    let done = q.task_status(&done_id).await.unwrap().unwrap();
    assert_eq!(done.status, S::Done);
    assert_eq!(done.result, Some(serde_json::json!({"ok": true})));
    assert_eq!(status(&q, &busy_id).await, Some(S::Retrying));
    let lease = q.lease(1, Duration::ZERO).await.unwrap().pop().unwrap();
    assert_eq!(lease.task.id, busy_id);
    q.ack(lease).await.unwrap();
    assert_eq!(status(&q, &busy_id).await, Some(S::Done));
}
