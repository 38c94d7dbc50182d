//! RabbitMQ backend: a durable queue, persistent messages, publisher confirms, manual acks.
//!
//! - `enqueue` publishes a persistent message to the durable queue `<queue>` and waits for the
//!   broker's confirm (sent once the message is on disk).
//! - The consumer acks manually; an unacked message goes back to the queue when the channel or
//!   connection closes (crash), so a lease survives its holder.
//! - A nack with delay republishes the updated task (attempts, last error, `not_before`) with a
//!   confirm and then acks the old copy. A task whose `not_before` is in the future is held,
//!   unacked, by the consumer until due: RabbitMQ has no per-message delay, and holding keeps
//!   the task owned by the broker (requeued if this process dies), where TTL delay queues would
//!   dead-letter it back without confirms.
//! - Dead letters go to the durable queue `<queue>.dead`, with a confirm before the ack.
//! - `max_tasks` is checked against the queue's ready count (refreshed at most every 250 ms), so
//!   the bound is approximate; `max_bytes` is not enforced here.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::{redact, Backend, QueueConfig};
use crate::error::QueueError;
use crate::queue::{Lease, LeaseToken, Queue, QueueStats, Selection};
use crate::task::{check_id, Task};

const BACKEND: &str = "rabbitmq";
/// Messages the consumer may hold unacked (leased or waiting for their `not_before`).
const PREFETCH: u16 = 2000;
/// Longest scan of the dead-letter queue for list / inspect / replay / purge by id.
const DEAD_SCAN_LIMIT: usize = 100_000;

/// Settings of the RabbitMQ backend.
#[derive(Debug, Clone)]
pub struct RabbitOptions {
    /// AMQP URL, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub url: String,
    /// Queue name; dead letters go to `<queue>.dead`.
    pub queue: String,
    /// Approximate bound on ready tasks.
    pub max_tasks: u64,
    /// Largest encoded task.
    pub max_task_bytes: usize,
    /// `Retry-After` hint when full.
    pub retry_after: Duration,
}

impl RabbitOptions {
    /// The RabbitMQ settings of a `[queue]` section.
    pub fn from_config(cfg: &QueueConfig) -> Self {
        RabbitOptions {
            url: cfg.url_or_default(),
            queue: cfg.queue.clone(),
            max_tasks: cfg.max_tasks,
            max_task_bytes: cfg.max_task_bytes,
            retry_after: cfg.retry_after,
        }
    }
}

/// A delivery waiting for its task's `not_before`.
struct Held {
    due_ms: u64,
    seq: u64,
    task: Task,
    acker: lapin::Acker,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.due_ms, self.seq) == (other.due_ms, other.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due_ms, self.seq).cmp(&(other.due_ms, other.seq))
    }
}

struct ConsumerState {
    consumer: Consumer,
    held: BinaryHeap<Reverse<Held>>,
    next_seq: u64,
}

/// The RabbitMQ-backed queue.
pub struct RabbitQueue {
    conn: Connection,
    publish: Channel,
    consume: Channel,
    /// Started by the first `lease`, so producers and `manifold queue` never take deliveries.
    state: Mutex<Option<ConsumerState>>,
    dead_queue: String,
    opts: RabbitOptions,
    clock: Clock,
    in_flight: AtomicU64,
    closed: AtomicBool,
    depth_cache: std::sync::Mutex<Option<(Instant, u64)>>,
}

fn broker(
    what: impl Into<String>,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> QueueError {
    QueueError::broker(BACKEND, what, e)
}

fn persistent() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
}

