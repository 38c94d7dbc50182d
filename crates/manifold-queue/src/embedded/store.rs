//! The redb file and its single writer thread, which turns many concurrent writes into one
//! `Durability::Immediate` commit (group commit).
//!
//! Every write goes through the writer's channel. The writer takes the first waiting op, then
//! everything else that arrived meanwhile (up to [`MAX_BATCH`]), applies them in one transaction
//! and commits once: N concurrent enqueues cost one fsync, and no op waits for a timer.
//!
//! Each op carries its [`Effect`]: the in-memory bookkeeping that follows from its outcome, run
//! by the writer thread right after the commit. A caller's future may be dropped at any await
//! (the gateway cancels calls at the deadline or when the client goes away); because the op is
//! handed over together with what must follow it, a committed op is always accounted for.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::handle::{Handle, Opener};
pub(crate) use super::status_index::{status_index, StatusIndex};
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::error::QueueError;
use crate::status::{Change, State, StatusLimits, TaskStatus};

/// Tasks not yet delivered: sequence number → encoded task.
pub(super) const PENDING: TableDefinition<u64, &[u8]> = TableDefinition::new("pending");
/// Dead letters: (task id, sequence number) → encoded task with its last error.
pub(super) const DEAD: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("dead");

/// Task statuses: task id → encoded [`TaskStatus`]. Written in the same transaction as the
/// task's own transition, so what a client reads never runs ahead of (or behind) the queue.
pub(crate) const STATUS: TableDefinition<&str, &[u8]> = TableDefinition::new("status");

/// Most expired or surplus statuses removed per commit: bounds the extra work one commit does.
pub(crate) const MAX_EVICT: usize = 4096;

/// Most ops in one commit: bounds one transaction's memory and latency.
const MAX_BATCH: usize = 8192;

/// One write, answered after the commit that contains it.
pub(super) enum Op {
    /// Insert a new pending task.
    Put { seq: u64, bytes: Vec<u8> },
    /// Overwrite a pending task if it is still there (a nack racing an ack after its lease
    /// expired must not bring a delivered task back). Answers whether it existed.
    Replace { seq: u64, bytes: Vec<u8> },
    /// Remove a pending task (delivered). Answers whether it existed.
    Delete { seq: u64 },
    /// Move a pending task to the dead letters with new bytes (its last error). Answers whether
    /// the pending task existed (if not, nothing is written).
    Bury {
        seq: u64,
        id: String,
        bytes: Vec<u8>,
    },
    /// Move a dead letter back to pending under a new sequence number. Answers whether the dead
    /// letter still existed.
    Resurrect {
        id: String,
        dead_seq: u64,
        seq: u64,
        bytes: Vec<u8>,
    },
    /// Delete one dead letter. Answers whether it existed.
    Purge { id: String, dead_seq: u64 },
    /// Write nothing but the status, if the pending task is still there (a lease starting a
    /// delivery). Answers whether it existed.
    Touch { seq: u64 },
}

/// A task written in the same transaction as an op that settles another (a completion hook),
/// only if that op found its row: the hook exists exactly when its parent's settlement does.
pub(super) struct FollowUp {
    pub(super) seq: u64,
    pub(super) bytes: Vec<u8>,
    /// Its `queued` status.
    pub(super) status: Change,
}

/// What an op reports after its commit: did the row it acted on exist.
pub(super) type Reply = oneshot::Sender<Result<bool, String>>;

/// What follows from an op's outcome in memory: `Ok(existed)` after its commit, `Err(reason)`
/// if it was not committed. Runs exactly once, on the writer thread (or on the caller's thread
/// when the writer is gone), before the caller hears the outcome, whether or not it still waits.
pub(super) type Effect = Box<dyn FnOnce(Result<bool, &str>) + Send>;

/// One queued write: the op, the status change that goes with it (applied in the same
/// transaction, only if the op found its row), its effect and the caller's answer.
struct Write {
    op: Op,
    status: Option<Change>,
    then: Option<FollowUp>,
    effect: Effect,
    reply: Reply,
}

