//! The listeners and the request handler.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{CompiledEndpoint, FaultKind, SimConfig};
use crate::replica::Behaviour;
use crate::stats::{self, EndpointCounters, ReplicaStats, ServiceStats, SimStats};
use crate::template::Ctx;
use crate::SimError;

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

impl RunningSim {
    /// The address of a service's first replica.
    pub fn addr(&self, service: &str) -> Option<SocketAddr> {
        self.addrs(service).first().copied()
    }

    /// The addresses of all of a service's replicas, in config order (empty if unknown).
    pub fn addrs(&self, service: &str) -> Vec<SocketAddr> {
        self.service(service)
            .map(|s| s.replicas.iter().map(|r| r.addr).collect())
            .unwrap_or_default()
    }

    /// `http://ADDR` of a service's first replica.
    pub fn url(&self, service: &str) -> Option<String> {
        let scheme = self.shared.scheme;
        self.addr(service).map(|a| format!("{scheme}://{a}"))
    }

    /// `http://ADDR` (`https://` with `tls`) of each of a service's replicas.
    pub fn urls(&self, service: &str) -> Vec<String> {
        self.addrs(service)
            .into_iter()
            .map(|a| format!("{}://{a}", self.shared.scheme))
            .collect()
    }

    /// Milliseconds since the sim started: the time base of [`crate::CallRecord`]'s `start_ms`
    /// and `end_ms`. Read it before sending a request to place that request's upstream calls on
    /// a waterfall.
    pub fn now_ms(&self) -> f64 {
        self.shared.origin.elapsed().as_secs_f64() * 1000.0
    }

    /// Service names, sorted.
    pub fn services(&self) -> Vec<&str> {
        self.shared
            .services
            .iter()
            .map(|s| s.name.as_str())
            .collect()
    }

    /// A snapshot of every counter (what `GET /__stats` returns).
    pub fn stats(&self) -> SimStats {
        self.shared.stats(false)
    }

    /// Like [`RunningSim::stats`], with each endpoint's recent call records (start and end times),
    /// e.g. to check which calls overlapped.
    pub fn stats_with_calls(&self) -> SimStats {
        self.shared.stats(true)
    }

    /// Zero every counter and forget recorded calls (what `POST /__reset` does).
    pub fn reset_stats(&self) {
        self.shared.reset();
    }

    /// Freeze every service for `d` (capped at 10 minutes): requests finishing their latency
    /// during the stall wait for its end before answering. Shows coordinated omission in a load
    /// generator. What `POST /__stall?for=1s` does.
    pub fn stall(&self, d: Duration) {
        self.shared.stall(d);
    }

    /// Stop accepting, drop every connection (hanging requests included), and wait for the tasks.
    pub async fn shutdown(self) {
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    fn service(&self, name: &str) -> Option<&ServiceState> {
        self.shared.services.iter().find(|s| s.name == name)
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

impl std::fmt::Debug for RunningSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("RunningSim");
        for s in &self.shared.services {
            d.field(
                &s.name,
                &s.replicas.iter().map(|r| r.addr).collect::<Vec<_>>(),
            );
        }
        d.finish()
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

#[derive(Clone)]
struct Handler {
    shared: Arc<Shared>,
    svc: usize,
    rep: usize,
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// Percent-decode a path segment or query component.
pub(crate) fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(&k.replace('+', " ")), decode(&v.replace('+', " ")))
        })
        .collect()
}

