//! Publish events: a call with `mode = "publish"` becomes an event on NATS (a subject) or
//! RabbitMQ (a topic exchange and a routing key), for services that subscribe instead of being
//! called.
//!
//! An event takes the same road as an async call: the gateway writes it to the outbox (the
//! `[queue]` backend) as a [`Task`] whose [`Task::publish`] names the subject, answers the client,
//! and the dispatcher then hands it to a [`Publisher`]. The task is acked only once the broker
//! has confirmed the publish, so a broker that is down or refuses delays an accepted event (it is
//! retried with backoff, then dead-lettered like any task) but never loses it.
//!
//! What "confirmed" means per backend:
//! - **NATS, a JetStream stream captures the subject**: a JetStream publish awaiting the stream's
//!   ack — the event is stored in that stream. `Nats-Msg-Id` is the idempotency key, so a retry
//!   inside the stream's duplicate window is stored once.
//! - **NATS, no stream captures it**: a core publish followed by a flush (a PING/PONG round trip)
//!   — the server has received the event and handed it to the subscribers connected at that
//!   moment. Core NATS keeps nothing: a subscriber that is not connected misses it. Use a stream
//!   for events that must outlive a subscriber's absence.
//! - **RabbitMQ**: a persistent publish to the durable topic exchange with the routing key =
//!   subject, awaiting the publisher confirm — every queue bound for that key has stored it.
//!   As with any topic exchange, an event no queue is bound for is dropped by the broker.

#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "rabbitmq")]
mod rabbitmq;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::QueueError;

/// Longest subject / routing key, in bytes (AMQP's short-string limit).
pub const MAX_SUBJECT_LEN: usize = 255;

/// Default RabbitMQ exchange of events.
pub const DEFAULT_EXCHANGE: &str = "manifold.events";

/// Which broker receives events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum EventsBackend {
    /// NATS: the subject is the call's `subject`.
    Nats,
    /// RabbitMQ: a durable topic exchange (`exchange`), routing key = the call's `subject`.
    Rabbitmq,
}

impl EventsBackend {
    /// The name used in config and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            EventsBackend::Nats => "nats",
            EventsBackend::Rabbitmq => "rabbitmq",
        }
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

/// `[events]`: where `mode = "publish"` calls send their events; see `docs/offload.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// `nats` or `rabbitmq` (required: there is no broker to assume).
    pub backend: EventsBackend,
    /// Server URL; defaults to the local server of the backend. Shown without its password.
    #[serde(default, serialize_with = "crate::redact::ser_opt_url")]
    pub url: Option<String>,
    /// RabbitMQ: the topic exchange, declared durable at start (default `manifold.events`).
    #[serde(default)]
    pub exchange: Option<String>,
    /// Bound on one publish including the broker's confirm; a slower one is a failed attempt,
    /// retried later.
    #[serde(default = "default_timeout", with = "crate::config::humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(schema_with = "crate::schema::duration"))]
    pub timeout: Duration,
}

impl EventsConfig {
    /// A config for `backend` with every other key at its default.
    pub fn new(backend: EventsBackend) -> Self {
        EventsConfig {
            backend,
            url: None,
            exchange: None,
            timeout: default_timeout(),
        }
    }

    /// Checks the keys against each other; the message names the key at fault.
    pub fn validate(&self) -> Result<(), QueueError> {
        let bad = |msg: String| Err(QueueError::Config(format!("[events] {msg}")));
        if let Some(url) = &self.url {
            let schemes: &[&str] = match self.backend {
                EventsBackend::Nats => &["nats://", "tls://", "ws://", "wss://"],
                EventsBackend::Rabbitmq => &["amqp://", "amqps://"],
            };
            if !schemes.iter().any(|s| url.starts_with(s)) {
                return bad(format!(
                    "url {:?} does not suit backend {:?}; write e.g. {:?}",
                    crate::redact::url(url),
                    self.backend.as_str(),
                    EventsConfig::new(self.backend).url_or_default()
                ));
            }
        }
        match (&self.exchange, self.backend) {
            (Some(_), EventsBackend::Nats) => return bad(
                "exchange only applies to backend = \"rabbitmq\" (NATS publishes to the subject)"
                    .into(),
            ),
            (Some(x), EventsBackend::Rabbitmq) => {
                let ok = !x.is_empty()
                    && x.len() <= 127
                    && !x.starts_with("amq.")
                    && x.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':')
                    });
                if !ok {
                    return bad(format!(
                        "exchange {x:?} must be 1..=127 of letters, digits, '-', '_', '.', ':' and not start with \"amq.\""
                    ));
                }
            }
            (None, _) => {}
        }
        if self.timeout.is_zero() {
            return bad("timeout must be more than 0".into());
        }
        Ok(())
    }

    /// The URL to connect to: `url`, or the local server of the backend.
    pub fn url_or_default(&self) -> String {
        match (&self.url, self.backend) {
            (Some(url), _) => url.clone(),
            (None, EventsBackend::Rabbitmq) => "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            (None, EventsBackend::Nats) => "nats://127.0.0.1:4222".into(),
        }
    }

    /// The RabbitMQ exchange: `exchange` or [`DEFAULT_EXCHANGE`].
    pub fn exchange_or_default(&self) -> &str {
        self.exchange.as_deref().unwrap_or(DEFAULT_EXCHANGE)
    }
}

