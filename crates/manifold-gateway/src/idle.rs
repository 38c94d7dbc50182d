//! Plaintext connections that hold no HTTP/1 buffers while they wait for their next request.
//!
//! hyper keeps an HTTP/1 connection's read buffer (8 KiB once a request has been read), its
//! write buffer (8 KiB, allocated with the connection) and the last response's header map for
//! as long as the connection lives, busy or idle: with thousands of idle keep-alive clients
//! that is most of the gateway's memory (`manifold bench memory`, docs/benchmarks.md). nginx
//! frees its buffers when a connection goes idle; so does this module. Once an HTTP/1
//! connection is at a message boundary — at least one request served, none in flight, the last
//! response body sent and flushed, no request body left unread — and has stayed there for
//! [`PARK_AFTER`] (a busy connection keeps its buffers), hyper's connection is taken
//! apart ([`http1::Connection::into_parts`]) and dropped, the socket is handed to the listener's
//! parking lot ([`lot`]) and the connection's task ends: a parked connection is a socket in the
//! lot's epoll and a slab entry, no task, no tokio registration, no timer of its own. When the
//! socket becomes readable the connection gets a new task ([`woken`]) and a new hyper
//! connection; bytes hyper had read ahead (a pipelined request) are handed to the new one
//! first, without parking. hyper's read buffer is not kept across a park (an empty `Bytes`
//! split from it still owns its whole allocation, 16 KiB after one request), nor is the
//! connection's [`Activity`]: a woken connection starts a new one, as if just accepted.
//!
//! Timeouts stay as they were: a parked connection is closed when no byte of a new request
//! arrives within `header_read_timeout` of the end of the previous answer; once bytes arrive,
//! hyper's `header_read_timeout` bounds the rest of the head, and so does the woken
//! connection's clock ([`conn::run`] closes a connection with no head `header_read_timeout`
//! after its start), so a head is complete within twice `header_read_timeout` of the previous
//! answer. A drain closes the parked connections at once: they have nothing in flight.
//!
//! HTTP/2 is told by its preface, as hyper-util's auto builder tells it, and served by hyper's
//! HTTP/2 connection as before (its streams share one connection's buffers). TLS listeners keep
//! hyper-util's auto connection: a TLS stream cannot wait for readability without reading, and
//! its session's own buffers are the larger cost there.

use crate::conn::{self, Activity, Ends, Exec};
use crate::respond::ClientId;
use crate::upstream::Body;
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::{service_fn, Service};
use hyper_util::rt::TokioIo;
use slot::{service_h1, tracked_answer, watch_body};
use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use watch::{join, Prefixed, Tracked};

pub(crate) mod lot;
mod slot;
mod watch;

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long an HTTP/1 connection must stay idle between requests before it gives up hyper's
/// connection and buffers. Rebuilding them costs ~17 allocations and ~27 KB of allocation
/// traffic (`tests/alloc_proxy.rs`: 55.5 per request on a woken connection, 38 on a busy one)
/// and ~14,000 instructions (bench/woken-callgrind.sh), which a keep-alive
/// connection carrying steady traffic (a client pool sending every few milliseconds) should not
/// pay per request. It stays short because freed buffers are reused but, with glibc's
/// allocator, not returned: with a 1 s wait, 10,000 clients connecting within a second all held
/// their buffers at once, and the process kept that peak (`manifold bench memory`: 30.3 KB per
/// idle connection with 1 s, against 17 KB when buffers are given up at once).
const PARK_AFTER: Duration = Duration::from_millis(50);

/// What ended waiting on a hyper connection: it finished, or it was idle for [`PARK_AFTER`]
/// at a message boundary (since the instant given).
enum Step<E> {
    Ended(E),
    Park(Instant),
}

