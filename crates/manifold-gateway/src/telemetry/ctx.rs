//! The trace context down the call path: a [`TraceCtx`] per request, a [`CallTrace`] per call
//! (in the upstream request's extensions), and an [`AttemptSpan`] per attempt.

use crate::respond::REQUEST_ID;
use http::header::HeaderValue;
use http::uri::PathAndQuery;
use http::HeaderMap;
use manifold_telemetry as tm;
use std::borrow::Cow;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tokio::time::Instant;

/// A request's trace context, in the incoming request's extensions.
#[derive(Debug, Clone)]
pub(crate) struct TraceCtx(Ctx);

/// Without tracing the context is only the request id, whose clones share one buffer: no
/// `Arc` to allocate per request for metrics alone.
#[derive(Debug, Clone)]
enum Ctx {
    /// `tracing = false`: the `X-Request-Id` only.
    Untraced(HeaderValue),
    Traced(Arc<CtxInner>),
}

#[derive(Debug)]
struct CtxInner {
    /// Starts the request's call spans.
    handle: tm::TraceHandle,
    tracestate: Option<HeaderValue>,
    request_id: HeaderValue,
}

impl CtxInner {
    fn new(t: &tm::RequestTrace, request_id: HeaderValue) -> CtxInner {
        CtxInner {
            handle: t.handle(),
            tracestate: t.tracestate().and_then(|s| HeaderValue::from_str(s).ok()),
            request_id,
        }
    }
}

impl TraceCtx {
    /// The context of an offloaded task's delivery: its calls are the CONSUMER span's children
    /// and carry the request id the task was written with.
    pub(crate) fn for_delivery(trace: &tm::RequestTrace) -> TraceCtx {
        TraceCtx::new(Some(trace), trace.request_id().header_value().clone())
    }

    /// A request's context: its trace's handle and `tracestate` (none with tracing off), and
    /// the `X-Request-Id` its upstream requests get.
    pub(crate) fn new(trace: Option<&tm::RequestTrace>, request_id: HeaderValue) -> TraceCtx {
        TraceCtx(match trace {
            None => Ctx::Untraced(request_id),
            Some(t) => Ctx::Traced(Arc::new(CtxInner::new(t, request_id))),
        })
    }

    /// Whether this request records spans. Without, its calls need only the `X-Request-Id`,
    /// which [`TraceCtx::apply`] can give the upstream request when it is built: no
    /// [`CallTrace`] (an `Arc` and an extension per call) has to ride down to the attempts.
    pub(crate) fn tracing(&self) -> bool {
        matches!(self.0, Ctx::Traced(_))
    }

    fn handle(&self) -> Option<&tm::TraceHandle> {
        match &self.0 {
            Ctx::Untraced(_) => None,
            Ctx::Traced(inner) => Some(&inner.handle),
        }
    }

    fn request_id(&self) -> &HeaderValue {
        match &self.0 {
            Ctx::Untraced(id) => id,
            Ctx::Traced(inner) => &inner.request_id,
        }
    }

    fn tracestate(&self) -> Option<&HeaderValue> {
        match &self.0 {
            Ctx::Untraced(_) => None,
            Ctx::Traced(inner) => inner.tracestate.as_ref(),
        }
    }

    /// Start a span that is not an upstream attempt: a cache answer (INTERNAL) or an enqueue
    /// (PRODUCER).
    pub(crate) fn start_local(
        &self,
        call: &Arc<str>,
        upstream: &str,
        method: &http::Method,
        enqueue: bool,
    ) -> Option<tm::CallSpan> {
        let handle = self.handle()?;
        Some(handle.start_call(tm::CallInfo {
            call: Arc::clone(call),
            upstream: Arc::from(upstream),
            method: method.clone(),
            path: tm::UrlPath::default(),
            endpoint: None,
            attempt: 1,
            attempt_kind: tm::AttemptKind::First,
            enqueue,
        }))
    }

    /// The `X-Request-Id` (and, with a span, `traceparent` / `tracestate`) for an outgoing
    /// request or a stored task. A call's own `X-Request-Id` (written in its `headers`) wins:
    /// the config said what that upstream gets.
    pub(crate) fn apply(&self, span: Option<&tm::CallSpan>, headers: &mut HeaderMap) {
        apply(
            self.request_id(),
            self.tracestate(),
            span,
            headers,
            Adds::ALL,
        );
    }
}

