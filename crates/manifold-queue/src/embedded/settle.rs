//! Settling a leased task: ack (with its `done` status and result), nack, release, dead
//! letter — and, for a task that declares completion hooks, enqueueing the hook task in the
//! same redb transaction as the ack or the dead letter, so the hook exists exactly when its
//! parent's settlement does (no crash window, no duplicate from this backend).

use std::sync::Arc;
use std::time::Duration;

use super::store::{FollowUp, Op};
use super::{EmbeddedQueue, Meta, Shared};
use crate::error::QueueError;
use crate::hooks::HookKind;
use crate::queue::{Lease, LeaseToken};
use crate::status::{after_attempt, State as Status};
use crate::task::Task;

/// A hook task with its place reserved in the queue, ready to go into the settling commit.
struct Reserved {
    follow: FollowUp,
    meta: Meta,
    id: String,
}

impl EmbeddedQueue {
    fn token(lease: &Lease) -> Result<(u64, u64), QueueError> {
        match lease.token {
            LeaseToken::Embedded { seq, lease_id } => Ok((seq, lease_id)),
            #[allow(unreachable_patterns)]
            _ => Err(QueueError::Invalid(
                "lease belongs to another queue backend".into(),
            )),
        }
    }

    pub(super) async fn ack_inner(&self, lease: Lease) -> Result<(), QueueError> {
        let (seq, _) = Self::token(&lease)?;
        // Delivered, whoever holds the current lease: remove it durably with its `done` status
        // and result (and its `on_done` hook, if any), then forget it.
        let shared = Arc::clone(&self.shared);
        let hook = self.reserve_hook(crate::hooks::follow_up(
            &lease.task,
            HookKind::OnDone,
            lease.outcome.as_ref(),
        ));
        let hook_id = hook.as_ref().map(|h| h.id.clone());
        let change = self
            .change(&lease.task, Status::Done, lease.outcome)
            .with_hook_id(hook_id, HookKind::OnDone);
        let (then, reserved) = split(hook);
        let id = lease.task.id;
        self.store
            .write_settle(Op::Delete { seq }, Some(change), then, move |outcome| {
                if outcome.is_ok() {
                    shared.state().forget(seq);
                    shared.watchers.notify(&id);
                }
                hook_effect(&shared, reserved, outcome == Ok(true));
            })
            .await?;
        Ok(())
    }

    pub(super) async fn nack_inner(&self, lease: Lease, delay: Duration) -> Result<(), QueueError> {
        let (seq, lease_id) = Self::token(&lease)?;
        if !self.holds(seq, lease_id) {
            // The lease expired and someone else may have the task: leave it to them.
            return Ok(());
        }
        let mut task = lease.task;
        let change = self.change(&task, after_attempt(&task), None);
        task.not_before = if delay.is_zero() {
            0
        } else {
            self.clock.after_ms(delay)
        };
        let bytes = task.encode()?;
        let size = bytes.len() as u64;
        let not_before = task.not_before;
        let shared = Arc::clone(&self.shared);
        let id = task.id;
        self.store
            .write_status(Op::Replace { seq, bytes }, Some(change), move |outcome| {
                if outcome != Ok(true) {
                    return;
                }
                shared.watchers.notify(&id);
                let mut st = shared.state();
                // The row now holds the new bytes, whoever holds the lease.
                if let Some(meta) = st.pending.get_mut(&seq) {
                    let old = meta.size;
                    meta.size = size;
                    st.stored_bytes = st.stored_bytes.saturating_sub(old) + size;
                }
                if st.unlease(seq, lease_id).is_some() {
                    st.make_due(seq, not_before);
                }
                drop(st);
                if not_before == 0 {
                    shared.ready.notify_waiters();
                }
            })
            .await?;
        Ok(())
    }

    fn holds(&self, seq: u64, lease_id: u64) -> bool {
        let st = self.state();
        matches!(st.pending.get(&seq), Some(Meta { lease: Some((id, _)), .. }) if *id == lease_id)
    }

    pub(super) fn release_inner(&self, lease: &Lease) -> Result<(), QueueError> {
        let (seq, lease_id) = Self::token(lease)?;
        let mut st = self.state();
        let released = st.unlease(seq, lease_id);
        if let Some(meta) = released {
            st.make_due(seq, meta.not_before);
        }
        drop(st);
        if released.is_some() {
            self.touch(
                seq,
                self.change(&lease.task, after_attempt(&lease.task), None),
            );
        }
        self.shared.ready.notify_waiters();
        Ok(())
    }