/// The open database plus the writer thread's inbox.
pub(super) struct Store {
    pub(super) db: Arc<Handle>,
    commits: Arc<AtomicU64>,
    tx: Option<mpsc::UnboundedSender<Write>>,
    writer: Option<JoinHandle<()>>,
}

/// Rows found at open, to rebuild the in-memory index.
pub(super) struct Loaded {
    pub(super) pending: Vec<(u64, Vec<u8>)>,
    pub(super) dead: Vec<(String, u64, usize)>,
}

impl Store {
    /// Opens (or creates) `dir/queue.redb` and starts the writer thread.
    pub(super) fn open(dir: &Path, limits: StatusLimits) -> Result<(Self, Loaded), QueueError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| QueueError::storage("create queue directory", e))?;
        let file = dir.join("queue.redb");
        Self::open_with(Box::new(move || Database::create(&file)), limits)
    }

    /// [`Store::open`] with the file opened by `open` (tests: a disk that fills up).
    pub(super) fn open_with(
        open: Opener,
        limits: StatusLimits,
    ) -> Result<(Self, Loaded), QueueError> {
        let db = Arc::new(Handle::open("queue.redb", open)?);
        let (loaded, index) = {
            let file = db.get()?;
            load(&file, limits)?
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let writer_db = Arc::clone(&db);
        let commits = Arc::new(AtomicU64::new(0));
        let writer_commits = Arc::clone(&commits);
        let writer = std::thread::Builder::new()
            .name("manifold-queue-writer".into())
            .spawn(move || writer_loop(&writer_db, rx, &writer_commits, index))
            .map_err(|e| QueueError::storage("start writer thread", e))?;
        Ok((
            Store {
                db,
                commits,
                tx: Some(tx),
                writer: Some(writer),
            },
            loaded,
        ))
    }

    /// Durable commits made so far (each holds one or more ops).
    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Queues `op` for the next commit, with the `effect` its outcome has in memory, and returns
    /// a future that waits until it is durable.
    ///
    /// Not an `async fn` on purpose: the op is handed to the writer now, when this is called, so
    /// dropping the returned future (cancelling the caller) never separates a commit from its
    /// effect. Dropping it only loses the answer.
    pub(super) fn write(
        &self,
        op: Op,
        effect: impl FnOnce(Result<bool, &str>) + Send + 'static,
    ) -> impl std::future::Future<Output = Result<bool, QueueError>> + Send + 'static {
        self.write_status(op, None, effect)
    }

    /// [`Store::write`] with a status change committed in the same transaction (when the op
    /// finds its row).
    pub(super) fn write_status(
        &self,
        op: Op,
        status: Option<Change>,
        effect: impl FnOnce(Result<bool, &str>) + Send + 'static,
    ) -> impl std::future::Future<Output = Result<bool, QueueError>> + Send + 'static {
        self.write_settle(op, status, None, effect)
    }

    /// [`Store::write_status`] that also inserts `then` (a hook task and its status) in the same
    /// transaction, when the op finds its row.
    pub(super) fn write_settle(
        &self,
        op: Op,
        status: Option<Change>,
        then: Option<FollowUp>,
        effect: impl FnOnce(Result<bool, &str>) + Send + 'static,
    ) -> impl std::future::Future<Output = Result<bool, QueueError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let write = Write {
            op,
            status,
            then,
            effect: Box::new(effect),
            reply,
        };
        let refused = match self.tx.as_ref() {
            Some(tx) => tx.send(write).err().map(|e| e.0),
            None => Some(write),
        };
        if let Some(write) = refused {
            // The writer is gone: nothing was committed, and the effect says so.
            (write.effect)(Err("queue writer stopped"));
        }
        async move {
            match rx.await {
                Ok(Ok(existed)) => Ok(existed),
                Ok(Err(message)) => Err(QueueError::storage("commit", StoreFailure(message))),
                Err(_) => Err(QueueError::Closed),
            }
        }
    }

    /// Reads pending tasks by sequence number (a missing one yields `None`).
    pub(super) fn read_pending(&self, seqs: &[u64]) -> Result<Vec<Option<Vec<u8>>>, QueueError> {
        let db = self.db.get()?;
        let txn = db
            .begin_read()
            .map_err(|e| QueueError::storage("begin read", e))?;
        let table = txn
            .open_table(PENDING)
            .map_err(|e| QueueError::storage("open pending table", e))?;
        seqs.iter()
            .map(|seq| {
                table
                    .get(*seq)
                    .map(|g| g.map(|v| v.value().to_vec()))
                    .map_err(|e| QueueError::storage("read pending task", e))
            })
            .collect()
    }

    /// The stored status of task `id`, expired or not.
    pub(super) fn read_status(&self, id: &str) -> Result<Option<TaskStatus>, QueueError> {
        let db = self.db.get()?;
        let txn = db
            .begin_read()
            .map_err(|e| QueueError::storage("begin read", e))?;
        let table = txn
            .open_table(STATUS)
            .map_err(|e| QueueError::storage("open status table", e))?;
        let row = table
            .get(id)
            .map_err(|e| QueueError::storage("read status", e))?;
        Ok(row.and_then(|v| TaskStatus::decode(v.value())))
    }

    /// Dead letters in key order (id, then sequence), up to `limit`, optionally for one id.
    pub(super) fn read_dead(
        &self,
        id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, u64, Vec<u8>)>, QueueError> {
        let db = self.db.get()?;
        let txn = db
            .begin_read()
            .map_err(|e| QueueError::storage("begin read", e))?;
        let table = txn
            .open_table(DEAD)
            .map_err(|e| QueueError::storage("open dead table", e))?;
        let rows = match id {
            Some(id) => table.range((id, 0)..=(id, u64::MAX)),
            None => table.iter(),
        }
        .map_err(|e| QueueError::storage("scan dead letters", e))?;
        let mut out = Vec::new();
        for row in rows.take(limit) {
            let (k, v) = row.map_err(|e| QueueError::storage("scan dead letters", e))?;
            let (id, seq) = k.value();
            out.push((id.to_owned(), seq, v.value().to_vec()));
        }
        Ok(out)
    }

    /// The `limit` oldest dead letters (lowest sequence numbers first).
    pub(super) fn read_dead_oldest(&self, limit: usize) -> Result<Vec<Vec<u8>>, QueueError> {
        let db = self.db.get()?;
        let txn = db
            .begin_read()
            .map_err(|e| QueueError::storage("begin read", e))?;
        let table = txn
            .open_table(DEAD)
            .map_err(|e| QueueError::storage("open dead table", e))?;
        let mut keys = Vec::new();
        for row in table
            .iter()
            .map_err(|e| QueueError::storage("scan dead letters", e))?
        {
            let (k, _) = row.map_err(|e| QueueError::storage("scan dead letters", e))?;
            let (id, seq) = k.value();
            keys.push((seq, id.to_owned()));
        }
        keys.sort_unstable();
        let mut out = Vec::new();
        for (seq, id) in keys.into_iter().take(limit) {
            if let Some(v) = table
                .get((id.as_str(), seq))
                .map_err(|e| QueueError::storage("read dead letter", e))?
            {
                out.push(v.value().to_vec());
            }
        }
        Ok(out)
    }

    /// Stops the writer after it has committed everything already sent, and waits for it.
    pub(super) fn shutdown(&mut self) {
        self.tx = None;
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("queue writer thread panicked");
            }
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A commit failure, shared as text with every op of the failed batch.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct StoreFailure(String);

