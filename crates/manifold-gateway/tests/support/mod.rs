//! A scriptable upstream on 127.0.0.1:0 that records every request it sees — method, path,
//! headers, body, when it started and ended, and whether its connection was dropped before it
//! answered — plus helpers to start a gateway from TOML text.

#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the upstream does for a request path prefix.
#[derive(Clone, Debug)]
pub struct Reply {
    pub delay: Duration,
    pub status: u16,
    pub body: String,
    /// Sent after `content-type: application/json`.
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn json(delay_ms: u64, body: serde_json::Value) -> Self {
        Reply {
            delay: Duration::from_millis(delay_ms),
            status: 200,
            body: body.to_string(),
            headers: Vec::new(),
        }
    }
    pub fn raw(delay_ms: u64, status: u16, body: &str) -> Self {
        Reply {
            delay: Duration::from_millis(delay_ms),
            status,
            body: body.to_owned(),
            headers: Vec::new(),
        }
    }
    /// The same reply with one more response header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// One request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub start: Instant,
    pub end: Option<Instant>,
    /// The request's future was dropped before it answered: the gateway cancelled it.
    pub cancelled: bool,
}

impl Seen {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Clone, Default)]
pub struct Upstream {
    pub addr: Option<SocketAddr>,
    routes: Arc<Mutex<Vec<(String, String, Reply)>>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

struct DropGuard {
    seen: Arc<Mutex<Vec<Seen>>>,
    index: usize,
    done: bool,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.done {
            if let Ok(mut s) = self.seen.lock() {
                s[self.index].cancelled = true;
            }
        }
    }
}

impl Upstream {
    /// Start an upstream; `routes` are (method, path prefix, reply), first match wins.
    pub async fn start(routes: Vec<(&str, &str, Reply)>) -> Upstream {
        Self::start_with(routes, false).await
    }

