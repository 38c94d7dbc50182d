//! The `[events]` section: where `mode = "publish"` calls send their events (the queue crate's
//! publishers convert it); and what an event subject may be.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest subject / routing key, in bytes (AMQP's short-string limit).
pub const MAX_SUBJECT_LEN: usize = 255;

/// Longest header name of an event (a publish call's or a publish hook's): RabbitMQ carries
/// headers as AMQP field-table keys, which are short strings (lapin panics on a longer one).
pub const MAX_HEADER_NAME_LEN: usize = 255;

/// Checks an event header name's length (see [`MAX_HEADER_NAME_LEN`]); the one rule for calls,
/// hooks and the tasks a queue takes.
pub fn check_header_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_HEADER_NAME_LEN {
        return Err(format!(
            "an event header name is at most {MAX_HEADER_NAME_LEN} bytes (this one is {})",
            name.len()
        ));
    }
    Ok(())
}

/// Default RabbitMQ exchange of events.
pub const DEFAULT_EXCHANGE: &str = "manifold.events";

/// Which broker receives events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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
    #[serde(default = "default_timeout", with = "crate::queue::humantime_serde")]
    #[schemars(schema_with = "crate::schema::duration")]
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
    pub fn validate(&self) -> Result<(), String> {
        let bad = |msg: String| Err(format!("[events] {msg}"));
        if let Some(url) = &self.url {
            let schemes: &[&str] = match self.backend {
                EventsBackend::Nats => &["nats://", "tls://", "ws://", "wss://"],
                EventsBackend::Rabbitmq => {
                    crate::queue::refuse_amqps(url).map_err(|m| format!("[events] url: {m}"))?;
                    &["amqp://"]
                }
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
/// non-empty tokens, no whitespace or control characters, no wildcards (`*`, `>`, `#`), which
/// would make a subscription pattern rather than a subject, and nothing in the namespaces NATS
/// reserves for its API and replies (`$…`, `_INBOX.…`).
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
    // NATS reserves these: `$JS.API.…` and `$KV.…` are requests to the server, carried out
    // with the gateway's permissions (`$JS.API.STREAM.DELETE.<stream>` deletes a stream, the
    // queue's own included), and `_INBOX.…` carries other clients' replies. Never an event.
    if subject.starts_with('$') || subject == "_INBOX" || subject.starts_with("_INBOX.") {
        return Err(format!(
            "subject {subject:?} is in a namespace NATS reserves (`$…` for the server's own API, `_INBOX.…` for replies); name the event with your own words, like \"orders.created\""
        ));
    }
    Ok(())
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
            ("$JS.API.STREAM.DELETE.manifold", "reserves"),
            ("$KV.manifold_status.x", "reserves"),
            ("$SYS.REQ.SERVER.PING", "reserves"),
            ("_INBOX.abc.def", "reserves"),
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

    /// See `queue::refuse_amqps`: this build's lapin would publish over plain TCP.
    #[test]
    fn an_amqps_url_is_refused() {
        let cfg = EventsConfig {
            url: Some("amqps://guest:secret@broker:5671/%2f".into()),
            ..EventsConfig::new(EventsBackend::Rabbitmq)
        };
        let e = cfg.validate().unwrap_err();
        assert!(e.contains("amqps://") && e.contains("plaintext"), "{e}");
        assert!(!e.contains("secret"), "{e}");
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
