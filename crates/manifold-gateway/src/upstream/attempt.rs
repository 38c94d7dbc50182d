//! The innermost service of the stack: one attempt. It takes a lease on an endpoint (the
//! balancer's pick, avoiding the previous attempt's where there is a choice), bounds the attempt
//! by the smaller of the timeout and what is left of the deadline (announced in
//! `Manifold-Deadline-Ms`), sends once through the pooled client, hands the lease back with the
//! outcome, and classifies the result. The retry and hedge services above it only decide
//! whether, when and where to call it again.
//!
//! Its error type is `Infallible`: a failed attempt is an answer too ([`Tried`]), carrying what
//! the layers above need (the endpoint, how long it took).

use super::endpoints::{EndpointId, Endpoints, Outcome};
use super::error::{self, AttemptRecord, Ended};
use super::request::{FetchReq, SendReq};
use super::retry::replay::Undo;
use super::{client, Answer, Body, Bound, Budget, Read, DEADLINE_HEADER};
use crate::error::{CallError, CallErrorKind};
use crate::read_body::read_whole;
use crate::telemetry::{AttemptSpan, CallTrace};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

pub(crate) use manifold_telemetry::AttemptKind;

/// [`DEADLINE_HEADER`] parsed once: `HeaderName::from_static` at each attempt first compares
/// the name with every standard header's (about 160 instructions a call, callgrind).
const DEADLINE_NAME: HeaderName = HeaderName::from_static(DEADLINE_HEADER);

/// A boxed, sendable future: one per attempt.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What one attempt is asked to do.
#[derive(Debug)]
pub(crate) struct Attempt<R> {
    pub(crate) req: R,
    /// The endpoint to avoid (the previous attempt's), where there is a choice.
    pub(crate) avoid: Option<EndpointId>,
    /// Where the attempt writes the endpoint it picked, for a hedge that must avoid it while
    /// this attempt is still running.
    pub(crate) picked: Option<Arc<AtomicU64>>,
    /// Why it is made (its span's `manifold.attempt.kind`).
    pub(crate) kind: AttemptKind,
}

impl<R> Attempt<R> {
    #[cfg(test)]
    pub(crate) fn new(req: R) -> Self {
        Attempt {
            req,
            avoid: None,
            picked: None,
            kind: AttemptKind::First,
        }
    }
}

/// "No endpoint picked yet" in [`Attempt::picked`].
pub(crate) const NONE_PICKED: u64 = u64::MAX;

/// How one attempt ended.
#[derive(Debug)]
pub(crate) struct Tried<T> {
    pub(crate) result: Result<T, CallError>,
    /// The endpoint it went to, if one was picked.
    pub(crate) endpoint: Option<EndpointId>,
    /// That endpoint's `host:port`, kept only when the attempt did not succeed (it is for
    /// errors: a success need not pay for the copy).
    pub(crate) shown: Option<String>,
    /// From the pick to the end.
    pub(crate) took: Duration,
    /// Attempts that ended before this one inside the same service (a hedge's failed
    /// attempts), oldest first.
    pub(crate) earlier: Vec<AttemptRecord>,
}

impl<T: Answered> Tried<T> {
    /// A failure before any endpoint was picked.
    pub(crate) fn unsent(e: CallError) -> Self {
        Tried {
            result: Err(e),
            endpoint: None,
            shown: None,
            took: Duration::ZERO,
            earlier: Vec::new(),
        }
    }

    /// Whether this ended with an answer below 500: nothing to try again, and what a hedge
    /// waits for.
    pub(crate) fn is_good(&self) -> bool {
        matches!(&self.result, Ok(a) if !a.status().is_server_error())
    }

    /// Its record in a call's trail.
    pub(crate) fn record(&self) -> AttemptRecord {
        AttemptRecord {
            endpoint: self.shown.clone(),
            ended: match &self.result {
                Ok(a) => Ended::Answered(a.status().as_u16()),
                Err(e) => Ended::Failed(e.kind.clone()),
            },
        }
    }
}

/// An upstream's answer as the policies see it.
pub(crate) trait Answered: Send + 'static {
    fn status(&self) -> StatusCode;
    /// The body's size when it was read whole (for the attempt's span).
    fn body_len(&self) -> Option<u64> {
        None
    }
    fn headers(&self) -> &HeaderMap;
    /// Keep the call's trail with an answer that is not a success (a caller may make it an
    /// error, which then tells the attempts).
    fn attach(&mut self, trail: Box<error::Trail>);
}

impl Answered for Answer {
    fn status(&self) -> StatusCode {
        self.status
    }
    fn body_len(&self) -> Option<u64> {
        Some(self.body.len() as u64)
    }
    fn headers(&self) -> &HeaderMap {
        &self.headers
    }
    fn attach(&mut self, trail: Box<error::Trail>) {
        self.trail = Some(trail);
    }
}

