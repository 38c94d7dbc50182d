//! The default backend: a redb file on local disk.
//!
//! Why redb: pure Rust, ACID with checksummed commits (crash-safe without a WAL to replay), one
//! file. Its only durable mode is an fsync per commit, so all writes go through one writer
//! thread that commits whatever arrived meanwhile in one transaction (the `store` module): concurrent
//! enqueues share an fsync. Every op (enqueue, ack, nack, dead letter) is durable when it
//! returns, so a crash at any point loses no accepted task and resurrects no delivered one.
//!
//! The order of due tasks, leases and the bounds live in memory (rebuilt from the file at open);
//! a lease is memory only, so a task leased when the process died is simply due again after the
//! restart. Task bodies stay on disk and are read when leased.
//!
//! Cancel safety: the gateway drops an in-flight enqueue at the route deadline, on a required
//! failure or when the client goes away, and that may happen while it waits for the writer. So
//! no op updates memory after an await: each hands the writer an effect that the writer applies
//! right after the commit (see `store`). A committed task is always due, counted and delivered,
//! and a refused or failed one always gives its reserved capacity back, whatever became of the
//! caller.

mod dead;
pub(crate) mod handle;
mod settle;
mod status_index;
pub(crate) mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::error::QueueError;
use crate::queue::{Lease, LeaseToken, Queue, QueueStats, Selection};
use crate::status::{Change, State as Status, StatusLimits, TaskStatus, Watchers};
use crate::task::Task;
use crate::{Backend, QueueConfig};
use store::{Op, Store};

/// Settings of the embedded backend (the `[queue]` keys it reads).
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Directory holding `queue.redb`.
    pub path: PathBuf,
    /// Bound on stored bytes (pending and dead).
    pub max_bytes: u64,
    /// Bound on stored tasks (pending and dead).
    pub max_tasks: u64,
    /// Largest encoded task.
    pub max_task_bytes: usize,
    /// `Retry-After` hint when full.
    pub retry_after: Duration,
    /// How long a lease lasts before the task is due again.
    pub lease_timeout: Duration,
    /// Bounds on task statuses and results.
    pub status: StatusLimits,
}

impl EmbeddedOptions {
    /// The embedded settings of a `[queue]` section.
    pub fn from_config(cfg: &QueueConfig) -> Self {
        EmbeddedOptions {
            path: cfg.path.clone(),
            max_bytes: cfg.max_bytes,
            max_tasks: cfg.max_tasks,
            max_task_bytes: cfg.max_task_bytes,
            retry_after: cfg.retry_after,
            lease_timeout: cfg.lease_timeout,
            status: StatusLimits::from_config(cfg),
        }
    }

    /// Defaults with the file in `path`.
    pub fn at(path: impl AsRef<Path>) -> Self {
        EmbeddedOptions {
            path: path.as_ref().to_path_buf(),
            ..EmbeddedOptions::from_config(&QueueConfig::default())
        }
    }
}

/// The on-disk queue. Cheap to share as `Arc<dyn Queue>`; one process per directory (redb locks
/// the file).
pub struct EmbeddedQueue {
    store: Store,
    /// Shared with the writer thread, which applies each commit's effect to it.
    shared: Arc<Shared>,
    clock: Clock,
    opts: EmbeddedOptions,
}

/// The in-memory index and its wake-up, owned jointly by the queue and the writer's effects.
struct Shared {
    state: Mutex<State>,
    /// Woken when a task becomes due now (enqueue, nack with no delay, release).
    ready: Notify,
    /// Long polls waiting for a task's status to change.
    watchers: Watchers,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind, still consistent enough to
        // serve: recover rather than poison every later call.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    enqueued_at: u64,
    not_before: u64,
    size: u64,
    /// `(lease id, lease deadline in ms)` while leased.
    lease: Option<(u64, u64)>,
}

#[derive(Default)]
struct State {
    closed: bool,
    next_seq: u64,
    next_lease_id: u64,
    /// Stored tasks and bytes, pending and dead, including reservations for enqueues in flight.
    stored_tasks: u64,
    stored_bytes: u64,
    pending: BTreeMap<u64, Meta>,
    /// Due order: `(not_before, seq)` of pending tasks not leased.
    ready: BTreeSet<(u64, u64)>,
    /// Lease expiry order: `(deadline, seq)`.
    leased: BTreeSet<(u64, u64)>,
    dead: u64,
    dead_bytes: u64,
}

