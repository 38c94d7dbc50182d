//! The gateway's side of `manifold-telemetry`: what each request and each call attempt records,
//! and how the trace context travels down to the one place attempts are sent.
//!
//! - Per request ([`Telemetry::start`] / [`Telemetry::finish`], around the routed handler): the
//!   SERVER span (from the client's `traceparent`, if valid), the route's latency histogram and
//!   in-flight gauge, `X-Request-Id` on the answer, and the access log line.
//! - Down the call path, the context travels with the request: a [`TraceCtx`] in the incoming
//!   request's extensions (the composer reads it), and a [`CallTrace`] per upstream call, beside
//!   the request the stack is handed (the proxy's from [`Recording::take_call`], the executor's
//!   one per call) or, where a path forwards a request as it is (a cached proxy route's fill),
//!   in its extensions. The upstream stack's attempt service records one CLIENT span per
//!   attempt, retries and hedges included, with that span as the `traceparent` parent.
//! - A cache fill shared by several requests records into the trace of the request that started
//!   it; the others get an INTERNAL span naming their cache outcome.
//!
//! Requests answered before a route ran (404, 405, shed) are recorded by [`rejected`]; task
//! status reads, which the gateway answers itself, by [`status`].

mod ctx;
mod rejected;
mod setup;
mod status;
#[cfg(test)]
mod tests;
pub(crate) use ctx::{AttemptSpan, CallTrace, TraceCtx};
pub(crate) use rejected::Reason;
use setup::{route_handles, store_routes, trace_store};

use crate::respond::REQUEST_ID;
use crate::upstream::Body;
use http::header::HeaderValue;
use http::{Request, Response};
use http_body::Body as _;
use manifold_config::Config;
use manifold_telemetry as tm;
use manifold_telemetry::metrics::{CallMetrics, CallResult, Metrics, RouteMetrics};
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// [`crate::handler::PARTIAL_HEADER`], as a name made once.
const PARTIAL_NAME: http::HeaderName =
    http::HeaderName::from_static(crate::handler::PARTIAL_HEADER);

/// How long shutdown waits for the exporter to send what it holds.
const EXPORT_GRACE: Duration = Duration::from_secs(2);

/// Telemetry for the whole gateway, built once from `[telemetry]` and the compiled routes.
#[derive(Debug)]
pub(crate) struct Telemetry {
    tracer: Option<tm::Tracer>,
    metrics: Option<Metrics>,
    routes: Vec<RouteTele>,
    access_log: bool,
    /// Requests answered without a route, and the listener's concurrency (with metrics on).
    rejected: Option<rejected::RejectedMetrics>,
    /// Task status reads (when a route offloads).
    status: Option<status::StatusTele>,
    /// The live trace store behind admin `/traces` (none with `traces = false`).
    store: Option<tm::store::TraceStore>,
    /// `service_name`: the root process of the Jaeger export.
    service_name: String,
    /// `parent_sampled`, and `server.trusted_proxies` for its `"trusted_proxies"`.
    parent_sampled: manifold_config::ParentSampled,
    trusted: Arc<[ipnet::IpNet]>,
    /// Shared with the telemetry of every later config: a reload keeps the exporter.
    exporter: Arc<Mutex<Option<tm::otlp::ExporterTask>>>,
    /// The queue's handles and the dispatcher's counters as of the last scrape (the registry's
    /// counters are brought up to the dispatcher's own at each scrape). Shared across reloads,
    /// so a reload never counts the dispatcher's totals twice.
    queue: Arc<Mutex<Option<QueueSeen>>>,
}

/// The queue's metric handles, and the dispatcher's counters (delivered, failed attempts,
/// retried, dead-lettered) as of the last scrape.
type QueueSeen = (tm::metrics::QueueMetrics, [u64; 4]);

/// A route's names and metric handles, resolved at start so a request only touches atomics.
#[derive(Debug)]
struct RouteTele {
    /// The route's index (the trace store's too).
    index: usize,
    /// A proxy route (its attempts read a [`CallTrace`]; a compose route's calls, a
    /// [`TraceCtx`]).
    proxy: bool,
    name: Arc<str>,
    /// `http.route`: the path template.
    template: Arc<str>,
    metrics: Option<RouteMetrics>,
    /// By call index (empty for proxy routes).
    calls: Vec<Arc<CallTele>>,
}

