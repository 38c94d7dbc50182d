//! An upstream's endpoints and the choice of one per attempt.
//!
//! The stack asks [`Endpoints::pick`] for a [`Lease`] on one endpoint before each attempt and
//! hands the lease back with the attempt's [`Outcome`] ([`Lease::finish`]). Everything that
//! needs per-endpoint state — the balancer's in-flight counts and latency estimates, circuit
//! breaking and ejection, re-resolved addresses — lives behind these two calls, so the stack's
//! retry and hedge loop does not change when they do.

use super::balance::Balancer;
use crate::error::{CallError, CallErrorKind};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{StatusCode, Uri};
use std::sync::Arc;
use tokio::time::Instant;

/// Names one endpoint across picks: a retry or hedge passes the last one back to prefer another.
pub(crate) type EndpointId = usize;

/// One endpoint, parsed once at load: the hot path only clones refcounted parts.
#[derive(Debug)]
pub(super) struct Target {
    /// `None` when the configured authority does not parse (the compiler should have refused it).
    authority: Option<Authority>,
    /// The authority as configured, for errors and logs.
    #[allow(dead_code)] // skeleton: named in errors once item 7 lands
    shown: String,
    /// A path prefix every request's path is appended to ("" for none).
    base_path: String,
}

impl Target {
    fn new(ep: &manifold_config::Endpoint) -> Target {
        Target {
            authority: Authority::try_from(ep.authority.as_str()).ok(),
            shown: ep.authority.clone(),
            base_path: ep.base_path.clone(),
        }
    }

    /// `origin` (path and query) made absolute against this endpoint.
    pub(super) fn absolute(&self, origin: Uri, upstream: &str) -> Result<Uri, CallError> {
        let bad = |e: &dyn std::fmt::Display| {
            CallError::new(
                CallErrorKind::Input,
                format!("cannot build the URL for upstream `{upstream}`: {e}"),
            )
        };
        let authority = self
            .authority
            .clone()
            .ok_or_else(|| bad(&"its endpoint's host is not valid"))?;
        let origin = origin.into_parts().path_and_query;
        let path_and_query = if self.base_path.is_empty() {
            origin.unwrap_or_else(|| PathAndQuery::from_static("/"))
        } else {
            let tail = origin.as_ref().map_or("/", PathAndQuery::as_str);
            let mut joined = String::with_capacity(self.base_path.len() + tail.len());
            joined.push_str(&self.base_path);
            joined.push_str(tail);
            PathAndQuery::try_from(joined).map_err(|e| bad(&e))?
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(authority);
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts).map_err(|e| bad(&e))
    }
}

/// How an attempt on a leased endpoint ended, as the balancer and breaker count it.
#[allow(dead_code)] // skeleton: read once p2c and the breaker land (issue 13, items 2-3)
#[derive(Debug, Clone, Copy)]
pub(super) enum Outcome<'a> {
    /// The endpoint answered with this status (for a streamed proxy answer: its head).
    Answered(StatusCode),
    /// The attempt failed this way.
    Failed(&'a CallErrorKind),
    /// The attempt was abandoned before it ended (a hedge's loser, a cancelled request): it
    /// says nothing about the endpoint.
    Cancelled,
}

/// The endpoints of one upstream.
#[derive(Debug)]
pub(super) struct Endpoints {
    upstream: String,
    targets: Vec<Arc<Target>>,
    balancer: Balancer,
}

impl Endpoints {
    pub(super) fn new(up: &manifold_config::Upstream) -> Endpoints {
        let targets: Vec<Arc<Target>> = up
            .endpoints
            .iter()
            .map(|ep| Arc::new(Target::new(ep)))
            .collect();
        Endpoints {
            upstream: up.name.clone(),
            balancer: Balancer::new(targets.len()),
            targets,
        }
    }

    /// A lease on the endpoint the next attempt goes to, preferring one other than `avoid` (the
    /// previous attempt's) where there is a choice. Fails at once when there is none to take
    /// traffic.
    pub(super) fn pick(&self, avoid: Option<EndpointId>) -> Result<Lease, CallError> {
        let _ = avoid;
        let id = self.balancer.pick().ok_or_else(|| {
            CallError::new(
                CallErrorKind::Connect,
                format!("upstream `{}` has no endpoints", self.upstream),
            )
        })?;
        let target = self.targets.get(id).cloned().ok_or_else(|| {
            CallError::new(
                CallErrorKind::Connect,
                format!("upstream `{}` has no endpoint {id}", self.upstream),
            )
        })?;
        Ok(Lease {
            id,
            target,
            started: Instant::now(),
        })
    }
}

/// One attempt's hold on an endpoint, from the pick until [`Lease::finish`]. Dropped without
/// finishing counts as [`Outcome::Cancelled`].
#[derive(Debug)]
pub(super) struct Lease {
    id: EndpointId,
    target: Arc<Target>,
    started: Instant,
}

impl Lease {
    #[allow(dead_code)] // skeleton: retries and hedges avoid it (items 4-5)
    pub(super) fn id(&self) -> EndpointId {
        self.id
    }

    pub(super) fn target(&self) -> &Target {
        &self.target
    }

    /// The endpoint's `host:port`, for errors and logs.
    #[allow(dead_code)] // skeleton: named in errors once item 7 lands
    pub(super) fn endpoint(&self) -> &str {
        &self.target.shown
    }

    /// When the attempt started.
    pub(super) fn started(&self) -> Instant {
        self.started
    }

    /// Report how the attempt ended.
    pub(super) fn finish(self, outcome: Outcome<'_>) {
        let _ = outcome;
    }
}
