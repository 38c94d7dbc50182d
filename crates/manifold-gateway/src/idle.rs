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

use crate::conn::{self, Activity, Exec};
use crate::error::BoxError;
use crate::upstream::Body;
use bytes::{Buf, Bytes, BytesMut};
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long an HTTP/1 connection must stay idle between requests before it gives up hyper's
/// connection and buffers. Rebuilding them costs ~15 allocations and ~32 KB of allocation
/// traffic (`tests/alloc_proxy.rs`: 66 instead of 51 per request), which a keep-alive
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

/// hyper's builders for one plaintext listener.
pub(crate) struct Builders {
    pub(crate) h1: http1::Builder,
    pub(crate) h2: http2::Builder<Exec>,
    /// How long a parked connection waits for the first byte of its next request.
    pub(crate) header_read_timeout: Duration,
}

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
    /// Ask the connection to finish: finish what is in flight, then close; a parked or
    /// unidentified connection closes at once.
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

/// A connection's serving future, as [`conn::run`] drives it.
pub(crate) struct Served<F> {
    fut: Pin<Box<F>>,
    activity: Arc<Activity>,
}

impl<F> Served<F> {
    pub(crate) fn new(fut: F, activity: Arc<Activity>) -> Self {
        Served {
            fut: Box::pin(fut),
            activity,
        }
    }
}

impl<F: Future> Future for Served<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.get_mut().fut.as_mut().poll(cx)
    }
}

impl<F> conn::GracefulConnection for Served<F> {
    fn shut_down(self: Pin<&mut Self>) {
        self.activity.idle.request_shutdown();
    }
}