/// A call's names and metric handles.
#[derive(Debug)]
pub(crate) struct CallTele {
    pub(crate) name: Arc<str>,
    /// The call's configured headers include a `tracestate`: only then can its request carry
    /// one for the attempts to strip (see [`CallTrace::for_built`]).
    pub(crate) sets_tracestate: bool,
    /// The call's configured headers include an `X-Request-Id`, which wins over the request's
    /// (the config said what that upstream gets): nothing to add to its request.
    ///
    /// Why known here: adding the request's id looked the header up in each call's map, to
    /// find the configured one there (~250 instructions a call, callgrind).
    pub(crate) sets_request_id: bool,
    metrics: Option<CallMetrics>,
}

impl Telemetry {
    /// Build from the config; starts the OTLP exporter (on the current runtime) when `otlp` is
    /// set.
    pub(crate) fn new(config: &Config) -> Result<Telemetry, tm::TelemetryError> {
        let t = &config.telemetry;
        let stats = Arc::new(tm::SpanStats::default());
        let metrics = t.metrics.then(Metrics::new);
        if let Some(m) = &metrics {
            m.attach_span_stats(Arc::clone(&stats));
        }
        let mut exporter = None;
        let tracer = if t.tracing {
            let sink = match &t.otlp {
                Some(o) => {
                    let mut options = tm::otlp::OtlpOptions::new(o.endpoint.clone());
                    options.timeout = o.timeout;
                    options.queue_capacity = usize::try_from(o.queue_capacity).unwrap_or(4096);
                    let resource = tm::otlp::ResourceInfo {
                        service_name: t.service_name.clone(),
                    };
                    let (handle, task) = tm::otlp::spawn(&options, resource, Arc::clone(&stats))?;
                    exporter = Some(task);
                    Some(handle)
                }
                None => None,
            };
            let options = tm::TracingOptions {
                sample_ratio: t.sample_ratio,
                keep_slower_than: t.keep_slower_than,
                ..tm::TracingOptions::default()
            };
            Some(tm::Tracer::new(&options, sink, stats)?)
        } else {
            None
        };
        let routes = route_handles(config, metrics.as_ref());
        let rejected = metrics.as_ref().map(rejected::RejectedMetrics::new);
        let store = match (&tracer, &t.traces) {
            (Some(_), Some(bounds)) => Some(trace_store(config, bounds)?),
            _ => None,
        };
        Ok(Telemetry {
            status: status::StatusTele::new(config, metrics.as_ref()),
            rejected,
            tracer,
            metrics,
            routes,
            access_log: t.access_log == manifold_config::AccessLog::Json,
            store,
            service_name: t.service_name.clone(),
            parent_sampled: t.parent_sampled,
            trusted: Arc::from(config.server.trusted_proxies.as_slice()),
            exporter: Arc::new(Mutex::new(exporter)),
            queue: Arc::new(Mutex::new(None)),
        })
    }

    /// The same tracer, registry and exporter with the routes of `config`: what a reload
    /// builds. Series are found by their labels, so a route or call that kept its name keeps
    /// counting where it was; `[telemetry]` itself only changes with a restart.
    ///
    /// The trace store starts afresh with the new routes: what it keeps is explained by the
    /// plans, and those are what changed (requests still running on the old plans record into
    /// the old store, which goes with them).
    pub(crate) fn reconfigure(&self, config: &Config) -> Telemetry {
        let store = self.store.as_ref().and_then(|old| {
            store_routes(config)
                .and_then(|routes| tm::store::TraceStore::new(*old.bounds(), routes))
                .map_err(|e| tracing::warn!(error = %e, "trace store: kept off after the reload"))
                .ok()
        });
        Telemetry {
            tracer: self.tracer.clone(),
            metrics: self.metrics.clone(),
            routes: route_handles(config, self.metrics.as_ref()),
            access_log: self.access_log,
            rejected: self.rejected.clone(),
            status: status::StatusTele::new(config, self.metrics.as_ref()),
            store,
            service_name: self.service_name.clone(),
            parent_sampled: self.parent_sampled,
            trusted: Arc::from(config.server.trusted_proxies.as_slice()),
            exporter: Arc::clone(&self.exporter),
            queue: Arc::clone(&self.queue),
        }
    }

