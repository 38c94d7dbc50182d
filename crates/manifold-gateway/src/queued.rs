//! Async and publish calls: rendered into tasks the moment their inputs are ready, then written to
//! the queue either at once (`enqueue = "eager"`) or, by default (`enqueue = "on_success"`),
//! held and written together once every required call has succeeded, before the answer.
//!
//! Why hold them: a task written while other calls still run is delivered even when a required
//! call fails afterwards. The client gets an error, retries, and the side effect happens twice
//! (with a fresh idempotency key when the client sent none). Holding costs nothing on the
//! critical path: the write happens at the end instead of in the middle, and concurrent writes
//! share one group commit.

use crate::error::{CallError, CallErrorKind};
use crate::exec::{build_request, CallFuture, Env};
use crate::render::Scope;
use http::header::HeaderValue;
use manifold_config::{Call, Mode, Plan};
use manifold_queue::{Queue, Task};
use std::sync::Arc;

/// Render `call` (async or publish) into its task now. The task's id, and so the receipt the
/// response may carry, exists from here on.
pub(crate) fn stage(call: &Call, env: Env<'_>, scope: Scope<'_>) -> Result<Task, CallError> {
    let what = if call.mode == Mode::Publish {
        "publish"
    } else {
        "async"
    };
    if env.queue.is_none() {
        return Err(CallError::new(
            CallErrorKind::Queue,
            format!("no queue is configured for {what} calls"),
        ));
    }
    let keyed =
        client_key(&scope.req.headers).map_err(|m| CallError::new(CallErrorKind::Input, m))?;
    // The principal's header values, looked at only for a request that sent a key.
    let principal = keyed.map(|_| env.follow.principal(&scope.req.headers));
    let principal: Vec<Option<&[u8]>> = principal.iter().flatten().map(|v| v.as_deref()).collect();
    let client_key = keyed.map(|key| manifold_queue::ClientKey {
        key,
        route: env.route,
        principal: &principal,
    });
    let status_auth = env
        .follow
        .auth_hash(scope.req.headers.get(http::header::AUTHORIZATION));
    if call.mode == Mode::Publish {
        let (mut headers, body) = render_event(call, scope)?;
        let subject = call.subject.clone().unwrap_or_default();
        // As for async calls: the enqueue is a PRODUCER span, and the event carries its
        // `traceparent`, so whoever consumes the event can join this request's trace.
        if let Some(ctx) = env.trace {
            let name: Arc<str> = Arc::from(call.name.as_str());
            let span = ctx.start_local(&name, &subject, &http::Method::POST, true);
            trace_event(ctx, span.as_ref(), &mut headers);
            if let Some(span) = span {
                span.end(manifold_telemetry::CallOutcome::default());
            }
        }
        let mut task = Task::event("pending", subject, headers, body);
        task.status_auth = status_auth;
        task.hooks = crate::hooks::render(&call.hooks, scope)?;
        return Ok(crate::offload::with_key(
            task,
            client_key.as_ref(),
            &call.name,
        ));
    }
    let upstream = &env.clients[call.upstream];
    let mut request = build_request(call, scope)?;
    // The enqueue is a PRODUCER span; its `traceparent` travels with the task, so the
    // delivery (a CONSUMER span, see `offload`) joins this request's trace.
    if let Some(ctx) = env.trace {
        let name: Arc<str> = Arc::from(call.name.as_str());
        let span = ctx.start_local(&name, &upstream.name, &call.method, true);
        ctx.apply(span.as_ref(), request.headers_mut());
        if let Some(span) = span {
            span.end(manifold_telemetry::CallOutcome::default());
        }
    }
    let mut task =
        crate::offload::task_from_request(request, &upstream.name, &call.name, client_key.as_ref());
    task.status_auth = status_auth;
    task.hooks = crate::hooks::render(&call.hooks, scope)?;
    Ok(task)
}

/// Put the trace context on an event's headers, with [`TraceCtx::apply`]'s rules: the call's own
/// `X-Request-Id` wins, `traceparent` names the PRODUCER span, `tracestate` is the request's.
/// The configured headers keep their spelling (brokers' header names are case-sensitive).
///
/// [`TraceCtx::apply`]: crate::telemetry::TraceCtx::apply
fn trace_event(
    ctx: &crate::telemetry::TraceCtx,
    span: Option<&manifold_telemetry::CallSpan>,
    headers: &mut Vec<(String, String)>,
) {
    let mut map = http::HeaderMap::new();
    ctx.apply(span, &mut map);
    let is = |n: &str, name: &str| n.eq_ignore_ascii_case(name);
    if span.is_some() && !map.contains_key(manifold_telemetry::propagate::TRACESTATE) {
        headers.retain(|(n, _)| !is(n, manifold_telemetry::propagate::TRACESTATE));
    }
    for (name, value) in &map {
        let Ok(value) = value.to_str() else { continue };
        match headers.iter().position(|(n, _)| is(n, name.as_str())) {
            Some(_) if name == crate::respond::REQUEST_ID => {}
            Some(i) => value.clone_into(&mut headers[i].1),
            None => headers.push((name.as_str().to_owned(), value.to_owned())),
        }
    }
}

