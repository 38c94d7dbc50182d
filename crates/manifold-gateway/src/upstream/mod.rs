//! One path out: the stack every outbound request of an `[upstreams.NAME]` goes through.
//!
//! Callers — composed calls (and their cache fills), proxy routes, the offload dispatcher — hand
//! the stack an origin-form request (method, path and query, headers, body) and their budget
//! ([`Budget`]: the request's deadline, if any, and the call's own timeout). Nothing else builds
//! upstream URIs or maps transport errors, so every policy attaches here, once, as a tower
//! service over the next:
//!
//! - [`retry`]: tries an outcome named in `retry.on` again, under the upstream's retry budget,
//!   after a jittered backoff, never past the deadline, and only when the request may be sent
//!   twice (idempotent, or nothing was sent);
//! - [`hedge`]: with `hedge` set, sends a second attempt of an idempotent call that has not
//!   answered by the upstream's live latency percentile, keeping the first good answer;
//! - [`attempt`]: one attempt — the endpoint's lease ([`endpoints`]: balancing and breaking),
//!   the bound (the smaller of the timeout and the time left, told to the upstream in
//!   `Manifold-Deadline-Ms` where the caller does), the pooled client ([`client`]), and the
//!   classification ([`error`]).
//!
//! A failed call's error carries its [`error::Trail`]: the upstream, each attempt's endpoint
//! and how it ended, and why no further attempt was made.
//!
//! Two entry points, by body: [`Upstream::fetch`] for the replayable `Bytes` bodies of composed
//! and offloaded calls, reading the whole answer inside the attempt's bound; [`Upstream::send`]
//! for the proxy's streamed body, answering with the response head (the proxy watches the
//! streamed answer itself).

mod attempt;
mod balance;
mod breaker;
mod client;
mod endpoints;
pub(crate) mod error;
mod hedge;
mod request;
mod resolve;
mod retry;
mod tls;

pub use client::Body;
pub(crate) use error::error_chain;

use crate::error::CallError;
use crate::telemetry::CallTrace;
use attempt::Attempts;
use bytes::Bytes;
use hedge::{Hedge, HedgeLayer};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;
use request::{is_idempotent, FetchReq, SendReq};
use retry::replay::FetchHead;
use retry::replay::{ReplayBody, ReplayHead};
use retry::{Retry, RetryLayer, Retrying};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tower::Layer;

/// The header carrying the remaining end-to-end budget, in milliseconds, to each upstream.
pub const DEADLINE_HEADER: &str = "manifold-deadline-ms";

/// What a caller allows one call: the stack bounds each attempt by the smaller of the timeout
/// and what is left before the deadline.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    /// The request's end-to-end deadline, when it has one.
    pub(crate) deadline: Option<Instant>,
    /// The call's own timeout (`timeout` on a call), instead of the upstream's.
    pub(crate) timeout: Option<Duration>,
    /// Whether the upstream is told its budget in `Manifold-Deadline-Ms`. Composed calls always
    /// are; a proxied request only when its route has a deadline; a queued delivery never (it
    /// has no client waiting).
    pub(crate) announce: bool,
    /// Whether the call may be sent more than once (retried past a failed connect, hedged), as
    /// its config decided (`Call::idempotent`: written, or from its method and headers);
    /// `None` for a request without a call (proxied): decided from its method and headers.
    pub(crate) idempotent: Option<bool>,
    /// Retried only when nothing was sent (`connect`), whatever the method and the policy: a
    /// queued delivery, which the queue retries on its own schedule.
    pub(crate) connect_only: bool,
}

/// One attempt's bound: until when, how long that is from its start, and which limit it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bound {
    pub(crate) until: Instant,
    pub(crate) within: Duration,
    /// The request's deadline is the tighter limit (a miss is `deadline`, not `timeout`).
    pub(crate) by_deadline: bool,
}

impl Bound {
    /// The smaller of `timeout` from `now` and `deadline`.
    pub(crate) fn new(now: Instant, timeout: Duration, deadline: Option<Instant>) -> Bound {
        let own = now + timeout;
        let (until, by_deadline) = match deadline {
            Some(d) if d < own => (d, true),
            _ => (own, false),
        };
        Bound {
            until,
            within: until.saturating_duration_since(now),
            by_deadline,
        }
    }
}

/// How much of an answer [`Upstream::fetch`] reads.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Read {
    /// All of it, failing `too_large` past `max` bytes.
    All { max: u64 },
    /// Up to `max` bytes kept (a delivery's answer, the task's result); past it the body is
    /// dropped and the answer carries [`RESULT_OMITTED_HEADER`] instead of failing. A body cut
    /// off before its end is an `io` error, as with [`Read::All`].
    Keep { max: usize },
}

/// Set (by the gateway, never taken from the upstream) on an answer read with [`Read::Keep`]
/// whose body was over the limit and not kept.
pub(crate) const RESULT_OMITTED_HEADER: &str = "manifold-result-omitted";

