//! NATS JetStream backend: tasks in a work-queue stream, delivered through one durable pull
//! consumer shared by every gateway replica.
//!
//! - `enqueue` publishes to `<stream>.tasks` and waits for the stream's ack (the message is
//!   stored, and fsynced per the server's `sync_interval`), with `Nats-Msg-Id` = task id so a
//!   re-sent publish is stored once.
//! - Work-queue retention deletes a message once acked; `DiscardPolicy::New` with `max_bytes`
//!   / `max_messages` makes a full stream refuse new tasks ([`QueueError::Full`]).
//! - The consumer (`ack_wait` = lease timeout, unlimited redeliveries) hands each message to one
//!   replica; an unacked message is redelivered after `ack_wait` (crash, lost lease).
//! - A nack is a `NAK` with delay: the server redelivers after it. `attempts` is then the
//!   server's delivery count.
//! - Dead letters live in a second stream, `<stream>_dead`, subject `<stream>.dead.<task id>`.
//! - Task statuses live in a key-value bucket, `<stream>_status` (see `status`).

mod dead;
mod status;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, PullConsumer},
    message::AckKind,
    stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
};
use futures::future::BoxFuture;
use futures::StreamExt;

use crate::clock::Clock;
use crate::error::QueueError;
use crate::hooks::HookKind;
use crate::queue::{Lease, LeaseToken, Queue, QueueStats, Selection};
use crate::redact::url as redact;
use crate::status::{after_attempt, Change, State, StatusLimits, TaskStatus};
use crate::task::{check_id, Task};
use crate::{Backend, QueueConfig};

const BACKEND: &str = "nats";
/// How long a fetch may take beyond the wait it asked the server for before it counts as lost.
const FETCH_GRACE: Duration = Duration::from_secs(5);

/// Settings of the NATS backend.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Server URL, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// Stream name; dead letters go to `<stream>_dead`.
    pub stream: String,
    /// Durable consumer name, shared by all replicas.
    pub consumer: String,
    /// Stream byte limit (new tasks refused beyond it).
    pub max_bytes: u64,
    /// Stream message limit.
    pub max_tasks: u64,
    /// Largest encoded task (also capped by the server's `max_payload`).
    pub max_task_bytes: usize,
    /// `Retry-After` hint when full.
    pub retry_after: Duration,
    /// The consumer's `ack_wait`: an unacked lease is redelivered after it.
    pub lease_timeout: Duration,
    /// Bounds of the status bucket.
    pub status: StatusLimits,
    /// The queue's `max_age`: an unfinished status lives at least this long in the bucket.
    pub max_age: Duration,
}

impl NatsOptions {
    /// The NATS settings of a `[queue]` section.
    pub fn from_config(cfg: &QueueConfig) -> Self {
        NatsOptions {
            url: cfg.url_or_default(),
            stream: cfg.stream.clone(),
            consumer: cfg.consumer.clone(),
            max_bytes: cfg.max_bytes,
            max_tasks: cfg.max_tasks,
            max_task_bytes: cfg.max_task_bytes,
            retry_after: cfg.retry_after,
            lease_timeout: cfg.lease_timeout,
            status: StatusLimits::from_config(cfg),
            max_age: cfg.max_age,
        }
    }
}

/// The JetStream-backed queue.
pub struct NatsQueue {
    client: async_nats::Client,
    js: jetstream::Context,
    consumer: PullConsumer,
    subject: String,
    dead_stream: String,
    dead_prefix: String,
    max_task_bytes: usize,
    opts: NatsOptions,
    clock: Clock,
    closed: AtomicBool,
    status: status::KvStatus,
}

