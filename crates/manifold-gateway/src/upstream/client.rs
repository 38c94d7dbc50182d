//! The pooled clients under every upstream stack: one keep-alive pool per target, that is per
//! endpoint as configured or, once its name is resolved, per address ([`super::resolve`]), so
//! each replica behind a name gets its own connections.
//!
//! hyper-util's legacy client is used directly rather than reqwest: a gateway must not follow
//! redirects, keep cookies or read proxy variables from the environment behind the user's back.
//!
//! `https://` endpoints go through hyper-rustls's `HttpsConnector` rather than a connector of
//! our own over tokio-rustls: it already reports the ALPN result to hyper-util, which then speaks
//! HTTP/2 on a connection that negotiated `h2` and HTTP/1.1 otherwise, on the same pool.
//!
//! Why a client per target rather than one per upstream keyed by address: the request must
//! name the host as configured — SNI and the certificate check, `Host`, and HTTP/2's
//! `:authority`, which hyper takes from the URI — while the connection goes to the resolved
//! address. So the URI carries the configured authority, and each target's connector dials
//! its own address ([`Dial`]) with its server name fixed to the configured host.

mod plain;

use super::resolve::Key;
use super::tls;
use crate::error::BoxError;
use crate::tls::TlsError;
use bytes::Bytes;
use http::Request;
use http::Response;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::ServerName;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Idle keep-alive connections kept per endpoint (hyper-util's pool key, scheme + authority).
///
/// Why a cap: the pool's default keeps every connection a burst opened, for the idle timeout.
/// A latency hiccup at 2,000 req/s opens hundreds, and each idle HTTP/1 connection holds its
/// read buffer and dispatch channel (heaptrack on `bench soak`: 8 of the 11.7 MiB live at the
/// end of a 5-minute run). Connections beyond the cap are closed when they go idle; requests in
/// flight are never limited by it.
const MAX_IDLE_PER_ENDPOINT: usize = 64;

/// How long a keep-alive connection may sit idle before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The body type the gateway sends and answers with.
pub type Body = BoxBody<Bytes, BoxError>;

/// What builds the pooled clients of one upstream's targets. Only [`super::Upstream`] sends
/// through them.
#[derive(Debug)]
pub(super) struct Pool {
    connect_timeout: Duration,
    http2: bool,
    /// By configured endpoint index: for an `https://` endpoint, its TLS configuration and
    /// the server name its certificate must carry (the configured host); `None` for `http://`.
    tls: Vec<Option<(rustls::ClientConfig, ServerName<'static>)>>,
    /// By configured endpoint index: the `Host` its plaintext HTTP/1 requests get when they
    /// carry none (computed once, not per request).
    hosts: Vec<Option<http::HeaderValue>>,
}

/// The pooled client of one target (an endpoint, or one address of a resolved endpoint):
/// requests name the endpoint as configured (`Host`, HTTP/2's `:authority`, SNI), and its
/// connector dials the target's address.
///
/// Plaintext HTTP/1.1 goes through a pool of our own ([`plain`]: the proxy's common case, where
/// hyper-util's pool cost most); `https://` (HTTP/1.1 or h2 as ALPN decides) and `http2 = true`
/// (h2c) through hyper-util's.
#[derive(Debug, Clone)]
pub(super) enum Sender {
    Plain(plain::Plain),
    H2c(Client<HttpConnector<Dial>, Body>),
    Tls(Client<Bounded<HttpsConnector<HttpConnector<Dial>>>, Body>),
}

impl Sender {
    /// Send one request with an absolute URI; resolves with the response head.
    pub(super) async fn request(&self, req: Request<Body>) -> Result<Response<Incoming>, Failed> {
        match self {
            Sender::Plain(p) => p
                .send_or_return(req)
                .await
                .map_err(|(error, unsent)| Failed { error, unsent }),
            Sender::H2c(c) => Ok(c.request(req).await.map_err(SendError::from)?),
            Sender::Tls(c) => Ok(c.request(req).await.map_err(SendError::from)?),
        }
    }
}

/// A request that got no answer head: why, and the request itself when none of it was sent and
/// the client could hand it back (the plaintext pool, when no connection could be made; see
/// [`Pool::gives_back`]).
#[derive(Debug)]
pub(super) struct Failed {
    pub(super) error: SendError,
    pub(super) unsent: Option<Box<Request<Body>>>,
}

impl From<SendError> for Failed {
    fn from(error: SendError) -> Self {
        Failed {
            error,
            unsent: None,
        }
    }
}

/// Why a request got no answer head. The texts are hyper-util's (`client error (Connect)`, its
/// source chain after it), whichever pool sent it, so logs and error bodies read the same.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error(transparent)]
    Pooled(#[from] hyper_util::client::legacy::Error),
    /// No connection was made: nothing was sent.
    #[error("client error (Connect)")]
    Connect(#[source] BoxError),
    #[error("client error (SendRequest)")]
    Send(#[source] hyper::Error),
    /// A new connection refused the request before sending any of it.
    #[error("client error (Canceled)")]
    Canceled(#[source] hyper::Error),
    #[error("client error (UserUnsupportedVersion)")]
    UnsupportedVersion,
    #[error("client error (UserAbsoluteUriRequired)")]
    NoHost,
}

impl SendError {
    /// Whether no connection could be made (so nothing was sent).
    pub(crate) fn is_connect(&self) -> bool {
        match self {
            SendError::Pooled(e) => e.is_connect(),
            SendError::Connect(_) => true,
            _ => false,
        }
    }
}

impl Pool {
    /// Fails when a TLS file of the upstream cannot be used (or an https upstream without
    /// `ca` finds no system roots).
    pub(super) fn new(up: &manifold_config::Upstream) -> Result<Self, TlsError> {
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
            tls.push(Some((rustls::ClientConfig::clone(config), name)));
        }
        let hosts = up
            .endpoints
            .iter()
            .map(|ep| plain::host_value(&ep.authority))
            .collect();
        Ok(Pool {
            connect_timeout: up.connect_timeout,
            http2: up.http2,
            tls,
            hosts,
        })
    }

    /// Whether every target's client hands back a request it could not send for want of a
    /// connection ([`Failed::unsent`]): true when all of them use the plaintext HTTP/1 pool
    /// (hyper-util's client, for TLS and h2c, keeps the request).
    pub(super) fn gives_back(&self) -> bool {
        !self.http2 && self.tls.iter().all(Option::is_none)
    }

    /// The client of the target `key`: dialing its address when it has one, else resolving
    /// the configured name per connection.
    pub(super) fn sender(&self, key: Key) -> Sender {
        let dial = match key.addr {
            Some(addr) => Dial::Fixed(addr),
            None => Dial::System(GaiResolver::new()),
        };
        let mut http = HttpConnector::new_with_resolver(dial);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(self.connect_timeout));
        let Some(Some((config, name))) = self.tls.get(key.index) else {
            http.enforce_http(true);
            if self.http2 {
                return Sender::H2c(self.builder().build(http));
            }
            let host = self.hosts.get(key.index).cloned().flatten();
            return Sender::Plain(plain::Plain::new(http, host));
        };
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config.clone())
            .https_only()
            .with_server_name_resolver(FixedServerNameResolver::new(name.clone()));
        // ALPN: `h2` alone with `http2 = true`; otherwise `h2` and `http/1.1`, and the upstream
        // picks (hyper-util then speaks what was negotiated).
        let https = if self.http2 {
            https.enable_http2().wrap_connector(http)
        } else {
            https.enable_http1().enable_http2().wrap_connector(http)
        };
        let https = Bounded {
            inner: https,
            within: self.connect_timeout,
        };
        Sender::Tls(self.builder().build(https))
    }

    fn builder(&self) -> hyper_util::client::legacy::Builder {
        let mut b = Client::builder(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(MAX_IDLE_PER_ENDPOINT)
            .http2_only(self.http2);
        b
    }
}

/// A connector whose whole opening of a connection is bounded by `connect_timeout`: for
/// `https://`, the TCP connect *and* the TLS handshake. hyper-rustls bounds neither the
/// handshake nor lets the TCP connector's timeout cover it, so a peer that takes the TCP
/// connection and never answers the ClientHello (a stuck process whose listen backlog still
/// completes TCP handshakes) held the attempt for its whole `timeout`, failing as `timeout`
/// rather than `connect` (so not retried elsewhere); and when a pooled connection freed up
/// first, hyper-util finished that connect in a background task that never ended. One timer
/// per new connection; nothing per request.
#[derive(Debug, Clone)]
pub(super) struct Bounded<C> {
    inner: C,
    within: Duration,
}

type Opening<R> = Pin<Box<dyn Future<Output = Result<R, BoxError>> + Send>>;

impl<C> tower::Service<http::Uri> for Bounded<C>
where
    C: tower::Service<http::Uri>,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Opening<C::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let within = self.within;
        let opening = self.inner.call(uri);
        Box::pin(async move {
            match tokio::time::timeout(within, opening).await {
                Ok(opened) => opened.map_err(Into::into),
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "TLS connection not established within connect_timeout ({})",
                        humantime::format_duration(within)
                    ),
                )
                .into()),
            }
        })
    }
}

/// Where a target's connector dials: the resolved address, or the name through the system's
/// resolver (an endpoint not resolved yet, or an IP literal).
#[derive(Clone)]
pub(super) enum Dial {
    Fixed(SocketAddr),
    System(GaiResolver),
}

impl std::fmt::Debug for Dial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dial::Fixed(a) => write!(f, "Dial::Fixed({a})"),
            Dial::System(_) => f.write_str("Dial::System"),
        }
    }
}

type Addrs = std::vec::IntoIter<SocketAddr>;
type DialFuture = Pin<Box<dyn Future<Output = Result<Addrs, std::io::Error>> + Send>>;

impl tower::Service<Name> for Dial {
    type Response = Addrs;
    type Error = std::io::Error;
    type Future = DialFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        match self {
            Dial::Fixed(addr) => Box::pin(std::future::ready(Ok(vec![*addr].into_iter()))),
            Dial::System(gai) => {
                let lookup = gai.call(name);
                Box::pin(async move { Ok(lookup.await?.collect::<Vec<_>>().into_iter()) })
            }
        }
    }
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