fn load(db: &Database, limits: StatusLimits) -> Result<(Loaded, StatusIndex), QueueError> {
    // Create the tables so readers never meet a missing table; a status left `delivering` by
    // a process that died mid-delivery becomes `retrying` (its task is due again).
    let txn = db
        .begin_write()
        .map_err(|e| QueueError::storage("begin write", e))?;
    let mut index = StatusIndex::new(limits);
    {
        txn.open_table(PENDING)
            .map_err(|e| QueueError::storage("create pending table", e))?;
        txn.open_table(DEAD)
            .map_err(|e| QueueError::storage("create dead table", e))?;
        let mut status = txn
            .open_table(STATUS)
            .map_err(|e| QueueError::storage("create status table", e))?;
        let mut interrupted = Vec::new();
        for row in status
            .iter()
            .map_err(|e| QueueError::storage("scan statuses", e))?
        {
            let (k, v) = row.map_err(|e| QueueError::storage("scan statuses", e))?;
            let Some(s) = TaskStatus::decode(v.value()) else {
                continue;
            };
            if s.status == State::Delivering {
                interrupted.push(s);
            } else {
                index.set(k.value(), s.expires_at, v.value().len() as u64);
            }
        }
        let now = Clock::system().now_ms();
        for s in interrupted {
            let key = s.task_id.clone();
            let change = Change {
                task_id: s.task_id.clone(),
                status: State::Retrying,
                attempts: s.attempts,
                last_error: Some("the gateway stopped during a delivery attempt".into()),
                at: now,
                auth: None,
                outcome: None,
                expires_at: None,
                max_result_bytes: limits.max_result_bytes,
                hook: None,
                hook_of: None,
            };
            let bytes = change.apply(Some(s)).encode();
            status
                .insert(key.as_str(), bytes.as_slice())
                .map_err(|e| QueueError::storage("update status", e))?;
        }
    }
    txn.commit()
        .map_err(|e| QueueError::storage("create tables", e))?;

    let txn = db
        .begin_read()
        .map_err(|e| QueueError::storage("begin read", e))?;
    let pending_table = txn
        .open_table(PENDING)
        .map_err(|e| QueueError::storage("open pending table", e))?;
    let mut pending = Vec::new();
    for row in pending_table
        .iter()
        .map_err(|e| QueueError::storage("scan pending", e))?
    {
        let (k, v) = row.map_err(|e| QueueError::storage("scan pending", e))?;
        pending.push((k.value(), v.value().to_vec()));
    }
    let dead_table = txn
        .open_table(DEAD)
        .map_err(|e| QueueError::storage("open dead table", e))?;
    let mut dead = Vec::new();
    for row in dead_table
        .iter()
        .map_err(|e| QueueError::storage("scan dead letters", e))?
    {
        let (k, v) = row.map_err(|e| QueueError::storage("scan dead letters", e))?;
        let (id, seq) = k.value();
        dead.push((id.to_owned(), seq, v.value().len()));
    }
    Ok((Loaded { pending, dead }, index))
}

