//! The pooled client under every upstream stack: one keep-alive pool per upstream, shared by all
//! its endpoints (hyper-util keys its pool by scheme and authority).
//!
//! hyper-util's legacy client is used directly rather than reqwest: a gateway must not follow
//! redirects, keep cookies or read proxy variables from the environment behind the user's back.

use crate::error::BoxError;
use bytes::Bytes;
use http::Request;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::time::Duration;

/// Idle keep-alive connections kept per endpoint (hyper-util's pool key, scheme + authority).
///
/// Why a cap: the pool's default keeps every connection a burst opened, for the idle timeout.
/// A latency hiccup at 2,000 req/s opens hundreds, and each idle HTTP/1 connection holds its
/// read buffer and dispatch channel (heaptrack on `bench soak`: 8 of the 11.7 MiB live at the
/// end of a 5-minute run). Connections beyond the cap are closed when they go idle; requests in
/// flight are never limited by it.
const MAX_IDLE_PER_ENDPOINT: usize = 64;

/// The body type the gateway sends and answers with.
pub type Body = BoxBody<Bytes, BoxError>;

/// The keep-alive pool of one upstream. Only [`super::Upstream`] sends through it.
#[derive(Debug)]
pub(super) struct Pool {
    client: Client<HttpConnector, Body>,
}

impl Pool {
    pub(super) fn new(up: &manifold_config::Upstream) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(up.connect_timeout));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(MAX_IDLE_PER_ENDPOINT)
            .http2_only(up.http2)
            .build(connector);
        Pool { client }
    }

    /// Send one request with an absolute URI; resolves with the response head.
    pub(super) fn request(&self, req: Request<Body>) -> ResponseFuture {
        self.client.request(req)
    }
}
