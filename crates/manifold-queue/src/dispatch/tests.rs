//! Dispatcher behaviour against the real embedded queue and in-process upstreams.

use std::collections::HashMap;
use std::sync::Mutex;

use super::*;
use crate::embedded::{EmbeddedOptions, EmbeddedQueue};
use crate::testutil::TempDir;
use crate::{Selection, IDEMPOTENCY_KEY_HEADER};

/// An upstream that fails each task's first `fail_first` attempts, records every attempt's
/// `Idempotency-Key`, and tracks concurrency per upstream.
struct Flaky {
    fail_first: u32,
    permanent: bool,
    hold: Duration,
    attempts: Mutex<HashMap<String, Vec<String>>>,
    running: Mutex<HashMap<String, (usize, usize)>>,
}

impl Flaky {
    fn new(fail_first: u32) -> Self {
        Flaky {
            fail_first,
            permanent: false,
            hold: Duration::ZERO,
            attempts: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
        }
    }

    fn max_running(&self, upstream: &str) -> usize {
        self.running
            .lock()
            .unwrap()
            .get(upstream)
            .map_or(0, |r| r.1)
    }
}

impl Deliver for Flaky {
    async fn deliver(&self, task: &Task) -> Result<(), DeliveryError> {
        let key = task
            .delivery_headers()
            .find(|(n, _)| *n == IDEMPOTENCY_KEY_HEADER)
            .map(|(_, v)| v.to_owned())
            .unwrap_or_default();
        let n = {
            let mut attempts = self.attempts.lock().unwrap();
            let seen = attempts.entry(task.id.clone()).or_default();
            seen.push(key);
            seen.len() as u32
        };
        {
            let mut running = self.running.lock().unwrap();
            let r = running.entry(task.upstream.clone()).or_default();
            r.0 += 1;
            r.1 = r.1.max(r.0);
        }
        if !self.hold.is_zero() {
            tokio::time::sleep(self.hold).await;
        }
        self.running
            .lock()
            .unwrap()
            .get_mut(&task.upstream)
            .unwrap()
            .0 -= 1;
        if n <= self.fail_first {
            if self.permanent {
                return Err(DeliveryError::from_status(400));
            }
            return Err(DeliveryError::retryable(format!(
                "upstream: attempt {n} got 503"
            )));
        }
        Ok(())
    }
}

fn policy() -> DispatchPolicy {
    DispatchPolicy {
        max_attempts: 10,
        max_age: Duration::from_secs(3600),
        backoff: Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(40),
        },
        concurrency: 8,
        upstream_concurrency: BTreeMap::new(),
        max_in_flight: 64,
        drain_timeout: Duration::from_secs(10),
        lease_wait: Duration::from_millis(50),
        error_pause: Duration::from_millis(50),
    }
}

async fn queue(dir: &TempDir) -> Arc<EmbeddedQueue> {
    Arc::new(
        EmbeddedQueue::open(EmbeddedOptions::at(dir.path()))
            .await
            .unwrap(),
    )
}

fn task(upstream: &str, n: usize) -> Task {
    Task::new(
        format!("req-{n}.{upstream}"),
        upstream,
        "POST",
        "/labels",
        vec![],
        b"{}".to_vec(),
    )
}

