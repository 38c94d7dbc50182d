//! The connection to the broker: opening and replacing it, channels, the consumer.

use super::{
    broker, close_within, BrokerUnreachable, ConsumerState, Link, Links, RabbitOptions,
    RabbitQueue, CONNECT_TIMEOUT, PREFETCH, RECONNECT_MAX, RECONNECT_MIN,
};
use crate::error::QueueError;
use crate::redact::url as redact;
use lapin::options::{
    BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ConnectionProperties};
use std::collections::BinaryHeap;
use std::time::Duration;
use tokio::time::Instant;

/// The arguments `<queue>` is declared with: the bounds, enforced by the broker.
pub(super) fn bound_arguments(opts: &RabbitOptions) -> FieldTable {
    let mut args = FieldTable::default();
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    args.insert(
        ShortString::from("x-max-length"),
        AMQPValue::LongLongInt(clamp(opts.max_tasks)),
    );
    args.insert(
        ShortString::from("x-max-length-bytes"),
        AMQPValue::LongLongInt(clamp(opts.max_bytes)),
    );
    args.insert(
        ShortString::from("x-overflow"),
        AMQPValue::LongString(LongString::from("reject-publish")),
    );
    args
}

/// Connects, enables confirms and declares `<queue>` (bounded) and `<queue>.dead`.
pub(super) async fn open_link(
    opts: &RabbitOptions,
    dead_queue: &str,
    generation: u64,
) -> Result<Link, QueueError> {
    let conn = Connection::connect(
        &opts.url,
        ConnectionProperties::default().with_connection_name("manifold-queue".into()),
    )
    .await
    .map_err(|e| broker(format!("connect to {}", redact(&opts.url)), e))?;
    let publish = conn
        .create_channel()
        .await
        .map_err(|e| broker("open channel", e))?;
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| broker("enable publisher confirms", e))?;
    publish
        .queue_declare(
            opts.queue.as_str().into(),
            QueueDeclareOptions::durable(),
            bound_arguments(opts),
        )
        .await
        .map_err(|e| declare_error(opts, e))?;
    publish
        .queue_declare(
            dead_queue.into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| broker(format!("declare queue {dead_queue}"), e))?;
    Ok(Link {
        conn,
        publish,
        generation,
    })
}

/// A declaration refused because the queue exists with other arguments (PRECONDITION_FAILED)
/// becomes a configuration error that says which and what to do; others stay broker errors.
pub(super) fn declare_error(opts: &RabbitOptions, e: lapin::Error) -> QueueError {
    let text = e.to_string();
    if text.contains("PRECONDITION_FAILED") || text.contains("inequivalent arg") {
        QueueError::Config(format!(
            "rabbitmq: queue {:?} already exists with other arguments than this configuration \
             asks for (x-max-length = {} from max_tasks, x-max-length-bytes = {} from max_bytes, \
             x-overflow = reject-publish); the broker says: {text}. Delete the queue once it is \
             drained (rabbitmqctl delete_queue {}) or set another [queue] queue name",
            opts.queue, opts.max_tasks, opts.max_bytes, opts.queue
        ))
    } else {
        broker(format!("declare queue {}", opts.queue), e)
    }
}

impl RabbitQueue {
    /// The live link, reconnecting if the last one died — at most one attempt per backoff
    /// period, so an unreachable broker costs callers a quick error, not a wait each.
    pub(super) async fn live<'a>(&self, links: &'a mut Links) -> Result<&'a Link, QueueError> {
        let alive = links
            .link
            .as_ref()
            .is_some_and(|l| l.conn.status().connected() && l.publish.status().connected());
        if !alive {
            // After `close`, nothing reconnects.
            self.check_open()?;
            if let Some(old) = links.link.take() {
                close_within(old.conn.close(200, "reconnecting".into())).await;
            }
            if let Some(at) = links.retry_at {
                if Instant::now() < at {
                    let wait = at.saturating_duration_since(Instant::now());
                    let wait = Duration::from_millis(wait.as_millis() as u64);
                    return Err(broker(
                        format!(
                            "connection lost; next attempt in {} (last: {})",
                            humantime::format_duration(wait),
                            links.last_error
                        ),
                        BrokerUnreachable,
                    ));
                }
            }
            let generation = links.generations;
            links.generations += 1;
            let attempt = tokio::time::timeout(
                CONNECT_TIMEOUT,
                open_link(&self.opts, &self.dead_queue, generation),
            )
            .await
            .unwrap_or_else(|_| {
                Err(QueueError::Timeout(format!(
                    "rabbitmq: connect to {}",
                    redact(&self.opts.url)
                )))
            });
            match attempt {
                Ok(link) => {
                    tracing::info!(queue = %self.opts.queue, "rabbitmq: reconnected");
                    links.link = Some(link);
                    links.backoff = RECONNECT_MIN;
                    links.retry_at = None;
                }
                Err(e) => {
                    links.last_error = e.to_string();
                    links.retry_at = Some(Instant::now() + links.backoff);
                    links.backoff = (links.backoff * 2).min(RECONNECT_MAX);
                    return Err(e);
                }
            }
        }
        links
            .link
            .as_ref()
            .ok_or_else(|| broker("reconnect", "no connection"))
    }

    /// The publishing channel and its link's generation.
    pub(super) async fn publish_channel(&self) -> Result<(Channel, u64), QueueError> {
        let mut links = self.links.lock().await;
        let link = self.live(&mut links).await?;
        Ok((link.publish.clone(), link.generation))
    }

    /// A new channel on the live connection.
    pub(super) async fn new_channel(&self) -> Result<Channel, QueueError> {
        let mut links = self.links.lock().await;
        let link = self.live(&mut links).await?;
        link.conn
            .create_channel()
            .await
            .map_err(|e| broker("open channel", e))
    }

    /// Forgets link `generation` after a failure on it: the next operation reconnects.
    pub(super) async fn reset(&self, generation: u64) {
        let mut links = self.links.lock().await;
        if links
            .link
            .as_ref()
            .is_some_and(|l| l.generation == generation)
        {
            if let Some(old) = links.link.take() {
                close_within(old.conn.close(200, "operation failed".into())).await;
            }
        }
    }

    pub(super) async fn start_consumer(&self) -> Result<ConsumerState, QueueError> {
        let channel = self.new_channel().await?;
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await
            .map_err(|e| broker("set prefetch", e))?;
        let consumer = channel
            .basic_consume(
                self.opts.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| broker("start consumer", e))?;
        Ok(ConsumerState {
            channel,
            consumer,
            held: BinaryHeap::new(),
            next_seq: 0,
            parked_run: 0,
        })
    }
}