    pub async fn start_with(routes: Vec<(&str, &str, Reply)>, http2_only: bool) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve_with(listener, routes, http2_only)
    }

    /// Serve on a listener bound by the caller (e.g. on an address chosen earlier).
    pub fn serve(listener: TcpListener, routes: Vec<(&str, &str, Reply)>) -> Upstream {
        Self::serve_with(listener, routes, false)
    }

    fn serve_with(
        listener: TcpListener,
        routes: Vec<(&str, &str, Reply)>,
        http2_only: bool,
    ) -> Upstream {
        let mut up = Upstream {
            addr: Some(listener.local_addr().unwrap()),
            routes: Arc::new(Mutex::new(
                routes
                    .into_iter()
                    .map(|(m, p, r)| (m.to_owned(), p.to_owned(), r))
                    .collect(),
            )),
            seen: Arc::default(),
        };
        let me = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let me = me.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| me.clone().handle(req));
                    let io = TokioIo::new(stream);
                    if http2_only {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, svc)
                            .await;
                    } else {
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(io, svc)
                            .await;
                    }
                });
            }
        });
        up.addr = up.addr.take();
        up
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr.unwrap())
    }

    async fn handle(self, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
        let start = Instant::now();
        let method = req.method().to_string();
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        let headers = req.headers().clone();
        let path = req.uri().path().to_owned();
        let body = req.into_body().collect().await?.to_bytes();
        let index = {
            let mut s = self.seen.lock().unwrap();
            s.push(Seen {
                method: method.clone(),
                path_and_query: pq,
                headers,
                body,
                start,
                end: None,
                cancelled: false,
            });
            s.len() - 1
        };
        let mut guard = DropGuard {
            seen: self.seen.clone(),
            index,
            done: false,
        };
        let reply = self
            .routes
            .lock()
            .unwrap()
            .iter()
            .find(|(m, p, _)| (m == "*" || *m == method) && path.starts_with(p.as_str()))
            .map(|(_, _, r)| r.clone())
            .unwrap_or(Reply::raw(0, 404, "{\"error\":\"no such test route\"}"));
        tokio::time::sleep(reply.delay).await;
        guard.done = true;
        self.seen.lock().unwrap()[index].end = Some(Instant::now());
        let mut resp = Response::new(Full::new(Bytes::from(reply.body)));
        *resp.status_mut() = StatusCode::from_u16(reply.status).unwrap();
        resp.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        for (name, value) in &reply.headers {
            resp.headers_mut().append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        Ok(resp)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The requests seen once `done` says they are all there (a queued call delivered later),
    /// or after 5 s, whichever comes first: the caller asserts on what it gets.
    pub async fn requests_when(&self, done: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
        for _ in 0..200 {
            let seen = self.requests();
            if done(&seen) {
                return seen;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        self.requests()
    }

    pub fn find(&self, path_prefix: &str) -> Seen {
        self.requests()
            .into_iter()
            .find(|s| s.path_and_query.starts_with(path_prefix))
            .unwrap_or_else(|| {
                panic!(
                    "upstream saw no request to {path_prefix}: {:?}",
                    self.requests()
                )
            })
    }
}

/// How long a stopped gateway may take to end in [`TestGateway::shutdown`]: past every drain
/// these tests configure (the server's 30 s default, the queue's 10 s and its 5 s hard stop),
/// so reaching it means shutdown hangs, and the test says so instead of hanging with it.
pub const STOP_BOUND: Duration = Duration::from_secs(60);

/// A running gateway for a test. Stop it with [`shutdown`](Self::shutdown), the one way that
/// sees a gateway that panicked or hung while stopping (its task is private for that reason).
pub struct TestGateway {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// The HTTPS listener's address, when the config has one.
    pub tls: Option<SocketAddr>,
    /// Cancelling it starts the shutdown (drain delay, then drain) without waiting for the end:
    /// for tests that watch the drain; they still end with [`shutdown`](Self::shutdown).
    pub stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    pub stats: Arc<manifold_gateway::Stats>,
}

impl TestGateway {
    /// Compile `toml` (with `{UP}`-style placeholders already replaced) and start the gateway on
    /// free ports.
    pub async fn start(toml: &str) -> TestGateway {
        Self::start_with_server("", toml).await
    }

    /// As [`start`](Self::start), with `server` (lines of `[server]` keys) added to the
    /// server section.
    /// The client listener is on a free port, shutdown has no `drain_delay` and a 5 s
    /// `drain_timeout`, and bodies are at most 4096 bytes, unless `server` sets them.
    pub async fn start_with_server(server: &str, toml: &str) -> TestGateway {
        let mut defaults = String::new();
        for (key, value) in [
            ("listen", "\"127.0.0.1:0\""),
            ("drain_delay", "\"0s\""),
            ("drain_timeout", "\"5s\""),
            ("max_body_bytes", "4096"),
        ] {
            let set = server.lines().any(|l| {
                l.trim_start()
                    .strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            });
            if !set {
                defaults.push_str(&format!("{key} = {value}\n"));
            }
        }
        let toml = format!("[server]\nadmin = \"127.0.0.1:0\"\n{defaults}{server}\n{toml}");
        let config = manifold_config::compile("test.toml".as_ref(), &toml)
            .unwrap_or_else(|e| panic!("{e}\n---\n{toml}"));
        let gw = manifold_gateway::Gateway::bind(config).await.unwrap();
        Self::spawn(gw)
    }

    /// Run a gateway the test bound itself (from a file, with TLS, or holding its reloaders).
    pub fn spawn(gw: manifold_gateway::Gateway) -> TestGateway {
        let (addr, admin, tls, stats) =
            (gw.local_addr(), gw.admin_addr(), gw.tls_addr(), gw.stats());
        let stop = CancellationToken::new();
        let task = tokio::spawn(gw.run(stop.clone()));
        TestGateway {
            addr,
            admin,
            tls,
            stop,
            task,
            stats,
        }
    }

    /// Stop the gateway and wait for it to end, failing the test if its task panicked or it is
    /// still running after [`STOP_BOUND`]. Discarding the task's result (`let _ = task.await`)
    /// let a panic while stopping (offload, telemetry) pass as a clean stop.
    pub async fn shutdown(self) {
        self.shutdown_within(STOP_BOUND).await;
    }

    /// [`shutdown`](Self::shutdown) for a test whose point is that the gateway stops in time.
    pub async fn shutdown_within(self, bound: Duration) {
        self.stop.cancel();
        match tokio::time::timeout(bound, self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.is_panic() => {
                let payload = e.into_panic();
                let text = payload
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("a panic without a message");
                panic!("the gateway's task panicked: {text}")
            }
            Ok(Err(e)) => panic!("the gateway's task ended without finishing: {e}"),
            Err(_) => panic!("the gateway did not stop within {bound:?} of the stop"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// A plain HTTP/1.1 client for tests.
pub fn client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// Send a request; return status, headers and the body as bytes.
pub async fn send(
    method: &str,
    url: &str,
    body: Option<&str>,
) -> (StatusCode, http::HeaderMap, Bytes) {
    send_with(method, url, &[], body).await
}

/// [`send`] with request headers.
pub async fn send_with(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut b = Request::builder().method(method).uri(url);
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    for (name, value) in headers {
        b = b.header(*name, *value);
    }
    let req = b
        .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

/// The call names of `Manifold-Partial` (each item's parameters, after `;`, dropped).
pub fn partial_names(headers: &http::HeaderMap) -> String {
    let v = headers["manifold-partial"].to_str().expect("ASCII");
    v.split(", ")
        .map(|item| item.split(';').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn json(b: &Bytes) -> serde_json::Value {
    serde_json::from_slice(b)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(b)))
}

/// The task key a request to route `checkout` with `Idempotency-Key: client` and no
/// `Authorization` gives `call` (see `idempotency_scope` for what the scope does).
pub fn checkout_key(client: &str, call: &str) -> String {
    let c = manifold_queue::ClientKey {
        key: client,
        route: "checkout",
        principal: &[None],
    };
    manifold_queue::task_key(Some(&c), "unused", call)
}

mod shutdown_tests;
