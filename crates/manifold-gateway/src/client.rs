//! The upstream client: one pooled keep-alive client per upstream, round robin over its
//! endpoints. (P2C peak-EWMA balancing replaces round robin in the resilience work.)
//!
//! hyper-util's legacy client is used directly rather than reqwest: a gateway must not follow
//! redirects, keep cookies or read proxy variables from the environment behind the user's back.

use crate::error::{BoxError, CallError, CallErrorKind};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use manifold_config::{Endpoint, Upstream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The body type the gateway sends and answers with.
pub type Body = BoxBody<Bytes, BoxError>;

/// A pooled client for one upstream.
#[derive(Debug)]
pub(crate) struct UpstreamClient {
    pub(crate) name: String,
    endpoints: Vec<Endpoint>,
    next: AtomicUsize,
    pub(crate) timeout: Duration,
    client: Client<HttpConnector, Body>,
}

impl UpstreamClient {
    pub(crate) fn new(up: &Upstream) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(up.connect_timeout));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .http2_only(up.http2)
            .build(connector);
        UpstreamClient {
            name: up.name.clone(),
            endpoints: up.endpoints.clone(),
            next: AtomicUsize::new(0),
            timeout: up.timeout,
            client,
        }
    }

    /// Pick the next endpoint, round robin.
    pub(crate) fn endpoint(&self) -> &Endpoint {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len().max(1);
        &self.endpoints[i]
    }

    /// Send a request and wait for the response head. Timeouts are applied by the caller.
    pub(crate) async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, CallError> {
        self.client.request(req).await.map_err(|e| {
            let kind = if e.is_connect() {
                CallErrorKind::Connect
            } else {
                CallErrorKind::Io
            };
            CallError::new(
                kind,
                format!("upstream `{}`: {}", self.name, error_chain(&e)),
            )
        })
    }
}

/// `err: cause: cause` — hyper's top-level messages alone are too vague to act on.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