/// Polls `done` every 10 ms for at most 30 s (a bound, not a timing assertion).
async fn wait_until(mut done: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_a_stable_idempotency_key_until_delivered() {
    let dir = TempDir::new("disp-retry");
    let q = queue(&dir).await;
    let mut keys = HashMap::new();
    for n in 0..5 {
        let t = task("shipping", n);
        keys.insert(t.id.clone(), t.idempotency_key.clone());
        q.enqueue(t).await.unwrap();
    }
    let upstream = Arc::new(Flaky::new(3));
    let dispatcher = Dispatcher::new(q.clone(), Arc::clone(&upstream), policy());
    let metrics = dispatcher.metrics();
    let stop = CancellationToken::new();
    let run = tokio::spawn(dispatcher.run(stop.clone()));
    wait_until(|| metrics.snapshot().delivered == 5).await;
    stop.cancel();
    let report = run.await.unwrap();
    assert!(report.drained);

    let attempts = upstream.attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 5);
    for (id, seen) in attempts.iter() {
        assert_eq!(seen.len(), 4, "3 failures then success for {id}");
        assert!(
            seen.iter().all(|k| *k == keys[id]),
            "Idempotency-Key changed across attempts: {seen:?}"
        );
    }
    let m = metrics.snapshot();
    assert_eq!((m.failed_attempts, m.retried, m.dead_lettered), (15, 15, 0));
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.depth, stats.dead), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_after_max_attempts_with_the_last_error() {
    let dir = TempDir::new("disp-dead");
    let q = queue(&dir).await;
    let t = task("shipping", 1);
    q.enqueue(t.clone()).await.unwrap();
    let upstream = Arc::new(Flaky::new(u32::MAX));
    let dispatcher = Dispatcher::new(
        q.clone(),
        Arc::clone(&upstream),
        DispatchPolicy {
            max_attempts: 3,
            ..policy()
        },
    );
    let metrics = dispatcher.metrics();
    let stop = CancellationToken::new();
    let run = tokio::spawn(dispatcher.run(stop.clone()));
    wait_until(|| metrics.snapshot().dead_lettered == 1).await;
    stop.cancel();
    run.await.unwrap();

    assert_eq!(upstream.attempts.lock().unwrap()[&t.id].len(), 3);
    let dead = q.dead_letter_get(&t.id).await.unwrap().unwrap();
    assert_eq!(dead.attempts, 3);
    assert_eq!(
        dead.last_error.as_deref(),
        Some("upstream: attempt 3 got 503")
    );
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.depth, stats.dead), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_dead_letter_at_once_and_replay_delivers() {
    let dir = TempDir::new("disp-permanent");
    let q = queue(&dir).await;
    let t = task("shipping", 1);
    q.enqueue(t.clone()).await.unwrap();
    let upstream = Arc::new(Flaky {
        permanent: true,
        ..Flaky::new(1)
    });
    let dispatcher = Dispatcher::new(q.clone(), Arc::clone(&upstream), policy());
    let metrics = dispatcher.metrics();
    let stop = CancellationToken::new();
    let run = tokio::spawn(dispatcher.run(stop.clone()));
    wait_until(|| metrics.snapshot().dead_lettered == 1).await;
    let dead = q.dead_letter_get(&t.id).await.unwrap().unwrap();
    assert_eq!(dead.attempts, 1);
    assert_eq!(dead.last_error.as_deref(), Some("upstream: status 400"));
    // The operator fixes the upstream and replays: the same task and key arrive again.
    assert_eq!(q.replay(&Selection::All).await.unwrap(), 1);
    wait_until(|| metrics.snapshot().delivered == 1).await;
    stop.cancel();
    run.await.unwrap();
    let seen = upstream.attempts.lock().unwrap()[&t.id].clone();
    assert_eq!(seen, vec![t.idempotency_key.clone(); 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_is_bounded_per_upstream() {
    let dir = TempDir::new("disp-limit");
    let q = queue(&dir).await;
    for n in 0..24 {
        q.enqueue(task("slow", n)).await.unwrap();
        q.enqueue(task("fast", n)).await.unwrap();
    }
    let upstream = Arc::new(Flaky {
        hold: Duration::from_millis(20),
        ..Flaky::new(0)
    });
    let mut limits = BTreeMap::new();
    limits.insert("slow".to_owned(), 2);
    let dispatcher = Dispatcher::new(
        q.clone(),
        Arc::clone(&upstream),
        DispatchPolicy {
            concurrency: 5,
            upstream_concurrency: limits,
            ..policy()
        },
    );
    let metrics = dispatcher.metrics();
    let stop = CancellationToken::new();
    let run = tokio::spawn(dispatcher.run(stop.clone()));
    wait_until(|| metrics.snapshot().delivered == 48).await;
    stop.cancel();
    run.await.unwrap();
    assert!(
        upstream.max_running("slow") <= 2,
        "slow ran {}",
        upstream.max_running("slow")
    );
    assert!(
        upstream.max_running("fast") <= 5,
        "fast ran {}",
        upstream.max_running("fast")
    );
    assert_eq!(q.stats().await.unwrap().depth, 0);
}

/// An upstream that blocks every delivery until the test opens the gate.
struct Gate {
    started: AtomicUsize,
    open: Semaphore,
}

impl Deliver for Gate {
    async fn deliver(&self, _task: &Task) -> Result<(), DeliveryError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let permit = self.open.acquire().await;
        drop(permit);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_and_leaves_the_rest() {
    let dir = TempDir::new("disp-drain");
    let q = queue(&dir).await;
    for n in 0..5 {
        q.enqueue(task("shipping", n)).await.unwrap();
    }
    let gate = Arc::new(Gate {
        started: AtomicUsize::new(0),
        open: Semaphore::new(0),
    });
    let dispatcher = Dispatcher::new(
        q.clone(),
        Arc::clone(&gate),
        DispatchPolicy {
            concurrency: 2,
            ..policy()
        },
    );
    let metrics = dispatcher.metrics();
    let stop = CancellationToken::new();
    let run = tokio::spawn(dispatcher.run(stop.clone()));
    wait_until(|| gate.started.load(Ordering::SeqCst) == 2).await;
    stop.cancel();
    // Shutdown has begun; the two running deliveries may now finish.
    gate.open.add_permits(2);
    let report = run.await.unwrap();
    assert_eq!(
        report,
        DrainReport {
            drained: true,
            cut_off: 0
        }
    );
    assert_eq!(
        gate.started.load(Ordering::SeqCst),
        2,
        "no new delivery after shutdown"
    );
    assert_eq!(metrics.snapshot().delivered, 2);
    let stats = q.stats().await.unwrap();
    assert_eq!(
        (stats.depth, stats.in_flight),
        (3, 0),
        "the rest stays queued, unleased"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_cuts_off_and_releases() {
    let dir = TempDir::new("disp-cutoff");
    let q = queue(&dir).await;
    for n in 0..3 {
        q.enqueue(task("shipping", n)).await.unwrap();
    }
    let gate = Arc::new(Gate {
        started: AtomicUsize::new(0),
        open: Semaphore::new(0),
    });
    let dispatcher = Dispatcher::new(
        q.clone(),
        Arc::clone(&gate),
        DispatchPolicy {
            drain_timeout: Duration::from_millis(200),
            ..policy()
        },
    );
    let stop = CancellationToken::new();
    let run = tokio::spawn(dispatcher.run(stop.clone()));
    wait_until(|| gate.started.load(Ordering::SeqCst) == 3).await;
    stop.cancel();
    let report = run.await.unwrap();
    assert_eq!(
        report,
        DrainReport {
            drained: false,
            cut_off: 3
        }
    );
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.depth, stats.in_flight), (3, 0));
    // Released, not waiting for a lease timeout: due again right now.
    assert_eq!(q.lease(10, Duration::ZERO).await.unwrap().len(), 3);
}

#[test]
fn status_classification() {
    assert!(DeliveryError::from_status(503).is_retryable());
    assert!(DeliveryError::from_status(429).is_retryable());
    assert!(DeliveryError::from_status(408).is_retryable());
    assert!(!DeliveryError::from_status(404).is_retryable());
    assert!(!DeliveryError::from_status(422).is_retryable());
    assert_eq!(
        DeliveryError::retryable("connect refused").to_string(),
        "retryable: connect refused"
    );
}

/// Always answers 429 with `Retry-After: 30s`.
struct SlowDown;

impl Deliver for SlowDown {
    async fn deliver(&self, _task: &Task) -> Result<(), DeliveryError> {
        Err(DeliveryError::from_status(429).with_retry_after(Duration::from_secs(30)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_retry_after_is_a_floor_for_the_next_attempt() {
    let dir = TempDir::new("disp-retry-after");
    let q = queue(&dir).await;
    q.enqueue(task("shipping", 1)).await.unwrap();
    // The jittered backoff alone would retry within 10 ms (policy: base 10 ms, max 40 ms).
    let dispatcher = Dispatcher::new(q.clone(), Arc::new(SlowDown), policy());
    let metrics = dispatcher.metrics();
    let stop = CancellationToken::new();
    let run = tokio::spawn(dispatcher.run(stop.clone()));
    wait_until(|| metrics.snapshot().retried == 1).await;
    stop.cancel();
    run.await.unwrap();
    assert_eq!(
        metrics.snapshot().failed_attempts,
        1,
        "no second attempt yet"
    );
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.depth, stats.in_flight), (1, 0));
    assert!(
        q.lease(1, Duration::ZERO).await.unwrap().is_empty(),
        "due again before the upstream's Retry-After"
    );
}
