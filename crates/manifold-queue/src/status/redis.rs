//! Statuses in Redis (`[cache] redis`), for RabbitMQ with several gateway replicas: every
//! replica reads and writes the same keys, and a long poll subscribes to the task's channel, so
//! whichever replica delivers the task wakes the one holding the client.
//!
//! - Key `<prefix>task:<id>` = the encoded status, with a TTL: `result_ttl` once finished, the
//!   queue's `max_age` (at least `result_ttl`) before. Redis expires them.
//! - Finished statuses are bounded like the embedded store's, across every replica: an index
//!   (`<prefix>tasks:finished`, a sorted set by finish time; `<prefix>tasks:sizes`, each one's
//!   bytes; `<prefix>tasks:bytes`, their sum) is updated in the same script as the write, which
//!   then drops the oldest finished statuses while there are more than `max_statuses` or their
//!   bytes exceed `max_status_bytes`, and forgets index entries whose statuses have expired.
//!   Unfinished statuses are bounded by the queue's own `max_tasks` (one per pending task). The
//!   work per write is bounded ([`SWEEP`] entries of each kind). The script names the status
//!   keys it drops without declaring them, which a single Redis allows and Redis Cluster does
//!   not (the cache tier has the same requirement).
//! - After each write, `PUBLISH <prefix>task:<id>`; a waiter subscribes before it reads.
//! - Writes are read-modify-write without a lock: a task is delivered by one replica at a
//!   time, so the only overlap is a redelivery after a lost ack, where the later write wins —
//!   and the `queued` write of an enqueue, which runs beside the enqueue itself and so can race
//!   the task's first delivery: it is conditional *in the script* (only if no status exists),
//!   so a slow `queued` write never lands on top of `delivering` or `done`.
//! - A write that fails (a reconnect, or a reply slower than the client's 500 ms response
//!   timeout on a loaded host) is tried again, [`WRITE_TRIES`] times in all with a doubling
//!   pause, because the caller settles the task right after it: a lost `done` would leave the
//!   task `running` for good.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;
use redis::AsyncCommands;

use crate::clock::Clock;
use crate::error::QueueError;
use crate::status::{Change, StatusLimits, TaskStatus};
use crate::task::check_id;

use super::tracked::StatusStore;

/// Most index entries one write forgets (expired) and drops (over a bound): the bound on a
/// write's work. Each write adds at most one entry, so the index cannot outgrow the sweep.
const SWEEP: u32 = 64;

/// Tries of one status write before it is given up (logged); pauses 50, 100, 200, 400 ms.
const WRITE_TRIES: u32 = 5;

/// Writes a status (`SET … PX`), keeps the finished-status index, enforces the bounds and
/// publishes the change, atomically for every replica.
/// KEYS: status key, index (zset), sizes (hash), total bytes.
/// ARGV: encoded status, ttl ms, id, final (1/0), now ms, result_ttl ms, max_statuses,
/// max_status_bytes, state name (published), status key prefix, sweep bound, only if new (1/0).
static WRITE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
if ARGV[12] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local index, sizes, total = KEYS[2], KEYS[3], KEYS[4]
local function forget(id)
  local size = redis.call('HGET', sizes, id)
  if size then
    redis.call('DECRBY', total, size)
    redis.call('HDEL', sizes, id)
  end
  redis.call('ZREM', index, id)
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
forget(ARGV[3])
if ARGV[4] == '1' then
  redis.call('ZADD', index, ARGV[5], ARGV[3])
  redis.call('HSET', sizes, ARGV[3], string.len(ARGV[1]))
  redis.call('INCRBY', total, string.len(ARGV[1]))
end
local sweep = tonumber(ARGV[11])
local gone = redis.call('ZRANGEBYSCORE', index, '-inf', tonumber(ARGV[5]) - tonumber(ARGV[6]),
  'LIMIT', 0, sweep)
