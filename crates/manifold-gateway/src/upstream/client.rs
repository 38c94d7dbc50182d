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
            .http2_only(up.http2)
            .build(connector);
        Pool { client }
    }

    /// Send one request with an absolute URI; resolves with the response head.
    pub(super) fn request(&self, req: Request<Body>) -> ResponseFuture {
        self.client.request(req)
    }
}
