//! `manifold bench overload`: offered load at twice the gateway's capacity, with the adaptive
//! concurrency limit (`[server] concurrency = "adaptive"`, the default) and without a limit
//! (`concurrency = 1000000`), side by side in one run.
//!
//! The route is a composition of three calls to simulated upstreams that answer at once, so
//! what limits it is the gateway's own work (parsing, three upstream round trips, rendering).
//! Each gateway is a `manifold serve` child process on **one** worker thread
//! (`TOKIO_WORKER_THREADS=1`), meant to leave the other core to the load generator (this
//! process) and the simulated upstreams (a `manifold sim` child of their own, so that neither
//! delays the other on one runtime). They may not fit in it: per admitted request the harness
//! does about as much work as the gateway (it sends the request, reads the answer and answers
//! three upstream calls), so the report gives the CPU each side used during the overload
//! rounds, as a share of one core ([`Target::gateway_cpu`], [`Target::harness_cpu`]: the load
//! generator only), and how long the gateway had work and waited for a core
//! ([`Target::gateway_waiting`]). A late harness — with the requests it sends and with the
//! upstream answers the gateway waits for — puts its lateness in the admitted p99
//! (docs/benchmarks.md, 2026-12-07).
//!
//! 1. **Capacity**: open-loop steps on the unlimited gateway, doubling from `start_rate` while
//!    the answers keep up with the offered rate (≥ 95% of it answered 2xx per second, ≤ 1%
//!    errors), then bisecting between the last rate that kept up and the first that did not.
//!    Bounded in steps and time.
//! 2. **Unloaded**: each gateway at a quarter of capacity; its p99 is the reference.
//! 3. **Overload**: each gateway at `factor` × capacity, interleaved round by round. Goodput is
//!    2xx answers per second (answers after the client's timeout are not answers), admitted p99
//!    the p99 of those 2xx answers, shed the 503s. Before the rounds each gateway gets one
//!    overload run of the same length that is reported apart (`first_*`): it holds the adaptive
//!    limit's descent from its generous start, a transient that would otherwise be most of a
//!    few seconds' p99; the rounds measure the steady state.
//! 4. **Whose tail**: the client measures from each request's scheduled time (so a late
//!    generator cannot hide a slow server), which also puts the generator's own lateness in
//!    the admitted p99. The report gives, beside it, the same answers' p99 measured from each
//!    request's send and the p99 of how late the sends were: the verdict stays the client's,
//!    the second table says how much of it the harness was.
//!
//! The goal (issue 13): with the adaptive limit, goodput ≥ 90% of capacity and admitted p99
//! ≤ 2× the unloaded p99.

mod report;

pub use report::{OverloadReport, Step, Target};

use crate::peers::{self, RunningPeer, ThreadsCpu};
use crate::stats::Spread;
use crate::BenchError;
use manifold_load::{LoadReport, LoadSpec};
use std::path::PathBuf;
use std::time::Duration;

/// The goal: goodput at 2× capacity, as a fraction of capacity, at least.
pub const GOAL_GOODPUT: f64 = 0.9;
/// The goal: admitted p99 over unloaded p99, at most.
pub const GOAL_P99_RATIO: f64 = 2.0;

/// What to run.
#[derive(Debug, Clone)]
pub struct OverloadSpec {
    /// The `manifold` binary, run as `manifold serve` children.
    pub manifold_exe: PathBuf,
    /// Worker threads of each gateway child.
    pub gateway_threads: usize,
    /// The capacity search's first rate, req/s.
    pub start_rate: f64,
    /// The capacity search never offers more than this, req/s.
    pub max_rate: f64,
    /// Most capacity steps (doubling and bisecting together).
    pub max_steps: usize,
    /// Length of one capacity step.
    pub step_duration: Duration,
    /// Length of the unloaded measurement.
    pub unloaded_duration: Duration,
    /// Offered load over capacity.
    pub factor: f64,
    /// Length of one overload measurement.
    pub duration: Duration,
    /// Overload rounds (each measures both gateways).
    pub rounds: usize,
    /// The load generator's most requests in flight (connections).
    pub connections: usize,
    /// The client gives up on a request this long after its scheduled time.
    pub timeout: Duration,
}

