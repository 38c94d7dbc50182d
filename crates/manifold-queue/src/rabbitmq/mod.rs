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
//!   dead-letter it back without confirms. At most [`HOLD_LIMIT`] are held; past it a task not
//!   due goes back to the queue's tail, so waiting tasks cannot fill the prefetch.
//! - Dead letters go to the durable queue `<queue>.dead`, with a confirm before the ack.
//! - Bounds are the broker's: `<queue>` is declared with `x-max-length` = `max_tasks`,
//!   `x-max-length-bytes` = `max_bytes` and `x-overflow` = `reject-publish`, so a publish beyond
//!   them is nacked and `enqueue` fails with [`QueueError::Full`]. RabbitMQ counts *ready*
//!   messages (bytes = message bodies) only: leased and held tasks (up to the prefetch) come on
//!   top. An existing queue declared with other arguments is refused at connect with an error
//!   naming the argument. `<queue>.dead` is not bounded.
//! - Connection loss: the connection and channels are replaced on the next operation (lapin's
//!   automatic recovery was not used: after a cut connection it never came back, and every
//!   later enqueue waited on it forever). Attempts are spaced by a backoff (100 ms doubling to
//!   5 s) and each is bounded, so while the broker is away `enqueue` and `lease` fail fast with
//!   a broker error. Leases taken on a lost channel cannot be settled any more; the broker has
//!   already put those tasks back, so they are delivered again (at least once).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use lapin::options::{
    BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, Consumer};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::error::QueueError;
use crate::queue::{Lease, Queue, QueueStats, Selection};
use crate::redact::url as redact;
use crate::task::{check_id, Task};
use crate::{Backend, QueueConfig};

mod dead;
mod lease;
mod link;

use dead::Visit;
use link::open_link;

const BACKEND: &str = "rabbitmq";
/// Messages the consumer may hold unacked (leased or waiting for their `not_before`).
const PREFETCH: u16 = 2000;
/// Most deliveries held for a later `not_before`: the rest of the prefetch stays for tasks that
/// are due. Past it a task not yet due goes back to the queue's tail ([`RabbitQueue::park`]):
/// held, they filled the whole prefetch when many tasks waited on a long `Retry-After` (one
/// upstream down), and then the broker sent nothing more, so no task of any other upstream was
/// delivered until theirs came due.
const HOLD_LIMIT: usize = PREFETCH as usize - 200;
/// Parks in a row (no due task found between them) after which each park waits this long: when
/// every task in the queue waits, the consumer would otherwise send them round the queue as
/// fast as the broker confirms. A due task behind them is reached at this pace.
const PARK_PACE: Duration = Duration::from_millis(5);
const PARK_BURST: u32 = 100;
/// Longest scan of the dead-letter queue for list / inspect / replay / purge by id.
const DEAD_SCAN_LIMIT: usize = 100_000;
/// Longest wait for a connection (TCP, AMQP handshake, channels, declarations).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a publish and its confirm; past it the connection is presumed dead.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed connection attempt before the next one; doubles up to the maximum.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Settings of the RabbitMQ backend.
#[derive(Debug, Clone)]
pub struct RabbitOptions {
    /// AMQP URL, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub url: String,
    /// Queue name; dead letters go to `<queue>.dead`.
    pub queue: String,
    /// Bound on ready tasks: the queue's `x-max-length`.
    pub max_tasks: u64,
    /// Bound on the ready tasks' bytes: the queue's `x-max-length-bytes`.
    pub max_bytes: u64,
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
            max_bytes: cfg.max_bytes,
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
    /// The consumer's own channel: when it dies, its unacked deliveries are back in the queue.
    channel: Channel,
    consumer: Consumer,
    held: BinaryHeap<Reverse<Held>>,
    next_seq: u64,
    /// Tasks sent back to the queue's tail since a due one was found (see [`HOLD_LIMIT`]).
    parked_run: u32,
}

/// The live connection with its confirm-mode publishing channel.
struct Link {
    conn: Connection,
    publish: Channel,
    /// Which connection this is, so a failure seen on an old one does not close a newer one.
    generation: u64,
}

/// The connection slot: the live link, or when the next attempt may be made after a failure.
struct Links {
    link: Option<Link>,
    generations: u64,
    backoff: Duration,
    retry_at: Option<Instant>,
    last_error: String,
}

/// The RabbitMQ-backed queue.
pub struct RabbitQueue {
    links: Mutex<Links>,
    /// Started by the first `lease`, so producers and `manifold queue` never take deliveries.
    state: Mutex<Option<ConsumerState>>,
    /// Nacked tasks the broker would not take back (queue full): held here with their original
    /// delivery until due, then leased again.
    returned: std::sync::Mutex<Vec<(Task, lapin::Acker)>>,
    dead_queue: String,
    opts: RabbitOptions,
    clock: Clock,
    in_flight: AtomicU64,
    closed: AtomicBool,
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
    /// Connects, declares `<queue>` (with its bounds) and `<queue>.dead` durable. Fails if the
    /// broker cannot be reached now or the queue exists with other arguments; a connection lost
    /// later is replaced on a later operation.
    pub async fn connect(opts: RabbitOptions) -> Result<Self, QueueError> {
        if opts.queue.is_empty() || opts.queue.len() > 200 {
            return Err(QueueError::Config(
                "rabbitmq queue name must be 1..=200 bytes".into(),
            ));
        }
        // lapin without a TLS backend would open it in plaintext (see `refuse_amqps`).
        manifold_config::queue::refuse_amqps(&opts.url)
            .map_err(|m| QueueError::Config(format!("rabbitmq: {m}")))?;
        let dead_queue = format!("{}.dead", opts.queue);
        let link = tokio::time::timeout(CONNECT_TIMEOUT, open_link(&opts, &dead_queue, 0))
            .await
            .map_err(|_| {
                QueueError::Timeout(format!("rabbitmq: connect to {}", redact(&opts.url)))
            })??;
        Ok(RabbitQueue {
            links: Mutex::new(Links {
                link: Some(link),
                generations: 1,
                backoff: RECONNECT_MIN,
                retry_at: None,
                last_error: String::new(),
            }),
            state: Mutex::new(None),
            returned: std::sync::Mutex::new(Vec::new()),
            dead_queue,
            opts,
            clock: Clock::system(),
            in_flight: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        })
    }

