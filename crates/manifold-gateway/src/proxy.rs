//! Pass-through routes: forward the request as it is and stream both bodies.
//!
//! The path forwarded is the routed path normalized, and refused (400) when it would leave the
//! route (see [`path`](crate::path)). Hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and the
//! headers it names, `Keep-Alive`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-*`)
//! belong to one connection and are dropped in both directions, and so is `Expect`, which hyper
//! answers itself; `Host` becomes the upstream's and the `X-Forwarded-*` headers are set as
//! [`forwarded`](crate::forwarded) explains. The client's body is capped as it streams (see
//! [`proxy_body`](crate::proxy_body)).
//!
//! The answer's body is streamed, and it must keep moving: each wait for more of it is bounded by
//! the upstream's `timeout` (as nginx's `proxy_read_timeout` bounds each read), and the whole
//! answer by the route's deadline. Past either, the stream is cut (the client sees the connection
//! or stream end early: the status line has already gone out), so a stalled upstream cannot hold
//! a client connection forever.

use crate::error::{BoxError, CallError, CallErrorKind};
use crate::handler::{box_err, call_error_response, json_response};
use crate::path;
use crate::proxy_body::{BodyFault, Capped};
use crate::telemetry::CallTrace;
use crate::upstream::{Body, Budget, Upstream};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONNECTION, COOKIE, EXPECT};
use http::uri::PathAndQuery;
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use manifold_config::{EscapedSlashes, Route, RouteKind, ServerSettings};
use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Whether `name` is one of [`HOP_BY_HOP`] or `Upgrade`. The standard names compare as enum
/// values, the two others by their text: no parsing, no hashing.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    use http::header::{
        PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
    };
    name == CONNECTION
        || name == TE
        || name == TRAILER
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name == PROXY_AUTHENTICATE
        || name == PROXY_AUTHORIZATION
        || matches!(name.as_str(), "keep-alive" | "proxy-connection")
}

/// Remove hop-by-hop headers, including those the `Connection` header names.
///
/// Why the scan first: most requests and answers carry none of them, and removing nine names
/// from a map that holds none still parses and hashes each name (callgrind: 5,400 instructions
/// per proxied request, for the request and the answer, 6 % of the gateway's work); one pass
/// over the few names present costs a tenth of that.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Split as bytes, not as text: a value with one obs-text byte (which hyper accepts) is not
    // `str`, and skipping it whole forwarded every header it names.
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|n| HeaderName::from_bytes(n.trim_ascii()).ok())
        // `Host` is for every hop (RFC 9110 §7.6.1 forbids naming it): removed here, the
        // upstream would be told no `X-Forwarded-Host` and a cached route keyed on the host it
        // was not sent.
        .filter(|n| n != http::header::HOST)
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
    headers.remove(http::header::UPGRADE);
}

/// Join an HTTP/2 request's `Cookie` fields into one, with `; ` (RFC 9113 §8.2.3: an HTTP/2
/// client may send each cookie as its own field, and they MUST be one before an HTTP/1.1 hop).
/// Why: an HTTP/1.1 upstream may read only the first `Cookie` line, and so lose the session
/// cookie the client sent second.
fn fold_cookies(headers: &mut HeaderMap) {
    let mut all = headers.get_all(COOKIE).iter();
    if all.next().is_none() || all.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for v in &headers.get_all(COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, v);
    }
}

/// Forward `req` from the client at `peer`, routed to `route`, through `client`'s upstream
/// stack; its attempts' trace context, if any, is in the request's extensions.
pub(crate) async fn forward(
    client: &Arc<Upstream>,
    route: &Route,
    server: &ServerSettings,
    req: Request<Incoming>,
    peer: SocketAddr,
    deadline: Option<Instant>,
) -> Response<Body> {
    forward_traced(client, route, server, req, peer, deadline, None).await
}

