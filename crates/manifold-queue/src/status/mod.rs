//! Task status: what a client holding a `task_id` (and an operator) can learn about an
//! offloaded call — queued, being delivered, waiting for a retry, done with the upstream's
//! answer, or dead.
//!
//! The status lives where the queue's state lives, so any replica can answer: the embedded
//! backend commits it in the same redb transaction as the task's own transitions, NATS keeps it
//! in a JetStream key-value bucket beside the stream. This module holds the backend-neutral
//! part: the record, how a transition changes it, the result's limits, and the in-process
//! wake-ups that make a long poll free while it waits.

pub mod local;
#[cfg(feature = "rabbitmq")]
pub mod redis;
pub mod tracked;
mod watch;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::task::Task;

pub use tracked::{StatusStore, Tracked};
pub use watch::Watchers;

/// Transitions remembered per task (`manifold queue status ID` prints them); older ones are
/// dropped first, so a task retried a thousand times keeps a bounded record.
pub const MAX_HISTORY: usize = 32;

/// Longest `last_error` kept in a status, in bytes.
const MAX_ERROR_BYTES: usize = 512;

/// Where a task is in its life.
///
/// ```text
/// queued ─► delivering ─► done
///   ▲            │
///   │            ├─► retrying ─► delivering ─► …
///   │            └─► dead (max_attempts, max_age, permanent error)
///   └──────────── replay of a dead letter
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Accepted and durable, not attempted yet.
    Queued,
    /// An attempt is running now.
    Delivering,
    /// An attempt failed; the next one is scheduled.
    Retrying,
    /// The upstream answered 2xx (or the broker confirmed the event).
    Done,
    /// Given up: in the dead letters.
    Dead,
}

impl State {
    /// `done` and `dead` end a task's life: a long poll returns on them.
    pub fn is_final(self) -> bool {
        matches!(self, State::Done | State::Dead)
    }

    /// The name used in answers.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Delivering => "delivering",
            State::Retrying => "retrying",
            State::Done => "done",
            State::Dead => "dead",
        }
    }
}

/// One transition, as `manifold queue status ID` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// The state entered.
    pub status: State,
    /// When, in milliseconds since the Unix epoch.
    pub at: u64,
    /// Attempts made when it was entered.
    pub attempts: u32,
    /// The error that caused it (retrying, dead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The stored status of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// The task's id.
    pub task_id: String,
    /// Where it is now.
    pub status: State,
    /// Delivery attempts made (brokers that count deliveries report those).
    pub attempts: u32,
    /// Why the last attempt failed, if one did.
    pub last_error: Option<String>,
    /// When the status last changed, in milliseconds since the Unix epoch.
    pub updated_at: u64,
    /// The upstream's HTTP status once `done`.
    pub result_status: Option<u16>,
    /// The upstream's answer once `done`: its JSON, or its text as a JSON string.
    pub result: Option<serde_json::Value>,
    /// The answer was larger than `max_result_bytes` (or not text) and was not kept.
    #[serde(default, skip_serializing_if = "is_false")]
    pub result_omitted: bool,
    /// After this time (ms since the epoch) the status is gone: 404. Set when the task ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// SHA-256 (hex) of the creating request's `Authorization` header, when the gateway's
    /// `status_requires = "authorization"`: never the header itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// The last [`MAX_HISTORY`] transitions, oldest first.
    #[serde(default)]
    pub history: Vec<Step>,
    /// The hook tasks this task's settlement enqueued, by kind (`on_done`, `on_dead`): each has
    /// its own status under its id.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub hooks: std::collections::BTreeMap<String, String>,
    /// For a hook task: the task whose settlement enqueued it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_of: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What one delivery returned, as the dispatcher hands it to the queue with the ack.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// The upstream's status (200 for a confirmed event).
    pub status: u16,
    /// The answer's body; `None` when it was larger than the gateway reads for results.
    pub body: Option<Vec<u8>>,
}

