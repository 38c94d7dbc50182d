//! Durable offload for Manifold: accept a call now, deliver it later, lose nothing.
//!
//! A route's `mode = "async"` call is rendered into a [`Task`] and written to a [`Queue`] before
//! the client gets its answer; a [`Dispatcher`] then delivers it to its upstream with retries,
//! backoff and dead letters. Three backends share the [`Queue`] contract (durable before
//! `enqueue` returns, at-least-once delivery, bounded, leases redelivered after a crash):
//! [`EmbeddedQueue`] (redb on local disk with group commit, the default), `NatsQueue`
//! (JetStream work-queue stream) and `RabbitQueue` (durable queue with publisher confirms).
//! A `mode = "publish"` call is a [`Task`] too ([`Task::event`]); the dispatcher hands it to an
//! [`events`] `Publisher`, which sends it to NATS or RabbitMQ and waits for the broker's confirm.
//!
//! # Wiring it into a gateway
//!
//! ```no_run
//! use std::sync::Arc;
//! use manifold_queue::{
//!     Deliver, DeliveryError, DispatchPolicy, Dispatcher, QueueConfig, Task,
//! };
//! use tokio_util::sync::CancellationToken;
//!
//! /// The gateway's side: send one task through its upstream client.
//! struct Upstreams;
//!
//! impl Deliver for Upstreams {
//!     async fn deliver(&self, task: &Task) -> Result<(), DeliveryError> {
//!         // Build `task.method task.path_and_query` to `task.upstream` with
//!         // `task.delivery_headers()` (includes Idempotency-Key) and `task.body`.
//!         let status: u16 = 503; // ... the upstream's answer
//!         if (200..300).contains(&status) {
//!             Ok(())
//!         } else {
//!             Err(DeliveryError::from_status(status))
//!         }
//!     }
//! }
//!
//! # async fn demo() -> Result<(), manifold_queue::QueueError> {
//! let cfg = QueueConfig::default(); // from the `[queue]` section
//! let queue = manifold_queue::open(&cfg).await?;
//!
//! // Request path: render the call, store it, then answer (`{shipping.task_id}` = task.id).
//! let task = Task::new("req-42.shipping", "shipping", "POST", "/shipping/labels", vec![], b"{}".to_vec());
//! match queue.enqueue(task).await {
//!     Ok(()) => { /* answer the route's status, e.g. 202 */ }
//!     Err(e) if e.is_full() => { /* 503 with Retry-After: e.retry_after() */ }
//!     Err(_) => { /* 500 (413 for QueueError::TooLarge) */ }
//! }
//!
//! // Background: deliver until shutdown, then drain.
//! let shutdown = CancellationToken::new();
//! let dispatcher = Dispatcher::new(queue.clone(), Arc::new(Upstreams), DispatchPolicy::from_config(&cfg));
//! let metrics = dispatcher.metrics(); // for /metrics
//! let running = tokio::spawn(dispatcher.run(shutdown.clone()));
//! // ... on SIGTERM:
//! shutdown.cancel();
//! let report = running.await.ok();
//! queue.close().await?;
//! # let _ = (metrics, report);
//! # Ok(())
//! # }
//! ```
#![doc = include_str!("../../../docs/offload.md")]

pub mod bench;
mod clock;
mod close;
pub mod dispatch;
pub mod embedded;
mod error;
pub mod events;
pub mod hooks;
mod key;
#[cfg(feature = "nats")]
pub mod nats;
mod queue;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
pub mod redact;
mod rng;
pub mod status;
mod task;
#[cfg(feature = "test-support")]
pub mod test_support;
#[cfg(test)]
mod testutil;

