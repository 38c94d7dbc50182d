//! The listeners and the request handler.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{CompiledEndpoint, SimConfig};
use crate::replica::Behaviour;
use crate::stats::{self, EndpointCounters, ReplicaStats, ServiceStats, SimStats};
use crate::SimError;

mod handler;
mod running;

pub(crate) use handler::decode;
use handler::Handler;

/// Request bodies above this are refused with 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The longest stall `POST /__stall` or [`RunningSim::stall`] accepts.
pub const MAX_STALL: Duration = Duration::from_secs(600);

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Returned by the handler to make hyper drop the connection without a response.
#[derive(Debug)]
struct InjectedReset;

impl std::fmt::Display for InjectedReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("injected connection reset")
    }
}

impl std::error::Error for InjectedReset {}

pub(crate) struct EndpointState {
    pub(crate) ep: CompiledEndpoint,
    pub(crate) key: String,
    rng: Mutex<SmallRng>,
    seq: AtomicU64,
    pub(crate) counters: EndpointCounters,
}

pub(crate) struct ReplicaState {
    pub(crate) addr: SocketAddr,
    behaviour: Behaviour,
    /// The replica's own generator (errors, stragglers), apart from its endpoints' so that
    /// turning these on does not change an endpoint's latency sequence.
    rng: Mutex<SmallRng>,
    pub(crate) endpoints: Vec<EndpointState>,
    not_found: AtomicU64,
    stragglers: AtomicU64,
}

pub(crate) struct ServiceState {
    pub(crate) name: String,
    pub(crate) replicas: Vec<ReplicaState>,
}

pub(crate) struct Shared {
    origin: Instant,
    /// When the sim started or its counters were last reset: what `slow_after` counts from, so
    /// each measurement that begins with a reset sees a replica turn slow at the same point.
    epoch: Mutex<Instant>,
    timer: manifold_timer::Timer,
    stall_until: Mutex<Option<Instant>>,
    pub(crate) services: Vec<ServiceState>,
    /// `https` with `tls`, else `http`: what [`RunningSim::url`] says.
    scheme: &'static str,
}

/// A running simulation: one listener per replica of every service. Dropping it stops the
/// listeners (without waiting); [`RunningSim::shutdown`] stops them and waits.
pub struct RunningSim {
    shared: Arc<Shared>,
    token: CancellationToken,
    tracker: TaskTracker,
}

/// Entry point: start a simulation from a config.
#[derive(Debug, Clone, Copy)]
pub struct Sim;

impl Sim {
    /// Validate `config`, bind every replica's listener, and serve until shut down. Must be called
    /// inside a tokio runtime. Ports of 0 (the default) are ephemeral: read them back with
    /// [`RunningSim::addr`].
    pub async fn start(config: SimConfig) -> Result<RunningSim, SimError> {
        config.validate()?;
        let mut services = Vec::new();
        let mut listeners = Vec::new();
        for (si, (name, svc)) in config.services.iter().enumerate() {
            let mut endpoints = Vec::new();
            for ep in &svc.endpoints {
                endpoints.push(CompiledEndpoint::compile(ep).map_err(|m| {
                    SimError::Config(format!(
                        "services.{name}: endpoint {} {}: {m}",
                        ep.method, ep.path
                    ))
                })?);
            }
            let replicas_cfg = if svc.replicas.is_empty() {
                vec![crate::config::ReplicaConfig {
                    port: svc.port,
                    ..Default::default()
                }]
            } else {
                svc.replicas.clone()
            };
            let mut replicas = Vec::new();
            for (ri, rc) in replicas_cfg.iter().enumerate() {
                let want = SocketAddr::new(config.host, rc.port.unwrap_or(0));
                let listener = TcpListener::bind(want)
                    .await
                    .map_err(|source| SimError::Bind { addr: want, source })?;
                let addr = listener.local_addr().map_err(|source| SimError::Io {
                    what: "reading the bound address".into(),
                    source,
                })?;
                listeners.push((si, ri, listener));
                replicas.push(ReplicaState {
                    addr,
                    behaviour: Behaviour::of(rc),
                    // Endpoint seeds use small indices; the replica's own takes the last.
                    rng: Mutex::new(SmallRng::seed_from_u64(derive_seed(
                        config.seed,
                        name,
                        ri,
                        usize::MAX,
                    ))),
                    stragglers: AtomicU64::new(0),
                    endpoints: endpoints
                        .iter()
                        .enumerate()
                        .map(|(ei, ep)| EndpointState {
                            key: format!("{} {}", ep.method, ep.path),
                            rng: Mutex::new(SmallRng::seed_from_u64(derive_seed(
                                config.seed,
                                name,
                                ri,
                                ei,
                            ))),
                            seq: AtomicU64::new(0),
                            counters: EndpointCounters::default(),
                            ep: ep.clone(),
                        })
                        .collect(),
                    not_found: AtomicU64::new(0),
                });
            }
            services.push(ServiceState {
                name: name.clone(),
                replicas,
            });
        }
        let now = Instant::now();
        let shared = Arc::new(Shared {
            origin: now,
            epoch: Mutex::new(now),
            timer: config.timer.clone(),
            stall_until: Mutex::new(None),
            services,
            scheme: if config.tls.is_some() {
                "https"
            } else {
                "http"
            },
        });
        let acceptor = config.tls.as_ref().map(crate::tls::acceptor).transpose()?;
        let token = CancellationToken::new();
        let tracker = TaskTracker::new();
        for (si, ri, listener) in listeners {
            let handler = Handler {
                shared: shared.clone(),
                svc: si,
                rep: ri,
            };
            tracker.spawn(accept_loop(
                listener,
                acceptor.clone(),
                handler,
                token.clone(),
                tracker.clone(),
            ));
        }
        for s in &shared.services {
            for r in &s.replicas {
                tracing::info!(service = %s.name, addr = %r.addr, latency_scale = r.behaviour.latency_scale, "sim listening");
            }
        }
        Ok(RunningSim {
            shared,
            token,
            tracker,
        })
    }
}

