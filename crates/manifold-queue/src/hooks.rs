//! Completion hooks: what an offloaded call asks to happen once it settles — a call to a
//! configured upstream or an event through `[events]` when it is `done` (`on_done`) or `dead`
//! (`on_dead`, the compensation step of a saga).
//!
//! A hook is rendered in two halves, and the split is what makes it correct by construction:
//! - **at accept time**, by the gateway, with everything the parent call could read (the
//!   request, earlier calls' results): those values are baked into the parent task as literal
//!   text and JSON. Nothing the hook needs from the request has to survive anywhere else, and no
//!   request value is ever re-read as a template;
//! - **at settle time**, by the queue, with the four values only the settlement knows:
//!   `{task.id}`, `{task.result}` (done), `{task.error}` and `{task.attempts}`. They are
//!   structured placeholders ([`TaskVar`]) in the stored hook, never text scanned for braces, so
//!   an answer or request value that contains `{task.error}` stays that literal text.
//!
//! The hook task's id is drawn when the parent is rendered, so every settlement of the parent
//! (a redelivery after a crash between "hook stored" and "parent acked") produces the same hook
//! task; its idempotency key is `<parent key>:on_done` / `:on_dead`, so the receiving upstream
//! processes it once even when a broker backend stores it twice.

use serde::{Deserialize, Serialize};

use crate::status::Outcome;
use crate::task::{Task, MAX_ID_LEN};

pub use manifold_config::queue::{HookKind, TaskVar};

/// A settle-time reference: a [`TaskVar`] and, for `result`, steps into it
/// (`{task.result.label.id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRef {
    /// The value.
    pub var: TaskVar,
    /// Object keys (or array indexes, when all digits) into `result`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<String>,
}

/// A piece of text: literal (already rendered at accept time) or a settle-time value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Piece {
    /// Text as is.
    Lit(String),
    /// A settle-time value, as text (strings as they are, other values as JSON text).
    Task(TaskRef),
}

/// A hook body: JSON rendered at accept time, with settle-time values where the template had
/// them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyTpl {
    /// A finished JSON value.
    Json(serde_json::Value),
    /// A settle-time value with its JSON type (`body = "{task.result}"`).
    Task(TaskRef),
    /// A JSON string with settle-time values in it.
    Text(Vec<Piece>),
    /// An array.
    Array(Vec<BodyTpl>),
    /// An object, keys in the order written.
    Object(Vec<(String, BodyTpl)>),
}

/// Where a hook goes: only ever a configured upstream or an `[events]` subject, named in the
/// config (never a URL taken from a request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A call to `[upstreams.NAME]`.
    Upstream {
        /// The upstream's name.
        upstream: String,
        /// HTTP method.
        method: String,
        /// Path and query: rendered and percent-encoded at accept time; settle-time values
        /// here are limited to `{task.id}` and `{task.attempts}` (safe alphabets, checked by
        /// the config), so no settle-time value can change the URL's shape.
        path: Vec<Piece>,
    },
    /// An event through `[events]` under this subject.
    Publish {
        /// The NATS subject / RabbitMQ routing key.
        subject: String,
    },
}

/// One hook, half rendered: stored inside its parent task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    /// The hook task's id, drawn when the parent was rendered.
    pub id: String,
    /// Where it goes.
    pub target: Target,
    /// Headers, fully rendered at accept time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// The body; `None` sends none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<BodyTpl>,
}

/// A task's hooks.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Hooks {
    /// Enqueued when the task is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_done: Option<Hook>,
    /// Enqueued when the task is dead-lettered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_dead: Option<Hook>,
}

impl Hooks {
    /// The hook for `kind`, if declared.
    pub fn get(&self, kind: HookKind) -> Option<&Hook> {
        match kind {
            HookKind::OnDone => self.on_done.as_ref(),
            HookKind::OnDead => self.on_dead.as_ref(),
        }
    }

    /// Whether no hook is declared.
    pub fn is_empty(&self) -> bool {
        self.on_done.is_none() && self.on_dead.is_none()
    }

    /// Checks the hooks' ids and targets (a task from a broker is input like any other).
    pub(crate) fn validate(&self) -> Result<(), crate::QueueError> {
        for hook in [&self.on_done, &self.on_dead].into_iter().flatten() {
            crate::task::check_id("hook task id", &hook.id)?;
            if let Target::Publish { subject } = &hook.target {
                crate::events::check_subject(subject).map_err(crate::QueueError::Invalid)?;
            }
        }
        Ok(())
    }
}

/// The values a settlement gives its hook.
struct Settled<'a> {
    parent: &'a Task,
    result: Option<serde_json::Value>,
}

