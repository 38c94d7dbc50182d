//! Prometheus metrics: every family the gateway records, named in this one place, with typed
//! handles the gateway resolves once and records on with atomics.
//!
//! Names follow Prometheus conventions: base units in the name (`_seconds`), counters end in
//! `_total`, labels hold low-cardinality values only (route, call and upstream names from the
//! config, status classes, error kinds from a fixed classification, endpoints from the config).

pub mod family;
mod live;
mod process;
pub mod render;

use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

pub use family::{
    BreakerState, Counter, Exemplar, Family, Gauge, GaugeF64, Histogram, HistogramSnapshot,
    StateGauge, LATENCY_BUCKETS,
};
pub use live::LiveRoutes;
pub use render::Format;

use crate::context::{SpanId, TraceId};
use crate::span::CacheOutcome;
use crate::stats::{DropReason, SpanStats};

/// The registry. Cheap to clone; render it on the admin listener's `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    inner: Arc<Registry>,
}

#[derive(Debug)]
struct Registry {
    request_duration: Family<Histogram, 2>,
    active_requests: Family<Gauge, 1>,
    rejected: Family<Counter, 1>,
    concurrency_limit: Family<Gauge, 0>,
    concurrency_in_flight: Family<Gauge, 0>,
    open_connections: Family<Gauge, 1>,
    connections: Family<Counter, 1>,
    max_connections: Family<Gauge, 1>,
    call_duration: Family<Histogram, 3>,
    calls: Family<Counter, 4>,
    call_errors: Family<Counter, 4>,
    cache_hits: Family<Counter, 3>,
    cache_misses: Family<Counter, 2>,
    cache_coalesced: Family<Counter, 2>,
    queue_depth: Family<Gauge, 1>,
    queue_oldest_age: Family<GaugeF64, 1>,
    queue_dead_letters: Family<Counter, 1>,
    queue_deliveries: Family<Counter, 2>,
    queue_retries: Family<Counter, 1>,
    breaker_state: Family<StateGauge, 2>,
    balancer_cost: Family<GaugeF64, 2>,
    span_stats: OnceLock<Arc<SpanStats>>,
    /// The running config's routes and calls; `None` until the gateway says (every series is
    /// kept).
    live: RwLock<Option<LiveRoutes>>,
    /// When the registry was made (at the gateway's start): `process_start_time_seconds`.
    started: std::time::SystemTime,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            request_duration: Family::new(
                "manifold_http_server_request_duration_seconds",
                "Time from a request's arrival to its response, by route and status class.",
                ["route", "status_class"],
            ),
            active_requests: Family::new(
                "manifold_http_server_active_requests",
                "Requests being handled now, by route.",
                ["route"],
            ),
            rejected: Family::new(
                "manifold_http_server_rejected_requests_total",
                "Requests answered before any route ran: no_route (404), method_not_allowed (405), shed (503 at the concurrency limit), loop (508: the request came round a loop back to the gateway).",
                ["reason"],
            ),
            concurrency_limit: Family::new(
                "manifold_concurrency_limit",
                "The listener's concurrency limit now (fixed, or where the adaptive limit stands).",
                [],
            ),
            concurrency_in_flight: Family::new(
                "manifold_concurrency_in_flight",
                "Requests holding a concurrency permit now.",
                [],
            ),
            open_connections: Family::new(
                "manifold_http_server_open_connections",
                "Client connections open now, parked idle ones included, by listener (http, https, admin).",
                ["listener"],
            ),
            connections: Family::new(
                "manifold_http_server_connections_total",
                "Client connections accepted, by listener.",
                ["listener"],
            ),
            max_connections: Family::new(
                "manifold_http_server_max_connections",
                "The most connections a listener serves at once (server.max_connections); past it, new ones wait in the listen backlog.",
                ["listener"],
            ),
            call_duration: Family::new(
                "manifold_call_duration_seconds",
                "Time of each upstream call attempt, by route, call and upstream.",
                ["route", "call", "upstream"],
            ),
            calls: Family::new(
                "manifold_calls_total",
                "Calls by outcome: ok, error, or partial (an optional call failed and the answer went out without it).",
                ["route", "call", "upstream", "outcome"],
            ),
            call_errors: Family::new(
                "manifold_call_errors_total",
                "Failed calls by error type (timeout, connect, reset, a status code, ...).",
                ["route", "call", "upstream", "error_type"],
            ),
            cache_hits: Family::new(
                "manifold_cache_hits_total",
                "Calls answered from the cache, by tier (l1, l2, stale).",
                ["route", "call", "tier"],
            ),
            cache_misses: Family::new(
                "manifold_cache_misses_total",
                "Cached calls that went upstream.",
                ["route", "call"],
            ),
            cache_coalesced: Family::new(
                "manifold_cache_coalesced_waits_total",
                "Cached calls that waited on another request's fill of the same key.",
                ["route", "call"],
            ),
            queue_depth: Family::new(
                "manifold_queue_depth",
                "Tasks waiting in the queue.",
                ["queue"],
            ),
            queue_oldest_age: Family::new(
                "manifold_queue_oldest_task_age_seconds",
                "Age of the oldest task waiting in the queue.",
                ["queue"],
            ),
            queue_dead_letters: Family::new(
                "manifold_queue_dead_letters_total",
                "Tasks given up on and moved to the dead-letter store.",
                ["queue"],
            ),
            queue_deliveries: Family::new(
                "manifold_queue_deliveries_total",
                "Delivery attempts of queued tasks, by outcome (ok, failed).",
                ["queue", "outcome"],
            ),
            queue_retries: Family::new(
                "manifold_queue_delivery_retries_total",
                "Deliveries scheduled again after a failure.",
                ["queue"],
            ),
            breaker_state: Family::new(
                "manifold_upstream_breaker_state",
                "Circuit breaker state per endpoint: 1 for the current state, 0 for the others.",
                ["upstream", "endpoint"],
            ),
            balancer_cost: Family::new(
                "manifold_upstream_balancer_cost",
                "The balancer's cost estimate per endpoint (peak-EWMA latency times load; lower is preferred).",
                ["upstream", "endpoint"],
            ),
            span_stats: OnceLock::new(),
            live: RwLock::new(None),
            started: std::time::SystemTime::now(),
        }
    }
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Render span export counters (`manifold_telemetry_*`) from these statistics. The first
    /// call wins; later ones are ignored.
    pub fn attach_span_stats(&self, stats: Arc<SpanStats>) {
        let _ = self.inner.span_stats.set(stats);
    }

    /// Handles for one route.
    pub fn route(&self, route: &str) -> RouteMetrics {
        RouteMetrics {
            registry: Arc::clone(&self.inner),
            route: Arc::from(route),
            active: self.inner.active_requests.get([route]),
            by_class: Default::default(),
        }
    }

    /// Handles for one call of one route.
    pub fn call(&self, route: &str, call: &str, upstream: &str) -> CallMetrics {
        let r = &self.inner;
        let labels = |outcome| r.calls.get([route, call, upstream, outcome]);
        CallMetrics {
            registry: Arc::clone(r),
            labels: [route, call, upstream].map(Arc::from),
            duration: r.call_duration.get([route, call, upstream]),
            ok: labels("ok"),
            error: labels("error"),
            partial: labels("partial"),
            cache: Default::default(),
        }
    }

    /// Handles for one queue.
    pub fn queue(&self, queue: &str) -> QueueMetrics {
        let r = &self.inner;
        QueueMetrics {
            depth: r.queue_depth.get([queue]),
            oldest_age: r.queue_oldest_age.get([queue]),
            dead_letters: r.queue_dead_letters.get([queue]),
            delivered: r.queue_deliveries.get([queue, "ok"]),
            failed: r.queue_deliveries.get([queue, "failed"]),
            retries: r.queue_retries.get([queue]),
        }
    }

    /// The counter of requests answered before a route ran, for one reason (`no_route`,
    /// `method_not_allowed`, `shed`).
    pub fn rejected(&self, reason: &str) -> Arc<Counter> {
        self.inner.rejected.get([reason])
    }

    /// The listener's concurrency gauges: the limit and the requests holding a permit.
    pub fn concurrency(&self) -> (Arc<Gauge>, Arc<Gauge>) {
        (
            self.inner.concurrency_limit.get([]),
            self.inner.concurrency_in_flight.get([]),
        )
    }

    /// A listener's connection handles (`listener`: `http`, `https` or `admin`), its
    /// `max_connections` recorded. The gateway counts each accept and holds the open gauge up
    /// for as long as the connection lives, parked or not.
    pub fn listener(&self, listener: &str, max_connections: usize) -> ListenerMetrics {
        self.inner
            .max_connections
            .get([listener])
            .set(i64::try_from(max_connections).unwrap_or(i64::MAX));
        ListenerMetrics {
            open: self.inner.open_connections.get([listener]),
            accepted: self.inner.connections.get([listener]),
        }
    }

    /// Handles for one endpoint of one upstream (breaker and balancer).
    pub fn endpoint(&self, upstream: &str, endpoint: &str) -> EndpointMetrics {
        EndpointMetrics {
            breaker: self.inner.breaker_state.get([upstream, endpoint]),
            cost: self.inner.balancer_cost.get([upstream, endpoint]),
        }
    }

    /// Drop the breaker and balancer series of every endpoint but `current` (upstream,
    /// endpoint): an address re-resolution removed, or an upstream a reload removed, is gone,
    /// and its last breaker state must not show forever (nor its series pile up as a name's
    /// addresses change over weeks).
    pub fn retain_endpoints(&self, current: &std::collections::HashSet<(&str, &str)>) {
        let keep = |k: &[Arc<str>; 2]| current.contains(&(&*k[0], &*k[1]));
        self.inner.breaker_state.retain(keep);
        self.inner.balancer_cost.retain(keep);
    }

    /// The routes and calls of the config now running (at start and after each reload): the
    /// series of every other route and call end here, and at each later render (see
    /// [`LiveRoutes`]).
    pub fn set_live_routes(&self, live: LiveRoutes) {
        live::retain(&self.inner, &live);
        *self
            .inner
            .live
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(live);
    }

    /// The exposition, in the format asked for.
    pub fn render(&self, format: Format) -> String {
        let r = &self.inner;
        if let Some(live) = &*r.live.read().unwrap_or_else(PoisonError::into_inner) {
            live::retain(r, live);
        }
        let mut w = render::Writer::new(format);
        w.histograms(&r.request_duration);
        w.gauges(&r.active_requests);
        w.counters(&r.rejected);
        w.gauges(&r.concurrency_limit);
        w.gauges(&r.concurrency_in_flight);
        w.gauges(&r.open_connections);
        w.counters(&r.connections);
        w.gauges(&r.max_connections);
        w.histograms(&r.call_duration);
        w.counters(&r.calls);
        w.counters(&r.call_errors);
        w.counters(&r.cache_hits);
        w.counters(&r.cache_misses);
        w.counters(&r.cache_coalesced);
        w.gauges(&r.queue_depth);
        w.gauges_f64(&r.queue_oldest_age);
        w.counters(&r.queue_dead_letters);
        w.counters(&r.queue_deliveries);
        w.counters(&r.queue_retries);
        w.states(&r.breaker_state);
        w.gauges_f64(&r.balancer_cost);
        if let Some(s) = r.span_stats.get() {
            w.counter_values(
                "manifold_telemetry_spans_exported_total",
                "Spans the OTLP collector accepted.",
                &[(&[], s.exported_total())],
            );
            let rows: Vec<([(&str, &str); 1], u64)> = DropReason::ALL
                .iter()
                .map(|r| ([("reason", r.as_str())], s.dropped_total(*r)))
                .collect();
            let rows: Vec<(&[(&str, &str)], u64)> =
                rows.iter().map(|(l, v)| (&l[..], *v)).collect();
            w.counter_values(
                "manifold_telemetry_spans_dropped_total",
                "Spans not exported: queue full (collector slow or down), export failed, trace too large, or ended after its request.",
                &rows,
            );
            w.counter_values(
                "manifold_telemetry_traces_total",
                "Finished requests by sampling decision: head (sampled), tail (kept as an error or slow), dropped.",
                &[
                    (&[("decision", "head")], s.traces_kept_total()),
                    (&[("decision", "tail")], s.traces_kept_by_tail_total()),
                    (&[("decision", "dropped")], s.traces_sampled_out_total()),
                ],
            );
        }
        let rows: Vec<([(&str, &str); 1], u64)> = crate::log_out::STREAMS
            .iter()
            .map(|s| ([("stream", *s)], crate::log_out::dropped_lines(s)))
            .collect();
        let rows: Vec<(&[(&str, &str)], u64)> = rows.iter().map(|(l, v)| (&l[..], *v)).collect();
        w.counter_values(
            "manifold_log_lines_dropped_total",
            "Log lines dropped because their reader did not keep up (access: the access log on stdout; log: the gateway's log on stderr); a stalled reader never holds a request.",
            &rows,
        );
        process::Process::read().render(&mut w, r.started);
        w.finish()
    }
}