    /// The trace context of a request from `peer`, with its sampled flag ignored where
    /// `parent_sampled` does not trust that peer to decide.
    fn incoming(&self, headers: &http::HeaderMap, peer: IpAddr) -> tm::Incoming {
        let mut incoming = tm::Incoming::trace_context(headers);
        if incoming.parent.is_some() {
            incoming.ignore_sampled = match self.parent_sampled {
                manifold_config::ParentSampled::Follow => false,
                manifold_config::ParentSampled::Ignore => true,
                manifold_config::ParentSampled::TrustedProxies => {
                    !crate::forwarded::is_trusted(peer, &self.trusted)
                }
            };
        }
        incoming
    }

    /// Tell the metrics registry which routes and calls this config has, so the series of
    /// those a reload removed or renamed end (see [`tm::metrics::LiveRoutes`]). Called once
    /// the config is the running one: a refused reload must not end a running route's series.
    pub(crate) fn publish_live_routes(&self) {
        let Some(m) = &self.metrics else {
            return;
        };
        let mut live = tm::metrics::LiveRoutes::new();
        for r in &self.routes {
            if let Some(rm) = &r.metrics {
                live.route(rm.route());
            }
            for c in r.calls.iter().filter_map(|c| c.metrics.as_ref()) {
                let [route, call, upstream] = c.labels();
                live.call(route, call, upstream);
            }
        }
        if let Some(rm) = self.status.as_ref().and_then(|s| s.metrics()) {
            live.route(rm.route());
        }
        m.set_live_routes(live);
    }

    /// The tracer (none with `tracing = false`).
    pub(crate) fn tracer(&self) -> Option<&tm::Tracer> {
        self.tracer.as_ref()
    }

    /// The live trace store (none with `traces = false` or `tracing = false`).
    pub(crate) fn store(&self) -> Option<&tm::store::TraceStore> {
        self.store.as_ref()
    }

    /// `service_name`.
    pub(crate) fn service_name(&self) -> &str {
        &self.service_name
    }

