//! Queue errors that can be asked what kind they are, so the gateway picks its status code
//! (503 + `Retry-After` when full, 413 when too large, 500 otherwise) from one answer.

use std::time::Duration;

/// What went wrong, coarsely: enough to choose an HTTP status, a metric label and whether to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The queue is at `max_tasks` / `max_bytes` (or the broker's limit): shed load, retry later.
    Full,
    /// The task itself is unacceptable (too large, bad id): the client's fault, do not retry.
    Input,
    /// Bad configuration (missing URL, unknown backend option).
    Config,
    /// Disk or storage-engine failure.
    Io,
    /// The broker failed or could not be reached.
    Broker,
    /// An operation did not finish in time.
    Timeout,
    /// The queue was closed (shutdown).
    Closed,
}

/// Errors from a [`Queue`](crate::Queue) backend.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue holds `max_tasks` tasks or `max_bytes` bytes; nothing was written.
    #[error("queue full: {reason}; retry after {}", humantime::format_duration(*retry_after))]
    Full {
        /// Which bound was hit.
        reason: String,
        /// Suggested `Retry-After` for the client.
        retry_after: Duration,
    },
    /// The encoded task is larger than the configured `max_task_bytes` (or the broker's limit).
    #[error("input: task of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// A task field is malformed (id alphabet, empty upstream...).
    #[error("input: {0}")]
    Invalid(String),
    /// A task could not be encoded or decoded.
    #[error("io: cannot {what}")]
    Codec {
        /// What was being done.
        what: &'static str,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// Configuration is incomplete or contradictory.
    #[error("config: {0}")]
    Config(String),
    /// The embedded store failed.
    #[error("io: embedded queue storage: {what}")]
    Storage {
        /// What was being done.
        what: &'static str,
        /// The storage engine's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The broker (NATS, RabbitMQ) failed or is unreachable.
    #[error("broker: {backend}: {what}")]
    Broker {
        /// `nats` or `rabbitmq`.
        backend: &'static str,
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An operation did not finish in time.
    #[error("timeout: {0}")]
    Timeout(String),
    /// The queue has been closed.
    #[error("closed: the queue is shutting down")]
    Closed,
    /// The named dead letter does not exist.
    #[error("input: no dead-lettered task {0:?}")]
    NotFound(String),
}

impl QueueError {
    /// The coarse kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            QueueError::Full { .. } => ErrorKind::Full,
            QueueError::TooLarge { .. } | QueueError::Invalid(_) | QueueError::NotFound(_) => {
                ErrorKind::Input
            }
            QueueError::Codec { .. } | QueueError::Storage { .. } => ErrorKind::Io,
            QueueError::Config(_) => ErrorKind::Config,
            QueueError::Broker { .. } => ErrorKind::Broker,
            QueueError::Timeout(_) => ErrorKind::Timeout,
            QueueError::Closed => ErrorKind::Closed,
        }
    }

    /// True when the queue is full: answer 503 with [`QueueError::retry_after`].
    pub fn is_full(&self) -> bool {
        matches!(self, QueueError::Full { .. })
    }

    /// The `Retry-After` to send when full.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            QueueError::Full { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Whether the same call may succeed later (full, broker hiccup, timeout).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Full | ErrorKind::Broker | ErrorKind::Timeout
        )
    }

    pub(crate) fn storage(
        what: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        QueueError::Storage {
            what,
            source: Box::new(source),
        }
    }

    #[cfg(any(feature = "nats", feature = "rabbitmq"))]
    pub(crate) fn broker(
        backend: &'static str,
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        QueueError::Broker {
            backend,
            what: what.into(),
            source: source.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_carries_retry_after_and_kind() {
        let e = QueueError::Full {
            reason: "max_tasks 10 reached".into(),
            retry_after: Duration::from_secs(2),
        };
        assert!(e.is_full());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(e.kind(), ErrorKind::Full);
        assert!(e.to_string().contains("retry after 2s"));
        let e = QueueError::TooLarge { size: 9, limit: 8 };
        assert_eq!(e.kind(), ErrorKind::Input);
        assert!(!e.is_retryable());
        assert_eq!(e.retry_after(), None);
    }
}
