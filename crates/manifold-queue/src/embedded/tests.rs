use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::testutil::TempDir;

fn task(n: usize) -> Task {
    Task::new(
        format!("key-{n}"),
        "shipping",
        "POST",
        "/labels",
        vec![("content-type".into(), "application/json".into())],
        format!("{{\"n\":{n}}}").into_bytes(),
    )
}

fn opts(dir: &TempDir) -> EmbeddedOptions {
    EmbeddedOptions::at(dir.path())
}

#[tokio::test]
async fn enqueue_lease_ack_round_trip() {
    let dir = TempDir::new("emb-roundtrip");
    let q = EmbeddedQueue::open(opts(&dir)).await.unwrap();
    let t = task(1);
    q.enqueue(t.clone()).await.unwrap();
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.depth, stats.in_flight, stats.dead), (1, 0, 0));
    let leases = q.lease(10, Duration::ZERO).await.unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].task, t);
    assert_eq!(q.stats().await.unwrap().in_flight, 1);
    // Leased tasks are invisible to other consumers.
    assert!(q.lease(10, Duration::ZERO).await.unwrap().is_empty());
    let lease = leases.into_iter().next().unwrap();
    q.ack(lease).await.unwrap();
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.depth, stats.in_flight), (0, 0));
    assert_eq!(stats.oldest_age_ms, None);
}