    pub(super) async fn dead_letter_inner(&self, lease: Lease) -> Result<(), QueueError> {
        let (seq, _) = Self::token(&lease)?;
        let bytes = lease.task.encode()?;
        let size = bytes.len() as u64;
        let shared = Arc::clone(&self.shared);
        // The `on_dead` hook (the compensation) is written with the dead letter, or not at all.
        let hook = self.reserve_hook(crate::hooks::follow_up(&lease.task, HookKind::OnDead, None));
        let hook_id = hook.as_ref().map(|h| h.id.clone());
        let change = self
            .change(&lease.task, Status::Dead, None)
            .with_hook_id(hook_id, HookKind::OnDead);
        let (then, reserved) = split(hook);
        let id = lease.task.id.clone();
        let op = Op::Bury {
            seq,
            id: lease.task.id.clone(),
            bytes,
        };
        self.store
            .write_settle(op, Some(change), then, move |outcome| {
                hook_effect(&shared, reserved, outcome == Ok(true));
                if outcome != Ok(true) {
                    return;
                }
                shared.watchers.notify(&id);
                // The pending row became a dead letter: count it as one, whatever memory knew.
                let mut st = shared.state();
                st.forget(seq);
                st.dead += 1;
                st.dead_bytes += size;
                st.stored_tasks += 1;
                st.stored_bytes += size;
            })
            .await?;
        Ok(())
    }

    /// Reserves a sequence number and capacity for `hook` and renders its row. A hook is never
    /// refused for space: refusing it would either lose it or keep its parent leased forever.
    /// It is counted like any task (its parent's row goes with an ack, so an `on_done` hook
    /// adds nothing net; an `on_dead` one adds one task), and may take the queue past
    /// `max_tasks` / `max_bytes` by the hooks of tasks settling at once.
    /// A hook that cannot be encoded within `max_task_bytes + max_result_bytes` is logged and
    /// skipped (the config checks what it can, the answer's size is the only unknown).
    fn reserve_hook(&self, hook: Option<Task>) -> Option<Reserved> {
        let mut hook = hook?;
        hook.enqueued_at = self.clock.now_ms();
        let limit = self
            .opts
            .max_task_bytes
            .saturating_add(self.opts.status.max_result_bytes);
        let bytes = match hook.validate(limit) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(hook = %hook.id, parent = ?hook.hook_of, error = %e, "completion hook cannot be stored; skipped");
                return None;
            }
        };
        let size = bytes.len() as u64;
        let seq = {
            let mut st = self.state();
            st.stored_tasks += 1;
            st.stored_bytes += size;
            let seq = st.next_seq;
            st.next_seq += 1;
            seq
        };
        Some(Reserved {
            follow: FollowUp {
                seq,
                bytes,
                status: self.change(&hook, Status::Queued, None),
            },
            meta: Meta {
                enqueued_at: hook.enqueued_at,
                not_before: 0,
                size,
                lease: None,
            },
            id: hook.id,
        })
    }
}

/// What a settling commit does in memory for its hook: make it due when the commit wrote it,
/// else give its reservation back.
fn hook_effect(shared: &Shared, reserved: Option<(u64, Meta, String)>, written: bool) {
    let Some((seq, meta, id)) = reserved else {
        return;
    };
    let mut st = shared.state();
    if written {
        st.pending.insert(seq, meta);
        st.ready.insert((meta.not_before, seq));
        drop(st);
        shared.ready.notify_waiters();
        shared.watchers.notify(&id);
    } else {
        st.stored_tasks = st.stored_tasks.saturating_sub(1);
        st.stored_bytes = st.stored_bytes.saturating_sub(meta.size);
    }
}

/// Splits a reservation into the commit's part and the effect's part.
fn split(reserved: Option<Reserved>) -> (Option<FollowUp>, Option<(u64, Meta, String)>) {
    match reserved {
        Some(r) => {
            let seq = r.follow.seq;
            (Some(r.follow), Some((seq, r.meta, r.id)))
        }
        None => (None, None),
    }
}
