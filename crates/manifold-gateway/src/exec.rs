//! The eager DAG executor: every call starts the instant the calls it reads from are done.
//!
//! Scheduling is by counting. Each request owns a vector of result slots and a vector of
//! remaining-dependency counters copied from the plan; when a call finishes, its dependents'
//! counters drop and those reaching zero start at once, into one `FuturesUnordered`. Nothing
//! waits for a whole level, so a request costs its plan's critical path. Dropping the executor's
//! future (client gone, deadline passed, a required call failed) drops every call in flight,
//! which closes their upstream connections: the upstreams see the cancellation.

use crate::cache::CacheOutcome;
use crate::client::{Body, UpstreamClient};
use crate::error::{CallError, CallErrorKind};
use crate::render::{RequestCtx, Scope};
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use manifold_cache::{Cache, CachePolicy, CachedResponse};
use manifold_config::{Call, Plan};
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::time::Instant;

/// The header carrying the remaining end-to-end budget, in milliseconds, to each upstream.
pub const DEADLINE_HEADER: &str = "manifold-deadline-ms";

/// What the executor hands back to the composer.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Each call's result (`None` for calls that never ran, `Some(Null)` for failed optional
    /// calls).
    pub(crate) results: Vec<Option<Value>>,
    /// The names of optional calls that failed.
    pub(crate) partial: Vec<String>,
    /// Each cached call's outcome, by call index (`None` for uncached calls and cached calls
    /// that failed or never ran).
    pub(crate) cache: Vec<Option<CacheOutcome>>,
}

/// What the executor runs calls with, shared by every request.
#[derive(Clone, Copy)]
pub(crate) struct Env<'a> {
    /// One client per upstream.
    pub(crate) clients: &'a [Arc<UpstreamClient>],
    /// `server.max_response_bytes`.
    pub(crate) max_response_bytes: u64,
    /// The gateway's cache.
    pub(crate) cache: &'a Cache,
    /// This plan's calls' cache policies, by call index (empty when none is cached).
    pub(crate) policies: &'a [Option<Arc<CachePolicy>>],
    /// The durable queue, when some route has `mode = "async"` calls.
    pub(crate) queue: Option<&'a Arc<dyn manifold_queue::Queue>>,
}

/// A required call failed, or the deadline passed: what the client is told.
#[derive(Debug)]
pub(crate) struct Failure {
    /// The call(s) concerned.
    pub(crate) calls: Vec<String>,
    /// Why.
    pub(crate) error: CallError,
    /// The cached calls' outcomes so far, as in [`Outcome::cache`]: a failed request still
    /// says which of its calls the cache answered (`Manifold-Cache`).
    pub(crate) cache: Vec<Option<CacheOutcome>>,
}

type CallOutput = (usize, Result<Value, CallError>, Option<CacheOutcome>);
type CallFuture = Pin<Box<dyn Future<Output = CallOutput> + Send>>;

/// Run `plan` for one request.
pub(crate) async fn execute(
    plan: &Plan,
    env: Env<'_>,
    req: &RequestCtx,
    deadline: Option<Instant>,
) -> Result<Outcome, Failure> {
    let n = plan.calls.len();
    let mut remaining = plan.indegrees();
    let mut results: Vec<Option<Value>> = vec![None; n];
    let mut partial = Vec::new();
    let mut cache_outcomes: Vec<Option<CacheOutcome>> = Vec::new();
    let mut running: Vec<bool> = vec![false; n];
    let mut inflight: FuturesUnordered<CallFuture> = FuturesUnordered::new();

    for &i in &plan.roots {
        running[i] = true;
        let scope = Scope {
            req,
            results: &results,
        };
        inflight.push(start_call(i, &plan.calls[i], env, scope, deadline));
    }

    // One timer for the route's deadline, armed once: a `timeout_at` per loop turn would
    // register and cancel a timer every time a call finishes.
    let expiry = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    let mut expiry = std::pin::pin!(expiry);
    loop {
        let next = tokio::select! {
            // Prefer a finished call over the deadline when both are ready.
            biased;
            next = inflight.next() => Ok(next),
            () = &mut expiry => Err(()),
        };
        let next = match next {
            Ok(next) => next,
            Err(()) => {
                let outstanding = (0..n)
                    .filter(|&i| running[i] && results[i].is_none())
                    .map(|i| plan.calls[i].name.clone())
                    .collect();
                return Err(Failure {
                    calls: outstanding,
                    error: CallError::new(
                        CallErrorKind::Deadline,
                        "the route's deadline passed before these calls finished",
                    ),
                    cache: cache_outcomes,
                });
            }
        };
        let Some((i, result, cached)) = next else {
            break;
        };
        if let Some(o) = cached {
            if cache_outcomes.is_empty() {
                cache_outcomes = vec![None; n];
            }
            cache_outcomes[i] = Some(o);
        }
        match result {
            Ok(v) => results[i] = Some(v),
            Err(e) if plan.calls[i].optional => {
                tracing::debug!(call = %plan.calls[i].name, error = %e, "optional call failed");
                results[i] = Some(Value::Null);
                partial.push(plan.calls[i].name.clone());
            }
            Err(error) => {
                return Err(Failure {
                    calls: vec![plan.calls[i].name.clone()],
                    error,
                    cache: cache_outcomes,
                })
            }
        }
        for &d in &plan.dependents[i] {
            remaining[d] -= 1;
            if remaining[d] == 0 {
                running[d] = true;
                let scope = Scope {
                    req,
                    results: &results,
                };
                inflight.push(start_call(d, &plan.calls[d], env, scope, deadline));
            }
        }
    }
    Ok(Outcome {
        results,
        partial,
        cache: cache_outcomes,
    })
}

