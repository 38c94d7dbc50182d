//! The dispatcher: leases tasks and delivers them to their upstreams, with retries, backoff,
//! dead letters, per-upstream concurrency limits and a graceful drain.
//!
//! Delivery itself is not done here: the gateway implements [`Deliver`] with its upstream client,
//! so offloaded calls go through the same stack (timeouts, breaker, balancer) as synchronous ones.

mod backoff;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use backoff::Backoff;

use crate::clock::Clock;
use crate::queue::{Lease, Queue};
use crate::rng::with_rng;
use crate::status::Outcome;
use crate::task::Task;
use crate::QueueConfig;

/// Sends one task to its upstream. Implemented by the gateway over its upstream client; it must
/// send `Idempotency-Key` (see [`Task::delivery_headers`]) on every attempt.
pub trait Deliver: Send + Sync + 'static {
    /// Delivers `task` once. `Ok` means the upstream accepted it (2xx); an error says whether a
    /// retry may help.
    fn deliver(&self, task: &Task) -> impl Future<Output = Result<(), DeliveryError>> + Send;

    /// Delivers `task` once and returns what the upstream answered, which becomes the task's
    /// `result` in its status. The default knows only success (status 200, no body);
    /// implementations that can read the answer override it.
    fn deliver_outcome(
        &self,
        task: &Task,
    ) -> impl Future<Output = Result<Outcome, DeliveryError>> + Send {
        async move {
            self.deliver(task).await.map(|()| Outcome {
                status: 200,
                body: Some(Vec::new()),
            })
        }
    }
}

/// Why a delivery attempt failed, and whether to try again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", if *.retryable { "retryable" } else { "permanent" })]
pub struct DeliveryError {
    message: String,
    retryable: bool,
    retry_after: Option<Duration>,
}

impl DeliveryError {
    /// A failure a later attempt may not repeat: connect error, timeout, 5xx, 429.
    pub fn retryable(message: impl Into<String>) -> Self {
        DeliveryError {
            message: message.into(),
            retryable: true,
            retry_after: None,
        }
    }

    /// A failure that will repeat (4xx other than 408/429, unknown upstream): dead-letter now.
    pub fn permanent(message: impl Into<String>) -> Self {
        DeliveryError {
            message: message.into(),
            retryable: false,
            retry_after: None,
        }
    }

    /// Classifies a non-2xx upstream status: 408, 425, 429 and 5xx are retryable, other 4xx
    /// (and anything else) permanent.
    pub fn from_status(status: u16) -> Self {
        let message = format!("upstream: status {status}");
        match status {
            408 | 425 | 429 | 500..=599 => DeliveryError::retryable(message),
            _ => DeliveryError::permanent(message),
        }
    }

    /// The upstream's `Retry-After`: the next attempt waits at least this long.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Whether a retry may help.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The description recorded as the task's `last_error`.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// How the dispatcher retries and how much it runs at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchPolicy {
    /// Attempts before dead-lettering.
    pub max_attempts: u32,
    /// Age after which a failed task is dead-lettered instead of retried.
    pub max_age: Duration,
    /// Retry delays.
    pub backoff: Backoff,
    /// Concurrent deliveries per upstream unless named in `upstream_concurrency`.
    pub concurrency: usize,
    /// Concurrent deliveries for named upstreams.
    pub upstream_concurrency: BTreeMap<String, usize>,
    /// Leases held at once across all upstreams.
    pub max_in_flight: usize,
    /// On shutdown, how long in-flight deliveries may run before they are released.
    pub drain_timeout: Duration,
    /// How long one lease call waits for work (bounds how fast shutdown is noticed when idle).
    pub lease_wait: Duration,
    /// Pause after the queue fails (broker down) before leasing again.
    pub error_pause: Duration,
}