#[tokio::test]
async fn lease_waits_for_an_enqueue() {
    let dir = TempDir::new("emb-wait");
    let q = Arc::new(EmbeddedQueue::open(opts(&dir)).await.unwrap());
    let waiter = {
        let q = Arc::clone(&q);
        tokio::spawn(async move { q.lease(1, Duration::from_secs(30)).await })
    };
    tokio::task::yield_now().await;
    q.enqueue(task(1)).await.unwrap();
    let leases = waiter.await.unwrap().unwrap();
    assert_eq!(leases.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn nack_delays_and_keeps_attempts() {
    let dir = TempDir::new("emb-nack");
    let q = EmbeddedQueue::open(opts(&dir)).await.unwrap();
    q.enqueue(task(1)).await.unwrap();
    let mut lease = q.lease(1, Duration::ZERO).await.unwrap().pop().unwrap();
    lease.task.attempts += 1;
    lease.task.last_error = Some("upstream: 503".into());
    q.nack(lease, Duration::from_secs(30)).await.unwrap();
    assert!(q.lease(1, Duration::ZERO).await.unwrap().is_empty());
    assert_eq!(q.stats().await.unwrap().depth, 1);
    tokio::time::advance(Duration::from_secs(31)).await;
    let lease = q.lease(1, Duration::ZERO).await.unwrap().pop().unwrap();
    assert_eq!(lease.task.attempts, 1);
    assert_eq!(lease.task.last_error.as_deref(), Some("upstream: 503"));
}

#[tokio::test(start_paused = true)]
async fn expired_lease_is_delivered_again_and_its_nack_ignored() {
    let dir = TempDir::new("emb-expire");
    let q = EmbeddedQueue::open(EmbeddedOptions {
        lease_timeout: Duration::from_secs(5),
        ..opts(&dir)
    })
    .await
    .unwrap();
    q.enqueue(task(1)).await.unwrap();
    let stale = q.lease(1, Duration::ZERO).await.unwrap().pop().unwrap();
    tokio::time::advance(Duration::from_secs(6)).await;
    let fresh = q.lease(1, Duration::ZERO).await.unwrap().pop().unwrap();
    assert_eq!(stale.task.id, fresh.task.id);
    // The stale holder's nack must not disturb the new lease.
    q.nack(stale, Duration::ZERO).await.unwrap();
    assert!(q.lease(1, Duration::ZERO).await.unwrap().is_empty());
    q.ack(fresh).await.unwrap();
    assert_eq!(q.stats().await.unwrap().depth, 0);
}

#[tokio::test]
async fn full_queue_refuses_with_retry_after_and_frees_on_ack() {
    let dir = TempDir::new("emb-full");
    let q = EmbeddedQueue::open(EmbeddedOptions {
        max_tasks: 2,
        retry_after: Duration::from_secs(3),
        ..opts(&dir)
    })
    .await
    .unwrap();
    q.enqueue(task(1)).await.unwrap();
    q.enqueue(task(2)).await.unwrap();
    let err = q.enqueue(task(3)).await.unwrap_err();
    assert!(err.is_full(), "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    let lease = q.lease(1, Duration::ZERO).await.unwrap().pop().unwrap();
    q.ack(lease).await.unwrap();
    q.enqueue(task(3)).await.unwrap();

    let dir = TempDir::new("emb-full-bytes");
    let one = task(1).encode().unwrap().len() as u64;
    let q = EmbeddedQueue::open(EmbeddedOptions {
        max_bytes: one * 2 + one / 2,
        ..opts(&dir)
    })
    .await
    .unwrap();
    q.enqueue(task(1)).await.unwrap();
    q.enqueue(task(2)).await.unwrap();
    assert!(q.enqueue(task(3)).await.unwrap_err().is_full());
}

#[tokio::test]
async fn oversized_and_malformed_tasks_are_input_errors() {
    let dir = TempDir::new("emb-input");
    let q = EmbeddedQueue::open(EmbeddedOptions {
        max_task_bytes: 1024,
        ..opts(&dir)
    })
    .await
    .unwrap();
    let mut big = task(1);
    big.body = vec![b'x'; 2048];
    assert!(matches!(
        q.enqueue(big).await,
        Err(QueueError::TooLarge { .. })
    ));
    let mut bad = task(2);
    bad.id = "../etc".into();
    assert_eq!(
        q.enqueue(bad).await.unwrap_err().kind(),
        crate::ErrorKind::Input
    );
    assert_eq!(q.stats().await.unwrap().depth, 0);
}

#[tokio::test]
async fn reopen_redelivers_leased_and_keeps_dead_letters() {
    let dir = TempDir::new("emb-reopen");
    let (a, b, c) = (task(1), task(2), task(3));
    {
        let q = EmbeddedQueue::open(opts(&dir)).await.unwrap();
        for t in [&a, &b, &c] {
            q.enqueue(t.clone()).await.unwrap();
        }
        let mut leases = q.lease(3, Duration::ZERO).await.unwrap();
        assert_eq!(leases.len(), 3);
        let mut dead = leases.pop().unwrap();
        dead.task.last_error = Some("upstream: 400 bad request".into());
        q.dead_letter(dead).await.unwrap();
        let acked = leases.pop().unwrap();
        q.ack(acked).await.unwrap();
        // The remaining lease is neither acked nor released: the "process" dies holding it.
        drop(leases);
    }
    let q = EmbeddedQueue::open(opts(&dir)).await.unwrap();
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.depth, stats.dead, stats.in_flight), (1, 1, 0));
    let again = q.lease(10, Duration::ZERO).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].task, a);
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, c.id);
    assert_eq!(
        dead[0].last_error.as_deref(),
        Some("upstream: 400 bad request")
    );
}

