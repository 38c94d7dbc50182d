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
//! apart ([`http1::Connection::into_parts`]) and dropped, and the task waits for the socket to
//! become readable holding nothing but the socket. Then a new hyper connection is made on it;
//! bytes hyper had read ahead (a pipelined request) are handed to the new one first.
//!
//! What a parked connection holds is its task's future ([`connection`]), so everything an active
//! connection needs — hyper's connection, the connection's clock ([`conn::run`]), the park timer
//! — lives in one box that is dropped when it parks, and hyper's read buffer is not kept either
//! (an empty `Bytes` split from it still owns its whole allocation, 16 KiB after one request).
//!
//! Timeouts stay as they were: a parked connection is closed when no byte of a new request
//! arrives within `header_read_timeout` of the end of the previous answer; once bytes arrive,
//! hyper's `header_read_timeout` bounds the rest of the head (so a head is complete within
//! twice `header_read_timeout` of the previous answer). A drain closes a parked connection at
//! once: it has nothing in flight.
//!
//! HTTP/2 is told by its preface, as hyper-util's auto builder tells it, and served by hyper's
//! HTTP/2 connection as before (its streams share one connection's buffers). TLS listeners keep
//! hyper-util's auto connection: a TLS stream cannot wait for readability without reading, and
//! its session's own buffers are the larger cost there.

use crate::conn::{self, Activity, Ends, Exec};
use crate::upstream::Body;
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::{service_fn, Service};
use hyper_util::rt::TokioIo;
use slot::service_h1;
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
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;
use watch::{join, Prefixed, Tracked};

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

/// What one plaintext listener's connections share: hyper's builders, the handler and what
/// ends a connection. Shared, so that a parked connection's task holds one pointer for all of it.
pub(crate) struct Plain<H> {
    pub(crate) h1: http1::Builder,
    pub(crate) h2: http2::Builder<Exec>,
    pub(crate) handler: H,
    pub(crate) ends: Ends,
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
    /// The connection is waiting for its next request without a hyper connection.
    parked: AtomicBool,
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

    /// Whether the connection is waiting for its next request holding only the socket.
    #[cfg(test)]
    fn parked(&self) -> bool {
        self.parked.load(Ordering::Relaxed)
    }

    /// A new hyper connection starts with nothing written and nothing to keep.
    fn fresh(&self) {
        self.unflushed.store(false, Ordering::Relaxed);
        self.keep.store(false, Ordering::Relaxed);
    }
}