    /// The registry (none with `metrics = false`).
    pub(crate) fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_ref()
    }

    /// Route `ri`'s calls' handles, by call index.
    pub(crate) fn calls(&self, ri: usize) -> &[Arc<CallTele>] {
        self.routes.get(ri).map_or(&[], |r| &r.calls)
    }

    /// Bring the queue's families up to date before a scrape: depth and oldest age from the
    /// queue (bounded: a broker that does not answer leaves the last values), deliveries,
    /// retries and dead letters from the dispatcher's counters.
    pub(crate) async fn refresh_queue(&self, q: &crate::offload::QueueRef) {
        let Some(m) = &self.metrics else {
            return;
        };
        let stats = tokio::time::timeout(Duration::from_secs(1), q.0.stats()).await;
        let mut guard = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        // Read under the lock: two scrapes at once must not count a range twice.
        let d = q.1.snapshot();
        let now = [d.delivered, d.failed_attempts, d.retried, d.dead_lettered];
        let (qm, last) = guard.get_or_insert_with(|| (m.queue(q.0.backend().as_str()), [0; 4]));
        if let Ok(Ok(s)) = stats {
            qm.set_depth(s.depth);
            qm.set_oldest_age(Duration::from_millis(s.oldest_age_ms.unwrap_or(0)));
        }
        let delta = |i: usize| now[i].saturating_sub(last[i]);
        qm.add_counts(delta(0), delta(1), delta(2), delta(3));
        *last = now;
    }

    /// Bring each endpoint's breaker state and balancer cost up to date before a scrape, and
    /// end the series of endpoints that are gone (an address re-resolution removed, an
    /// upstream a reload removed).
    pub(crate) fn refresh_endpoints(&self, clients: &[Arc<crate::upstream::Upstream>]) {
        let Some(m) = &self.metrics else {
            return;
        };
        let gauges: Vec<_> = clients
            .iter()
            .map(|up| (up.name.as_str(), up.endpoint_gauges()))
            .collect();
        let mut current = std::collections::HashSet::new();
        for (upstream, endpoints) in &gauges {
            for (endpoint, state, cost) in endpoints {
                let e = m.endpoint(upstream, endpoint);
                e.set_breaker(*state);
                e.set_cost(*cost);
                current.insert((*upstream, endpoint.as_str()));
            }
        }
        m.retain_endpoints(&current);
    }

    /// Flush what the exporter holds and stop it (bounded by [`EXPORT_GRACE`]).
    pub(crate) async fn shutdown(&self) {
        let task = self
            .exporter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.shutdown(EXPORT_GRACE).await;
        }
    }

    /// A routed request starts (it was admitted at `started`; `client_id` is its client's
    /// [`crate::respond::client_request_id`], read where the request arrived): its SERVER span
    /// and in-flight count, and the context its calls find in the request's extensions.
    pub(crate) fn start<B>(
        &self,
        ri: usize,
        req: &mut Request<B>,
        started: Instant,
        client_id: crate::respond::ClientId,
        peer: IpAddr,
    ) -> Option<Recording<'_>> {
        if self.tracer.is_none() && self.metrics.is_none() && !self.access_log {
            return None;
        }
        let route = self.routes.get(ri)?;
        let active = route.metrics.as_ref().map(RouteMetrics::start);
        // `client_id` follows the gateway's stricter rule for ids it logs (no spaces or `=`
        // that could forge log fields); a refused one is replaced by the trace id.
        let (trace, request_id) = match &self.tracer {
            Some(tracer) => {
                // The id read once, above; the trace copies it (a client's id must not keep the
                // request's read buffer alive in the trace store).
                let mut incoming = self.incoming(req.headers(), peer);
                incoming.request_id = client_id.and_then(|v| tm::RequestId::copied(v.as_bytes()));
                let trace = tracer.start_with_calls(
                    incoming,
                    tm::RootInfo {
                        kind: tm::RootKind::Server,
                        method: req.method().clone(),
                        route: Arc::clone(&route.template),
                        path: tm::UrlPath::copied(req.uri().path()),
                    },
                    // A proxied request is one call; retries and hedges grow the vector.
                    route.calls.len().max(1),
                    started,
                );
                // The trace's id is already a header value: shared, not copied.
                let id = trace.request_id().header_value().clone();
                (Some(trace), id)
            }
            None => (
                None,
                client_id.unwrap_or_else(crate::respond::new_request_id),
            ),
        };
        // Only what the route's kind reads: a proxied request's attempts get the `CallTrace`
        // (handed beside the request: see [`Recording::take_call`]), which holds the context
        // itself; a composed one hands a shared `TraceCtx` to its calls from the request's
        // extensions. (An extension is an `Arc` and a box, and the first one the map itself.)
        let call = if route.proxy {
            // The attempts' spans share the SERVER span's copy of the path when they send it
            // as it came (no base path): one allocation less. Not the request's own
            // `PathAndQuery` (`CallTrace::with_path`): the request's URI is a slice of hyper's
            // read buffer, which the trace store would then keep alive for every request it
            // holds (its memory bound counts spans, not buffers).
            Some(CallTrace::only_call(
                trace.as_ref(),
                request_id.clone(),
                Arc::clone(&route.name),
                trace.as_ref().map(|t| t.path().clone()),
            ))
        } else {
            req.extensions_mut()
                .insert(TraceCtx::new(trace.as_ref(), request_id.clone()));
            None
        };
        Some(Recording {
            call,
            route,
            active,
            request_id,
            method: self.access_log.then(|| req.method().clone()),
            started,
            trace,
        })
    }

    /// The answer is ready: end the SERVER span, record the latency, give the answer its
    /// `X-Request-Id`, write the access log line. Returns when the request ended, as its
    /// latency was measured (the request's start and its duration). `client_wait`: the
    /// request's wait on its client's body, when it had a body (read up to the span's end,
    /// for the trace store: a client's slow upload is not the gateway's own time).
    pub(crate) fn finish(
        &self,
        rec: Recording<'_>,
        resp: &mut Response<Body>,
        client_wait: Option<&crate::limit::ClientWait>,
    ) -> Instant {
        let status = resp.status().as_u16();
        // The partial calls go on the SERVER span and in the log line: not read for metrics.
        // Looked for by a name made once: `partial_calls` looks it up by its text, which parses
        // the name on every answer (~330 instructions), and most answers have none.
        // Never on a proxied answer: a proxy route has no optional calls, so a
        // `Manifold-Partial` there is the upstream's (forwarded as it is), and it named calls
        // of its choosing, as many as its header could hold, in this request's span and log.
        let partial = if !rec.route.proxy
            && (rec.trace.is_some() || self.access_log)
            && resp.headers().contains_key(PARTIAL_NAME)
        {
            crate::access_log::partial_calls(resp.headers())
        } else {
            Vec::new()
        };
        let (duration, exemplar, trace_id) = match rec.trace {
            Some(trace) => {
                let error_type = (status >= 500).then(|| {
                    resp.extensions()
                        .get::<crate::respond::ErrorCause>()
                        .map_or(Cow::Owned(status.to_string()), |c| Cow::Borrowed(c.kind))
                });
                // One clock read for the end and the wait up to it; the wait's lock only for a
                // request with a body.
                let now = Instant::now();
                let finished = trace.end_at(
                    tm::ServerOutcome {
                        status,
                        response_bytes: resp.body().size_hint().exact().unwrap_or(0),
                        partial: partial.clone(),
                        error_type,
                        client_wait: client_wait.map_or(Duration::ZERO, |w| w.waited(now)),
                    },
                    now,
                );
                let exemplar = finished
                    .sampled
                    .then_some((finished.trace_id, finished.span_id));
                let out = (finished.duration, exemplar, Some(finished.trace_id));
                if let Some(store) = &self.store {
                    store.record(rec.route.index, finished);
                }
                out
            }
            None => (rec.started.elapsed(), None, None),
        };
        if let Some(active) = rec.active {
            active.finish(status, duration, exemplar);
        }
        // A proxied answer's headers are the upstream's: its own `X-Request-Id` (an id of its
        // making, or any text) reached the client in place of the id this request is logged,
        // traced and sent upstream under. A composed answer's headers are the config's, which
        // may set one on purpose. One map operation either way.
        let proxy = rec.route.proxy;
        let give_id = |headers: &mut http::HeaderMap, id: HeaderValue| {
            if proxy {
                headers.insert(REQUEST_ID, id);
            } else {
                headers.entry(REQUEST_ID).or_insert(id);
            }
        };
        match (self.access_log, &rec.method) {
            (true, Some(method)) => {
                give_id(resp.headers_mut(), rec.request_id.clone());
                crate::access_log::line(
                    &rec.route.name,
                    method,
                    status,
                    duration,
                    trace_id,
                    &rec.request_id,
                    &partial,
                );
            }
            _ => give_id(resp.headers_mut(), rec.request_id),
        }
        rec.started + duration
    }
}

