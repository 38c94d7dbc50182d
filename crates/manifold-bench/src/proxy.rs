//! `manifold bench proxy`: plain reverse proxying, the case where a gateway can only add cost.
//!
//! One upstream (the simulator, answering `GET /item` after a small fixed delay, 0 ms by
//! default) is measured three ways in one run, interleaved round by round:
//! - `direct`: the client hits the upstream itself — the physical limit, the upstream's time plus
//!   one loopback round trip;
//! - `manifold`: through a `proxy = "u"` route of a `manifold serve` child process (so its CPU
//!   can be read from `/proc`; when no binary is given, an in-process gateway whose CPU is not
//!   measured);
//! - `hyper`: a bare tokio + hyper 1.x proxy ([`floor`](crate::floor)) from the same binary, the
//!   floor of what a proxy on Manifold's stack costs (a reference row, not a peer of the goal),
//!   and `hyper-per-core`, the same proxy on a single-threaded runtime per thread with a
//!   `SO_REUSEPORT` listener each (what the runtime model costs: nginx's and Pingora's shape);
//! - `nginx`, `haproxy`, `envoy`: the usual reverse proxies in front of the same upstream, each
//!   configured as its documentation recommends for keep-alive on both sides and given as many
//!   worker threads as Manifold (see [`proxy_peers`](crate::proxy_peers)); each is skipped, with
//!   the reason, when it is not installed.
//!
//! Latency is open loop at fixed rates; throughput is closed loop; CPU per request is the
//! proxy process tree's user + system time over the requests it answered.

use crate::compose::{closed_loop_count, measured, rotated};
use crate::peers::{self, RunningPeer, Skipped};
use crate::proxy_peers;
use crate::stats::{per_request_us, spread_if_any};
use crate::{BenchError, Measured, Spread};
use manifold_load::LoadSpec;
use manifold_sim::{RunningSim, Sim, SimConfig};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The reference rows built into the `manifold` binary (`manifold bench-peer NAME`): not peers
/// of the goal.
const FLOORS: [&str; 2] = ["hyper", "hyper-per-core"];

/// What to run.
#[derive(Debug, Clone)]
pub struct ProxySpec {
    /// The upstream's fixed service time, ms (0: it answers at once).
    pub upstream_delay_ms: u64,
    /// Open-loop rates, requests per second.
    pub rates: Vec<f64>,
    /// Length of one open-loop measurement.
    pub duration: Duration,
    /// Rounds per rate (each round measures every target once).
    pub rounds: usize,
    /// Closed-loop throughput: concurrent clients.
    pub throughput_clients: usize,
    /// Length of one closed-loop measurement (0 skips throughput).
    pub throughput_duration: Duration,
    /// The `manifold` binary, run as `manifold serve` in a child process so its CPU can be
    /// measured. `None`: the gateway runs inside this process and its CPU is not measured.
    pub manifold_exe: Option<PathBuf>,
    /// Where the peers live (for their config templates). `None`: no nginx, HAProxy or Envoy.
    pub peers_dir: Option<PathBuf>,
}

impl Default for ProxySpec {
    fn default() -> Self {
        ProxySpec {
            upstream_delay_ms: 0,
            rates: vec![1000.0, 5000.0, 10000.0],
            duration: Duration::from_secs(5),
            rounds: 3,
            throughput_clients: 50,
            throughput_duration: Duration::from_secs(3),
            manifold_exe: None,
            peers_dir: Some(peers::default_dir()),
        }
    }
}

impl ProxySpec {
    /// A short run for smoke tests and `--quick`.
    pub fn quick() -> Self {
        ProxySpec {
            rates: vec![1000.0, 2000.0],
            duration: Duration::from_secs(2),
            rounds: 2,
            throughput_duration: Duration::from_secs(1),
            ..Default::default()
        }
    }
}

/// One target at one rate.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyMeasured {
    /// Latency over rounds ("direct", "manifold", "nginx", "haproxy", "envoy").
    pub latency: Measured,
    /// Its median p50 minus the direct one's, ms (0 for direct).
    pub added_p50_over_direct_ms: f64,
    /// Its median p99 minus the direct one's, ms.
    pub added_p99_over_direct_ms: f64,
    /// CPU of the proxy process (and its workers) per answered request, µs, over rounds; `None`
    /// where it is not measured (direct; an in-process gateway).
    pub cpu_us_per_request: Option<Spread>,
}

