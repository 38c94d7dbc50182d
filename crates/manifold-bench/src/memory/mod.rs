//! `manifold bench memory`: what an idle keep-alive client connection and an in-flight request
//! cost in resident memory, Manifold beside nginx (issue 15, goal 3: at most nginx's per
//! connection).
//!
//! Each round starts fresh processes (a `manifold serve` child, nginx with as many workers as
//! Manifold has worker threads) in front of one simulated upstream, and for each:
//! 1. reads its memory at rest (VmRSS summed over the process tree, and Pss from
//!    `smaps_rollup`, which counts pages shared between nginx's master and workers once);
//! 2. opens N connections, each sending one `GET /item` and keeping the connection open, and
//!    reads the memory again: (RSS_N − RSS_0) / N is the cost of one idle connection;
//! 3. closes them, opens K connections (one request each), then sends one slow request on each
//!    (the upstream answers after `upstream_delay`) and, once the upstream holds all of them,
//!    reads the memory: (RSS_K in flight − RSS_K idle) / K is the cost of one request in
//!    flight, apart from its connection. For Manifold the slow request is proxied and then
//!    composed (two parallel upstream calls); nginx proxies it (it does not compose).
//!
//! Fresh processes per round, because a process that served a phase keeps some of what it
//! freed (allocators rarely give memory back), and the next phase's rest would start higher.
//! Kernel socket buffers are not in any process's RSS, so they are not counted for either.

mod client;
mod configs;
mod measure;
mod report;
mod resident;
#[cfg(test)]
mod tests;

pub use configs::gateway_toml;
pub use report::{MemoryReport, TargetMemory};
pub use resident::{resident, Resident};

use configs::sim_config;
use measure::measure_target;
use resident::open_file_limit;

use crate::peers;
use crate::{BenchError, Spread};
use manifold_sim::{RunningSim, Sim};
use std::path::PathBuf;
use std::time::Duration;

/// Most idle connections a run may ask for (each is a file descriptor here and in the target).
pub const MAX_CONNECTIONS: usize = 50_000;
/// Most requests a run may hold in flight at once (each is also two upstream calls composed).
pub const MAX_IN_FLIGHT: usize = 10_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct MemorySpec {
    /// Idle keep-alive connections (N).
    pub connections: usize,
    /// Requests in flight at once (K).
    pub in_flight: usize,
    /// How long the upstream holds each slow request.
    pub upstream_delay: Duration,
    /// Rounds (fresh processes each).
    pub rounds: usize,
    /// The `manifold` binary, run as `manifold serve`.
    pub manifold_exe: PathBuf,
    /// Where the peers live (for `nginx-memory.conf.template`). `None`: no nginx.
    pub peers_dir: Option<PathBuf>,
    /// Manifold's worker threads (tokio's default: one per core) and so nginx's workers.
    pub workers: usize,
}

