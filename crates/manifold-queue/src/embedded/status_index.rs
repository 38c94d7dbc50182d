//! The index of finished statuses the writer keeps beside the file, to drop expired ones and
//! stay within `max_statuses` / `max_status_bytes` (oldest first).

use std::collections::{BTreeSet, HashMap};

use redb::{Database, ReadableDatabase, ReadableTable};

use super::store::STATUS;
use crate::error::QueueError;
use crate::status::{StatusLimits, TaskStatus};

/// Finished statuses by expiry, for the writer to drop expired ones and keep within
/// `max_statuses` / `max_status_bytes` (oldest first). Unfinished statuses are bounded by the
/// queue's own `max_tasks`: one per pending task.
pub(crate) struct StatusIndex {
    pub(super) limits: StatusLimits,
    by_expiry: BTreeSet<(u64, String)>,
    entries: HashMap<String, (u64, u64)>,
    bytes: u64,
}

impl StatusIndex {
    pub(crate) fn new(limits: StatusLimits) -> Self {
        StatusIndex {
            limits,
            by_expiry: BTreeSet::new(),
            entries: HashMap::new(),
            bytes: 0,
        }
    }

    /// Records that `id`'s stored status now expires at `expires` (None: unfinished) and takes
    /// `size` bytes.
    pub(crate) fn set(&mut self, id: &str, expires: Option<u64>, size: u64) {
        self.remove(id);
        if let Some(at) = expires {
            self.by_expiry.insert((at, id.to_owned()));
            self.entries.insert(id.to_owned(), (at, size));
            self.bytes += size;
        }
    }

    pub(crate) fn remove(&mut self, id: &str) {
        if let Some((at, size)) = self.entries.remove(id) {
            self.by_expiry.remove(&(at, id.to_owned()));
            self.bytes = self.bytes.saturating_sub(size);
        }
    }

    /// The next status to drop at `now`: expired, or the oldest while over a bound.
    pub(crate) fn next_victim(&self, now: u64) -> Option<String> {
        let (at, id) = self.by_expiry.first()?;
        let over = self.entries.len() as u64 > self.limits.max_statuses
            || self.bytes > self.limits.max_status_bytes;
        (*at <= now || over).then(|| id.clone())
    }
}

/// The finished statuses of the file, indexed anew (after a reopen).
pub(crate) fn status_index(db: &Database, limits: StatusLimits) -> Result<StatusIndex, QueueError> {
    let txn = db
        .begin_read()
        .map_err(|e| QueueError::storage("begin read", e))?;
    let table = txn
        .open_table(STATUS)
        .map_err(|e| QueueError::storage("open status table", e))?;
    let mut index = StatusIndex::new(limits);
    for row in table
        .iter()
        .map_err(|e| QueueError::storage("scan statuses", e))?
    {
        let (k, v) = row.map_err(|e| QueueError::storage("scan statuses", e))?;
        if let Some(s) = TaskStatus::decode(v.value()) {
            index.set(k.value(), s.expires_at, v.value().len() as u64);
        }
    }
    Ok(index)
}