fn writer_loop(
    db: &Handle,
    mut rx: mpsc::UnboundedReceiver<Write>,
    commits: &AtomicU64,
    mut index: StatusIndex,
) {
    let clock = Clock::system();
    let mut batch: Vec<Write> = Vec::new();
    // After a failed commit redb fails every later one until reopened (see `handle`).
    let mut reopen = false;
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let current = if std::mem::take(&mut reopen) {
            db.reopen().and_then(|db| {
                // The failed commit's status changes were applied to the index: start afresh.
                index = status_index(&db, index.limits).map_err(|e| e.to_string())?;
                Ok(db)
            })
        } else {
            db.get().map_err(|e| e.to_string())
        };
        let applied =
            current.and_then(|current| apply(&current, &mut batch, &mut index, clock.now_ms()));
        reopen = applied.is_err();
        match applied {
            Ok(results) => {
                commits.fetch_add(1, Ordering::Relaxed);
                for (write, existed) in batch.drain(..).zip(results) {
                    (write.effect)(Ok(existed));
                    let _ = write.reply.send(Ok(existed));
                }
            }
            Err(message) => {
                tracing::error!(error = %message, ops = batch.len(), "queue commit failed");
                for write in batch.drain(..) {
                    (write.effect)(Err(message.as_str()));
                    let _ = write.reply.send(Err(message.clone()));
                }
            }
        }
    }
}

