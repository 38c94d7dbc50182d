//! One path out: the stack every outbound request of an `[upstreams.NAME]` goes through.
//!
//! Callers — composed calls (and their cache fills), proxy routes, the offload dispatcher — hand
//! the stack an origin-form request (method, path and query, headers, body) and their budget
//! ([`Budget`]: the request's deadline, if any, and the call's own timeout). The stack picks the
//! endpoint ([`balance`]), builds the absolute URI, bounds the attempt by the smaller of the
//! timeout and the time left (telling the upstream that budget in `Manifold-Deadline-Ms` where
//! the caller does), sends through the pooled client ([`client`]), and returns a classified
//! result ([`error`]). Nothing else builds upstream URIs or maps transport errors, so the
//! policies still to come (breaker, retry budget, hedging, p2c) attach here, once.
//!
//! Two entry points, by body: [`Upstream::fetch`] for the replayable `Bytes` bodies of composed
//! and offloaded calls, reading the whole answer inside the attempt's bound; [`Upstream::send`]
//! for the proxy's streamed body, answering with the response head (the proxy watches the
//! streamed answer itself).

mod balance;
mod breaker;
mod client;
mod endpoints;
pub(crate) mod error;
mod resolve;

pub use client::Body;
pub(crate) use error::error_chain;

use crate::error::{CallError, CallErrorKind};
use bytes::Bytes;
use endpoints::{Endpoints, Lease, Outcome};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use std::time::Duration;
use tokio::time::Instant;

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
    /// At most `max` bytes, dropped, whatever happens (only the status matters, and reading
    /// lets the connection be reused).
    Discard { max: usize },
}

/// An answer read whole (any status: only transport failures are errors here; a caller that
/// treats a status outside 2xx as a failure classifies it with [`error::status`]).
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// The stack of one `[upstreams.NAME]`: its endpoints, balancer and pooled client.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) name: String,
    /// Per attempt, never past the request's deadline; also the proxy's idle bound on a
    /// streamed answer.
    pub(crate) timeout: Duration,
    endpoints: Endpoints,
    pool: client::Pool,
}

impl Upstream {
    pub(crate) fn new(up: &manifold_config::Upstream) -> Self {
        Upstream {
            name: up.name.clone(),
            timeout: up.timeout,
            endpoints: Endpoints::new(up),
            pool: client::Pool::new(up),
        }
    }

    /// The bound of an attempt starting `now`.
    pub(crate) fn bound(&self, now: Instant, budget: &Budget) -> Bound {
        Bound::new(now, budget.timeout.unwrap_or(self.timeout), budget.deadline)
    }

    /// Send a streamed request; the bound covers the response head only (the caller streams
    /// the answer, bounding it as it sees fit).
    pub(crate) async fn send(
        &self,
        req: Request<Body>,
        budget: Budget,
    ) -> Result<Response<Incoming>, CallError> {
        let lease = self.endpoints.pick(None)?;
        let bound = self.bound(lease.started(), &budget);
        let req = self.prepare(req, &lease, &bound, budget.announce)?;
        let result = match tokio::time::timeout_at(bound.until, self.pool.request(req)).await {
            Ok(r) => r.map_err(|e| error::transport(&self.name, &e)),
            Err(_) => Err(error::no_answer(
                &self.name,
                bound.by_deadline,
                bound.within,
            )),
        };
        match &result {
            Ok(response) => lease.finish(Outcome::Answered(response.status())),
            Err(e) => lease.finish(Outcome::Failed(&e.kind)),
        }
        result
    }

    /// Send a request with a replayable body and read the answer as `read` says, all inside
    /// the attempt's bound.
    pub(crate) async fn fetch(
        &self,
        req: Request<Bytes>,
        budget: Budget,
        read: Read,
    ) -> Result<Answer, CallError> {
        let lease = self.endpoints.pick(None)?;
        let bound = self.bound(lease.started(), &budget);
        let req = self.prepare(req, &lease, &bound, budget.announce)?;
        let req = req.map(|b| Full::new(b).map_err(|never| match never {}).boxed());
        let attempt = async {
            let response = self
                .pool
                .request(req)
                .await
                .map_err(|e| error::transport(&self.name, &e))?;
            let (parts, body) = response.into_parts();
            let body = match read {
                Read::All { max } => self.read_all(body, max).await?,
                Read::Discard { max } => {
                    let _ = Limited::new(body, max).collect().await;
                    Bytes::new()
                }
            };
            Ok::<_, CallError>(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        let result = match tokio::time::timeout_at(bound.until, attempt).await {
            Ok(r) => r,
            Err(_) => Err(error::no_answer(
                &self.name,
                bound.by_deadline,
                bound.within,
            )),
        };
        match &result {
            Ok(answer) => lease.finish(Outcome::Answered(answer.status)),
            Err(e) => lease.finish(Outcome::Failed(&e.kind)),
        }
        result
    }

    async fn read_all(&self, body: Incoming, max: u64) -> Result<Bytes, CallError> {
        let limit = usize::try_from(max).unwrap_or(usize::MAX);
        match Limited::new(body, limit).collect().await {
            Ok(c) => Ok(c.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(CallError::new(
                CallErrorKind::TooLarge,
                format!("upstream `{}` answered more than {max} bytes", self.name),
            )),
            Err(e) => Err(CallError::new(
                CallErrorKind::Io,
                format!(
                    "reading the body from upstream `{}`: {}",
                    self.name,
                    error_chain(&*e)
                ),
            )),
        }
    }

    /// Make the URI absolute against the leased endpoint, and announce the budget.
    fn prepare<B>(
        &self,
        req: Request<B>,
        lease: &Lease,
        bound: &Bound,
        announce: bool,
    ) -> Result<Request<B>, CallError> {
        let (mut parts, body) = req.into_parts();
        parts.uri = lease
            .target()
            .absolute(std::mem::take(&mut parts.uri), &self.name)?;
        lease.target().host(&mut parts.headers);
        if announce {
            let ms = u64::try_from(bound.within.as_millis()).unwrap_or(u64::MAX);
            parts.headers.insert(
                HeaderName::from_static(DEADLINE_HEADER),
                HeaderValue::from(ms),
            );
        }
        Ok(Request::from_parts(parts, body))
    }
}

#[cfg(test)]
mod tests;
