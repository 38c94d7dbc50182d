//! The `[queue]` section: which backend, its bounds, and the dispatcher's retry policy; and the
//! names a completion hook refers to. The types live here, in the crate every other one reads
//! config from, so that validating a file needs no runtime or broker client; `manifold_queue`
//! re-exports them and opens the backend they name.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which store holds accepted tasks.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// On-disk redb file at `path` (default).
    #[default]
    Embedded,
    /// A NATS JetStream work-queue stream at `url`, named `stream`.
    Nats,
    /// A durable RabbitMQ queue at `url`, named `queue`.
    Rabbitmq,
}

impl Backend {
    /// The name used in config and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Nats => "nats",
            Backend::Rabbitmq => "rabbitmq",
        }
    }
}

/// `[queue]`: every key optional; see `docs/offload.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// `embedded` (default), `nats` or `rabbitmq`.
    pub backend: Backend,
    /// Embedded: the queue's directory (the redb file is `queue.redb` inside it).
    pub path: PathBuf,
    /// NATS / RabbitMQ: server URL. Defaults to the local server of the chosen backend. Shown
    /// (`/config`) without its password.
    #[serde(serialize_with = "crate::redact::ser_opt_url")]
    pub url: Option<String>,
    /// NATS: stream name (letters, digits, `-`, `_`). Dead letters go to `<stream>_dead`.
    pub stream: String,
    /// NATS: durable consumer shared by all gateway replicas.
    pub consumer: String,
    /// RabbitMQ: queue name. Dead letters go to `<queue>.dead`.
    pub queue: String,
    /// Upper bound on stored bytes (pending + dead letters); enqueue beyond it fails with
    /// "queue full" (HTTP 503 + Retry-After).
    pub max_bytes: u64,
    /// Upper bound on stored tasks (pending + dead letters).
    pub max_tasks: u64,
    /// Largest accepted encoded task.
    pub max_task_bytes: usize,
    /// `Retry-After` suggested to clients when the queue is full.
    #[serde(with = "humantime_serde")]
    #[schemars(schema_with = "crate::schema::duration")]
    pub retry_after: Duration,
    /// How long a leased task may stay unacknowledged before it is delivered again. Must exceed
    /// the upstream timeout.
    #[serde(with = "humantime_serde")]
    #[schemars(schema_with = "crate::schema::duration")]
    pub lease_timeout: Duration,
    /// Delivery attempts before a task is dead-lettered.
    pub max_attempts: u32,
    /// Age after which a failing task is dead-lettered instead of retried.
    #[serde(with = "humantime_serde")]
    #[schemars(schema_with = "crate::schema::duration")]
    pub max_age: Duration,
    /// First retry delay ceiling; doubles per attempt (full jitter: the delay is uniform in
    /// `0..=ceiling`).
    #[serde(with = "humantime_serde")]
    #[schemars(schema_with = "crate::schema::duration")]
    pub backoff_base: Duration,
    /// Largest retry delay ceiling.
    #[serde(with = "humantime_serde")]
    #[schemars(schema_with = "crate::schema::duration")]
    pub backoff_max: Duration,
    /// Concurrent deliveries per upstream unless `upstream_concurrency` names it.
    pub concurrency: usize,
    /// Per-upstream concurrent deliveries, e.g. `{ shipping = 4 }`.
    pub upstream_concurrency: BTreeMap<String, usize>,
    /// Leased tasks held by one dispatcher at once, across all upstreams.
    pub max_in_flight: usize,
    /// On shutdown, how long in-flight deliveries may take to finish; the rest are released
    /// and delivered after the next start.
    #[serde(with = "humantime_serde")]
    #[schemars(schema_with = "crate::schema::duration")]
    pub drain_timeout: Duration,
    /// Where the main listener answers `GET {status_path}/{task_id}` with a task's status and
    /// result; `""` turns it off. Must not shadow or conflict with a route.
    pub status_path: String,
    /// `"authorization"`: a status answers only to a request carrying the same
    /// `Authorization` header as the request that created the task (a SHA-256 of it is
    /// stored, never the header). Unset: the task id alone is the capability.
    pub status_requires: Option<String>,
    /// The request headers that say who sent a request, whose values scope a client's
    /// `Idempotency-Key`: the same key from another principal is another task. `Authorization`
    /// by default; name the session cookie's header (`cookie`) or a trusted proxy's user header
    /// where that is how clients are told apart. `[]`: the route alone.
    pub idempotency_scope: Vec<String>,
    /// Largest upstream answer kept as a task's `result`; larger ones are dropped
    /// (`"result_omitted": true`).
    pub max_result_bytes: usize,
    /// How long a finished task's status and result are kept (then 404).
    #[serde(with = "humantime_serde")]
    #[schemars(schema_with = "crate::schema::duration")]
    pub result_ttl: Duration,
    /// Most finished statuses kept; beyond it the oldest go first.
    pub max_statuses: u64,
    /// Most bytes of finished statuses kept; beyond it the oldest go first.
    pub max_status_bytes: u64,
}