/// Render call `i`'s request now (its inputs are ready) and return the future that sends it.
fn start_call(
    i: usize,
    call: &Call,
    env: Env<'_>,
    scope: Scope<'_>,
    deadline: Option<Instant>,
) -> CallFuture {
    if call.mode == manifold_config::Mode::Publish {
        return start_publish_call(i, call, env, scope);
    }
    let client = Arc::clone(&env.clients[call.upstream]);
    if call.mode == manifold_config::Mode::Async {
        return start_async_call(i, call, &client, env, scope);
    }
    let now = Instant::now();
    let call_timeout = call.timeout.unwrap_or(client.timeout);
    let own = now + call_timeout;
    let (until, kind) = match deadline {
        Some(d) if d < own => (d, CallErrorKind::Deadline),
        _ => (own, CallErrorKind::Timeout),
    };
    if let Some(policy) = env.policies.get(i).and_then(Option::as_ref) {
        return start_cached_call(
            i,
            call,
            client,
            policy,
            env,
            scope,
            call_timeout,
            until,
            kind,
        );
    }
    let request =
        build_request(call, &client, scope, until.saturating_duration_since(now)).map(|(r, _)| r);
    let max_response_bytes = env.max_response_bytes;
    Box::pin(async move {
        let request = match request {
            Ok(r) => r,
            Err(e) => return (i, Err(e), None),
        };
        let fut = send_and_read(&client, request, max_response_bytes);
        let result = match tokio::time::timeout_at(until, fut).await {
            Ok(r) => r,
            Err(_) => Err(no_answer(
                &client.name,
                kind,
                until.saturating_duration_since(now),
            )),
        };
        (i, result, None)
    })
}

/// An async call: render it now, write it durably to the queue, and answer with its receipt.
/// The client waits for the enqueue (one durable write), never for the upstream.
fn start_async_call(
    i: usize,
    call: &Call,
    client: &UpstreamClient,
    env: Env<'_>,
    scope: Scope<'_>,
) -> CallFuture {
    let Some(queue) = env.queue.map(Arc::clone) else {
        let e = CallError::new(
            CallErrorKind::Queue,
            "no queue is configured for async calls",
        );
        return Box::pin(async move { (i, Err(e), None) });
    };
    let client_key = client_idempotency_key(scope);
    let built = build_request(call, client, scope, std::time::Duration::ZERO);
    let (name, upstream) = (call.name.clone(), client.name.clone());
    Box::pin(async move {
        let (request, base_len) = match built {
            Ok(b) => b,
            Err(e) => return (i, Err(e), None),
        };
        let task = match crate::offload::task_from_request(
            request,
            base_len,
            &upstream,
            &name,
            client_key.as_deref(),
        )
        .await
        {
            Ok(t) => t,
            Err(e) => return (i, Err(e), None),
        };
        (i, crate::offload::enqueue(queue.as_ref(), task).await, None)
    })
}

/// The client's own `Idempotency-Key`, when usable: a client retry of the same request then
/// maps to the same task key.
fn client_idempotency_key(scope: Scope<'_>) -> Option<String> {
    scope
        .req
        .headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 96)
        .map(str::to_owned)
}

