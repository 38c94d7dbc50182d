//! One client request: route it, then compose (run the plan and render the response) or proxy.

use crate::cache::{CacheOutcome, Caching, CACHE_HEADER};
use crate::error::{CallError, CallErrorKind};
use crate::exec::{self, DEADLINE_HEADER};
use crate::proxy;
use crate::render::{RequestCtx, Scope};
use crate::upstream::{Body, Upstream};
use http::header::{HeaderName, HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use manifold_config::{Config, Route, RouteKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

mod answers;
mod cached;

use crate::read_body::read_whole;
use answers::parse_refused;
pub(crate) use answers::{
    box_err, call_error_body, call_error_response, empty, error_response, failure_response, full,
    json_response,
};
use cached::cached_route;

/// [`DEADLINE_HEADER`] as a name made once: looked up by its text, the name would be parsed
/// and checked against every standard header's on each request (callgrind: ~300 instructions).
const DEADLINE_NAME: HeaderName = HeaderName::from_static(DEADLINE_HEADER);

/// The header naming optional calls that failed (their results are `null`).
pub const PARTIAL_HEADER: &str = "manifold-partial";

/// Everything a request needs, shared by all connections.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) router: crate::router::Router,
    pub(crate) clients: Vec<Arc<Upstream>>,
    pub(crate) caching: Caching,
    /// The durable queue for async calls (none when no route offloads).
    pub(crate) queue: Option<crate::offload::QueueRef>,
    /// Counters of faults that fail no request (read by `Gateway::stats`).
    pub(crate) stats: Arc<crate::respond::Stats>,
    /// `[server] concurrency`: every request takes a permit before any work.
    pub(crate) limit: Arc<crate::limit::Limiter>,
    /// `[server] max_parsed_bytes`: what parsed request bodies may take at once.
    pub(crate) parse_budget: Arc<crate::limit::ParseBudget>,
    /// Spans, metrics and the access log.
    pub(crate) telemetry: crate::telemetry::Telemetry,
    /// `GET {status_path}/{task_id}`: how clients follow offloaded calls.
    pub(crate) follow: crate::status::Follow,
}

/// Handle one request. Never fails: every problem becomes an HTTP answer.
/// `peer`: the client's address; `client_id`: its `X-Request-Id`, as the connection read it.
/// Past the concurrency limit the answer is 503 at once.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: SocketAddr,
    client_id: crate::respond::ClientId,
) -> Result<Response<Body>, std::convert::Infallible> {
    let mut req = req;
    let limit = shared.config.server.loop_limit;
    if crate::via::passes(req.headers(), limit) >= limit {
        // Before the concurrency limit: a loop must not take the slots of the requests it
        // would crowd out.
        let mut resp = error_response(
            StatusCode::LOOP_DETECTED,
            "loop",
            format!(
                "this request has already passed through Manifold {limit} times (its Via \
                 header): an upstream leads back to a gateway; see server.loop_limit"
            ),
        );
        shared
            .telemetry
            .rejected(&req, peer.ip(), crate::telemetry::Reason::Loop, &mut resp);
        return Ok(resp);
    }
    let Some(mut permit) = shared.limit.try_acquire() else {
        let mut resp = crate::respond::shed(shared.limit.limit());
        shared
            .telemetry
            .rejected(&req, peer.ip(), crate::telemetry::Reason::Shed, &mut resp);
        return Ok(resp);
    };
    if let Some(id) = shared.router.status_id(req.uri().path()) {
        // A status read is cheap, and a long poll is idle by design: neither holds a
        // concurrency slot nor feeds its duration to the adaptive limit (connections bound them).
        permit.release();
        let queue = shared.queue.as_ref().map(|q| q.0.as_ref());
        // Boxed, as the cached and composed routes below: see `routed`.
        let read = shared.telemetry.status_read();
        let detail = shared.config.server.error_detail;
        let answer = crate::status::answer(queue, &shared.follow, &req, id, detail);
        let mut resp = Box::pin(answer).await;
        read.finish(&req, &mut resp);
        return Ok(resp);
    }
    // The time spent waiting on the client's body is the client's, not the gateway's: its
    // reader (compose's, or the proxy's on the way upstream) counts it out of the latency the
    // adaptive limit measures, and out of Manifold's own time in the trace store. A request
    // without a body (most) has nothing to count.
    let wait = (!http_body::Body::is_end_stream(req.body())).then(|| {
        let wait = permit.client_wait();
        req.extensions_mut().insert(wait.clone());
        wait
    });
    let (resp, ended) = route(
        shared,
        req,
        peer,
        permit.started(),
        client_id,
        wait.as_ref(),
    )
    .await;
    match ended {
        Ended::Routed(at) => permit.finish(at),
        // A path or method no route serves is answered in microseconds, and any client may
        // send as many as it likes: fed to the adaptive limit, a flood of them pulls its
        // baseline down to their latency (it falls by half a window's gap per window), after
        // which routed requests look many times too slow and, while the runtime is busy, the
        // limit falls toward its floor (see `limit::gradient`'s test of it).
        Ended::Unrouted => permit.release(),
    }
    Ok(resp)
}

