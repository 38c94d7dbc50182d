//! Statuses for a backend that has nowhere of its own to keep them (RabbitMQ): a [`Tracked`]
//! queue wraps it and records each transition in a [`StatusStore`] — Redis when the gateway
//! has `[cache] redis` (every replica sees every status), else a local redb file (this replica
//! only: fine for one gateway, wrong for several, and the gateway says so at start-up).
//!
//! Status writes happen before the inner operation that settles the task (ack, nack, dead
//! letter), so a status never lags behind a settled task; a failed status write is tried again
//! (Redis: a reply timeout under load must not leave a delivered task `running`), then logged,
//! and never fails the queue operation: the delivery happened, and settling it is what keeps it
//! from happening twice.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::clock::Clock;
use crate::error::QueueError;
use crate::hooks::HookKind;
use crate::queue::{Lease, Queue, QueueStats, Selection};
use crate::status::{after_attempt, Change, Outcome, State, StatusLimits, TaskStatus};
use crate::task::Task;
use crate::Backend;

/// Where a [`Tracked`] queue keeps statuses.
pub trait StatusStore: Send + Sync + 'static {
    /// Applies `change` to the stored status; `only_new`: only if there is none yet.
    fn record(&self, change: Change, only_new: bool) -> BoxFuture<'_, ()>;

    /// The status of `id`, `None` if unknown or expired.
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<TaskStatus>, QueueError>>;

    /// The status of `id` once final or after `wait`.
    fn wait<'a>(
        &'a self,
        id: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Option<TaskStatus>, QueueError>>;
}

/// A queue whose statuses live in a separate [`StatusStore`].
pub struct Tracked {
    inner: Arc<dyn Queue>,
    store: Arc<dyn StatusStore>,
    limits: StatusLimits,
    clock: Clock,
}

impl Tracked {
    /// `inner` with its statuses in `store`.
    pub fn new(inner: Arc<dyn Queue>, store: Arc<dyn StatusStore>, limits: StatusLimits) -> Self {
        Tracked {
            inner,
            store,
            limits,
            clock: Clock::system(),
        }
    }

    fn change(&self, task: &Task, state: State, outcome: Option<Outcome>) -> Change {
        Change::of(task, state, outcome, self.clock.now_ms(), &self.limits)
    }
}

impl Queue for Tracked {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }

    fn enqueue(&self, task: Task) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move {
            let queued = self.change(&task, State::Queued, None);
            let (done, ()) =
                futures::join!(self.inner.enqueue(task), self.store.record(queued, true));
            done
        })
    }

    fn lease(&self, max: usize, wait: Duration) -> BoxFuture<'_, Result<Vec<Lease>, QueueError>> {
        Box::pin(async move {
            let leases = self.inner.lease(max, wait).await?;
            futures::future::join_all(leases.iter().map(|l| {
                self.store
                    .record(self.change(&l.task, State::Delivering, None), false)
            }))
            .await;
            Ok(leases)
        })
    }

    fn ack(&self, mut lease: Lease) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move {
            let hook = crate::hooks::store_before_settle(
                &lease.task,
                HookKind::OnDone,
                lease.outcome.as_ref(),
                |h| self.enqueue(h),
            )
            .await?;
            let done = self
                .change(&lease.task, State::Done, lease.outcome.take())
                .with_hook_id(hook, HookKind::OnDone);
            self.store.record(done, false).await;
            self.inner.ack(lease).await
        })
    }

    fn nack(&self, lease: Lease, delay: Duration) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move {
            let change = self.change(&lease.task, after_attempt(&lease.task), None);
            self.store.record(change, false).await;
            self.inner.nack(lease, delay).await
        })
    }

    fn release(&self, lease: Lease) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move {
            let change = self.change(&lease.task, after_attempt(&lease.task), None);
            self.store.record(change, false).await;
            self.inner.release(lease).await
        })
    }

    fn dead_letter(&self, lease: Lease) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move {
            let hook =
                crate::hooks::store_before_settle(&lease.task, HookKind::OnDead, None, |h| {
                    self.enqueue(h)
                })
                .await?;
            let dead = self
                .change(&lease.task, State::Dead, None)
                .with_hook_id(hook, HookKind::OnDead);
            self.store.record(dead, false).await;
            self.inner.dead_letter(lease).await
        })
    }

    fn stats(&self) -> BoxFuture<'_, Result<QueueStats, QueueError>> {
        self.inner.stats()
    }

    fn dead_letters(&self, limit: usize) -> BoxFuture<'_, Result<Vec<Task>, QueueError>> {
        self.inner.dead_letters(limit)
    }

    fn dead_letter_get<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Task>, QueueError>> {
        self.inner.dead_letter_get(id)
    }

    fn replay<'a>(&'a self, which: &'a Selection) -> BoxFuture<'a, Result<u64, QueueError>> {
        Box::pin(async move {
            let moved = self.inner.replay(which).await?;
            // By id, the status starts over now; a replay of all is seen at each task's next
            // delivery (the broker does not say which tasks moved).
            if let (Selection::Id(id), true) = (which, moved > 0) {
                let mut task = Task::new("replay", "replay", "POST", "/", vec![], Vec::new());
                task.id = id.clone();
                self.store
                    .record(self.change(&task, State::Queued, None), false)
                    .await;
            }
            Ok(moved)
        })
    }

    fn purge<'a>(&'a self, which: &'a Selection) -> BoxFuture<'a, Result<u64, QueueError>> {
        self.inner.purge(which)
    }

    fn close(&self) -> BoxFuture<'_, Result<(), QueueError>> {
        self.inner.close()
    }

    fn task_status<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<TaskStatus>, QueueError>> {
        self.store.get(id)
    }

    fn wait_status<'a>(
        &'a self,
        id: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Option<TaskStatus>, QueueError>> {
        self.store.wait(id, wait)
    }
}
