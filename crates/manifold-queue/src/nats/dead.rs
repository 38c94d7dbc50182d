//! The dead-letter stream: writing dead letters, listing, replaying and purging them.

use super::{broker, NatsQueue};
use crate::error::QueueError;
use crate::hooks::HookKind;
use crate::queue::{Lease, Selection};
use crate::status::State;
use crate::task::{check_id, Task};
use async_nats::jetstream::{self, message::AckKind, stream};

impl NatsQueue {
    pub(super) async fn dead_letter_inner(&self, lease: Lease) -> Result<(), QueueError> {
        let bytes = lease.task.encode()?;
        let subject = format!("{}.{}", self.dead_prefix, lease.task.id);
        // Store first, then ack: a crash in between leaves a duplicate, never a loss. The
        // `on_dead` hook is stored before both, for the same reason.
        let hook = crate::hooks::store_before_settle(&lease.task, HookKind::OnDead, None, |h| {
            self.enqueue_inner(h)
        })
        .await?;
        self.publish(subject, None, bytes).await?;
        self.status
            .record(
                self.change(&lease.task, State::Dead, None)
                    .with_hook_id(hook, HookKind::OnDead),
                false,
            )
            .await;
        self.settle(&lease, AckKind::Ack, "ack dead-lettered task")
            .await
    }

    pub(super) async fn dead_stream(&self) -> Result<jetstream::stream::Stream, QueueError> {
        self.js
            .get_stream(&self.dead_stream)
            .await
            .map_err(|e| broker(format!("get stream {}", self.dead_stream), e))
    }

    /// Dead letters in stream order: `(sequence, task)`, up to `limit`.
    pub(super) async fn dead_rows(&self, limit: usize) -> Result<Vec<(u64, Task)>, QueueError> {
        let dead = self.dead_stream().await?;
        let state = &dead.cached_info().state;
        let mut out = Vec::new();
        if state.messages == 0 {
            return Ok(out);
        }
        let mut seq = state.first_sequence;
        while seq <= state.last_sequence && out.len() < limit {
            match dead.get_raw_message(seq).await {
                // Another producer's message on a dead subject lists as nothing, like RabbitMQ's,
                // rather than failing the listing and `replay --all` of every dead letter.
                Ok(m) => match Task::decode(&m.payload) {
                    Ok(task) => out.push((seq, task)),
                    Err(e) => {
                        tracing::warn!(seq, error = %e, "nats: undecodable dead letter skipped")
                    }
                },
                Err(e) if matches!(e.kind(), stream::LastRawMessageErrorKind::NoMessageFound) => {}
                Err(e) => return Err(broker("read dead letter", e)),
            }
            seq += 1;
        }
        Ok(out)
    }

    pub(super) async fn dead_get(&self, id: &str) -> Result<Option<(u64, Task)>, QueueError> {
        check_id("task id", id)?;
        let dead = self.dead_stream().await?;
        match dead
            .get_last_raw_message_by_subject(&format!("{}.{id}", self.dead_prefix))
            .await
        {
            Ok(m) => Ok(Some((m.sequence, Task::decode(&m.payload)?))),
            Err(e) if matches!(e.kind(), stream::LastRawMessageErrorKind::NoMessageFound) => {
                Ok(None)
            }
            Err(e) => Err(broker("read dead letter", e)),
        }
    }

    pub(super) async fn replay_inner(&self, which: &Selection) -> Result<u64, QueueError> {
        self.check_open()?;
        let rows = match which {
            Selection::Id(id) => self.dead_get(id).await?.into_iter().collect(),
            Selection::All => self.dead_rows(usize::MAX).await?,
        };
        let dead = self.dead_stream().await?;
        let mut moved = 0;
        let mut seen = std::collections::HashSet::new();
        for (seq, mut task) in rows {
            // A crash between storing a dead letter and acking can leave two copies.
            if !seen.insert(task.id.clone()) {
                continue;
            }
            let now = self.clock.now_ms();
            task.attempts = 0;
            task.enqueued_at = now;
            task.not_before = 0;
            task.validate(usize::MAX)?;
            // No Nats-Msg-Id: the original id may still be in the duplicate window.
            self.publish(self.subject.clone(), None, task.encode()?)
                .await?;
            self.status
                .record(self.change(&task, State::Queued, None), false)
                .await;
            let subject = format!("{}.{}", self.dead_prefix, task.id);
            let purge = dead.purge().filter(subject);
            if let Err(e) = purge.await {
                tracing::warn!(error = %e, seq, "nats: replayed dead letter not removed");
            }
            moved += 1;
        }
        Ok(moved)
    }

    pub(super) async fn purge_inner(&self, which: &Selection) -> Result<u64, QueueError> {
        let dead = self.dead_stream().await?;
        let response = match which {
            Selection::All => dead.purge().await,
            Selection::Id(id) => {
                check_id("task id", id)?;
                dead.purge()
                    .filter(format!("{}.{id}", self.dead_prefix))
                    .await
            }
        }
        .map_err(|e| broker("purge dead letters", e))?;
        Ok(response.purged)
    }
}