/// What one plaintext listener's connections share: hyper's builders, the handler, what ends a
/// connection and where idle ones wait. Shared, so that a task holds one pointer for all of it.
pub(crate) struct Plain<H> {
    pub(crate) h1: http1::Builder,
    pub(crate) h2: http2::Builder<Exec>,
    pub(crate) handler: H,
    pub(crate) ends: Ends,
    /// Where idle HTTP/1 connections wait. `None` only if the lot's epoll could not be made:
    /// then a connection that would park is closed instead.
    pub(crate) lot: Option<lot::Lot>,
}

impl<H, F> Plain<H>
where
    H: Fn(Request<Incoming>, SocketAddr, ClientId) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    /// What a plaintext listener's connections share, with its parking lot's task started
    /// (with `gone`; without, no lot: a TLS listener's). The lot closes its connections when the
    /// drain begins, or when `gone` is cancelled.
    pub(crate) fn start(
        h1: http1::Builder,
        h2: http2::Builder<Exec>,
        handler: H,
        ends: Ends,
        gone: Option<CancellationToken>,
    ) -> Arc<Self> {
        let made = gone.map(|gone| (lot::Lot::new(), gone));
        let (lot, poll) = match made {
            None => (None, None),
            Some((Ok((lot, poll)), gone)) => (Some(lot), Some((poll, gone))),
            Some((Err(e), _)) => {
                tracing::warn!(error = %e, "no parking lot: idle connections will be closed");
                (None, None)
            }
        };
        let plain = Arc::new(Plain {
            h1,
            h2,
            handler,
            ends,
            lot,
        });
        if let Some((poll, gone)) = poll {
            tokio::spawn(lot::tend(poll, Arc::clone(&plain), gone));
        }
        plain
    }
}

/// A connection that went idle at a message boundary: its socket and since when it is idle.
type Idle = (TcpStream, Instant);
/// What tells whether the connection's current hyper connection may be taken apart, and asks
/// it to shut down. Part of the connection's [`Activity`].
#[derive(Debug, Default)]
pub(crate) struct IdleState {
    /// Response bodies hyper has not finished with.
    bodies: AtomicUsize,
    /// Bytes were written since the last completed flush.
    unflushed: AtomicBool,
    /// This hyper connection must run to its end: a request had a body (hyper may still be
    /// reading or discarding it), or hyper began closing the socket.
    keep: AtomicBool,
    /// [`conn::run`] asked the connection to finish (drain, idle HTTP/2).
    shut: AtomicBool,
    shut_wake: Notify,
}

impl IdleState {
    /// Ask the active connection to finish: finish what is in flight, then close; one still
    /// reading its preface closes at once. (A parked connection is told by the drain itself.)
    pub(crate) fn request_shutdown(&self) {
        self.shut.store(true, Ordering::Relaxed);
        self.shut_wake.notify_one();
    }

    fn shutting(&self) -> bool {
        self.shut.load(Ordering::Relaxed)
    }

    fn at_boundary(&self) -> bool {
        self.bodies.load(Ordering::Relaxed) == 0
            && !self.unflushed.load(Ordering::Relaxed)
            && !self.keep.load(Ordering::Relaxed)
            && !self.shutting()
    }

    /// A new hyper connection starts with nothing written and nothing to keep.
    fn fresh(&self) {
        self.unflushed.store(false, Ordering::Relaxed);
        self.keep.store(false, Ordering::Relaxed);
    }
}

/// Serve one plaintext connection: HTTP/2 by its preface, else HTTP/1 until it ends or parks
/// (then the task ends; the lot gives the connection a new one, [`woken`]).
///
/// Everything the first part needs (hyper's connection, the connection's clock [`conn::run`],
/// the park timer) is boxed: the task itself stays small.
pub(crate) async fn connection<H, F>(
    io: TcpStream,
    peer: SocketAddr,
    activity: Arc<Activity>,
    plain: Arc<Plain<H>>,
    slot: crate::server::Slot,
) where
    H: Fn(Request<Incoming>, SocketAddr, ClientId) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let shut_down = |_: Pin<&mut _>| activity.idle.request_shutdown();
    let first = first(io, peer, &activity, &plain);
    let Some(Some((io, since))) =
        Box::pin(conn::run(first, shut_down, &activity, peer, &plain.ends)).await
    else {
        return;
    };
    park(io, since, peer, &activity, &plain, slot);
}

