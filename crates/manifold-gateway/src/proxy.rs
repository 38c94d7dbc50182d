//! Pass-through routes: forward the request as it is and stream both bodies.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and the headers it names, `Keep-Alive`,
//! `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-*`) belong to one connection and are
//! dropped in both directions; `Host` becomes the upstream's, with the client's in
//! `X-Forwarded-Host`.

use crate::client::{Body, UpstreamClient};
use crate::error::{CallError, CallErrorKind};
use crate::exec::DEADLINE_HEADER;
use crate::handler::{box_err, call_error_response};
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
}
