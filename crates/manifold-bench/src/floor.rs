//! The floor of a hyper-based proxy: the least a reverse proxy built on tokio and hyper 1.x
//! (Manifold's own stack) can spend per request, measured beside Manifold and the C proxies in
//! `manifold bench proxy` (the `hyper` row).
//!
//! Why it exists: issue 15 asks for CPU per proxied request at or below nginx's. Whether that is
//! a matter of Manifold's own code or of the stack it is built on cannot be told from Manifold
//! alone; this proxy does only what every HTTP/1.1 keep-alive proxy must (accept, parse the
//! request head, pick a pooled upstream connection, send, stream the answer back) and nothing
//! Manifold adds (routing, limits, deadlines, retries, balancing, telemetry, forwarded headers,
//! hop-by-hop stripping, idle parking). The gap between its row and nginx's is the stack's; the
//! gap between Manifold's row and its row is Manifold's.
//!
//! It is not a product: no limits, no timeouts, no header hygiene. It runs on loopback, started
//! by the benchmark as `manifold bench-peer hyper` (a hidden subcommand) so its CPU is read from
//! `/proc` like every other peer's.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};

/// Idle upstream connections kept, as nginx's `keepalive 64` in `bench/peers/nginx.conf.template`.
const KEEP: usize = 64;

type Out = http_body_util::combinators::UnsyncBoxBody<Bytes, hyper::Error>;

/// Upstream connections not carrying a request, most recently used last (LIFO, as nginx and
/// Manifold's own pool reuse the warmest connection).
struct Pool {
    upstream: SocketAddr,
    idle: Mutex<Vec<SendRequest<Incoming>>>,
}

impl Pool {
    /// A connection that can take a request now, or a new one.
    async fn checkout(&self) -> std::io::Result<SendRequest<Incoming>> {
        {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            while let Some(tx) = idle.pop() {
                if tx.is_ready() {
                    return Ok(tx);
                }
                // Closed, or still reading its last answer's body: a connection whose body is
                // still streaming was checked in early (below) and is dropped here rather than
                // waited for, as a floor should not wait.
            }
        }
        let stream = TcpStream::connect(self.upstream).await?;
        stream.set_nodelay(true)?;
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(tx)
    }

    fn checkin(&self, tx: SendRequest<Incoming>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < KEEP && !tx.is_closed() {
            idle.push(tx);
        }
    }
}

/// Forward one request; any failure is a 502 with an empty body.
async fn forward(pool: &Pool, req: Request<Incoming>) -> Response<Out> {
    let sent = async {
        let mut tx = pool.checkout().await?;
        let resp = tx.send_request(req).await.map_err(std::io::Error::other)?;
        // The answer's head is here; the connection is ready again once hyper has read its
        // body, which `checkout` tells by `is_ready`. The bench's upstream answers small bodies
        // in one read, so it is ready by the time another request looks.
        pool.checkin(tx);
        Ok::<_, std::io::Error>(resp)
    };
    match sent.await {
        Ok(resp) => resp.map(|b| b.boxed_unsync()),
        Err(_) => {
            let mut resp = Response::new(
                Full::new(Bytes::new())
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            );
            *resp.status_mut() = StatusCode::BAD_GATEWAY;
            resp
        }
    }
}

