//! A route with `cache = { … }`: its answer from the cache, or from one shared run of the
//! route that the cache holds (moved out of `handler.rs`, which routes every request).

use super::PARTIAL_HEADER;
use super::{
    call_error_body, call_error_response, compose, error_response, failure_response, full, Shared,
};
use crate::cache::{HeldResponse, CACHE_HEADER};
use crate::error::{CallError, CallErrorKind};
use crate::proxy;
use crate::upstream::Body;
use bytes::Bytes;
use http::header::HeaderName;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use manifold_cache::{CachePolicy, CachedResponse};
use manifold_config::ErrorDetail;
use manifold_config::RouteKind;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A route with `cache = { … }`: the whole answer comes from the cache, or from one shared run
/// of the route (compose or proxy) that any concurrent requests for the same key wait for.
pub(super) async fn cached_route(
    shared: Arc<Shared>,
    ri: usize,
    policy: Arc<CachePolicy>,
    params: Vec<String>,
    req: Request<Incoming>,
    peer: SocketAddr,
    deadline: Option<Instant>,
) -> Response<Body> {
    let route = &shared.config.routes[ri];
    let Some(spec) = route.cache.as_ref() else {
        return error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "route cache policy missing",
        );
    };
    let proxied = matches!(route.kind, RouteKind::Proxy { .. });
    let vary_pass = shared.caching.vary_pass.get(ri);
    if crate::cache_key::route_bypass(route, spec, req.headers())
        || (proxied && vary_pass.is_some_and(|p| p.load(Ordering::Relaxed)))
    {
        return crate::cache::bypassed(&shared, ri, req, peer, deadline).await;
    }
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let (method, query) = (req.method().as_str(), req.uri().query());
    let forwarded = proxied.then(|| {
        crate::forwarded::host_and_proto(
            req.headers(),
            peer.ip(),
            req.uri().authority(),
            &shared.config.server.trusted_proxies,
            req.extensions().get::<crate::tls::OverTls>().is_some(),
        )
    });
    let key = crate::cache_key::route_key(
        route,
        spec,
        method,
        pq,
        &params,
        query,
        req.headers(),
        forwarded.as_deref(),
    );
    let runner = Arc::clone(&shared);
    // The request, taken by the fetch if this request's fetch runs; a request that waited on
    // another's fetch still has it here, to send itself when that answer was for one request.
    let own = Arc::new(std::sync::Mutex::new(Some(req)));
    let taken = Arc::clone(&own);
    // Shared by every request waiting for this key, so bounded by the route's own deadline and
    // the upstream timeouts, never by one client's.
    let fetch = move || -> RouteFetch {
        Box::pin(async move {
            // Never empty: the cache runs a fetch at most once, and the request is taken back
            // only after the cache answered.
            let Some(req) = take(&taken) else {
                return Err(held_error(
                    CallError::new(CallErrorKind::Io, "the route's request was already sent"),
                    runner.config.server.error_detail,
                ));
            };
            let route = &runner.config.routes[ri];
            let own_deadline = route.deadline.map(|d| Instant::now() + d);
            let max_response = runner.config.server.max_response_bytes;
            let detail = runner.config.server.error_detail;
            let (response, bound) = match &route.kind {
                RouteKind::Proxy { upstream, .. } => {
                    let client = &runner.clients[*upstream];
                    let server = &runner.config.server;
                    let r = proxy::forward(client, route, server, req, peer, own_deadline).await;
                    (r, own_deadline.unwrap_or(Instant::now() + client.timeout))
                }
                RouteKind::Compose(plan) => {
                    let r = compose(&runner, ri, plan, params, req, own_deadline).await;
                    (
                        r,
                        own_deadline.unwrap_or(Instant::now() + Duration::from_secs(30)),
                    )
                }
            };
            // A proxied answer that varies on what the key does not hold is answered, not kept,
            // and the route's next requests skip the cache (see `Caching::vary_pass`).
            let storable = !proxied
                || route
                    .cache
                    .as_ref()
                    .is_none_or(|spec| crate::cache_key::vary_covered(spec, response.headers()));
            if !storable {
                let first = runner
                    .caching
                    .vary_pass
                    .get(ri)
                    .is_some_and(|p| !p.swap(true, Ordering::Relaxed));
                if first {
                    let vary: Vec<&str> = response
                        .headers()
                        .get_all(http::header::VARY)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .collect();
                    tracing::warn!(
                        route = %route.name,
                        vary = %vary.join(", "),
                        "the upstream's answers vary on a request header the route's cache key \
                         does not hold: not stored, and the route's cache is bypassed until the \
                         config is reloaded; list the header in the route's `vary`"
                    );
                }
            }
            hold(response, max_response, bound, storable, detail).await
        })
    };
    let answer = match deadline {
        Some(d) => {
            tokio::time::timeout_at(d, shared.caching.cache.get_or_fetch(key, &policy, fetch))
                .await
                .ok()
        }
        None => Some(shared.caching.cache.get_or_fetch(key, &policy, fetch).await),
    };
    match answer {
        Some(Ok((cached, outcome))) => {
            let mut resp = cached_response(&cached);
            if let Some(v) = crate::cache::header_value([(route.name.as_str(), outcome)]) {
                resp.headers_mut()
                    .insert(HeaderName::from_static(CACHE_HEADER), v);
            }
            resp
        }
        Some(Err(held)) => match take(&own) {
            // Another request's answer, meant for that request alone: send our own, as if
            // there had been no fetch to wait on.
            Some(req) if proxied && held.for_one_request() => {
                crate::cache::bypassed(&shared, ri, req, peer, deadline).await
            }
            Some(_) => held.into_waiter_response(),
            None => held.into_response(),
        },
        None => failure_response(
            &route.name,
            Vec::new(),
            CallError::new(
                CallErrorKind::Deadline,
                "the route's deadline passed before its cached answer was ready",
            ),
            shared.config.server.error_detail,
        ),
    }
}

