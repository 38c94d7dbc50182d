//! The keep-alive pool of one plaintext HTTP/1.1 target, over hyper's `client::conn::http1`.
//!
//! Why not hyper-util's legacy pooled client here: on the proxy route it cost 12 % of the
//! gateway's instructions (callgrind, issue 15): its pool is keyed by `(Scheme, Authority)`,
//! hashed with SipHash on every checkout and return, behind one mutex for every target, and each
//! request is a boxed future. A target already is one pool key, so this pool is a plain stack of
//! idle connections, and the request future lives inside the attempt's.
//!
//! It keeps what that client did, so that behaviour stays the same:
//! - at most [`MAX_IDLE`](super::MAX_IDLE_PER_ENDPOINT) idle connections, the most recently used
//!   first (LIFO: the warm ones are reused, the others reach the idle timeout and close);
//! - an idle connection is dropped (closed) after [`IDLE_TIMEOUT`](super::IDLE_TIMEOUT): at
//!   checkout, and by a sweep task while the pool lives;
//! - a connection goes back to the pool only once hyper is ready to send on it again, that is
//!   when the answer was read to its end and did not say `Connection: close` (hyper closes the
//!   connection otherwise, and a request whose future is dropped, such as a hedge's loser,
//!   closes its connection too);
//! - a request that a reused connection refused before sending anything (the upstream closed
//!   it while idle) is sent again on another connection;
//! - the same connector (connect timeout, `TCP_NODELAY`, the target's address) and the same
//!   error kinds and messages (`client error (Connect)`: nothing was sent).

use super::{Body, Dial, SendError, IDLE_TIMEOUT, MAX_IDLE_PER_ENDPOINT};
use http::header::{HeaderValue, HOST};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::client::legacy::connect::HttpConnector;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use tokio::time::Instant;
use tower::Service;

/// The pool of one target; cheap to clone (one `Arc`).
#[derive(Debug, Clone)]
pub(crate) struct Plain {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    connector: HttpConnector<Dial>,
    /// `Host` for a request without one: the target's configured `host[:port]` (the port left
    /// out when it is 80), as hyper-util derived it from the URI for every request.
    host: Option<HeaderValue>,
    /// Idle connections, the most recently returned last. The lock is held for a push or a pop,
    /// never across an await.
    idle: Mutex<Vec<Idle>>,
    /// Whether the sweep task runs.
    sweeping: AtomicBool,
}

#[derive(Debug)]
struct Idle {
    tx: SendRequest<Body>,
    since: Instant,
}

impl Plain {
    /// The pool of a target reached through `connector`, whose requests without a `Host` get
    /// `host` (see [`host_value`]).
    pub(crate) fn new(connector: HttpConnector<Dial>, host: Option<HeaderValue>) -> Self {
        Plain {
            shared: Arc::new(Shared {
                connector,
                host,
                idle: Mutex::new(Vec::new()),
                sweeping: AtomicBool::new(false),
            }),
        }
    }

    /// Send `req` (an absolute `http://` URI) on an idle connection, or on a new one.
    #[cfg(test)]
    pub(crate) async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, SendError> {
        self.send_or_return(req).await.map_err(|(e, _)| e)
    }

    /// [`Plain::send`], handing the request back with the error when no connection could be
    /// made for it: then none of it was sent (its URI is in origin form and it has a `Host`
    /// by then), and the caller may send it elsewhere without having kept a copy.
    pub(crate) async fn send_or_return(
        &self,
        mut req: Request<Body>,
    ) -> Result<Response<Incoming>, (SendError, Option<Box<Request<Body>>>)> {
        if req.version() == Version::HTTP_2 {
            return Err((SendError::UnsupportedVersion, None));
        }
        let uri = std::mem::take(req.uri_mut());
        if !req.headers().contains_key(HOST) {
            let host = match &self.shared.host {
                Some(h) => h.clone(),
                None => uri_host(&uri).ok_or((SendError::NoHost, None))?,
            };
            req.headers_mut().insert(HOST, host);
        }
        *req.uri_mut() = origin_form(&uri);
        loop {
            let (mut tx, reused) = match self.shared.checkout() {
                Some(tx) => (tx, true),
                None => match self.connect(&uri).await {
                    Ok(tx) => (tx, false),
                    // Boxed: only a failure pays for moving it.
                    Err(e) => return Err((e, Some(Box::new(req)))),
                },
            };
            match tx.try_send_request(req).await {
                Ok(res) => {
                    self.give_back(tx);
                    return Ok(res);
                }
                Err(mut e) => match e.take_message() {
                    // Nothing was written: the upstream closed an idle connection under us.
                    Some(unsent) if reused => req = unsent,
                    Some(_) => return Err((SendError::Canceled(e.into_error()), None)),
                    None => return Err((SendError::Send(e.into_error()), None)),
                },
            }
        }
    }

