//! Errors that can be asked questions: what kind, and so which HTTP status the client gets.
//! Retry, breaker and metrics code will read the same [`CallErrorKind`].

use http::StatusCode;
use std::fmt;

/// Boxed error for bodies and connections.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why one downstream call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallErrorKind {
    /// The call's own timeout passed.
    Timeout,
    /// The route's end-to-end deadline passed.
    Deadline,
    /// No connection could be made.
    Connect,
    /// The upstream answered with a status outside 2xx.
    Status(u16),
    /// The upstream's body was not JSON.
    InvalidJson,
    /// The upstream's body was larger than `server.max_response_bytes`.
    TooLarge,
    /// The connection broke while sending or receiving.
    Io,
    /// The offload queue is full: try again after this long.
    QueueFull(std::time::Duration),
    /// The offload queue could not take the task durably.
    Queue,
    /// The request could not be built from the client's input (e.g. a value that is not a valid
    /// header value).
    Input,
    /// The call was not sent: a call whose result it reads failed (an optional one, else the
    /// request would have failed already), so it has no input to render. 502: the cause is
    /// upstream.
    InputUnavailable,
}

impl CallErrorKind {
    /// A short stable name, used in error bodies and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            CallErrorKind::Timeout => "timeout",
            CallErrorKind::Deadline => "deadline",
            CallErrorKind::Connect => "connect",
            CallErrorKind::Status(_) => "upstream_status",
            CallErrorKind::InvalidJson => "invalid_json",
            CallErrorKind::TooLarge => "too_large",
            CallErrorKind::Io => "io",
            CallErrorKind::Input => "bad_input",
            CallErrorKind::QueueFull(_) => "queue_full",
            CallErrorKind::Queue => "queue",
            CallErrorKind::InputUnavailable => "input_unavailable",
        }
    }

    /// The status the client gets when a required call fails this way.
    pub fn client_status(&self) -> StatusCode {
        match self {
            CallErrorKind::Timeout | CallErrorKind::Deadline => StatusCode::GATEWAY_TIMEOUT,
            CallErrorKind::Input => StatusCode::BAD_REQUEST,
            CallErrorKind::QueueFull(_) | CallErrorKind::Queue => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// Whether trying again might succeed (for the retry work to come).
    pub fn is_retryable(&self) -> bool {
        match self {
            CallErrorKind::Timeout | CallErrorKind::Connect | CallErrorKind::Io => true,
            CallErrorKind::Status(s) => *s >= 500,
            _ => false,
        }
    }
}

/// One downstream call's failure, with enough context to answer the client and log it.
#[derive(Debug, Clone, thiserror::Error)]
pub struct CallError {
    /// What went wrong.
    pub kind: CallErrorKind,
    /// Human-readable detail.
    pub message: String,
}

impl CallError {
    pub(crate) fn new(kind: CallErrorKind, message: impl Into<String>) -> Self {
        CallError {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

/// Errors starting or running the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The cache could not be built from `[cache]` (a config error).
    #[error("config: cache: {0}")]
    Cache(#[source] manifold_cache::CacheError),
    /// The offload queue could not be opened (`[queue]`).
    #[error("queue: {0}")]
    Queue(#[source] manifold_queue::QueueError),
    /// The `[events]` broker could not be reached at start (wrong URL or credentials, or an
    /// existing RabbitMQ exchange of another type).
    #[error("events: {0}")]
    Events(#[source] manifold_queue::QueueError),
    /// Accepting connections failed.
    #[error("accept failed: {0}")]
    Accept(#[source] std::io::Error),
    /// A route could not be registered with the router. `manifold check` applies the same rule
    /// ([`manifold_config::route_shape`]), so this means a config that bypassed the compiler.
    #[error("route `{route}` ({path}) cannot be served: {reason}")]
    Route {
        /// The route's name.
        route: String,
        /// Its path pattern.
        path: String,
        /// Why the router refused it.
        reason: String,
    },
    /// The admin listener would be reachable beyond this host without a token.
    #[error("{0}")]
    AdminExposed(String),
}