/// One rate.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyRate {
    /// Scheduled requests per second.
    pub rate: f64,
    /// direct, manifold, then nginx, haproxy and envoy where they ran.
    pub targets: Vec<ProxyMeasured>,
}

/// One target's closed-loop throughput.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyThroughput {
    /// "direct", "manifold", "nginx", "haproxy", "envoy".
    pub target: String,
    /// Requests per second over rounds.
    pub rps: Spread,
    /// Its median over the direct median.
    pub over_direct: f64,
    /// Proxy CPU per request, µs, over rounds (where measured).
    pub cpu_us_per_request: Option<Spread>,
    /// Peak resident memory of the proxy process tree, KiB (where measured).
    pub peak_rss_kib: Option<u64>,
}

/// The whole result.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyReport {
    /// Always "proxy".
    pub scenario: &'static str,
    /// The upstream's fixed service time, ms.
    pub upstream_delay_ms: u64,
    /// Seconds per open-loop measurement.
    pub duration_s: f64,
    /// Rounds per rate.
    pub rounds: usize,
    /// How Manifold ran, and so what its CPU figure means.
    pub manifold_process: String,
    /// Per-rate latency.
    pub rates: Vec<ProxyRate>,
    /// Closed-loop concurrent clients.
    pub throughput_clients: usize,
    /// Closed-loop throughput per target (empty when not measured).
    pub throughput: Vec<ProxyThroughput>,
    /// Peers that could not run, and why.
    pub skipped: Vec<Skipped>,
}

fn sim_config(delay_ms: u64) -> Result<SimConfig, BenchError> {
    let latency = if delay_ms > 0 {
        format!("latency = \"{delay_ms}ms\"")
    } else {
        String::new()
    };
    let toml = format!(
        r#"
seed = 7
host = "127.0.0.1"
[services.item]
  [[services.item.endpoints]]
  method = "GET"
  path = "/item"
  {latency}
  response = {{ body = {{ id = "{{seq}}", name = "widget", price = 9.5 }} }}
"#
    );
    SimConfig::from_toml(&toml).map_err(|e| BenchError::Setup(format!("simulator config: {e}")))
}

/// The gateway config: one pass-through route to the upstream.
pub fn gateway_toml(upstream_url: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"

[upstreams.u]
endpoints = ["{upstream_url}"]

[routes.item]
method = "GET"
path = "/item"
proxy = "u"
"#
    )
}

/// A target and, when it is a separate process, the process (for its CPU).
struct Target {
    name: String,
    url: String,
    process: Option<RunningPeer>,
}

struct Targets {
    sim: RunningSim,
    list: Vec<Target>,
    manifold_process: String,
    skipped: Vec<Skipped>,
    stop: CancellationToken,
}

impl Targets {
    async fn shutdown(self) {
        self.stop.cancel();
        drop(self.list);
        self.sim.shutdown().await;
    }
}

