//! Requests answered before any route ran: no route matched (404), the route does not take the
//! method (405), the listener was at its concurrency limit (503, shed), or the request came
//! round a loop (508, see `crate::via`).
//!
//! They are exactly the requests an operator needs to see when something is wrong — a client
//! probing paths, a deploy that dropped a route, an overload — so they are counted
//! (`manifold_http_server_rejected_requests_total{reason}`) and written to the access log like
//! any other. 404, 405 and 508 also get a SERVER span, without `http.route` (none matched) and named
//! by the method alone, as the semantic conventions ask. A shed request gets no span: it is
//! answered precisely when the gateway has no time to spare, and as a 5xx the tail rule would
//! keep and export every one of them — the counter and the log line say what happened at a
//! fraction of the cost.

use super::Telemetry;
use crate::respond::REQUEST_ID;
use crate::upstream::Body;
use http::{Request, Response};
use http_body::Body as _;
use manifold_telemetry as tm;
use manifold_telemetry::metrics::{Counter, Gauge, Metrics};
use std::sync::Arc;
use tokio::time::Instant;

/// Why a request was answered without a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// 404: no route's path matches.
    NoRoute,
    /// 405: a route's path matches, not with this method.
    MethodNotAllowed,
    /// 503: the listener's concurrency limit was reached.
    Shed,
    /// 508: the request has been through Manifold `server.loop_limit` times (see `crate::via`).
    Loop,
}

impl Reason {
    const ALL: [Reason; 4] = [
        Reason::NoRoute,
        Reason::MethodNotAllowed,
        Reason::Shed,
        Reason::Loop,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Reason::NoRoute => "no_route",
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::Shed => "shed",
            Reason::Loop => "loop",
        }
    }
}

/// The metric handles for rejected requests and the listener's concurrency, resolved once.
#[derive(Debug, Clone)]
pub(super) struct RejectedMetrics {
    counters: [Arc<Counter>; 4],
    limit: Arc<Gauge>,
    in_flight: Arc<Gauge>,
}

impl RejectedMetrics {
    pub(super) fn new(m: &Metrics) -> Self {
        let (limit, in_flight) = m.concurrency();
        RejectedMetrics {
            counters: Reason::ALL.map(|r| m.rejected(r.as_str())),
            limit,
            in_flight,
        }
    }
}

impl Telemetry {
    /// Record a request answered without a route (`resp` is that answer). Gives the answer its
    /// `X-Request-Id` when telemetry records anything, as routed answers get one.
    pub(crate) fn rejected<B>(
        &self,
        req: &Request<B>,
        peer: std::net::IpAddr,
        reason: Reason,
        resp: &mut Response<Body>,
    ) {
        if let Some(m) = &self.rejected {
            m.counters[reason as usize].inc();
        }
        if self.tracer.is_none() && !self.access_log {
            return;
        }
        let started = Instant::now();
        let status = resp.status().as_u16();
        let client_id = crate::respond::client_request_id(req.headers());
        let traced = match (&self.tracer, reason) {
            (Some(tracer), Reason::NoRoute | Reason::MethodNotAllowed | Reason::Loop) => {
                let mut incoming = self.incoming(req.headers(), peer);
                incoming.request_id = client_id
                    .as_ref()
                    .and_then(|v| tm::RequestId::copied(v.as_bytes()));
                let trace = tracer.start(
                    incoming,
                    tm::RootInfo {
                        kind: tm::RootKind::Server,
                        // Any token a client sent, not one a route names: bounded.
                        method: tm::recorded_method(req.method()),
                        // None matched: no `http.route` (see the module's doc).
                        route: Arc::from(""),
                        path: tm::UrlPath::copied(req.uri().path()),
                    },
                );
                let id = Some(trace.request_id().header_value().clone());
                let finished = trace.end(tm::ServerOutcome {
                    status,
                    response_bytes: resp.body().size_hint().exact().unwrap_or(0),
                    ..tm::ServerOutcome::default()
                });
                Some((id, finished.trace_id, finished.duration))
            }
            _ => None,
        };
        let (id, trace_id, duration) = match traced {
            Some((id, trace_id, duration)) => (id, Some(trace_id), duration),
            None => (None, None, started.elapsed()),
        };
        let request_id = id
            .or(client_id)
            .unwrap_or_else(crate::respond::new_request_id);
        resp.headers_mut()
            .entry(REQUEST_ID)
            .or_insert_with(|| request_id.clone());
        if self.access_log {
            crate::access_log::line(
                "",
                req.method(),
                status,
                duration,
                trace_id,
                &request_id,
                &[],
            );
        }
    }

    /// Bring the concurrency gauges up to date before a scrape.
    pub(crate) fn refresh_concurrency(&self, limit: usize, in_flight: usize) {
        if let Some(m) = &self.rejected {
            m.limit.set(i64::try_from(limit).unwrap_or(i64::MAX));
            m.in_flight
                .set(i64::try_from(in_flight).unwrap_or(i64::MAX));
        }
    }
}
