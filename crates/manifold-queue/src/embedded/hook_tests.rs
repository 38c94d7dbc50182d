//! Completion hooks on the embedded store: the hook task is written in the settling commit.

use std::time::Duration;

use super::*;
use crate::hooks::{BodyTpl, Hook, Hooks, Piece, Target, TaskRef, TaskVar};
use crate::status::{Outcome, State as S};
use crate::testutil::TempDir;

fn hook(id: &str, upstream: &str, var: TaskVar) -> Hook {
    Hook {
        id: id.into(),
        target: Target::Upstream {
            upstream: upstream.into(),
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
        body: Some(BodyTpl::Task(TaskRef { var, steps: vec![] })),
    }
}

fn parent() -> Task {
    let mut t = Task::new(
        "req-1:shipping",
        "shipping",
        "POST",
        "/labels",
        vec![],
        b"{}".to_vec(),
    );
    t.hooks = Some(Box::new(Hooks {
        on_done: Some(hook("donehook", "notify", TaskVar::Result)),
        on_dead: Some(hook("deadhook", "payment", TaskVar::Error)),
    }));
    t
}

async fn lease_one(q: &EmbeddedQueue) -> Lease {
    q.lease(1, Duration::ZERO).await.unwrap().pop().unwrap()
}

#[tokio::test]
async fn ack_writes_the_on_done_hook_with_the_result_in_the_same_commit() {
    let dir = TempDir::new("hook-done");
    let q = EmbeddedQueue::open(EmbeddedOptions::at(dir.path()))
        .await
        .unwrap();
    let p = parent();
    let pid = p.id.clone();
    q.enqueue(p).await.unwrap();
    let mut lease = lease_one(&q).await;
    lease.outcome = Some(Outcome {
        status: 201,
        body: Some(br#"{"label":"L-1"}"#.to_vec()),
    });
    // The lease's `delivering` write is not awaited: let it commit first (bounded polling), so
    // the only commit the ack can cause is its own.
    for _ in 0..500 {
        if status_of(&q, &pid).await == Some(S::Delivering) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(status_of(&q, &pid).await, Some(S::Delivering));
    let commits = q.commits();
    q.ack(lease).await.unwrap();
    assert_eq!(q.commits(), commits + 1, "the hook shares the ack's commit");
    let s = q.task_status(&pid).await.unwrap().unwrap();
    assert_eq!(s.status, S::Done);
    assert_eq!(s.hooks.get("on_done").map(String::as_str), Some("donehook"));
    assert_eq!(s.public()["hooks"]["on_done"], "donehook");
    let h = q.task_status("donehook").await.unwrap().unwrap();
    assert_eq!(h.status, S::Queued);
    assert_eq!(h.hook_of.as_deref(), Some(pid.as_str()));
    let stats = q.stats().await.unwrap();
    assert_eq!(stats.depth, 1);
    let hook = lease_one(&q).await;
    assert_eq!(hook.task.id, "donehook");
    assert_eq!(hook.task.upstream, "notify");
    assert_eq!(hook.task.path_and_query, format!("/hooks/{pid}"));
    assert_eq!(hook.task.idempotency_key, "req-1:shipping:on_done");
    assert_eq!(hook.task.body, br#"{"label":"L-1"}"#);
    // A hook's own settlement enqueues nothing (hooks have no hooks).
    q.ack(hook).await.unwrap();
    assert_eq!(q.stats().await.unwrap().depth, 0);
    assert_eq!(status_of(&q, "donehook").await, Some(S::Done));
}

async fn status_of(q: &EmbeddedQueue, id: &str) -> Option<S> {
    q.task_status(id).await.unwrap().map(|s| s.status)
}

#[tokio::test]
async fn dead_letter_writes_the_on_dead_hook_once_and_survives_a_restart() {
    let dir = TempDir::new("hook-dead");
    let pid = {
        let q = EmbeddedQueue::open(EmbeddedOptions::at(dir.path()))
            .await
            .unwrap();
        let p = parent();
        let pid = p.id.clone();
        q.enqueue(p).await.unwrap();
        let mut lease = lease_one(&q).await;
        lease.task.attempts = 3;
        lease.task.last_error = Some("upstream: status 503".into());
        // The same lease settled twice (an expired lease settled by two consumers): the second
        // finds no row and writes no second hook.
        let token = match lease.token {
            LeaseToken::Embedded { seq, lease_id } => (seq, lease_id),
            #[allow(unreachable_patterns)]
            _ => unreachable!(),
        };
        let twin = Lease {
            task: lease.task.clone(),
            outcome: None,
            token: LeaseToken::Embedded {
                seq: token.0,
                lease_id: token.1,
            },
        };
        q.dead_letter(lease).await.unwrap();
        q.dead_letter(twin).await.unwrap();
        let stats = q.stats().await.unwrap();
        assert_eq!((stats.depth, stats.dead), (1, 1));
        q.close().await.unwrap();
        pid
    };
    let q = EmbeddedQueue::open(EmbeddedOptions::at(dir.path()))
        .await
        .unwrap();
    let s = q.task_status(&pid).await.unwrap().unwrap();
    assert_eq!(s.status, S::Dead);
    assert_eq!(s.hooks.get("on_dead").map(String::as_str), Some("deadhook"));
    let hook = lease_one(&q).await;
    assert_eq!(hook.task.id, "deadhook");
    assert_eq!(hook.task.idempotency_key, "req-1:shipping:on_dead");
    assert_eq!(hook.task.body, br#""upstream: status 503""#);
    assert_eq!(q.stats().await.unwrap().depth, 1);
}