/// A parked HTTP/1 connection whose socket became readable (or closed): served by a new hyper
/// connection, on a new clock, until it ends or parks again. The lot spawns it.
pub(crate) async fn woken<H, F>(
    io: std::net::TcpStream,
    peer: SocketAddr,
    plain: Arc<Plain<H>>,
    slot: crate::server::Slot,
) where
    H: Fn(Request<Incoming>, SocketAddr, ClientId) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    // Still nonblocking: `into_std` left it so.
    let Ok(io) = TcpStream::from_std(io) else {
        return;
    };
    let activity = Arc::new(Activity::new());
    let shut_down = |_: Pin<&mut _>| activity.idle.request_shutdown();
    let served = serve_h1(io, Bytes::new(), peer, &activity, &plain);
    // Not boxed: this task is what an active woken connection costs, and it ends at the park.
    let Some(Some((io, since))) = conn::run(served, shut_down, &activity, peer, &plain.ends).await
    else {
        return;
    };
    park(io, since, peer, &activity, &plain, slot);
}

/// Hand an idle connection to the lot. It is closed when no byte of a new request arrives
/// within `header_read_timeout` of `since` (the end of its last answer), or when it has had no
/// request for `h2_idle_timeout` (as [`conn::run`] would close it), whichever comes first.
fn park<H>(
    io: TcpStream,
    since: Instant,
    peer: SocketAddr,
    activity: &Activity,
    plain: &Plain<H>,
    slot: crate::server::Slot,
) {
    if plain.ends.drain.is_cancelled() {
        return;
    }
    let limits = &plain.ends.limits;
    let due = (since + limits.header_read_timeout).min(activity.idle_until(limits));
    if let Some(lot) = &plain.lot {
        lot.park(io, peer, slot, due);
    }
}

