//! Cancel-safety of the embedded queue (issue 12, fault 4): the gateway's executor drops
//! in-flight calls at the deadline, on a required failure or when the client goes away, so any
//! `enqueue` (and the dispatcher's `ack`) may be dropped while it waits for the writer thread.
//! Whatever the writer commits must then still be accounted for in memory and delivered.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use redb::{ReadableDatabase, ReadableTable};
use tokio_util::sync::CancellationToken;

use super::store::PENDING;
use super::*;
use crate::dispatch::{Backoff, Deliver, DeliveryError, DispatchPolicy, Dispatcher};
use crate::testutil::TempDir;

fn task(n: usize) -> Task {
    Task::new(
        format!("cancel-{n}"),
        "shipping",
        "POST",
        "/labels",
        vec![],
        format!("{{\"n\":{n}}}").into_bytes(),
    )
}

/// Task ids and total encoded size of the pending rows actually committed to the file.
fn committed(q: &EmbeddedQueue) -> (BTreeSet<String>, u64) {
    let db = q.store.db.get().unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(PENDING).unwrap();
    let mut ids = BTreeSet::new();
    let mut bytes = 0;
    for row in table.iter().unwrap() {
        let (_, v) = row.unwrap();
        bytes += v.value().len() as u64;
        ids.insert(Task::decode(v.value()).unwrap().id);
    }
    (ids, bytes)
}

/// The in-memory bookkeeping agrees with the file: every committed row is pending, due or
/// leased, every dead letter is counted, and both count against the bounds exactly once.
fn assert_accounted(q: &EmbeddedQueue, what: &str) -> BTreeSet<String> {
    let (ids, bytes) = committed(q);
    let dead_rows = q.store.read_dead(None, usize::MAX).unwrap();
    let dead_bytes: u64 = dead_rows.iter().map(|(_, _, b)| b.len() as u64).sum();
    let st = q.state();
    assert_eq!(
        (st.pending.len(), st.ready.len() + st.leased.len()),
        (ids.len(), ids.len()),
        "{what}: {} tasks committed, {} in memory ({} due, {} leased)",
        ids.len(),
        st.pending.len(),
        st.ready.len(),
        st.leased.len()
    );
    assert_eq!(
        (st.dead, st.dead_bytes),
        (dead_rows.len() as u64, dead_bytes),
        "{what}: dead-letter counters disagree with the file"
    );
    assert_eq!(
        (st.stored_tasks, st.stored_bytes),
        (
            ids.len() as u64 + dead_rows.len() as u64,
            bytes + dead_bytes
        ),
        "{what}: capacity counters disagree with the committed rows"
    );
    ids
}

/// Records each delivered task id.
#[derive(Default)]
struct Record(Mutex<BTreeSet<String>>);

impl Deliver for Record {
    async fn deliver(&self, task: &Task) -> Result<(), DeliveryError> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(task.id.clone());
        Ok(())
    }
}

fn policy() -> DispatchPolicy {
    DispatchPolicy {
        backoff: Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(40),
        },
        lease_wait: Duration::from_millis(50),
        error_pause: Duration::from_millis(50),
        ..DispatchPolicy::default()
    }
}

