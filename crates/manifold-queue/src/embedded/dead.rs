//! The dead letters of the embedded queue: listing them, replaying them (back to pending with a
//! fresh life) and purging them.

use std::sync::Arc;

use super::store::Op;
use super::{EmbeddedQueue, Meta};
use crate::error::QueueError;
use crate::queue::Selection;
use crate::status::State as Status;
use crate::task::Task;

/// Dead letters moved or deleted per round of replay / purge.
const CHUNK: usize = 512;

impl EmbeddedQueue {
    pub(super) fn dead_rows(
        &self,
        which: &Selection,
        limit: usize,
    ) -> Result<Vec<(String, u64, Vec<u8>)>, QueueError> {
        match which {
            Selection::All => self.store.read_dead(None, limit),
            Selection::Id(id) => self.store.read_dead(Some(id), limit),
        }
    }

    /// The oldest `limit` dead letters. A row this version cannot decode (written by a newer
    /// one) is left where it is and skipped, as the brokers' listings do: one must not hide
    /// every other dead letter.
    pub(super) fn dead_letters_inner(&self, limit: usize) -> Result<Vec<Task>, QueueError> {
        Ok(self
            .store
            .read_dead_oldest(limit)?
            .iter()
            .filter_map(|bytes| match Task::decode(bytes) {
                Ok(task) => Some(task),
                Err(e) => {
                    tracing::warn!(error = %e, "embedded: a dead letter this version cannot read was skipped");
                    None
                }
            })
            .collect())
    }

    /// The dead letter `id`, if there is one (one this version cannot decode is an error: it
    /// was asked for by name).
    pub(super) fn dead_letter_get_inner(&self, id: &str) -> Result<Option<Task>, QueueError> {
        let rows = self.store.read_dead(Some(id), 1)?;
        rows.into_iter()
            .next()
            .map(|(_, _, bytes)| Task::decode(&bytes))
            .transpose()
    }

    /// Moves dead letters back, a chunk at a time; the writes of a chunk share commits.
    pub(super) async fn replay_inner(&self, which: &Selection) -> Result<u64, QueueError> {
        let mut moved = 0;
        loop {
            let rows = self.dead_rows(which, CHUNK)?;
            if rows.is_empty() {
                break;
            }
            let now = self.clock.now_ms();
            let mut writes = Vec::with_capacity(rows.len());
            for (id, dead_seq, bytes) in rows {
                // One this version cannot decode stays a dead letter, skipped: the others are
                // replayed. (A chunk with nothing replayed ends the loop below, so a chunk of
                // such rows cannot spin it.)
                let mut task = match Task::decode(&bytes) {
                    Ok(task) => task,
                    Err(e) => {
                        tracing::warn!(task = %id, error = %e, "embedded: a dead letter this version cannot read was not replayed");
                        continue;
                    }
                };
                task.attempts = 0;
                task.enqueued_at = now;
                task.not_before = 0;
                let new_bytes = task.encode()?;
                let seq = {
                    let mut st = self.state();
                    let seq = st.next_seq;
                    st.next_seq += 1;
                    seq
                };
                let (old, new) = (bytes.len() as u64, new_bytes.len() as u64);
                let change = self.change(&task, Status::Queued, None);
                let op = Op::Resurrect {
                    id,
                    dead_seq,
                    seq,
                    bytes: new_bytes,
                };
                let shared = Arc::clone(&self.shared);
                let task_id = task.id.clone();
                writes.push(self.store.write_status(op, Some(change), move |outcome| {
                    if outcome != Ok(true) {
                        return;
                    }
                    shared.watchers.notify(&task_id);
                    let mut st = shared.state();
                    st.dead = st.dead.saturating_sub(1);
                    st.dead_bytes = st.dead_bytes.saturating_sub(old);
                    st.stored_bytes = st.stored_bytes.saturating_sub(old) + new;
                    st.pending.insert(
                        seq,
                        Meta {
                            enqueued_at: now,
                            not_before: 0,
                            size: new,
                            lease: None,
                        },
                    );
                    st.ready.insert((0, seq));
                    drop(st);
                    shared.ready.notify_waiters();
                }));
            }
            let mut progressed = false;
            for result in futures::future::join_all(writes).await {
                if !result? {
                    continue;
                }
                progressed = true;
                moved += 1;
            }
            if !progressed {
                break;
            }
        }
        Ok(moved)
    }

    /// Deletes dead letters a chunk at a time; the writes of a chunk share commits.
    pub(super) async fn purge_inner(&self, which: &Selection) -> Result<u64, QueueError> {
        let mut purged = 0;
        loop {
            let rows = self.dead_rows(which, CHUNK)?;
            if rows.is_empty() {
                break;
            }
            let writes: Vec<_> = rows
                .into_iter()
                .map(|(id, dead_seq, bytes)| {
                    let size = bytes.len() as u64;
                    let shared = Arc::clone(&self.shared);
                    self.store
                        .write(Op::Purge { id, dead_seq }, move |outcome| {
                            if outcome != Ok(true) {
                                return;
                            }
                            let mut st = shared.state();
                            st.dead = st.dead.saturating_sub(1);
                            st.dead_bytes = st.dead_bytes.saturating_sub(size);
                            st.stored_tasks = st.stored_tasks.saturating_sub(1);
                            st.stored_bytes = st.stored_bytes.saturating_sub(size);
                        })
                })
                .collect();
            let mut progressed = false;
            for result in futures::future::join_all(writes).await {
                if !result? {
                    continue;
                }
                progressed = true;
                purged += 1;
            }
            if !progressed {
                break;
            }
        }
        Ok(purged)
    }
}