impl Settled<'_> {
    fn value(&self, r: &TaskRef) -> serde_json::Value {
        use serde_json::Value;
        match r.var {
            TaskVar::Id => Value::String(self.parent.id.clone()),
            TaskVar::Attempts => Value::from(self.parent.attempts),
            TaskVar::Error => self
                .parent
                .last_error
                .clone()
                .map_or(Value::Null, Value::String),
            TaskVar::Result => {
                let mut cur = self.result.as_ref();
                for step in &r.steps {
                    cur = match cur {
                        Some(Value::Object(map)) => map.get(step),
                        Some(Value::Array(items)) => {
                            step.parse::<usize>().ok().and_then(|i| items.get(i))
                        }
                        _ => None,
                    };
                }
                cur.cloned().unwrap_or(Value::Null)
            }
        }
    }

    fn text(&self, pieces: &[Piece]) -> String {
        let mut out = String::new();
        for p in pieces {
            match p {
                Piece::Lit(l) => out.push_str(l),
                Piece::Task(r) => match self.value(r) {
                    serde_json::Value::String(s) => out.push_str(&s),
                    serde_json::Value::Null => {}
                    other => out.push_str(&other.to_string()),
                },
            }
        }
        out
    }

    fn body(&self, t: &BodyTpl) -> serde_json::Value {
        match t {
            BodyTpl::Json(v) => v.clone(),
            BodyTpl::Task(r) => self.value(r),
            BodyTpl::Text(pieces) => serde_json::Value::String(self.text(pieces)),
            BodyTpl::Array(items) => items.iter().map(|i| self.body(i)).collect(),
            BodyTpl::Object(fields) => serde_json::Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), self.body(v)))
                    .collect(),
            ),
        }
    }
}

/// A fresh hook task id: as random as any task id (a hook's id is a capability to its status
/// too), drawn when the parent is rendered.
pub fn new_id() -> String {
    crate::task::new_task_id()
}

/// The idempotency key of `parent`'s `kind` hook: `<parent key>:on_done`. A parent key so long
/// that this would pass [`MAX_ID_LEN`] is replaced by its SHA-256 prefix, still derived from it
/// alone, so every settlement of the parent gives the same key.
pub fn hook_key(parent_key: &str, kind: HookKind) -> String {
    let suffix = kind.as_str();
    if parent_key.len() + 1 + suffix.len() <= MAX_ID_LEN {
        return format!("{parent_key}:{suffix}");
    }
    let hash = crate::status::auth_hash(parent_key.as_bytes());
    format!("{}:{suffix}", &hash[..64])
}

/// The task `parent`'s `kind` hook becomes when the parent settles that way (`outcome`: what the
/// delivery returned, for `done`); `None` when it declares no such hook. Hooks have no hooks:
/// the task built here has none, whatever the parent stored.
pub fn follow_up(parent: &Task, kind: HookKind, outcome: Option<&Outcome>) -> Option<Task> {
    let hook = parent.hooks.as_ref()?.get(kind)?;
    let result = match kind {
        HookKind::OnDone => outcome
            .and_then(|o| o.body.as_deref())
            .filter(|b| !b.is_empty())
            .map(|b| {
                serde_json::from_slice(b).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(b).into_owned())
                })
            }),
        HookKind::OnDead => None,
    };
    let settled = Settled { parent, result };
    let mut headers = hook.headers.clone();
    let body = match &hook.body {
        Some(t) => {
            if !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            {
                headers.push(("content-type".into(), "application/json".into()));
            }
            serde_json::to_vec(&settled.body(t)).unwrap_or_default()
        }
        None => Vec::new(),
    };
    let key = hook_key(&parent.idempotency_key, kind);
    let mut task = match &hook.target {
        Target::Upstream {
            upstream,
            method,
            path,
        } => Task::new(
            key,
            upstream.clone(),
            method.clone(),
            settled.text(path),
            headers,
            body,
        ),
        Target::Publish { subject } => Task::event(key, subject.clone(), headers, body),
    };
    task.id.clone_from(&hook.id);
    task.status_auth.clone_from(&parent.status_auth);
    task.hook_of = Some(parent.id.clone());
    Some(task)
}