for _, id in ipairs(gone) do forget(id) end
for _ = 1, sweep do
  local bytes = tonumber(redis.call('GET', total) or '0')
  if redis.call('ZCARD', index) <= tonumber(ARGV[7]) and bytes <= tonumber(ARGV[8]) then break end
  local oldest = redis.call('ZRANGE', index, 0, 0)
  if #oldest == 0 then break end
  forget(oldest[1])
  redis.call('DEL', ARGV[10] .. oldest[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[9])
return 0
",
    )
});

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
        let key = self.key(&change.task_id);
        let mut conn = self.conn.clone();
        let prev: Option<Vec<u8>> = conn
            .get(&key)
            .await
            .map_err(|e| redis_error("read task status", e))?;
        let prev = prev.and_then(|b| TaskStatus::decode(&b));
        if prev.is_some() && only_new {
            return Ok(());
        }
        self.store(change.apply(prev), only_new).await
    }

    /// Writes `next` with the script; `only_new`: only if the task has no status (checked in
    /// the script, atomically with the write).
    async fn store(&self, next: TaskStatus, only_new: bool) -> Result<(), QueueError> {
        let id = next.task_id.clone();
        let key = self.key(&id);
        let mut conn = self.conn.clone();
        let ttl = if next.status.is_final() {
            self.limits.result_ttl
        } else {
            self.pending_ttl
        };
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
        let _: () = WRITE
            .key(&key)
            .key(self.index_key("finished"))
            .key(self.index_key("sizes"))
            .key(self.index_key("bytes"))
            .arg(next.encode())
            .arg(ms(ttl))
            .arg(&id)
            .arg(u8::from(next.status.is_final()))
            .arg(self.clock.now_ms())
            .arg(ms(self.limits.result_ttl))
            .arg(self.limits.max_statuses)
            .arg(self.limits.max_status_bytes)
            .arg(next.status.as_str())
            .arg(self.key(""))
            .arg(SWEEP)
            .arg(u8::from(only_new))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis_error("write task status", e))?;
        Ok(())
    }

    /// The keys of the finished-status index (see the module docs).
    fn index_key(&self, what: &str) -> String {
        format!("{}tasks:{what}", self.prefix)
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

/// Runs `write` until it succeeds, [`WRITE_TRIES`] times at most with pauses doubling from
/// 50 ms (tokio's clock); whether it landed. The last failure is logged as an error.
async fn retrying<F, Fut>(task: &str, mut write: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), QueueError>>,
{
    let mut pause = Duration::from_millis(50);
    for tried in 1..=WRITE_TRIES {
        match write().await {
            Ok(()) => return true,
            Err(e) if tried == WRITE_TRIES => {
                tracing::error!(
                    task, tries = tried, error = %e,
                    "task status not written to redis; it stays at its last state"
                );
            }
            Err(e) => {
                tracing::debug!(task, tries = tried, error = %e, "task status write failed; trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
    }
    false
}

impl StatusStore for RedisStatus {
    fn record(&self, change: Change, only_new: bool) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let id = change.task_id.clone();
            retrying(&id, || self.write(change.clone(), only_new)).await;
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

#[cfg(test)]
mod tests {
    //! Against the real Redis on :6379, each test under a prefix of its own, removed after.
    use super::*;
    use crate::status::State;
    use crate::Task;

    const REDIS: &str = "redis://127.0.0.1:6379";

    async fn store(max_statuses: u64, max_status_bytes: u64) -> RedisStatus {
        // A task id is random (128 bits): a prefix no other test run shares.
        let unique = Task::new("k", "u", "GET", "/", vec![], vec![]).id;
        let prefix = format!("mf-status-test-{unique}:");
        let limits = StatusLimits {
            result_ttl: Duration::from_secs(600),
            max_result_bytes: 1024,
            max_statuses,
            max_status_bytes,
        };
        RedisStatus::connect(REDIS, &prefix, limits, Duration::from_secs(600))
            .await
            .unwrap()
    }

    async fn cleanup(store: &RedisStatus) {
        let mut conn = store.conn.clone();
        let keys: Vec<String> = conn.keys(format!("{}*", store.prefix)).await.unwrap();
        if !keys.is_empty() {
            let _: () = conn.del(keys).await.unwrap();
        }
    }

    /// Records `n` tasks queued then done, 1 ms apart (the index orders by finish time).
    async fn finish(store: &RedisStatus, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for _ in 0..n {
            let task = Task::new("k", "shipping", "POST", "/labels", vec![], b"{}".to_vec());
            let now = store.clock.now_ms();
            let queued = Change::of(&task, State::Queued, None, now, &store.limits);
            store.record(queued, true).await;
            let outcome = crate::status::Outcome {
                status: 200,
                body: Some(br#"{"label":"L-1"}"#.to_vec()),
            };
            let done = Change::of(&task, State::Done, Some(outcome), now, &store.limits);
            store.record(done, false).await;
            ids.push(task.id);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        ids
    }

    async fn kept(store: &RedisStatus, ids: &[String]) -> Vec<bool> {
        let mut out = Vec::new();
        for id in ids {
            out.push(store.get(id).await.unwrap().is_some());
        }
        out
    }

    #[tokio::test]
    async fn finished_statuses_beyond_max_statuses_are_dropped_oldest_first() {
        let store = store(3, 1 << 20).await;
        let ids = finish(&store, 5).await;
        let kept = kept(&store, &ids).await;
        let mut conn = store.conn.clone();
        let indexed: u64 = conn.zcard(store.index_key("finished")).await.unwrap();
        cleanup(&store).await;
        assert_eq!(kept, [false, false, true, true, true]);
        assert_eq!(indexed, 3);
    }

    #[tokio::test]
    async fn finished_statuses_beyond_max_status_bytes_are_dropped_and_the_sum_follows() {
        // One finished status is a few hundred bytes: a bound of two and a half of them keeps two.
        let probe = store(1000, 1 << 20).await;
        let one = finish(&probe, 1).await;
        let mut conn = probe.conn.clone();
        let size: u64 = conn.get(probe.index_key("bytes")).await.unwrap();
        cleanup(&probe).await;
        assert!(size > 0 && one.len() == 1);

        let store = store(1000, size * 5 / 2).await;
        let ids = finish(&store, 4).await;
        let kept = kept(&store, &ids).await;
        let mut conn = store.conn.clone();
        let total: u64 = conn.get(store.index_key("bytes")).await.unwrap();
        cleanup(&store).await;
        assert_eq!(kept, [false, false, true, true]);
        assert_eq!(total, size * 2, "the byte sum counts exactly the two kept");
    }

    /// The race between an enqueue's `queued` write and the task's first delivery: the `queued`
    /// write read no status, then the delivery wrote `done`, then the `queued` write lands. The
    /// script's own check keeps `done` (before, the status went back to `queued` for good).
    #[tokio::test]
    async fn a_late_queued_write_does_not_overwrite_a_delivered_status() {
        let store = store(100, 1 << 20).await;
        let task = Task::new("k", "shipping", "POST", "/labels", vec![], b"{}".to_vec());
        let now = store.clock.now_ms();
        let queued = Change::of(&task, State::Queued, None, now, &store.limits).apply(None);
        let done = Change::of(&task, State::Done, None, now, &store.limits);
        store.record(done, false).await;
        store.store(queued, true).await.unwrap();
        let status = store.get(&task.id).await.unwrap().map(|s| s.status);
        cleanup(&store).await;
        assert_eq!(status, Some(State::Done));
    }

    /// A write that fails is tried again with doubling pauses, [`WRITE_TRIES`] times in all.
    #[tokio::test(start_paused = true)]
    async fn a_failing_write_is_tried_again_until_it_lands_or_the_tries_run_out() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let landed = retrying("t", || async {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n < 2 {
                Err(QueueError::Timeout("reply".into()))
            } else {
                Ok(())
            }
        })
        .await;
        assert!(landed);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_eq!(start.elapsed(), Duration::from_millis(150));

        calls.store(0, std::sync::atomic::Ordering::SeqCst);
        let start = tokio::time::Instant::now();
        let landed = retrying("t", || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(QueueError::Timeout("reply".into()))
        })
        .await;
        assert!(!landed);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), WRITE_TRIES);
        assert_eq!(start.elapsed(), Duration::from_millis(750));
    }

    #[tokio::test]
    async fn unfinished_statuses_are_not_counted_against_the_finished_bounds() {
        let store = store(1, 1 << 20).await;
        let mut pending = Vec::new();
        for _ in 0..3 {
            let task = Task::new("k", "shipping", "POST", "/labels", vec![], b"{}".to_vec());
            let queued = Change::of(
                &task,
                State::Queued,
                None,
                store.clock.now_ms(),
                &store.limits,
            );
            store.record(queued, true).await;
            pending.push(task.id);
        }
        let done = finish(&store, 2).await;
        let (pending_kept, done_kept) = (kept(&store, &pending).await, kept(&store, &done).await);
        cleanup(&store).await;
        assert_eq!(pending_kept, [true, true, true]);
        assert_eq!(done_kept, [false, true]);
    }
}
