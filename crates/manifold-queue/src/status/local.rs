//! Statuses in a local redb file (`status.redb` in `[queue] path`), for a backend without a
//! shared store (RabbitMQ without `[cache] redis`). Only this process sees them: right for one
//! gateway, wrong for several (the gateway warns at start-up).
//!
//! Like `queue.redb`, the file is reached through a [`Handle`]: redb fails every operation after
//! one failed write (a full disk) until reopened, so a failed write reopens it, and statuses
//! move again once space is freed rather than never until a restart.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use redb::{Database, ReadableDatabase, ReadableTable};

use crate::clock::Clock;
use crate::embedded::handle::{Handle, Opener};
use crate::embedded::store::{status_index, StatusIndex, MAX_EVICT, STATUS};
use crate::error::QueueError;
use crate::status::{long_poll, Change, StatusLimits, TaskStatus, Watchers};
use crate::task::check_id;

use super::tracked::StatusStore;

/// The local status file, its bounds and its long-poll wake-ups.
pub struct LocalStatus {
    db: Arc<Handle>,
    limits: StatusLimits,
    /// Held while writing: one writer at a time, and the index follows the file.
    index: Arc<Mutex<StatusIndex>>,
    watchers: Arc<Watchers>,
    clock: Clock,
}

impl LocalStatus {
    /// Opens (or creates) `dir/status.redb`.
    pub fn open(dir: &Path, limits: StatusLimits) -> Result<Self, QueueError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| QueueError::storage("create status directory", e))?;
        let file = dir.join("status.redb");
        Self::open_with(Box::new(move || Database::create(&file)), limits)
    }

    /// [`LocalStatus::open`] on a database `open` makes (tests: a disk that fills up).
    pub(crate) fn open_with(open: Opener, limits: StatusLimits) -> Result<Self, QueueError> {
        let handle = Handle::open("status.redb", open)?;
        let db = handle.get()?;
        let txn = db
            .begin_write()
            .map_err(|e| QueueError::storage("begin write", e))?;
        txn.open_table(STATUS)
            .map_err(|e| QueueError::storage("create status table", e))?;
        txn.commit()
            .map_err(|e| QueueError::storage("create status table", e))?;
        // The same scan a reopen makes: one place reads the finished statuses of a file.
        let index = status_index(&db, limits)?;
        drop(db);
        Ok(LocalStatus {
            db: Arc::new(handle),
            limits,
            index: Arc::new(Mutex::new(index)),
            watchers: Arc::default(),
            clock: Clock::system(),
        })
    }

    fn read(&self, id: &str) -> Result<Option<TaskStatus>, QueueError> {
        if check_id("task id", id).is_err() {
            return Ok(None);
        }
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
        let now = self.clock.now_ms();
        Ok(row
            .and_then(|v| TaskStatus::decode(v.value()))
            .filter(|s| !s.expired(now)))
    }

    /// Writes `change` under the index lock. After a failure the file is reopened (and
    /// indexed anew: the failed write had changed the index); a reopen that failed (the disk
    /// still full) is tried again before the next write.
    fn write(
        db: &Handle,
        index: &Mutex<StatusIndex>,
        limits: StatusLimits,
        change: Change,
        only_new: bool,
        now: u64,
    ) -> Result<(), String> {
        let mut index = index.lock().unwrap_or_else(|p| p.into_inner());
        let file = match db.get() {
            Ok(file) => Ok(file),
            Err(_) => Self::reopen(db, &mut index, limits),
        };
        let written =
            file.and_then(|file| Self::write_to(&file, &mut index, change, only_new, now));
        if written.is_err() {
            if let Err(e) = Self::reopen(db, &mut index, limits) {
                tracing::warn!(error = %e, "status.redb not reopened; trying again at the next write");
            }
        }
        written
    }

    fn reopen(
        db: &Handle,
        index: &mut StatusIndex,
        limits: StatusLimits,
    ) -> Result<Arc<Database>, String> {
        let file = db.reopen()?;
        *index = status_index(&file, limits).map_err(|e| e.to_string())?;
        Ok(file)
    }

    fn write_to(
        db: &Database,
        index: &mut StatusIndex,
        change: Change,
        only_new: bool,
        now: u64,
    ) -> Result<(), String> {
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        {
            let mut table = txn.open_table(STATUS).map_err(|e| e.to_string())?;
            let id = change.task_id.clone();
            let prev = table
                .get(id.as_str())
                .map_err(|e| e.to_string())?
                .and_then(|v| TaskStatus::decode(v.value()));
            if prev.is_some() && only_new {
                return Ok(());
            }
            let next = change.apply(prev);
            let bytes = next.encode();
            table
                .insert(id.as_str(), bytes.as_slice())
                .map_err(|e| e.to_string())?;
            index.set(&id, next.expires_at, bytes.len() as u64);
            for _ in 0..MAX_EVICT {
                let Some(victim) = index.next_victim(now) else {
                    break;
                };
                table.remove(victim.as_str()).map_err(|e| e.to_string())?;
                index.remove(&victim);
            }
        }
        txn.commit().map_err(|e| e.to_string())
    }
}

impl StatusStore for LocalStatus {
    fn record(&self, change: Change, only_new: bool) -> BoxFuture<'_, ()> {
        let (db, index, watchers) = (
            Arc::clone(&self.db),
            Arc::clone(&self.index),
            Arc::clone(&self.watchers),
        );
        let now = self.clock.now_ms();
        let limits = self.limits;
        Box::pin(async move {
            let id = change.task_id.clone();
            let written = tokio::task::spawn_blocking(move || {
                Self::write(&db, &index, limits, change, only_new, now)
            })
            .await;
            match written {
                Ok(Ok(())) => watchers.notify(&id),
                Ok(Err(e)) => tracing::warn!(task = %id, error = %e, "task status not written"),
                Err(e) => tracing::warn!(task = %id, error = %e, "task status writer failed"),
            }
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<TaskStatus>, QueueError>> {
        let status = self.read(id);
        Box::pin(async move { status })
    }

    fn wait<'a>(
        &'a self,
        id: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Option<TaskStatus>, QueueError>> {
        Box::pin(long_poll(&self.watchers, id, wait, move || self.read(id)))
    }
}