/// What [`apply`] looks for in the headers it is given.
#[derive(Debug, Clone, Copy)]
struct Adds {
    /// The headers may carry a `tracestate` the client did not send, to remove.
    strip: bool,
    /// The headers may lack an `X-Request-Id` (false: the call's config sets one, which wins).
    request_id: bool,
    /// The headers are the client's (a proxied request's), so an `X-Request-Id` there is the
    /// client's as sent, which the gateway may have refused (a space or `=` that forges log
    /// fields, past 128 characters): replaced, so the upstream gets the id the request is
    /// logged and traced under.
    replace_id: bool,
}

impl Adds {
    const ALL: Adds = Adds {
        strip: true,
        request_id: true,
        replace_id: false,
    };
}

/// [`TraceCtx::apply`], from the context's parts.
fn apply(
    request_id: &HeaderValue,
    tracestate: Option<&HeaderValue>,
    span: Option<&tm::CallSpan>,
    headers: &mut HeaderMap,
    adds: Adds,
) {
    if adds.replace_id {
        headers.insert(REQUEST_ID, request_id.clone());
    } else if adds.request_id {
        headers
            .entry(REQUEST_ID)
            .or_insert_with(|| request_id.clone());
    }
    if let Some(span) = span {
        headers.insert(tm::propagate::TRACEPARENT_HEADER, span.traceparent());
        match tracestate {
            Some(ts) => {
                headers.insert(tm::propagate::TRACESTATE_HEADER, ts.clone());
            }
            None if adds.strip => {
                headers.remove(tm::propagate::TRACESTATE_HEADER);
            }
            None => {}
        }
    }
}

/// One call's context, in each upstream request's extensions: the attempts of this call (and
/// its retries and hedges, which copy the request) find it there.
#[derive(Debug, Clone)]
pub(crate) struct CallTrace(Arc<CallInner>);

#[derive(Debug)]
struct CallInner {
    ctx: CallCtx,
    call: Arc<str>,
    /// A cache fill: its attempts are the cache's `miss`.
    cache_fill: bool,
    /// Attempts started so far (the next one's number is this plus one).
    sent: AtomicU32,
    /// `strip`: the attempts' requests may carry a `tracestate` to remove when the client sent
    /// none (false for a composed call built without one); `request_id`: they may lack an
    /// `X-Request-Id` (false for a composed call whose config sets one). See
    /// [`CallTrace::for_built`].
    adds: Adds,
    /// The path the attempts are expected to send, when known (the request's path and query
    /// as built, or a proxied request's own path, copied for its SERVER span): an attempt
    /// sending this path records a clone of it (a reference count) as its span's `url.path`,
    /// not a copy of the text.
    path: Option<tm::UrlPath>,
}

/// A call's request context: shared with the request's other calls (a composed request's), or
/// its own when the request has this one call (a proxied request's: no `Arc` of its own).
#[derive(Debug)]
enum CallCtx {
    Shared(TraceCtx),
    Own(CtxInner),
}

impl CallCtx {
    fn handle(&self) -> Option<&tm::TraceHandle> {
        match self {
            CallCtx::Shared(ctx) => ctx.handle(),
            CallCtx::Own(inner) => Some(&inner.handle),
        }
    }

    fn apply(&self, span: Option<&tm::CallSpan>, headers: &mut HeaderMap, adds: Adds) {
        match self {
            CallCtx::Shared(ctx) => apply(ctx.request_id(), ctx.tracestate(), span, headers, adds),
            CallCtx::Own(inner) => apply(
                &inner.request_id,
                inner.tracestate.as_ref(),
                span,
                headers,
                adds,
            ),
        }
    }
}

