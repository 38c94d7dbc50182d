//! Pass-through routes: forward the request as it is and stream both bodies.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and the headers it names, `Keep-Alive`,
//! `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-*`) belong to one connection and are
//! dropped in both directions; `Host` becomes the upstream's, with the client's in
//! `X-Forwarded-Host`. The client's address is appended to `X-Forwarded-For` (as nginx's
//! `$proxy_add_x_forwarded_for` and Envoy do: an upstream trusts only the entries added by
//! proxies it trusts, the last one being the address Manifold saw), and `X-Forwarded-Proto`
//! says `http` unless a proxy in front (one terminating TLS, say) already said otherwise.
//!
//! The answer's body is streamed, and it must keep moving: each wait for more of it is bounded by
//! the upstream's `timeout` (as nginx's `proxy_read_timeout` bounds each read), and the whole
//! answer by the route's deadline. Past either, the stream is cut (the client sees the connection
//! or stream end early: the status line has already gone out), so a stalled upstream cannot hold
//! a client connection forever.

use crate::client::{Body, UpstreamClient};
use crate::error::{BoxError, CallError, CallErrorKind};
use crate::exec::DEADLINE_HEADER;
use crate::handler::{box_err, call_error_response};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONNECTION, HOST};
use http::{HeaderMap, Request, Response, Uri};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
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

/// Remove hop-by-hop headers, including those the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
    headers.remove(http::header::UPGRADE);
}

/// Forward `req` from the client at `peer` to `client`'s upstream.
pub(crate) async fn forward(
    client: &Arc<UpstreamClient>,
    req: Request<Incoming>,
    peer: SocketAddr,
    deadline: Option<Instant>,
    max_body: u64,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let ep = client.endpoint();
    let pq = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let uri: Uri = match format!("http://{}{}{}", ep.authority, ep.base_path, pq).parse() {
        Ok(u) => u,
        Err(e) => {
            return call_error_response(CallError::new(
                CallErrorKind::Input,
                format!("cannot build the upstream URL: {e}"),
            ))
        }
    };
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    if let Some(host) = parts.headers.remove(HOST) {
        parts
            .headers
            .insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    add_forwarded_for(&mut parts.headers, peer.ip());
    parts
        .headers
        .entry(HeaderName::from_static("x-forwarded-proto"))
        .or_insert(HeaderValue::from_static("http"));
    let now = Instant::now();
    let own = now + client.timeout;
    let (until, kind) = match deadline {
        Some(d) if d < own => (d, CallErrorKind::Deadline),
        _ => (own, CallErrorKind::Timeout),
    };
    if deadline.is_some() {
        parts.headers.insert(
            HeaderName::from_static(DEADLINE_HEADER),
            HeaderValue::from(until.saturating_duration_since(now).as_millis() as u64),
        );
    }
    let body: Body = Limited::new(body, max_body as usize)
        .map_err(box_err)
        .boxed();
    let request = Request::from_parts(parts, body);
    let response = match tokio::time::timeout_at(until, client.send(request)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return call_error_response(e),
        Err(_) => {
            return call_error_response(CallError::new(
                kind,
                format!("no answer from upstream `{}` in time", client.name),
            ))
        }
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = Watched::new(body.map_err(box_err).boxed(), client, deadline);
    Response::from_parts(parts, BodyExt::boxed(body))
}

/// A streamed answer that must keep moving: an error once `idle` passes with no new frame, or
/// once `deadline` passes. The idle timer is armed once and moved on only when it fires early
/// (the time of the last frame is kept instead), so a fast body costs no timer work per frame.
struct Watched {
    inner: Body,
    idle: Duration,
    last_frame: Instant,
    idle_timer: Pin<Box<Sleep>>,
    deadline: Option<Pin<Box<Sleep>>>,
    /// For the error's message only: shared, not copied for every answer.
    upstream: Arc<UpstreamClient>,
    done: bool,
}

impl Watched {
    fn new(inner: Body, upstream: &Arc<UpstreamClient>, deadline: Option<Instant>) -> Self {
        let now = Instant::now();
        let idle = upstream.timeout;
        Watched {
            inner,
            idle,
            last_frame: now,
            idle_timer: Box::pin(tokio::time::sleep_until(now + idle)),
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
                this.last_frame = Instant::now();
                return Poll::Ready(Some(frame));
            }
            Poll::Ready(None) => {
                this.done = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        loop {
            if this.idle_timer.as_mut().poll(cx).is_pending() {
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
            this.idle_timer.as_mut().reset(due);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Append `ip` to `X-Forwarded-For`, folding the client's own entries (one header or several)
/// into one list in order.
fn add_forwarded_for(headers: &mut HeaderMap, ip: std::net::IpAddr) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let mut list: Vec<&str> = headers
        .get_all(&xff)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let ip = ip.to_string();
    list.push(&ip);
    if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
        headers.insert(xff, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_appends_the_client_address() {
        let ip: std::net::IpAddr = "127.0.0.7".parse().unwrap();
        let mut h = HeaderMap::new();
        add_forwarded_for(&mut h, ip);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "127.0.0.7");
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("10.0.0.2, 10.0.0.3"),
        );
        add_forwarded_for(&mut h, "::1".parse().unwrap());
        let all: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
        assert_eq!(all, ["10.0.0.1, 10.0.0.2, 10.0.0.3, ::1"]);
    }

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
}
