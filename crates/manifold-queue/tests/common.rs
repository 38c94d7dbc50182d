//! Helpers shared by the integration tests.
// The broker modules use the delivery helpers; an embedded-only build does not.
#![cfg_attr(not(any(feature = "nats", feature = "rabbitmq")), allow(dead_code))]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use manifold_queue::{Deliver, DeliveryError, Task, IDEMPOTENCY_KEY_HEADER};

/// A name unique to this test run and call: `<tag>_<pid>_<nanos>`.
pub(crate) fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("mqtest_{tag}_{}_{nanos}", std::process::id())
}

/// A directory removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn task(n: usize) -> Task {
    Task::new(
        format!("order-{n}.shipping"),
        "shipping",
        "POST",
        "/shipping/labels",
        vec![("content-type".into(), "application/json".into())],
        format!("{{\"order_id\":{n}}}").into_bytes(),
    )
}

/// Fails each task's first `fail_first` attempts (503), then accepts; records the
/// `Idempotency-Key` of every attempt per task id.
pub(crate) struct Flaky {
    pub(crate) fail_first: usize,
    pub(crate) attempts: Mutex<HashMap<String, Vec<String>>>,
}

impl Flaky {
    pub(crate) fn new(fail_first: usize) -> Self {
        Flaky {
            fail_first,
            attempts: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn seen(&self) -> HashMap<String, Vec<String>> {
        self.attempts.lock().unwrap().clone()
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
            let mut all = self.attempts.lock().unwrap();
            let seen = all.entry(task.id.clone()).or_default();
            seen.push(key);
            seen.len()
        };
        if n <= self.fail_first {
            Err(DeliveryError::from_status(503))
        } else {
            Ok(())
        }
    }
}

/// Polls `done` every 20 ms for at most 60 s (a bound, not a timing assertion).
pub(crate) async fn wait_until(mut done: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not reached within 60 s");
}

pub(crate) use manifold_queue::test_support::Relay;

/// The broker goes away under an open queue (`relay` cut) and comes back: an enqueue during the
/// outage fails with an error within `outage_bound` (no hang), and once the relay is restored,
/// enqueue and lease/ack work again within 60 s with no accepted task lost.
pub(crate) async fn survives_a_broker_outage(
    q: &dyn manifold_queue::Queue,
    relay: &Relay,
    tag: &str,
) {
    use std::collections::HashSet;
    use tokio::time::Instant;
    const BOUND: Duration = Duration::from_secs(60);
    let mut n = 0;
    let mut next = || {
        n += 1;
        task(n)
    };
    // Healthy: the consumer is running.
    let first = next();
    q.enqueue(first.clone()).await.unwrap();
    let mut accepted: HashSet<String> = HashSet::new();
    let mut seen: HashSet<String> = HashSet::new();
    let until = Instant::now() + BOUND;
    while !seen.contains(&first.id) {
        assert!(Instant::now() < until, "{tag}: first task never leased");
        for lease in q.lease(10, Duration::from_secs(1)).await.unwrap() {
            seen.insert(lease.task.id.clone());
            q.ack(lease).await.unwrap();
        }
    }

    // A lease held across the outage: settled if the ack gets through, else delivered again.
    let held = next();
    q.enqueue(held.clone()).await.unwrap();
    let held_lease = loop {
        assert!(Instant::now() < until, "{tag}: held task never leased");
        let mut leases = q.lease(1, Duration::from_secs(1)).await.unwrap();
        if let Some(lease) = leases.pop() {
            assert_eq!(lease.task.id, held.id);
            break lease;
        }
    };

    relay.cut();
    let acked = tokio::time::timeout(BOUND, q.ack(held_lease)).await;
    eprintln!(
        "{tag}: ack of {} during the outage -> {:?}",
        held.id,
        acked
            .as_ref()
            .map(|r| r.as_ref().map_err(|e| e.to_string()))
    );
    // Whatever the ack answered, the task must not stay stuck: it is either gone (NATS may send
    // a buffered ack after reconnecting, so an ack that "failed" can still take effect) or
    // delivered again; the final check is that the queue drains to empty.
    let _ = acked;
    let started = Instant::now();
    let refused = next();
    let during = tokio::time::timeout(BOUND, q.enqueue(refused.clone())).await;
    eprintln!(
        "{tag}: enqueue during the outage -> {:?} after {:?}",
        during
            .as_ref()
            .map(|r| r.as_ref().map_err(|e| e.to_string())),
        started.elapsed()
    );
    let during = during.expect("enqueue during the outage hung");
    assert!(
        during.is_err(),
        "{tag}: enqueue succeeded through a cut relay"
    );
    let started = Instant::now();
    let leased = tokio::time::timeout(BOUND, q.lease(1, Duration::from_secs(1))).await;
    eprintln!(
        "{tag}: lease during the outage -> {:?} after {:?}",
        leased
            .as_ref()
            .map(|r| r.as_ref().map(Vec::len).map_err(|e| e.to_string())),
        started.elapsed()
    );
    assert!(leased.is_ok(), "{tag}: lease during the outage hung");

    relay.restore();
    let started = Instant::now();
    let mut errors = 0;
    loop {
        assert!(
            started.elapsed() < BOUND,
            "{tag}: enqueue still failing {BOUND:?} after the broker came back ({errors} errors)"
        );
        let t = next();
        match tokio::time::timeout(BOUND, q.enqueue(t.clone())).await {
            Ok(Ok(())) => {
                accepted.insert(t.id);
                break;
            }
            Ok(Err(e)) => {
                errors += 1;
                if errors <= 3 || errors % 20 == 0 {
                    eprintln!("{tag}: enqueue after restore failed: {e}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => panic!("{tag}: enqueue after restore hung"),
        }
    }
    eprintln!(
        "{tag}: enqueue works again {:?} after restore ({errors} errors before)",
        started.elapsed()
    );
    for _ in 0..5 {
        let t = next();
        q.enqueue(t.clone()).await.unwrap();
        accepted.insert(t.id);
    }
    let started = Instant::now();
    let mut errors = 0;
    loop {
        if accepted.is_subset(&seen) {
            match q.stats().await {
                Ok(stats) if stats.depth == 0 => break,
                Ok(_) => {}
                Err(e) => eprintln!("{tag}: stats after restore failed: {e}"),
            }
        }
        assert!(
            started.elapsed() < BOUND,
            "{tag}: queue not drained {BOUND:?} after restore: accepted tasks not delivered {:?}, \
             stats {:?} ({errors} lease errors)",
            accepted.difference(&seen).collect::<Vec<_>>(),
            q.stats().await
        );
        match tokio::time::timeout(BOUND, q.lease(10, Duration::from_secs(1))).await {
            Ok(Ok(leases)) => {
                for lease in leases {
                    seen.insert(lease.task.id.clone());
                    q.ack(lease).await.unwrap();
                }
            }
            Ok(Err(e)) => {
                errors += 1;
                if errors <= 3 || errors % 20 == 0 {
                    eprintln!("{tag}: lease after restore failed: {e}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => panic!("{tag}: lease after restore hung"),
        }
    }
    eprintln!(
        "{tag}: all {} accepted tasks leased and acked {:?} after restore ({errors} lease errors); \
         the task refused during the outage was {}delivered",
        accepted.len(),
        started.elapsed(),
        if seen.contains(&refused.id) { "" } else { "not (yet) " }
    );
}

/// A [`manifold_queue::Dispatcher`] running over `q` while the broker goes away and comes back:
/// every task accepted before or after the outage reaches the upstream, without a restart.
pub(crate) async fn dispatcher_survives_a_broker_outage(
    q: std::sync::Arc<dyn manifold_queue::Queue>,
    relay: &Relay,
    tag: &str,
) {
    use std::collections::HashSet;
    use std::sync::Arc;

    use manifold_queue::{DispatchPolicy, Dispatcher};
    use tokio::time::Instant;
    use tokio_util::sync::CancellationToken;

    let upstream = Arc::new(Flaky::new(0));
    let policy = DispatchPolicy {
        lease_wait: Duration::from_millis(200),
        error_pause: Duration::from_millis(200),
        ..DispatchPolicy::default()
    };
    let dispatcher = Dispatcher::new(Arc::clone(&q), Arc::clone(&upstream), policy);
    let metrics = dispatcher.metrics();
    let stop = CancellationToken::new();
    let run = tokio::spawn(dispatcher.run(stop.clone()));

    let mut accepted = HashSet::new();
    for n in 0..3 {
        let t = task(n);
        q.enqueue(t.clone()).await.unwrap();
        accepted.insert(t.id);
    }
    wait_until(|| metrics.snapshot().delivered >= 3).await;

    relay.cut();
    let during = tokio::time::timeout(Duration::from_secs(60), q.enqueue(task(100))).await;
    assert!(
        matches!(during, Ok(Err(_))),
        "{tag}: enqueue during the outage did not fail in time"
    );
    // Let the dispatcher run into the outage.
    tokio::time::sleep(Duration::from_secs(2)).await;
    relay.restore();

    let started = Instant::now();
    let mut n = 200;
    while accepted.len() < 6 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{tag}: enqueue not working 60 s after restore"
        );
        let t = task(n);
        n += 1;
        match q.enqueue(t.clone()).await {
            Ok(()) => {
                accepted.insert(t.id);
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    wait_until(|| {
        let seen: HashSet<String> = upstream.seen().into_keys().collect();
        accepted.is_subset(&seen)
    })
    .await;
    eprintln!(
        "{tag}: dispatcher delivered all {} accepted tasks {:?} after restore; queue errors {}",
        accepted.len(),
        started.elapsed(),
        metrics.snapshot().queue_errors
    );
    stop.cancel();
    assert!(run.await.unwrap().drained);
}