pub use clock::Clock;
pub use dispatch::{
    Backoff, Deliver, DeliveryError, DispatchMetrics, DispatchPolicy, DispatchSnapshot, Dispatcher,
    DrainReport,
};
pub use embedded::{EmbeddedOptions, EmbeddedQueue};
pub use error::{ErrorKind, QueueError};
#[cfg(any(feature = "nats", feature = "rabbitmq"))]
pub use events::Publisher;
pub use events::{check_subject, EventsBackend, EventsConfig};
pub use hooks::{HookKind, Hooks};
pub use key::{call_of, task_key, ClientKey};
pub use manifold_config::queue::{check_status_path, humantime_serde, Backend, QueueConfig};
#[cfg(feature = "nats")]
pub use nats::{NatsOptions, NatsQueue};
pub use queue::{Lease, Queue, QueueStats, Selection};
#[cfg(feature = "rabbitmq")]
pub use rabbitmq::{RabbitOptions, RabbitQueue};
pub use status::{Outcome, State, StatusLimits, TaskStatus};
pub use task::{ids_equal, Task, EVENTS_UPSTREAM, IDEMPOTENCY_KEY_HEADER, MAX_ID_LEN};

/// [`open`], with the gateway's `[cache] redis` (URL and key prefix): RabbitMQ keeps its task
/// statuses there when given (every replica sees them), else in a local file beside the
/// embedded queue's (`[queue] path`), seen by this process only. Other backends ignore it.
pub async fn open_with_redis(
    cfg: &QueueConfig,
    redis: Option<(&str, &str)>,
) -> Result<std::sync::Arc<dyn Queue>, QueueError> {
    match cfg.backend {
        #[cfg(feature = "rabbitmq")]
        Backend::Rabbitmq => {
            cfg.validate().map_err(QueueError::Config)?;
            open_rabbit(cfg, redis).await
        }
        _ => {
            // Only RabbitMQ keeps its statuses in Redis.
            let _ = redis;
            open(cfg).await
        }
    }
}

#[cfg(feature = "rabbitmq")]
async fn open_rabbit(
    cfg: &QueueConfig,
    redis: Option<(&str, &str)>,
) -> Result<std::sync::Arc<dyn Queue>, QueueError> {
    let limits = StatusLimits::from_config(cfg);
    let store: std::sync::Arc<dyn status::StatusStore> = match redis {
        Some((url, prefix)) => std::sync::Arc::new(
            status::redis::RedisStatus::connect(url, prefix, limits, cfg.max_age).await?,
        ),
        None => {
            let path = cfg.path.clone();
            std::sync::Arc::new(
                tokio::task::spawn_blocking(move || {
                    status::local::LocalStatus::open(&path, limits)
                })
                .await
                .map_err(|e| QueueError::storage("open status store", e))??,
            )
        }
    };
    let inner = std::sync::Arc::new(RabbitQueue::connect(RabbitOptions::from_config(cfg)).await?);
    Ok(std::sync::Arc::new(status::Tracked::new(
        inner, store, limits,
    )))
}

/// Opens the backend `cfg` names: the embedded file, or a connection to NATS / RabbitMQ (creating
/// the stream, consumer or queues if missing). The result is what the gateway's request path
/// enqueues to and what the [`Dispatcher`] leases from.
pub async fn open(cfg: &QueueConfig) -> Result<std::sync::Arc<dyn Queue>, QueueError> {
    cfg.validate().map_err(QueueError::Config)?;
    match cfg.backend {
        Backend::Embedded => Ok(std::sync::Arc::new(
            EmbeddedQueue::open(EmbeddedOptions::from_config(cfg)).await?,
        )),
        #[cfg(feature = "nats")]
        Backend::Nats => Ok(std::sync::Arc::new(
            NatsQueue::connect(NatsOptions::from_config(cfg)).await?,
        )),
        #[cfg(feature = "rabbitmq")]
        Backend::Rabbitmq => open_rabbit(cfg, None).await,
        #[allow(unreachable_patterns)]
        other => Err(QueueError::Config(format!(
            "backend {:?} is not compiled in (cargo feature {:?})",
            other.as_str(),
            other.as_str()
        ))),
    }
}