/// An answer read whole (any status: only transport failures are errors here; a caller that
/// treats a status outside 2xx as a failure classifies it with [`error::status`]).
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// The attempts behind an answer that was not a plain first-time success (a caller that
    /// makes it an error shows them).
    pub(crate) trail: Option<Box<error::Trail>>,
}

/// The stack of one `[upstreams.NAME]`: retry ─► hedge ─► attempt (lease, bound, pooled
/// client). Built once; each call runs the retry policy in place (not as a boxed service
/// future) over a clone of the services below it (a few `Arc`s).
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) name: String,
    /// Per attempt, never past the request's deadline; also the proxy's idle bound on a
    /// streamed answer.
    pub(crate) timeout: Duration,
    fetch: Retry<Hedge<Attempts>>,
    /// A streamed proxy request is never hedged: its body can go to one upstream only (and a
    /// bodiless one is not worth a second code path here).
    send: Retry<Attempts>,
}

/// Names it in log lines: "upstream `NAME`".
impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "upstream `{}`", self.name)
    }
}

impl Upstream {
    /// The stack of `up`; fails when its TLS files cannot be used.
    pub(crate) fn new(up: &manifold_config::Upstream) -> Result<Self, crate::tls::TlsError> {
        let attempts = Attempts::new(up)?;
        let retrying = Arc::new(Retrying::new(&up.name, up.timeout, &up.policies.retry));
        let retry = RetryLayer::new(retrying);
        let hedge = HedgeLayer::new(up.policies.hedge.as_ref());
        Ok(Upstream {
            name: up.name.clone(),
            timeout: up.timeout,
            fetch: retry.layer(hedge.layer(attempts.clone())),
            send: retry.layer(attempts),
        })
    }

    /// The bound of an attempt starting `now`.
    pub(crate) fn bound(&self, now: Instant, budget: &Budget) -> Bound {
        Bound::new(now, budget.timeout.unwrap_or(self.timeout), budget.deadline)
    }

    /// Send a streamed request; each attempt's bound covers the response head only (the
    /// caller streams the answer, bounding it as it sees fit). A request with a body is retried
    /// only when its body was never read (a failed connect); a bodiless one as any other.
    /// The endpoint set (tests look at what the resolver made of it).
    #[cfg(test)]
    fn endpoints(&self) -> &endpoints::Endpoints {
        self.send.inner().endpoints()
    }

    /// Each current endpoint's name, breaker state and balancer cost (seconds), for `/metrics`.
    /// Whether its clients hand back a request that failed before any of it was sent (see
    /// [`FetchHead`]).
    fn gives_back(&self) -> bool {
        self.send.inner().gives_back()
    }

    pub(crate) fn endpoint_gauges(
        &self,
    ) -> Vec<(String, manifold_telemetry::metrics::BreakerState, f64)> {
        self.send.inner().endpoints().gauges(Instant::now())
    }

    ///
    /// `trace`: the call's trace context, when it is not in the request's extensions.
    pub(crate) async fn send(
        &self,
        req: Request<Body>,
        budget: Budget,
        trace: Option<CallTrace>,
    ) -> Result<Response<Incoming>, CallError> {
        let (parts, body) = req.into_parts();
        let idempotent = is_idempotent(&parts.method, &parts.headers, &budget);
        let body = (!body.is_end_stream()).then(|| ReplayBody::new(body));
        // Only a bodiless idempotent request is retried after it was sent (`SendReq::idempotent`).
        let copy_head = idempotent && body.is_none() && self.send.retries_what_was_sent();
        let req = SendReq {
            head: ReplayHead::new(parts),
            body,
            budget,
            idempotent,
            copy_head,
            trace,
        };
        self.send.run(req).await
    }

    /// Send a request with a replayable body and read the answer as `read` says, each
    /// attempt inside its bound.
    pub(crate) async fn fetch(
        &self,
        mut req: Request<Bytes>,
        budget: Budget,
        read: Read,
    ) -> Result<Answer, CallError> {
        // The call's trace context moves beside the request (see `FetchReq::trace`); an
        // extension map left empty goes too, so copies of the request have none to copy.
        let extensions = req.extensions_mut();
        let trace = extensions.remove::<CallTrace>();
        if extensions.is_empty() {
            *extensions = http::Extensions::new();
        }
        self.fetch_traced(req, budget, read, trace).await
    }

    /// [`Upstream::fetch`] for a request whose call's trace context is handed beside it
    /// rather than in its extensions (a composed call's: no extension map to allocate).
    pub(crate) async fn fetch_traced(
        &self,
        req: Request<Bytes>,
        budget: Budget,
        read: Read,
        trace: Option<CallTrace>,
    ) -> Result<Answer, CallError> {
        let idempotent = is_idempotent(req.method(), req.headers(), &budget);
        let req = FetchReq {
            req: FetchHead::new(req, idempotent, self.gives_back()),
            trace,
            budget,
            read,
            idempotent,
        };
        self.fetch.run(req).await
    }
}

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;