/// One listener's connection handles ([`Metrics::listener`]).
#[derive(Clone, Debug)]
pub struct ListenerMetrics {
    /// Connections open now.
    pub open: Arc<Gauge>,
    /// Connections accepted.
    pub accepted: Arc<Counter>,
}

/// The status class label of a status code (`2xx`; anything outside 100..=599 is `other`).
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

/// A route's handles.
#[derive(Debug)]
pub struct RouteMetrics {
    registry: Arc<Registry>,
    route: Arc<str>,
    active: Arc<Gauge>,
    by_class: [OnceLock<Arc<Histogram>>; 6],
}

impl RouteMetrics {
    /// The series' `route` label.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// A request started; the guard counts it active until finished or dropped.
    pub fn start(&self) -> ActiveRequest<'_> {
        self.active.inc();
        ActiveRequest { route: self }
    }

    fn histogram(&self, status: u16) -> &Histogram {
        let class = status_class(status);
        let idx = usize::from(status / 100).saturating_sub(1).min(5);
        let idx = if class == "other" { 5 } else { idx };
        self.by_class[idx].get_or_init(|| self.registry.request_duration.get([&self.route, class]))
    }
}

/// An active request; dropping it without [`ActiveRequest::finish`] only ends the count.
#[derive(Debug)]
pub struct ActiveRequest<'a> {
    route: &'a RouteMetrics,
}