/// Route the request admitted at `started` (its client's id `client_id`; `wait`, its wait on
/// its body, if it has one) and answer it; with the answer, when it ended if
/// telemetry read the clock for that (then the limiter need not read it again).
async fn route(
    shared_arc: Arc<Shared>,
    req: Request<Incoming>,
    peer: SocketAddr,
    started: Instant,
    client_id: crate::respond::ClientId,
    wait: Option<&crate::limit::ClientWait>,
) -> (Response<Body>, Ended) {
    let shared = &*shared_arc;
    // The match borrows the path while the request moves on: a clone of the `Uri` shares the
    // parsed bytes (a reference count), where `to_owned` copied the path into a new `String`.
    let uri = req.uri().clone();
    let path = uri.path();
    let matched = match shared.router.at(path) {
        Some(m) => m,
        None => {
            let mut resp = error_response(
                StatusCode::NOT_FOUND,
                "no_route",
                format!("no route matches {path}"),
            );
            shared.telemetry.rejected(
                &req,
                peer.ip(),
                crate::telemetry::Reason::NoRoute,
                &mut resp,
            );
            return (resp, Ended::Unrouted);
        }
    };
    let route_for = |m: &http::Method| {
        matched
            .value
            .iter()
            .copied()
            .find(|&i| shared.config.routes[i].method == *m)
    };
    // HEAD is served by the GET route where there is no HEAD route of its own (RFC 9110 §9.3.2):
    // the route runs as for GET (a proxy route forwards HEAD as it is) and hyper sends the
    // headers without the body.
    let found = route_for(req.method()).or_else(|| {
        (req.method() == http::Method::HEAD)
            .then(|| route_for(&http::Method::GET))
            .flatten()
    });
    let Some(ri) = found else {
        let mut allow: Vec<&str> = matched
            .value
            .iter()
            .map(|&i| shared.config.routes[i].method.as_str())
            .collect();
        if allow.contains(&"GET") && !allow.contains(&"HEAD") {
            allow.push("HEAD");
        }
        let mut resp = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!(
                "{} is not allowed on {path}; allowed: {}",
                req.method(),
                allow.join(", ")
            ),
        );
        if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
            resp.headers_mut().insert(ALLOW, v);
        }
        shared.telemetry.rejected(
            &req,
            peer.ip(),
            crate::telemetry::Reason::MethodNotAllowed,
            &mut resp,
        );
        return (resp, Ended::Unrouted);
    };
    let params = crate::router::params(&matched.params);
    let mut req = req;
    let mut recording = shared
        .telemetry
        .start(ri, &mut req, started, client_id, peer.ip());
    let call = recording
        .as_mut()
        .and_then(crate::telemetry::Recording::take_call);
    let mut resp = routed(Arc::clone(&shared_arc), ri, params, req, peer, call).await;
    let ended = recording.map(|rec| shared_arc.telemetry.finish(rec, &mut resp, wait));
    (resp, Ended::Routed(ended))
}