/// The `[queue]` keys that bound statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusLimits {
    /// How long a finished task's status and result are kept.
    pub result_ttl: Duration,
    /// Largest result kept, in bytes.
    pub max_result_bytes: usize,
    /// Most finished statuses kept (the oldest are dropped first beyond it).
    pub max_statuses: u64,
    /// Most bytes of finished statuses kept.
    pub max_status_bytes: u64,
}

impl StatusLimits {
    /// The limits of a `[queue]` section.
    pub fn from_config(cfg: &crate::QueueConfig) -> Self {
        StatusLimits {
            result_ttl: cfg.result_ttl,
            max_result_bytes: cfg.max_result_bytes,
            max_statuses: cfg.max_statuses,
            max_status_bytes: cfg.max_status_bytes,
        }
    }
}

impl Default for StatusLimits {
    fn default() -> Self {
        StatusLimits::from_config(&crate::QueueConfig::default())
    }
}

/// A change to a task's status, applied to whatever is stored ([`Change::apply`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The task's id.
    pub task_id: String,
    /// The state entered.
    pub status: State,
    /// Attempts made.
    pub attempts: u32,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// When.
    pub at: u64,
    /// The `Authorization` hash carried by the task.
    pub auth: Option<String>,
    /// The answer, for `done`.
    pub outcome: Option<Outcome>,
    /// Kept until (ms since the epoch), for final states.
    pub expires_at: Option<u64>,
    /// The largest result kept.
    pub max_result_bytes: usize,
    /// The hook task enqueued with this transition: `(kind, task id)`.
    pub hook: Option<(crate::hooks::HookKind, String)>,
    /// For a hook task: its parent's id.
    pub hook_of: Option<String>,
}

impl Change {
    /// `task` entered `status` at `now`, with `outcome` when done.
    pub fn of(
        task: &Task,
        status: State,
        outcome: Option<Outcome>,
        now: u64,
        limits: &StatusLimits,
    ) -> Self {
        let ttl = u64::try_from(limits.result_ttl.as_millis()).unwrap_or(u64::MAX);
        Change {
            task_id: task.id.clone(),
            status,
            attempts: task.attempts,
            last_error: task.last_error.as_deref().map(clip_error),
            at: now,
            auth: task.status_auth.clone(),
            outcome,
            expires_at: status.is_final().then(|| now.saturating_add(ttl)),
            max_result_bytes: limits.max_result_bytes,
            hook: None,
            hook_of: task.hook_of.clone(),
        }
    }

    /// The same change, naming the hook task enqueued with it.
    pub fn with_hook_id(mut self, hook: Option<String>, kind: crate::hooks::HookKind) -> Self {
        self.hook = hook.map(|id| (kind, id));
        self
    }

    /// The status after this change, given the stored one.
    pub fn apply(self, prev: Option<TaskStatus>) -> TaskStatus {
        let mut s = prev.unwrap_or_else(|| TaskStatus {
            task_id: self.task_id.clone(),
            status: State::Queued,
            attempts: 0,
            last_error: None,
            updated_at: self.at,
            result_status: None,
            result: None,
            result_omitted: false,
            expires_at: None,
            auth: None,
            history: Vec::new(),
            hooks: std::collections::BTreeMap::new(),
            hook_of: None,
        });
        // A replay (dead → queued) starts a new life: the old answer goes.
        if self.status == State::Queued {
            s.result_status = None;
            s.result = None;
            s.result_omitted = false;
        }
        s.status = self.status;
        s.attempts = self.attempts;
        if self.last_error.is_some() || self.status == State::Queued {
            s.last_error = self.last_error.clone();
        }
        s.updated_at = self.at;
        s.expires_at = self.expires_at;
        if self.auth.is_some() {
            s.auth = self.auth;
        }
        if let Some((kind, id)) = self.hook {
            s.hooks.insert(kind.as_str().to_owned(), id);
        }
        if self.hook_of.is_some() {
            s.hook_of = self.hook_of;
        }
        if let Some(outcome) = self.outcome {
            s.result_status = Some(outcome.status);
            let (result, omitted) = result_of(outcome.body, self.max_result_bytes);
            s.result = result;
            s.result_omitted = omitted;
        }
        let error = match self.status {
            State::Retrying | State::Dead => self.last_error,
            _ => None,
        };
        s.history.push(Step {
            status: self.status,
            at: self.at,
            attempts: self.attempts,
            error,
        });
        if s.history.len() > MAX_HISTORY {
            let extra = s.history.len() - MAX_HISTORY;
            s.history.drain(..extra);
        }
        s
    }
}