impl OverloadSpec {
    /// The default run (about a minute).
    pub fn new(manifold_exe: PathBuf) -> Self {
        OverloadSpec {
            manifold_exe,
            gateway_threads: 1,
            start_rate: 1000.0,
            max_rate: 100_000.0,
            max_steps: 8,
            step_duration: Duration::from_secs(2),
            unloaded_duration: Duration::from_secs(3),
            factor: 2.0,
            duration: Duration::from_secs(5),
            rounds: 2,
            connections: 1000,
            timeout: Duration::from_secs(2),
        }
    }

    /// A short run for smoke tests and `--quick`.
    pub fn quick(manifold_exe: PathBuf) -> Self {
        OverloadSpec {
            max_steps: 4,
            step_duration: Duration::from_secs(1),
            unloaded_duration: Duration::from_secs(1),
            duration: Duration::from_secs(2),
            rounds: 1,
            ..Self::new(manifold_exe)
        }
    }

    fn check(&self) -> Result<(), BenchError> {
        let ok = self.start_rate.is_finite()
            && self.start_rate >= 1.0
            && self.max_rate.is_finite()
            && self.max_rate >= self.start_rate
            && self.factor.is_finite()
            && (1.0..=10.0).contains(&self.factor)
            && (1..=20).contains(&self.max_steps)
            && (1..=10).contains(&self.rounds)
            && (1..=64).contains(&self.gateway_threads)
            && (1..=20_000).contains(&self.connections)
            && !self.duration.is_zero()
            && !self.step_duration.is_zero()
            && !self.unloaded_duration.is_zero()
            && !self.timeout.is_zero();
        if ok {
            Ok(())
        } else {
            Err(BenchError::Spec(format!("{self:?}")))
        }
    }
}

/// The three simulated upstreams' config, each on its port.
fn sim_toml(ports: &[u16; 3]) -> String {
    let mut toml = String::from("seed = 11\nhost = \"127.0.0.1\"\n");
    for (s, port) in SERVICES.iter().zip(ports) {
        toml.push_str(&format!(
            "[services.{s}]\nport = {port}\n  [[services.{s}.endpoints]]\n  method = \"GET\"\n  path = \"/item\"\n  \
             response = {{ body = {{ id = \"{{seq}}\", name = \"widget\", price = 9.5, tags = [\"x\", \"y\"] }} }}\n"
        ));
    }
    toml
}

/// The simulated upstreams, as a `manifold sim` child of their own: in this process they would
/// share the load generator's runtime, and each would delay the other (the gateway waits on
/// the upstreams' answers, the client on the gateway's). Returns the child and each service's
/// URL, in [`SERVICES`]' order.
async fn start_sim(spec: &OverloadSpec) -> Result<(RunningPeer, Vec<String>), BenchError> {
    let setup = |what: &str, e: String| BenchError::Setup(format!("simulator {what}: {e}"));
    let mut ports = [0u16; 3];
    for p in &mut ports {
        *p = peers::free_port().map_err(|e| setup("port", e.to_string()))?;
    }
    let dir = peers::scratch_dir("sim").map_err(|e| setup("scratch dir", e.to_string()))?;
    let conf = dir.join("sim.toml");
    std::fs::write(&conf, sim_toml(&ports)).map_err(|e| setup("config", e.to_string()))?;
    let cmd = peers::PeerCommand {
        name: "sim".into(),
        program: spec.manifold_exe.clone(),
        args: vec!["sim".into(), "-c".into(), conf.display().to_string()],
        env: vec![("RUST_LOG".into(), "warn".into())],
        cwd: None,
        requires: Vec::new(),
        port: ports[0],
        probe_path: "/item".into(),
        ready_timeout: Duration::from_secs(20),
        scratch: Some(dir),
    };
    let peer = peers::start(cmd)
        .await
        .map_err(|s| setup("start", s.reason))?;
    let urls = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    Ok((peer, urls))
}

/// The simulated services, by name.
const SERVICES: [&str; 3] = ["a", "b", "c"];

/// The gateway config: one composed route over the three upstreams (`urls` in [`SERVICES`]'
/// order), at `concurrency`.
pub fn gateway_toml(urls: &[String], concurrency: &str) -> String {
    let mut toml = format!("[server]\nconcurrency = {concurrency}\n");
    for (s, url) in SERVICES.iter().zip(urls) {
        toml.push_str(&format!("[upstreams.{s}]\nendpoints = [\"{url}\"]\n"));
    }
    toml.push_str("[routes.overview]\nmethod = \"GET\"\npath = \"/overview\"\n");
    for s in SERVICES {
        toml.push_str(&format!(
            "  [[routes.overview.calls]]\n  name = \"{s}\"\n  upstream = \"{s}\"\n  method = \"GET\"\n  path = \"/item\"\n"
        ));
    }
    toml.push_str(
        "  [routes.overview.response]\n  body = { a = \"{a}\", b = \"{b}\", price = \"{c.price}\" }\n",
    );
    toml
}