impl DispatchPolicy {
    /// The dispatcher settings of a `[queue]` section.
    pub fn from_config(cfg: &QueueConfig) -> Self {
        DispatchPolicy {
            max_attempts: cfg.max_attempts,
            max_age: cfg.max_age,
            backoff: Backoff {
                base: cfg.backoff_base,
                max: cfg.backoff_max,
            },
            concurrency: cfg.concurrency,
            upstream_concurrency: cfg.upstream_concurrency.clone(),
            max_in_flight: cfg.max_in_flight,
            drain_timeout: cfg.drain_timeout,
            lease_wait: Duration::from_secs(1),
            error_pause: Duration::from_secs(1),
        }
    }

    fn concurrency_for(&self, upstream: &str) -> usize {
        self.upstream_concurrency
            .get(upstream)
            .copied()
            .unwrap_or(self.concurrency)
            .max(1)
    }
}

impl Default for DispatchPolicy {
    fn default() -> Self {
        DispatchPolicy::from_config(&QueueConfig::default())
    }
}

/// Counters the gateway exports as metrics.
#[derive(Debug, Default)]
pub struct DispatchMetrics {
    delivered: AtomicU64,
    failed_attempts: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    released: AtomicU64,
    deferred: AtomicU64,
    queue_errors: AtomicU64,
    in_flight: AtomicU64,
}

/// A copy of [`DispatchMetrics`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DispatchSnapshot {
    /// Tasks delivered and acked.
    pub delivered: u64,
    /// Attempts that failed.
    pub failed_attempts: u64,
    /// Failed attempts scheduled for a retry.
    pub retried: u64,
    /// Tasks moved to the dead letters.
    pub dead_lettered: u64,
    /// Leases given back untouched (shutdown).
    pub released: u64,
    /// Leases put back for later because their upstream was saturated.
    pub deferred: u64,
    /// Queue operations that failed (lease, ack, nack...).
    pub queue_errors: u64,
    /// Deliveries running now.
    pub in_flight: u64,
}

impl DispatchMetrics {
    /// The counters now.
    pub fn snapshot(&self) -> DispatchSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DispatchSnapshot {
            delivered: get(&self.delivered),
            failed_attempts: get(&self.failed_attempts),
            retried: get(&self.retried),
            dead_lettered: get(&self.dead_lettered),
            released: get(&self.released),
            deferred: get(&self.deferred),
            queue_errors: get(&self.queue_errors),
            in_flight: get(&self.in_flight),
        }
    }

    fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// How a dispatcher's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReport {
    /// Every in-flight delivery finished within the drain timeout.
    pub drained: bool,
    /// Deliveries cut off at the drain timeout and released for the next start.
    pub cut_off: u64,
}

/// Per-upstream limit: a semaphore, and how many leases wait for it.
struct UpstreamLimit {
    permits: Arc<Semaphore>,
    limit: usize,
    waiting: AtomicUsize,
}

/// Delivers queued tasks until shut down.
pub struct Dispatcher<D> {
    queue: Arc<dyn Queue>,
    deliver: Arc<D>,
    policy: Arc<DispatchPolicy>,
    metrics: Arc<DispatchMetrics>,
    limits: Arc<Mutex<HashMap<String, Arc<UpstreamLimit>>>>,
    clock: Clock,
}

impl<D: Deliver> Dispatcher<D> {
    /// A dispatcher reading from `queue` and delivering through `deliver`.
    pub fn new(queue: Arc<dyn Queue>, deliver: Arc<D>, policy: DispatchPolicy) -> Self {
        Dispatcher {
            queue,
            deliver,
            policy: Arc::new(policy),
            metrics: Arc::new(DispatchMetrics::default()),
            limits: Arc::new(Mutex::new(HashMap::new())),
            clock: Clock::system(),
        }
    }