/// Serve on `listener`, forwarding every request to `upstream`, until the process ends.
pub async fn serve(listener: TcpListener, upstream: SocketAddr) -> std::io::Result<()> {
    let pool = Arc::new(Pool {
        upstream,
        idle: Mutex::new(Vec::with_capacity(KEEP)),
    });
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let pool = Arc::clone(&pool);
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let pool = Arc::clone(&pool);
                async move { Ok::<_, Infallible>(forward(&pool, req).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// The per-core variant of [`serve`]: `threads` threads, each with a single-threaded runtime, a
/// listener of its own on `listen` (`SO_REUSEPORT`: the kernel spreads new connections across
/// them) and an upstream pool of its own, as nginx's workers and Pingora's non-stealing mode
/// run. Nothing moves between threads: a connection's request, its upstream call and its
/// answer stay on the thread that accepted it. It measures what the runtime model costs,
/// beside the work-stealing [`serve`] (issue 15: which design could reach nginx's CPU).
///
/// Returns when a thread's accept loop fails (never, on loopback); a bind error is returned
/// before any thread starts serving.
pub fn serve_per_core(
    listen: SocketAddr,
    upstream: SocketAddr,
    threads: usize,
) -> std::io::Result<()> {
    let mut ready = Vec::with_capacity(threads);
    for _ in 0..threads.max(1) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // Registered with this thread's runtime (entered, not blocked on: a caller may be
        // inside another runtime).
        let listener = {
            let _entered = rt.enter();
            let socket = match listen {
                SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            socket.set_reuseaddr(true)?;
            socket.set_reuseport(true)?;
            socket.bind(listen)?;
            socket.listen(1024)?
        };
        ready.push((rt, listener));
    }
    let mut running = Vec::with_capacity(ready.len());
    for (i, (rt, listener)) in ready.into_iter().enumerate() {
        running.push(
            std::thread::Builder::new()
                .name(format!("floor-{i}"))
                .spawn(move || rt.block_on(serve(listener, upstream)))?,
        );
    }
    for t in running {
        t.join()
            .map_err(|_| std::io::Error::other("a floor thread panicked"))??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that answers `PATH BODY`; aborting the task closes its connections (they
    /// live in a `JoinSet` inside it).
    async fn upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let up = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = up.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((s, _)) = up.accept().await else {
                    return;
                };
                conns.spawn(async move {
                    let svc = service_fn(|req: Request<Incoming>| async move {
                        let path = req.uri().path().to_owned();
                        let body = req.into_body().collect().await?.to_bytes();
                        let text = format!("{path} {}", String::from_utf8_lossy(&body));
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(text))))
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        (addr, task)
    }

    /// POST `hello` to `path` on a new connection to `front`.
    async fn ask(front: SocketAddr, path: &'static str) -> (StatusCode, Bytes) {
        let s = TcpStream::connect(front).await.expect("connect");
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let req = Request::post(path)
            .header("host", "floor")
            .body(Full::new(Bytes::from_static(b"hello")))
            .expect("request");
        let resp = tx.send_request(req).await.expect("answer");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, body)
    }

    /// The floor forwards method, path and body and streams the answer back; a dead upstream
    /// is a 502, not a hang.
    #[tokio::test]
    async fn forwards_to_the_upstream_and_answers_502_when_it_is_gone() {
        let (up_addr, upstream) = upstream().await;
        let front = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let front_addr = front.local_addr().expect("addr");
        tokio::spawn(serve(front, up_addr));

        for _ in 0..3 {
            let (status, body) = ask(front_addr, "/a/b?c=1").await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(&body[..], b"/a/b hello");
        }
        upstream.abort();
        let _ = upstream.await;
        // Pooled connections see their sockets closed, new ones are refused: either way a 502.
        let mut refused = false;
        for _ in 0..50 {
            let (status, _) = ask(front_addr, "/x").await;
            if status == StatusCode::BAD_GATEWAY {
                refused = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(refused, "a gone upstream must answer 502");
    }

    /// The per-core floor answers on one port from several threads' listeners, each connection
    /// forwarded by the thread that accepted it; a port already taken without `SO_REUSEPORT` is
    /// a bind error, not a silent start.
    #[tokio::test]
    async fn the_per_core_floor_serves_one_port_from_every_thread() {
        let (up_addr, _upstream) = upstream().await;
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken_addr = taken.local_addr().expect("addr");
        // Off the test's runtime: the threads' runtimes are made and dropped there.
        let refused = tokio::task::spawn_blocking(move || serve_per_core(taken_addr, up_addr, 2))
            .await
            .expect("join");
        assert!(refused.is_err(), "{refused:?}");
        drop(taken);

        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let front_addr = free.local_addr().expect("addr");
        drop(free);
        std::thread::spawn(move || serve_per_core(front_addr, up_addr, 2));
        for _ in 0..100 {
            if TcpStream::connect(front_addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        for _ in 0..20 {
            let (status, body) = ask(front_addr, "/p").await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(&body[..], b"/p hello");
        }
        let named: Vec<String> = std::fs::read_dir("/proc/self/task")
            .expect("tasks")
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|c| c.starts_with("floor-"))
            .collect();
        assert_eq!(named.len(), 2, "{named:?}");
    }
}