impl ActiveRequest<'_> {
    /// Record the request's duration under its status class (and its trace as the exemplar).
    pub fn finish(self, status: u16, elapsed: Duration, exemplar: Option<(TraceId, SpanId)>) {
        self.route.histogram(status).observe(elapsed, exemplar);
    }
}

impl Drop for ActiveRequest<'_> {
    fn drop(&mut self) {
        self.route.active.dec();
    }
}

/// How a call ended, for its counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallResult<'a> {
    /// Answered.
    Ok,
    /// Failed; `partial` when the request answered without it (an optional call).
    Error {
        /// `error.type`: the classified failure.
        kind: &'a str,
        /// The answer went out without this call.
        partial: bool,
    },
}

/// A call's handles.
#[derive(Debug)]
pub struct CallMetrics {
    registry: Arc<Registry>,
    labels: [Arc<str>; 3],
    duration: Arc<Histogram>,
    ok: Arc<Counter>,
    error: Arc<Counter>,
    partial: Arc<Counter>,
    /// l1, l2, stale hits; misses; coalesced waits.
    cache: [OnceLock<Arc<Counter>>; 5],
}

impl CallMetrics {
    /// The series' labels: route, call, upstream.
    pub fn labels(&self) -> [&str; 3] {
        self.labels.each_ref().map(|l| &**l)
    }

