//! Events on NATS: a JetStream publish awaiting the stream's ack where a stream captures the
//! subject, otherwise a core publish confirmed by a flush.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::{self, context::GetStreamByNameErrorKind};
use tokio::time::Instant;

use super::publisher::Event;
use super::EventsConfig;
use crate::error::QueueError;
use crate::redact::url as redact;

/// How long a subject's "captured by a stream or not" answer is reused: streams are created and
/// edited rarely, and asking JetStream on every publish would double its round trips.
const ROUTE_TTL: Duration = Duration::from_secs(30);

pub(super) struct NatsPublisher {
    client: async_nats::Client,
    js: jetstream::Context,
    /// Subject → (when looked up, whether a JetStream stream captures it).
    captured: Mutex<HashMap<String, (Instant, bool)>>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl NatsPublisher {
    pub(super) async fn connect(cfg: &EventsConfig) -> Result<Self, QueueError> {
        let url = cfg.url_or_default();
        let client = async_nats::ConnectOptions::new()
            .name("manifold-events")
            .connection_timeout(cfg.timeout)
            .connect(url.as_str())
            .await
            .map_err(|e| QueueError::broker("nats", format!("connect to {}", redact(&url)), e))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(cfg.timeout);
        Ok(NatsPublisher {
            client,
            js,
            captured: Mutex::new(HashMap::new()),
        })
    }

    /// Whether a JetStream stream stores `subject` (cached for [`ROUTE_TTL`]).
    async fn captured(&self, subject: &str) -> Result<bool, BoxError> {
        let now = Instant::now();
        {
            let cache = self.captured.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, yes)) = cache.get(subject) {
                if now.duration_since(*at) < ROUTE_TTL {
                    return Ok(*yes);
                }
            }
        }
        let yes = match self.js.stream_by_subject(subject).await {
            Ok(_) => true,
            Err(e) if matches!(e.kind(), GetStreamByNameErrorKind::NotFound) => false,
            // JetStream not enabled on this server: no stream can capture anything.
            Err(e) if is_no_jetstream(&e) => false,
            Err(e) => return Err(format!("ask JetStream which stream stores it: {e}").into()),
        };
        let mut cache = self.captured.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(subject.to_owned(), (now, yes));
        Ok(yes)
    }

    pub(super) async fn publish(&self, event: &Event<'_>) -> Result<(), BoxError> {
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in event.extra_headers() {
            headers.insert(name, value);
        }
        headers.insert("Content-Type", "application/json");
        headers.insert(crate::IDEMPOTENCY_KEY_HEADER, event.key);
        // JetStream de-duplicates on it within the stream's duplicate window.
        headers.insert("Nats-Msg-Id", event.key);
        let subject = event.subject.to_owned();
        let payload = event.body.to_vec();
        if self.captured(event.subject).await? {
            let ack = self
                .js
                .publish_with_headers(subject, headers, payload.into())
                .await?;
            let ack = ack.await?;
            if ack.duplicate {
                tracing::debug!(stream = %ack.stream, key = event.key, "nats: event was already stored (duplicate)");
            }
        } else {
            let stats = self.client.statistics();
            let connects = stats.connects.load(Ordering::Acquire);
            self.client
                .publish_with_headers(subject, headers, payload.into())
                .await?;
            // The PONG comes back after the server processed everything sent before the PING.
            self.client.flush().await?;
            // A PONG on a new connection says nothing about a message written to the old one:
            // count that as a failure (retried; the subscriber may then see it twice).
            if stats.connects.load(Ordering::Acquire) != connects {
                return Err("the connection to NATS was re-established during the publish".into());
            }
        }
        Ok(())
    }

    pub(super) async fn close(&self) {
        if let Err(e) = self.client.flush().await {
            tracing::debug!(error = %e, "nats events: flush on close");
        }
    }
}

fn is_no_jetstream(e: &(dyn std::error::Error + 'static)) -> bool {
    let text = crate::nats::error_chain(e);
    text.contains("no responders") || text.contains("does not exist")
}