/// Most headers `idempotency_scope` may name (each is looked up for every keyed task).
const MAX_SCOPE_HEADERS: usize = 8;

/// Longest accepted `status_path`.
const MAX_STATUS_PATH: usize = 200;

/// Largest accepted `max_result_bytes` (results live in the status store, beside every other
/// status: a few of these must not crowd it).
const MAX_RESULT_LIMIT: usize = 4 << 20;

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            backend: Backend::Embedded,
            path: PathBuf::from("./manifold-data/queue"),
            url: None,
            stream: "manifold".into(),
            consumer: "manifold-dispatcher".into(),
            queue: "manifold".into(),
            max_bytes: 1 << 30,
            max_tasks: 1_000_000,
            max_task_bytes: 512 * 1024,
            retry_after: Duration::from_secs(1),
            lease_timeout: Duration::from_secs(30),
            max_attempts: 10,
            max_age: Duration::from_secs(24 * 3600),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(300),
            concurrency: 16,
            upstream_concurrency: BTreeMap::new(),
            max_in_flight: 256,
            drain_timeout: Duration::from_secs(10),
            status_path: "/tasks".into(),
            status_requires: None,
            idempotency_scope: vec!["authorization".into()],
            max_result_bytes: 64 * 1024,
            result_ttl: Duration::from_secs(3600),
            max_statuses: 100_000,
            max_status_bytes: 256 << 20,
        }
    }
}

