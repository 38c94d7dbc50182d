//! The live trace store: recent, slow and failed requests per route, each explained by its
//! plan's exact critical path, for the admin `/traces` endpoints.
//!
//! Fed every `Arc<FinishedTrace>` that [`crate::RequestTrace::end`] returns, kept by sampling or
//! not. Recording is one sequence number (a relaxed atomic) and a few pushes under the route's
//! own mutex; the per-call timings, the critical path, the slack and the JSON are computed only
//! when someone asks ([`path::analyze`], [`json`]).
//!
//! Memory is bounded by routes × (`recent` + `slowest` + `max_errors`) requests, each of at most
//! `max_spans_per_trace` spans, each of a bounded size whatever the client sent (a path is kept
//! to [`crate::URL_PATH_MAX`] bytes).

pub mod json;
mod kept;
pub mod path;
mod shape;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

pub use kept::Bounds;
pub use path::{analyze, Analysis, CallTiming, OwnTime, Stretch};
pub use shape::PlanShape;

use crate::context::TraceId;
use crate::error::TelemetryError;
use crate::span::FinishedTrace;
use kept::Kept;

/// The most requests of one kind a route may keep (the config's bound too).
pub const MAX_KEPT: usize = 10_000;
/// The longest `errors_for`.
pub const MAX_ERRORS_FOR: Duration = Duration::from_secs(24 * 3600);

/// A route the store keeps requests of.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// The route's name (what `?route=` selects).
    pub name: Arc<str>,
    /// Its plan's shape; `None` for a route without a plan (a proxy route).
    pub shape: Option<PlanShape>,
}

#[derive(Debug)]
struct Route {
    spec: RouteSpec,
    kept: Mutex<Kept>,
}

/// The store. One per gateway, shared by reference.
#[derive(Debug)]
pub struct TraceStore {
    bounds: Bounds,
    routes: Vec<Route>,
    seq: AtomicU64,
}

/// One stored request.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The route's index.
    pub route: usize,
    /// Increasing with the order requests were recorded in.
    pub seq: u64,
    /// The request.
    pub trace: Arc<FinishedTrace>,
}

/// What `GET /traces` selects.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Only this route.
    pub route: Option<usize>,
    /// Only requests at least this slow.
    pub min_duration: Option<Duration>,
    /// Only failed (`Some(true)`) or only successful (`Some(false)`) requests.
    pub errors: Option<bool>,
    /// At most this many, newest first.
    pub limit: usize,
}

impl TraceStore {
    /// A store for `routes` (indexed as given: [`TraceStore::record`] takes the index).
    pub fn new(bounds: Bounds, routes: Vec<RouteSpec>) -> Result<TraceStore, TelemetryError> {
        for (name, v) in [
            ("traces.recent", bounds.recent),
            ("traces.slowest", bounds.slowest),
            ("traces.max_errors", bounds.max_errors),
        ] {
            if v > MAX_KEPT {
                return Err(TelemetryError::Option {
                    name,
                    value: v.to_string(),
                    reason: "must be at most 10000",
                });
            }
        }
        if bounds.errors_for.is_zero() || bounds.errors_for > MAX_ERRORS_FOR {
            return Err(TelemetryError::Option {
                name: "traces.errors_for",
                value: format!("{:?}", bounds.errors_for),
                reason: "must be more than 0 and at most 24h",
            });
        }
        Ok(TraceStore {
            bounds,
            routes: routes
                .into_iter()
                .map(|spec| Route {
                    spec,
                    kept: Mutex::new(Kept::default()),
                })
                .collect(),
            seq: AtomicU64::new(0),
        })
    }

    /// Keep a finished request of route `route` (an unknown index is ignored).
    pub fn record(&self, route: usize, trace: Arc<FinishedTrace>) {
        let Some(r) = self.routes.get(route) else {
            return;
        };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        r.kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(&self.bounds, seq, trace, Instant::now);
    }

    /// The bounds.
    pub fn bounds(&self) -> &Bounds {
        &self.bounds
    }

    /// The index of the route named `name`.
    pub fn route_index(&self, name: &str) -> Option<usize> {
        self.routes.iter().position(|r| &*r.spec.name == name)
    }

    /// Route `i`'s name and shape.
    pub fn route(&self, i: usize) -> Option<&RouteSpec> {
        self.routes.get(i).map(|r| &r.spec)
    }

    /// The routes' names, in index order.
    pub fn route_names(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| &*r.spec.name)
    }

    /// Requests held across routes (each once).
    pub fn len(&self) -> usize {
        self.routes.iter().map(|r| self.lock(r).len()).sum()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock<'a>(&self, r: &'a Route) -> std::sync::MutexGuard<'a, Kept> {
        let mut k = r.kept.lock().unwrap_or_else(PoisonError::into_inner);
        k.expire(&self.bounds, Instant::now());
        k
    }

    /// The requests `q` selects, newest first.
    pub fn query(&self, q: &Query) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            if q.route.is_some_and(|want| want != i) {
                continue;
            }
            let k = self.lock(r);
            out.extend(
                k.all()
                    .filter(|(_, t)| q.min_duration.is_none_or(|m| t.duration >= m))
                    .filter(|(_, t)| q.errors.is_none_or(|e| t.failed() == e))
                    .map(|(seq, t)| Entry {
                        route: i,
                        seq,
                        trace: Arc::clone(t),
                    }),
            );
        }
        out.sort_unstable_by_key(|e| std::cmp::Reverse(e.seq));
        out.truncate(q.limit);
        out
    }

    /// The latest held request of trace `id`.
    pub fn get(&self, id: &TraceId) -> Option<Entry> {
        self.routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let k = self.lock(r);
                k.find(id).map(|(seq, t)| Entry {
                    route: i,
                    seq,
                    trace: Arc::clone(t),
                })
            })
            .max_by_key(|e| e.seq)
    }

    /// Explain a stored request with its route's plan.
    pub fn analyze(&self, e: &Entry) -> Analysis {
        let shape = self.routes.get(e.route).and_then(|r| r.spec.shape.as_ref());
        analyze(&e.trace, shape)
    }
}

#[cfg(test)]
mod tests;
