//! Task statuses in a JetStream key-value bucket beside the stream, `<stream>_status`, so any
//! replica answers for any task: the one that accepted it, the one that delivered it, or a
//! third that did neither.
//!
//! - Key = task id, value = the encoded [`TaskStatus`]; one value per key (history 1).
//! - Writes are read-modify-write with the key's revision (compare-and-set), retried on a
//!   conflict, so two writers never lose each other's transition.
//! - The bucket is bounded like the queue: `max_statuses` values and `max_status_bytes` bytes,
//!   the oldest dropped first (the underlying stream is created here with `discard = old`,
//!   since a KV bucket's default refuses writes when full and statuses would stop moving).
//!   Every value expires after `max(result_ttl, max_age)` since its last write; a finished
//!   status is answered until its own `result_ttl` only.
//! - `?wait=` watches the key: the server pushes the next write, nothing polls.
//!
//! A status write that fails is logged and does not fail the queue operation: the task itself
//! is the durable thing, its status is what a client sees of it.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    kv::{self, Operation},
    stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
};
use futures::StreamExt;

use crate::clock::Clock;
use crate::error::QueueError;
use crate::status::{Change, StatusLimits, TaskStatus};
use crate::task::check_id;

use super::{broker, clamp_i64};

/// Compare-and-set rounds before a status write gives up (each loses only to another write of
/// the same task, so more than a few means something is wrong).
const CAS_ROUNDS: usize = 5;

/// The status bucket of one stream.
pub(super) struct KvStatus {
    kv: kv::Store,
    clock: Clock,
}

impl KvStatus {
    /// Opens `<stream>_status`, creating it if missing (an existing bucket is used as it is).
    pub(super) async fn open(
        js: &jetstream::Context,
        stream: &str,
        limits: StatusLimits,
        queue_max_age: Duration,
    ) -> Result<Self, QueueError> {
        let bucket = format!("{stream}_status");
        let name = format!("KV_{bucket}");
        if js.get_stream(&name).await.is_err() {
            let config = stream::Config {
                name: name.clone(),
                subjects: vec![format!("$KV.{bucket}.>")],
                retention: RetentionPolicy::Limits,
                storage: StorageType::File,
                discard: DiscardPolicy::Old,
                max_messages_per_subject: 1,
                max_messages: clamp_i64(limits.max_statuses),
                max_bytes: clamp_i64(limits.max_status_bytes),
                max_age: limits.result_ttl.max(queue_max_age),
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                description: Some("manifold task statuses".into()),
                ..Default::default()
            };
            if let Err(e) = js.create_stream(config).await {
                // Another replica may have created it meanwhile: use it if it is there now.
                if js.get_stream(&name).await.is_err() {
                    return Err(broker(format!("create status bucket {bucket}"), e));
                }
            }
        }
        let kv = js
            .get_key_value(&bucket)
            .await
            .map_err(|e| broker(format!("open status bucket {bucket}"), e))?;
        Ok(KvStatus {
            kv,
            clock: Clock::system(),
        })
    }

    /// The stored status of `id`, expired or not; `None` for ids that cannot be keys.
    async fn read(&self, id: &str) -> Result<Option<(TaskStatus, u64)>, QueueError> {
        if check_id("task id", id).is_err() {
            return Ok(None);
        }
        let entry = self
            .kv
            .entry(id)
            .await
            .map_err(|e| broker("read task status", e))?;
        Ok(entry
            .filter(|e| e.operation == Operation::Put)
            .and_then(|e| TaskStatus::decode(&e.value).map(|s| (s, e.revision))))
    }

    /// The status of `id`, `None` if unknown or expired.
    pub(super) async fn get(&self, id: &str) -> Result<Option<TaskStatus>, QueueError> {
        let now = self.clock.now_ms();
        Ok(self
            .read(id)
            .await?
            .map(|(s, _)| s)
            .filter(|s| !s.expired(now)))
    }

    /// Applies `change` to the stored status (compare-and-set). `only_new`: write only if the
    /// task has no status yet (an enqueue racing a fast delivery must not set it back to
    /// `queued`). Failures are logged, never returned.
    pub(super) async fn record(&self, change: Change, only_new: bool) {
        let id = change.task_id.clone();
        for _ in 0..CAS_ROUNDS {
            let prev = match self.read(&id).await {
                Ok(prev) => prev,
                Err(e) => {
                    tracing::warn!(task = %id, error = %e, "nats: task status not readable");
                    return;
                }
            };
            let written: Result<(), String> = match prev {
                Some(_) if only_new => return,
                Some((prev, revision)) => {
                    let next = change.clone().apply(Some(prev)).encode();
                    match self.kv.update(&id, next.into(), revision).await {
                        Ok(_) => return,
                        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                        Err(e) => Err(e.to_string()),
                    }
                }
                None => {
                    let next = change.clone().apply(None).encode();
                    match self.kv.create(&id, next.into()).await {
                        Ok(_) => return,
                        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                        Err(e) => Err(e.to_string()),
                    }
                }
            };
            if let Err(e) = written {
                tracing::warn!(task = %id, error = %e, "nats: task status not written");
                return;
            }
        }
        tracing::warn!(task = %id, "nats: task status not written: too many concurrent writers");
    }

    /// The long poll: watch the key, read it, and return once it is final or `wait` passes.
    pub(super) async fn wait(
        &self,
        id: &str,
        wait: Duration,
    ) -> Result<Option<TaskStatus>, QueueError> {
        if check_id("task id", id).is_err() {
            return Ok(None);
        }
        let deadline = tokio::time::Instant::now() + wait;
        // Watch first, then read: a write between the two is delivered by the watch.
        let mut watch = self
            .kv
            .watch(id)
            .await
            .map_err(|e| broker("watch task status", e))?;
        let mut latest = match self.get(id).await? {
            Some(s) if !s.status.is_final() => s,
            done_or_unknown => return Ok(done_or_unknown),
        };
        loop {
            match tokio::time::timeout_at(deadline, watch.next()).await {
                Err(_) => return Ok(Some(latest)),
                Ok(Some(Ok(entry))) => {
                    if entry.operation != Operation::Put {
                        return Ok(None);
                    }
                    if let Some(s) = TaskStatus::decode(&entry.value) {
                        if s.status.is_final() {
                            return Ok(Some(s));
                        }
                        latest = s;
                    }
                }
                // The watch broke (reconnect): answer what the bucket holds now.
                Ok(Some(Err(_)) | None) => return self.get(id).await,
            }
        }
    }
}