impl QueueConfig {
    /// Checks bounds and names; the message names the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |msg: String| Err(format!("[queue] {msg}"));
        if self.max_tasks == 0 || self.max_bytes == 0 {
            return bad("max_tasks and max_bytes must be at least 1".into());
        }
        if self.max_task_bytes < 256 {
            return bad(format!(
                "max_task_bytes = {} is too small (at least 256)",
                self.max_task_bytes
            ));
        }
        if self.max_attempts == 0 {
            return bad("max_attempts must be at least 1".into());
        }
        if self.concurrency == 0 || self.max_in_flight == 0 {
            return bad("concurrency and max_in_flight must be at least 1".into());
        }
        if let Some((name, _)) = self.upstream_concurrency.iter().find(|(_, n)| **n == 0) {
            return bad(format!("upstream_concurrency.{name} must be at least 1"));
        }
        if self.lease_timeout < Duration::from_secs(1) {
            return bad("lease_timeout must be at least 1s".into());
        }
        if self.backoff_base.is_zero() || self.backoff_max < self.backoff_base {
            return bad("backoff_base must be > 0 and <= backoff_max".into());
        }
        check_status_path(&self.status_path).map_err(|m| format!("[queue] {m}"))?;
        match self.status_requires.as_deref() {
            None | Some("authorization") => {}
            Some(other) => {
                return bad(format!(
                    "status_requires = {other:?}: the only value is \"authorization\""
                ))
            }
        }
        if self.idempotency_scope.len() > MAX_SCOPE_HEADERS {
            return bad(format!(
                "idempotency_scope names {} headers; at most {MAX_SCOPE_HEADERS}",
                self.idempotency_scope.len()
            ));
        }
        for (i, name) in self.idempotency_scope.iter().enumerate() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return bad(format!("idempotency_scope: {name:?} is not a header name"));
            }
            if self.idempotency_scope[..i]
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name))
            {
                return bad(format!("idempotency_scope names {name:?} twice"));
            }
        }
        if self.max_result_bytes > MAX_RESULT_LIMIT {
            return bad(format!(
                "max_result_bytes = {} is above the limit of {MAX_RESULT_LIMIT}",
                self.max_result_bytes
            ));
        }
        if self.result_ttl < Duration::from_secs(1)
            || self.result_ttl > Duration::from_secs(30 * 86_400)
        {
            return bad("result_ttl must be between 1s and 30 days".into());
        }
        if self.max_statuses == 0 || self.max_status_bytes < 1024 {
            return bad(
                "max_statuses must be at least 1 and max_status_bytes at least 1024".into(),
            );
        }
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        match self.backend {
            Backend::Embedded => {
                if self.path.as_os_str().is_empty() {
                    return bad("path must not be empty".into());
                }
            }
            Backend::Nats => {
                if !name_ok(&self.stream) || !name_ok(&self.consumer) {
                    return bad(format!(
                        "stream {:?} and consumer {:?} must be letters, digits, '-' or '_'",
                        self.stream, self.consumer
                    ));
                }
            }
            Backend::Rabbitmq => {
                if self.queue.is_empty() || self.queue.len() > 200 {
                    return bad("queue must be 1..=200 bytes".into());
                }
                if let Some(url) = &self.url {
                    refuse_amqps(url).map_err(|m| format!("[queue] url: {m}"))?;
                }
            }
        }
        Ok(())
    }

    /// The URL to connect to: `url`, or the local server of the backend.
    pub fn url_or_default(&self) -> String {
        match (&self.url, self.backend) {
            (Some(url), _) => url.clone(),
            (None, Backend::Rabbitmq) => "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            (None, _) => "nats://127.0.0.1:4222".into(),
        }
    }

    /// Concurrent deliveries allowed for `upstream`.
    pub fn concurrency_for(&self, upstream: &str) -> usize {
        self.upstream_concurrency
            .get(upstream)
            .copied()
            .unwrap_or(self.concurrency)
    }
}

/// Refuse an `amqps://` URL. The RabbitMQ client (lapin) is built without a TLS backend, and
/// then opens an `amqps://` URL as plain TCP without a word: the credentials and every message
/// would cross the network in the clear while the URL says TLS. The scheme is read as the URL
/// parser reads it (any case, after leading blanks).
pub fn refuse_amqps(url: &str) -> Result<(), String> {
    let scheme = url
        .trim_start_matches(|c: char| c <= ' ')
        .split_once(':')
        .map_or("", |(s, _)| s);
    if scheme.eq_ignore_ascii_case("amqps") {
        return Err(format!(
            "{:?}: amqps:// (AMQP over TLS) is not supported by this build, which would open \
             it in plaintext; use amqp:// on a trusted network, or a TLS tunnel to the broker",
            crate::redact::url(url)
        ));
    }
    Ok(())
}

/// `status_path`: `""` (off) or an absolute literal path: segments of letters, digits, `-`,
/// `_` and `.`, no trailing slash, no parameters (it is a prefix the task id is appended to).
pub fn check_status_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Ok(());
    }
    let bad = |why: &str| Err(format!("status_path {path:?} {why}"));
    if path.len() > MAX_STATUS_PATH {
        return bad(&format!("is longer than {MAX_STATUS_PATH} bytes"));
    }
    if !path.starts_with('/') || path.len() < 2 {
        return bad(
            "must start with '/' and name at least one segment (or be \"\" to turn it off)",
        );
    }
    for segment in path[1..].split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return bad("has an empty, '.' or '..' segment (or a trailing '/')");
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return bad("may hold only letters, digits, '-', '_', '.' and '/'");
        }
    }
    Ok(())
}