/// The first part of a connection: the preface, then HTTP/2 to its end, or HTTP/1 until it ends
/// or parks.
async fn first<H, F>(
    mut io: TcpStream,
    peer: SocketAddr,
    activity: &Arc<Activity>,
    plain: &Plain<H>,
) -> Result<Option<Idle>, hyper::Error>
where
    H: Fn(Request<Incoming>, SocketAddr, ClientId) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let Some((pre, h2)) = preface(&mut io, &activity.idle).await else {
        return Ok(None);
    };
    if !h2 {
        return serve_h1(io, pre, peer, activity, plain).await;
    }
    let io = Prefixed::new(pre, io, Arc::clone(activity));
    let svc = service(plain, activity, peer);
    // Boxed: the first part of every HTTP/1 connection would otherwise have room for it.
    let mut conn = Box::pin(plain.h2.serve_connection(TokioIo::new(io), svc));
    let mut closing = false;
    loop {
        tokio::select! {
            ended = conn.as_mut() => return ended.map(|()| None),
            () = activity.idle.shut_wake.notified(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// The service of an HTTP/2 connection: [`conn::answer`], with the response body tracked (an
/// HTTP/1 connection's is [`service_h1`]).
fn service<H, F>(
    plain: &Plain<H>,
    activity: &Arc<Activity>,
    peer: SocketAddr,
) -> impl Service<
    Request<Incoming>,
    Response = Response<Tracked>,
    Error = Infallible,
    Future: Send + 'static,
> + Send
       + 'static
where
    H: Fn(Request<Incoming>, SocketAddr, ClientId) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let in_conn = Arc::clone(activity);
    let handler = plain.handler.clone();
    let passthrough = plain.ends.limits.passthrough;
    service_fn(move |req: Request<Incoming>| {
        let activity = watch_body(&in_conn, &req);
        tracked_answer(activity, req, peer, handler.clone(), passthrough)
    })
}

/// Serve HTTP/1 on `io` (`pre` read from it already) until the connection ends (`None`), or
/// has stayed idle at a message boundary for [`PARK_AFTER`]: then hyper's connection and its
/// buffers are dropped and the bare socket is handed back with when it went idle.
async fn serve_h1<H, F>(
    mut io: TcpStream,
    mut pre: Bytes,
    peer: SocketAddr,
    activity: &Arc<Activity>,
    plain: &Plain<H>,
) -> Result<Option<Idle>, hyper::Error>
where
    H: Fn(Request<Incoming>, SocketAddr, ClientId) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let mut svc = service_h1(plain, activity, peer);
    // One timer while active, re-armed at each message boundary.
    let mut grace = pin!(tokio::time::sleep(PARK_AFTER));
    loop {
        activity.idle.fresh();
        let served_before = activity.requests();
        // The boundary the grace timer was armed for (requests served then) and when.
        let mut armed: Option<(u64, Instant)> = None;
        let io_now = Prefixed::new(pre, io, Arc::clone(activity));
        let mut conn = plain.h1.serve_connection(TokioIo::new(io_now), svc);
        let mut closing = false;
        let ended = {
            let mut shut = pin!(activity.idle.shut_wake.notified());
            poll_fn(|cx| {
                if !closing && (activity.idle.shutting() || shut.as_mut().poll(cx).is_ready()) {
                    Pin::new(&mut conn).graceful_shutdown();
                    closing = true;
                }
                if let Poll::Ready(ended) = Pin::new(&mut conn).poll(cx) {
                    return Poll::Ready(Step::Ended(ended));
                }
                // Checked right after hyper returned Pending: every request, body and flush of
                // this connection moves only inside that poll.
                let served = activity.requests();
                let parkable = !closing
                    && served > served_before
                    && activity.in_flight() == 0
                    && activity.idle.at_boundary();
                if !parkable {
                    return Poll::Pending;
                }
                // Park only a connection that stays idle for PARK_AFTER: a busy keep-alive
                // connection keeps its hyper connection and buffers between requests.
                let since = match armed {
                    Some((n, since)) if n == served => since,
                    _ => {
                        let now = Instant::now();
                        grace.as_mut().reset(now + PARK_AFTER);
                        armed = Some((served, now));
                        now
                    }
                };
                grace.as_mut().poll(cx).map(|()| Step::Park(since))
            })
            .await
        };
        let idle_since = match ended {
            Step::Ended(ended) => return ended.map(|()| None),
            Step::Park(since) => since,
        };
        let parts = conn.into_parts();
        svc = parts.service;
        let (socket, unread) = parts.io.into_inner().into_parts();
        io = socket;
        // Empty, hyper's read buffer still holds its whole allocation (8 KiB or more): only
        // bytes already read (a pipelined request) are kept.
        pre = join(parts.read_buf, unread);
        if pre.is_empty() {
            return Ok(Some((io, idle_since)));
        }
        // A pipelined request is already here: serve it at once.
    }
}

/// Read until the bytes are, or cannot be, the HTTP/2 preface: `(bytes read, is HTTP/2)`.
/// `None` when the client closed or the connection was asked to finish first.
async fn preface(io: &mut TcpStream, idle: &IdleState) -> Option<(Bytes, bool)> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut n = 0;
    loop {
        if idle.shutting() {
            return None;
        }
        let read = tokio::select! {
            read = io.read(&mut buf[n..]) => read,
            () = idle.shut_wake.notified() => return None,
        };
        match read {
            Ok(0) | Err(_) => return None,
            Ok(k) => n += k,
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Some((Bytes::copy_from_slice(&buf[..n]), false));
        }
        if n == H2_PREFACE.len() {
            return Some((Bytes::copy_from_slice(&buf), true));
        }
    }
}

#[cfg(test)]
mod tests;
