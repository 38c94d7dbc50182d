//! Manifold's gateway: the listener, router, eager DAG executor, response composer, upstream
//! client and admin endpoints.
//!
//! This is where waiting is removed. A request to a composed route runs its [`Plan`]
//! (`manifold_config`) with every call starting the instant its inputs are ready, so it costs the
//! DAG's critical path; the results are merged into one JSON response. Pass-through routes
//! forward requests unchanged. Policies (caching, offload, resilience, telemetry) attach here, in
//! one place per concern.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = manifold_config::load("manifold.toml".as_ref())?;
//! let gateway = manifold_gateway::Gateway::bind(config).await?;
//! println!("listening on {}", gateway.local_addr());
//! gateway.run(tokio_util::sync::CancellationToken::new()).await;
//! # Ok(()) }
//! ```
//!
//! [`Plan`]: manifold_config::Plan

mod access_log;
mod admin;
mod admin_auth;
mod cache;
mod cache_key;
mod conn;
mod error;
mod exec;
mod forwarded;
mod handler;
mod limit;
mod offload;
mod path;
mod proxy;
mod proxy_body;
mod queued;
mod readiness;
pub mod render;
mod respond;
mod router;
mod server;
mod telemetry;
mod upstream;

pub use cache::CACHE_HEADER;
pub use error::{BoxError, CallError, CallErrorKind, Fault, GatewayError};
pub use handler::PARTIAL_HEADER;
pub use respond::Stats;
pub use upstream::Body;
pub use upstream::DEADLINE_HEADER;

use manifold_config::Config;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Most connections the admin listener serves at once (health probes, `/config`).
const ADMIN_MAX_CONNECTIONS: usize = 256;

/// Descriptors kept aside beyond the connections: listeners, the queue's files, logs.
const SPARE_FILES: u64 = 64;

/// A warning when the process's open-file limit cannot hold `server.max_connections` client
/// connections plus an upstream connection for each (the least a proxied or composed request
/// needs) and the admin listener's: past the limit the gateway cannot accept or connect, and
/// requests fail with "too many open files" long before `max_connections` is reached.
pub fn open_files_warning(server: &manifold_config::ServerSettings, limit: u64) -> Option<String> {
    let needed = server
        .max_connections
        .saturating_mul(2)
        .saturating_add(ADMIN_MAX_CONNECTIONS as u64)
        .saturating_add(SPARE_FILES);
    (limit < needed).then(|| {
        format!(
            "the open-file limit is {limit}, and server.max_connections = {} needs about {needed} \
             (a client and an upstream connection each, plus the admin listener's): raise the \
             limit (`ulimit -n`, LimitNOFILE= for systemd) or lower server.max_connections",
            server.max_connections
        )
    })
}

/// A gateway with its listeners bound, ready to [`run`](Gateway::run).
#[derive(Debug)]
pub struct Gateway {
    shared: Arc<handler::Shared>,
    listener: TcpListener,
    admin: TcpListener,
    addr: SocketAddr,
    admin_addr: SocketAddr,
    offload: Option<offload::Offload>,
}

impl Gateway {
    /// Bind the client and admin listeners from `config.server` (port 0 picks a free port).
    pub async fn bind(config: Config) -> Result<Gateway, GatewayError> {
        // Fail closed before binding anything: also sees `manifold serve --admin`.
        manifold_config::check_admin_exposure(&config.server)
            .map_err(GatewayError::AdminExposed)?;
        let router = router::Router::new(&config)?;
        let listen = config.server.listen;
        let admin = config.server.admin;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| GatewayError::Bind {
                addr: listen,
                source,
            })?;
        let admin = TcpListener::bind(admin)
            .await
            .map_err(|source| GatewayError::Bind {
                addr: admin,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| GatewayError::Bind {
            addr: listen,
            source,
        })?;
        let admin_addr = admin.local_addr().map_err(|source| GatewayError::Bind {
            addr: config.server.admin,
            source,
        })?;
        // One stack per `[upstreams.NAME]`, by index: every outbound request goes through it.
        let clients: Vec<Arc<upstream::Upstream>> = config
            .upstreams
            .iter()
            .map(|u| Arc::new(upstream::Upstream::new(u)))
            .collect();
        let caching = cache::Caching::new(&config).map_err(GatewayError::Cache)?;
        // The queue is opened only when some route offloads (async or publish calls): a gateway
        // without them writes nothing to disk and needs no broker. The `[events]` publisher
        // comes with it (the compiler makes publish calls require `[events]`; an `[events]`
        // section beside async calls only is connected too, so events left in the queue by an
        // earlier config still go out).
        let offloads = config.routes.iter().any(|r| match &r.kind {
            manifold_config::RouteKind::Compose(p) => p
                .calls
                .iter()
                .any(|c| c.mode != manifold_config::Mode::Sync),
            _ => false,
        });
        let telemetry = telemetry::Telemetry::new(&config).map_err(GatewayError::Telemetry)?;
        let offload = if offloads {
            let tracer = telemetry.tracer().cloned();
            Some(
                offload::Offload::start(&config.queue, config.events.as_ref(), &clients, tracer)
                    .await?,
            )
        } else {
            None
        };
        let queue = offload
            .as_ref()
            .map(|o| offload::QueueRef(Arc::clone(&o.queue), Arc::clone(&o.metrics)));
        if let Some(url) = &config.cache.redis {
            tracing::info!(
                redis = %manifold_config::redact_url(url),
                prefix = %config.cache.prefix,
                "cache: in-process tier plus Redis"
            );
        }
        let stats: Arc<Stats> = Arc::default();
        let limit = limit::Limiter::new(
            config.server.concurrency,
            config.server.max_connections,
            Arc::clone(&stats),
        );
        Ok(Gateway {
            shared: Arc::new(handler::Shared {
                telemetry,
                config,
                router,
                clients,
                caching,
                queue,
                stats,
                limit,
            }),
            listener,
            admin,
            addr,
            admin_addr,
            offload,
        })
    }