async fn start_targets(spec: &ProxySpec) -> Result<Targets, BenchError> {
    let sim = Sim::start(sim_config(spec.upstream_delay_ms)?)
        .await
        .map_err(|e| BenchError::Setup(format!("simulator: {e}")))?;
    let upstream = sim
        .url("item")
        .ok_or_else(|| BenchError::Setup("simulator has no service item".into()))?;
    let upstream_addr = sim
        .addr("item")
        .ok_or_else(|| BenchError::Setup("simulator has no service item".into()))?;
    let stop = CancellationToken::new();
    let mut list = vec![Target {
        name: "direct".into(),
        url: format!("{upstream}/item"),
        process: None,
    }];
    let toml = gateway_toml(&upstream);
    let manifold_process = match &spec.manifold_exe {
        Some(exe) => {
            let cmd = peers::manifold_serve(exe, &toml, "/item")
                .map_err(|s| BenchError::Setup(format!("manifold serve: {}", s.reason)))?;
            let p = peers::start(cmd)
                .await
                .map_err(|s| BenchError::Setup(format!("manifold serve: {}", s.reason)))?;
            list.push(Target {
                name: "manifold".into(),
                url: p.url("/item"),
                process: Some(p),
            });
            format!(
                "`{} serve` child process; CPU from /proc of that process",
                exe.display()
            )
        }
        None => {
            let config = manifold_config::compile("bench-proxy.toml".as_ref(), &toml)
                .map_err(|e| BenchError::Setup(format!("gateway config: {e}")))?;
            let gw = manifold_gateway::Gateway::bind(config)
                .await
                .map_err(|e| BenchError::Setup(format!("gateway: {e}")))?;
            list.push(Target {
                name: "manifold".into(),
                url: format!("http://{}/item", gw.local_addr()),
                process: None,
            });
            tokio::spawn(gw.run(stop.clone()));
            "in-process gateway (shares the benchmark's process: CPU not measured)".into()
        }
    };
    let mut skipped = Vec::new();
    let mut commands = Vec::new();
    // The floor of a hyper-based proxy, from the same binary (so only with a Manifold binary),
    // beside the peers (so not with `--no-peers`).
    if let (Some(exe), Some(_)) = (&spec.manifold_exe, &spec.peers_dir) {
        for name in FLOORS {
            commands.push(proxy_peers::hyper_floor(exe, upstream_addr, "/item", name));
        }
    }
    if let Some(dir) = &spec.peers_dir {
        commands.extend(proxy_peers::all(dir, upstream_addr, "/item"));
    }
    for cmd in commands {
        let started = match cmd {
            Ok(cmd) => peers::start(cmd).await,
            Err(s) => Err(s),
        };
        match started {
            Ok(p) => list.push(Target {
                name: p.name().to_owned(),
                url: p.url("/item"),
                process: Some(p),
            }),
            Err(s) => skipped.push(s),
        }
    }
    Ok(Targets {
        sim,
        list,
        manifold_process,
        skipped,
        stop,
    })
}

async fn measure(
    url: &str,
    rate: f64,
    duration: Duration,
) -> Result<manifold_load::LoadReport, BenchError> {
    let mut spec = LoadSpec::new(url, rate);
    spec.duration = Some(duration);
    spec.timeout = Duration::from_secs(5);
    Ok(manifold_load::run(spec).await?)
}

fn cpu(t: &Target) -> Option<f64> {
    t.process.as_ref().and_then(|p| p.cpu_seconds())
}