impl CallTrace {
    /// The context of a request's only call (a proxied request's), holding the request's
    /// context itself rather than a shared [`TraceCtx`] (one allocation less per request):
    /// as [`CallTrace::with_path`] of `TraceCtx::new(trace, request_id)`, except that its
    /// attempts replace any `X-Request-Id` the client sent (see [`Adds::replace_id`]).
    pub(crate) fn only_call(
        trace: Option<&tm::RequestTrace>,
        request_id: HeaderValue,
        call: Arc<str>,
        path: Option<tm::UrlPath>,
    ) -> CallTrace {
        let ctx = match trace {
            Some(t) => CallCtx::Own(CtxInner::new(t, request_id)),
            None => CallCtx::Shared(TraceCtx::new(None, request_id)),
        };
        let mut inner = CallTrace::inner(ctx, call, false, path);
        inner.adds.replace_id = true;
        CallTrace(Arc::new(inner))
    }

    pub(crate) fn new(ctx: TraceCtx, call: Arc<str>, cache_fill: bool) -> CallTrace {
        CallTrace::with_path(ctx, call, cache_fill, None)
    }

    /// [`CallTrace::new`] for a composed call's request, built by the gateway from the call's
    /// config: it carries a `tracestate` only when the config sets one (`sets_tracestate`),
    /// and always an `X-Request-Id` when the config sets one (`sets_request_id`).
    ///
    /// Why: when the client sent no `tracestate`, each attempt removed the header from its
    /// request, a hash and a probe of the map (~170 instructions an attempt, callgrind) for a
    /// header that cannot be there; and looked up the configured `X-Request-Id` only to find
    /// it there (~250 an attempt).
    pub(crate) fn for_built(
        ctx: TraceCtx,
        call: Arc<str>,
        cache_fill: bool,
        sets_tracestate: bool,
        sets_request_id: bool,
    ) -> CallTrace {
        let mut inner = CallTrace::inner(CallCtx::Shared(ctx), call, cache_fill, None);
        inner.adds = Adds {
            strip: sets_tracestate,
            request_id: !sets_request_id,
            replace_id: false,
        };
        CallTrace(Arc::new(inner))
    }

    /// [`CallTrace::new`] for a request whose origin-form path and query is `path`: its
    /// attempts' spans share it.
    pub(crate) fn with_path(
        ctx: TraceCtx,
        call: Arc<str>,
        cache_fill: bool,
        path: Option<PathAndQuery>,
    ) -> CallTrace {
        let path = path.map(tm::UrlPath::from);
        CallTrace::of(CallCtx::Shared(ctx), call, cache_fill, path)
    }

    fn of(ctx: CallCtx, call: Arc<str>, cache_fill: bool, path: Option<tm::UrlPath>) -> CallTrace {
        CallTrace(Arc::new(CallTrace::inner(ctx, call, cache_fill, path)))
    }

    fn inner(
        ctx: CallCtx,
        call: Arc<str>,
        cache_fill: bool,
        path: Option<tm::UrlPath>,
    ) -> CallInner {
        CallInner {
            ctx,
            call,
            cache_fill,
            sent: AtomicU32::new(0),
            adds: Adds::ALL,
            path,
        }
    }

    /// An attempt starts: its CLIENT span, and the headers that make the upstream its child.
    pub(crate) fn start_attempt(
        &self,
        upstream: &Arc<str>,
        method: &http::Method,
        path: &str,
        endpoint: Option<tm::Endpoint>,
        kind: tm::AttemptKind,
        headers: &mut HeaderMap,
    ) -> Option<AttemptSpan> {
        let n = self
            .0
            .sent
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let span = self.0.ctx.handle().map(|h| {
            h.start_call(tm::CallInfo {
                call: Arc::clone(&self.0.call),
                upstream: Arc::clone(upstream),
                method: method.clone(),
                path: match &self.0.path {
                    Some(known) if known.as_str() == path => known.clone(),
                    _ => tm::UrlPath::from(path),
                },
                endpoint,
                attempt: n,
                attempt_kind: kind,
                enqueue: false,
            })
        });
        self.0.ctx.apply(span.as_ref(), headers, self.0.adds);
        span.map(|span| AttemptSpan {
            span,
            cache_fill: self.0.cache_fill,
            first_byte: None,
        })
    }
}

/// An attempt's span, and where the response's arrival is marked (inside the bounded send,
/// which the span does not enter).
#[derive(Debug)]
pub(crate) struct AttemptSpan {
    span: tm::CallSpan,
    cache_fill: bool,
    /// The cell a send that goes on after the response head (reading the body) marks the
    /// head's arrival in; made only for such a send (see [`AttemptSpan::first_byte_cell`]).
    first_byte: Option<Arc<std::sync::OnceLock<Instant>>>,
}