/// Checks an event subject: it must be usable both as a NATS subject and as a RabbitMQ routing
/// key, and name one destination. Non-empty, at most [`MAX_SUBJECT_LEN`] bytes, dot-separated
/// non-empty tokens, no whitespace or control characters, and no wildcards (`*`, `>`, `#`),
/// which would make a subscription pattern rather than a subject.
pub fn check_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("the subject is empty".into());
    }
    if subject.len() > MAX_SUBJECT_LEN {
        return Err(format!(
            "the subject is {} bytes; at most {MAX_SUBJECT_LEN}",
            subject.len()
        ));
    }
    if let Some(c) = subject
        .chars()
        .find(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "subject {subject:?} contains {c:?}; no spaces or control characters"
        ));
    }
    if let Some(c) = subject.chars().find(|c| matches!(c, '*' | '>' | '#')) {
        return Err(format!(
            "subject {subject:?} contains the wildcard `{c}`; an event goes to one literal subject (subscribers use wildcards)"
        ));
    }
    if subject.split('.').any(str::is_empty) {
        return Err(format!(
            "subject {subject:?} has an empty token; write dot-separated words like \"orders.created\""
        ));
    }
    Ok(())
}

#[cfg(any(feature = "nats", feature = "rabbitmq"))]
pub use publisher::Publisher;

#[cfg(any(feature = "nats", feature = "rabbitmq"))]
mod publisher {
    use super::{EventsBackend, EventsConfig};
    use crate::dispatch::DeliveryError;
    use crate::error::QueueError;
    use crate::task::Task;

    /// A connection to the `[events]` broker that publishes events and waits for the broker's
    /// confirmation (see the module docs for what that means per backend).
    pub struct Publisher {
        inner: Inner,
        timeout: std::time::Duration,
    }

    enum Inner {
        #[cfg(feature = "nats")]
        Nats(super::nats::NatsPublisher),
        #[cfg(feature = "rabbitmq")]
        Rabbit(super::rabbitmq::RabbitPublisher),
    }