    /// The client-facing address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin address actually bound.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The gateway's counters (shared: they keep counting while it runs).
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.shared.stats)
    }

    /// Serve until `stop` is cancelled; then mark the gateway not ready (`/readyz` 503) and keep
    /// serving for `server.drain_delay` so load balancers stop sending, then stop accepting and
    /// let in-flight requests finish for up to `server.drain_timeout`, aborting what is left.
    pub async fn run(self, stop: CancellationToken) {
        let server = &self.shared.config.server;
        let limits = server::Limits {
            header_read_timeout: server.header_read_timeout,
            h2_idle_timeout: server.h2_idle_timeout,
            max_connections: usize::try_from(server.max_connections).unwrap_or(usize::MAX),
            drain: server.drain_timeout,
            passthrough: true,
        };
        // The admin listener is for probes and operators: a small limit of its own, so a flood
        // on the client port never starves `/readyz`, and the reverse.
        let admin_limits = server::Limits {
            max_connections: ADMIN_MAX_CONNECTIONS,
            drain: std::time::Duration::from_secs(1),
            passthrough: false,
            ..limits
        };
        let admin_state = Arc::new(admin::AdminState {
            shared: Arc::clone(&self.shared),
            ready: true.into(),
            readiness: Default::default(),
        });
        let admin_stop = CancellationToken::new();
        let admin_task = {
            let state = Arc::clone(&admin_state);
            let stop = admin_stop.clone();
            tokio::spawn(server::serve(
                self.admin,
                move |req, _peer| admin::handle(Arc::clone(&state), req),
                admin_limits,
                stop,
            ))
        };
        let shared = Arc::clone(&self.shared);
        let main_stop = CancellationToken::new();
        let main = tokio::spawn(server::serve(
            self.listener,
            move |req, peer| handler::handle(Arc::clone(&shared), req, peer),
            limits,
            main_stop.clone(),
        ));
        stop.cancelled().await;
        admin_state.ready.store(false, Ordering::Relaxed);
        let delay = self.shared.config.server.drain_delay;
        if !delay.is_zero() {
            tracing::info!(
                drain_delay = %humantime::format_duration(delay),
                "shutting down: /readyz answers 503; still accepting until the drain delay passes"
            );
            tokio::time::sleep(delay).await;
        }
        tracing::info!("shutting down: no new connections; draining in-flight requests");
        main_stop.cancel();
        let _ = main.await;
        // Requests are drained: every accepted task is in the queue. Stop delivering (what is
        // left is delivered after the next start).
        if let Some(offload) = self.offload {
            offload.shutdown().await;
        }
        // Requests and deliveries are done: send the spans they left.
        self.shared.telemetry.shutdown().await;
        admin_stop.cancel();
        let _ = admin_task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_file_limit_is_checked_against_max_connections() {
        let mut server = manifold_config::ServerSettings::default();
        // The default 8,192 connections need about 16,704 descriptors.
        assert!(open_files_warning(&server, 1_048_576).is_none());
        let w = open_files_warning(&server, 1024).expect("a warning");
        assert!(w.contains("the open-file limit is 1024"), "{w}");
        assert!(w.contains("server.max_connections = 8192"), "{w}");
        server.max_connections = 300;
        assert!(open_files_warning(&server, 1024).is_none());
        server.max_connections = u64::MAX;
        assert!(open_files_warning(&server, u64::MAX - 1).is_some());
    }
}