async fn start_gateway(
    spec: &OverloadSpec,
    urls: &[String],
    concurrency: &str,
) -> Result<RunningPeer, BenchError> {
    let toml = gateway_toml(urls, concurrency);
    let mut cmd = peers::manifold_serve(&spec.manifold_exe, &toml, "/overview")
        .map_err(|s| BenchError::Setup(format!("manifold serve: {}", s.reason)))?;
    cmd.env.push((
        "TOKIO_WORKER_THREADS".into(),
        spec.gateway_threads.to_string(),
    ));
    peers::start(cmd)
        .await
        .map_err(|s| BenchError::Setup(format!("manifold serve: {}", s.reason)))
}

async fn measure(
    spec: &OverloadSpec,
    url: &str,
    rate: f64,
    duration: Duration,
) -> Result<LoadReport, BenchError> {
    let mut load = LoadSpec::new(url, rate);
    load.duration = Some(duration);
    load.timeout = spec.timeout;
    load.connections = Some(spec.connections);
    Ok(manifold_load::run(load).await?)
}

/// CPU used by each side during one measurement, as shares of one core, and how long the
/// gateway's threads waited for a core with work to do, as a share of the wall time.
#[derive(Debug, Clone, Copy)]
struct CpuShares {
    gateway: f64,
    harness: f64,
    gateway_waiting: Option<f64>,
}

/// [`measure`], with the CPU the gateway and this process used meanwhile (`None` where `/proc`
/// cannot be read).
async fn measure_with_cpu(
    spec: &OverloadSpec,
    gateway: &RunningPeer,
    sim: &RunningPeer,
    url: &str,
    rate: f64,
    duration: Duration,
) -> Result<(LoadReport, Option<CpuShares>), BenchError> {
    // The harness: the load generator (this process) and the simulated upstreams.
    let harness = || Some(peers::process_cpu_seconds(std::process::id())? + sim.cpu_seconds()?);
    let before = (gateway.cpu_seconds(), harness());
    let threads_before = ThreadsCpu::of_process(gateway.pid());
    let started = tokio::time::Instant::now();
    let r = measure(spec, url, rate, duration).await?;
    let wall = started.elapsed().as_secs_f64();
    let after = (gateway.cpu_seconds(), harness());
    let threads_after = ThreadsCpu::of_process(gateway.pid());
    let gateway_waiting = match (&threads_before, &threads_after) {
        (Some(b), Some(a)) if wall > 0.0 => Some(a.waiting_since(b) / wall),
        _ => None,
    };
    let shares = match (before, after) {
        ((Some(g0), Some(h0)), (Some(g1), Some(h1))) if wall > 0.0 => Some(CpuShares {
            gateway: (g1 - g0) / wall,
            harness: (h1 - h0) / wall,
            gateway_waiting,
        }),
        _ => None,
    };
    Ok((r, shares))
}

/// 2xx answers per second over the run (from the first send to the last answer).
fn goodput(r: &LoadReport) -> f64 {
    if r.duration_s > 0.0 {
        r.ok as f64 / r.duration_s
    } else {
        0.0
    }
}

fn ok_p99_ms(r: &LoadReport) -> f64 {
    p99_ms(&r.ok_histogram)
}

fn p99_ms(h: &manifold_load::Histogram<u64>) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    h.value_at_quantile(0.99) as f64 / 1000.0
}

fn kept_up(r: &LoadReport, rate: f64) -> bool {
    goodput(r) >= 0.95 * rate && (r.errors as f64) <= 0.01 * r.sent as f64
}

