//! The benchmark's result: each target's figures over rounds, and the Markdown tables that
//! `docs/benchmarks.md` quotes.

use crate::peers::Skipped;
use crate::Spread;
use serde::Serialize;

/// One target's figures over rounds.
#[derive(Debug, Clone, Serialize)]
pub struct TargetMemory {
    /// "manifold" or "nginx".
    pub target: String,
    /// RSS at rest, KiB.
    pub rest_rss_kib: Spread,
    /// RSS with the N idle connections open, KiB.
    pub idle_rss_kib: Spread,
    /// (RSS_N − RSS_0) / N, bytes.
    pub per_connection_rss_bytes: Spread,
    /// The same from Pss, bytes.
    pub per_connection_pss_bytes: Spread,
    /// (RSS in flight − RSS with the K connections idle) / K, bytes, for a proxied request.
    pub per_proxied_in_flight_bytes: Spread,
    /// The same for a composed request (Manifold only).
    pub per_composed_in_flight_bytes: Option<Spread>,
    /// Idle connections that failed to open or to get their first answer, over rounds.
    pub failed_connections: u64,
    /// Idle connections the target had closed when the memory was read, over rounds.
    pub closed_early: u64,
    /// Slow requests not answered 200, over rounds.
    pub failed_in_flight: u64,
}

/// The whole result.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    /// Always "memory".
    pub scenario: &'static str,
    /// Idle connections (N).
    pub connections: usize,
    /// Requests in flight (K).
    pub in_flight: usize,
    /// The upstream's delay for slow requests, seconds.
    pub upstream_delay_s: f64,
    /// Rounds.
    pub rounds: usize,
    /// Manifold's worker threads and nginx's worker processes.
    pub workers: usize,
    /// Manifold, then nginx when it ran.
    pub targets: Vec<TargetMemory>,
    /// Manifold's per-connection RSS over nginx's (medians); `None` without nginx.
    pub per_connection_ratio: Option<f64>,
    /// Peers that could not run, and why.
    pub skipped: Vec<Skipped>,
}

impl MemoryReport {
    /// The report as Markdown tables, with the goal.
    pub fn to_markdown(&self) -> String {
        let kib = |s: &Spread| {
            format!(
                "{:.1} [{:.1}–{:.1}]",
                s.median / 1024.0,
                s.min / 1024.0,
                s.max / 1024.0
            )
        };
        let b = |s: &Spread| format!("{:.0} [{:.0}–{:.0}]", s.median, s.min, s.max);
        let mut out = format!(
            "## Memory: {} idle keep-alive connections, {} requests in flight ({} s upstream), \
             {} worker(s), {} round(s) (medians [min–max])\n\n\
             | target | RSS at rest MiB | RSS with N idle MiB | per connection, RSS bytes | \
             per connection, Pss bytes | per proxied request in flight, bytes | per composed \
             request in flight, bytes | failed / closed early / in flight failed |\n\
             |---|---:|---:|---:|---:|---:|---:|---|\n",
            self.connections, self.in_flight, self.upstream_delay_s, self.workers, self.rounds
        );
        for t in &self.targets {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} / {} / {} |\n",
                t.target,
                kib(&t.rest_rss_kib),
                kib(&t.idle_rss_kib),
                b(&t.per_connection_rss_bytes),
                b(&t.per_connection_pss_bytes),
                b(&t.per_proxied_in_flight_bytes),
                t.per_composed_in_flight_bytes
                    .as_ref()
                    .map_or("n/a (no composition)".to_owned(), b),
                t.failed_connections,
                t.closed_early,
                t.failed_in_flight,
            ));
        }
        match self.per_connection_ratio {
            Some(r) => out.push_str(&format!(
                "\nManifold's RSS per idle connection is {r:.2}× nginx's (goal ≤ 1.00×: {}).\n",
                if r <= 1.0 { "met" } else { "NOT met" }
            )),
            None => out.push_str("\nnginx did not run: no ratio.\n"),
        }
        for s in &self.skipped {
            out.push_str(&format!("\n{s}\n"));
        }
        out
    }
}
