//! Events on RabbitMQ: persistent publishes to a durable topic exchange, routing key = subject,
//! each awaiting its publisher confirm.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Mutex;

use super::publisher::Event;
use super::EventsConfig;
use crate::error::QueueError;
use crate::redact::url as redact;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(super) struct RabbitPublisher {
    url: String,
    exchange: String,
    /// The live connection and confirm-mode channel; `None` after a failure, so the next
    /// publish reconnects. (lapin's own auto-recovery was tried: after the broker had been
    /// unreachable for a while, it never came back, and every later publish failed.)
    link: Mutex<Option<Link>>,
    generations: std::sync::atomic::AtomicU64,
}

struct Link {
    conn: Connection,
    channel: Channel,
    /// Which connection this is, so a publish that failed on an old link does not close the
    /// new one another publish has just opened.
    generation: u64,
}

fn broker(
    what: impl Into<String>,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> QueueError {
    QueueError::broker("rabbitmq", what, e)
}

impl RabbitPublisher {
    /// Connects once now, so a wrong URL, credentials or an exchange of another type fail at
    /// start; later losses are repaired by reconnecting on the next publish.
    pub(super) async fn connect(cfg: &EventsConfig) -> Result<Self, QueueError> {
        let url = cfg.url_or_default();
        let exchange = cfg.exchange_or_default().to_owned();
        let link = tokio::time::timeout(cfg.timeout, open(&url, &exchange, 0))
            .await
            .map_err(|_| QueueError::Timeout(format!("rabbitmq: connect to {}", redact(&url))))??;
        Ok(RabbitPublisher {
            url,
            exchange,
            link: Mutex::new(Some(link)),
            generations: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// The channel to publish on, reconnecting if the last one failed or was closed.
    async fn channel(&self) -> Result<(Channel, u64), QueueError> {
        let mut link = self.link.lock().await;
        if let Some(l) = link.as_ref() {
            if l.conn.status().connected() && l.channel.status().connected() {
                return Ok((l.channel.clone(), l.generation));
            }
        }
        if let Some(old) = link.take() {
            let _ = old.conn.close(200, "reconnecting".into()).await;
        }
        let generation = self
            .generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let fresh = open(&self.url, &self.exchange, generation).await?;
        tracing::info!(exchange = %self.exchange, "rabbitmq events: reconnected");
        let channel = fresh.channel.clone();
        *link = Some(fresh);
        Ok((channel, generation))
    }

    /// Forget link `generation` after a failure (or a publish cut off by the timeout, which may
    /// mean a silent network): the next publish opens a new one. `None`: whatever link is open.
    pub(super) async fn reset(&self, generation: Option<u64>) {
        let mut link = self.link.lock().await;
        if link
            .as_ref()
            .is_some_and(|l| generation.is_none_or(|g| g == l.generation))
        {
            if let Some(old) = link.take() {
                let _ = old.conn.close(200, "publish failed".into()).await;
            }
        }
    }

    pub(super) async fn publish(&self, event: &Event<'_>) -> Result<(), BoxError> {
        let mut headers = FieldTable::default();
        for (name, value) in event.extra_headers() {
            headers.insert(
                ShortString::from(name),
                AMQPValue::LongString(LongString::from(value)),
            );
        }
        headers.insert(
            ShortString::from(crate::IDEMPOTENCY_KEY_HEADER),
            AMQPValue::LongString(LongString::from(event.key)),
        );
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(event.key.into())
            .with_app_id("manifold".into())
            .with_headers(headers);
        let (channel, generation) = self.channel().await?;
        let confirm = async {
            channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    event.subject.into(),
                    BasicPublishOptions::default(),
                    event.body,
                    properties,
                )
                .await?
                .await
        }
        .await;
        match confirm {
            Ok(c) if c.is_ack() => Ok(()),
            Ok(_) => Err(format!(
                "rabbitmq refused the event (nack) on exchange {}",
                self.exchange
            )
            .into()),
            Err(e) => {
                self.reset(Some(generation)).await;
                Err(e.into())
            }
        }
    }

    pub(super) async fn close(&self) {
        if let Some(l) = self.link.lock().await.take() {
            let _ = l.channel.close(200, "shutdown".into()).await;
            let _ = l.conn.close(200, "shutdown".into()).await;
        }
    }
}

/// Connects, enables publisher confirms and declares the exchange: durable, `topic`, so
/// subscribers bind queues with patterns such as `orders.*`.
async fn open(url: &str, exchange: &str, generation: u64) -> Result<Link, QueueError> {
    let conn = Connection::connect(
        url,
        ConnectionProperties::default().with_connection_name("manifold-events".into()),
    )
    .await
    .map_err(|e| broker(format!("connect to {}", redact(url)), e))?;
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| broker("open channel", e))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| broker("enable publisher confirms", e))?;
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            broker(
                format!("declare exchange {exchange} (durable, topic; an existing exchange of another type or durability is refused)"),
                e,
            )
        })?;
    Ok(Link {
        conn,
        channel,
        generation,
    })
}