#[tokio::test]
async fn dead_letters_inspect_replay_purge() {
    let dir = TempDir::new("emb-dead");
    let q = EmbeddedQueue::open(opts(&dir)).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..4 {
        let t = task(n);
        ids.push(t.id.clone());
        q.enqueue(t).await.unwrap();
    }
    for mut lease in q.lease(4, Duration::ZERO).await.unwrap() {
        lease.task.attempts = 5;
        lease.task.last_error = Some("timeout".into());
        q.dead_letter(lease).await.unwrap();
    }
    assert_eq!(q.stats().await.unwrap().dead, 4);
    let listed: Vec<String> = q
        .dead_letters(10)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(listed, ids, "oldest first");
    assert_eq!(q.dead_letters(2).await.unwrap().len(), 2);
    let one = q.dead_letter_get(&ids[1]).await.unwrap().unwrap();
    assert_eq!(one.attempts, 5);
    assert!(q.dead_letter_get("nope").await.unwrap().is_none());

    assert_eq!(q.replay(&Selection::Id(ids[1].clone())).await.unwrap(), 1);
    assert_eq!(q.replay(&Selection::Id(ids[1].clone())).await.unwrap(), 0);
    let replayed = q.lease(10, Duration::ZERO).await.unwrap();
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].task.id, ids[1]);
    assert_eq!(replayed[0].task.attempts, 0, "replay starts over");

    assert_eq!(q.purge(&Selection::Id(ids[0].clone())).await.unwrap(), 1);
    assert_eq!(q.purge(&Selection::All).await.unwrap(), 2);
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.dead, stats.depth), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enqueues_share_commits() {
    let dir = TempDir::new("emb-group");
    let q = Arc::new(EmbeddedQueue::open(opts(&dir)).await.unwrap());
    let before = q.commits();
    let n = 500;
    let all = (0..n).map(|i| {
        let q = Arc::clone(&q);
        async move { q.enqueue(task(i)).await }
    });
    for r in futures::future::join_all(all).await {
        r.unwrap();
    }
    let commits = q.commits() - before;
    assert_eq!(q.stats().await.unwrap().depth, n as u64);
    assert!(
        commits * 10 <= n as u64,
        "{n} concurrent enqueues took {commits} commits: no group commit"
    );
}

#[tokio::test]
async fn closed_queue_refuses_work() {
    let dir = TempDir::new("emb-closed");
    let q = EmbeddedQueue::open(opts(&dir)).await.unwrap();
    q.close().await.unwrap();
    assert!(matches!(q.enqueue(task(1)).await, Err(QueueError::Closed)));
    assert!(matches!(
        q.lease(1, Duration::from_secs(5)).await,
        Err(QueueError::Closed)
    ));
}

// ---- model-based property test -------------------------------------------------------------

#[derive(Debug, Clone)]
enum Step {
    Enqueue(usize),
    Lease(usize),
    Ack(usize),
    Nack(usize),
    Release(usize),
    DeadLetter(usize),
    Replay,
    Crash,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0usize..300).prop_map(Step::Enqueue),
        3 => (1usize..4).prop_map(Step::Lease),
        2 => any::<usize>().prop_map(Step::Ack),
        1 => any::<usize>().prop_map(Step::Nack),
        1 => any::<usize>().prop_map(Step::Release),
        1 => any::<usize>().prop_map(Step::DeadLetter),
        1 => Just(Step::Replay),
        1 => Just(Step::Crash),
    ]
}

/// What the queue must contain: pending tasks (id → attempts), dead ids, and who is leased.
#[derive(Default, Debug)]
struct Model {
    pending: BTreeMap<String, u32>,
    dead: BTreeSet<String>,
}

async fn check(q: &EmbeddedQueue, model: &Model, leased: usize) {
    let stats = q.stats().await.unwrap();
    assert_eq!(stats.depth, model.pending.len() as u64, "depth");
    assert_eq!(stats.dead, model.dead.len() as u64, "dead");
    assert_eq!(stats.in_flight, leased as u64, "in flight");
}

