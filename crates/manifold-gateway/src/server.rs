//! Listeners: accept connections, serve HTTP/1.1 and HTTP/2 (h2c, or over TLS with ALPN) on
//! one port, and shut down gracefully — stop accepting, let in-flight requests finish up to the
//! drain timeout, then abort what is left.
//!
//! On the TLS listener the handshake runs in the connection's task, inside the connection's
//! slot and on its clock: the handshake and the first request head together must be done
//! within `header_read_timeout` of the accept, so a socket that opens TLS and stalls is closed
//! like one that sends nothing; a drain closes connections still handshaking.
//!
//! At most `max_connections` connections are served at once: beyond it the listener stops
//! accepting and new connections wait in the kernel's listen backlog, so a flood costs the
//! gateway neither file descriptors nor memory past the limit. Because a slot is that scarce,
//! no connection may keep one without using it: what bounds each connection's life is in
//! [`conn`](crate::conn).

use crate::conn::{self, Activity, Ends, Exec};
use crate::idle::{self, Plain};
use crate::respond::ClientId;
use crate::tls::{OverTls, TlsFiles};
use crate::upstream::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use manifold_telemetry::metrics::{Gauge, ListenerMetrics};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// How often an HTTP/2 connection is PINGed, and how long the answer may take before the
/// connection is closed: a peer that vanished without a FIN is found within a minute, whether or
/// not a request is in flight.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// What bounds one listener's connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// How long a client may take to send a request head, counted from the accept for the
    /// first one (whatever it sent: nothing, part of a line, part of the HTTP/2 preface), and
    /// from the end of the previous answer on an idle HTTP/1 keep-alive connection.
    pub(crate) header_read_timeout: Duration,
    /// An HTTP/2 connection with no request in flight this long is closed.
    pub(crate) h2_idle_timeout: Duration,
    /// A connection whose writes to the client have been blocked this long is dropped.
    pub(crate) send_timeout: Duration,
    /// Most connections served at once.
    pub(crate) max_connections: usize,
    /// How long in-flight requests get after `stop`; then their connections are aborted.
    pub(crate) drain: Duration,
    /// Whether a 5xx without a recorded cause may be an upstream's answer passed on (the client
    /// listener's proxy routes); on the admin listener every 5xx is the gateway's own.
    pub(crate) passthrough: bool,
}

/// A connection's place under `max_connections`: its permit, and the listener's open-connections
/// gauge held up for as long as the connection lives (parked or not). Dropping it frees both.
#[derive(Debug)]
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Option<Arc<Gauge>>,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, open: Option<&Arc<Gauge>>) -> Slot {
        if let Some(g) = open {
            g.inc();
        }
        Slot {
            _permit: permit,
            open: open.cloned(),
        }
    }
}

/// A slot no metrics watch (the connection tests').
#[cfg(test)]
impl From<OwnedSemaphorePermit> for Slot {
    fn from(permit: OwnedSemaphorePermit) -> Slot {
        Slot::new(permit, None)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(g) = &self.open {
            g.dec();
        }
    }
}

