//! The gateway's errors. A call's failure and its classification live with the upstream stack
//! ([`crate::upstream::error`]), the one place transport errors are mapped; re-exported here.

pub use crate::upstream::error::{CallError, CallErrorKind, Fault};

/// Boxed error for bodies and connections.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    /// The embedded queue could not be opened at `path`; `hint` says why when it is known
    /// (another process holds the file: the embedded queue is single-node).
    #[error("queue: the embedded queue at {path}: {source}{hint}")]
    EmbeddedQueue {
        /// The queue's directory (`[queue] path`).
        path: String,
        /// The cause.
        #[source]
        source: manifold_queue::QueueError,
        /// Empty, or a sentence starting with "; ".
        hint: &'static str,
    },
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
    /// The tracer or the OTLP exporter refused `[telemetry]` (a config that bypassed the
    /// compiler's checks).
    #[error("telemetry: {0}")]
    Telemetry(#[source] manifold_telemetry::TelemetryError),
    /// `server.tls` or an upstream's TLS files could not be used (names the file).
    #[error("tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The admin listener would be reachable beyond this host without a token.
    #[error("{0}")]
    AdminExposed(String),
}
