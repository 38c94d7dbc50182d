//! Statuses in Redis (`[cache] redis`), for RabbitMQ with several gateway replicas: every
//! replica reads and writes the same keys, and a long poll subscribes to the task's channel, so
//! whichever replica delivers the task wakes the one holding the client.
//!
//! - Key `<prefix>task:<id>` = the encoded status, with a TTL: `result_ttl` once finished, the
//!   queue's `max_age` (at least `result_ttl`) before. Redis expires them; its `maxmemory`
//!   policy is the byte bound (`max_statuses` / `max_status_bytes` are not enforced here).
//! - After each write, `PUBLISH <prefix>task:<id>`; a waiter subscribes before it reads.
//! - Writes are read-modify-write without a lock: a task is delivered by one replica at a
//!   time, so the only overlap is a redelivery after a lost ack, where the later write wins.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;
use redis::AsyncCommands;

use crate::clock::Clock;
use crate::error::QueueError;
use crate::status::{Change, StatusLimits, TaskStatus};
use crate::task::check_id;

use super::tracked::StatusStore;

/// The Redis status store.
pub struct RedisStatus {
    client: redis::Client,
    conn: redis::aio::ConnectionManager,
    prefix: String,
    limits: StatusLimits,
    /// TTL of an unfinished status.
    pending_ttl: Duration,
    clock: Clock,
}

fn redis_error(what: &str, e: redis::RedisError) -> QueueError {
    QueueError::broker("redis", what.to_owned(), e)
}

impl RedisStatus {
    /// Connects to `url`; keys start with `prefix`.
    pub async fn connect(
        url: &str,
        prefix: &str,
        limits: StatusLimits,
        queue_max_age: Duration,
    ) -> Result<Self, QueueError> {
        let client = redis::Client::open(url).map_err(|e| redis_error("open", e))?;
        let conn = tokio::time::timeout(Duration::from_secs(10), client.get_connection_manager())
            .await
            .map_err(|_| QueueError::Timeout("redis: no connection within 10s".into()))?
            .map_err(|e| redis_error("connect", e))?;
        Ok(RedisStatus {
            client,
            conn,
            prefix: prefix.to_owned(),
            limits,
            pending_ttl: queue_max_age.max(limits.result_ttl),
            clock: Clock::system(),
        })
    }

    fn key(&self, id: &str) -> String {
        format!("{}task:{id}", self.prefix)
    }

    async fn read(&self, id: &str) -> Result<Option<TaskStatus>, QueueError> {
        if check_id("task id", id).is_err() {
            return Ok(None);
        }
        let mut conn = self.conn.clone();
        let bytes: Option<Vec<u8>> = conn
            .get(self.key(id))
            .await
            .map_err(|e| redis_error("read task status", e))?;
        let now = self.clock.now_ms();
        Ok(bytes
            .and_then(|b| TaskStatus::decode(&b))
            .filter(|s| !s.expired(now)))
    }

    async fn write(&self, change: Change, only_new: bool) -> Result<(), QueueError> {
        let id = change.task_id.clone();
        let key = self.key(&id);
        let mut conn = self.conn.clone();
        let prev: Option<Vec<u8>> = conn
            .get(&key)
            .await
            .map_err(|e| redis_error("read task status", e))?;
        let prev = prev.and_then(|b| TaskStatus::decode(&b));
        if prev.is_some() && only_new {
            return Ok(());
        }
        let next = change.apply(prev);
        let ttl = if next.status.is_final() {
            self.limits.result_ttl
        } else {
            self.pending_ttl
        };
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let _: () = redis::pipe()
            .cmd("SET")
            .arg(&key)
            .arg(next.encode())
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .cmd("PUBLISH")
            .arg(&key)
            .arg(next.status.as_str())
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_error("write task status", e))?;
        Ok(())
    }

    async fn wait_inner(&self, id: &str, wait: Duration) -> Result<Option<TaskStatus>, QueueError> {
        if check_id("task id", id).is_err() {
            return Ok(None);
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut pubsub = tokio::time::timeout_at(deadline, self.client.get_async_pubsub())
            .await
            .map_err(|_| QueueError::Timeout("redis: no subscription connection".into()))?
            .map_err(|e| redis_error("subscribe", e))?;
        pubsub
            .subscribe(self.key(id))
            .await
            .map_err(|e| redis_error("subscribe", e))?;
        // Subscribed, then read: a write between the two arrives as a message.
        let mut latest = match self.read(id).await? {
            Some(s) if !s.status.is_final() => s,
            done_or_unknown => return Ok(done_or_unknown),
        };
        let mut messages = pubsub.on_message();
        loop {
            match tokio::time::timeout_at(deadline, messages.next()).await {
                Err(_) => return Ok(Some(latest)),
                Ok(None) => return self.read(id).await,
                Ok(Some(_)) => match self.read(id).await? {
                    Some(s) if s.status.is_final() => return Ok(Some(s)),
                    Some(s) => latest = s,
                    None => return Ok(None),
                },
            }
        }
    }
}

impl StatusStore for RedisStatus {
    fn record(&self, change: Change, only_new: bool) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let id = change.task_id.clone();
            if let Err(e) = self.write(change, only_new).await {
                tracing::warn!(task = %id, error = %e, "task status not written to redis");
            }
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<TaskStatus>, QueueError>> {
        Box::pin(self.read(id))
    }

    fn wait<'a>(
        &'a self,
        id: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Option<TaskStatus>, QueueError>> {
        Box::pin(self.wait_inner(id, wait))
    }
}