/// A v4 UUID from 16 random bytes.
fn uuid_from(rng: &mut SmallRng) -> String {
    let mut b = [0u8; 16];
    rng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl Handler {
    fn replica(&self) -> &ReplicaState {
        &self.shared.services[self.svc].replicas[self.rep]
    }

    async fn handle(self, req: Request<Incoming>) -> Result<Response<Body>, InjectedReset> {
        let path = req.uri().path().to_owned();
        if let Some(r) = self.admin(&req, &path) {
            return Ok(r);
        }
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let replica = self.replica();
        let mut path_matched = false;
        let mut found = None;
        for (i, e) in replica.endpoints.iter().enumerate() {
            if let Some(params) = e.ep.matches(&parts) {
                path_matched = true;
                if e.ep.method == req.method() {
                    found = Some((i, params));
                    break;
                }
            }
        }
        let Some((ei, params)) = found else {
            replica.not_found.fetch_add(1, Ordering::Relaxed);
            let (status, msg) = if path_matched {
                (StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            } else {
                (StatusCode::NOT_FOUND, "no such endpoint")
            };
            return Ok(json_response(
                status,
                &json!({"error": msg, "method": req.method().as_str(), "path": path}),
            ));
        };
        let method = req.method().clone();
        let query = parse_query(req.uri().query());
        let shared = self.shared.clone();
        let replica = &shared.services[self.svc].replicas[self.rep];
        let es = &replica.endpoints[ei];
        let seq = es.seq.fetch_add(1, Ordering::Relaxed) + 1;
        // Read straight from the request's headers: `begin` keeps only a hash of the key and a
        // capped copy of the id, so nothing is copied twice on every call.
        let headers = req.headers();
        let guard = es.counters.begin(
            seq,
            headers.get("idempotency-key").map(|v| v.as_bytes()),
            headers.get("x-request-id").and_then(|v| v.to_str().ok()),
        );

        let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(err) => {
                let too_big = err.is::<http_body_util::LengthLimitError>();
                let (status, msg) = if too_big {
                    (StatusCode::PAYLOAD_TOO_LARGE, "request body above 1 MiB")
                } else {
                    (StatusCode::BAD_REQUEST, "could not read the request body")
                };
                guard.finish("ok", Some(status.as_u16()));
                return Ok(json_response(status, &json!({"error": msg})));
            }
        };
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or(Value::Null)
        };

        let (mut fault, latency) = {
            let mut rng = stats::lock(&es.rng);
            let u: f64 = rng.random();
            let lat = es.ep.latency.sample(&mut *rng);
            (es.ep.fault_for(u).cloned(), lat)
        };
        let since = if replica.behaviour.turns_slow() {
            stats::lock(&shared.epoch).elapsed()
        } else {
            Duration::ZERO
        };
        let dealt = replica
            .behaviour
            .draw(&mut *stats::lock(&replica.rng), since);
        let latency = crate::replica::scaled(latency, dealt.scale);
        if dealt.straggler {
            replica.stragglers.fetch_add(1, Ordering::Relaxed);
        }
        // An endpoint's own fault comes first; the replica's error otherwise.
        if let (None, Some(status)) = (&fault, dealt.error) {
            fault = Some(FaultKind::Status { status });
        }
        if let Some(f) = &fault {
            es.counters.count_fault(f.name());
        }
        if fault == Some(FaultKind::Hang) {
            // Held until the client leaves or the sim stops (both drop this future; the guard
            // then records the call as cancelled).
            let never = std::future::pending::<Infallible>().await;
            match never {}
        }
        shared.timer.sleep(latency).await;
        shared.wait_out_stall().await;

        match fault {
            // (A hang never gets here: it is parked above.)
            Some(FaultKind::Reset | FaultKind::Hang) => {
                guard.finish("reset", None);
                Err(InjectedReset)
            }
            Some(FaultKind::Status { status }) => {
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                guard.finish("status", Some(status.as_u16()));
                Ok(json_response(
                    status,
                    &json!({"error": "injected fault", "status": status.as_u16()}),
                ))
            }
            other => {
                let rendered = {
                    let mut rng = stats::lock(&es.rng);
                    let mut uuid = || uuid_from(&mut rng);
                    let name = &shared.services[self.svc].name;
                    let mut ctx = Ctx {
                        path_params: &params,
                        query: &query,
                        body: &body,
                        seq,
                        service: name,
                        replica: self.rep,
                        method: method.as_str(),
                        path: &path,
                        uuid: &mut uuid,
                    };
                    es.ep.body.render(&mut ctx).to_string()
                };
                let bytes = Bytes::from(rendered);
                let body = match other {
                    Some(FaultKind::SlowBody { over }) => slow_body(bytes, over),
                    _ => Full::new(bytes).boxed_unsync(),
                };
                let mut resp = Response::new(body);
                *resp.status_mut() = es.ep.status;
                let h = resp.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                for (k, v) in &es.ep.headers {
                    h.insert(k.clone(), v.clone());
                }
                let outcome = if other.is_some() { "slow_body" } else { "ok" };
                guard.finish(outcome, Some(es.ep.status.as_u16()));
                Ok(resp)
            }
        }
    }

    /// The sim's own endpoints: `GET /__stats`, `POST /__reset`, `POST /__stall?for=1s`.
    fn admin(&self, req: &Request<Incoming>, path: &str) -> Option<Response<Body>> {
        let query = parse_query(req.uri().query());
        let q = |name: &str| {
            query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        match (req.method(), path) {
            (&Method::GET, "/__stats") => {
                let with_calls = matches!(q("calls"), Some("1" | "true" | "yes"));
                let stats = self.shared.stats(with_calls);
                let v = serde_json::to_value(&stats).unwrap_or(Value::Null);
                Some(json_response(StatusCode::OK, &v))
            }
            (&Method::POST, "/__reset") => {
                self.shared.reset();
                Some(json_response(StatusCode::OK, &json!({"reset": true})))
            }
            (&Method::POST, "/__stall") => {
                let d = q("for").map(crate::latency::parse_duration);
                Some(match d {
                    Some(Ok(d)) if d <= MAX_STALL => {
                        self.shared.stall(d);
                        json_response(
                            StatusCode::OK,
                            &json!({"stalled_ms": d.as_secs_f64() * 1000.0}),
                        )
                    }
                    Some(Ok(_)) => json_response(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": "input error: `for` is above the 10 minute limit"}),
                    ),
                    Some(Err(m)) => json_response(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": format!("input error: {m}")}),
                    ),
                    None => json_response(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": "input error: give the stall length, e.g. /__stall?for=1s"}),
                    ),
                })
            }
            _ => None,
        }
    }
}

/// A body sent in up to ten pieces spread evenly over `over`.
fn slow_body(bytes: Bytes, over: Duration) -> Body {
    const PIECES: usize = 10;
    let n = bytes.len().clamp(1, PIECES);
    let step = over / n as u32;
    let chunk = bytes.len().div_ceil(n).max(1);
    let stream = futures::stream::unfold((bytes, 0usize), move |(rest, i)| async move {
        if i >= n {
            return None;
        }
        tokio::time::sleep(step).await;
        let mut rest = rest;
        let piece = if i + 1 == n {
            std::mem::take(&mut rest)
        } else {
            rest.split_to(chunk.min(rest.len()))
        };
        Some((Ok::<_, Infallible>(Frame::data(piece)), (rest, i + 1)))
    });
    StreamBody::new(stream).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_v4_and_seeded() {
        let mut a = SmallRng::seed_from_u64(5);
        let mut b = SmallRng::seed_from_u64(5);
        let u = uuid_from(&mut a);
        assert_eq!(u, uuid_from(&mut b));
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(u, uuid_from(&mut a));
    }

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

    #[test]
    fn query_parsing() {
        assert_eq!(
            parse_query(Some("a=1&b=x%20y&c&d=e+f")),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "".into()),
                ("d".into(), "e f".into())
            ]
        );
    }
}