impl Shared {
    fn stats(&self, with_calls: bool) -> SimStats {
        let mut services = std::collections::BTreeMap::new();
        for s in &self.services {
            let mut total = ServiceStats {
                calls: 0,
                endpoints: Default::default(),
                replicas: Vec::new(),
            };
            for r in &s.replicas {
                let mut rs = ReplicaStats {
                    addr: r.addr.to_string(),
                    latency_scale: r.behaviour.latency_scale,
                    stragglers: r.stragglers.load(Ordering::Relaxed),
                    calls: 0,
                    not_found: r.not_found.load(Ordering::Relaxed),
                    endpoints: Default::default(),
                };
                for e in &r.endpoints {
                    let snap = e.counters.snapshot(self.origin, with_calls);
                    rs.calls += snap.calls;
                    stats::merge(total.endpoints.entry(e.key.clone()).or_default(), &snap);
                    rs.endpoints.insert(e.key.clone(), snap);
                }
                total.calls += rs.calls;
                total.replicas.push(rs);
            }
            services.insert(s.name.clone(), total);
        }
        SimStats {
            uptime_ms: self.origin.elapsed().as_secs_f64() * 1000.0,
            services,
        }
    }

    fn reset(&self) {
        *stats::lock(&self.epoch) = Instant::now();
        for s in &self.services {
            for r in &s.replicas {
                r.not_found.store(0, Ordering::Relaxed);
                r.stragglers.store(0, Ordering::Relaxed);
                for e in &r.endpoints {
                    e.counters.reset();
                }
            }
        }
    }

    fn stall(&self, d: Duration) {
        let until = Instant::now() + d.min(MAX_STALL);
        let mut s = stats::lock(&self.stall_until);
        *s = Some(s.map_or(until, |cur| cur.max(until)));
    }

    async fn wait_out_stall(&self) {
        loop {
            let until = *stats::lock(&self.stall_until);
            match until {
                Some(u) if u > Instant::now() => tokio::time::sleep_until(u).await,
                _ => return,
            }
        }
    }
}

/// A stable per-(seed, service, replica, endpoint) seed, so adding a service does not change
/// another's sequence (splitmix64 over an FNV-1a hash of the name).
fn derive_seed(seed: u64, service: &str, replica: usize, endpoint: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in service.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut x = seed ^ h ^ ((replica as u64) << 32) ^ (endpoint as u64).rotate_left(48);
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// How long a client may take to finish a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    handler: Handler,
    token: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = token.cancelled() => return,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%err, "sim accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let token = token.clone();
        let acceptor = acceptor.clone();
        tracker.spawn(async move {
            match acceptor {
                None => serve_connection(stream, handler, token).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    let stream = tokio::select! {
                        () = token.cancelled() => return,
                        r = handshake => match r {
                            Ok(Ok(s)) => s,
                            Ok(Err(err)) => {
                                tracing::debug!(%err, "sim TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        },
                    };
                    serve_connection(stream, handler, token).await;
                }
            }
        });
    }
}

/// Serve one (plain or TLS) connection until it ends or the sim stops.
async fn serve_connection<IO>(io: IO, handler: Handler, token: CancellationToken)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let h = handler.clone();
        async move { h.handle(req).await }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::select! {
        () = token.cancelled() => {}
        r = conn => {
            if let Err(err) = r {
                tracing::debug!(%err, "sim connection ended with an error");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_differ_per_endpoint_and_replica() {
        let s = [
            derive_seed(1, "order", 0, 0),
            derive_seed(1, "order", 0, 1),
            derive_seed(1, "order", 1, 0),
            derive_seed(1, "orders", 0, 0),
            derive_seed(2, "order", 0, 0),
        ];
        for i in 0..s.len() {
            for j in i + 1..s.len() {
                assert_ne!(s[i], s[j]);
            }
        }
        assert_eq!(derive_seed(1, "order", 0, 0), s[0]);
    }
}