/// Serve `listener` with `handler` until `stop` is cancelled, then drain for up to
/// `limits.drain` and abort the connections still open. The handler is given each request and
/// its client's address (the proxy passes that on in `X-Forwarded-For`; it is not put in the
/// request's extensions, which would allocate for every request).
///
/// With `tls`, every connection is handshaken first and its requests carry [`OverTls`]. With
/// `metrics`, each accept is counted and each open connection shown.
pub(crate) async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<Arc<TlsFiles>>,
    handler: H,
    limits: Limits,
    stop: CancellationToken,
    metrics: Option<ListenerMetrics>,
) where
    H: Fn(Request<Incoming>, SocketAddr, ClientId) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    // `drain` asks every connection to finish; `kill` ends them (and the HTTP/2 stream tasks
    // the executor spawned) when the drain timeout passes.
    let drain = CancellationToken::new();
    let kill = CancellationToken::new();
    let mut builder = auto::Builder::new(Exec::new(kill.clone()));
    let acceptor = tls.as_ref().map(|t| t.acceptor());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(H2_PING_INTERVAL))
        .keep_alive_timeout(H2_PING_TIMEOUT);
    let builder = Arc::new(builder);
    // Plaintext connections: hyper's own builders with the same settings, so an idle HTTP/1
    // connection can drop hyper's buffers ([`idle`]).
    let mut h1 = hyper::server::conn::http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let mut h2 = hyper::server::conn::http2::Builder::new(Exec::new(kill.clone()));
    h2.timer(TokioTimer::new())
        .keep_alive_interval(Some(H2_PING_INTERVAL))
        .keep_alive_timeout(H2_PING_TIMEOUT);
    let ends = Ends {
        limits,
        drain: drain.clone(),
        kill: kill.clone(),
    };
    // The parking lot's task ends at the drain, or when this future is dropped without one.
    let gone = CancellationToken::new();
    let _gone = gone.clone().drop_guard();
    // A TLS listener has no use for a lot (its connections are hyper-util's).
    let gone = tls.is_none().then_some(gone);
    let plain = Plain::start(h1, h2, handler.clone(), ends.clone(), gone);
    // Every connection task holds a slot until it ends, so "all slots free" is "all connections
    // closed" (acquire_many counts in u32).
    let total = limits
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let slots = Arc::new(Semaphore::new(total));
    let mut at_limit = false;
    loop {
        // A connection slot first: at the limit, stop accepting until a connection closes.
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => {
                at_limit = false;
                slot
            }
            Err(_) => {
                if !at_limit {
                    at_limit = true;
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached; new connections wait in the listen backlog"
                    );
                }
                tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    _ = stop.cancelled() => break,
                }
            }
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let slot = Slot::new(slot, metrics.as_ref().map(|m| &m.open));
                if let Some(m) = &metrics {
                    m.accepted.inc();
                }
                // The connection's clock starts at the accept, before any handshake.
                let activity = Arc::new(Activity::new());
                let Some(acceptor) = acceptor.clone() else {
                    // Its own task type: a parked plaintext connection's task holds no room
                    // for the TLS path's state.
                    let plain = Arc::clone(&plain);
                    tokio::spawn(idle::connection(stream, peer, activity, plain, slot));
                    continue;
                };
                let handler = handler.clone();
                let builder = Arc::clone(&builder);
                let ends = ends.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    // Boxed: the handshake's and hyper-util's connection state are large.
                    let tls = over_tls(acceptor, stream, &builder, activity, peer, handler, ends);
                    Box::pin(tls).await;
                });
            }
            _ = stop.cancelled() => break,
        }
    }
    // New connections are refused from here on.
    drop(listener);
    drain.cancel();
    let all = u32::try_from(total).unwrap_or(u32::MAX);
    let limit = limits.drain;
    if tokio::time::timeout(limit, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            drain = ?limit,
            open = total - slots.available_permits(),
            "drain timeout passed with connections still open; aborting them"
        );
        kill.cancel();
        // The aborted tasks let go of their slots at their next poll; wait for that briefly so
        // the connections are closed when this returns.
        let _ = tokio::time::timeout(Duration::from_secs(1), slots.acquire_many(all)).await;
    }
}

/// Handshake a TLS connection within `header_read_timeout` of its accept, then serve it.
async fn over_tls<H, F>(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    builder: &auto::Builder<Exec>,
    activity: Arc<Activity>,
    peer: SocketAddr,
    handler: H,
    ends: Ends,
) where
    H: Fn(Request<Incoming>, SocketAddr, ClientId) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let limits = ends.limits;
    let due = activity.since() + limits.header_read_timeout;
    let stream = tokio::select! {
        done = tokio::time::timeout_at(due, acceptor.accept(stream)) => match done {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(
                    %peer,
                    timeout = ?limits.header_read_timeout,
                    "TLS handshake not finished within header_read_timeout; connection closed"
                );
                return;
            }
        },
        // Nothing in flight yet: a drain or the kill closes it at once.
        _ = ends.drain.cancelled() => return,
        _ = ends.kill.cancelled() => return,
    };
    tls_connection(builder, stream, activity, peer, handler, ends).await;
}

/// Serve one accepted and handshaken TLS connection until it ends ([`conn::run`]).
async fn tls_connection<IO, H, F>(
    builder: &auto::Builder<Exec>,
    io: IO,
    activity: Arc<Activity>,
    peer: SocketAddr,
    handler: H,
    ends: Ends,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, SocketAddr, ClientId) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let in_conn = Arc::clone(&activity);
    let passthrough = ends.limits.passthrough;
    let io = crate::send::SendWatched::new(io, Arc::clone(&activity));
    let conn = builder
        .serve_connection(
            TokioIo::new(io),
            service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(OverTls);
                conn::answer(
                    Arc::clone(&in_conn),
                    req,
                    peer,
                    handler.clone(),
                    passthrough,
                )
            }),
        )
        .into_owned();
    conn::run(conn, |c| c.graceful_shutdown(), &activity, peer, &ends).await;
}
