//! Listeners: accept connections, serve HTTP/1.1 and HTTP/2 (h2c) on one port, and shut down
//! gracefully — stop accepting, let in-flight requests finish up to the drain timeout.
//!
//! At most `max_connections` connections are served at once: beyond it the listener stops
//! accepting and new connections wait in the kernel's listen backlog, so a flood costs the
//! gateway neither file descriptors nor memory past the limit.

use crate::client::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// What bounds one listener's connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// How long a client may take to send a request head (also how long an idle keep-alive
    /// connection is kept).
    pub(crate) header_read_timeout: Duration,
    /// Most connections served at once.
    pub(crate) max_connections: usize,
    /// How long in-flight requests get after `stop`.
    pub(crate) drain: Duration,
}

/// Serve `listener` with `handler` until `stop` is cancelled, then drain for up to
/// `limits.drain`. The handler is given each request and its client's address (the proxy
/// passes that on in `X-Forwarded-For`; it is not put in the request's extensions, which would
/// allocate for every request).
pub(crate) async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    limits: Limits,
    stop: CancellationToken,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
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
                let handler = handler.clone();
                let conn = builder.serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |req: Request<Incoming>| handler(req, peer)),
                );
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    let _slot = slot;
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            _ = stop.cancelled() => break,
        }
    }
    drop(listener);
    let drain = limits.drain;
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "drain timeout passed with requests still in flight; closing them"
        );
    }
}
