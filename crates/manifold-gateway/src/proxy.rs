//! Pass-through routes: forward the request as it is and stream both bodies.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and the headers it names, `Keep-Alive`,
//! `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-*`) belong to one connection and are
//! dropped in both directions; `Host` becomes the upstream's, with the client's in
//! `X-Forwarded-Host`. The client's address is appended to `X-Forwarded-For` (as nginx's
//! `$proxy_add_x_forwarded_for` and Envoy do: an upstream trusts only the entries added by
//! proxies it trusts, the last one being the address Manifold saw), and `X-Forwarded-Proto`
//! says `http` unless a proxy in front (one terminating TLS, say) already said otherwise.

use crate::client::{Body, UpstreamClient};
use crate::error::{CallError, CallErrorKind};
use crate::exec::DEADLINE_HEADER;
use crate::handler::{box_err, call_error_response};
use crate::server::ClientAddr;
use http::header::{HeaderName, HeaderValue, CONNECTION, HOST};
use http::{HeaderMap, Request, Response, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::time::Instant;

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

pub(crate) async fn forward(
    client: &UpstreamClient,
    req: Request<Incoming>,
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
    if let Some(ClientAddr(peer)) = parts.extensions.get::<ClientAddr>().copied() {
        add_forwarded_for(&mut parts.headers, peer.ip());
    }
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
    Response::from_parts(parts, body.map_err(box_err).boxed())
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
