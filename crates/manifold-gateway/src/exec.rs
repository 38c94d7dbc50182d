//! The eager DAG executor: every call starts the instant the calls it reads from are done.
//!
//! Scheduling is by counting. Each request owns a vector of result slots and a vector of
//! remaining-dependency counters copied from the plan; when a call finishes, its dependents'
//! counters drop and those reaching zero start at once, into one `FuturesUnordered`. Nothing
//! waits for a whole level, so a request costs its plan's critical path. Dropping the executor's
//! future (client gone, deadline passed, a required call failed) drops every call in flight,
//! which closes their upstream connections: the upstreams see the cancellation.

use crate::client::{Body, UpstreamClient};
use crate::error::{CallError, CallErrorKind};
use crate::render::{RequestCtx, Scope};
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
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
}

/// A required call failed, or the deadline passed: what the client is told.
#[derive(Debug)]
pub(crate) struct Failure {
    /// The call(s) concerned.
    pub(crate) calls: Vec<String>,
    /// Why.
    pub(crate) error: CallError,
}

type CallFuture = Pin<Box<dyn Future<Output = (usize, Result<Value, CallError>)> + Send>>;

/// Run `plan` for one request.
pub(crate) async fn execute(
    plan: &Plan,
    clients: &[Arc<UpstreamClient>],
    req: &RequestCtx,
    deadline: Option<Instant>,
    max_response_bytes: u64,
) -> Result<Outcome, Failure> {
    let n = plan.calls.len();
    let mut remaining = plan.indegrees();
    let mut results: Vec<Option<Value>> = vec![None; n];
    let mut partial = Vec::new();
    let mut running: Vec<bool> = vec![false; n];
    let mut inflight: FuturesUnordered<CallFuture> = FuturesUnordered::new();

    for &i in &plan.roots {
        running[i] = true;
        let scope = Scope {
            req,
            results: &results,
        };
        inflight.push(start_call(
            i,
            &plan.calls[i],
            clients,
            scope,
            deadline,
            max_response_bytes,
        ));
    }

    loop {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, inflight.next()).await {
                Ok(next) => next,
                Err(_) => {
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
                    });
                }
            },
            None => inflight.next().await,
        };
        let Some((i, result)) = next else { break };
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
                inflight.push(start_call(
                    d,
                    &plan.calls[d],
                    clients,
                    scope,
                    deadline,
                    max_response_bytes,
                ));
            }
        }
    }
    Ok(Outcome { results, partial })
}

/// Render call `i`'s request now (its inputs are ready) and return the future that sends it.
fn start_call(
    i: usize,
    call: &Call,
    clients: &[Arc<UpstreamClient>],
    scope: Scope<'_>,
    deadline: Option<Instant>,
    max_response_bytes: u64,
) -> CallFuture {
    let client = Arc::clone(&clients[call.upstream]);
    let now = Instant::now();
    let own = now + call.timeout.unwrap_or(client.timeout);
    let (until, kind) = match deadline {
        Some(d) if d < own => (d, CallErrorKind::Deadline),
        _ => (own, CallErrorKind::Timeout),
    };
    let request = build_request(call, &client, scope, until.saturating_duration_since(now));
    Box::pin(async move {
        let request = match request {
            Ok(r) => r,
            Err(e) => return (i, Err(e)),
        };
        let fut = send_and_read(&client, request, max_response_bytes);
        let result = match tokio::time::timeout_at(until, fut).await {
            Ok(r) => r,
            Err(_) => Err(CallError::new(
                kind.clone(),
                format!(
                    "no answer from upstream `{}` within {}",
                    client.name,
                    humantime::format_duration(until.saturating_duration_since(now))
                ),
            )),
        };
        (i, result)
    })
}

fn build_request(
    call: &Call,
    client: &UpstreamClient,
    scope: Scope<'_>,
    budget: std::time::Duration,
) -> Result<Request<Body>, CallError> {
    let ep = client.endpoint();
    let mut uri = String::with_capacity(64);
    uri.push_str("http://");
    uri.push_str(&ep.authority);
    uri.push_str(&ep.base_path);
    scope.render_url_part(&call.path, &mut uri);
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
        .map_err(|e| CallError::new(CallErrorKind::Input, format!("invalid request: {e}")))
}

async fn send_and_read(
    client: &UpstreamClient,
    request: Request<Body>,
    max_response_bytes: u64,
) -> Result<Value, CallError> {
    let response = client.send(request).await?;
    let status = response.status();
    let limited = Limited::new(response.into_body(), max_response_bytes as usize);
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
    if !status.is_success() {
        return Err(CallError::new(
            CallErrorKind::Status(status.as_u16()),
            format!("upstream `{}` answered {status}", client.name),
        ));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        CallError::new(
            CallErrorKind::InvalidJson,
            format!(
                "upstream `{}` answered a body that is not JSON: {e}",
                client.name
            ),
        )
    })
}