/// [`forward`], with the attempts' trace context handed beside the request (`None`: they look
/// in its extensions).
pub(crate) async fn forward_traced(
    client: &Arc<Upstream>,
    route: &Route,
    server: &ServerSettings,
    req: Request<Incoming>,
    peer: SocketAddr,
    deadline: Option<Instant>,
    trace: Option<CallTrace>,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let escaped = match &route.kind {
        RouteKind::Proxy {
            escaped_slashes: EscapedSlashes::Keep,
            ..
        } => path::EscapedSlashes::Keep,
        _ => path::EscapedSlashes::Reject,
    };
    // The path that was routed is the path forwarded, resolved: never one that leaves the
    // route (see `path`). The query goes as it is.
    let normal = match path::normalized(parts.uri.path(), &route.path, escaped) {
        Ok(p) => p,
        Err(e) => {
            // The client's fault: debug, as every refused request (`respond::log_answer`).
            let path = manifold_telemetry::recorded_path(parts.uri.path());
            tracing::debug!(route = %route.name, %peer, path, reason = %e, "proxy path refused");
            return json_response(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"error": {"kind": "bad_path", "message": e.to_string()}}),
            );
        }
    };
    // A path already in normal form (the common case) goes as it came, with its query: the
    // request's own bytes (a reference count), not a copy into a new string.
    let pq = match (&normal, parts.uri.path_and_query()) {
        (Cow::Borrowed(_), Some(pq)) => Ok(pq.clone()),
        _ => {
            let mut path = normal.into_owned();
            if let Some(q) = parts.uri.query() {
                path.push('?');
                path.push_str(q);
            }
            PathAndQuery::try_from(path)
        }
    };
    // Origin form: the upstream stack picks the endpoint and makes it absolute.
    let uri = match pq {
        Ok(pq) => Uri::from(pq),
        Err(e) => {
            return call_error_response(
                CallError::new(
                    CallErrorKind::Input,
                    format!("cannot build the upstream URL: {e}"),
                ),
                server.error_detail,
            )
        }
    };
    // `Transfer-Encoding` is hop-by-hop: only a request with one of those (rare) is looked at
    // for it, so the common request pays one pass over its names, not a lookup more.
    if parts.headers.keys().any(is_hop_by_hop) {
        if has_foreign_transfer_coding(&parts.headers) {
            return foreign_coding_response();
        }
        strip_hop_by_hop(&mut parts.headers);
    }
    // hyper answers `Expect: 100-continue` itself when the body is first read; forwarded too,
    // the upstream would answer it a second time (RFC 9110 §10.1.1: a proxy either).
    parts.headers.remove(EXPECT);
    // Room, at once, for what the way upstream adds: hyper sized the map for the client's
    // headers, and adding ours one by one grew it at each power of two it crossed (a grow is
    // two allocations and a rehash of every header).
    parts.headers.reserve(PROXY_ADDS);
    crate::forwarded::apply(
        &mut parts.headers,
        peer.ip(),
        parts.uri.authority(),
        &server.trusted_proxies,
        parts.extensions.get::<crate::tls::OverTls>().is_some(),
    );
    parts.uri = uri;
    let h2 = parts.version == http::Version::HTTP_2;
    if h2 {
        fold_cookies(&mut parts.headers);
    }
    parts.version = http::Version::HTTP_11;
    // The upstream is told its budget only when the route (or the caller) set a deadline.
    let budget = Budget {
        deadline,
        timeout: None,
        announce: deadline.is_some(),
        idempotent: None,
        connect_only: false,
    };
    // A request without a body (most are) has nothing to cap: no counter, no fault slot and
    // no box for it (an empty body is sent as such, and never fails).
    let (body, fault) = if http_body::Body::is_end_stream(&body) {
        (crate::handler::empty(), None)
    } else {
        // The wait stays in the extensions for the attempts: one that times out while the
        // client is still sending is not its endpoint's failure.
        let meter = parts
            .extensions
            .get::<crate::limit::ClientWait>()
            .map_or_else(crate::limit::WaitMeter::none, |w| w.meter());
        let (capped, fault) = Capped::new(body, server.max_body_bytes, meter);
        (BodyExt::boxed(capped), Some(fault))
    };
    let request = Request::from_parts(parts, body);
    let response = match client.send(request, budget, trace).await {
        Ok(r) => r,
        Err(e) => {
            return match fault.as_ref().and_then(|f| f.get()) {
                Some(f) => body_fault_response(f, route, peer),
                None => call_error_response(e, server.error_detail),
            }
        }
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = Watched::new(body, client, deadline);
    if h2 {
        // One stream its client stops reading must not hold the upstream connection while the
        // HTTP/2 connection goes on: see `stream_send`.
        let from: Arc<dyn std::fmt::Display + Send + Sync> = Arc::clone(client) as _;
        let body = crate::stream_send::StreamWatched::new(body, server.send_timeout, from);
        return Response::from_parts(parts, BodyExt::boxed(body));
    }
    Response::from_parts(parts, BodyExt::boxed(body))
}

/// Headers a proxied request may gain on its way upstream: `X-Forwarded-For`, `-Proto`,
/// `-Host`, `X-Request-Id`, `traceparent`, `Via`, `Manifold-Deadline-Ms` and the endpoint's
/// `Host`.
const PROXY_ADDS: usize = 8;

/// Whether the request's `Transfer-Encoding` names a coding besides `chunked` (`gzip,
/// chunked`, say). hyper takes such a request and undoes only the chunking, so its body is
/// still gzip'd; `Transfer-Encoding` is hop-by-hop and dropped, so the upstream would get the
/// coded bytes with nothing saying they are coded. RFC 9112 §6.1: answer 501 instead.
fn has_foreign_transfer_coding(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case(b"chunked"))
}