async fn run_model(steps: Vec<Step>) {
    let dir = TempDir::new("emb-prop");
    let mut q = EmbeddedQueue::open(opts(&dir)).await.unwrap();
    let mut model = Model::default();
    let mut leases: Vec<Lease> = Vec::new();
    let mut n = 0;
    for step in steps {
        match step {
            Step::Enqueue(len) => {
                let mut t = task(n);
                n += 1;
                t.body = vec![b'a'; len];
                model.pending.insert(t.id.clone(), 0);
                q.enqueue(t).await.unwrap();
            }
            Step::Lease(k) => {
                let got = q.lease(k, Duration::ZERO).await.unwrap();
                let due = model.pending.len() - leases.len();
                assert_eq!(got.len(), k.min(due), "lease returns what is due");
                for l in &got {
                    assert_eq!(
                        model.pending.get(&l.task.id),
                        Some(&l.task.attempts),
                        "leased task invented or stale"
                    );
                    assert!(
                        leases.iter().all(|o| o.task.id != l.task.id),
                        "leased twice"
                    );
                }
                leases.extend(got);
            }
            Step::Ack(i) if !leases.is_empty() => {
                let l = leases.swap_remove(i % leases.len());
                model.pending.remove(&l.task.id);
                q.ack(l).await.unwrap();
            }
            Step::Nack(i) if !leases.is_empty() => {
                let mut l = leases.swap_remove(i % leases.len());
                l.task.attempts += 1;
                model.pending.insert(l.task.id.clone(), l.task.attempts);
                q.nack(l, Duration::ZERO).await.unwrap();
            }
            Step::Release(i) if !leases.is_empty() => {
                let l = leases.swap_remove(i % leases.len());
                q.release(l).await.unwrap();
            }
            Step::DeadLetter(i) if !leases.is_empty() => {
                let l = leases.swap_remove(i % leases.len());
                model.pending.remove(&l.task.id);
                model.dead.insert(l.task.id.clone());
                q.dead_letter(l).await.unwrap();
            }
            Step::Replay => {
                let moved = q.replay(&Selection::All).await.unwrap();
                assert_eq!(moved, model.dead.len() as u64);
                for id in std::mem::take(&mut model.dead) {
                    model.pending.insert(id, 0);
                }
            }
            Step::Crash => {
                // Leases die with the process; the file is all that is left.
                leases.clear();
                drop(q);
                q = EmbeddedQueue::open(opts(&dir)).await.unwrap();
            }
            _ => {}
        }
        check(&q, &model, leases.len()).await;
    }
    // Finally every pending task is deliverable exactly as the model says, and nothing else.
    leases.clear();
    drop(q);
    let q = EmbeddedQueue::open(opts(&dir)).await.unwrap();
    let all = q.lease(usize::MAX, Duration::ZERO).await.unwrap();
    let got: BTreeMap<String, u32> = all
        .iter()
        .map(|l| (l.task.id.clone(), l.task.attempts))
        .collect();
    assert_eq!(got.len(), all.len(), "a task was delivered twice at once");
    assert_eq!(got, model.pending);
    let dead: BTreeSet<String> = q
        .dead_letters(usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(dead, model.dead);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]
    #[test]
    fn embedded_queue_matches_model(steps in proptest::collection::vec(step(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run_model(steps));
    }
}

#[test]
fn enospc_is_recognised_through_the_error_chain() {
    let io = std::io::Error::from_raw_os_error(28);
    assert!(disk_full(&QueueError::storage("commit", io)));
    let other = std::io::Error::from_raw_os_error(5);
    assert!(!disk_full(&QueueError::storage("commit", other)));
}

impl EmbeddedQueue {
    /// [`EmbeddedQueue::open`] on a database `open` makes (a disk that fills up).
    async fn open_on(opts: EmbeddedOptions, open: handle::Opener) -> Result<Self, QueueError> {
        let limits = opts.status;
        let opened = tokio::task::spawn_blocking(move || Store::open_with(open, limits))
            .await
            .map_err(|e| QueueError::storage("open task", e))??;
        Self::with_store(opts, opened)
    }
}

/// redb fails every operation after one failed write until the file is reopened: a disk that
/// filled up for a moment must not leave the queue refusing enqueues and acks for good.
#[tokio::test]
async fn a_disk_that_fills_up_and_frees_again_leaves_the_queue_working() {
    use std::sync::atomic::Ordering;
    let dir = TempDir::new("emb-enospc");
    let disk = handle::flaky::Disk::default();
    let q = EmbeddedQueue::open_on(opts(&dir), disk.opener())
        .await
        .unwrap();
    let (a, b, c) = (task(1), task(2), task(3));
    q.enqueue(a.clone()).await.unwrap();
    let lease = q.lease(1, Duration::ZERO).await.unwrap().pop().unwrap();

    disk.full.store(true, Ordering::SeqCst);
    let err = q.enqueue(b).await.unwrap_err();
    assert!(err.is_full(), "a full disk is a full queue: {err}");

    disk.full.store(false, Ordering::SeqCst);
    q.ack(lease)
        .await
        .expect("ack once the disk has room again");
    q.enqueue(c.clone())
        .await
        .expect("enqueue once the disk has room again");
    let leased = q.lease(10, Duration::ZERO).await.unwrap();
    let ids: Vec<&str> = leased.iter().map(|l| l.task.id.as_str()).collect();
    assert_eq!(ids, [c.id.as_str()], "a was acked, b never stored");
    let done = q.task_status(&a.id).await.unwrap().unwrap();
    assert_eq!(done.status, crate::status::State::Done);
}

/// A pending row this version cannot decode (a newer version wrote it, then was rolled back)
/// must not keep the queue from opening: the other tasks are delivered, the row stays.
#[tokio::test]
async fn an_undecodable_row_does_not_keep_the_queue_from_opening() {
    let dir = TempDir::new("emb-undecodable");
    let a = task(1);
    {
        let q = EmbeddedQueue::open(opts(&dir)).await.unwrap();
        q.enqueue(a.clone()).await.unwrap();
        q.close().await.unwrap();
    }
    {
        let db = redb::Database::create(dir.path().join("queue.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut pending = txn.open_table(store::PENDING).unwrap();
            let newer = br#"{"id":"x","hooks":{"on_done":{"target":{"kafka":{}}}}}"#;
            pending.insert(1_000_000, newer.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let q = EmbeddedQueue::open(opts(&dir))
        .await
        .expect("one unreadable row must not keep the queue closed");
    assert_eq!(q.stats().await.unwrap().depth, 2);
    let leased = q.lease(10, Duration::ZERO).await.unwrap();
    let ids: Vec<&str> = leased.iter().map(|l| l.task.id.as_str()).collect();
    assert_eq!(ids, [a.id.as_str()]);
}

/// A dead letter this version cannot decode (a newer version wrote it) is skipped by the listing
/// and by `replay --all`, which replay the others, instead of failing them for every dead letter.
#[tokio::test]
async fn an_undecodable_dead_letter_does_not_hide_or_block_the_others() {
    let dir = TempDir::new("emb-dead-undecodable");
    let a = task(1);
    {
        let q = EmbeddedQueue::open(opts(&dir)).await.unwrap();
        q.enqueue(a.clone()).await.unwrap();
        let mut leases = q.lease(1, Duration::ZERO).await.unwrap();
        q.dead_letter(leases.pop().unwrap()).await.unwrap();
        q.close().await.unwrap();
    }
    {
        let db = redb::Database::create(dir.path().join("queue.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut dead = txn.open_table(store::DEAD).unwrap();
            let newer = br#"{"id":"0-newer","hooks":{"on_done":{"target":{"kafka":{}}}}}"#;
            dead.insert(("0-newer", 0), newer.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let q = EmbeddedQueue::open(opts(&dir)).await.unwrap();
    let listed = q.dead_letters(10).await.expect("the listing skips the row");
    let ids: Vec<&str> = listed.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, [a.id.as_str()]);
    assert_eq!(
        q.replay(&Selection::All)
            .await
            .expect("replay skips the row"),
        1
    );
    let leased = q.lease(10, Duration::ZERO).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].task.id, a.id);
}