/// Serve one plaintext connection: HTTP/2 by its preface, else HTTP/1 with idle parking.
pub(crate) async fn serve<H, F>(
    mut io: TcpStream,
    builders: Arc<Builders>,
    activity: Arc<Activity>,
    peer: SocketAddr,
    handler: H,
    passthrough: bool,
) -> Result<(), hyper::Error>
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let Some((mut pre, h2)) = preface(&mut io, &activity.idle).await else {
        return Ok(());
    };
    let in_conn = Arc::clone(&activity);
    let mut svc = service_fn(move |req: Request<Incoming>| {
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
    });
    if h2 {
        let io = Prefixed::new(pre, io, Arc::clone(&activity));
        // Boxed, as the HTTP/1 one: the task of every connection would otherwise have room
        // for an HTTP/2 connection.
        let mut conn = Box::pin(builders.h2.serve_connection(TokioIo::new(io), svc));
        let mut closing = false;
        loop {
            tokio::select! {
                ended = conn.as_mut() => return ended,
                () = activity.idle.shut_wake.notified(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
    // One timer for the connection's life, re-armed at each message boundary (no allocation).
    let mut grace = Box::pin(tokio::time::sleep(PARK_AFTER));
    loop {
        activity.idle.fresh();
        let served_before = activity.requests();
        // The boundary the grace timer was armed for (requests served then) and when.
        let mut armed: Option<(u64, Instant)> = None;
        let io_now = Prefixed::new(pre, io, Arc::clone(&activity));
        // Boxed: while the connection is parked, the task holds no room for it.
        let mut conn = Box::new(builders.h1.serve_connection(TokioIo::new(io_now), svc));
        let mut closing = false;
        let ended = {
            let mut shut = pin!(activity.idle.shut_wake.notified());
            poll_fn(|cx| {
                if !closing && (activity.idle.shutting() || shut.as_mut().poll(cx).is_ready()) {
                    Pin::new(&mut *conn).graceful_shutdown();
                    closing = true;
                }
                if let Poll::Ready(ended) = Pin::new(&mut *conn).poll(cx) {
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
            Step::Ended(ended) => return ended,
            Step::Park(since) => since,
        };
        let parts = (*conn).into_parts();
        svc = parts.service;
        let rest = parts.io.into_inner();
        io = rest.io;
        pre = join(parts.read_buf, rest.pre);
        if !pre.is_empty() {
            // A pipelined request is already here: serve it at once.
            continue;
        }
        // The idle time before parking counts: a parked connection closes `header_read_timeout`
        // after its last answer, as before.
        let due = idle_since + builders.header_read_timeout;
        activity.idle.parked.store(true, Ordering::Relaxed);
        let woken = tokio::select! {
            ready = io.readable() => ready.is_ok(),
            () = tokio::time::sleep_until(due) => {
                tracing::debug!(
                    %peer,
                    timeout = ?builders.header_read_timeout,
                    "no new request within header_read_timeout; keep-alive connection closed"
                );
                false
            }
            () = activity.idle.shut_wake.notified() => false,
        };
        activity.idle.parked.store(false, Ordering::Relaxed);
        if !woken || activity.idle.shutting() {
            return Ok(());
        }
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

/// `first` then `then`, without copying when either is empty.
fn join(first: Bytes, then: Bytes) -> Bytes {
    if then.is_empty() {
        return first;
    }
    if first.is_empty() {
        return then;
    }
    let mut all = BytesMut::with_capacity(first.len() + then.len());
    all.extend_from_slice(&first);
    all.extend_from_slice(&then);
    all.freeze()
}

/// The socket, with bytes already read from it served first, and its writes and flushes
/// reported to the connection's [`IdleState`].
struct Prefixed {
    pre: Bytes,
    io: TcpStream,
    activity: Arc<Activity>,
}

impl Prefixed {
    fn new(pre: Bytes, io: TcpStream, activity: Arc<Activity>) -> Self {
        Prefixed { pre, io, activity }
    }

    fn wrote(&self) {
        self.activity.idle.unflushed.store(true, Ordering::Relaxed);
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pre.is_empty() {
            let n = this.pre.len().min(buf.remaining());
            buf.put_slice(&this.pre[..n]);
            this.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.wrote();
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.wrote();
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.io).poll_flush(cx);
        if matches!(flushed, Poll::Ready(Ok(()))) {
            this.activity.idle.unflushed.store(false, Ordering::Relaxed);
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.activity.idle.keep.store(true, Ordering::Relaxed);
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// A response body that counts as open until hyper drops it (hyper drops it once it has
/// taken its last frame, or abandons it).
struct Tracked {
    body: Body,
    activity: Arc<Activity>,
}

impl Tracked {
    fn new(body: Body, activity: Arc<Activity>) -> Self {
        activity.idle.bodies.fetch_add(1, Ordering::Relaxed);
        Tracked { body, activity }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.activity.idle.bodies.fetch_sub(1, Ordering::Relaxed);
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// Upper bound on every wait here.
    const BOUND: Duration = Duration::from_secs(10);

    async fn ok(_req: Request<Incoming>, _peer: SocketAddr) -> Result<Response<Body>, Infallible> {
        let body = Full::new(Bytes::from_static(b"ok"))
            .map_err(|never| match never {})
            .boxed();
        Ok(Response::new(body))
    }

    /// One connection served by [`serve`] (no [`conn::run`] around it): its address and
    /// its activity, once accepted.
    async fn one_connection() -> (TcpStream, Arc<Activity>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (stream, peer) = listener.accept().await.unwrap();
            let activity = Arc::new(Activity::new());
            let _ = tx.send(Arc::clone(&activity));
            let mut h1 = http1::Builder::new();
            h1.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(BOUND);
            let builders = Arc::new(Builders {
                h1,
                h2: http2::Builder::new(Exec::new(tokio_util::sync::CancellationToken::new())),
                header_read_timeout: BOUND,
            });
            let _ = serve(stream, builders, activity, peer, ok, true).await;
        });
        let client = TcpStream::connect(addr).await.unwrap();
        (client, rx.await.unwrap())
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
        let (mut c, activity) = one_connection().await;
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
        let (mut c, activity) = one_connection().await;
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
    async fn a_parked_connection_closes_when_asked_to_finish() {
        let (mut c, activity) = one_connection().await;
        c.write_all(GET).await.unwrap();
        answers(&mut c, 1).await;
        until_parked(&activity).await;
        activity.idle.request_shutdown();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(BOUND, c.read(&mut buf))
            .await
            .expect("closed within the bound");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }
}
