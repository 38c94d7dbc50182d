//! The backend-neutral queue contract the gateway and the dispatcher program against.

use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::error::QueueError;
use crate::status::{Outcome, TaskStatus};
use crate::task::Task;
use crate::Backend;

/// A durable task queue. Backends are used as `Arc<dyn Queue>`.
///
/// Contract, for every backend:
/// - [`Queue::enqueue`] returns `Ok` only once the task is durable (fsynced / acknowledged by the
///   broker), so the gateway may answer the client right after.
/// - A leased task stays invisible to other consumers until it is acked, nacked, released,
///   dead-lettered, or its lease times out (`lease_timeout`), after which it is delivered again.
///   Leases survive a crash in the sense that an unacknowledged task is delivered again after
///   the restart: delivery is **at least once**.
/// - Nothing is dropped silently: a full queue refuses with [`QueueError::Full`].
pub trait Queue: Send + Sync + 'static {
    /// Which backend this is.
    fn backend(&self) -> Backend;

    /// Stores `task` durably; returns once it survives a crash.
    fn enqueue(&self, task: Task) -> BoxFuture<'_, Result<(), QueueError>>;

    /// Leases up to `max` due tasks, waiting up to `wait` for the first one. An empty vector
    /// means none became due in time.
    fn lease(&self, max: usize, wait: Duration) -> BoxFuture<'_, Result<Vec<Lease>, QueueError>>;

    /// The task was delivered: remove it.
    fn ack(&self, lease: Lease) -> BoxFuture<'_, Result<(), QueueError>>;

    /// The attempt failed: make the task due again after `delay`, keeping `lease.task`'s
    /// `attempts` and `last_error` (the dispatcher updates them before calling this; NATS keeps
    /// its delivery count instead).
    fn nack(&self, lease: Lease, delay: Duration) -> BoxFuture<'_, Result<(), QueueError>>;

    /// Gives the task back untouched and due now (shutdown, or leased but never attempted).
    fn release(&self, lease: Lease) -> BoxFuture<'_, Result<(), QueueError>>;

    /// Moves the task, with its `last_error`, to the dead letters.
    fn dead_letter(&self, lease: Lease) -> BoxFuture<'_, Result<(), QueueError>>;

    /// Depth, oldest age, in-flight and dead-letter counts.
    fn stats(&self) -> BoxFuture<'_, Result<QueueStats, QueueError>>;

    /// Up to `limit` dead-lettered tasks, oldest first.
    fn dead_letters(&self, limit: usize) -> BoxFuture<'_, Result<Vec<Task>, QueueError>>;

    /// One dead-lettered task by id.
    fn dead_letter_get<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Task>, QueueError>>;

    /// Moves dead letters back into the queue (attempts reset, due now, `enqueued_at` now so
    /// `max_age` starts again). Returns how many moved.
    fn replay<'a>(&'a self, which: &'a Selection) -> BoxFuture<'a, Result<u64, QueueError>>;

    /// Deletes dead letters for good. Returns how many were deleted.
    fn purge<'a>(&'a self, which: &'a Selection) -> BoxFuture<'a, Result<u64, QueueError>>;

    /// Stops accepting work and flushes what the backend buffers; later calls fail with
    /// [`QueueError::Closed`].
    fn close(&self) -> BoxFuture<'_, Result<(), QueueError>>;

    /// The status of task `id` (`GET {status_path}/{id}`); `None` when unknown or expired.
    /// Backends that keep no statuses answer `None`.
    fn task_status<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<TaskStatus>, QueueError>> {
        let _ = id;
        Box::pin(async { Ok(None) })
    }

    /// The status of `id` once it is final (`done`, `dead`) or `wait` has passed, whichever is
    /// first: the long poll behind `?wait=`. Waits on a notification (never a polling loop).
    fn wait_status<'a>(
        &'a self,
        id: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Option<TaskStatus>, QueueError>> {
        let _ = wait;
        self.task_status(id)
    }
}

/// Which dead letters an operation applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Selection {
    /// Every dead letter.
    All,
    /// The dead letter with this task id.
    Id(String),
}

/// A snapshot of a queue, for `/admin/queue`, `manifold queue stats` and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// `embedded`, `nats` or `rabbitmq`.
    pub backend: String,
    /// Tasks accepted and not yet delivered (due, delayed and in flight).
    pub depth: u64,
    /// Age of the oldest undelivered task in milliseconds; `None` when empty or when the broker
    /// cannot tell (RabbitMQ).
    pub oldest_age_ms: Option<u64>,
    /// Tasks leased and being delivered (RabbitMQ: by this process only).
    pub in_flight: u64,
    /// Tasks in the dead letters.
    pub dead: u64,
    /// Bytes stored, where the backend knows it.
    pub bytes: Option<u64>,
}

/// A task handed to a consumer, to be acked, nacked, released or dead-lettered on the queue
/// that leased it. Dropping a lease without settling it leaves the task in flight until its
/// lease times out; then it is delivered again.
pub struct Lease {
    /// The task. The dispatcher updates `attempts` and `last_error` before a nack or a
    /// dead letter.
    pub task: Task,
    /// What the delivery returned: the dispatcher sets it before the ack, and the ack records
    /// it as the task's result.
    pub outcome: Option<Outcome>,
    pub(crate) token: LeaseToken,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("task", &self.task).finish()
    }
}

/// Backend-specific handle that identifies the leased copy.
pub(crate) enum LeaseToken {
    Embedded {
        seq: u64,
        lease_id: u64,
    },
    #[cfg(feature = "nats")]
    Nats(Box<async_nats::jetstream::Message>),
    #[cfg(feature = "rabbitmq")]
    Rabbit(lapin::Acker),
}
