//! Leasing deliveries (held until due) and settling them: ack, nack with a delay, release,
//! dead letter.

use super::{
    broker, close_within, ConsumerEnded, ConsumerState, Held, RabbitQueue, HOLD_LIMIT, PARK_BURST,
    PARK_PACE,
};
use crate::error::QueueError;
use crate::queue::{Lease, LeaseToken};
use crate::task::Task;
use futures::{FutureExt, StreamExt};
use lapin::options::{BasicAckOptions, BasicNackOptions};
use std::cmp::Reverse;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

impl RabbitQueue {
    pub(super) async fn lease_inner(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Lease>, QueueError> {
        self.check_open()?;
        let max = max.max(1);
        let deadline = Instant::now() + wait;
        let mut guard = self.state.lock().await;
        if guard
            .as_ref()
            .is_some_and(|st| !st.channel.status().connected())
        {
            // The channel died with the connection: the broker has put its unacked deliveries
            // (held ones included) back in the queue, so forget them and consume afresh.
            *guard = None;
            self.returned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        let st = match &mut *guard {
            Some(st) => st,
            slot @ None => slot.insert(self.start_consumer().await?),
        };
        let mut out = Vec::new();
        match self.lease_from(st, max, deadline, &mut out).await {
            Ok(()) => Ok(out),
            Err(e) => {
                tracing::warn!(error = %e, "rabbitmq consumer failed; it is restarted on the next lease");
                if let Some(st) = guard.take() {
                    close_within(st.channel.close(200, "consumer failed".into())).await;
                }
                // Leases already taken stay valid as long as the channel does.
                if out.is_empty() {
                    Err(e)
                } else {
                    Ok(out)
                }
            }
        }
    }

    pub(super) async fn lease_from(
        &self,
        st: &mut ConsumerState,
        max: usize,
        deadline: Instant,
        out: &mut Vec<Lease>,
    ) -> Result<(), QueueError> {
        loop {
            // Nacked tasks the queue had no room for wait with the held ones.
            for (task, acker) in self
                .returned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..)
            {
                self.hold(st, task, acker);
            }
            // Due held tasks first.
            let now = self.clock.now_ms();
            while out.len() < max {
                match st.held.peek() {
                    Some(Reverse(h)) if h.due_ms <= now => {}
                    _ => break,
                }
                if let Some(Reverse(h)) = st.held.pop() {
                    out.push(self.leased(h.task, h.acker));
                }
            }
            // Then whatever the consumer has buffered, without waiting, until the wait is over:
            // tasks parked back to the queue (see `park`) come round again, so the buffer may
            // never run dry.
            while out.len() < max && Instant::now() < deadline {
                match st.consumer.next().now_or_never() {
                    Some(Some(delivery)) => {
                        if let Some(lease) = self.classify(st, delivery).await? {
                            out.push(lease);
                        }
                    }
                    Some(None) => return Err(broker("consume", ConsumerEnded)),
                    None => break,
                }
            }
            if !out.is_empty() {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            let mut until = deadline;
            if let Some(Reverse(h)) = st.held.peek() {
                let in_ms = h.due_ms.saturating_sub(self.clock.now_ms());
                until = until.min(now + Duration::from_millis(in_ms));
            }
            // Wake up now and then for tasks nacked into `returned` meanwhile.
            until = until.min(now + Duration::from_millis(500));
            let next = tokio::select! {
                next = st.consumer.next() => next,
                _ = tokio::time::sleep_until(until) => continue,
            };
            match next {
                Some(delivery) => {
                    if let Some(lease) = self.classify(st, delivery).await? {
                        out.push(lease);
                    }
                }
                None => return Err(broker("consume", ConsumerEnded)),
            }
        }
    }

    /// Turns a delivery into a lease if due, else holds it until due.
    pub(super) async fn classify(
        &self,
        st: &mut ConsumerState,
        delivery: lapin::Result<lapin::message::Delivery>,
    ) -> Result<Option<Lease>, QueueError> {
        let delivery = delivery.map_err(|e| broker("consume", e))?;
        let task = match Task::decode(&delivery.data) {
            Ok(task) => task,
            Err(e) => {
                // Never deliverable: park it with the dead letters rather than loop on it.
                tracing::error!(error = %e, "rabbitmq: undecodable message moved to dead letters");
                self.publish_confirmed(&self.dead_queue, &delivery.data)
                    .await?;
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                return Ok(None);
            }
        };
        if let Err(e) = task.check() {
            // Written by another producer or version, and refused by `enqueue` here (a URL for
            // a path, a split header): park it with the reason, without the hooks it came with.
            tracing::error!(task = ?task, error = %e, "rabbitmq: task not deliverable; moved to dead letters");
            let mut task = task;
            task.last_error = Some(format!("not deliverable: {e}"));
            task.hooks = None;
            self.publish_confirmed(&self.dead_queue, &task.encode()?)
                .await?;
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            return Ok(None);
        }
        if task.not_before > self.clock.now_ms() {
            if st.held.len() >= HOLD_LIMIT {
                return match self.park(st, &task, delivery.acker).await? {
                    None => Ok(None),
                    // The queue is at its bound: held after all, past the limit.
                    Some(acker) => {
                        self.hold(st, task, acker);
                        Ok(None)
                    }
                };
            }
            self.hold(st, task, delivery.acker);
            return Ok(None);
        }
        st.parked_run = 0;
        Ok(Some(self.leased(task, delivery.acker)))
    }

    /// Keep a delivery until its task is due.
    fn hold(&self, st: &mut ConsumerState, task: Task, acker: lapin::Acker) {
        let seq = st.next_seq;
        st.next_seq += 1;
        st.held.push(Reverse(Held {
            due_ms: task.not_before,
            seq,
            task,
            acker,
        }));
    }

    /// Send a task that is not due back to the queue's tail (stored first, then the delivery
    /// acked: a crash between leaves a duplicate with the same idempotency key, never a loss),
    /// so that it does not hold a prefetch slot (see [`HOLD_LIMIT`]). The delivery comes back
    /// when the queue is at its bound and the task could not be stored again.
    async fn park(
        &self,
        st: &mut ConsumerState,
        task: &Task,
        acker: lapin::Acker,
    ) -> Result<Option<lapin::Acker>, QueueError> {
        st.parked_run = st.parked_run.saturating_add(1);
        if st.parked_run > PARK_BURST {
            tokio::time::sleep(PARK_PACE).await;
        }
        match self
            .publish_confirmed(&self.opts.queue, &task.encode()?)
            .await
        {
            Ok(()) => {}
            Err(e) if e.is_full() => return Ok(Some(acker)),
            Err(e) => return Err(e),
        }
        acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(|e| broker("ack", e))?;
        Ok(None)
    }

    pub(super) fn leased(&self, task: Task, acker: lapin::Acker) -> Lease {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Lease {
            task,
            outcome: None,
            token: LeaseToken::Rabbit(acker),
        }
    }

    pub(super) fn acker(&self, lease: Lease) -> Result<(Task, lapin::Acker), QueueError> {
        match lease.token {
            LeaseToken::Rabbit(acker) => {
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
                Ok((lease.task, acker))
            }
            #[allow(unreachable_patterns)]
            _ => Err(QueueError::Invalid(
                "lease belongs to another queue backend".into(),
            )),
        }
    }

    pub(super) async fn ack_inner(&self, lease: Lease) -> Result<(), QueueError> {
        let (_, acker) = self.acker(lease)?;
        acker
            .ack(BasicAckOptions::default())
            .await
            .map(|_| ())
            .map_err(|e| broker("ack", e))
    }

    pub(super) async fn nack_inner(&self, lease: Lease, delay: Duration) -> Result<(), QueueError> {
        let (mut task, acker) = self.acker(lease)?;
        task.not_before = if delay.is_zero() {
            0
        } else {
            self.clock.after_ms(delay)
        };
        // Store the updated task first, then drop the old copy: a crash between leaves a
        // duplicate (same idempotency key), never a loss.
        match self
            .publish_confirmed(&self.opts.queue, &task.encode()?)
            .await
        {
            Ok(()) => {}
            Err(e) if e.is_full() => {
                // The queue is at its bound, which counts ready tasks only: keep the original
                // delivery (owned by the broker, back in the queue if we die) and hold the
                // updated task here until due, rather than failing the retry.
                self.returned
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((task, acker));
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        acker
            .ack(BasicAckOptions::default())
            .await
            .map(|_| ())
            .map_err(|e| broker("ack", e))
    }

    pub(super) async fn release_inner(&self, lease: Lease) -> Result<(), QueueError> {
        let (_, acker) = self.acker(lease)?;
        acker
            .nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| broker("nack", e))
    }

    pub(super) async fn dead_letter_inner(&self, lease: Lease) -> Result<(), QueueError> {
        let (task, acker) = self.acker(lease)?;
        self.publish_confirmed(&self.dead_queue, &task.encode()?)
            .await?;
        acker
            .ack(BasicAckOptions::default())
            .await
            .map(|_| ())
            .map_err(|e| broker("ack", e))
    }
}