/// Run the proxy benchmark. `progress` is told what is being measured.
pub async fn run(
    spec: &ProxySpec,
    mut progress: impl FnMut(&str),
) -> Result<ProxyReport, BenchError> {
    progress("starting the upstream, Manifold, nginx, HAProxy and Envoy");
    let targets = start_targets(spec).await?;
    for s in &targets.skipped {
        progress(&s.to_string());
    }
    for t in &targets.list {
        let _ = measure(&t.url, 500.0, Duration::from_millis(500)).await?;
    }
    let n = targets.list.len();
    let idx: Vec<usize> = (0..n).collect();
    let mut rates = Vec::new();
    for &rate in &spec.rates {
        let mut reports: Vec<Vec<manifold_load::LoadReport>> = vec![Vec::new(); n];
        let mut cpus: Vec<Vec<Option<f64>>> = vec![Vec::new(); n];
        for round in 0..spec.rounds {
            for i in rotated(&idx, round) {
                let t = &targets.list[i];
                progress(&format!(
                    "{rate} req/s, round {}/{}: {}",
                    round + 1,
                    spec.rounds,
                    t.name
                ));
                let before = cpu(t);
                let r = measure(&t.url, rate, spec.duration).await?;
                cpus[i].push(per_request_us(before, cpu(t), r.ok));
                reports[i].push(r);
            }
        }
        let lat: Vec<Measured> = targets
            .list
            .iter()
            .zip(&reports)
            .map(|(t, r)| measured(&t.name, rate, r))
            .collect();
        let (d50, d99) = (lat[0].p50_ms.median, lat[0].p99_ms.median);
        rates.push(ProxyRate {
            rate,
            targets: lat
                .into_iter()
                .zip(&cpus)
                .map(|(latency, c)| ProxyMeasured {
                    added_p50_over_direct_ms: latency.p50_ms.median - d50,
                    added_p99_over_direct_ms: latency.p99_ms.median - d99,
                    cpu_us_per_request: spread_if_any(c),
                    latency,
                })
                .collect(),
        });
    }

    let mut throughput = Vec::new();
    if !spec.throughput_duration.is_zero() {
        let mut rps: Vec<Vec<f64>> = vec![Vec::new(); n];
        let mut cpus: Vec<Vec<Option<f64>>> = vec![Vec::new(); n];
        for round in 0..spec.rounds {
            progress(&format!(
                "closed-loop throughput, round {}/{}",
                round + 1,
                spec.rounds
            ));
            for i in rotated(&idx, round) {
                let t = &targets.list[i];
                let before = cpu(t);
                let (done, secs) = closed_loop_count(
                    &t.url,
                    spec.throughput_clients,
                    spec.throughput_duration,
                    None,
                )
                .await;
                cpus[i].push(per_request_us(before, cpu(t), done));
                rps[i].push(done as f64 / secs);
            }
        }
        let direct = Spread::of(&rps[0]).median;
        for (i, t) in targets.list.iter().enumerate() {
            let r = Spread::of(&rps[i]);
            throughput.push(ProxyThroughput {
                target: t.name.clone(),
                over_direct: if direct > 0.0 { r.median / direct } else { 0.0 },
                rps: r,
                cpu_us_per_request: spread_if_any(&cpus[i]),
                peak_rss_kib: t.process.as_ref().and_then(|p| p.peak_rss_kib()),
            });
        }
    }
    let manifold_process = targets.manifold_process.clone();
    let skipped = targets.skipped.clone();
    targets.shutdown().await;
    Ok(ProxyReport {
        scenario: "proxy",
        upstream_delay_ms: spec.upstream_delay_ms,
        duration_s: spec.duration.as_secs_f64(),
        rounds: spec.rounds,
        manifold_process,
        rates,
        throughput_clients: spec.throughput_clients,
        throughput,
        skipped,
    })
}