/// Serve one plaintext connection: HTTP/2 by its preface, else HTTP/1 with idle parking.
///
/// The task's own future is what a parked connection costs, so it is kept to the socket, a
/// few pointers and the parked wait ([`parked`]): everything an active connection needs (hyper's
/// connection, the connection's clock [`conn::run`], the park timer) is boxed while it is active
/// and dropped when it parks.
pub(crate) async fn connection<H, F>(
    mut io: TcpStream,
    peer: SocketAddr,
    activity: Arc<Activity>,
    plain: Arc<Plain<H>>,
    _slot: OwnedSemaphorePermit,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let shut_down = |_: Pin<&mut _>| activity.idle.request_shutdown();
    let first = first(io, peer, &activity, &plain);
    let Some(Some((again, mut since))) =
        Box::pin(conn::run(first, shut_down, &activity, peer, &plain.ends)).await
    else {
        return;
    };
    // The socket goes back where it came from: the parked task holds it once.
    io = again;
    loop {
        if !parked(&io, since, &activity, &plain.ends, &peer).await {
            return;
        }
        let shut_down = |_: Pin<&mut _>| activity.idle.request_shutdown();
        let served = serve_h1(io, Bytes::new(), peer, &activity, &plain);
        let Some(Some((again, idle_since))) =
            Box::pin(conn::run(served, shut_down, &activity, peer, &plain.ends)).await
        else {
            return;
        };
        io = again;
        since = idle_since;
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
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
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
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let in_conn = Arc::clone(activity);
    let handler = plain.handler.clone();
    let passthrough = plain.ends.limits.passthrough;
    service_fn(move |req: Request<Incoming>| {
        let activity = Arc::clone(&in_conn);
        if !http_body::Body::is_end_stream(req.body()) {
            activity.idle.keep.store(true, Ordering::Relaxed);
        }
        let answer = conn::answer(
            Arc::clone(&activity),
            req,
            peer,
            handler.clone(),
            passthrough,
        );
        async move {
            let Ok(resp) = answer.await;
            Ok::<_, Infallible>(resp.map(|body| Tracked::new(body, activity)))
        }
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
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
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
        let rest = parts.io.into_inner();
        io = rest.io;
        // Empty, hyper's read buffer still holds its whole allocation (8 KiB or more): only
        // bytes already read (a pipelined request) are kept.
        pre = join(parts.read_buf, rest.pre);
        if pre.is_empty() {
            return Ok(Some((io, idle_since)));
        }
        // A pipelined request is already here: serve it at once.
    }
}

/// Wait, holding only the socket, until the next request's first bytes arrive (`true`), or the
/// connection must close: no byte within `header_read_timeout` of `since`, no request for
/// `h2_idle_timeout` (as [`conn::run`] would close it), or the drain began.
async fn parked(
    io: &TcpStream,
    since: Instant,
    activity: &Activity,
    ends: &Ends,
    peer: &SocketAddr,
) -> bool {
    // The idle time before parking counts: a parked connection closes `header_read_timeout`
    // after its last answer, as before.
    let limits = &ends.limits;
    let due = (since + limits.header_read_timeout).min(activity.idle_until(limits));
    activity.idle.parked.store(true, Ordering::Relaxed);
    let woken = tokio::select! {
        ready = poll_fn(|cx| io.poll_read_ready(cx)) => ready.is_ok(),
        () = tokio::time::sleep_until(due) => {
            tracing::debug!(
                %peer,
                timeout = ?limits.header_read_timeout,
                "no new request within header_read_timeout; keep-alive connection closed"
            );
            false
        }
        () = ends.drain.cancelled() => false,
    };
    activity.idle.parked.store(false, Ordering::Relaxed);
    woken && !ends.drain.is_cancelled()
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
mod tests {
    use super::*;
    use crate::server::Limits;
    use http_body_util::{BodyExt, Full};
    use std::future::Ready;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio::sync::Semaphore;
    use tokio_util::sync::CancellationToken;

    /// Upper bound on every wait here.
    const BOUND: Duration = Duration::from_secs(10);

    type Handler = fn(Request<Incoming>, SocketAddr) -> Ready<Result<Response<Body>, Infallible>>;

    fn ok(_req: Request<Incoming>, _peer: SocketAddr) -> Ready<Result<Response<Body>, Infallible>> {
        let body = Full::new(Bytes::from_static(b"ok"))
            .map_err(|never| match never {})
            .boxed();
        std::future::ready(Ok(Response::new(body)))
    }

    /// A listener's shared state for these tests: `header_read_timeout` [`BOUND`].
    fn plain() -> Arc<Plain<Handler>> {
        let mut h1 = http1::Builder::new();
        h1.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(BOUND);
        let kill = CancellationToken::new();
        Arc::new(Plain {
            h1,
            h2: http2::Builder::new(Exec::new(kill.clone())),
            handler: ok as Handler,
            ends: Ends {
                limits: Limits {
                    header_read_timeout: BOUND,
                    h2_idle_timeout: BOUND,
                    max_connections: 1,
                    drain: BOUND,
                    passthrough: true,
                },
                drain: CancellationToken::new(),
                kill,
            },
        })
    }

    /// One connection served by [`connection`] (no listener around it): the client's socket,
    /// the connection's activity once accepted, and what it shares with its listener.
    async fn one_connection() -> (TcpStream, Arc<Activity>, Arc<Plain<Handler>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let shared = plain();
        let in_task = Arc::clone(&shared);
        tokio::spawn(async move {
            let (stream, peer) = listener.accept().await.unwrap();
            let activity = Arc::new(Activity::new());
            let _ = tx.send(Arc::clone(&activity));
            let slot = Arc::new(Semaphore::new(1)).acquire_owned().await.unwrap();
            connection(stream, peer, activity, in_task, slot).await;
        });
        let client = TcpStream::connect(addr).await.unwrap();
        (client, rx.await.unwrap(), shared)
    }

    /// Read `n` whole answers (each ends with the body `ok`).
    async fn answers(c: &mut TcpStream, n: usize) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while String::from_utf8_lossy(&got).matches("\r\n\r\nok").count() < n {
            let k = tokio::time::timeout(BOUND, c.read(&mut buf))
                .await
                .expect("an answer within the bound")
                .unwrap();
            assert!(k > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..k]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    async fn until_parked(a: &Activity) {
        for _ in 0..1000 {
            if a.idle.parked() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the connection never parked");
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    #[tokio::test]
    async fn an_idle_keep_alive_connection_drops_hyper_and_serves_again() {
        let (mut c, activity, _) = one_connection().await;
        assert!(!activity.idle.parked());
        c.write_all(GET).await.unwrap();
        assert!(answers(&mut c, 1).await.starts_with("HTTP/1.1 200"));
        until_parked(&activity).await;
        // Parked, and still a keep-alive connection: the next request is answered.
        c.write_all(GET).await.unwrap();
        assert!(answers(&mut c, 1).await.starts_with("HTTP/1.1 200"));
        until_parked(&activity).await;
        assert_eq!(activity.requests(), 2);
    }

    #[tokio::test]
    async fn pipelined_requests_and_request_bodies_are_all_answered() {
        let (mut c, activity, _) = one_connection().await;
        // Three requests in one write: hyper reads ahead, the read-ahead survives a rebuild.
        c.write_all(&[GET, GET, GET].concat()).await.unwrap();
        let got = answers(&mut c, 3).await;
        assert_eq!(got.matches("HTTP/1.1 200").count(), 3, "{got}");
        until_parked(&activity).await;
        // A body the handler never reads: that hyper connection runs on (it must drain or
        // close), and the next request on the socket is still answered.
        c.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
            .await
            .unwrap();
        assert!(answers(&mut c, 1).await.starts_with("HTTP/1.1 200"));
        c.write_all(GET).await.unwrap();
        assert!(answers(&mut c, 1).await.starts_with("HTTP/1.1 200"));
        assert_eq!(activity.requests(), 5);
    }

    #[tokio::test]
    async fn a_parked_connection_closes_at_once_when_the_drain_begins() {
        let (mut c, activity, shared) = one_connection().await;
        c.write_all(GET).await.unwrap();
        answers(&mut c, 1).await;
        until_parked(&activity).await;
        shared.ends.drain.cancel();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(BOUND, c.read(&mut buf))
            .await
            .expect("closed within the bound");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }

    #[tokio::test]
    async fn a_parked_connection_s_task_has_no_room_for_hyper_s_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let shared = plain();
        let activity = Arc::new(Activity::new());
        let slot = Arc::new(Semaphore::new(1)).acquire_owned().await.unwrap();
        // What every connection's task holds, parked or not (a tokio task stores its future
        // inline).
        let task = std::mem::size_of_val(&connection(
            stream,
            peer,
            Arc::clone(&activity),
            Arc::clone(&shared),
            slot,
        ));
        // What an active HTTP/1 connection holds, boxed while it is active.
        let other = TcpStream::connect(addr).await.unwrap();
        let io = Prefixed::new(Bytes::new(), other, Arc::clone(&activity));
        let svc = service_h1(&shared, &activity, peer);
        let hyper_conn = std::mem::size_of_val(&shared.h1.serve_connection(TokioIo::new(io), svc));
        let active = std::mem::size_of_val(&serve_h1(
            TcpStream::connect(addr).await.unwrap(),
            Bytes::new(),
            peer,
            &activity,
            &shared,
        ));
        println!("bytes: connection task future {task}, hyper HTTP/1 connection {hyper_conn}, active HTTP/1 part {active}");
        assert!(task < hyper_conn, "{task} >= {hyper_conn}");
        assert!(task < active, "{task} >= {active}");
    }
}
