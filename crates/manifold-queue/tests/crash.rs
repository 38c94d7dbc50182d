//! `kill -9` while enqueuing: every enqueue that returned Ok is in the file after the restart,
//! and nothing appears that was never enqueued.
//!
//! The parent test re-runs this test binary as a child that enqueues in a loop and prints each
//! id before trying (`TRY`) and after the durable return (`OK`); the parent kills it with
//! SIGKILL mid-stream, reopens the queue, and compares.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use manifold_queue::{EmbeddedOptions, EmbeddedQueue, Queue};

use crate::common::{task, TempDir};

const DIR_ENV: &str = "MANIFOLD_QUEUE_CRASH_DIR";

/// The child: does its work only when the parent starts it with the directory in the
/// environment; in an ordinary test run it returns at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child_enqueuer() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let q = Arc::new(EmbeddedQueue::open(EmbeddedOptions::at(dir)).await.unwrap());
    // 8 concurrent enqueuers, bounded: the parent kills us long before the end.
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let q = Arc::clone(&q);
            tokio::spawn(async move {
                for i in 0..5_000 {
                    let t = task(w * 100_000 + i);
                    println!("TRY {}", t.id);
                    let id = t.id.clone();
                    q.enqueue(t).await.unwrap();
                    println!("OK {id}");
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
}

/// Reads one child line. libtest may print `test NAME ... ` before the first line on the same
/// line, so markers are searched, not expected at the start.
fn record(line: &str, tried: &mut HashSet<String>, acked: &mut HashSet<String>) {
    if let Some((_, id)) = line.split_once("TRY ") {
        tried.insert(id.to_owned());
    } else if let Some((_, id)) = line.split_once("OK ") {
        acked.insert(id.to_owned());
    }
}

#[test]
fn embedded_survives_kill_9_during_enqueues() {
    let dir = TempDir::new("crash");
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash::crash_child_enqueuer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut tried = HashSet::new();
        let mut acked = HashSet::new();
        let mut lines = BufReader::new(stdout).lines();
        // Kill after a varying number of durable enqueues.
        let kill_after = 150 + round * 170;
        while acked.len() < kill_after {
            let Some(Ok(line)) = lines.next() else { break };
            record(&line, &mut tried, &mut acked);
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Lines already written before the kill still count.
        for line in lines.map_while(Result::ok) {
            record(&line, &mut tried, &mut acked);
        }
        assert!(
            acked.len() >= kill_after,
            "child ended early: {} acked",
            acked.len()
        );

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let stored: HashSet<String> = rt.block_on(async {
            let q = EmbeddedQueue::open(EmbeddedOptions::at(dir.path()))
                .await
                .unwrap();
            let leases = q.lease(usize::MAX, Duration::ZERO).await.unwrap();
            let ids: HashSet<String> = leases.iter().map(|l| l.task.id.clone()).collect();
            assert_eq!(ids.len(), leases.len(), "a task stored twice");
            // Deliver them all so the next round starts empty.
            for l in leases {
                q.ack(l).await.unwrap();
            }
            ids
        });
        let lost: Vec<&String> = acked.difference(&stored).collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} acknowledged tasks lost",
            lost.len()
        );
        let invented: Vec<&String> = stored.difference(&tried).collect();
        assert!(
            invented.is_empty(),
            "round {round}: tasks nobody enqueued: {invented:?} (tried {}, acked {}, stored {})",
            tried.len(),
            acked.len(),
            stored.len()
        );
    }
}

const STATUS_DIR_ENV: &str = "MANIFOLD_QUEUE_STATUS_CRASH_DIR";

/// The child of the status crash test: one task delivered (`done`, with its result), one in
/// the middle of a delivery; then it prints the ids and waits to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child_with_statuses() {
    use manifold_queue::{Outcome, State};
    let Ok(dir) = std::env::var(STATUS_DIR_ENV) else {
        return;
    };
    let q = EmbeddedQueue::open(EmbeddedOptions::at(dir)).await.unwrap();
    let (done, busy) = (task(1), task(2));
    let ids = (done.id.clone(), busy.id.clone());
    q.enqueue(done).await.unwrap();
    let mut lease = q.lease(1, Duration::ZERO).await.unwrap().pop().unwrap();
    lease.outcome = Some(Outcome {
        status: 201,
        body: Some(br#"{"label":"L-1"}"#.to_vec()),
    });
    q.ack(lease).await.unwrap();
    q.enqueue(busy).await.unwrap();
    let _held = q.lease(1, Duration::ZERO).await.unwrap();
    // `delivering` is written without blocking the lease: wait until it is committed.
    while q.task_status(&ids.1).await.unwrap().map(|s| s.status) != Some(State::Delivering) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("READY {} {}", ids.0, ids.1);
    tokio::time::sleep(Duration::from_secs(600)).await;
}

/// `kill -9` with a task `done` and one `delivering`: after the restart the `done` status and
/// its result are there, and the interrupted one is `retrying` (never lost), then `done` once
/// delivered.
#[test]
fn embedded_statuses_survive_kill_9() {
    use manifold_queue::State;
    let dir = TempDir::new("status-crash");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash::crash_child_with_statuses",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(STATUS_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut ids = None;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Some((_, rest)) = line.split_once("READY ") {
            let mut parts = rest.split_whitespace().map(str::to_owned);
            ids = parts.next().zip(parts.next());
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let (done, busy) = ids.expect("the child never got ready");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let q = EmbeddedQueue::open(EmbeddedOptions::at(dir.path()))
            .await
            .unwrap();
        let s = q.task_status(&done).await.unwrap().expect("done survives");
        assert_eq!((s.status, s.result_status), (State::Done, Some(201)));
        assert_eq!(s.result, Some(serde_json::json!({"label": "L-1"})));
        let s = q.task_status(&busy).await.unwrap().expect("never lost");
        assert_eq!(s.status, State::Retrying);
        let lease = q.lease(1, Duration::ZERO).await.unwrap().pop().unwrap();
        assert_eq!(lease.task.id, busy);
        q.ack(lease).await.unwrap();
        let s = q.task_status(&busy).await.unwrap().unwrap();
        assert_eq!(s.status, State::Done);
    });
}