/// How a request's answer came about, for the concurrency limit.
enum Ended {
    /// A route answered; when, if telemetry read the clock for it.
    Routed(Option<Instant>),
    /// No route matched the path, or none serves the method.
    Unrouted,
}

/// A request whose route is `ri`.
///
/// Why the cached and composed routes' futures are boxed: hyper moves each request's whole
/// service future into its connection's slot, and an `async fn` is as large as its largest
/// branch. Inline, the cache and the plan executor made a proxied request's future about 13 KB,
/// copied per request (callgrind: 13,347 instructions per proxied request in the `memcpy` under
/// hyper's `recv_msg`); boxed, 9,254 — the proxy path's own future is still about 9 KB. A
/// composed request pays one allocation for it, beside its dozens.
///
/// `call`: a proxy route's trace context (see [`crate::telemetry::Recording::take_call`]).
async fn routed(
    shared_arc: Arc<Shared>,
    ri: usize,
    params: Vec<String>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    call: Option<crate::telemetry::CallTrace>,
) -> Response<Body> {
    let shared = &*shared_arc;
    let route = &shared.config.routes[ri];
    let deadline = effective_deadline(route, req.headers());
    // An answer the gateway made for an HTTP/2 stream must not be held for ever by a client
    // that never reads it (see `stream_send`); a proxied one is bounded by the proxy.
    let h2 = req.version() == http::Version::HTTP_2;
    let send_timeout = shared.config.server.send_timeout;

    // Refuse an oversized body before reading any of it.
    let max_body = shared.config.server.max_body_bytes;
    if let Some(len) = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > max_body {
            let mut resp = error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is {len} bytes; the limit is {max_body}"),
            );
            resp.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
    }

    if let Some(policy) = &shared.caching.routes[ri] {
        // The cache forwards the request as it is: its fill's attempts find the context there.
        if let Some(call) = call {
            req.extensions_mut().insert(call);
        }
        let policy = Arc::clone(policy);
        let composed = matches!(route.kind, RouteKind::Compose(_));
        let keep = Arc::clone(&shared_arc);
        let cached = cached_route(shared_arc, ri, policy, params, req, peer, deadline);
        let mut resp = Box::pin(cached).await;
        if composed {
            // A cached answer loses its cause; a composed route's 5xx is always the gateway's.
            crate::respond::ErrorCause::or_default(&mut resp, &keep.config.routes[ri].name);
        }
        if h2 {
            resp =
                crate::stream_send::made_answer(resp, send_timeout, &keep.config.routes[ri].name);
        }
        return resp;
    }
    match &route.kind {
        RouteKind::Proxy { upstream, .. } => {
            let (client, server) = (&shared.clients[*upstream], &shared.config.server);
            proxy::forward_traced(client, route, server, req, peer, deadline, call).await
        }
        RouteKind::Compose(plan) => {
            let resp = Box::pin(compose(shared, ri, plan, params, req, deadline)).await;
            if h2 {
                return crate::stream_send::made_answer(resp, send_timeout, &route.name);
            }
            resp
        }
    }
}

/// Which part of a composed request (`"path"`, `"query"`) decodes to bytes that are not UTF-8.
///
/// Why: path parameters and query values are decoded lossily, so `%FF` and `%FE` would both
/// render as U+FFFD — the upstream would be sent a value the client never sent, and two
/// different requests would become one. A proxy route forwards the bytes as they came and is
/// not refused. The raw text is checked only when a decoded value holds U+FFFD (a client may
/// send that character itself, encoded as UTF-8): the common request pays one scan of its
/// decoded values. In the query only the parameters the plan reads (`reads`, sorted) are
/// judged: a tracking parameter in a legacy encoding that no template renders refuses nothing.
fn not_utf8(
    params: &[String],
    query: &[(String, String)],
    uri: &http::Uri,
    reads: &[String],
) -> Option<&'static str> {
    let replaced = |s: &String| s.contains(char::REPLACEMENT_CHARACTER);
    let invalid = |raw: &str| {
        percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .is_err()
    };
    if params.iter().any(replaced) && invalid(uri.path()) {
        return Some("path");
    }
    if !query.iter().any(|(k, v)| replaced(k) || replaced(v)) {
        return None;
    }
    let read = |pair: &str| {
        form_urlencoded::parse(pair.as_bytes())
            .next()
            .is_some_and(|(k, _)| reads.binary_search_by(|r| r.as_str().cmp(&k)).is_ok())
    };
    uri.query()
        .unwrap_or("")
        .split('&')
        .any(|pair| invalid(pair) && read(pair))
        .then_some("query")
}

fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    query
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// The route's deadline, tightened by a deadline the caller sent us (another gateway upstream).
/// The clock is read only when there is a deadline to set (a read is ~100 instructions, and
/// most proxied requests have neither).
fn effective_deadline(route: &Route, headers: &http::HeaderMap) -> Option<Instant> {
    let theirs = headers
        .get(DEADLINE_NAME)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if route.deadline.is_none() && theirs.is_none() {
        return None;
    }
    let now = Instant::now();
    let ours = route.deadline.map(|d| now + d);
    // The client's figure is any u64: one past what the clock can hold is no deadline at all
    // (not a panic; the route's own, if any, still holds).
    let theirs = theirs.and_then(|ms| now.checked_add(Duration::from_millis(ms)));
    match (ours, theirs) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn compose(
    shared: &Shared,
    ri: usize,
    plan: &manifold_config::Plan,
    params: Vec<String>,
    req: Request<Incoming>,
    deadline: Option<Instant>,
) -> Response<Body> {
    let route = &shared.config.routes[ri];
    let query = parse_query(req.uri().query());
    if let Some(part) = not_utf8(&params, &query, req.uri(), &plan.query_reads) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "bad_input",
            format!(
                "the request's {part} is not UTF-8 once percent-decoded, and route `{}` renders it as text",
                route.name
            ),
        );
    }
    // A header a template reads is text too (`{header.NAME}` reads its first value): bytes
    // that are no UTF-8 (Latin-1 `Jos\xE9`) read as missing would send the upstream a `null`
    // or an empty value the client never sent. Only the headers the route reads are looked at.
    if let Some(name) = plan.header_reads.iter().find(|n| {
        req.headers()
            .get(n.as_str())
            .is_some_and(|v| std::str::from_utf8(v.as_bytes()).is_err())
    }) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "bad_input",
            format!(
                "the request's `{name}` header is not UTF-8, and route `{}` renders it as text",
                route.name
            ),
        );
    }
    // A route that writes tasks checks the client's key before any call runs: refused later,
    // at the task, the calls before it had already acted, and the client's retry (with a key
    // it fixed) would act again.
    if plan
        .calls
        .iter()
        .any(|c| c.mode != manifold_config::Mode::Sync)
    {
        if let Err(why) = crate::queued::client_key(req.headers()) {
            return error_response(StatusCode::BAD_REQUEST, "bad_input", why);
        }
    }
    let (mut parts, body) = req.into_parts();
    let trace = parts.extensions.remove::<crate::telemetry::TraceCtx>();
    let meter = parts
        .extensions
        .remove::<crate::limit::ClientWait>()
        .map_or_else(crate::limit::WaitMeter::none, |w| w.meter());
    let body = crate::limit::Metered::new(body, meter);
    let mut ctx = RequestCtx {
        params,
        query,
        headers: parts.headers,
        body: serde_json::Value::Null,
    };
    // The request's share of `max_parsed_bytes`, held while its parsed body is.
    let mut _parsed_share = None;
    if plan.reads_request_body {
        let max = shared.config.server.max_body_bytes;
        // A client trickling its body must not hold the connection and this task forever:
        // the body has `body_read_timeout`, and never more than the route's deadline.
        let read_timeout = shared.config.server.body_read_timeout;
        let read_until = Instant::now() + read_timeout;
        let (until, deadline_bound) = match deadline {
            Some(d) if d < read_until => (d, true),
            _ => (read_until, false),
        };
        let read = tokio::time::timeout_at(until, read_whole(body, max as usize));
        let read = match read.await {
            Ok(read) => read,
            Err(_) if deadline_bound => {
                return failure_response(
                    &route.name,
                    Vec::new(),
                    CallError::new(
                        CallErrorKind::Deadline,
                        "the route's deadline passed while the request body was still arriving",
                    ),
                    shared.config.server.error_detail,
                )
            }
            Err(_) => {
                let mut resp = error_response(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!(
                        "the request body did not arrive within {} (server.body_read_timeout)",
                        humantime::format_duration(read_timeout)
                    ),
                );
                // The rest of the body is still on the way: this connection cannot be reused.
                resp.headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                return resp;
            }
        };
        let bytes = match read {
            Ok(b) => b,
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("the request body is larger than the limit of {max} bytes"),
                )
            }
            Err(e) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("could not read the request body: {e}"),
                )
            }
        };
        if !bytes.iter().all(u8::is_ascii_whitespace) {
            _parsed_share = match shared.parse_budget.take(&bytes) {
                Ok(share) => share,
                Err(refused) => return parse_refused(refused, shared),
            };
            match serde_json::from_slice(&bytes) {
                Ok(v) => ctx.body = v,
                Err(e) => {
                    return error_response(
                        StatusCode::BAD_REQUEST,
                        "bad_json",
                        format!(
                            "route `{}` reads the request body as JSON, and it is not: {e}",
                            route.name
                        ),
                    )
                }
            }
        }
    } else {
        drop(body);
    }

    let env = exec::Env {
        route: &route.name,
        error_detail: shared.config.server.error_detail,
        clients: &shared.clients,
        max_response_bytes: shared.config.server.max_response_bytes,
        cache: &shared.caching.cache,
        policies: &shared.caching.calls[ri],
        queue: shared.queue.as_ref().map(|q| &q.0),
        follow: &shared.follow,
        trace: trace.as_ref(),
        calls: shared.telemetry.calls(ri),
        parse_budget: &shared.parse_budget,
    };
    let outcome = match exec::execute(plan, env, &ctx, deadline).await {
        Ok(o) => o,
        Err(f) => {
            let detail = shared.config.server.error_detail;
            let mut resp = failure_response(&route.name, f.calls, f.error, detail);
            insert_cache_header(resp.headers_mut(), plan, &f.cache);
            return resp;
        }
    };

    let scope = Scope {
        req: &ctx,
        results: &outcome.results,
    };
    let bytes = match serde_json::to_vec(&scope.json(&plan.response.body)) {
        Ok(b) => b,
        Err(e) => {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "render",
                format!("cannot render the response: {e}"),
            )
        }
    };
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = StatusCode::from_u16(plan.response.status).unwrap_or(StatusCode::OK);
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut text = String::new();
    for (name, tpl) in &plan.response.headers {
        text.clear();
        scope.render_text(tpl, &mut text);
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&text),
        ) {
            (Ok(n), Ok(v)) => {
                headers.insert(n, v);
            }
            _ => shared.stats.header_render_failed(&route.name, name),
        }
    }
    if !outcome.partial.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&outcome.partial.join(", ")) {
            headers.insert(HeaderName::from_static(PARTIAL_HEADER), v);
        }
    }
    insert_cache_header(headers, plan, &outcome.cache);
    resp
}

/// `Manifold-Cache: user=hit, orders=miss` from the cached calls' outcomes, on success and
/// failure alike (a 502 whose cached calls were hits tells where the failure was not).
fn insert_cache_header(
    headers: &mut http::HeaderMap,
    plan: &manifold_config::Plan,
    outcomes: &[Option<CacheOutcome>],
) {
    let cached = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.map(|o: CacheOutcome| (plan.calls[i].name.as_str(), o)));
    if let Some(v) = crate::cache::header_value(cached) {
        headers.insert(HeaderName::from_static(CACHE_HEADER), v);
    }
}