/// Applies `change` to the stored status of its task.
fn put_status(
    statuses: &mut redb::Table<'_, &str, &[u8]>,
    index: &mut StatusIndex,
    change: Change,
) -> Result<(), String> {
    let id = change.task_id.clone();
    let prev = statuses
        .get(id.as_str())
        .map_err(|e| e.to_string())?
        .and_then(|v| TaskStatus::decode(v.value()));
    let next = change.apply(prev);
    let bytes = next.encode();
    statuses
        .insert(id.as_str(), bytes.as_slice())
        .map_err(|e| e.to_string())?;
    index.set(&id, next.expires_at, bytes.len() as u64);
    Ok(())
}

/// Applies a batch in one transaction and commits it durably: the ops, the status changes of
/// those that found their rows, and the removal of expired or surplus finished statuses.
fn apply(
    db: &Database,
    batch: &mut [Write],
    index: &mut StatusIndex,
    now: u64,
) -> Result<Vec<bool>, String> {
    let mut txn = db.begin_write().map_err(|e| e.to_string())?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| e.to_string())?;
    let mut results = Vec::with_capacity(batch.len());
    {
        let mut pending = txn.open_table(PENDING).map_err(|e| e.to_string())?;
        let mut dead = txn.open_table(DEAD).map_err(|e| e.to_string())?;
        let mut statuses = txn.open_table(STATUS).map_err(|e| e.to_string())?;
        for Write {
            op, status, then, ..
        } in batch.iter_mut()
        {
            let existed = match op {
                Op::Put { seq, bytes } => {
                    pending
                        .insert(*seq, bytes.as_slice())
                        .map_err(|e| e.to_string())?;
                    true
                }
                Op::Replace { seq, bytes } => {
                    let existed = pending.get(*seq).map_err(|e| e.to_string())?.is_some();
                    if existed {
                        pending
                            .insert(*seq, bytes.as_slice())
                            .map_err(|e| e.to_string())?;
                    }
                    existed
                }
                Op::Delete { seq } => pending.remove(*seq).map_err(|e| e.to_string())?.is_some(),
                Op::Bury { seq, id, bytes } => {
                    let existed = pending.remove(*seq).map_err(|e| e.to_string())?.is_some();
                    if existed {
                        dead.insert((id.as_str(), *seq), bytes.as_slice())
                            .map_err(|e| e.to_string())?;
                    }
                    existed
                }
                Op::Resurrect {
                    id,
                    dead_seq,
                    seq,
                    bytes,
                } => {
                    let existed = dead
                        .remove((id.as_str(), *dead_seq))
                        .map_err(|e| e.to_string())?
                        .is_some();
                    if existed {
                        pending
                            .insert(*seq, bytes.as_slice())
                            .map_err(|e| e.to_string())?;
                    }
                    existed
                }
                Op::Purge { id, dead_seq } => dead
                    .remove((id.as_str(), *dead_seq))
                    .map_err(|e| e.to_string())?
                    .is_some(),
                Op::Touch { seq } => pending.get(*seq).map_err(|e| e.to_string())?.is_some(),
            };
            if let (true, Some(change)) = (existed, status.take()) {
                put_status(&mut statuses, index, change)?;
            }
            if let (true, Some(hook)) = (existed, then.take()) {
                pending
                    .insert(hook.seq, hook.bytes.as_slice())
                    .map_err(|e| e.to_string())?;
                put_status(&mut statuses, index, hook.status)?;
            }
            results.push(existed);
        }
        for _ in 0..MAX_EVICT {
            let Some(id) = index.next_victim(now) else {
                break;
            };
            statuses.remove(id.as_str()).map_err(|e| e.to_string())?;
            index.remove(&id);
        }
    }
    txn.commit().map_err(|e| e.to_string())?;
    Ok(results)
}