impl Answered for Response<Incoming> {
    fn status(&self) -> StatusCode {
        Response::status(self)
    }
    fn headers(&self) -> &HeaderMap {
        Response::headers(self)
    }
    fn attach(&mut self, trail: Box<error::Trail>) {
        self.extensions_mut().insert(trail);
    }
}

/// The attempt service of one upstream: cheap to clone (one `Arc`).
#[derive(Debug, Clone)]
pub(crate) struct Attempts {
    core: Arc<Core>,
}

#[derive(Debug)]
struct Core {
    name: String,
    /// Whether its clients hand back a request that failed before any of it was sent
    /// ([`client::Pool::gives_back`]).
    gives_back: bool,
    /// The same, shared with every span.
    span_name: Arc<str>,
    timeout: Duration,
    endpoints: Endpoints,
    pool: client::Pool,
}

impl Attempts {
    /// The endpoint set (tests look at what the resolver made of it; `/metrics` reads its
    /// breakers and costs).
    pub(super) fn endpoints(&self) -> &Endpoints {
        &self.core.endpoints
    }

    /// Whether its clients hand back a request that failed before any of it was sent.
    pub(super) fn gives_back(&self) -> bool {
        self.core.gives_back
    }

    pub(crate) fn new(up: &manifold_config::Upstream) -> Result<Self, crate::tls::TlsError> {
        let pool = client::Pool::new(up)?;
        Ok(Attempts {
            core: Arc::new(Core {
                name: up.name.clone(),
                gives_back: pool.gives_back(),
                span_name: Arc::from(up.name.as_str()),
                timeout: up.timeout,
                endpoints: Endpoints::new(up),
                pool,
            }),
        })
    }
}

impl Core {
    fn bound(&self, now: Instant, budget: &Budget) -> Bound {
        Bound::new(now, budget.timeout.unwrap_or(self.timeout), budget.deadline)
    }

    /// The origin-form request made absolute against the endpoint, with the budget announced.
    /// The call's trace context is `trace`, or else in the request's extensions.
    #[allow(clippy::too_many_arguments)]
    fn prepare<B>(
        &self,
        req: Request<B>,
        trace: Option<&CallTrace>,
        target: &super::endpoints::Target,
        bound: &Bound,
        announce: bool,
        kind: AttemptKind,
        span: &mut Option<AttemptSpan>,
    ) -> Result<Request<B>, CallError> {
        let (mut parts, body) = req.into_parts();
        // The call's trace context (see `crate::telemetry`): this attempt's span, and the
        // headers that make the upstream its child. Taken before the URI becomes absolute, so
        // the span shows the origin path.
        if let Some(call) = trace.or_else(|| parts.extensions.get::<CallTrace>()) {
            *span = call.start_attempt(
                &self.span_name,
                &parts.method,
                parts.uri.path(),
                Some(target.span_endpoint()),
                kind,
                &mut parts.headers,
            );
        }
        parts.uri = target.absolute(std::mem::take(&mut parts.uri))?;
        target.host(&mut parts.headers);
        crate::via::add(&mut parts.headers);
        if announce {
            let ms = u64::try_from(bound.within.as_millis()).unwrap_or(u64::MAX);
            parts.headers.insert(DEADLINE_NAME, HeaderValue::from(ms));
        }
        Ok(Request::from_parts(parts, body))
    }