fn broker(
    what: impl Into<String>,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> QueueError {
    QueueError::broker(BACKEND, what, e)
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl NatsQueue {
    /// Connects, creates the streams and the durable consumer if missing (existing ones are
    /// used as they are), and returns the queue.
    pub async fn connect(opts: NatsOptions) -> Result<Self, QueueError> {
        check_id("stream name", &opts.stream)?;
        check_id("consumer name", &opts.consumer)?;
        let client = async_nats::connect(opts.url.as_str())
            .await
            .map_err(|e| broker(format!("connect to {}", redact(&opts.url)), e))?;
        let js = jetstream::new(client.clone());
        let subject = format!("{}.tasks", opts.stream);
        let dead_stream = format!("{}_dead", opts.stream);
        let dead_prefix = format!("{}.dead", opts.stream);
        let server_max = client.server_info().max_payload;
        let max_task_bytes = if server_max > 0 {
            opts.max_task_bytes.min(server_max.saturating_sub(512))
        } else {
            opts.max_task_bytes
        };
        let work = js
            .get_or_create_stream(stream::Config {
                name: opts.stream.clone(),
                subjects: vec![subject.clone()],
                retention: RetentionPolicy::WorkQueue,
                storage: StorageType::File,
                discard: DiscardPolicy::New,
                max_bytes: clamp_i64(opts.max_bytes),
                max_messages: clamp_i64(opts.max_tasks),
                duplicate_window: Duration::from_secs(120),
                description: Some("manifold offloaded calls".into()),
                ..Default::default()
            })
            .await
            .map_err(|e| broker(format!("create stream {}", opts.stream), e))?;
        js.get_or_create_stream(stream::Config {
            name: dead_stream.clone(),
            subjects: vec![format!("{dead_prefix}.*")],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            discard: DiscardPolicy::New,
            max_bytes: clamp_i64(opts.max_bytes),
            max_messages: clamp_i64(opts.max_tasks),
            description: Some("manifold dead-lettered calls".into()),
            ..Default::default()
        })
        .await
        .map_err(|e| broker(format!("create stream {dead_stream}"), e))?;
        let consumer: PullConsumer = work
            .get_or_create_consumer(
                &opts.consumer,
                pull::Config {
                    durable_name: Some(opts.consumer.clone()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: opts.lease_timeout,
                    max_deliver: -1,
                    filter_subject: subject.clone(),
                    max_ack_pending: 100_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| broker(format!("create consumer {}", opts.consumer), e))?;
        let status = status::KvStatus::open(&js, &opts.stream, opts.status, opts.max_age).await?;
        Ok(NatsQueue {
            client,
            js,
            consumer,
            subject,
            dead_stream,
            dead_prefix,
            max_task_bytes,
            opts,
            clock: Clock::system(),
            closed: AtomicBool::new(false),
            status,
        })
    }

    /// `task` entering `state` now.
    fn change(&self, task: &Task, state: State, outcome: Option<crate::status::Outcome>) -> Change {
        Change::of(task, state, outcome, self.clock.now_ms(), &self.opts.status)
    }

    /// Deletes both streams and with them every task and dead letter (tests, decommissioning).
    pub async fn destroy(&self) -> Result<(), QueueError> {
        let statuses = format!("KV_{}_status", self.opts.stream);
        for name in [
            self.opts.stream.as_str(),
            self.dead_stream.as_str(),
            statuses.as_str(),
        ] {
            self.js
                .delete_stream(name)
                .await
                .map_err(|e| broker(format!("delete stream {name}"), e))?;
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

    async fn publish(
        &self,
        subject: String,
        msg_id: Option<&str>,
        bytes: Vec<u8>,
    ) -> Result<(), QueueError> {
        let mut headers = async_nats::HeaderMap::new();
        if let Some(id) = msg_id {
            headers.insert("Nats-Msg-Id", id);
        }
        let ack = self
            .js
            .publish_with_headers(subject, headers, bytes.into())
            .await
            .map_err(|e| self.publish_error(e))?;
        ack.await.map_err(|e| self.publish_error(e))?;
        Ok(())
    }

    fn publish_error(&self, e: jetstream::context::PublishError) -> QueueError {
        use jetstream::context::PublishErrorKind as K;
        match e.kind() {
            K::MaxPayloadExceeded => QueueError::TooLarge {
                size: self.max_task_bytes + 1,
                limit: self.max_task_bytes,
            },
            K::TimedOut => QueueError::Timeout("nats: no publish ack from JetStream".into()),
            _ => {
                let text = error_chain(&e);
                if text.contains("maximum messages")
                    || text.contains("maximum bytes")
                    || text.contains("insufficient resources")
                {
                    QueueError::Full {
                        reason: format!("stream {}: {text}", self.opts.stream),
                        retry_after: self.opts.retry_after,
                    }
                } else {
                    broker("publish", e)
                }
            }
        }
    }

    async fn enqueue_inner(&self, mut task: Task) -> Result<(), QueueError> {
        self.check_open()?;
        if task.enqueued_at == 0 {
            task.enqueued_at = self.clock.now_ms();
        }
        let bytes = task.validate(self.max_task_bytes)?;
        let msg_id = task.id.clone();
        // The `queued` status is written beside the publish, only if the task has none yet (a
        // fast delivery may already have recorded more). If the publish fails, the client never
        // learns the id, and the orphan status expires.
        let queued = self
            .status
            .record(self.change(&task, State::Queued, None), true);
        let (published, ()) = futures::join!(
            self.publish(self.subject.clone(), Some(&msg_id), bytes),
            queued
        );
        published
    }

    async fn lease_inner(&self, max: usize, wait: Duration) -> Result<Vec<Lease>, QueueError> {
        self.check_open()?;
        let max = max.clamp(1, 10_000);
        // What is there now, without waiting; else wait for the first and take what followed.
        let mut out = self.fetch(max, None).await?;
        if out.is_empty() && wait >= Duration::from_millis(10) {
            out = self.fetch(1, Some(wait)).await?;
            if !out.is_empty() && max > 1 {
                out.extend(self.fetch(max - 1, None).await?);
            }
        }
        // Recorded before the delivery starts, so it never lands after the outcome's status.
        futures::future::join_all(out.iter().map(|lease| {
            self.status
                .record(self.change(&lease.task, State::Delivering, None), false)
        }))
        .await;
        Ok(out)
    }

    async fn fetch(&self, max: usize, wait: Option<Duration>) -> Result<Vec<Lease>, QueueError> {
        // While the server is unreachable the pull request goes nowhere and the stream would
        // wait forever (observed: a lease during a cut connection never returned), so bound it
        // by the request's own wait plus a grace for the round trip.
        let deadline = tokio::time::Instant::now() + wait.unwrap_or_default() + FETCH_GRACE;
        let lost = || {
            QueueError::Timeout(format!(
                "nats: no answer to a fetch from consumer {} within {}",
                self.opts.consumer,
                humantime::format_duration(wait.unwrap_or_default() + FETCH_GRACE)
            ))
        };
        let request = async {
            match wait {
                None => self
                    .consumer
                    .fetch()
                    .max_messages(max)
                    .messages()
                    .await
                    .map_err(|e| broker("fetch", e)),
                Some(wait) => self
                    .consumer
                    .batch()
                    .max_messages(max)
                    .expires(wait)
                    .messages()
                    .await
                    .map_err(|e| broker("fetch", e)),
            }
        };
        let mut messages = tokio::time::timeout_at(deadline, request)
            .await
            .map_err(|_| lost())??;
        let mut out = Vec::new();
        loop {
            let msg = match tokio::time::timeout_at(deadline, messages.next()).await {
                Ok(Some(msg)) => msg,
                Ok(None) => break,
                Err(_) if out.is_empty() => return Err(lost()),
                Err(_) => break,
            };
            let msg = match msg {
                Ok(msg) => msg,
                Err(e) => {
                    // Leases already taken stay valid; report the error only if nothing came.
                    if out.is_empty() {
                        return Err(broker("fetch", e));
                    }
                    tracing::warn!(error = %e, "nats: fetch ended early");
                    break;
                }
            };
            let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
            match Task::decode(&msg.payload) {
                Ok(task) if task.check().is_err() => self.bury_invalid(msg, task).await,
                Ok(mut task) => {
                    let earlier = u32::try_from(delivered.saturating_sub(1)).unwrap_or(u32::MAX);
                    task.attempts = task.attempts.max(earlier);
                    out.push(Lease {
                        task,
                        outcome: None,
                        token: LeaseToken::Nats(Box::new(msg)),
                    });
                }
                Err(e) => {
                    // Not ours or corrupt: it can never be delivered, so stop redelivering it.
                    tracing::error!(error = %e, subject = %msg.subject, "nats: undecodable task; terminating it");
                    if let Err(e) = msg.ack_with(AckKind::Term).await {
                        tracing::warn!(error = %e, "nats: term failed");
                    }
                }
            }
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    /// A task in the stream that `enqueue` would have refused (another producer, another
    /// version): never delivered. It goes to the dead letters with the reason, without its
    /// hooks (they came with it) and without a status; one whose id cannot name a dead-letter
    /// subject is terminated like an undecodable message. If the dead letter cannot be stored
    /// now, the message stays unacked and comes back after `ack_wait`.
    async fn bury_invalid(&self, msg: jetstream::Message, mut task: Task) {
        let reason = match task.check() {
            Err(e) => e.to_string(),
            Ok(()) => return,
        };
        tracing::error!(task = ?task, error = %reason, "nats: task not deliverable; dead-lettering it");
        if check_id("task id", &task.id).is_err() {
            if let Err(e) = msg.ack_with(AckKind::Term).await {
                tracing::warn!(error = %e, "nats: term failed");
            }
            return;
        }
        task.last_error = Some(format!("not deliverable: {reason}"));
        task.hooks = None;
        let subject = format!("{}.{}", self.dead_prefix, task.id);
        let stored = match task.encode() {
            Ok(bytes) => self.publish(subject, None, bytes).await,
            Err(e) => Err(e),
        };
        match stored {
            Ok(()) => {
                if let Err(e) = msg.double_ack_with(AckKind::Ack).await {
                    tracing::warn!(error = %e, "nats: ack of a dead-lettered invalid task failed");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "nats: invalid task not dead-lettered; it comes back after ack_wait")
            }
        }
    }

    fn message(lease: &Lease) -> Result<&jetstream::Message, QueueError> {
        match &lease.token {
            LeaseToken::Nats(msg) => Ok(msg),
            #[allow(unreachable_patterns)]
            _ => Err(QueueError::Invalid(
                "lease belongs to another queue backend".into(),
            )),
        }
    }

    async fn settle(&self, lease: &Lease, kind: AckKind, what: &str) -> Result<(), QueueError> {
        Self::message(lease)?
            .double_ack_with(kind)
            .await
            .map_err(|e| broker(what, e))
    }

    async fn stats_inner(&self) -> Result<QueueStats, QueueError> {
        let work = self
            .js
            .get_stream(&self.opts.stream)
            .await
            .map_err(|e| broker("stream info", e))?;
        let state = work.cached_info().state.clone();
        let consumer_info = self
            .consumer
            .get_info()
            .await
            .map_err(|e| broker("consumer info", e))?;
        let dead = self.dead_stream().await?.cached_info().state.messages;
        let oldest_age_ms = if state.messages == 0 {
            None
        } else {
            match work.get_raw_message(state.first_sequence).await {
                Ok(m) => Task::decode(&m.payload)
                    .ok()
                    .map(|t| t.age_ms(self.clock.now_ms())),
                // Acked between the two calls: the next oldest is younger; report unknown.
                Err(_) => None,
            }
        };
        Ok(QueueStats {
            backend: Backend::Nats.as_str().into(),
            depth: state.messages,
            oldest_age_ms,
            in_flight: consumer_info.num_ack_pending as u64,
            dead,
            bytes: Some(state.bytes),
        })
    }
}

/// The error and its sources as one line, to recognise server error texts.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl Queue for NatsQueue {
    fn backend(&self) -> Backend {
        Backend::Nats
    }

    fn enqueue(&self, task: Task) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(self.enqueue_inner(task))
    }

    fn lease(&self, max: usize, wait: Duration) -> BoxFuture<'_, Result<Vec<Lease>, QueueError>> {
        Box::pin(self.lease_inner(max, wait))
    }

    fn ack(&self, mut lease: Lease) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move {
            // The `on_done` hook first (at least once: see `hooks::store_before_settle`).
            let hook = crate::hooks::store_before_settle(
                &lease.task,
                HookKind::OnDone,
                lease.outcome.as_ref(),
                |h| self.enqueue_inner(h),
            )
            .await?;
            // Status first: if the ack is lost the task is delivered again and its status goes
            // round once more; the other order could leave it `delivering` for good.
            let done = self
                .change(&lease.task, State::Done, lease.outcome.take())
                .with_hook_id(hook, HookKind::OnDone);
            self.status.record(done, false).await;
            self.settle(&lease, AckKind::Ack, "ack").await
        })
    }

    fn nack(&self, lease: Lease, delay: Duration) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move {
            let state = after_attempt(&lease.task);
            self.status
                .record(self.change(&lease.task, state, None), false)
                .await;
            self.settle(&lease, AckKind::Nak(Some(delay)), "nak").await
        })
    }

    fn release(&self, lease: Lease) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move {
            let state = after_attempt(&lease.task);
            self.status
                .record(self.change(&lease.task, state, None), false)
                .await;
            self.settle(&lease, AckKind::Nak(None), "nak").await
        })
    }

    fn dead_letter(&self, lease: Lease) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(self.dead_letter_inner(lease))
    }

    fn stats(&self) -> BoxFuture<'_, Result<QueueStats, QueueError>> {
        Box::pin(self.stats_inner())
    }

    fn dead_letters(&self, limit: usize) -> BoxFuture<'_, Result<Vec<Task>, QueueError>> {
        Box::pin(async move {
            Ok(self
                .dead_rows(limit)
                .await?
                .into_iter()
                .map(|(_, t)| t)
                .collect())
        })
    }

    fn dead_letter_get<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Task>, QueueError>> {
        Box::pin(async move { Ok(self.dead_get(id).await?.map(|(_, t)| t)) })
    }

    fn replay<'a>(&'a self, which: &'a Selection) -> BoxFuture<'a, Result<u64, QueueError>> {
        Box::pin(self.replay_inner(which))
    }

    fn purge<'a>(&'a self, which: &'a Selection) -> BoxFuture<'a, Result<u64, QueueError>> {
        Box::pin(self.purge_inner(which))
    }

    fn close(&self) -> BoxFuture<'_, Result<(), QueueError>> {
        self.closed.store(true, Ordering::Release);
        Box::pin(async move {
            match crate::close::within(self.client.flush()).await {
                Some(flushed) => flushed.map_err(|e| broker("flush", e)),
                None => Err(broker(
                    "flush",
                    format!(
                        "no answer from the broker within {:?}: closed without it (every task \
                         written was acknowledged before its client was answered)",
                        crate::close::CLOSE_TIMEOUT
                    ),
                )),
            }
        })
    }

    fn task_status<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<TaskStatus>, QueueError>> {
        Box::pin(self.status.get(id))
    }

    fn wait_status<'a>(
        &'a self,
        id: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Option<TaskStatus>, QueueError>> {
        Box::pin(self.status.wait(id, wait))
    }
}