    /// Counters for metrics; valid before, during and after [`Dispatcher::run`].
    pub fn metrics(&self) -> Arc<DispatchMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Leases and delivers until `shutdown` is cancelled; then stops leasing, lets in-flight
    /// deliveries finish for up to `drain_timeout`, releases the rest (delivered after the next
    /// start) and returns.
    pub async fn run(self, shutdown: CancellationToken) -> DrainReport {
        let global = Arc::new(Semaphore::new(self.policy.max_in_flight.max(1)));
        let hard_stop = CancellationToken::new();
        let mut jobs = JoinSet::new();
        loop {
            while jobs.try_join_next().is_some() {}
            let first = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                permit = Arc::clone(&global).acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let mut permits = vec![first];
            while let Ok(p) = Arc::clone(&global).try_acquire_owned() {
                permits.push(p);
            }
            let leases = match self
                .queue
                .lease(permits.len(), self.policy.lease_wait)
                .await
            {
                Ok(leases) => leases,
                Err(e) => {
                    DispatchMetrics::inc(&self.metrics.queue_errors);
                    tracing::warn!(error = %e, "dispatcher: lease failed; pausing");
                    drop(permits);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(self.policy.error_pause) => continue,
                    }
                }
            };
            if shutdown.is_cancelled() {
                for lease in leases {
                    self.settle_release(lease).await;
                }
                break;
            }
            for (lease, permit) in leases.into_iter().zip(permits) {
                let job = Job {
                    queue: Arc::clone(&self.queue),
                    deliver: Arc::clone(&self.deliver),
                    policy: Arc::clone(&self.policy),
                    metrics: Arc::clone(&self.metrics),
                    limit: self.limit_for(&lease.task.upstream),
                    clock: self.clock,
                    shutdown: shutdown.clone(),
                    hard_stop: hard_stop.clone(),
                };
                jobs.spawn(async move {
                    let cut_off = job.run(lease).await;
                    drop(permit);
                    cut_off
                });
            }
        }

        // Drain: no new leases; in-flight deliveries get `drain_timeout`.
        let drained = tokio::time::timeout(self.policy.drain_timeout, async {
            while jobs.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        let mut cut_off = 0;
        if !drained {
            hard_stop.cancel();
            // Cut-off jobs only release their lease now: give them a moment, then stop.
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while let Some(result) = jobs.join_next().await {
                    if matches!(result, Ok(true)) {
                        cut_off += 1;
                    }
                }
            })
            .await;
            jobs.abort_all();
        }
        tracing::info!(drained, cut_off, "dispatcher stopped");
        DrainReport { drained, cut_off }
    }

    fn limit_for(&self, upstream: &str) -> Arc<UpstreamLimit> {
        let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(limits.entry(upstream.to_owned()).or_insert_with(|| {
            let limit = self.policy.concurrency_for(upstream);
            Arc::new(UpstreamLimit {
                permits: Arc::new(Semaphore::new(limit)),
                limit,
                waiting: AtomicUsize::new(0),
            })
        }))
    }

    async fn settle_release(&self, lease: Lease) {
        if let Err(e) = self.queue.release(lease).await {
            DispatchMetrics::inc(&self.metrics.queue_errors);
            tracing::warn!(error = %e, "dispatcher: release failed; the lease will time out");
        }
        DispatchMetrics::inc(&self.metrics.released);
    }
}

/// Everything one delivery needs, moved into its own tokio task.
struct Job<D> {
    queue: Arc<dyn Queue>,
    deliver: Arc<D>,
    policy: Arc<DispatchPolicy>,
    metrics: Arc<DispatchMetrics>,
    limit: Arc<UpstreamLimit>,
    clock: Clock,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
}

