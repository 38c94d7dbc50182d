//! The unit of offloaded work: one rendered upstream call, ready to be delivered later.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::error::QueueError;

/// The header that carries [`Task::idempotency_key`] on every delivery attempt.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

/// The `upstream` of event tasks ([`Task::event`]): the dispatcher's concurrency key for
/// publishes, and what dead-letter listings show.
pub const EVENTS_UPSTREAM: &str = "events";

/// Longest accepted task id or idempotency key, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// One offloaded upstream call, rendered at accept time and delivered later by the dispatcher.
///
/// Everything the dispatcher needs is inside the task, so a task accepted by one gateway replica
/// can be delivered by another, or by the same one after a restart.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Unique id, given at accept time (`{CALL.task_id}` in the response). Letters, digits, `-`
    /// and `_` only, so it can name a NATS subject or a file.
    pub id: String,
    /// Sent as the `Idempotency-Key` header on every attempt, so the upstream can turn
    /// at-least-once delivery into exactly-once processing. Stable per request and call.
    pub idempotency_key: String,
    /// Name of the upstream (`[upstreams.NAME]`) that receives the call.
    pub upstream: String,
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Path and query, already rendered and percent-encoded, e.g. `/shipping/labels?x=1`.
    pub path_and_query: String,
    /// Request headers to send (the dispatcher adds `Idempotency-Key` itself).
    pub headers: Vec<(String, String)>,
    /// Request body, stored as base64 in the JSON encoding.
    #[serde(with = "body_base64")]
    pub body: Vec<u8>,
    /// Delivery attempts made so far (0 for a fresh task). Brokers that count deliveries rather
    /// than failures (NATS) report deliveries, which can be higher after a crash.
    pub attempts: u32,
    /// When the task was accepted, in milliseconds since the Unix epoch.
    pub enqueued_at: u64,
    /// Earliest time of the next attempt, in milliseconds since the Unix epoch; 0 means due
    /// now (fresh and replayed tasks), so clocks that differ by a millisecond never delay them.
    pub not_before: u64,
    /// Why the last attempt failed, if one did.
    pub last_error: Option<String>,
    /// `Some(subject)` for an event (`mode = "publish"`): the dispatcher publishes `body` to the
    /// `[events]` broker under this NATS subject / RabbitMQ routing key instead of calling an
    /// upstream. Absent from the encoding of ordinary tasks, so tasks stored before events
    /// existed decode unchanged (and a gateway that predates events ignores the field and
    /// dead-letters the task as addressed to an unknown upstream rather than losing it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<String>,
    /// SHA-256 (hex) of the creating request's `Authorization` header when the gateway's
    /// `status_requires = "authorization"`: the status answers only to the same header. The
    /// hash, never the header (see [`crate::status::auth_hash`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_auth: Option<String>,
    /// What to enqueue when this task settles (`on_done`, `on_dead`), half rendered at accept
    /// time (see [`crate::hooks`]). Absent from the encoding when there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<Box<crate::hooks::Hooks>>,
    /// For a hook task: the id of the task whose settlement enqueued it. A hook task never has
    /// hooks of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_of: Option<String>,
}

impl fmt::Debug for Task {
    // Bodies and headers can carry personal data and be large: show their sizes only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("id", &self.id)
            .field("idempotency_key", &self.idempotency_key)
            .field("upstream", &self.upstream)
            .field("method", &self.method)
            .field("path_and_query", &self.path_and_query)
            .field("headers", &self.headers.len())
            .field("body_bytes", &self.body.len())
            .field("attempts", &self.attempts)
            .field("enqueued_at", &self.enqueued_at)
            .field("not_before", &self.not_before)
            .field("last_error", &self.last_error)
            .field("publish", &self.publish)
            .field("status_auth", &self.status_auth.is_some())
            .field("hooks", &self.hooks.is_some())
            .field("hook_of", &self.hook_of)
            .finish()
    }
}