impl RabbitQueue {
    /// Connects (with automatic reconnection), declares `<queue>` and `<queue>.dead` durable,
    /// and starts consuming with manual acks.
    pub async fn connect(opts: RabbitOptions) -> Result<Self, QueueError> {
        if opts.queue.is_empty() || opts.queue.len() > 200 {
            return Err(QueueError::Config(
                "rabbitmq queue name must be 1..=200 bytes".into(),
            ));
        }
        let conn = Connection::connect(
            &opts.url,
            ConnectionProperties::default()
                .with_connection_name("manifold-queue".into())
                .enable_auto_recover(),
        )
        .await
        .map_err(|e| broker(format!("connect to {}", redact(&opts.url)), e))?;
        let publish = conn
            .create_channel()
            .await
            .map_err(|e| broker("open channel", e))?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| broker("enable publisher confirms", e))?;
        let dead_queue = format!("{}.dead", opts.queue);
        for name in [opts.queue.as_str(), dead_queue.as_str()] {
            publish
                .queue_declare(
                    name.into(),
                    QueueDeclareOptions::durable(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| broker(format!("declare queue {name}"), e))?;
        }
        let consume = conn
            .create_channel()
            .await
            .map_err(|e| broker("open channel", e))?;
        consume
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await
            .map_err(|e| broker("set prefetch", e))?;
        Ok(RabbitQueue {
            conn,
            publish,
            consume,
            state: Mutex::new(None),
            dead_queue,
            opts,
            clock: Clock::system(),
            in_flight: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            depth_cache: std::sync::Mutex::new(None),
        })
    }

    async fn start_consumer(&self) -> Result<ConsumerState, QueueError> {
        let consumer = self
            .consume
            .basic_consume(
                self.opts.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| broker("start consumer", e))?;
        Ok(ConsumerState {
            consumer,
            held: BinaryHeap::new(),
            next_seq: 0,
        })
    }

    /// Deletes `<queue>` and `<queue>.dead` with their messages (tests, decommissioning).
    pub async fn destroy(&self) -> Result<(), QueueError> {
        let _ = self.consume.close(200, "destroy".into()).await;
        for name in [self.opts.queue.as_str(), self.dead_queue.as_str()] {
            self.publish
                .queue_delete(name.into(), QueueDeleteOptions::default())
                .await
                .map_err(|e| broker(format!("delete queue {name}"), e))?;
        }
        Ok(())
    }

    fn check_open(&self) -> Result<(), QueueError> {
        if self.closed.load(Ordering::Acquire) {
            Err(QueueError::Closed)
        } else {
            Ok(())
        }
    }

    /// Publishes a persistent message to `queue` and waits for the broker's confirm; retries
    /// once after a connection recovery.
    async fn publish_confirmed(&self, queue: &str, bytes: &[u8]) -> Result<(), QueueError> {
        let mut recovered = false;
        loop {
            let attempt = async {
                self.publish
                    .basic_publish(
                        "".into(),
                        queue.into(),
                        BasicPublishOptions::default(),
                        bytes,
                        persistent(),
                    )
                    .await?
                    .await
            };
            match attempt.await {
                Ok(confirm) if confirm.is_ack() => return Ok(()),
                Ok(_) => {
                    return Err(QueueError::Full {
                        reason: format!("rabbitmq refused the message for {queue} (nack)"),
                        retry_after: self.opts.retry_after,
                    })
                }
                Err(e) if !recovered => {
                    recovered = true;
                    tracing::warn!(error = %e, "rabbitmq publish failed; waiting for recovery");
                    if let Err(e) = self.publish.wait_for_recovery(e).await {
                        return Err(broker(format!("publish to {queue}"), e));
                    }
                }
                Err(e) => return Err(broker(format!("publish to {queue}"), e)),
            }
        }
    }