/// For backends with no transaction spanning two tasks (NATS, RabbitMQ): builds `parent`'s
/// `kind` hook and stores it with `enqueue` **before** the caller settles the parent, and
/// answers the hook's id for the parent's status.
///
/// A crash between the two delivers the parent again and stores the same hook again: same id
/// (NATS drops the copy by message id within the stream's duplicate window) and same
/// idempotency key (the receiving upstream drops it otherwise). Hooks are at least once. A hook
/// the queue refuses as input (larger than `max_task_bytes`) is logged and skipped: refusing the
/// parent's settlement for it would redeliver the parent forever. Any other error (broker down,
/// queue full) is returned and the parent stays unsettled, to be delivered again.
pub(crate) async fn store_before_settle<F>(
    parent: &Task,
    kind: HookKind,
    outcome: Option<&Outcome>,
    enqueue: impl FnOnce(Task) -> F,
) -> Result<Option<String>, crate::QueueError>
where
    F: std::future::Future<Output = Result<(), crate::QueueError>>,
{
    let Some(hook) = follow_up(parent, kind, outcome) else {
        return Ok(None);
    };
    let id = hook.id.clone();
    match enqueue(hook).await {
        Ok(()) => Ok(Some(id)),
        Err(e) if e.kind() == crate::ErrorKind::Input => {
            tracing::error!(hook = %id, parent = %parent.id, error = %e, "completion hook cannot be stored; skipped");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> Piece {
        Piece::Lit(s.into())
    }

    fn var(var: TaskVar) -> TaskRef {
        TaskRef {
            var,
            steps: Vec::new(),
        }
    }

    fn parent() -> Task {
        let mut t = Task::new(
            "client-7:shipping",
            "shipping",
            "POST",
            "/labels",
            vec![],
            b"{}".to_vec(),
        );
        t.hooks = Some(Box::new(Hooks {
            on_done: Some(Hook {
                id: "hookdone1".into(),
                target: Target::Upstream {
                    upstream: "notify".into(),
                    method: "POST".into(),
                    path: vec![lit("/hooks/"), Piece::Task(var(TaskVar::Id))],
                },
                headers: vec![],
                body: Some(BodyTpl::Task(var(TaskVar::Result))),
            }),
            on_dead: Some(Hook {
                id: "hookdead1".into(),
                target: Target::Upstream {
                    upstream: "payment".into(),
                    method: "POST".into(),
                    path: vec![lit("/payments/p%2F1/refund")],
                },
                headers: vec![("x-order".into(), "42".into())],
                body: Some(BodyTpl::Object(vec![
                    ("order".into(), BodyTpl::Json(serde_json::json!(42))),
                    ("reason".into(), BodyTpl::Task(var(TaskVar::Error))),
                    (
                        "note".into(),
                        BodyTpl::Text(vec![
                            lit("after "),
                            Piece::Task(var(TaskVar::Attempts)),
                            lit(" attempts"),
                        ]),
                    ),
                ])),
            }),
        }));
        t
    }

    #[test]
    fn on_done_reads_the_result_and_the_id() {
        let p = parent();
        let outcome = Outcome {
            status: 201,
            body: Some(br#"{"label":"L-1"}"#.to_vec()),
        };
        let hook = follow_up(&p, HookKind::OnDone, Some(&outcome)).unwrap();
        assert_eq!(hook.id, "hookdone1");
        assert_eq!(hook.upstream, "notify");
        assert_eq!(hook.path_and_query, format!("/hooks/{}", p.id));
        assert_eq!(hook.idempotency_key, "client-7:shipping:on_done");
        assert_eq!(hook.body, br#"{"label":"L-1"}"#);
        assert_eq!(hook.hook_of.as_deref(), Some(p.id.as_str()));
        assert!(hook.hooks.is_none(), "hooks have no hooks");
        hook.validate(1 << 20).unwrap();
    }

    #[test]
    fn on_dead_reads_the_error_and_attempts_and_keeps_literals_literal() {
        let mut p = parent();
        p.attempts = 3;
        // A value that looks like a template stays text: nothing is re-parsed.
        p.last_error = Some("upstream: status 503 {task.id}".into());
        let hook = follow_up(&p, HookKind::OnDead, None).unwrap();
        assert_eq!(hook.path_and_query, "/payments/p%2F1/refund");
        assert_eq!(hook.idempotency_key, "client-7:shipping:on_dead");
        let body: serde_json::Value = serde_json::from_slice(&hook.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"order": 42, "reason": "upstream: status 503 {task.id}", "note": "after 3 attempts"})
        );
        assert!(hook
            .headers
            .contains(&("content-type".into(), "application/json".into())));
    }

    #[test]
    fn no_hook_no_task_and_result_steps_walk_into_the_answer() {
        let mut p = parent();
        assert!(follow_up(
            &Task::new("k", "u", "POST", "/", vec![], vec![]),
            HookKind::OnDone,
            None
        )
        .is_none());
        if let Some(h) = p.hooks.as_mut().and_then(|h| h.on_done.as_mut()) {
            h.body = Some(BodyTpl::Task(TaskRef {
                var: TaskVar::Result,
                steps: vec!["items".into(), "1".into()],
            }));
        }
        let outcome = Outcome {
            status: 200,
            body: Some(br#"{"items":["a","b"]}"#.to_vec()),
        };
        let hook = follow_up(&p, HookKind::OnDone, Some(&outcome)).unwrap();
        assert_eq!(hook.body, br#""b""#);
        // An omitted answer reads as null.
        let hook = follow_up(&p, HookKind::OnDone, None).unwrap();
        assert_eq!(hook.body, b"null");
    }

    #[test]
    fn long_parent_keys_give_a_bounded_stable_key() {
        let long = "k".repeat(MAX_ID_LEN);
        let a = hook_key(&long, HookKind::OnDead);
        assert!(a.len() <= MAX_ID_LEN);
        assert_eq!(a, hook_key(&long, HookKind::OnDead));
        assert_ne!(a, hook_key(&"j".repeat(MAX_ID_LEN), HookKind::OnDead));
    }

    #[test]
    fn hooks_survive_the_task_encoding() {
        let p = parent();
        let bytes = p.validate(1 << 20).unwrap();
        assert_eq!(Task::decode(&bytes).unwrap(), p);
    }
}