    /// Record one attempt's duration (and its span as the exemplar when sampled).
    pub fn observe(&self, elapsed: Duration, exemplar: Option<(TraceId, SpanId)>) {
        self.duration.observe(elapsed, exemplar);
    }

    /// Record how the call ended. Error kinds are looked up (a read lock) on this, the error
    /// path only.
    pub fn outcome(&self, result: CallResult<'_>) {
        match result {
            CallResult::Ok => self.ok.inc(),
            CallResult::Error { kind, partial } => {
                if partial {
                    self.partial.inc();
                } else {
                    self.error.inc();
                }
                let [route, call, upstream] = &self.labels;
                self.registry
                    .call_errors
                    .get([route, call, upstream, kind])
                    .inc();
            }
        }
    }

    /// Record where a cached call's answer came from.
    pub fn cache(&self, outcome: CacheOutcome) {
        let idx = outcome as usize;
        let [route, call, _] = &self.labels;
        self.cache[idx]
            .get_or_init(|| {
                let r = &self.registry;
                match outcome {
                    CacheOutcome::Miss => r.cache_misses.get([route, call]),
                    CacheOutcome::Coalesced => r.cache_coalesced.get([route, call]),
                    tier => r.cache_hits.get([route, call, tier.as_str()]),
                }
            })
            .inc();
    }
}