type RouteFetch = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<CachedResponse, HeldResponse>> + Send>,
>;

/// Read a route's answer into memory for the cache. An answer that must not be stored (a
/// partial composition, one that sets a cookie, one the caller found not `storable`, a body
/// over the limit) comes back as `Err`, answered to the waiting requests as it is and never
/// stored.
async fn hold(
    response: Response<Body>,
    max_response_bytes: u64,
    until: Instant,
    storable: bool,
    detail: ErrorDetail,
) -> Result<CachedResponse, HeldResponse> {
    let (parts, body) = response.into_parts();
    let body = match tokio::time::timeout_at(until, read_limited(body, max_response_bytes)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return Err(held_error(e, detail)),
        Err(_) => {
            return Err(held_error(
                CallError::new(
                    CallErrorKind::Timeout,
                    "the route's answer did not finish in time",
                ),
                detail,
            ))
        }
    };
    if !storable {
        return Err(HeldResponse::new(parts.status, parts.headers, body).chosen_for_one());
    }
    if parts.headers.contains_key(PARTIAL_HEADER)
        || parts.headers.contains_key(http::header::SET_COOKIE)
    {
        return Err(HeldResponse::new(parts.status, parts.headers, body));
    }
    // Every header: the cache keeps only those that describe the body when it stores the
    // answer, and an answer it does not store goes out as the upstream sent it.
    Ok(CachedResponse {
        status: parts.status,
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect(),
        body,
        stored_at: None,
        sets_cookie: parts.headers.contains_key(http::header::SET_COOKIE),
    })
}

/// Read a body up to `max` bytes. (Written out rather than `Limited`, whose boxed-error bound
/// trips a higher-ranked `Send` inference bug when the future is shared by the cache.)
async fn read_limited(mut body: Body, max: u64) -> Result<Bytes, CallError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            CallError::new(
                CallErrorKind::Io,
                format!(
                    "reading the route's answer: {}",
                    crate::upstream::error_chain(&*e)
                ),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > max {
                return Err(CallError::new(
                    CallErrorKind::TooLarge,
                    format!("the route's answer is larger than {max} bytes"),
                ));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// The request in `slot`, if still there.
fn take(slot: &std::sync::Mutex<Option<Request<Incoming>>>) -> Option<Request<Incoming>> {
    // The slot holds a plain value: a panic elsewhere cannot leave it half-written.
    match slot.lock() {
        Ok(mut s) => s.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    }
}

/// [`call_error_response`]'s answer, held for every request waiting on the key.
fn held_error(error: CallError, detail: ErrorDetail) -> HeldResponse {
    let json = call_error_body(&error, detail);
    let (parts, _) = call_error_response(error, detail).into_parts();
    let body = serde_json::to_vec(&json).unwrap_or_default();
    HeldResponse::new(parts.status, parts.headers, Bytes::from(body))
}

fn cached_response(cached: &CachedResponse) -> Response<Body> {
    let mut resp = Response::new(full(cached.body.clone()));
    *resp.status_mut() = cached.status;
    let headers = resp.headers_mut();
    for (name, value) in &cached.headers {
        headers.append(name.clone(), value.clone());
    }
    resp
}