impl MemorySpec {
    /// The defaults: 10,000 idle connections, 1,000 requests in flight, 3 rounds.
    pub fn new(manifold_exe: PathBuf) -> Self {
        MemorySpec {
            connections: 10_000,
            in_flight: 1_000,
            upstream_delay: Duration::from_secs(8),
            rounds: 3,
            manifold_exe,
            peers_dir: Some(peers::default_dir()),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// A short run for smoke tests and `--quick`.
    pub fn quick(manifold_exe: PathBuf) -> Self {
        MemorySpec {
            connections: 1_000,
            in_flight: 100,
            upstream_delay: Duration::from_secs(4),
            rounds: 1,
            ..MemorySpec::new(manifold_exe)
        }
    }

    fn check(&self) -> Result<(), BenchError> {
        let bad = |what: String| Err(BenchError::Spec(what));
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            return bad(format!(
                "connections = {} must be between 1 and {MAX_CONNECTIONS}",
                self.connections
            ));
        }
        if !(1..=MAX_IN_FLIGHT).contains(&self.in_flight) {
            return bad(format!(
                "in-flight = {} must be between 1 and {MAX_IN_FLIGHT}",
                self.in_flight
            ));
        }
        if self.rounds == 0 || self.rounds > 100 {
            return bad(format!(
                "rounds = {} must be between 1 and 100",
                self.rounds
            ));
        }
        if self.upstream_delay < Duration::from_millis(500)
            || self.upstream_delay > Duration::from_secs(60)
        {
            return bad(format!(
                "upstream delay {:?} must be between 500ms and 60s (long enough to send every \
                 slow request before the first is answered)",
                self.upstream_delay
            ));
        }
        Ok(())
    }
}

/// Samples of one target over rounds.
#[derive(Debug, Default)]
struct Samples {
    rest: Vec<f64>,
    idle: Vec<f64>,
    per_conn_rss: Vec<f64>,
    per_conn_pss: Vec<f64>,
    proxied: Vec<f64>,
    composed: Vec<f64>,
    failed: u64,
    closed_early: u64,
    failed_in_flight: u64,
}

/// Run the memory benchmark. `progress` is told what is being measured.
pub async fn run(
    spec: &MemorySpec,
    mut progress: impl FnMut(&str),
) -> Result<MemoryReport, BenchError> {
    spec.check()?;
    // This process holds the N client sockets, then K client sockets and the simulator's 2K.
    let needed = spec.connections.max(3 * spec.in_flight) as u64 + 256;
    if let Some(limit) = open_file_limit() {
        if limit < needed {
            return Err(BenchError::Spec(format!(
                "{} connections and {} in flight need about {needed} open files; this \
                 process may open {limit} (raise `ulimit -n`, or lower --connections / --in-flight)",
                spec.connections, spec.in_flight
            )));
        }
    }
    let sim = Sim::start(sim_config(spec.upstream_delay)?)
        .await
        .map_err(|e| BenchError::Setup(format!("simulator: {e}")))?;
    let result = rounds(spec, &sim, &mut progress).await;
    sim.shutdown().await;
    result
}

async fn rounds(
    spec: &MemorySpec,
    sim: &RunningSim,
    progress: &mut impl FnMut(&str),
) -> Result<MemoryReport, BenchError> {
    let upstream = sim
        .url("item")
        .ok_or_else(|| BenchError::Setup("simulator has no service item".into()))?;
    let upstream_addr = sim
        .addr("item")
        .ok_or_else(|| BenchError::Setup("simulator has no service item".into()))?;
    let mut manifold = Samples::default();
    let mut nginx = Samples::default();
    let mut skipped = Vec::new();
    for round in 0..spec.rounds {
        // Alternate which goes first: neither always measures on the cooler machine.
        for k in 0..2 {
            let first_nginx = round % 2 == 1;
            let is_nginx = (k == 0) == first_nginx;
            if is_nginx {
                let Some(dir) = &spec.peers_dir else { continue };
                if !skipped.is_empty() {
                    continue;
                }
                progress(&format!("nginx, round {}/{}", round + 1, spec.rounds));
                let nofile = (spec.connections + 3 * spec.in_flight + 1000).to_string();
                let vars = [
                    ("UPSTREAM", upstream_addr.to_string()),
                    ("WORKERS", spec.workers.to_string()),
                    ("WORKER_CONNECTIONS", nofile.clone()),
                    ("NOFILE", nofile),
                ];
                let started = match crate::proxy_peers::nginx_from(
                    dir,
                    "nginx-memory.conf.template",
                    "/item",
                    &vars,
                ) {
                    Ok(cmd) => peers::start(cmd).await,
                    Err(s) => Err(s),
                };
                match started {
                    Ok(p) => measure_target(spec, sim, &p, false, &mut nginx, progress).await?,
                    Err(s) => {
                        progress(&s.to_string());
                        skipped.push(s);
                    }
                }
            } else {
                progress(&format!("manifold, round {}/{}", round + 1, spec.rounds));
                let toml = gateway_toml(&upstream, spec);
                let cmd = peers::manifold_serve(&spec.manifold_exe, &toml, "/item")
                    .map_err(|s| BenchError::Setup(format!("manifold serve: {}", s.reason)))?;
                let p = peers::start(cmd)
                    .await
                    .map_err(|s| BenchError::Setup(format!("manifold serve: {}", s.reason)))?;
                measure_target(spec, sim, &p, true, &mut manifold, progress).await?;
            }
        }
    }
    let mut targets = vec![summarize("manifold", manifold)];
    if !nginx.rest.is_empty() {
        targets.push(summarize("nginx", nginx));
    }
    let per_connection_ratio = targets.get(1).and_then(|n| {
        let n = n.per_connection_rss_bytes.median;
        (n > 0.0).then(|| targets[0].per_connection_rss_bytes.median / n)
    });
    Ok(MemoryReport {
        scenario: "memory",
        connections: spec.connections,
        in_flight: spec.in_flight,
        upstream_delay_s: spec.upstream_delay.as_secs_f64(),
        rounds: spec.rounds,
        workers: spec.workers,
        targets,
        per_connection_ratio,
        skipped,
    })
}

fn summarize(name: &str, s: Samples) -> TargetMemory {
    TargetMemory {
        target: name.into(),
        rest_rss_kib: Spread::of(&s.rest),
        idle_rss_kib: Spread::of(&s.idle),
        per_connection_rss_bytes: Spread::of(&s.per_conn_rss),
        per_connection_pss_bytes: Spread::of(&s.per_conn_pss),
        per_proxied_in_flight_bytes: Spread::of(&s.proxied),
        per_composed_in_flight_bytes: (!s.composed.is_empty()).then(|| Spread::of(&s.composed)),
        failed_connections: s.failed,
        closed_early: s.closed_early,
        failed_in_flight: s.failed_in_flight,
    }
}