    /// A new connection, its task spawned, ready to send.
    async fn connect(&self, uri: &Uri) -> Result<SendRequest<Body>, SendError> {
        let mut connector = self.shared.connector.clone();
        let io = connector
            .call(uri.clone())
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        let (mut tx, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(SendError::Send)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("upstream connection error: {e}");
            }
        });
        tx.ready().await.map_err(SendError::Send)?;
        Ok(tx)
    }

    /// Back to the pool once hyper can send on it again: now when the answer came whole with
    /// its head, else from a task that waits for the body's end (or the connection's).
    fn give_back(&self, mut tx: SendRequest<Body>) {
        if tx.is_ready() {
            self.shared.put(tx);
            return;
        }
        let shared = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            if std::future::poll_fn(|cx| tx.poll_ready(cx)).await.is_ok() {
                if let Some(shared) = shared.upgrade() {
                    shared.put(tx);
                }
            }
        });
    }

    /// Idle connections now (tests).
    #[cfg(test)]
    pub(crate) fn idle(&self) -> usize {
        self.shared
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Shared {
    /// The most recently returned connection that is still open and young enough; the others
    /// met on the way are dropped (closed).
    fn checkout(&self) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(entry) = idle.pop() {
            if entry.tx.is_ready() && entry.since.elapsed() < IDLE_TIMEOUT {
                return Some(entry.tx);
            }
        }
        None
    }

    fn put(self: &Arc<Self>, tx: SendRequest<Body>) {
        let since = Instant::now();
        {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() >= MAX_IDLE_PER_ENDPOINT {
                // Dropped: its connection closes.
                return;
            }
            idle.push(Idle { tx, since });
        }
        if !self.sweeping.swap(true, Ordering::Relaxed) {
            tokio::spawn(sweep(Arc::downgrade(self)));
        }
    }

    /// Drop the idle connections past the idle timeout (the oldest are first).
    fn expire(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let live = idle
            .iter()
            .position(|e| e.since.elapsed() < IDLE_TIMEOUT && !e.tx.is_closed());
        match live {
            Some(n) => drop(idle.drain(..n)),
            None => idle.clear(),
        }
    }
}

/// Every idle timeout, close the connections that sat idle that long, as long as the pool lives
/// (so an upstream that goes quiet is not held open forever by connections no one checks out).
async fn sweep(shared: Weak<Shared>) {
    loop {
        tokio::time::sleep(IDLE_TIMEOUT).await;
        match shared.upgrade() {
            Some(s) => s.expire(),
            None => return,
        }
    }
}

/// `host[:port]` of an endpoint's authority, the port left out when it is HTTP's default: the
/// `Host` hyper-util derived from the URI for every request.
pub(crate) fn host_value(authority: &str) -> Option<HeaderValue> {
    let a = authority.parse::<http::uri::Authority>().ok()?;
    host_of(a.host(), a.port_u16())
}

fn uri_host(uri: &Uri) -> Option<HeaderValue> {
    host_of(uri.host()?, uri.port_u16())
}

fn host_of(host: &str, port: Option<u16>) -> Option<HeaderValue> {
    match port {
        Some(p) if p != 80 => HeaderValue::from_str(&format!("{host}:{p}")).ok(),
        _ => HeaderValue::from_str(host).ok(),
    }
}

/// The path and query alone, as an HTTP/1 request line wants them.
fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(pq) if pq.as_str() != "/" => Uri::from(pq.clone()),
        _ => Uri::default(),
    }
}

#[cfg(test)]
#[path = "plain_tests.rs"]
mod tests;