    /// Deletes `<queue>` and `<queue>.dead` with their messages (tests, decommissioning).
    pub async fn destroy(&self) -> Result<(), QueueError> {
        if let Some(st) = self.state.lock().await.take() {
            close_within(st.channel.close(200, "destroy".into())).await;
        }
        let (channel, _) = self.publish_channel().await?;
        for name in [self.opts.queue.as_str(), self.dead_queue.as_str()] {
            channel
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

    /// Publishes a persistent message to `queue` and waits for the broker's confirm. A failure
    /// on the connection drops it and is retried once on a fresh one (a publish that failed
    /// after reaching the broker may then be stored twice: at least once).
    async fn publish_confirmed(&self, queue: &str, bytes: &[u8]) -> Result<(), QueueError> {
        let mut retried = false;
        loop {
            let (channel, generation) = self.publish_channel().await?;
            let attempt = tokio::time::timeout(PUBLISH_TIMEOUT, async {
                channel
                    .basic_publish(
                        "".into(),
                        queue.into(),
                        BasicPublishOptions::default(),
                        bytes,
                        persistent(),
                    )
                    .await?
                    .await
            })
            .await;
            match attempt {
                Ok(Ok(confirm)) if confirm.is_ack() => return Ok(()),
                Ok(Ok(_)) if queue == self.opts.queue => {
                    return Err(QueueError::Full {
                        reason: format!(
                            "rabbitmq refused the task: queue {queue} is at x-max-length = {} \
                             tasks or x-max-length-bytes = {} bytes",
                            self.opts.max_tasks, self.opts.max_bytes
                        ),
                        retry_after: self.opts.retry_after,
                    })
                }
                Ok(Ok(_)) => {
                    return Err(broker(
                        format!("publish to {queue}"),
                        "the broker refused the message (nack)",
                    ))
                }
                Ok(Err(e)) => {
                    self.reset(generation).await;
                    if retried {
                        return Err(broker(format!("publish to {queue}"), e));
                    }
                    tracing::warn!(error = %e, "rabbitmq publish failed; reconnecting");
                    retried = true;
                }
                Err(_) => {
                    self.reset(generation).await;
                    return Err(QueueError::Timeout(format!(
                        "rabbitmq: no confirm for a publish to {queue} within {}",
                        humantime::format_duration(PUBLISH_TIMEOUT)
                    )));
                }
            }
        }
    }

    async fn ready_count(&self, queue: &str) -> Result<u64, QueueError> {
        let (channel, generation) = self.publish_channel().await?;
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        match declared {
            Ok(q) => Ok(u64::from(q.message_count())),
            Err(e) => {
                // A refused passive declare closes the channel: start afresh next time.
                self.reset(generation).await;
                Err(broker(format!("inspect queue {queue}"), e))
            }
        }
    }

    async fn enqueue_inner(&self, mut task: Task) -> Result<(), QueueError> {
        self.check_open()?;
        if task.enqueued_at == 0 {
            task.enqueued_at = self.clock.now_ms();
        }
        let bytes = task.validate(self.opts.max_task_bytes)?;
        self.publish_confirmed(&self.opts.queue, &bytes).await
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
}

#[derive(Debug, thiserror::Error)]
#[error("the consumer was cancelled by the broker")]
struct ConsumerEnded;

#[derive(Debug, thiserror::Error)]
#[error("the broker is unreachable")]
struct BrokerUnreachable;

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
                Selection::All => {
                    let (channel, generation) = self.publish_channel().await?;
                    let purged = channel
                        .queue_purge(
                            self.dead_queue.as_str().into(),
                            QueuePurgeOptions::default(),
                        )
                        .await;
                    match purged {
                        Ok(n) => Ok(u64::from(n)),
                        Err(e) => {
                            self.reset(generation).await;
                            Err(broker("purge dead letters", e))
                        }
                    }
                }
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
            if let Some(st) = self.state.lock().await.take() {
                close_within(st.channel.close(200, "closing".into())).await;
            }
            if let Some(link) = self.links.lock().await.link.take() {
                close_within(link.conn.close(200, "closing".into())).await;
            }
            Ok(())
        })
    }
}

/// Wait at most [`crate::close::CLOSE_TIMEOUT`] for a connection's or channel's close; its
/// result does not matter (the link is being dropped either way). Most closes here run under
/// the link lock, where an unbounded wait would stall every enqueue behind it (seen once in CI:
/// an enqueue during a cut hung for the test's 60 s bound).
async fn close_within<T>(close: impl std::future::Future<Output = T>) {
    let _ = crate::close::within(close).await;
}