/// `"250ms"`, `"2s"`, `"1h 30m"` ↔ [`Duration`], as the rest of the config writes durations.
pub mod humantime_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes a duration as a humantime string.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Reads a humantime string such as `"250ms"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let d = humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("bad duration {text:?}: {e}")))?;
        // The same ceiling as every other duration in the config: these are added to the
        // clock and multiplied (backoff), which panics past its range.
        if d > crate::compile::MAX_DURATION {
            return Err(serde::de::Error::custom(format!(
                "duration {text:?} is longer than a year (366 days), the most any duration here may be"
            )));
        }
        Ok(d)
    }
}

// What a completion hook (`on_done` / `on_dead`) refers to: the config compiles hook templates
// with these, the queue fills them in when the parent settles.

/// Which settlement a hook follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    /// The parent was delivered (2xx, or the broker confirmed).
    OnDone,
    /// The parent was dead-lettered.
    OnDead,
}

impl HookKind {
    /// `on_done` / `on_dead`: the config key, the suffix of the hook's idempotency key, and the
    /// key under `hooks` in the parent's status.
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::OnDone => "on_done",
            HookKind::OnDead => "on_dead",
        }
    }
}

/// A value only the settlement knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskVar {
    /// The parent's task id.
    Id,
    /// The parent upstream's JSON answer (null when it was omitted or empty).
    Result,
    /// The parent's last error (null when none).
    Error,
    /// The parent's `attempts` as its status reports them: failed attempts (0 for a task
    /// delivered at its first try; `max_attempts` for one that died of them).
    Attempts,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_embedded() {
        let cfg = QueueConfig::default();
        cfg.validate().unwrap();
        assert_eq!(cfg.backend, Backend::Embedded);
        assert_eq!(cfg.path, PathBuf::from("./manifold-data/queue"));
    }

    #[test]
    fn parses_durations_and_per_upstream_concurrency() {
        let cfg: QueueConfig = serde_json::from_value(serde_json::json!({
            "backend": "nats",
            "url": "nats://127.0.0.1:4222",
            "stream": "orders",
            "max_age": "2h",
            "backoff_base": "250ms",
            "upstream_concurrency": { "shipping": 4 }
        }))
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.backend, Backend::Nats);
        assert_eq!(cfg.max_age, Duration::from_secs(7200));
        assert_eq!(cfg.backoff_base, Duration::from_millis(250));
        assert_eq!(cfg.concurrency_for("shipping"), 4);
        assert_eq!(cfg.concurrency_for("other"), 16);
        let back = serde_json::to_value(&cfg).unwrap();
        assert_eq!(back["max_age"], "2h");
    }

    /// lapin, built without a TLS backend, opens `amqps://` as plain TCP: refused, in any
    /// case and after blanks, without the password in the message; `amqp://` stays.
    #[test]
    fn an_amqps_url_is_refused() {
        for url in [
            "amqps://guest:hunter2@broker:5671/%2f",
            "AMQPS://guest:hunter2@broker:5671/%2f",
            " amqps://guest:hunter2@broker:5671/%2f",
        ] {
            let cfg = QueueConfig {
                backend: Backend::Rabbitmq,
                url: Some(url.into()),
                ..QueueConfig::default()
            };
            let e = cfg.validate().unwrap_err();
            assert!(e.contains("amqps://") && e.contains("plaintext"), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        let cfg = QueueConfig {
            backend: Backend::Rabbitmq,
            url: Some("amqp://guest:guest@broker:5672/%2f".into()),
            ..QueueConfig::default()
        };
        cfg.validate().unwrap();
    }

    /// `/config` serializes the queue section: its broker password must not show.
    #[test]
    fn the_url_is_serialized_without_its_password() {
        let cfg = QueueConfig {
            backend: Backend::Rabbitmq,
            url: Some("amqp://guest:hunter2@127.0.0.1:5672/%2f".into()),
            ..QueueConfig::default()
        };
        let shown = serde_json::to_string(&cfg).unwrap();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("amqp://guest:***@127.0.0.1:5672/%2f"),
            "{shown}"
        );
    }

    /// The `[queue]` example in docs/offload.md is what users copy: it must parse and validate.
    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("../../../docs/offload.md");
        let start = doc
            .find("```toml\n[queue]")
            .expect("a [queue] example in the docs")
            + 8;
        let end = start + doc[start..].find("```").expect("closed code block");
        let table: toml::Table = toml::from_str(&doc[start..end]).unwrap();
        let cfg: QueueConfig = table["queue"].clone().try_into().unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.max_age, Duration::from_secs(6 * 3600));
        assert_eq!(cfg.concurrency_for("shipping"), 4);
    }

    #[test]
    fn idempotency_scope_defaults_to_authorization_and_refuses_what_is_no_header() {
        assert_eq!(QueueConfig::default().idempotency_scope, ["authorization"]);
        let with = |names: &[&str]| QueueConfig {
            idempotency_scope: names.iter().map(|n| (*n).to_owned()).collect(),
            ..QueueConfig::default()
        };
        for ok in [&[][..], &["cookie"], &["authorization", "x-user-id"]] {
            with(ok).validate().unwrap();
        }
        for (bad, why) in [
            (&["x user"][..], "not a header name"),
            (&[""], "not a header name"),
            (&["cookie\n"], "not a header name"),
            (&["cookie", "Cookie"], "twice"),
            (&["a", "b", "c", "d", "e", "f", "g", "h", "i"], "at most 8"),
        ] {
            let e = with(bad).validate().unwrap_err();
            assert!(
                e.contains("idempotency_scope") && e.contains(why),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn status_keys_default_and_hostile_values_are_refused() {
        let cfg = QueueConfig::default();
        assert_eq!(cfg.status_path, "/tasks");
        assert_eq!(cfg.max_result_bytes, 64 * 1024);
        assert_eq!(cfg.result_ttl, Duration::from_secs(3600));
        for ok in ["", "/tasks", "/v1/task-status", "/a.b_c"] {
            check_status_path(ok).unwrap();
        }
        for bad in [
            "tasks",
            "/",
            "/tasks/",
            "/t/{id}",
            "/t/{*x}",
            "//t",
            "/t/../admin",
            "/t/.",
            "/t?x=1",
            "/t#f",
            "/tâches",
            "/t%2f",
            "/t t",
        ] {
            assert!(check_status_path(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_status_path(&format!("/{}", "a".repeat(300))).is_err());
        let cfg = QueueConfig {
            status_requires: Some("cookie".into()),
            ..QueueConfig::default()
        };
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("status_requires"));
        let cfg = QueueConfig {
            max_result_bytes: 1 << 30,
            ..QueueConfig::default()
        };
        assert!(cfg.validate().is_err());
        let cfg = QueueConfig {
            result_ttl: Duration::ZERO,
            ..QueueConfig::default()
        };
        assert!(cfg.validate().is_err());
        let cfg = QueueConfig {
            status_requires: Some("authorization".into()),
            status_path: "".into(),
            ..QueueConfig::default()
        };
        cfg.validate().unwrap();
    }

    #[test]
    fn rejects_unknown_keys_bad_durations_and_bounds() {
        let unknown = serde_json::from_value::<QueueConfig>(serde_json::json!({"bakend": "x"}));
        assert!(unknown.is_err());
        let bad = serde_json::from_value::<QueueConfig>(serde_json::json!({"max_age": "soon"}));
        assert!(bad.unwrap_err().to_string().contains("bad duration"));
        // Parses, but a backoff or lease this long overflows the clock it is added to.
        let huge = serde_json::from_value::<QueueConfig>(
            serde_json::json!({"backoff_max": "18446744073709551615s"}),
        );
        assert!(huge.unwrap_err().to_string().contains("longer than a year"));
        let cfg = QueueConfig {
            max_tasks: 0,
            ..QueueConfig::default()
        };
        assert!(cfg.validate().is_err());
        let cfg = QueueConfig {
            backend: Backend::Nats,
            stream: "a.b".into(),
            ..QueueConfig::default()
        };
        assert!(cfg.validate().is_err());
    }
}