impl<D: Deliver> Job<D> {
    /// Delivers one lease and settles it. Returns true if it was cut off by the drain timeout.
    async fn run(self, lease: Lease) -> bool {
        // Bound how many leases wait behind a saturated upstream, so one slow upstream cannot
        // hold every lease while the others starve.
        let waiting = self.limit.waiting.fetch_add(1, Ordering::AcqRel);
        if waiting >= self.limit.limit && self.limit.permits.available_permits() == 0 {
            self.limit.waiting.fetch_sub(1, Ordering::AcqRel);
            let pause = with_rng(|rng| self.policy.backoff.delay(1, rng));
            self.settle(
                self.queue.nack(lease, pause.max(Duration::from_millis(50))),
                "defer",
            )
            .await;
            DispatchMetrics::inc(&self.metrics.deferred);
            return false;
        }
        let permit = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => None,
            p = Arc::clone(&self.limit.permits).acquire_owned() => p.ok(),
        };
        self.limit.waiting.fetch_sub(1, Ordering::AcqRel);
        let Some(_permit) = permit else {
            // Shutting down before this delivery started: stop taking work.
            self.settle(self.queue.release(lease), "release").await;
            DispatchMetrics::inc(&self.metrics.released);
            return false;
        };

        self.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        let outcome = tokio::select! {
            biased;
            _ = self.hard_stop.cancelled() => None,
            r = self.deliver.deliver_outcome(&lease.task) => Some(r),
        };
        self.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);

        match outcome {
            None => {
                tracing::info!(task = %lease.task.id, "drain timeout: delivery cut off, released");
                self.settle(self.queue.release(lease), "release").await;
                DispatchMetrics::inc(&self.metrics.released);
                true
            }
            Some(Ok(outcome)) => {
                tracing::debug!(task = %lease.task.id, upstream = %lease.task.upstream, "delivered");
                let mut lease = lease;
                lease.outcome = Some(outcome);
                self.settle(self.queue.ack(lease), "ack").await;
                // Counted once the queue has settled, so a reader of the counters sees the queue
                // already updated.
                DispatchMetrics::inc(&self.metrics.delivered);
                false
            }
            Some(Err(error)) => {
                self.failed(lease, error).await;
                false
            }
        }
    }

    async fn failed(&self, mut lease: Lease, error: DeliveryError) {
        DispatchMetrics::inc(&self.metrics.failed_attempts);
        let task = &mut lease.task;
        task.attempts = task.attempts.saturating_add(1);
        task.last_error = Some(error.message().to_owned());
        let age = Duration::from_millis(task.age_ms(self.clock.now_ms()));
        let give_up = if !error.is_retryable() {
            Some("permanent error")
        } else if task.attempts >= self.policy.max_attempts {
            Some("max_attempts reached")
        } else if age >= self.policy.max_age {
            Some("max_age reached")
        } else {
            None
        };
        if let Some(why) = give_up {
            tracing::warn!(
                task = %task.id, upstream = %task.upstream, attempts = task.attempts,
                error = %error, why, "dead-lettering task"
            );
            self.settle(self.queue.dead_letter(lease), "dead-letter")
                .await;
            DispatchMetrics::inc(&self.metrics.dead_lettered);
            return;
        }
        let jittered = with_rng(|rng| self.policy.backoff.delay(task.attempts, rng));
        // The upstream's Retry-After is a floor (waiting past max_age would be pointless).
        let floor = error
            .retry_after
            .map_or(Duration::ZERO, |d| d.min(self.policy.max_age));
        let delay = jittered.max(floor);
        tracing::debug!(
            task = %task.id, attempts = task.attempts, delay_ms = delay.as_millis() as u64,
            error = %error, "delivery failed; retrying later"
        );
        self.settle(self.queue.nack(lease, delay), "nack").await;
        DispatchMetrics::inc(&self.metrics.retried);
    }

    async fn settle(
        &self,
        op: impl Future<Output = Result<(), crate::QueueError>>,
        what: &'static str,
    ) {
        if let Err(e) = op.await {
            // The task stays leased until its lease times out, then comes back: at least once.
            DispatchMetrics::inc(&self.metrics.queue_errors);
            tracing::warn!(error = %e, op = what, "dispatcher: queue operation failed");
        }
    }
}

#[cfg(test)]
mod tests;
