//! The pooled client under every upstream stack: one keep-alive pool per upstream for its
//! `http://` endpoints (hyper-util keys its pool by scheme and authority), and one per
//! `https://` endpoint.
//!
//! hyper-util's legacy client is used directly rather than reqwest: a gateway must not follow
//! redirects, keep cookies or read proxy variables from the environment behind the user's back.
//!
//! `https://` endpoints go through hyper-rustls's `HttpsConnector` rather than a connector of
//! our own over tokio-rustls: it already reports the ALPN result to hyper-util, which then speaks
//! HTTP/2 on a connection that negotiated `h2` and HTTP/1.1 otherwise, on the same pool. Why a
//! client per https endpoint: the resolver ([`super::resolve`]) sends requests to an endpoint's
//! addresses (the URI's authority is an IP, so each replica gets its own connections), but the
//! certificate must be checked against, and SNI must name, the host as configured. A connector
//! serves one endpoint, so its server name is fixed to that endpoint's host.

use super::tls;
use crate::error::BoxError;
use crate::tls::TlsError;
use bytes::Bytes;
use http::Request;
use http_body_util::combinators::BoxBody;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::ServerName;
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

/// The keep-alive pools of one upstream. Only [`super::Upstream`] sends through them.
#[derive(Debug)]
pub(super) struct Pool {
    plain: Client<HttpConnector, Body>,
    /// By configured endpoint index: the client of an `https://` endpoint, `None` for `http://`.
    tls: Vec<Option<Client<HttpsConnector<HttpConnector>, Body>>>,
}

impl Pool {
    /// The pools; fails when a TLS file of the upstream cannot be used (or an https upstream
    /// without `ca` finds no system roots).
    pub(super) fn new(up: &manifold_config::Upstream) -> Result<Self, TlsError> {
        let plain = builder(up).build(connector(up));
        let mut config = None;
        let mut tls = Vec::with_capacity(up.endpoints.len());
        for ep in &up.endpoints {
            if ep.scheme != "https" {
                tls.push(None);
                continue;
            }
            let config = match &config {
                Some(c) => c,
                None => config.insert(tls::client_config(up)?),
            };
            let name = server_name(&ep.authority).map_err(|e| TlsError::Rustls {
                what: format!("upstream `{}`: endpoint {}", up.name, ep.url),
                source: rustls::Error::General(e),
            })?;
            let mut http = connector(up);
            http.enforce_http(false);
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(rustls::ClientConfig::clone(config))
                .https_only()
                .with_server_name_resolver(FixedServerNameResolver::new(name));
            // ALPN: `h2` alone with `http2 = true`; otherwise `h2` and `http/1.1`, and the
            // upstream picks.
            let https = if up.http2 {
                https.enable_http2().wrap_connector(http)
            } else {
                https.enable_http1().enable_http2().wrap_connector(http)
            };
            tls.push(Some(builder(up).build(https)));
        }
        Ok(Pool { plain, tls })
    }

    /// Send one request with an absolute URI to configured endpoint `index`; resolves with the
    /// response head.
    pub(super) fn request(&self, index: usize, req: Request<Body>) -> ResponseFuture {
        match self.tls.get(index) {
            Some(Some(client)) => client.request(req),
            _ => self.plain.request(req),
        }
    }
}

fn connector(up: &manifold_config::Upstream) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(up.connect_timeout));
    connector.enforce_http(true);
    connector
}

fn builder(up: &manifold_config::Upstream) -> hyper_util::client::legacy::Builder {
    let mut b = Client::builder(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(MAX_IDLE_PER_ENDPOINT)
        .http2_only(up.http2);
    b
}

/// The server name of `host[:port]`: the host (an IPv6 literal without its brackets).
fn server_name(authority: &str) -> Result<ServerName<'static>, String> {
    let host = match authority.parse::<http::uri::Authority>() {
        Ok(a) => a.host().to_owned(),
        Err(e) => return Err(format!("{authority:?} is not host[:port]: {e}")),
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .map_or(host.clone(), str::to_owned);
    ServerName::try_from(host.clone()).map_err(|e| format!("{host:?} is not a server name: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_is_the_configured_host() {
        assert_eq!(
            server_name("payments.internal:7012").unwrap(),
            ServerName::try_from("payments.internal").unwrap()
        );
        assert_eq!(
            server_name("[::1]:443").unwrap(),
            ServerName::try_from("::1").unwrap()
        );
        assert!(server_name("bad host:1").is_err());
    }
}