impl AttemptSpan {
    /// A cell for the send to mark the response head's arrival in, shared with this span.
    ///
    /// Why a shared cell only on request: the send runs under a timeout that may drop it
    /// after the head came (reading the body), so its mark must outlive it. A send that ends
    /// with the head (the proxy's) has its end marked with [`AttemptSpan::first_byte_at`]
    /// instead: no `Arc` to allocate per attempt.
    pub(crate) fn first_byte_cell(&mut self) -> Arc<std::sync::OnceLock<Instant>> {
        Arc::clone(self.first_byte.get_or_insert_with(Arc::default))
    }

    /// The response head arrived at `at` (for a send given no cell; the first mark wins).
    pub(crate) fn first_byte_at(&mut self, at: Instant) {
        self.span.first_byte_at(at);
    }

    /// End it at `at` (the attempt's end, as the attempt read it): the status, or the
    /// classified failure as `error.type`.
    pub(crate) fn end(
        mut self,
        status: Option<http::StatusCode>,
        error: Option<&'static str>,
        bytes: Option<u64>,
        at: Instant,
    ) {
        if let Some(at) = self.first_byte.as_ref().and_then(|c| c.get()) {
            self.span.first_byte_at(*at);
        }
        self.span.end_at(
            tm::CallOutcome {
                status: status.map(|s| s.as_u16()),
                error_type: error.map(Cow::Borrowed),
                cache: self.cache_fill.then_some(tm::CacheOutcome::Miss),
                response_bytes: bytes,
                cancelled: false,
            },
            at,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A first `GET /x` attempt of `call` to `upstream`, its span ended at once: what it
    /// wrote into `headers` is what the tests read.
    fn first_get_attempt(call: &CallTrace, upstream: &Arc<str>, headers: &mut HeaderMap) {
        let span = call.start_attempt(
            upstream,
            &http::Method::GET,
            "/x",
            None,
            tm::AttemptKind::First,
            headers,
        );
        drop(span);
    }

    fn trace() -> tm::RequestTrace {
        let tracer = tm::Tracer::new(
            &tm::TracingOptions::default(),
            None,
            Arc::new(tm::SpanStats::default()),
        )
        .expect("tracer");
        tracer.start(
            tm::Incoming::default(),
            tm::RootInfo {
                kind: tm::RootKind::Server,
                method: http::Method::POST,
                route: Arc::from("/checkout"),
                path: manifold_telemetry::UrlPath::copied("/checkout"),
            },
        )
    }

    #[tokio::test]
    async fn attempts_record_the_path_they_send_shared_with_the_request_when_it_is_its() {
        let trace = trace();
        let ctx = TraceCtx::new(Some(&trace), HeaderValue::from_static("id-1"));
        let pq = PathAndQuery::from_static("/orders/7/confirm?x=1");
        let call = CallTrace::with_path(ctx, Arc::from("confirm"), false, Some(pq));
        let upstream: Arc<str> = Arc::from("order");
        for path in ["/orders/7/confirm", "/elsewhere"] {
            let mut headers = HeaderMap::new();
            let span = call.start_attempt(
                &upstream,
                &http::Method::POST,
                path,
                None,
                tm::AttemptKind::First,
                &mut headers,
            );
            span.expect("traced")
                .end(Some(http::StatusCode::OK), None, None, Instant::now());
            assert!(headers.contains_key(tm::propagate::TRACEPARENT_HEADER));
        }
        let finished = trace.end(tm::ServerOutcome::default());
        let paths: Vec<&str> = finished
            .calls
            .iter()
            .map(|c| c.info.path.as_str())
            .collect();
        assert_eq!(paths, ["/orders/7/confirm", "/elsewhere"]);
    }

    /// A proxied request's only call holds the context itself: its attempts get the same
    /// headers and spans as through a shared `TraceCtx`.
    #[tokio::test]
    async fn an_only_call_gives_its_attempts_the_request_id_traceparent_and_span() {
        let trace = trace();
        // The SERVER span's copy of the path, as `Telemetry::start` hands it over.
        let path = tm::UrlPath::copied("/item");
        let call = CallTrace::only_call(
            Some(&trace),
            HeaderValue::from_static("id-1"),
            Arc::from("item"),
            Some(path.clone()),
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            tm::propagate::TRACESTATE_HEADER,
            HeaderValue::from_static("a=1"),
        );
        let span = call.start_attempt(
            &Arc::from("u"),
            &http::Method::GET,
            "/item",
            None,
            tm::AttemptKind::First,
            &mut headers,
        );
        span.expect("traced")
            .end(Some(http::StatusCode::OK), None, None, Instant::now());
        assert_eq!(headers[REQUEST_ID], "id-1");
        let tp = headers[tm::propagate::TRACEPARENT_HEADER]
            .to_str()
            .expect("ascii");
        assert!(tp.contains(&trace.trace_id().to_hex()), "{tp}");
        assert!(
            !headers.contains_key(tm::propagate::TRACESTATE_HEADER),
            "the client sent none"
        );
        let finished = trace.end(tm::ServerOutcome::default());
        assert_eq!(finished.calls.len(), 1);
        assert_eq!(finished.calls[0].info.path.as_str(), "/item");
        assert_eq!(
            finished.calls[0].info.path.as_str().as_ptr(),
            path.as_str().as_ptr(),
            "the attempt's span shares the path's copy"
        );

        let untraced = CallTrace::only_call(
            None,
            HeaderValue::from_static("id-2"),
            Arc::from("item"),
            None,
        );
        let mut headers = HeaderMap::new();
        let span = untraced.start_attempt(
            &Arc::from("u"),
            &http::Method::GET,
            "/item",
            None,
            tm::AttemptKind::First,
            &mut headers,
        );
        assert!(span.is_none());
        assert_eq!(headers[REQUEST_ID], "id-2");
        assert!(!headers.contains_key(tm::propagate::TRACEPARENT_HEADER));
    }

    /// A composed call's request is built by the gateway: when its config sets no
    /// `tracestate` none is looked for (and none added, the client having sent none); when it
    /// does, the attempts strip it, as for any other request.
    #[tokio::test]
    async fn a_built_request_is_searched_for_a_tracestate_only_when_its_config_sets_one() {
        let trace = trace();
        let upstream: Arc<str> = Arc::from("u");
        for sets in [false, true] {
            let ctx = TraceCtx::new(Some(&trace), HeaderValue::from_static("id-1"));
            let call = CallTrace::for_built(ctx, Arc::from("c"), false, sets, false);
            let mut headers = HeaderMap::new();
            // What a config's `tracestate` header would have rendered.
            headers.insert(
                tm::propagate::TRACESTATE_HEADER,
                HeaderValue::from_static("a=1"),
            );
            first_get_attempt(&call, &upstream, &mut headers);
            assert_eq!(headers[REQUEST_ID], "id-1");
            assert!(headers.contains_key(tm::propagate::TRACEPARENT_HEADER));
            assert_eq!(
                headers.contains_key(tm::propagate::TRACESTATE_HEADER),
                !sets,
                "sets_tracestate = {sets}"
            );
        }
    }
    /// A composed call whose config sets its own `X-Request-Id` keeps it, the request's id
    /// not being looked for; one that does not gets the request's.
    #[tokio::test]
    async fn a_built_requests_configured_request_id_is_kept() {
        let trace = trace();
        let upstream: Arc<str> = Arc::from("u");
        for sets in [false, true] {
            let ctx = TraceCtx::new(Some(&trace), HeaderValue::from_static("id-1"));
            let call = CallTrace::for_built(ctx, Arc::from("c"), false, false, sets);
            let mut headers = HeaderMap::new();
            if sets {
                headers.insert(REQUEST_ID, HeaderValue::from_static("configured"));
            }
            first_get_attempt(&call, &upstream, &mut headers);
            let want = if sets { "configured" } else { "id-1" };
            assert_eq!(headers[REQUEST_ID], want, "sets_request_id = {sets}");
            assert!(headers.contains_key(tm::propagate::TRACEPARENT_HEADER));
        }
    }
}