    /// Pick an endpoint, send within the bound, finish the lease, record: the shape every
    /// attempt shares. `send` gets the prepared (absolute, announced) request and returns the
    /// answer; `req` is an error when the request could not even be built. `attempt` carries
    /// the call's trace context when it is not in the request's extensions. `reads_on`: the
    /// send goes on after the response head (reading the body), so it marks the head's
    /// arrival itself, in the [`FirstByte`] cell it is given; otherwise its end is the mark.
    #[allow(clippy::too_many_arguments)]
    fn run<B, T, F, Fut>(
        self: Arc<Self>,
        attempt: Attempt<Option<CallTrace>>,
        budget: Budget,
        req: Result<Request<B>, CallError>,
        reads_on: bool,
        send: F,
    ) -> BoxFuture<Result<Tried<T>, Infallible>>
    where
        B: Send + 'static,
        T: Answered,
        F: FnOnce(Arc<Core>, Request<B>, FirstByte, client::Sender) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, CallError>> + Send + 'static,
    {
        let lease = match self.endpoints.pick(attempt.avoid) {
            Ok(l) => l,
            Err(e) => return Box::pin(std::future::ready(Ok(Tried::unsent(e)))),
        };
        if let Some(cell) = &attempt.picked {
            cell.store(lease.id().to_raw(), Ordering::Relaxed);
        }
        let kind = attempt.kind;
        let trace = attempt.req;
        // A proxied body still arriving from the client (see `crate::limit::ClientWait`).
        let client = req
            .as_ref()
            .ok()
            .and_then(|r| r.extensions().get::<crate::limit::ClientWait>().cloned());
        Box::pin(async move {
            let started = lease.started();
            let bound = self.bound(started, &budget);
            let mut span = None;
            // The clock when the send ended, if read for the first byte's mark.
            let mut read: Option<Instant> = None;
            let prepared = req.and_then(|r| {
                self.prepare(
                    r,
                    trace.as_ref(),
                    lease.target(),
                    &bound,
                    budget.announce,
                    kind,
                    &mut span,
                )
            });
            let result = match prepared {
                Ok(req) => {
                    let core = Arc::clone(&self);
                    let mark = match &mut span {
                        Some(s) if reads_on => Some(s.first_byte_cell()),
                        _ => None,
                    };
                    let sender = lease.target().sender(&self.pool);
                    let sent = send(core, req, mark, sender);
                    match tokio::time::timeout_at(bound.until, sent).await {
                        Ok(r) => {
                            if let (Some(s), false) = (&mut span, reads_on) {
                                s.first_byte_at(*read.insert(Instant::now()));
                            }
                            r
                        }
                        Err(_) => Err(error::no_answer(
                            &self.name,
                            bound.by_deadline,
                            bound.within,
                        )),
                    }
                }
                Err(e) => Err(e),
            };
            // The attempt's end, read once: the first byte's mark (when the send's end is the
            // mark), the lease's outcome and `took` are microseconds apart.
            let ended = read.unwrap_or_else(Instant::now);
            let id = lease.id();
            let shown = match &result {
                Ok(a) if a.status().is_success() => None,
                _ => Some(lease.endpoint().to_owned()),
            };
            match &result {
                Ok(a) => lease.finish(ended, Outcome::Answered(a.status())),
                // Failed while the request's body was waiting on its client (a client trickling
                // its upload until the attempt timed out): the client's doing, not the
                // endpoint's. Counted against it, a few slow uploads ejected healthy endpoints.
                Err(_)
                    if client
                        .as_ref()
                        .is_some_and(crate::limit::ClientWait::waiting) =>
                {
                    lease.finish(ended, Outcome::ClientStalled);
                }
                Err(e) => lease.finish(ended, Outcome::Failed(&e.kind)),
            }
            if let Some(span) = span {
                match &result {
                    Ok(a) => span.end(Some(a.status()), None, a.body_len(), ended),
                    Err(e) => span.end(None, Some(e.kind.as_str()), None, ended),
                }
            }
            Ok(Tried {
                result,
                endpoint: Some(id),
                shown,
                took: ended.saturating_duration_since(started),
                earlier: Vec::new(),
            })
        })
    }
}

impl tower::Service<Attempt<FetchReq>> for Attempts {
    type Response = Tried<Answer>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Tried<Answer>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, attempt: Attempt<FetchReq>) -> Self::Future {
        let Attempt {
            req,
            avoid,
            picked,
            kind,
        } = attempt;
        let FetchReq {
            req,
            trace,
            budget,
            read,
            ..
        } = req;
        // A shared request: the last holder sends the original, others a copy (the head is
        // cloned, the body shared). A slot's: taken, and put back if it comes back unsent,
        // with what this attempt changed in it undone.
        let (req, back) = req.for_attempt(&self.core.name);
        let req = req.map(|r| r.map(|b| Full::new(b).map_err(|never| match never {}).boxed()));
        let header = Attempt {
            req: trace,
            avoid,
            picked,
            kind,
        };
        Arc::clone(&self.core).run(
            header,
            budget,
            req,
            true,
            move |core, req, mark, sender| async move {
                let response = match sender.request(req).await {
                    Ok(r) => r,
                    Err(e) => {
                        if let (Some(unsent), Some(back)) = (e.unsent, back) {
                            back.give_back(*unsent);
                        }
                        return Err(error::transport(&core.name, &e.error));
                    }
                };
                mark_first_byte(mark.as_ref());
                let (mut parts, body) = response.into_parts();
                let body = match read {
                    Read::All { max } => {
                        declared_within(&core.name, &body, max)?;
                        read_all(&core.name, body, max).await?
                    }
                    Read::Keep { max } => {
                        parts.headers.remove(super::RESULT_OMITTED_HEADER);
                        let limit = u64::try_from(max).unwrap_or(u64::MAX);
                        match read_all(&core.name, body, limit).await {
                            Ok(b) => b,
                            // Over the limit: the answer is whole, only too long to keep.
                            Err(e) if e.kind == CallErrorKind::TooLarge => {
                                parts.headers.insert(
                                    super::RESULT_OMITTED_HEADER,
                                    http::HeaderValue::from_static("1"),
                                );
                                Bytes::new()
                            }
                            // Cut off: a head sent before the work was done proves nothing,
                            // so the exchange failed and the delivery is tried again.
                            Err(e) => return Err(e),
                        }
                    }
                };
                Ok(Answer {
                    status: parts.status,
                    headers: parts.headers,
                    body,
                    trail: None,
                })
            },
        )
    }
}

