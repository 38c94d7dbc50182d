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

pub use manifold_config::events::{
    check_subject, EventsBackend, EventsConfig, DEFAULT_EXCHANGE, MAX_SUBJECT_LEN,
};

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
            cfg.validate().map_err(QueueError::Config)?;
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
            // Its headers and key become broker headers: a line break would split one, and the
            // NATS client panics on a name or value it cannot carry. The request path renders
            // only valid ones; a task from the outbox may come from another producer.
            task.check()
                .map_err(|e| DeliveryError::permanent(format!("event {}: {e}", task.id)))?;
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

        /// Flushes what is buffered and closes the connection, waiting at most
        /// [`crate::close::CLOSE_TIMEOUT`] for the broker (one that is unreachable never
        /// answers; every event was confirmed before its request was answered).
        pub async fn close(&self) {
            let close = async {
                match &self.inner {
                    #[cfg(feature = "nats")]
                    Inner::Nats(p) => p.close().await,
                    #[cfg(feature = "rabbitmq")]
                    Inner::Rabbit(p) => p.close().await,
                }
            };
            if crate::close::within(close).await.is_none() {
                tracing::debug!("events: the broker did not answer the close; closed without it");
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