    impl std::fmt::Debug for Publisher {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Publisher")
                .field("backend", &self.backend())
                .finish_non_exhaustive()
        }
    }

    impl Publisher {
        /// Connects to the broker (and, for RabbitMQ, declares the durable topic exchange), so a
        /// wrong URL or credentials fail at start. Later outages are survived: the clients
        /// reconnect by themselves, and publishes failing meanwhile are retried by the
        /// dispatcher.
        pub async fn connect(cfg: &EventsConfig) -> Result<Publisher, QueueError> {
            cfg.validate()?;
            let inner = match cfg.backend {
                #[cfg(feature = "nats")]
                EventsBackend::Nats => Inner::Nats(super::nats::NatsPublisher::connect(cfg).await?),
                #[cfg(feature = "rabbitmq")]
                EventsBackend::Rabbitmq => {
                    Inner::Rabbit(super::rabbitmq::RabbitPublisher::connect(cfg).await?)
                }
                #[allow(unreachable_patterns)]
                other => {
                    return Err(QueueError::Config(format!(
                        "[events] backend {:?} is not compiled in (cargo feature {:?})",
                        other.as_str(),
                        other.as_str()
                    )))
                }
            };
            Ok(Publisher {
                inner,
                timeout: cfg.timeout,
            })
        }

        /// Which broker this publishes to.
        pub fn backend(&self) -> EventsBackend {
            match &self.inner {
                #[cfg(feature = "nats")]
                Inner::Nats(_) => EventsBackend::Nats,
                #[cfg(feature = "rabbitmq")]
                Inner::Rabbit(_) => EventsBackend::Rabbitmq,
            }
        }

        /// Publishes an event task (one with [`Task::publish`] set) and returns once the broker
        /// confirmed it. The message carries the task's headers, `Content-Type:
        /// application/json` and the idempotency key (`Idempotency-Key`; NATS `Nats-Msg-Id`,
        /// RabbitMQ `message_id`), the same on every attempt. Errors are retryable (broker down,
        /// refused, timed out) unless the task is not an event.
        pub async fn publish(&self, task: &Task) -> Result<(), DeliveryError> {
            let Some(subject) = task.publish.as_deref() else {
                return Err(DeliveryError::permanent(format!(
                    "task {} is not an event (no subject)",
                    task.id
                )));
            };
            super::check_subject(subject).map_err(DeliveryError::permanent)?;
            let event = Event {
                subject,
                key: &task.idempotency_key,
                headers: &task.headers,
                body: &task.body,
            };
            let sent = tokio::time::timeout(self.timeout, async {
                match &self.inner {
                    #[cfg(feature = "nats")]
                    Inner::Nats(p) => p.publish(&event).await,
                    #[cfg(feature = "rabbitmq")]
                    Inner::Rabbit(p) => p.publish(&event).await,
                }
            })
            .await;
            match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(DeliveryError::retryable(format!(
                    "publish to {subject}: {e}"
                ))),
                Err(_) => {
                    #[cfg(feature = "rabbitmq")]
                    #[allow(irrefutable_let_patterns)]
                    if let Inner::Rabbit(p) = &self.inner {
                        // No answer in time can mean a silent network: start afresh next time.
                        p.reset(None).await;
                    }
                    Err(DeliveryError::retryable(format!(
                        "publish to {subject}: no confirmation from {} within {}",
                        self.backend().as_str(),
                        humantime::format_duration(self.timeout)
                    )))
                }
            }
        }

        /// Flushes what is buffered and closes the connection.
        pub async fn close(&self) {
            match &self.inner {
                #[cfg(feature = "nats")]
                Inner::Nats(p) => p.close().await,
                #[cfg(feature = "rabbitmq")]
                Inner::Rabbit(p) => p.close().await,
            }
        }
    }

    /// One event as the backends see it.
    pub(super) struct Event<'a> {
        pub(super) subject: &'a str,
        pub(super) key: &'a str,
        pub(super) headers: &'a [(String, String)],
        pub(super) body: &'a [u8],
    }

    impl Event<'_> {
        /// The task's headers minus the ones the publisher sets itself.
        pub(super) fn extra_headers(&self) -> impl Iterator<Item = (&str, &str)> {
            self.headers
                .iter()
                .filter(|(n, _)| {
                    !n.eq_ignore_ascii_case(crate::IDEMPOTENCY_KEY_HEADER)
                        && !n.eq_ignore_ascii_case("content-type")
                        && !n.eq_ignore_ascii_case("nats-msg-id")
                })
                .map(|(n, v)| (n.as_str(), v.as_str()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_literal_dotted_words() {
        for ok in ["orders.created", "a", "orders-v2.created_at", "x.y.z.1"] {
            assert!(check_subject(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("orders created", "no spaces"),
            ("orders.*", "wildcard"),
            ("orders.>", "wildcard"),
            ("orders.#", "wildcard"),
            ("orders..created", "empty token"),
            (".orders", "empty token"),
            ("orders.", "empty token"),
            ("a\tb", "no spaces"),
        ] {
            let e = check_subject(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert!(check_subject(&"a".repeat(MAX_SUBJECT_LEN)).is_ok());
        assert!(check_subject(&"a".repeat(MAX_SUBJECT_LEN + 1))
            .unwrap_err()
            .contains("at most 255"));
    }

    #[test]
    fn config_parses_with_defaults_and_checks_keys_against_the_backend() {
        let cfg: EventsConfig =
            toml::from_str("backend = \"rabbitmq\"\nexchange = \"shop.events\"").unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.exchange_or_default(), "shop.events");
        assert_eq!(cfg.timeout, Duration::from_secs(5));
        assert!(cfg.url_or_default().starts_with("amqp://"));

        let cfg: EventsConfig = toml::from_str("backend = \"nats\"\ntimeout = \"2s\"").unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.url_or_default(), "nats://127.0.0.1:4222");
        assert_eq!(cfg.exchange_or_default(), DEFAULT_EXCHANGE);

        assert!(toml::from_str::<EventsConfig>("url = \"nats://x\"").is_err());
        assert!(toml::from_str::<EventsConfig>("backend = \"nats\"\nsubjekt = \"x\"").is_err());
        let e = EventsConfig {
            exchange: Some("x".into()),
            ..EventsConfig::new(EventsBackend::Nats)
        };
        assert!(e.validate().unwrap_err().to_string().contains("exchange"));
        let e = EventsConfig {
            url: Some("nats://127.0.0.1:4222".into()),
            ..EventsConfig::new(EventsBackend::Rabbitmq)
        };
        assert!(e
            .validate()
            .unwrap_err()
            .to_string()
            .contains("does not suit"));
        let e = EventsConfig {
            exchange: Some("amq.topic".into()),
            ..EventsConfig::new(EventsBackend::Rabbitmq)
        };
        assert!(e.validate().is_err());
    }

    #[test]
    fn the_url_is_shown_without_its_password() {
        let cfg = EventsConfig {
            url: Some("amqp://guest:secret@127.0.0.1:5672/%2f".into()),
            ..EventsConfig::new(EventsBackend::Rabbitmq)
        };
        let shown = serde_json::to_string(&cfg).unwrap();
        assert!(!shown.contains("secret"), "{shown}");
    }
}