impl State {
    /// Returns expired leases to the due set.
    fn expire_leases(&mut self, now: u64) {
        while let Some(&(deadline, seq)) = self.leased.first() {
            if deadline > now {
                break;
            }
            self.leased.pop_first();
            if let Some(meta) = self.pending.get_mut(&seq) {
                meta.lease = None;
                self.ready.insert((meta.not_before, seq));
            }
        }
    }

    fn unlease(&mut self, seq: u64, lease_id: u64) -> Option<Meta> {
        let meta = self.pending.get_mut(&seq)?;
        match meta.lease {
            Some((id, deadline)) if id == lease_id => {
                meta.lease = None;
                self.leased.remove(&(deadline, seq));
                Some(*meta)
            }
            _ => None,
        }
    }

    fn make_due(&mut self, seq: u64, not_before: u64) {
        if let Some(meta) = self.pending.get_mut(&seq) {
            meta.not_before = not_before;
            if meta.lease.is_none() {
                self.ready.insert((not_before, seq));
            }
        }
    }

    fn forget(&mut self, seq: u64) -> Option<Meta> {
        let meta = self.pending.remove(&seq)?;
        self.ready.remove(&(meta.not_before, seq));
        if let Some((_, deadline)) = meta.lease {
            self.leased.remove(&(deadline, seq));
        }
        self.stored_tasks = self.stored_tasks.saturating_sub(1);
        self.stored_bytes = self.stored_bytes.saturating_sub(meta.size);
        Some(meta)
    }
}

impl EmbeddedQueue {
    /// Opens or creates the queue in `opts.path`, rebuilding the index from the file. Tasks that
    /// were leased when the previous process stopped are due again.
    pub async fn open(opts: EmbeddedOptions) -> Result<Self, QueueError> {
        let path = opts.path.clone();
        let limits = opts.status;
        let opened = tokio::task::spawn_blocking(move || Store::open(&path, limits))
            .await
            .map_err(|e| QueueError::storage("open task", e))??;
        Self::with_store(opts, opened)
    }