/// `enqueue = "eager"`: render the call and write it now; its result is the receipt once the
/// task is durable. The client waits for the write (one durable write), never for the upstream.
pub(crate) fn start_eager(i: usize, call: &Call, env: Env<'_>, scope: Scope<'_>) -> CallFuture {
    let staged = stage(call, env, scope);
    let queue = env.queue.map(Arc::clone);
    let follow = env.follow.clone();
    Box::pin(async move {
        match (staged, queue) {
            (Ok(task), Some(queue)) => (
                i,
                crate::offload::enqueue(queue.as_ref(), task, &follow)
                    .await
                    .map(crate::exec::Parsed::from),
                None,
            ),
            (Err(e), _) => (i, Err(e), None),
            (Ok(_), None) => (
                i,
                Err(CallError::new(
                    CallErrorKind::Queue,
                    "no queue is configured",
                )),
                None,
            ),
        }
    })
}

/// Write the held tasks of a request whose required calls all succeeded. Required calls' tasks
/// go first, together; optional ones only once those are stored, so a refused required task
/// leaves no optional task behind. Writes are never cut short (not even by the deadline): a write
/// abandoned midway may still be committed, which is exactly the unknown outcome holding avoids.
///
/// `Ok` lists the optional calls whose tasks could not be written (their results become `null`);
/// `Err` is the first required call whose task could not be written: the request fails.
pub(crate) async fn commit(
    queue: Option<&Arc<dyn Queue>>,
    plan: &Plan,
    held: Vec<(usize, Task)>,
) -> Result<Vec<(usize, CallError)>, (usize, CallError)> {
    let Some(queue) = queue else {
        // `stage` refuses every call when there is no queue, so nothing is held.
        return Ok(Vec::new());
    };
    let (required, optional): (Vec<_>, Vec<_>) = held
        .into_iter()
        .partition(|(i, _)| !plan.calls[*i].optional);
    let written = write_all(queue.as_ref(), required).await;
    let stored: Vec<&str> = written
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| plan.calls[*i].name.as_str())
        .collect();
    if let Some((i, Err(e))) = written.iter().find(|(_, r)| r.is_err()) {
        if !stored.is_empty() {
            // No transaction spans several writes: these are durable and will be delivered,
            // though the client is told the request failed.
            tracing::warn!(calls = ?stored, refused = %plan.calls[*i].name, "tasks of a failed request were written");
        }
        return Err((*i, e.clone()));
    }
    let failed = write_all(queue.as_ref(), optional)
        .await
        .into_iter()
        .filter_map(|(i, r)| r.err().map(|e| (i, e)))
        .collect();
    Ok(failed)
}

async fn write_all(
    queue: &dyn Queue,
    tasks: Vec<(usize, Task)>,
) -> Vec<(usize, Result<(), CallError>)> {
    futures::future::join_all(
        tasks
            .into_iter()
            .map(|(i, task)| async move { (i, crate::offload::write(queue, task).await) }),
    )
    .await
}

/// The longest client `Idempotency-Key` taken (as Stripe's API). A longer derived task key is
/// hashed ([`manifold_queue::task_key`]), so this bounds only what a client may send.
const MAX_CLIENT_KEY: usize = 255;

/// The request's `Idempotency-Key`, if it sent one, or why it is unusable. With the route and
/// the principal (`[queue] idempotency_scope`), it makes a client's retry of the same request
/// the same task key.
///
/// A key the gateway cannot use is the client's 400, not ignored: taken as absent, each retry
/// got a fresh task key, and the work the client asked to have done once was done once per
/// retry. A key is a string of visible ASCII (as the IETF draft's structured-field string),
/// 1 to [`MAX_CLIENT_KEY`] bytes. The handler checks it before any call of a route that writes
/// tasks runs, so a refused key costs no side effect; [`stage`] reads it again for the task.
pub(crate) fn client_key(headers: &http::HeaderMap) -> Result<Option<&str>, String> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|v| !v.is_empty() && v.len() <= MAX_CLIENT_KEY && !v.contains('\t'))
        .map(Some)
        .ok_or_else(|| {
            format!(
                "the Idempotency-Key header must be 1 to {MAX_CLIENT_KEY} visible ASCII characters (got {} bytes); it makes a retry of this request the same task",
                value.len()
            )
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
