//! Controlling a running simulation: addresses, statistics, stalls and shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use super::{RunningSim, ServiceState};
use crate::stats::SimStats;

impl RunningSim {
    /// The address of a service's first replica.
    pub fn addr(&self, service: &str) -> Option<SocketAddr> {
        self.addrs(service).first().copied()
    }

    /// The addresses of all of a service's replicas, in config order (empty if unknown).
    pub fn addrs(&self, service: &str) -> Vec<SocketAddr> {
        self.service(service)
            .map(|s| s.replicas.iter().map(|r| r.addr).collect())
            .unwrap_or_default()
    }

    /// `http://ADDR` of a service's first replica.
    pub fn url(&self, service: &str) -> Option<String> {
        let scheme = self.shared.scheme;
        self.addr(service).map(|a| format!("{scheme}://{a}"))
    }

    /// `http://ADDR` (`https://` with `tls`) of each of a service's replicas.
    pub fn urls(&self, service: &str) -> Vec<String> {
        self.addrs(service)
            .into_iter()
            .map(|a| format!("{}://{a}", self.shared.scheme))
            .collect()
    }

    /// Milliseconds since the sim started: the time base of [`crate::CallRecord`]'s `start_ms`
    /// and `end_ms`. Read it before sending a request to place that request's upstream calls on
    /// a waterfall.
    pub fn now_ms(&self) -> f64 {
        self.shared.origin.elapsed().as_secs_f64() * 1000.0
    }

    /// Service names, sorted.
    pub fn services(&self) -> Vec<&str> {
        self.shared
            .services
            .iter()
            .map(|s| s.name.as_str())
            .collect()
    }

    /// A snapshot of every counter (what `GET /__stats` returns).
    pub fn stats(&self) -> SimStats {
        self.shared.stats(false)
    }

    /// Like [`RunningSim::stats`], with each endpoint's recent call records (start and end times),
    /// e.g. to check which calls overlapped.
    pub fn stats_with_calls(&self) -> SimStats {
        self.shared.stats(true)
    }

    /// Zero every counter and forget recorded calls (what `POST /__reset` does).
    pub fn reset_stats(&self) {
        self.shared.reset();
    }

    /// Freeze every service for `d` (capped at 10 minutes): requests finishing their latency
    /// during the stall wait for its end before answering. Shows coordinated omission in a load
    /// generator. What `POST /__stall?for=1s` does.
    pub fn stall(&self, d: Duration) {
        self.shared.stall(d);
    }

    /// Stop accepting, drop every connection (hanging requests included), and wait for the tasks.
    pub async fn shutdown(self) {
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    fn service(&self, name: &str) -> Option<&ServiceState> {
        self.shared.services.iter().find(|s| s.name == name)
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

impl std::fmt::Debug for RunningSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("RunningSim");
        for s in &self.shared.services {
            d.field(
                &s.name,
                &s.replicas.iter().map(|r| r.addr).collect::<Vec<_>>(),
            );
        }
        d.finish()
    }
}