/// A request being recorded (see [`Telemetry::start`]).
#[derive(Debug)]
pub(crate) struct Recording<'a> {
    route: &'a RouteTele,
    /// A proxied request's trace context, until the handler takes it.
    call: Option<CallTrace>,
    trace: Option<tm::RequestTrace>,
    active: Option<tm::metrics::ActiveRequest<'a>>,
    request_id: HeaderValue,
    /// For the access log line (only cloned with the log on).
    method: Option<http::Method>,
    /// When the request started (admitted by the limiter; its trace, if any, starts then too).
    started: Instant,
}

impl Recording<'_> {
    /// A proxy route's trace context for its upstream attempts (none for a composed route).
    ///
    /// Why handed over rather than put in the request's extensions: the extension map is an
    /// allocation of its own, a box for the entry, a hash lookup in each attempt and a drop
    /// (callgrind: ~700 instructions and two allocations per proxied request), for a value
    /// that has one reader. A path that forwards the request without it (a cached route's
    /// fill) gets it in the extensions from the handler, where the attempts also look.
    pub(crate) fn take_call(&mut self) -> Option<CallTrace> {
        self.call.take()
    }
}

/// The telemetry crate's name for the cache's outcome (`None`: the cache was bypassed).
pub(crate) fn cache_outcome(o: manifold_cache::Outcome) -> Option<tm::CacheOutcome> {
    use manifold_cache::Outcome as O;
    Some(match o {
        O::Hit => tm::CacheOutcome::L1,
        O::L2Hit => tm::CacheOutcome::L2,
        O::Miss => tm::CacheOutcome::Miss,
        O::Stale | O::StaleIfError => tm::CacheOutcome::Stale,
        O::Coalesced => tm::CacheOutcome::Coalesced,
        O::Bypass => return None,
    })
}

/// Record a finished call's latency and outcome (and its cache tier) in its metrics.
pub(crate) fn observe_call(
    call: Option<&Arc<CallTele>>,
    started: Instant,
    error: Option<&crate::CallError>,
    optional: bool,
    cache: Option<manifold_cache::Outcome>,
) {
    let Some(m) = call.and_then(|c| c.metrics.as_ref()) else {
        return;
    };
    m.observe(started.elapsed(), None);
    m.outcome(match error {
        None => CallResult::Ok,
        Some(e) => CallResult::Error {
            kind: e.kind.as_str(),
            partial: optional,
        },
    });
    if let Some(o) = cache.and_then(cache_outcome) {
        m.cache(o);
    }
}