impl ProxyReport {
    /// Per rate, Manifold's CPU per request against the lowest of the peers' that ran, and its
    /// added p50 against nginx's: the two comparisons issue 15 asks for, so that a reader need
    /// not do them from the table. Empty when no peer (or no Manifold CPU figure) was measured.
    pub fn goal_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.rates {
            let find = |name: &str| r.targets.iter().find(|t| t.latency.target == name);
            let Some(m) = find("manifold") else { continue };
            let peers = r.targets.iter().filter(|t| {
                let name = t.latency.target.as_str();
                !matches!(name, "direct" | "manifold") && !FLOORS.contains(&name)
            });
            let lowest = peers
                .filter_map(|t| {
                    Some((
                        t.latency.target.as_str(),
                        t.cpu_us_per_request.as_ref()?.median,
                    ))
                })
                .min_by(|a, b| a.1.total_cmp(&b.1));
            let mut parts = Vec::new();
            if let (Some(c), Some((peer, low))) = (&m.cpu_us_per_request, lowest) {
                parts.push(format!(
                    "CPU {:.1} µs/req against {peer}'s {low:.1} ({:.2}×)",
                    c.median,
                    if low > 0.0 {
                        c.median / low
                    } else {
                        f64::INFINITY
                    }
                ));
            }
            // The bare hyper proxies: how much of the gap is the stack's (and of that, the
            // runtime model's) and how much Manifold's.
            for (floor, label) in FLOORS.iter().zip(["bare hyper", "per-core hyper"]) {
                let (Some(c), Some(h)) = (
                    &m.cpu_us_per_request,
                    find(floor).and_then(|h| h.cpu_us_per_request.as_ref()),
                ) else {
                    continue;
                };
                let against_peer = match lowest {
                    Some((peer, low)) if low > 0.0 => {
                        format!(", {:.2}× {peer}'s", h.median / low)
                    }
                    _ => String::new(),
                };
                parts.push(format!(
                    "the {label} proxy {:.1} µs/req{against_peer} (Manifold {:.2}× it)",
                    h.median,
                    if h.median > 0.0 {
                        c.median / h.median
                    } else {
                        f64::INFINITY
                    }
                ));
            }
            if let Some(n) = find("nginx") {
                parts.push(format!(
                    "added p50 {:+.3} ms against nginx's {:+.3} ms",
                    m.added_p50_over_direct_ms, n.added_p50_over_direct_ms
                ));
            }
            if !parts.is_empty() {
                // The compared figures leave out the requests that failed: say so rather than
                // let a ratio over survivors read as a verdict.
                let compared = [
                    Some(m),
                    lowest.and_then(|(peer, _)| find(peer)),
                    find("nginx"),
                ];
                let why = crate::stats::undecided(
                    &compared
                        .iter()
                        .flatten()
                        .map(|t| &t.latency)
                        .collect::<Vec<_>>(),
                );
                if let Some(why) = why {
                    parts.push(format!("not decided: {why}"));
                }
                out.push(format!("{:.0}/s: Manifold {}", r.rate, parts.join("; ")));
            }
        }
        out
    }

    /// A markdown table, as `docs/benchmarks.md` quotes it.
    pub fn to_markdown(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "one upstream answering `GET /item` after {} ms; direct = the physical limit (client → upstream); Manifold: {}; {} rounds of {:.0} s per rate, medians [min–max]\n",
            self.upstream_delay_ms, self.manifold_process, self.rounds, self.duration_s
        );
        let cell = |x: &Spread| format!("{:.3} [{:.3}–{:.3}]", x.median, x.min, x.max);
        let cpu = |x: &Option<Spread>| match x {
            Some(c) => format!("{:.1} [{:.1}–{:.1}]", c.median, c.min, c.max),
            None => "not measured".into(),
        };
        let _ = writeln!(
            s,
            "| rate | target | p50 ms | p99 ms | p99.9 ms | max ms | added p50 / p99 ms over direct | proxy CPU µs/req | errors |"
        );
        let _ = writeln!(s, "|---:|---|---:|---:|---:|---:|---:|---:|---:|");
        for r in &self.rates {
            for t in &r.targets {
                let m = &t.latency;
                let added = if m.target == "direct" {
                    "—".to_owned()
                } else {
                    format!(
                        "{:+.3} / {:+.3}",
                        t.added_p50_over_direct_ms, t.added_p99_over_direct_ms
                    )
                };
                let _ = writeln!(
                    s,
                    "| {:.0}/s | {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.rate,
                    m.target,
                    cell(&m.p50_ms),
                    cell(&m.p99_ms),
                    cell(&m.p999_ms),
                    cell(&m.max_ms),
                    added,
                    if m.target == "direct" {
                        "—".to_owned()
                    } else {
                        cpu(&t.cpu_us_per_request)
                    },
                    m.errors_cell()
                );
            }
        }
        let goals = self.goal_lines();
        if !goals.is_empty() {
            let _ = writeln!(s, "\nissue 15 goal 1 (CPU per request at or below the lowest peer's, added p50 at or below nginx's):\n");
            for g in goals {
                let _ = writeln!(s, "- {g}");
            }
        }
        if !self.throughput.is_empty() {
            let _ = writeln!(
                s,
                "\nclosed-loop throughput, {} clients:\n\n| target | req/s | of direct | proxy CPU µs/req | peak RSS MiB |\n|---|---:|---:|---:|---:|",
                self.throughput_clients
            );
            for t in &self.throughput {
                let _ = writeln!(
                    s,
                    "| {} | {:.0} [{:.0}–{:.0}] | {:.2} | {} | {} |",
                    t.target,
                    t.rps.median,
                    t.rps.min,
                    t.rps.max,
                    t.over_direct,
                    if t.target == "direct" {
                        "—".to_owned()
                    } else {
                        cpu(&t.cpu_us_per_request)
                    },
                    t.peak_rss_kib
                        .map(|k| format!("{:.1}", k as f64 / 1024.0))
                        .unwrap_or_else(|| "—".into())
                );
            }
        }
        for k in &self.skipped {
            let _ = writeln!(s, "\n{k}");
        }
        s
    }
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