    fn with_store(
        opts: EmbeddedOptions,
        (store, loaded): (Store, store::Loaded),
    ) -> Result<Self, QueueError> {
        let mut state = State::default();
        let now = Clock::system().now_ms();
        for (seq, bytes) in loaded.pending {
            // A row this version cannot read (a newer one wrote it before a rollback) must not
            // keep the gateway from starting: it stays for a version that can, counted, and is
            // logged when it comes up for delivery (`load_leases`) while the others go out.
            let (enqueued_at, not_before) = match Task::decode(&bytes) {
                Ok(task) => (task.enqueued_at, task.not_before),
                Err(e) => {
                    tracing::error!(seq, error = %e, "undecodable task in embedded queue; kept, not delivered");
                    (now, 0)
                }
            };
            let size = bytes.len() as u64;
            state.pending.insert(
                seq,
                Meta {
                    enqueued_at,
                    not_before,
                    size,
                    lease: None,
                },
            );
            state.ready.insert((not_before, seq));
            state.stored_tasks += 1;
            state.stored_bytes += size;
            state.next_seq = state.next_seq.max(seq + 1);
        }
        for (_, seq, size) in loaded.dead {
            state.dead += 1;
            state.dead_bytes += size as u64;
            state.stored_tasks += 1;
            state.stored_bytes += size as u64;
            state.next_seq = state.next_seq.max(seq + 1);
        }
        tracing::info!(
            path = %opts.path.display(),
            pending = state.pending.len(),
            dead = state.dead,
            "embedded queue opened"
        );
        Ok(EmbeddedQueue {
            store,
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                ready: Notify::new(),
                watchers: Watchers::default(),
            }),
            clock: Clock::system(),
            opts,
        })
    }

    /// Durable commits made since open. Concurrent enqueues share commits (group commit), so
    /// this grows slower than the number of writes under load.
    pub fn commits(&self) -> u64 {
        self.store.commits()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state()
    }

    async fn enqueue_inner(&self, mut task: Task) -> Result<(), QueueError> {
        let now = self.clock.now_ms();
        if task.enqueued_at == 0 {
            task.enqueued_at = now;
        }
        let bytes = task.validate(self.opts.max_task_bytes)?;
        let size = bytes.len() as u64;
        let seq = {
            let mut st = self.state();
            if st.closed {
                return Err(QueueError::Closed);
            }
            if st.stored_tasks + 1 > self.opts.max_tasks {
                return Err(self.full(format!("max_tasks = {} reached", self.opts.max_tasks)));
            }
            if st.stored_bytes + size > self.opts.max_bytes {
                return Err(self.full(format!("max_bytes = {} reached", self.opts.max_bytes)));
            }
            st.stored_tasks += 1;
            st.stored_bytes += size;
            let seq = st.next_seq;
            st.next_seq += 1;
            seq
        };
        let id = task.id.clone();
        // From here the reservation belongs to the writer: it either makes the task due or
        // gives the reservation back, even if this future is dropped meanwhile.
        let meta = Meta {
            enqueued_at: task.enqueued_at,
            not_before: task.not_before,
            size,
            lease: None,
        };
        let shared = Arc::clone(&self.shared);
        let status = self.change(&task, Status::Queued, None);
        let committed =
            self.store
                .write_status(Op::Put { seq, bytes }, Some(status), move |outcome| {
                    let mut st = shared.state();
                    if outcome.is_ok() {
                        st.pending.insert(seq, meta);
                        st.ready.insert((meta.not_before, seq));
                        drop(st);
                        shared.ready.notify_waiters();
                        shared.watchers.notify(&id);
                    } else {
                        st.stored_tasks = st.stored_tasks.saturating_sub(1);
                        st.stored_bytes = st.stored_bytes.saturating_sub(size);
                    }
                });
        match committed.await {
            Ok(_) => Ok(()),
            Err(e) => {
                // A full disk is a full queue to the client: 503 + Retry-After, not a 500.
                if disk_full(&e) {
                    return Err(self.full(format!("disk full at {}", self.opts.path.display())));
                }
                Err(e)
            }
        }
    }

    /// `task` entering `status` now.
    fn change(
        &self,
        task: &Task,
        status: Status,
        outcome: Option<crate::status::Outcome>,
    ) -> Change {
        Change::of(
            task,
            status,
            outcome,
            self.clock.now_ms(),
            &self.opts.status,
        )
    }

    /// Records a status with no other write (a delivery starting, a lease given back), if the
    /// task is still pending. Not awaited: the op is queued now and shares the next commit;
    /// its effect wakes the task's long polls.
    fn touch(&self, seq: u64, change: Change) {
        let shared = Arc::clone(&self.shared);
        let id = change.task_id.clone();
        let write = self
            .store
            .write_status(Op::Touch { seq }, Some(change), move |outcome| {
                if outcome == Ok(true) {
                    shared.watchers.notify(&id);
                }
            });
        drop(write);
    }

    /// The stored status of `id`, `None` if unknown or expired.
    fn status_inner(&self, id: &str) -> Result<Option<TaskStatus>, QueueError> {
        if crate::task::check_id("task id", id).is_err() {
            return Ok(None);
        }
        let now = self.clock.now_ms();
        Ok(self.store.read_status(id)?.filter(|s| !s.expired(now)))
    }

    fn full(&self, reason: String) -> QueueError {
        QueueError::Full {
            reason,
            retry_after: self.opts.retry_after,
        }
    }

    /// Picks due tasks and marks them leased; returns them with the time the next task is due.
    fn pick(&self, max: usize) -> (Vec<(u64, u64)>, Option<u64>) {
        let now = self.clock.now_ms();
        let lease_ms = u64::try_from(self.opts.lease_timeout.as_millis()).unwrap_or(u64::MAX);
        let mut st = self.state();
        st.expire_leases(now);
        let mut picked = Vec::new();
        while picked.len() < max {
            let Some(&(not_before, seq)) = st.ready.first() else {
                break;
            };
            if not_before > now {
                break;
            }
            st.ready.pop_first();
            let lease_id = st.next_lease_id;
            st.next_lease_id += 1;
            let deadline = now.saturating_add(lease_ms);
            if let Some(meta) = st.pending.get_mut(&seq) {
                meta.lease = Some((lease_id, deadline));
                st.leased.insert((deadline, seq));
                picked.push((seq, lease_id));
            }
        }
        let next_due = st.ready.first().map(|&(nb, _)| nb);
        let next_expiry = st.leased.first().map(|&(d, _)| d);
        let next = match (next_due, next_expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        (picked, next)
    }

    async fn lease_inner(&self, max: usize, wait: Duration) -> Result<Vec<Lease>, QueueError> {
        let max = max.max(1);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.shared.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.state().closed {
                return Err(QueueError::Closed);
            }
            let (picked, next) = self.pick(max);
            if !picked.is_empty() {
                return self.load_leases(picked);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let mut until = deadline;
            if let Some(next_ms) = next {
                let in_ms = next_ms.saturating_sub(self.clock.now_ms());
                until = until.min(now + Duration::from_millis(in_ms));
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    /// Reads the leased tasks' bytes (a page-cache read, inline: it is short and has no await,
    /// so a cancelled `lease` cannot strand leases).
    fn load_leases(&self, picked: Vec<(u64, u64)>) -> Result<Vec<Lease>, QueueError> {
        let seqs: Vec<u64> = picked.iter().map(|(s, _)| *s).collect();
        let rows = match self.store.read_pending(&seqs) {
            Ok(rows) => rows,
            Err(e) => {
                let mut st = self.state();
                for (seq, lease_id) in &picked {
                    if let Some(meta) = st.unlease(*seq, *lease_id) {
                        st.make_due(*seq, meta.not_before);
                    }
                }
                return Err(e);
            }
        };
        let mut leases = Vec::with_capacity(picked.len());
        for ((seq, lease_id), row) in picked.into_iter().zip(rows) {
            let Some(bytes) = row else {
                // Acked between pick and read: nothing to deliver.
                continue;
            };
            match Task::decode(&bytes) {
                Ok(task) => {
                    self.touch(seq, self.change(&task, Status::Delivering, None));
                    leases.push(Lease {
                        task,
                        outcome: None,
                        token: LeaseToken::Embedded { seq, lease_id },
                    })
                }
                Err(e) => {
                    // Unreadable rows cannot be delivered; keep them visible rather than loop.
                    tracing::error!(seq, error = %e, "undecodable task in embedded queue");
                }
            }
        }
        Ok(leases)
    }

    fn stats_inner(&self) -> QueueStats {
        let now = self.clock.now_ms();
        let mut st = self.state();
        st.expire_leases(now);
        // Sequence order is accept order (a replay gets a new sequence and a new accept time).
        let oldest = st.pending.first_key_value().map(|(_, m)| m.enqueued_at);
        QueueStats {
            backend: Backend::Embedded.as_str().into(),
            depth: st.pending.len() as u64,
            oldest_age_ms: oldest.map(|t| now.saturating_sub(t)),
            in_flight: st.leased.len() as u64,
            dead: st.dead,
            bytes: Some(st.stored_bytes),
        }
    }
}

/// Whether a storage error is ENOSPC ("No space left on device", os error 28).
fn disk_full(e: &QueueError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        let text = err.to_string();
        if text.contains("os error 28") || text.contains("No space left on device") {
            return true;
        }
        source = err.source();
    }
    false
}

impl Queue for EmbeddedQueue {
    fn backend(&self) -> Backend {
        Backend::Embedded
    }

    fn enqueue(&self, task: Task) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(self.enqueue_inner(task))
    }

    fn lease(&self, max: usize, wait: Duration) -> BoxFuture<'_, Result<Vec<Lease>, QueueError>> {
        Box::pin(self.lease_inner(max, wait))
    }

    fn ack(&self, lease: Lease) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(self.ack_inner(lease))
    }

    fn nack(&self, lease: Lease, delay: Duration) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(self.nack_inner(lease, delay))
    }

    fn release(&self, lease: Lease) -> BoxFuture<'_, Result<(), QueueError>> {
        let result = self.release_inner(&lease);
        Box::pin(async move { result })
    }

    fn dead_letter(&self, lease: Lease) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(self.dead_letter_inner(lease))
    }

    fn stats(&self) -> BoxFuture<'_, Result<QueueStats, QueueError>> {
        let stats = self.stats_inner();
        Box::pin(async move { Ok(stats) })
    }

    fn dead_letters(&self, limit: usize) -> BoxFuture<'_, Result<Vec<Task>, QueueError>> {
        let listed = self.dead_letters_inner(limit);
        Box::pin(async move { listed })
    }

    fn dead_letter_get<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Task>, QueueError>> {
        let found = self.dead_letter_get_inner(id);
        Box::pin(async move { found })
    }

    fn replay<'a>(&'a self, which: &'a Selection) -> BoxFuture<'a, Result<u64, QueueError>> {
        Box::pin(self.replay_inner(which))
    }

    fn purge<'a>(&'a self, which: &'a Selection) -> BoxFuture<'a, Result<u64, QueueError>> {
        Box::pin(self.purge_inner(which))
    }

    fn close(&self) -> BoxFuture<'_, Result<(), QueueError>> {
        self.state().closed = true;
        self.shared.ready.notify_waiters();
        Box::pin(async { Ok(()) })
    }

    fn task_status<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<TaskStatus>, QueueError>> {
        let status = self.status_inner(id);
        Box::pin(async move { status })
    }

    fn wait_status<'a>(
        &'a self,
        id: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Option<TaskStatus>, QueueError>> {
        Box::pin(crate::status::long_poll(
            &self.shared.watchers,
            id,
            wait,
            move || self.status_inner(id),
        ))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod cancel_tests;

#[cfg(test)]
mod status_tests;

#[cfg(test)]
mod hook_tests;