/// A queue's handles.
#[derive(Debug)]
pub struct QueueMetrics {
    depth: Arc<Gauge>,
    oldest_age: Arc<GaugeF64>,
    dead_letters: Arc<Counter>,
    delivered: Arc<Counter>,
    failed: Arc<Counter>,
    retries: Arc<Counter>,
}

impl QueueMetrics {
    /// Tasks waiting now.
    pub fn set_depth(&self, tasks: u64) {
        self.depth.set(i64::try_from(tasks).unwrap_or(i64::MAX));
    }

    /// The oldest waiting task's age (zero when empty).
    pub fn set_oldest_age(&self, age: Duration) {
        self.oldest_age.set(age.as_secs_f64());
    }

    /// A task was dead-lettered.
    pub fn dead_letter(&self) {
        self.dead_letters.inc();
    }

    /// A delivery attempt ended.
    pub fn delivery(&self, ok: bool) {
        if ok {
            self.delivered.inc();
        } else {
            self.failed.inc();
        }
    }

    /// A failed delivery was scheduled again.
    pub fn retry(&self) {
        self.retries.inc();
    }

    /// Add counts read from a dispatcher's own counters since the last time (delivered,
    /// failed, retried, dead-lettered): one atomic add each, however many there were.
    pub fn add_counts(&self, delivered: u64, failed: u64, retried: u64, dead_lettered: u64) {
        self.delivered.add(delivered);
        self.failed.add(failed);
        self.retries.add(retried);
        self.dead_letters.add(dead_lettered);
    }
}

/// An endpoint's handles.
#[derive(Debug)]
pub struct EndpointMetrics {
    breaker: Arc<StateGauge>,
    cost: Arc<GaugeF64>,
}

impl EndpointMetrics {
    /// The breaker changed state.
    pub fn set_breaker(&self, state: BreakerState) {
        self.breaker.set(state);
    }

    /// The balancer's current cost estimate.
    pub fn set_cost(&self, cost: f64) {
        self.cost.set(cost);
    }
}

#[cfg(test)]
mod tests;