impl Task {
    /// A fresh task with a new random id, due now (`not_before` 0). `idempotency_key` should be derived from the
    /// request and the call (the gateway's job), so a client retry of the same request maps to
    /// the same key.
    pub fn new(
        idempotency_key: impl Into<String>,
        upstream: impl Into<String>,
        method: impl Into<String>,
        path_and_query: impl Into<String>,
        headers: Vec<(String, String)>,
        body: impl Into<Vec<u8>>,
    ) -> Self {
        let now = Clock::system().now_ms();
        Task {
            id: new_task_id(),
            idempotency_key: idempotency_key.into(),
            upstream: upstream.into(),
            method: method.into(),
            path_and_query: path_and_query.into(),
            headers,
            body: body.into(),
            attempts: 0,
            enqueued_at: now,
            not_before: 0,
            last_error: None,
            publish: None,
            status_auth: None,
            hooks: None,
            hook_of: None,
        }
    }

    /// A fresh event for `[events]`: `body` (JSON) published under `subject` with `headers` as
    /// message headers. It shares the outbox, retries and dead letters with upstream calls; its
    /// `upstream` is [`EVENTS_UPSTREAM`] (the dispatcher's concurrency key, so
    /// `upstream_concurrency = { events = N }` bounds concurrent publishes), and its method and
    /// path are placeholders that keep the task valid for every backend.
    pub fn event(
        idempotency_key: impl Into<String>,
        subject: impl Into<String>,
        headers: Vec<(String, String)>,
        body: impl Into<Vec<u8>>,
    ) -> Self {
        let mut task = Task::new(
            idempotency_key,
            EVENTS_UPSTREAM,
            "PUBLISH",
            "/",
            headers,
            body,
        );
        task.publish = Some(subject.into());
        task
    }

    /// The task encoded as stored and sent to brokers (JSON, body in base64).
    pub fn encode(&self) -> Result<Vec<u8>, QueueError> {
        serde_json::to_vec(self).map_err(|e| QueueError::Codec {
            what: "encode task",
            source: e,
        })
    }

    /// Decodes a task written by [`Task::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, QueueError> {
        serde_json::from_slice(bytes).map_err(|e| QueueError::Codec {
            what: "decode task",
            source: e,
        })
    }

    /// Checks the fields a backend relies on and the encoded size against `max_bytes`; returns
    /// the encoding so callers do not encode twice.
    pub fn validate(&self, max_bytes: usize) -> Result<Vec<u8>, QueueError> {
        self.check()?;
        let bytes = self.encode()?;
        if bytes.len() > max_bytes {
            return Err(QueueError::TooLarge {
                size: bytes.len(),
                limit: max_bytes,
            });
        }
        Ok(bytes)
    }

    /// Checks the fields a backend or a delivery relies on, without encoding. Brokers run it on
    /// every task they hand out, not only `enqueue`: a stream or queue can hold messages that
    /// another producer, or a replica of another version, wrote, and a URL in place of the path
    /// would go out as the request target (`POST http://elsewhere/ HTTP/1.1` to the upstream's
    /// endpoint), a line break in a header would split it, and a header NATS cannot carry would
    /// panic its client.
    pub fn check(&self) -> Result<(), QueueError> {
        check_id("task id", &self.id)?;
        if self.idempotency_key.is_empty() || self.idempotency_key.len() > MAX_ID_LEN {
            return Err(QueueError::Invalid(format!(
                "idempotency key must be 1..={MAX_ID_LEN} bytes"
            )));
        }
        if !is_header_value(&self.idempotency_key) {
            return Err(QueueError::Invalid(
                "idempotency key holds a control character".into(),
            ));
        }
        for (name, value) in &self.headers {
            if !is_header_name(name) || !is_header_value(value) {
                return Err(QueueError::Invalid(format!(
                    "header {name:?} is not a valid header name and value"
                )));
            }
            // An AMQP field name is a short string: lapin panics on a longer one.
            if self.publish.is_some() {
                manifold_config::events::check_header_name(name).map_err(QueueError::Invalid)?;
            }
        }
        if self.upstream.is_empty() {
            return Err(QueueError::Invalid("task has no upstream".into()));
        }
        if self.method.is_empty() || !self.method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(QueueError::Invalid(format!("bad method {:?}", self.method)));
        }
        if !self.path_and_query.starts_with('/') {
            return Err(QueueError::Invalid(format!(
                "path must start with '/': {:?}",
                self.path_and_query
            )));
        }
        if let Some(subject) = &self.publish {
            crate::events::check_subject(subject).map_err(QueueError::Invalid)?;
        }
        if let Some(hash) = &self.status_auth {
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(QueueError::Invalid(
                    "status_auth must be a hex SHA-256".into(),
                ));
            }
        }
        if let Some(hooks) = &self.hooks {
            if self.hook_of.is_some() {
                return Err(QueueError::Invalid("a hook task cannot have hooks".into()));
            }
            hooks.validate()?;
        }
        if let Some(parent) = &self.hook_of {
            check_id("parent task id", parent)?;
        }
        Ok(())
    }

    /// The headers to send on a delivery attempt: the task's own headers (minus any stale
    /// `Idempotency-Key`) and `Idempotency-Key: <idempotency_key>`, the same on every attempt.
    pub fn delivery_headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .iter()
            .filter(|(name, _)| !name.eq_ignore_ascii_case(IDEMPOTENCY_KEY_HEADER))
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .chain(std::iter::once((
                IDEMPOTENCY_KEY_HEADER,
                self.idempotency_key.as_str(),
            )))
    }

    /// How long ago the task was accepted, at `now_ms`.
    pub fn age_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.enqueued_at)
    }
}

