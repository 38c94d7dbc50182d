//! What of a route's plan the sim can confirm beyond latency: cache hits and offloaded deliveries.

use std::time::Duration;

use manifold_config::{Config, Mode, RouteKind};
use manifold_sim::{RunningSim, SimStats};

/// Longest the demo waits for offloaded calls to be delivered after the load ends.
const OFFLOAD_WAIT: Duration = Duration::from_secs(60);

/// What of a route's plan the sim can confirm beyond latency.
pub(super) struct Shape {
    /// Cached calls' upstream services, and how many cached calls each receives per request.
    pub(super) cached: Vec<(String, u64)>,
    /// Offloaded calls: (call name, upstream service).
    pub(super) offloaded: Vec<(String, String)>,
}

impl Shape {
    pub(super) fn of(config: &Config, route: &str) -> Shape {
        let mut shape = Shape {
            cached: Vec::new(),
            offloaded: Vec::new(),
        };
        if let Some(RouteKind::Compose(plan)) = config.route(route).map(|r| &r.kind) {
            for call in &plan.calls {
                if call.mode == Mode::Async {
                    shape
                        .offloaded
                        .push((call.name.clone(), call.upstream_name.clone()));
                } else if call.cache.is_some() {
                    match shape
                        .cached
                        .iter_mut()
                        .find(|(u, _)| *u == call.upstream_name)
                    {
                        Some((_, n)) => *n += 1,
                        None => shape.cached.push((call.upstream_name.clone(), 1)),
                    }
                }
            }
        }
        shape
    }

    /// The share of cached calls that did not reach their upstream during a measurement of
    /// `sent` requests (`None` when the plan caches nothing).
    pub(super) fn cache_hit_ratio(&self, stats: &SimStats, sent: u64) -> Option<f64> {
        let expected: u64 = self.cached.iter().map(|(_, n)| n * sent).sum();
        if expected == 0 {
            return None;
        }
        let reached: u64 = self
            .cached
            .iter()
            .map(|(service, _)| stats.service_calls(service))
            .sum();
        Some((1.0 - reached as f64 / expected as f64).clamp(0.0, 1.0))
    }

    /// Distinct idempotency keys the offloaded calls' services answered since the last reset.
    pub(super) fn delivered(&self, stats: &SimStats) -> u64 {
        self.offloaded
            .iter()
            .filter_map(|(_, service)| stats.services.get(service))
            .flat_map(|s| s.endpoints.values())
            .map(|e| e.idempotency_keys)
            .sum()
    }

    /// Wait (at most [`OFFLOAD_WAIT`]) until `want` offloaded calls were delivered; returns how
    /// many were.
    pub(super) async fn wait_offloaded(&self, sim: &RunningSim, want: u64) -> u64 {
        let until = tokio::time::Instant::now() + OFFLOAD_WAIT;
        loop {
            let done = self.delivered(&sim.stats());
            if done >= want || tokio::time::Instant::now() >= until {
                return done;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
