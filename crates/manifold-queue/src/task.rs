//! The unit of offloaded work: one rendered upstream call, ready to be delivered later.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::error::QueueError;

/// The header that carries [`Task::idempotency_key`] on every delivery attempt.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

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
            id: new_task_id(now),
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
        }
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
        check_id("task id", &self.id)?;
        if self.idempotency_key.is_empty() || self.idempotency_key.len() > MAX_ID_LEN {
            return Err(QueueError::Invalid(format!(
                "idempotency key must be 1..={MAX_ID_LEN} bytes"
            )));
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
        let bytes = self.encode()?;
        if bytes.len() > max_bytes {
            return Err(QueueError::TooLarge {
                size: bytes.len(),
                limit: max_bytes,
            });
        }
        Ok(bytes)
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

/// Task ids: 48 bits of milliseconds then 80 random bits, as 32 hex digits, so ids sort roughly
/// by accept time and never collide in practice across replicas.
pub(crate) fn new_task_id(now_ms: u64) -> String {
    let random: u128 = crate::rng::with_rng(rand::Rng::random::<u128>) & ((1u128 << 80) - 1);
    let id = (u128::from(now_ms & 0xffff_ffff_ffff) << 80) | random;
    format!("{id:032x}")
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
    fn ids_are_unique_hex_and_sort_by_time() {
        let a = new_task_id(1_000);
        let b = new_task_id(2_000);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(a < b);
        assert_ne!(new_task_id(5), new_task_id(5));
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
    fn debug_does_not_print_the_body() {
        let mut task = sample();
        task.body = b"secret-card-number".to_vec();
        assert!(!format!("{task:?}").contains("secret"));
    }
}