    async fn ready_count(&self, queue: &str) -> Result<u64, QueueError> {
        let q = self
            .publish
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| broker(format!("inspect queue {queue}"), e))?;
        Ok(u64::from(q.message_count()))
    }

    async fn check_bound(&self) -> Result<(), QueueError> {
        let cached = *self.depth_cache.lock().unwrap_or_else(|p| p.into_inner());
        let depth = match cached {
            Some((at, depth)) if at.elapsed() < Duration::from_millis(250) => depth,
            _ => {
                let depth = self.ready_count(&self.opts.queue).await?;
                *self.depth_cache.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((Instant::now(), depth));
                depth
            }
        };
        if depth >= self.opts.max_tasks {
            return Err(QueueError::Full {
                reason: format!(
                    "queue {} holds {depth} tasks (max_tasks = {})",
                    self.opts.queue, self.opts.max_tasks
                ),
                retry_after: self.opts.retry_after,
            });
        }
        Ok(())
    }

    async fn enqueue_inner(&self, mut task: Task) -> Result<(), QueueError> {
        self.check_open()?;
        if task.enqueued_at == 0 {
            task.enqueued_at = self.clock.now_ms();
        }
        let bytes = task.validate(self.opts.max_task_bytes)?;
        self.check_bound().await?;
        self.publish_confirmed(&self.opts.queue, &bytes).await
    }

    async fn lease_inner(&self, max: usize, wait: Duration) -> Result<Vec<Lease>, QueueError> {
        self.check_open()?;
        let max = max.max(1);
        let deadline = Instant::now() + wait;
        let mut guard = self.state.lock().await;
        let st = match &mut *guard {
            Some(st) => st,
            slot @ None => slot.insert(self.start_consumer().await?),
        };
        let mut out = Vec::new();
        loop {
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
            // Then whatever the consumer has buffered, without waiting.
            while out.len() < max {
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
                return Ok(out);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(out);
            }
            let mut until = deadline;
            if let Some(Reverse(h)) = st.held.peek() {
                let in_ms = h.due_ms.saturating_sub(self.clock.now_ms());
                until = until.min(now + Duration::from_millis(in_ms));
            }
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
    async fn classify(
        &self,
        st: &mut ConsumerState,
        delivery: lapin::Result<lapin::message::Delivery>,
    ) -> Result<Option<Lease>, QueueError> {
        let delivery = match delivery {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "rabbitmq consumer error; waiting for recovery");
                self.consume
                    .wait_for_recovery(e)
                    .await
                    .map_err(|e| broker("consume", e))?;
                return Ok(None);
            }
        };
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
        if task.not_before > self.clock.now_ms() {
            let seq = st.next_seq;
            st.next_seq += 1;
            st.held.push(Reverse(Held {
                due_ms: task.not_before,
                seq,
                task,
                acker: delivery.acker,
            }));
            return Ok(None);
        }
        Ok(Some(self.leased(task, delivery.acker)))
    }

    fn leased(&self, task: Task, acker: lapin::Acker) -> Lease {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Lease {
            task,
            token: LeaseToken::Rabbit(acker),
        }
    }

    fn acker(&self, lease: Lease) -> Result<(Task, lapin::Acker), QueueError> {
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

    async fn ack_inner(&self, lease: Lease) -> Result<(), QueueError> {
        let (_, acker) = self.acker(lease)?;
        acker
            .ack(BasicAckOptions::default())
            .await
            .map(|_| ())
            .map_err(|e| broker("ack", e))
    }

    async fn nack_inner(&self, lease: Lease, delay: Duration) -> Result<(), QueueError> {
        let (mut task, acker) = self.acker(lease)?;
        task.not_before = if delay.is_zero() {
            0
        } else {
            self.clock.after_ms(delay)
        };
        // Store the updated task first, then drop the old copy: a crash between leaves a
        // duplicate (same idempotency key), never a loss.
        self.publish_confirmed(&self.opts.queue, &task.encode()?)
            .await?;
        acker
            .ack(BasicAckOptions::default())
            .await
            .map(|_| ())
            .map_err(|e| broker("ack", e))
    }

    async fn release_inner(&self, lease: Lease) -> Result<(), QueueError> {
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

    async fn dead_letter_inner(&self, lease: Lease) -> Result<(), QueueError> {
        let (task, acker) = self.acker(lease)?;
        self.publish_confirmed(&self.dead_queue, &task.encode()?)
            .await?;
        acker
            .ack(BasicAckOptions::default())
            .await
            .map(|_| ())
            .map_err(|e| broker("ack", e))
    }

    async fn stats_inner(&self) -> Result<QueueStats, QueueError> {
        let ready = self.ready_count(&self.opts.queue).await?;
        let dead = self.ready_count(&self.dead_queue).await?;
        let held = self
            .state
            .try_lock()
            .map(|st| st.as_ref().map_or(0, |s| s.held.len() as u64))
            .unwrap_or(0);
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        Ok(QueueStats {
            backend: Backend::Rabbitmq.as_str().into(),
            depth: ready + held + in_flight,
            oldest_age_ms: None,
            in_flight,
            dead,
            bytes: None,
        })
    }

    /// Walks the dead-letter queue on a private channel: `visit` sees each dead letter and
    /// returns what to do with it. Messages left alone go back in order when the channel closes.
    async fn scan_dead(&self, mut visit: impl FnMut(&Task) -> Visit) -> Result<u64, QueueError> {
        let channel = self
            .conn
            .create_channel()
            .await
            .map_err(|e| broker("open channel", e))?;
        let result = async {
            let mut acted = 0;
            for _ in 0..DEAD_SCAN_LIMIT {
                let Some(msg) = channel
                    .basic_get(
                        self.dead_queue.as_str().into(),
                        BasicGetOptions { no_ack: false },
                    )
                    .await
                    .map_err(|e| broker("read dead letters", e))?
                else {
                    break;
                };
                let delivery = msg.delivery;
                let task = match Task::decode(&delivery.data) {
                    Ok(t) => t,
                    Err(_) => continue,
                };
                match visit(&task) {
                    Visit::Keep => {}
                    Visit::Stop => break,
                    Visit::Remove => {
                        delivery
                            .acker
                            .ack(BasicAckOptions::default())
                            .await
                            .map_err(|e| broker("remove dead letter", e))?;
                        acted += 1;
                    }
                    Visit::Replay => {
                        let mut task = task;
                        let now = self.clock.now_ms();
                        task.attempts = 0;
                        task.enqueued_at = now;
                        task.not_before = 0;
                        self.publish_confirmed(&self.opts.queue, &task.encode()?)
                            .await?;
                        delivery
                            .acker
                            .ack(BasicAckOptions::default())
                            .await
                            .map_err(|e| broker("remove replayed dead letter", e))?;
                        acted += 1;
                    }
                }
            }
            Ok(acted)
        }
        .await;
        // Closing the channel returns every message we looked at but did not ack.
        let _ = channel.close(200, "scan done".into()).await;
        result
    }
}

/// What [`RabbitQueue::scan_dead`] does with one dead letter.
enum Visit {
    Keep,
    Stop,
    Remove,
    Replay,
}

#[derive(Debug, thiserror::Error)]
#[error("the consumer was cancelled by the broker")]
struct ConsumerEnded;

impl Queue for RabbitQueue {
    fn backend(&self) -> Backend {
        Backend::Rabbitmq
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
        Box::pin(self.release_inner(lease))
    }

    fn dead_letter(&self, lease: Lease) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(self.dead_letter_inner(lease))
    }

    fn stats(&self) -> BoxFuture<'_, Result<QueueStats, QueueError>> {
        Box::pin(self.stats_inner())
    }

    fn dead_letters(&self, limit: usize) -> BoxFuture<'_, Result<Vec<Task>, QueueError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            self.scan_dead(|t| {
                if out.len() >= limit {
                    return Visit::Stop;
                }
                out.push(t.clone());
                Visit::Keep
            })
            .await?;
            Ok(out)
        })
    }

    fn dead_letter_get<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Task>, QueueError>> {
        Box::pin(async move {
            check_id("task id", id)?;
            let mut found = None;
            self.scan_dead(|t| {
                if t.id == id {
                    found = Some(t.clone());
                    Visit::Stop
                } else {
                    Visit::Keep
                }
            })
            .await?;
            Ok(found)
        })
    }

    fn replay<'a>(&'a self, which: &'a Selection) -> BoxFuture<'a, Result<u64, QueueError>> {
        Box::pin(async move {
            self.check_open()?;
            self.scan_dead(|t| match which {
                Selection::All => Visit::Replay,
                Selection::Id(id) if *id == t.id => Visit::Replay,
                Selection::Id(_) => Visit::Keep,
            })
            .await
        })
    }

    fn purge<'a>(&'a self, which: &'a Selection) -> BoxFuture<'a, Result<u64, QueueError>> {
        Box::pin(async move {
            match which {
                Selection::All => self
                    .publish
                    .queue_purge(
                        self.dead_queue.as_str().into(),
                        QueuePurgeOptions::default(),
                    )
                    .await
                    .map(u64::from)
                    .map_err(|e| broker("purge dead letters", e)),
                Selection::Id(id) => {
                    check_id("task id", id)?;
                    self.scan_dead(|t| {
                        if t.id == *id {
                            Visit::Remove
                        } else {
                            Visit::Keep
                        }
                    })
                    .await
                }
            }
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<(), QueueError>> {
        self.closed.store(true, Ordering::Release);
        Box::pin(async move {
            // Unacked deliveries (leased or held) return to the queue when the channel closes.
            let _ = self.consume.close(200, "closing".into()).await;
            Ok(())
        })
    }
}