/// Wait (at most ~10 s) until the gateway answers one request quickly: its backlog is gone.
async fn settle(url: &str) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..50 {
        let mut one = LoadSpec::new(url, 100.0);
        one.requests = Some(5);
        one.timeout = Duration::from_secs(2);
        if let Ok(r) = manifold_load::run(one).await {
            if r.ok == 5 && r.latency_ms.max < 50.0 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The capacity search on `url`: the steps taken and the highest rate that kept up.
async fn capacity(
    spec: &OverloadSpec,
    url: &str,
    progress: &mut impl FnMut(&str),
) -> Result<(Vec<Step>, f64), BenchError> {
    let mut steps = Vec::new();
    let mut good: Option<f64> = None;
    let mut bad: Option<f64> = None;
    let mut rate = spec.start_rate;
    for _ in 0..spec.max_steps {
        progress(&format!("capacity: {rate:.0} req/s"));
        let r = measure(spec, url, rate, spec.step_duration).await?;
        let up = kept_up(&r, rate);
        steps.push(Step {
            offered: rate,
            goodput: goodput(&r),
            errors: r.errors,
            kept_up: up,
        });
        if !up {
            settle(url).await;
        }
        match (up, good, bad) {
            (true, _, _) => good = Some(rate),
            (false, _, _) => bad = Some(bad.map_or(rate, |b: f64| b.min(rate))),
        }
        rate = match (good, bad) {
            (Some(g), None) if g * 2.0 <= spec.max_rate => g * 2.0,
            (Some(_), None) => break,
            (Some(g), Some(b)) if b - g > g * 0.05 => (g + b) / 2.0,
            (Some(_), Some(_)) => break,
            // Not even the first rate kept up: go down.
            (None, Some(b)) if b / 2.0 >= 1.0 => b / 2.0,
            _ => break,
        };
    }
    let found = match good {
        Some(g) => g,
        // Nothing kept up: the best goodput seen is the capacity.
        None => steps.iter().map(|s| s.goodput).fold(0.0, f64::max),
    };
    Ok((steps, found))
}

/// Run the overload benchmark. `progress` is told what is being measured.
pub async fn run(
    spec: &OverloadSpec,
    mut progress: impl FnMut(&str),
) -> Result<OverloadReport, BenchError> {
    spec.check()?;
    progress("starting the simulator and two gateways (adaptive limit, no limit)");
    let (sim, sim_urls) = start_sim(spec).await?;
    let result = run_with(spec, (&sim, &sim_urls), &mut progress).await;
    drop(sim);
    result
}

async fn run_with(
    spec: &OverloadSpec,
    (sim, sim_urls): (&RunningPeer, &[String]),
    progress: &mut impl FnMut(&str),
) -> Result<OverloadReport, BenchError> {
    let gateways = [
        (
            "adaptive",
            start_gateway(spec, sim_urls, "\"adaptive\"").await?,
        ),
        ("no limit", start_gateway(spec, sim_urls, "1000000").await?),
    ];
    let urls: Vec<String> = gateways.iter().map(|(_, p)| p.url("/overview")).collect();
    for url in &urls {
        let _ = measure(spec, url, 200.0, Duration::from_millis(500)).await?;
    }
    let (steps, capacity) = capacity(spec, &urls[1], progress).await?;
    if capacity < 1.0 {
        return Err(BenchError::Setup(
            "the gateway answered nothing during the capacity search".into(),
        ));
    }
    let mut unloaded = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        progress(&format!(
            "unloaded: {} at {:.0} req/s",
            gateways[i].0,
            capacity / 4.0
        ));
        settle(url).await;
        let r = measure(spec, url, capacity / 4.0, spec.unloaded_duration).await?;
        unloaded.push((ok_p99_ms(&r), p99_ms(&r.ok_from_send_histogram)));
    }
    let offered = capacity * spec.factor;
    let mut first = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        progress(&format!(
            "first overload (from a standing start): {} at {offered:.0} req/s",
            gateways[i].0
        ));
        settle(url).await;
        first.push(measure(spec, url, offered, spec.duration).await?);
    }
    let mut runs: Vec<Vec<LoadReport>> = vec![Vec::new(), Vec::new()];
    let mut cpu: Vec<Vec<CpuShares>> = vec![Vec::new(), Vec::new()];
    for round in 0..spec.rounds {
        for i in crate::compose::rotated(&[0usize, 1], round) {
            progress(&format!(
                "overload round {}/{}: {} at {offered:.0} req/s",
                round + 1,
                spec.rounds,
                gateways[i].0
            ));
            settle(&urls[i]).await;
            let (r, shares) =
                measure_with_cpu(spec, &gateways[i].1, sim, &urls[i], offered, spec.duration)
                    .await?;
            runs[i].push(r);
            cpu[i].extend(shares);
        }
    }
    let targets: Vec<Target> = gateways
        .iter()
        .zip(&runs)
        .zip(&unloaded)
        .zip(&first)
        .zip(&cpu)
        .map(
            |(((((name, _), rs), &(base, base_from_send)), first), shares)| {
                let rate = Spread::of(&rs.iter().map(goodput).collect::<Vec<_>>());
                let p99 = Spread::of(&rs.iter().map(ok_p99_ms).collect::<Vec<_>>());
                let from_send = Spread::of(
                    &rs.iter()
                        .map(|r| p99_ms(&r.ok_from_send_histogram))
                        .collect::<Vec<_>>(),
                );
                let lag = Spread::of(
                    &rs.iter()
                        .map(|r| r.max_send_lag.as_secs_f64() * 1e3)
                        .collect::<Vec<_>>(),
                );
                Target {
                    target: (*name).to_owned(),
                    unloaded_p99_ms: base,
                    goodput_of_capacity: rate.median / capacity,
                    p99_over_unloaded: if base > 0.0 { p99.median / base } else { 0.0 },
                    goodput: rate,
                    admitted_p99_ms: p99,
                    shed: rs
                        .iter()
                        .map(|r| r.statuses.get(&503).copied().unwrap_or(0))
                        .sum(),
                    unanswered: rs
                        .iter()
                        .map(|r| {
                            let refused: u64 = r.statuses.range(400..).map(|(_, n)| n).sum();
                            r.errors.saturating_sub(refused)
                        })
                        .sum(),
                    offered: rs.iter().map(|r| r.sent).sum(),
                    first_goodput: goodput(first),
                    first_admitted_p99_ms: ok_p99_ms(first),
                    generator_lag_ms: lag,
                    unloaded_p99_from_send_ms: base_from_send,
                    from_send_over_unloaded: if base_from_send > 0.0 {
                        from_send.median / base_from_send
                    } else {
                        0.0
                    },
                    admitted_p99_from_send_ms: from_send,
                    send_delay_p99_ms: Spread::of(
                        &rs.iter()
                            .map(|r| p99_ms(&r.send_delay_histogram))
                            .collect::<Vec<_>>(),
                    ),
                    gateway_cpu: Spread::of(&shares.iter().map(|c| c.gateway).collect::<Vec<_>>()),
                    harness_cpu: Spread::of(&shares.iter().map(|c| c.harness).collect::<Vec<_>>()),
                    gateway_waiting: Spread::of(
                        &shares
                            .iter()
                            .filter_map(|c| c.gateway_waiting)
                            .collect::<Vec<_>>(),
                    ),
                }
            },
        )
        .collect();
    let adaptive = &targets[0];
    let goal_met = adaptive.goodput_of_capacity >= GOAL_GOODPUT
        && adaptive.p99_over_unloaded > 0.0
        && adaptive.p99_over_unloaded <= GOAL_P99_RATIO;
    drop(gateways);
    Ok(OverloadReport {
        scenario: "overload",
        gateway_threads: spec.gateway_threads,
        steps,
        capacity,
        offered,
        duration_s: spec.duration.as_secs_f64(),
        rounds: spec.rounds,
        connections: spec.connections,
        targets,
        goal_met,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sim_and_both_gateway_configs_compile() {
        let sim = manifold_sim::SimConfig::from_toml(&sim_toml(&[7001, 7002, 7003]))
            .expect("the simulator's config");
        assert_eq!(sim.services.len(), 3);
        let urls: Vec<String> = (1..=3)
            .map(|i| format!("http://127.0.0.1:700{i}"))
            .collect();
        for c in ["\"adaptive\"", "1000000"] {
            let config =
                manifold_config::compile("overload.toml".as_ref(), &gateway_toml(&urls, c))
                    .expect("it compiles");
            assert_eq!(config.routes.len(), 1);
            assert_eq!(config.upstreams.len(), 3);
        }
    }

    #[test]
    fn absurd_specs_are_refused() {
        let ok = OverloadSpec::quick(PathBuf::from("manifold"));
        assert!(ok.check().is_ok());
        for bad in [
            OverloadSpec {
                factor: f64::NAN,
                ..ok.clone()
            },
            OverloadSpec {
                start_rate: 0.0,
                ..ok.clone()
            },
            OverloadSpec {
                rounds: 0,
                ..ok.clone()
            },
            OverloadSpec {
                max_steps: 1000,
                ..ok.clone()
            },
            OverloadSpec {
                duration: Duration::ZERO,
                ..ok.clone()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