/// The stored form of an answer: its JSON, or its UTF-8 text as a JSON string; `None` and
/// omitted when it is larger than `max` or binary.
fn result_of(body: Option<Vec<u8>>, max: usize) -> (Option<serde_json::Value>, bool) {
    match body {
        None => (None, true),
        Some(b) if b.len() > max => (None, true),
        Some(b) if b.is_empty() => (None, false),
        Some(b) => match serde_json::from_slice::<serde_json::Value>(&b) {
            Ok(v) => (Some(v), false),
            Err(_) => match String::from_utf8(b) {
                Ok(text) => (Some(serde_json::Value::String(text)), false),
                Err(_) => (None, true),
            },
        },
    }
}

fn clip_error(e: &str) -> String {
    if e.len() <= MAX_ERROR_BYTES {
        return e.to_owned();
    }
    let mut end = MAX_ERROR_BYTES;
    while !e.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &e[..end])
}

impl TaskStatus {
    /// Encoded as stored (JSON).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a stored status; `None` for bytes that are not one.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    /// Gone by `now` (ms since the epoch): answered as unknown.
    pub fn expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    /// What a client sees: everything but the `Authorization` hash and the history.
    pub fn public(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "task_id": self.task_id,
            "status": self.status,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "updated_at": self.updated_at,
            "result_status": self.result_status,
            "result": self.result,
        });
        if self.result_omitted {
            v["result_omitted"] = serde_json::Value::Bool(true);
        }
        if !self.hooks.is_empty() {
            v["hooks"] = serde_json::json!(self.hooks);
        }
        if let Some(parent) = &self.hook_of {
            v["hook_of"] = serde_json::Value::String(parent.clone());
        }
        v
    }

    /// Whether a request with `authorization` (the header's value, if any) may read this
    /// status: always when the task was created without a hash, else only with the same
    /// header, compared as hashes in constant time.
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        match (&self.auth, authorization) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(stored), Some(given)) => crate::task::ids_equal(stored, &auth_hash(given)),
        }
    }
}

/// The status after a failed (or never started) attempt: `retrying` once one was made, else
/// still `queued` (a lease given back untouched, a delivery deferred behind a busy upstream).
pub(crate) fn after_attempt(task: &Task) -> State {
    if task.attempts == 0 && task.last_error.is_none() {
        State::Queued
    } else {
        State::Retrying
    }
}

/// The long poll over an in-process store: register with `watchers`, read, and until the status
/// is final or `wait` passes, sleep on the task's notification and read again. No timer wakes
/// it in between: it costs nothing while it waits.
pub(crate) async fn long_poll(
    watchers: &Watchers,
    id: &str,
    wait: Duration,
    read: impl Fn() -> Result<Option<TaskStatus>, crate::QueueError>,
) -> Result<Option<TaskStatus>, crate::QueueError> {
    let deadline = tokio::time::Instant::now() + wait;
    let watch = watchers.watch(id);
    loop {
        let changed = watch.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let status = read()?;
        match &status {
            Some(s) if !s.status.is_final() => {}
            _ => return Ok(status),
        }
        tokio::select! {
            _ = &mut changed => {}
            _ = tokio::time::sleep_until(deadline) => return Ok(status),
        }
    }
}

/// SHA-256 of an `Authorization` header value, hex: what a task stores instead of the header.
pub fn auth_hash(header: &[u8]) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(header);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