/// Drives `fut` but drops it after a random short time or a random number of polls: before it
/// starts, while it waits for the writer thread, or never (it finishes first).
async fn cancel_randomly<F: std::future::Future>(rng: &mut SmallRng, fut: F) {
    match rng.random_range(0..4u8) {
        // Dropped before its first poll.
        0 => drop(fut),
        // Dropped after a few polls (each yield lets the writer thread move on).
        1 => {
            let polls = rng.random_range(1..4usize);
            let mut fut = std::pin::pin!(fut);
            for _ in 0..polls {
                if futures::poll!(fut.as_mut()).is_ready() {
                    return;
                }
                tokio::task::yield_now().await;
            }
        }
        // A deadline somewhere around one fsync.
        _ => {
            let micros = rng.random_range(0..3000u64);
            let _ = tokio::time::timeout(Duration::from_micros(micros), fut).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_enqueues_are_accounted_for_and_delivered() {
    let seed: u64 = crate::rng::with_rng(|r| r.random());
    eprintln!("seed {seed}");
    let mut rng = SmallRng::seed_from_u64(seed);
    let dir = TempDir::new("emb-cancel-enqueue");
    let max_tasks = 40;
    let q = Arc::new(
        EmbeddedQueue::open(EmbeddedOptions {
            max_tasks,
            ..EmbeddedOptions::at(dir.path())
        })
        .await
        .unwrap(),
    );
    let mut n = 0;
    for round in 0..6 {
        let mut spawned = Vec::new();
        for _ in 0..30 {
            n += 1;
            // Some run concurrently so commits are shared by several enqueues.
            if rng.random_bool(0.3) {
                let q = Arc::clone(&q);
                let micros = rng.random_range(0..3000u64);
                let t = task(n);
                let h = tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_micros(micros), q.enqueue(t)).await;
                });
                if rng.random_bool(0.5) {
                    tokio::task::yield_now().await;
                    h.abort();
                }
                spawned.push(h);
            } else {
                cancel_randomly(&mut rng, q.enqueue(task(n))).await;
            }
        }
        for h in spawned {
            let _ = h.await;
        }
        // A barrier: the writer answers in order, so once this enqueue is back every op sent
        // before it has been committed.
        n += 1;
        match q.enqueue(task(n)).await {
            Ok(()) => {}
            Err(e) => assert!(e.is_full(), "round {round}: {e}"),
        }
        assert_accounted(&q, &format!("round {round} (seed {seed})"));
        // Make room for the next round: deliver everything committed so far.
        drain(&q, seed).await;
    }
    // Capacity is all back: a full `max_tasks` fits again.
    for i in 0..max_tasks as usize {
        q.enqueue(task(10_000 + i)).await.unwrap();
    }
    assert!(q.enqueue(task(20_000)).await.unwrap_err().is_full());
    drain(&q, seed).await;
}

/// Runs a dispatcher until every committed task has been delivered, then checks the queue is
/// empty in memory and on disk.
async fn drain(q: &Arc<EmbeddedQueue>, seed: u64) {
    let (want, _) = committed(q);
    let record = Arc::new(Record::default());
    let dispatcher = Dispatcher::new(
        Arc::clone(q) as Arc<dyn Queue>,
        Arc::clone(&record),
        policy(),
    );
    let stop = CancellationToken::new();
    let run = tokio::spawn(dispatcher.run(stop.clone()));
    // A bound, not a timing assertion: stranded tasks would never come.
    for _ in 0..1000 {
        let got = record.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if want.is_subset(&got) && committed(q).0.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    run.await.unwrap();
    let got = record.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let missing: Vec<_> = want.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "committed but never delivered (seed {seed}): {missing:?}"
    );
    assert_accounted(q, &format!("after delivery (seed {seed})"));
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.depth, stats.in_flight, stats.bytes), (0, 0, Some(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_acks_nacks_and_dead_letters_leave_no_phantoms() {
    let seed: u64 = crate::rng::with_rng(|r| r.random());
    eprintln!("seed {seed}");
    let mut rng = SmallRng::seed_from_u64(seed);
    let dir = TempDir::new("emb-cancel-settle");
    let q = Arc::new(
        EmbeddedQueue::open(EmbeddedOptions {
            // Short, so a lease whose settlement was lost comes back within the test.
            lease_timeout: Duration::from_millis(100),
            ..EmbeddedOptions::at(dir.path())
        })
        .await
        .unwrap(),
    );
    for i in 0..60 {
        q.enqueue(task(i)).await.unwrap();
    }
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 500, "the queue never emptied (seed {seed})");
        let leases = q.lease(8, Duration::from_millis(200)).await.unwrap();
        for lease in leases {
            match rng.random_range(0..4u8) {
                0 => cancel_randomly(&mut rng, q.nack(lease, Duration::ZERO)).await,
                1 => cancel_randomly(&mut rng, q.dead_letter(lease)).await,
                _ => cancel_randomly(&mut rng, q.ack(lease)).await,
            }
        }
        // Barrier: a write answered after every write sent before it.
        q.enqueue(task(1_000_000 + rounds)).await.unwrap();
        q.ack(
            q.lease(1, Duration::ZERO)
                .await
                .unwrap()
                .pop()
                .unwrap_or_else(|| panic!("the barrier task is due (seed {seed})")),
        )
        .await
        .ok();
        assert_accounted(&q, &format!("round {rounds} (seed {seed})"));
        if committed(&q).0.is_empty() {
            break;
        }
    }
    // Purge and replay cancelled at random, then everything settles to what the file says.
    for _ in 0..10 {
        cancel_randomly(&mut rng, q.replay(&Selection::All)).await;
        cancel_randomly(&mut rng, q.purge(&Selection::All)).await;
    }
    q.enqueue(task(2_000_000)).await.unwrap();
    assert_accounted(&q, &format!("after replay/purge (seed {seed})"));
}