/// 501 for a transfer coding the gateway cannot pass on ([`has_foreign_transfer_coding`]).
/// The body is not read, so the connection is closed after the answer.
fn foreign_coding_response() -> Response<Body> {
    let mut resp = json_response(
        StatusCode::NOT_IMPLEMENTED,
        &serde_json::json!({"error": {"kind": "transfer_coding", "message": "the request's Transfer-Encoding names a coding other than chunked; send the body chunked or with Content-Length (a content coding belongs in Content-Encoding)"}}),
    );
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// The client's answer when its own body stopped the forwarding (the upstream request was
/// abandoned). The rest of the body is unread, so the connection cannot be reused.
fn body_fault_response(fault: &BodyFault, route: &Route, peer: SocketAddr) -> Response<Body> {
    let (status, kind, message) = match fault {
        BodyFault::TooLarge(limit) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        ),
        BodyFault::Client(detail) => {
            // hyper's wording is for us, not for the client.
            tracing::info!(route = %route.name, %peer, error = %detail, "the request body could not be read; upstream request abandoned");
            (
                StatusCode::BAD_REQUEST,
                "bad_body",
                "the request body could not be read (malformed chunked encoding?)".to_owned(),
            )
        }
    };
    let mut resp = json_response(
        status,
        &serde_json::json!({"error": {"kind": kind, "message": message}}),
    );
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// A streamed answer that must keep moving: an error once `idle` passes with no new frame, or
/// once `deadline` passes. The idle timer is made the first time the body has to wait (a small
/// answer that arrived with its head never does: no timer, no allocation for it), and then moved
/// on only when it fires early (the time of the last frame is kept instead), so a fast body
/// costs no timer work per frame.
///
/// It holds hyper's body itself, not a boxed one: its errors are boxed as they come (none, on
/// the common path), which saves an allocation per answer.
struct Watched {
    inner: Incoming,
    idle: Duration,
    last_frame: Instant,
    idle_timer: Option<Pin<Box<Sleep>>>,
    deadline: Option<Pin<Box<Sleep>>>,
    /// For the error's message only: shared, not copied for every answer.
    upstream: Arc<Upstream>,
    done: bool,
}

impl Watched {
    fn new(inner: Incoming, upstream: &Arc<Upstream>, deadline: Option<Instant>) -> Self {
        let now = Instant::now();
        let idle = upstream.timeout;
        Watched {
            inner,
            idle,
            last_frame: now,
            idle_timer: None,
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
            upstream: Arc::clone(upstream),
            done: false,
        }
    }

    fn cut(
        &mut self,
        kind: CallErrorKind,
        why: String,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        tracing::warn!(upstream = %self.upstream.name, kind = kind.as_str(), "{why}; the answer was cut short");
        Poll::Ready(Some(Err(Box::new(CallError::new(kind, why)))))
    }
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        // The deadline first: an upstream streaming without pause must not outlast it either.
        if let Some(d) = this.deadline.as_mut() {
            if d.as_mut().poll(cx).is_ready() {
                let why = format!(
                    "the route's deadline passed while upstream `{}` was still sending its answer",
                    this.upstream.name
                );
                return this.cut(CallErrorKind::Deadline, why);
            }
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(frame)) => {
                // The last frame (all of a small answer, which comes with its head) is followed
                // by no wait: no clock read for it.
                if !this.inner.is_end_stream() {
                    this.last_frame = Instant::now();
                }
                return Poll::Ready(Some(frame.map_err(box_err)));
            }
            Poll::Ready(None) => {
                this.done = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        let due = this.last_frame + this.idle;
        let timer = this
            .idle_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = this.last_frame + this.idle;
            if due <= Instant::now() {
                let why = format!(
                    "upstream `{}` sent nothing more of its answer for {}",
                    this.upstream.name,
                    humantime::format_duration(this.idle)
                );
                return this.cut(CallErrorKind::Timeout, why);
            }
            // Frames came since the timer was armed: move it on and wait again.
            timer.as_mut().reset(due);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h.get("x-kept").unwrap(), "yes");
    }

    #[test]
    fn every_hop_by_hop_header_alone_is_stripped() {
        for name in HOP_BY_HOP.iter().chain(&["upgrade"]) {
            let mut h = HeaderMap::new();
            h.insert(*name, HeaderValue::from_static("x"));
            h.insert("x-kept", HeaderValue::from_static("yes"));
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name} was kept");
            assert!(h.contains_key("x-kept"), "{name}");
        }
        // A `Connection` that names a header takes that header with it.
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn only_chunked_is_a_transfer_coding_the_proxy_passes_on() {
        let coded = |values: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("transfer-encoding", HeaderValue::from_static(v));
            }
            has_foreign_transfer_coding(&h)
        };
        assert!(!coded(&[]));
        assert!(!coded(&["chunked"]));
        assert!(!coded(&["Chunked"]));
        assert!(coded(&["gzip, chunked"]));
        assert!(coded(&["gzip", "chunked"]));
        assert!(coded(&["deflate,chunked"]));
    }

    #[test]
    fn a_connection_value_cannot_take_the_host() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("host, x-private"));
        h.insert("host", HeaderValue::from_static("shop.example"));
        h.insert("x-private", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["host"], "shop.example");
    }

    #[test]
    fn a_connection_value_with_obs_text_still_takes_the_headers_it_names() {
        let mut h = HeaderMap::new();
        let value = HeaderValue::from_bytes(b"x-private, caf\xe9").unwrap();
        h.insert("connection", value);
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert!(!h.contains_key("x-private"), "{h:?}");
        assert_eq!(h.len(), 1, "{h:?}");
    }
}
