//! Simulated upstream services on loopback, so Manifold's latency claims can be shown and tested
//! on one machine with nothing to set up.
//!
//! Each service in a [`SimConfig`] gets one listener per replica (HTTP/1.1 and h2c on one port).
//! Each endpoint waits a sampled [`Latency`] (fixed, uniform, normal, log-normal or a weighted
//! mix such as "99% 10 ms, 1% 1 s"), may inject a fault (an error status, a dropped connection, a
//! hang, a slow body), and answers with a JSON template that can echo path, query and body values
//! and mint ids. All randomness is seeded per endpoint and replica, so runs repeat. Latency uses
//! `tokio::time`, so tests on paused time run instantly.
//!
//! Every endpoint counts its calls and remembers its recent calls' start and end times, readable
//! in process ([`RunningSim::stats`]) and over HTTP (`GET /__stats` on any listener).
//! [`SimConfig::shop`] is the seed documents' shop, with their exact service times.
//!
//! ```no_run
//! # async fn demo() -> Result<(), manifold_sim::SimError> {
//! let sim = manifold_sim::Sim::start(manifold_sim::SimConfig::shop()).await?;
//! let users = sim.url("users").expect("the shop has a users service"); // http://127.0.0.1:PORT
//! // … send traffic …
//! assert_eq!(sim.stats().calls("users", "GET /users/{id}"), 0);
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

mod config;
mod latency;
mod replica;
mod server;
mod stats;
mod template;
mod tls;

pub use config::{
    EndpointConfig, FaultConfig, FaultKind, ReplicaConfig, ResponseConfig, ServiceConfig,
    SimConfig, SimTls, DEFAULT_SEED, SHOP_SERVICES,
};
pub use latency::{Latency, MAX_LATENCY};
pub use server::{RunningSim, Sim, MAX_BODY_BYTES, MAX_STALL};
pub use stats::{
    CallRecord, EndpointStats, ReplicaStats, ServiceStats, SimStats, IDEMPOTENCY_KEYS_CAP,
    RECENT_CAP, REQUEST_ID_CAP,
};

/// Why the sim could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration is invalid (the message names the place, with line:column for TOML).
    #[error("config error: {0}")]
    Config(String),
    /// A listener could not be bound (port in use, no permission).
    #[error("bind error: cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// Reading a file or socket state failed.
    #[error("io error: {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
}