/// A publish call: render its body (and headers) now, write the event durably to the outbox,
/// and answer with its receipt. The dispatcher publishes it to `[events]` later, like an async
/// call's delivery: the client never waits for the broker.
fn start_publish_call(i: usize, call: &Call, env: Env<'_>, scope: Scope<'_>) -> CallFuture {
    let Some(queue) = env.queue.map(Arc::clone) else {
        let e = CallError::new(
            CallErrorKind::Queue,
            "no queue is configured for publish calls",
        );
        return Box::pin(async move { (i, Err(e), None) });
    };
    let rendered = render_event(call, scope).map(|(headers, body)| {
        let subject = call.subject.clone().unwrap_or_default();
        let task = manifold_queue::Task::event("pending", subject, headers, body);
        crate::offload::with_key(task, client_idempotency_key(scope).as_deref(), &call.name)
    });
    Box::pin(async move {
        match rendered {
            Ok(task) => (i, crate::offload::enqueue(queue.as_ref(), task).await, None),
            Err(e) => (i, Err(e), None),
        }
    })
}

/// An event's message headers (name, value) and its JSON body.
type EventParts = (Vec<(String, String)>, Vec<u8>);

/// An event's message headers (rendered like a call's, with the same validity rules) and its
/// JSON body.
fn render_event(call: &Call, scope: Scope<'_>) -> Result<EventParts, CallError> {
    let mut headers = Vec::with_capacity(call.headers.len());
    for (name, tpl) in &call.headers {
        let mut text = String::new();
        scope.render_text(tpl, &mut text);
        if HeaderValue::from_str(&text).is_err() {
            return Err(CallError::new(
                CallErrorKind::Input,
                format!("header `{name}` rendered to a value that is not a valid header value"),
            ));
        }
        headers.push((name.clone(), text));
    }
    let body = match &call.body {
        Some(tpl) => serde_json::to_vec(&scope.json(tpl)).map_err(|e| {
            CallError::new(CallErrorKind::Input, format!("cannot render the body: {e}"))
        })?,
        // The compiler requires a body on publish calls.
        None => b"null".to_vec(),
    };
    Ok((headers, body))
}

fn no_answer(upstream: &str, kind: CallErrorKind, within: std::time::Duration) -> CallError {
    CallError::new(
        kind,
        format!(
            "no answer from upstream `{upstream}` within {}",
            humantime::format_duration(within)
        ),
    )
}