impl tower::Service<Attempt<SendReq>> for Attempts {
    type Response = Tried<Response<Incoming>>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Tried<Response<Incoming>>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, attempt: Attempt<SendReq>) -> Self::Future {
        let Attempt {
            req,
            avoid,
            picked,
            kind,
        } = attempt;
        let SendReq {
            head,
            body,
            budget,
            copy_head,
            trace,
            ..
        } = req;
        let sent_already = |what: &str| {
            CallError::new(
                CallErrorKind::Io,
                format!(
                    "upstream `{}`: the request {what} was already sent and cannot be sent again",
                    self.core.name
                ),
            )
        };
        let body: Result<Body, CallError> = match body {
            None => Ok(Empty::new().map_err(|never| match never {}).boxed()),
            Some(replay) => replay
                .take()
                .map(BodyExt::boxed)
                .ok_or_else(|| sent_already("body")),
        };
        // Taken, not copied, where a later attempt can only follow one that sent nothing and
        // the client hands such a request back; what is needed to undo this attempt's changes
        // to it is kept beside (see [`Undo`]).
        let take = !copy_head && self.core.gives_back;
        let req = body.and_then(|b| {
            let parts = head.get(take).ok_or_else(|| sent_already("head"))?;
            Ok(Request::from_parts(parts, b))
        });
        let undo = match &req {
            Ok(r) if take => Some(Undo::of(r)),
            _ => None,
        };
        let header = Attempt {
            req: trace,
            avoid,
            picked,
            kind,
        };
        let core = Arc::clone(&self.core);
        core.run(
            header,
            budget,
            req,
            false,
            move |core, req, _, sender| async move {
                match sender.request(req).await {
                    Ok(r) => Ok(r),
                    Err(e) => {
                        if let (Some(unsent), Some(undo)) = (e.unsent, undo) {
                            head.give_back(undo.restore(*unsent));
                        }
                        Err(error::transport(&core.name, &e.error))
                    }
                }
            },
        )
    }
}

/// An answer read whole whose `Content-Length` (its size hint) is already past `max` fails at
/// its head: read, it would only fail later, after `max` bytes held, or, sent slowly, as a
/// `timeout` that hides why. (Not for a delivery's answer, [`Read::Keep`]: there an answer over
/// the limit must still arrive whole to count as delivered.)
fn declared_within<B: http_body::Body>(
    upstream: &str,
    body: &B,
    max: u64,
) -> Result<(), CallError> {
    let declared = body.size_hint().lower();
    if declared > max {
        return Err(CallError::new(
            CallErrorKind::TooLarge,
            format!(
                "upstream `{upstream}` answered more than {max} bytes (its Content-Length is {declared})"
            ),
        ));
    }
    Ok(())
}

/// The whole answer body of `upstream`, at most `max` bytes: past it `too_large`, cut off
/// `io`, each naming the upstream. Copied as it arrives ([`read_whole`]): an upstream
/// answering in one-byte chunks held ~38 bytes per byte of its answer when every frame was
/// kept to the end (`Limited::collect`), ~600 MiB for one call at `max_response_bytes`.
pub(super) async fn read_all<B>(upstream: &str, body: B, max: u64) -> Result<Bytes, CallError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<crate::error::BoxError>,
{
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    match read_whole(body, limit).await {
        Ok(b) => Ok(b),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(CallError::new(
            CallErrorKind::TooLarge,
            format!("upstream `{upstream}` answered more than {max} bytes"),
        )),
        Err(e) => Err(CallError::new(
            CallErrorKind::Io,
            format!(
                "reading the body from upstream `{upstream}`: {}",
                error::error_chain(&*e)
            ),
        )),
    }
}

/// Where an attempt's send marks the response head's arrival, when the attempt has a span.
type FirstByte = Option<Arc<std::sync::OnceLock<Instant>>>;

fn mark_first_byte(mark: Option<&Arc<std::sync::OnceLock<Instant>>>) {
    if let Some(m) = mark {
        let _ = m.set(Instant::now());
    }
}