/// Task ids are capabilities: whoever holds one may read the task's status and result at
/// `GET {status_path}/{id}`. So they are 128 bits from a cryptographic generator (ChaCha, seeded
/// from the OS), as 32 hex digits, with no time prefix and no counter: an id says nothing about
/// the ids before or after it, and guessing one is a 2^-128 shot.
pub(crate) fn new_task_id() -> String {
    let id: u128 = crate::rng::with_secure_rng(rand::Rng::random::<u128>);
    format!("{id:032x}")
}

/// Compares a presented id (or any secret) with a stored one in time independent of where they
/// differ, so response timing does not leak a stored id's prefix.
pub fn ids_equal(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// An HTTP field name (RFC 9110 `token`): also what NATS headers can carry.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// An HTTP field value as `http::HeaderValue` accepts it: no control character but tab, so no
/// line break that would start another header (HTTP/1, NATS).
fn is_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Ids end up in NATS subjects and URLs: keep them to a safe alphabet.
pub(crate) fn check_id(what: &str, id: &str) -> Result<(), QueueError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(QueueError::Invalid(format!(
            "{what} must be 1..={MAX_ID_LEN} of [A-Za-z0-9_-]: {id:?}"
        )))
    }
}

mod body_base64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(body: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(body))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Task {
        Task::new(
            "req-1.shipping",
            "shipping",
            "POST",
            "/shipping/labels",
            vec![("content-type".into(), "application/json".into())],
            br#"{"order_id":7}"#.to_vec(),
        )
    }

    #[test]
    fn round_trips_through_its_encoding() {
        let mut task = sample();
        task.body = (0u8..=255).collect();
        task.last_error = Some("503 from upstream".into());
        let bytes = task.encode().unwrap();
        assert_eq!(Task::decode(&bytes).unwrap(), task);
    }

    #[test]
    fn ids_are_128_bit_hex_and_valid() {
        let a = new_task_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        check_id("task id", &a).unwrap();
        assert!(ids_equal(&a, &a.clone()));
        assert!(!ids_equal(&a, &new_task_id()));
        assert!(!ids_equal(&a, &a[..31]));
    }

    proptest::proptest! {
        /// Ids are unique and not predictable from the ones before: consecutive ids share no
        /// prefix beyond chance (a time prefix or a counter would share many leading digits),
        /// and their difference is not constant (no counter).
        #[test]
        fn consecutive_ids_are_unique_and_share_no_structure(n in 64usize..256) {
            let ids: Vec<u128> = (0..n)
                .map(|_| u128::from_str_radix(&new_task_id(), 16).unwrap())
                .collect();
            let unique: std::collections::HashSet<_> = ids.iter().collect();
            proptest::prop_assert_eq!(unique.len(), n);
            // Leading bits shared by consecutive ids: about 1 on average for random ids; a
            // 48-bit time prefix shares 30+.
            let shared: u32 = ids.windows(2).map(|w| (w[0] ^ w[1]).leading_zeros()).sum();
            let mean = f64::from(shared) / (n - 1) as f64;
            proptest::prop_assert!(mean < 4.0, "mean shared leading bits {}", mean);
            // No counter: the differences between consecutive ids are not all equal.
            let diffs: std::collections::HashSet<u128> =
                ids.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
            proptest::prop_assert!(diffs.len() > n / 2);
            // Every bit position varies (no fixed field anywhere in the id).
            let (all_or, all_and) = ids.iter().fold((0u128, u128::MAX), |(o, a), id| (o | id, a & id));
            proptest::prop_assert_eq!(all_or, u128::MAX);
            proptest::prop_assert_eq!(all_and, 0);
        }
    }

    #[test]
    fn validate_rejects_bad_fields_and_oversized_tasks() {
        let task = sample();
        assert!(task.validate(1 << 20).is_ok());
        let mut bad = task.clone();
        bad.id = "a.b".into();
        assert!(matches!(bad.validate(1 << 20), Err(QueueError::Invalid(_))));
        let mut bad = task.clone();
        bad.path_and_query = "http://evil/".into();
        assert!(matches!(bad.validate(1 << 20), Err(QueueError::Invalid(_))));
        let mut big = task.clone();
        big.body = vec![0; 4096];
        assert!(matches!(
            big.validate(1024),
            Err(QueueError::TooLarge { limit: 1024, .. })
        ));
    }

    #[test]
    fn check_refuses_headers_and_keys_that_would_split_or_not_travel() {
        let task = sample();
        task.check().unwrap();
        for (name, value) in [
            ("x a", "1"),
            ("x:a", "1"),
            ("", "1"),
            ("x-é", "1"),
            ("x-a", "1\r\nx-b: 2"),
            ("x-a", "1\n"),
            ("x-a", "nul\0"),
        ] {
            let mut bad = task.clone();
            bad.headers.push((name.into(), value.into()));
            assert!(
                matches!(bad.check(), Err(QueueError::Invalid(_))),
                "{name:?}: {value:?}"
            );
        }
        let mut ok = task.clone();
        ok.headers
            .push(("X-Tenant_1".into(), "a b\tc ünïcode".into()));
        ok.check().unwrap();
        // A long name is HTTP, but not an AMQP header.
        let mut long = task.clone();
        long.headers.push(("x".repeat(256), "1".into()));
        long.check().unwrap();
        long.publish = Some("orders.created".into());
        assert!(matches!(long.check(), Err(QueueError::Invalid(_))));
        let mut bad = task.clone();
        bad.idempotency_key = "k\r\nNats-Rollup: all".into();
        assert!(matches!(bad.check(), Err(QueueError::Invalid(_))));
    }

    #[test]
    fn delivery_headers_carry_exactly_one_idempotency_key() {
        let mut task = sample();
        task.headers
            .push(("idempotency-key".into(), "forged".into()));
        let headers: Vec<(&str, &str)> = task.delivery_headers().collect();
        let keys: Vec<&str> = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(IDEMPOTENCY_KEY_HEADER))
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(keys, ["req-1.shipping"]);
        assert!(headers.contains(&("content-type", "application/json")));
    }

    #[test]
    fn events_round_trip_and_old_tasks_decode_without_the_field() {
        let event = Task::event("k:ship", "orders.created", vec![], br#"{"id":1}"#.to_vec());
        assert!(event.validate(1 << 20).is_ok());
        let bytes = event.encode().unwrap();
        assert_eq!(Task::decode(&bytes).unwrap(), event);
        // An ordinary task's encoding has no `publish` key, and one stored before the field
        // existed decodes as an upstream call.
        let plain = sample().encode().unwrap();
        assert!(!String::from_utf8_lossy(&plain).contains("publish"));
        let mut old: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        old.as_object_mut().unwrap().remove("publish");
        let old = Task::decode(&serde_json::to_vec(&old).unwrap()).unwrap();
        assert_eq!(old.publish, None);
        let mut bad = event.clone();
        bad.publish = Some("orders.*".into());
        assert!(matches!(bad.validate(1 << 20), Err(QueueError::Invalid(_))));
    }

    #[test]
    fn debug_does_not_print_the_body() {
        let mut task = sample();
        task.body = b"secret-card-number".to_vec();
        assert!(!format!("{task:?}").contains("secret"));
    }
}