/// A cached call: render its key, then let the cache answer or run one shared fetch.
///
/// The fetch may serve other requests (coalesced waiters, a background refresh) and outlive
/// this one, so it owns everything it needs, is bounded by the call's own timeout (not this
/// request's deadline), and tells the upstream that budget. This request waits for the cache
/// only until its own deadline; giving up never cancels the shared fetch.
#[allow(clippy::too_many_arguments)]
fn start_cached_call(
    i: usize,
    call: &Call,
    client: Arc<UpstreamClient>,
    policy: &Arc<CachePolicy>,
    env: Env<'_>,
    scope: Scope<'_>,
    call_timeout: std::time::Duration,
    until: Instant,
    kind: CallErrorKind,
) -> CallFuture {
    let (request, base_len) = match build_request(call, &client, scope, call_timeout) {
        Ok(r) => r,
        Err(e) => return Box::pin(std::future::ready((i, Err(e), None))),
    };
    let key = match call.cache.as_ref() {
        Some(spec) => match &spec.key {
            Some(tpl) => {
                let mut k = String::with_capacity(32);
                scope.render_text(tpl, &mut k);
                k
            }
            None => {
                let pq = request
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                let pq = pq.get(base_len..).filter(|p| !p.is_empty()).unwrap_or(pq);
                let vary = crate::cache::vary_pairs(&spec.vary, request.headers());
                manifold_cache::default_key(&client.name, call.method.as_str(), pq, &vary)
            }
        },
        None => String::new(),
    };
    let cache = env.cache.clone();
    let policy = Arc::clone(policy);
    let max_response_bytes = env.max_response_bytes;
    let started = Instant::now();
    Box::pin(async move {
        let upstream = Arc::clone(&client);
        let fetch = move || async move {
            let fut = send_and_collect(&upstream, request, max_response_bytes);
            match tokio::time::timeout(call_timeout, fut).await {
                Ok(Ok((status, headers, body))) => {
                    Ok(CachedResponse::from_parts(status, &headers, body))
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err(no_answer(
                    &upstream.name,
                    CallErrorKind::Timeout,
                    call_timeout,
                )),
            }
        };
        let answer = tokio::time::timeout_at(until, cache.get_or_fetch(key, &policy, fetch)).await;
        match answer {
            Ok(Ok((response, outcome))) => (
                i,
                parse_answer(&client.name, response.status, &response.body),
                Some(outcome),
            ),
            Ok(Err(e)) => (i, Err(e), None),
            Err(_) => (
                i,
                Err(no_answer(
                    &client.name,
                    kind,
                    until.saturating_duration_since(started),
                )),
                None,
            ),
        }
    })
}

fn build_request(
    call: &Call,
    client: &UpstreamClient,
    scope: Scope<'_>,
    budget: std::time::Duration,
) -> Result<(Request<Body>, usize), CallError> {
    let ep = client.endpoint();
    let mut uri = String::with_capacity(64);
    uri.push_str("http://");
    uri.push_str(&ep.authority);
    uri.push_str(&ep.base_path);
    let base_len = ep.base_path.len();
    let path_start = uri.len();
    scope.render_url_part(&call.path, &mut uri);
    // A value of only dots is sent as `%2E%2E`, which RFC 3986 makes equal to `..`: an upstream
    // that normalizes paths would resolve it and serve another path. No encoding survives that.
    if crate::path::has_dot_segment(&uri[path_start..]) {
        return Err(CallError::new(
            CallErrorKind::Input,
            "a path value is `.` or `..`, which would change the upstream path",
        ));
    }
    for (n, (k, v)) in call.query.iter().enumerate() {
        uri.push(if n == 0 && !uri.contains('?') {
            '?'
        } else {
            '&'
        });
        manifold_config::template::encode_path_value(k, &mut uri);
        uri.push('=');
        scope.render_url_part(v, &mut uri);
    }
    let uri: Uri = uri.parse().map_err(|e| {
        CallError::new(
            CallErrorKind::Input,
            format!("the rendered URL is not valid: {e}"),
        )
    })?;
    let mut builder = Request::builder().method(call.method.clone()).uri(uri);
    let headers = builder
        .headers_mut()
        .ok_or_else(|| CallError::new(CallErrorKind::Input, "invalid request"))?;
    let mut text = String::new();
    for (name, tpl) in &call.headers {
        text.clear();
        scope.render_text(tpl, &mut text);
        let value = HeaderValue::from_str(&text).map_err(|_| {
            CallError::new(
                CallErrorKind::Input,
                format!("header `{name}` rendered to a value that is not a valid header value"),
            )
        })?;
        // Names were validated at load.
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            headers.insert(name, value);
        }
    }
    headers.insert(
        HeaderName::from_static(DEADLINE_HEADER),
        HeaderValue::from(budget.as_millis().min(u64::MAX as u128) as u64),
    );
    let body: Body = match &call.body {
        Some(tpl) => {
            let bytes = serde_json::to_vec(&scope.json(tpl)).map_err(|e| {
                CallError::new(CallErrorKind::Input, format!("cannot render the body: {e}"))
            })?;
            headers
                .entry(CONTENT_TYPE)
                .or_insert(HeaderValue::from_static("application/json"));
            Full::new(Bytes::from(bytes))
                .map_err(|never| match never {})
                .boxed()
        }
        None => http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed(),
    };
    builder
        .body(body)
        .map(|r| (r, base_len))
        .map_err(|e| CallError::new(CallErrorKind::Input, format!("invalid request: {e}")))
}

async fn send_and_read(
    client: &UpstreamClient,
    request: Request<Body>,
    max_response_bytes: u64,
) -> Result<Value, CallError> {
    let (status, _, bytes) = send_and_collect(client, request, max_response_bytes).await?;
    parse_answer(&client.name, status, &bytes)
}

/// Send and read the whole answer, whatever its status: only transport failures are errors.
async fn send_and_collect(
    client: &UpstreamClient,
    request: Request<Body>,
    max_response_bytes: u64,
) -> Result<(StatusCode, HeaderMap, Bytes), CallError> {
    let response = client.send(request).await?;
    let (parts, body) = response.into_parts();
    let limited = Limited::new(body, max_response_bytes as usize);
    let bytes = match limited.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(CallError::new(
                CallErrorKind::TooLarge,
                format!(
                    "upstream `{}` answered more than {max_response_bytes} bytes",
                    client.name
                ),
            ))
        }
        Err(e) => {
            return Err(CallError::new(
                CallErrorKind::Io,
                format!(
                    "reading the body from upstream `{}`: {}",
                    client.name,
                    crate::client::error_chain(&*e)
                ),
            ))
        }
    };
    Ok((parts.status, parts.headers, bytes))
}

/// A call's result from its answer: a non-2xx status is the call's failure; the body is JSON.
fn parse_answer(upstream: &str, status: StatusCode, bytes: &[u8]) -> Result<Value, CallError> {
    if !status.is_success() {
        return Err(CallError::new(
            CallErrorKind::Status(status.as_u16()),
            format!("upstream `{upstream}` answered {status}"),
        ));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(bytes).map_err(|e| {
        CallError::new(
            CallErrorKind::InvalidJson,
            format!("upstream `{upstream}` answered a body that is not JSON: {e}"),
        )
    })
}
