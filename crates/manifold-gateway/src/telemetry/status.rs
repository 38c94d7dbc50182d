//! Task status reads (`GET {status_path}/{task_id}`, [`crate::status`]): answered by the
//! gateway itself from the queue's status store, not by a configured route, and recorded as a
//! route of the gateway's own named by its path template (`/tasks/{task_id}` by default): an
//! access-log line, `X-Request-Id` on the answer, the request-duration histogram and the
//! in-flight gauge under that name.
//!
//! Without this a client following its tasks — polling, or long-polling with `?wait=` — was
//! invisible to the operator: no log line, no series, while each read holds a connection and a
//! status-store lookup. A read gets no span: it is not part of the work that made the task
//! (the task's delivery joins the trace of the request that enqueued it), and a client polling
//! every second would otherwise export a trace per poll.

use super::Telemetry;
use crate::respond::REQUEST_ID;
use crate::upstream::Body;
use http::{Request, Response};
use manifold_config::Config;
use manifold_telemetry::metrics::{ActiveRequest, Metrics, RouteMetrics};
use std::sync::Arc;
use tokio::time::Instant;

/// The status route's name and metric handles, resolved once (none without a status route).
#[derive(Debug)]
pub(super) struct StatusTele {
    /// The route's name in the log and the metrics: its path template.
    name: Arc<str>,
    metrics: Option<RouteMetrics>,
}

impl StatusTele {
    /// The status route's metric handles (none with metrics off).
    pub(super) fn metrics(&self) -> Option<&RouteMetrics> {
        self.metrics.as_ref()
    }

    /// The status route's telemetry when the config has one (a route offloads, and
    /// `status_path` is not `""`).
    pub(super) fn new(config: &Config, metrics: Option<&Metrics>) -> Option<StatusTele> {
        if config.queue.status_path.is_empty() || !manifold_config::offloads(&config.routes) {
            return None;
        }
        let name = format!("{}/{{task_id}}", config.queue.status_path);
        Some(StatusTele {
            metrics: metrics.map(|m| m.route(&name)),
            name: Arc::from(name),
        })
    }
}

/// One status read in progress: counted in flight until [`StatusRead::finish`] (or dropped,
/// when the client went away).
pub(crate) struct StatusRead<'a> {
    tele: &'a Telemetry,
    active: Option<ActiveRequest<'a>>,
    started: Instant,
}

impl Telemetry {
    /// A status read starts.
    pub(crate) fn status_read(&self) -> StatusRead<'_> {
        let active = self
            .status
            .as_ref()
            .and_then(|s| s.metrics.as_ref())
            .map(RouteMetrics::start);
        StatusRead {
            tele: self,
            active,
            started: Instant::now(),
        }
    }
}

impl StatusRead<'_> {
    /// The read was answered with `resp`: observe its duration, give it its `X-Request-Id`
    /// and write its access-log line.
    pub(crate) fn finish<B>(self, req: &Request<B>, resp: &mut Response<Body>) {
        let elapsed = self.started.elapsed();
        let status = resp.status().as_u16();
        if let Some(active) = self.active {
            active.finish(status, elapsed, None);
        }
        let Some(route) = &self.tele.status else {
            return;
        };
        if !self.tele.access_log && self.tele.tracer.is_none() {
            return;
        }
        let request_id = crate::respond::client_request_id(req.headers())
            .unwrap_or_else(crate::respond::new_request_id);
        resp.headers_mut()
            .entry(REQUEST_ID)
            .or_insert_with(|| request_id.clone());
        if self.tele.access_log {
            crate::access_log::line(
                &route.name,
                req.method(),
                status,
                elapsed,
                None,
                &request_id,
                &[],
            );
        }
    }
}
