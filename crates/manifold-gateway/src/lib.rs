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
mod admin_traces;
mod cache;
mod cache_key;
mod conn;
mod error;
mod exec;
mod forwarded;
mod handler;
mod hooks;
mod idle;
mod limit;
mod offload;
mod path;
mod proxy;
mod proxy_body;
mod queued;
mod read_body;
mod readiness;
mod reload;
pub mod render;
mod respond;
mod router;
mod send;
mod server;
mod status;
mod stream_send;
mod telemetry;
mod tls;
mod upstream;
mod via;

pub use access_log::flush as flush_access_log;
pub use cache::CACHE_HEADER;
pub use error::{BoxError, CallError, CallErrorKind, Fault, GatewayError};
pub use handler::PARTIAL_HEADER;
/// The gateway's log writers (bounded, lossy), for the binary's own log on stderr.
pub use manifold_telemetry::log_out;
pub use readiness::CHECK_TIMEOUT as READY_CHECK_TIMEOUT;
pub use reload::{
    Overrides, ReloadError, ReloadReport, Reloader, RestartRequired, UpstreamChanges,
};
pub use respond::Stats;
pub use tls::{TlsError, TlsReloader};
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
    /// The running plans, swapped whole by a reload ([`Reloader`]).
    live: Arc<reload::Live>,
    /// The plaintext client listener (`None` in a TLS-only deployment).
    listener: Option<TcpListener>,
    /// `server.tls`: the HTTPS listener and its certificate.
    tls: Option<(TcpListener, Arc<tls::TlsFiles>)>,
    admin: TcpListener,
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
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
        // The certificate first: a bad file is a start-up error before anything is bound.
        let tls_files = match &config.server.tls {
            Some(t) => Some((t.listen, Arc::new(tls::TlsFiles::new(t)?))),
            None => None,
        };
        let listener = match config.server.listen {
            Some(listen) => Some(bind_listener(listen).await?),
            None => None,
        };
        let tls = match tls_files {
            Some((listen, files)) => Some((bind_listener(listen).await?, files)),
            None => None,
        };
        let admin = bind_listener(config.server.admin).await?;
        let tls_addr = tls.as_ref().map(|(l, _)| l.0);
        let tls = tls.map(|(l, files)| (l.1, files));
        // Without a plaintext listener, the HTTPS one is the client-facing address.
        let addr = listener
            .as_ref()
            .map(|l| l.0)
            .or(tls_addr)
            .unwrap_or(admin.0);
        let listener = listener.map(|l| l.1);
        let (admin_addr, admin) = admin;
        // One stack per `[upstreams.NAME]`, by index: every outbound request goes through it.
        let clients = config
            .upstreams
            .iter()
            .map(|u| upstream::Upstream::new(u).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let caching = cache::Caching::new(&config).map_err(GatewayError::Cache)?;
        // The queue is opened only when some route offloads (async or publish calls): a gateway
        // without them writes nothing to disk and needs no broker. The `[events]` publisher
        // comes with it (the compiler makes publish calls require `[events]`; an `[events]`
        // section beside async calls only is connected too, so events left in the queue by an
        // earlier config still go out).
        let offloads = manifold_config::offloads(&config.routes);
        let telemetry = telemetry::Telemetry::new(&config).map_err(GatewayError::Telemetry)?;
        let offload = if offloads {
            let tracer = telemetry.tracer().cloned();
            Some(
                offload::Offload::start(
                    &config.queue,
                    config.events.as_ref(),
                    &clients,
                    tracer,
                    config
                        .cache
                        .redis
                        .as_deref()
                        .map(|url| (url, config.cache.prefix.as_str())),
                )
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
        if !config.cache.memcached.is_empty() {
            tracing::info!(
                memcached = %config.cache.memcached.join(","),
                prefix = %config.cache.prefix,
                "cache: in-process tier plus Memcached"
            );
        }
        let follow = status::Follow::new(&config.queue, offloads);
        let stats: Arc<Stats> = Arc::default();
        let limit = limit::Limiter::new(
            config.server.concurrency,
            config.server.max_connections,
            Arc::clone(&stats),
        );
        let stacks = offload.as_ref().map(|o| Arc::clone(&o.stacks));
        let parse_budget = Arc::new(limit::ParseBudget::new(config.server.max_parsed_bytes));
        let shared = handler::Shared {
            telemetry,
            config,
            router,
            clients,
            caching,
            queue,
            stats,
            limit,
            parse_budget,
            follow,
        };
        let tls_reloader = TlsReloader(tls.as_ref().map(|(_, files)| Arc::clone(files)));
        Ok(Gateway {
            live: Arc::new(reload::Live::new(shared, stacks, tls_reloader)),
            listener,
            tls,
            admin,
            addr,
            tls_addr,
            admin_addr,
            offload,
        })
    }

    /// The client-facing address actually bound: the plaintext listener's, or the HTTPS one's
    /// in a TLS-only deployment.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The HTTPS listener's address actually bound (`server.tls`).
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Re-read `server.tls.cert` and `server.tls.key` without dropping a connection: new
    /// handshakes present the new certificate. A bad file is refused with an error naming it,
    /// and the current certificate stays. Without `server.tls`, nothing to do.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        self.tls_reloader().reload_tls()
    }

    /// A handle doing what [`Gateway::reload_tls`] does, kept after [`Gateway::run`] took the
    /// gateway.
    pub fn tls_reloader(&self) -> TlsReloader {
        TlsReloader(self.tls.as_ref().map(|(_, files)| Arc::clone(files)))
    }

    /// The admin address actually bound.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The gateway's counters (shared: they keep counting while it runs, across reloads).
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.live.current.load().stats)
    }

    /// A handle that reloads this gateway's config while it runs (`SIGHUP`, `--watch`); the
    /// admin listener's `POST /reload` uses the same.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            live: Arc::clone(&self.live),
        }
    }

    /// The command-line overrides to apply to the file again at every reload.
    pub fn set_overrides(&self, overrides: Overrides) {
        self.live.set_overrides(overrides);
    }

    /// Serve until `stop` is cancelled; then mark the gateway not ready (`/readyz` 503) and keep
    /// serving for `server.drain_delay` so load balancers stop sending, then stop accepting and
    /// let in-flight requests finish for up to `server.drain_timeout`, aborting what is left.
    pub async fn run(self, stop: CancellationToken) {
        // Listener settings are read once: a reload reports their changes as needing a restart.
        let at_start = self.live.current.load_full();
        let server = &at_start.config.server;
        let limits = server::Limits {
            header_read_timeout: server.header_read_timeout,
            h2_idle_timeout: server.h2_idle_timeout,
            send_timeout: server.send_timeout,
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
        // Not held while serving: the first config's stacks must go once a reload replaces them.
        drop(at_start);
        let admin_state = Arc::new(admin::AdminState {
            live: Arc::clone(&self.live),
            ready: true.into(),
            readiness: Default::default(),
        });
        // Each listener's connection series, with metrics on (the registry outlives reloads).
        let registry = self.live.current.load().telemetry.metrics().cloned();
        let listener_metrics =
            |name: &str, max: usize| registry.as_ref().map(|m| m.listener(name, max));
        let admin_stop = CancellationToken::new();
        let admin_task = {
            let state = Arc::clone(&admin_state);
            let stop = admin_stop.clone();
            tokio::spawn(server::serve(
                self.admin,
                None,
                move |req, _peer, _id| admin::handle(Arc::clone(&state), req),
                admin_limits,
                stop,
                listener_metrics("admin", admin_limits.max_connections),
            ))
        };
        let main_stop = CancellationToken::new();
        // The plaintext and the HTTPS listener serve the same routes, each with its own
        // connection slots (`max_connections` each). Each request takes the plans running when
        // it arrives and holds them to its end.
        let client_listeners = self
            .listener
            .map(|l| (l, None))
            .into_iter()
            .chain(self.tls.map(|(l, files)| (l, Some(files))));
        let mut main = Vec::new();
        for (listener, tls) in client_listeners {
            let live = Arc::clone(&self.live);
            let name = if tls.is_some() { "https" } else { "http" };
            let metrics = listener_metrics(name, limits.max_connections);
            main.push(tokio::spawn(server::serve(
                listener,
                tls,
                move |req, peer, id| handler::handle(live.current.load_full(), req, peer, id),
                limits,
                main_stop.clone(),
                metrics,
            )));
        }
        stop.cancelled().await;
        admin_state.ready.store(false, Ordering::Relaxed);
        let delay = self.live.current.load().config.server.drain_delay;
        if !delay.is_zero() {
            tracing::info!(
                drain_delay = %humantime::format_duration(delay),
                "shutting down: /readyz answers 503; still accepting until the drain delay passes"
            );
            tokio::time::sleep(delay).await;
        }
        tracing::info!("shutting down: no new connections; draining in-flight requests");
        main_stop.cancel();
        for task in main {
            // A listener's task ends by itself only on a panic (a bug): said, not swallowed.
            if let Err(e) = task.await {
                tracing::error!(error = %e, "a client listener's task failed");
            }
        }
        // Requests are drained: every accepted task is in the queue. Stop delivering (what is
        // left is delivered after the next start).
        if let Some(offload) = self.offload {
            offload.shutdown().await;
        }
        // Requests and deliveries are done: send the spans they left.
        self.live.current.load_full().telemetry.shutdown().await;
        admin_stop.cancel();
        if let Err(e) = admin_task.await {
            tracing::error!(error = %e, "the admin listener's task failed");
        }
    }
}

/// Bind `addr`; the address actually bound (port 0 picks one) with the listener.
async fn bind_listener(addr: SocketAddr) -> Result<(SocketAddr, TcpListener), GatewayError> {
    let bind = |source| GatewayError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind)?;
    let local = listener.local_addr().map_err(bind)?;
    Ok((local, listener))
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
