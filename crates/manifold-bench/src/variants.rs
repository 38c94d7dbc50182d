//! The harness `bench hedge`, `bench balance` and `bench retry-storm` share: one simulated
//! upstream with misbehaving replicas, and one in-process gateway per *variant* (the same route,
//! the upstream's policies differing), measured side by side in one run.
//!
//! Each round measures every variant once, in rotated order, under the same open-loop load; the
//! sim's counters are reset before each measurement, so the upstream requests counted at the sim
//! (retries and hedges included, a cancelled hedge too) belong to that measurement alone. A
//! variant's gateway lives for the whole run, so what its policies learn (latency estimates,
//! budgets, endpoint costs) carries from round to round as in a long-running process; it is warmed
//! up before its first measurement.

use crate::compose::{measured, rotated};
use crate::{BenchError, Measured, Spread};
use manifold_load::{LoadReport, LoadSpec};
use manifold_sim::{RunningSim, Sim, SimConfig};
use serde::Serialize;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::instrument::WithSubscriber as _;

/// The simulated service every scenario calls, and its one endpoint.
pub(crate) const SERVICE: &str = "item";
/// The path of that endpoint, and of the gateway's route.
pub(crate) const PATH: &str = "/item";

/// How hard and how long to measure (common to the three scenarios).
#[derive(Debug, Clone)]
pub struct Load {
    /// Scheduled requests per second.
    pub rate: f64,
    /// Length of one measurement.
    pub duration: Duration,
    /// Rounds (each measures every variant once).
    pub rounds: usize,
    /// Load before a variant's first measurement (not counted).
    pub warmup: Duration,
    /// How the sim and the load generator wait (precise by default; tests may use tokio's).
    pub timer: manifold_timer::Timer,
    /// The `manifold` binary: each variant's gateway runs as a `manifold serve` child, as in
    /// production, apart from the sim and the load generator. `None`: in-process gateways
    /// sharing this process's runtime with them (tests; the tail figures then carry the
    /// sharing, measured here at 3× the hedged p99 of separate processes).
    pub gateway_exe: Option<std::path::PathBuf>,
}

impl Load {
    /// The scenarios' default: `rate` req/s, 3 rounds of 8 s per variant after 2 s of warm-up,
    /// the precise timer, in-process gateways until the CLI names the binary.
    pub(crate) fn at(rate: f64) -> Self {
        Load {
            rate,
            duration: Duration::from_secs(8),
            rounds: 3,
            warmup: Duration::from_secs(2),
            timer: manifold_timer::Timer::precise(),
            gateway_exe: None,
        }
    }

    /// The same, cut short for smoke tests and `--quick`: 2 rounds of 2 s after 1 s of warm-up.
    pub(crate) fn quick(&mut self) {
        self.duration = Duration::from_secs(2);
        self.rounds = 2;
        self.warmup = Duration::from_secs(1);
    }

    pub(crate) fn check(&self) -> Result<(), BenchError> {
        if !self.rate.is_finite() || self.rate <= 0.0 || self.rate > 100_000.0 {
            return Err(BenchError::Spec(format!(
                "rate must be above 0 and at most 100000 per second, got {}",
                self.rate
            )));
        }
        if self.rounds == 0 || self.rounds > 100 {
            return Err(BenchError::Spec(format!(
                "rounds must be 1 to 100, got {}",
                self.rounds
            )));
        }
        if self.duration.is_zero() || self.duration > Duration::from_secs(3600) {
            return Err(BenchError::Spec(format!(
                "a measurement must last more than 0 and at most 1h, got {:?}",
                self.duration
            )));
        }
        if self.warmup > Duration::from_secs(600) {
            return Err(BenchError::Spec("warm-up above 10 minutes".into()));
        }
        Ok(())
    }
}

/// One way of configuring the upstream: a name and the policy keys of `[upstreams.u]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Variant {
    /// Shown in the report (`without hedge`, `round_robin`, …).
    pub(crate) name: String,
    /// TOML lines added to `[upstreams.u]` (the contract keys: `balance`, `retry`, `hedge`).
    pub(crate) policy: String,
}

/// The gateway config of one variant: one composed route making one idempotent `GET` call to
/// the upstream, whose endpoints are every replica of the sim's service.
pub(crate) fn gateway_toml(endpoints: &[String], variant: &Variant) -> String {
    let list = endpoints
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
drain_delay = "0s"

[upstreams.u]
endpoints = [{list}]
timeout = "2s"
{policy}

[routes.item]
method = "GET"
path = "{PATH}"
deadline = "3s"

  [[routes.item.calls]]
  name = "item"
  upstream = "u"
  method = "GET"
  path = "{PATH}"
"#,
        policy = variant.policy.trim(),
    )
}

/// One variant's figures over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct VariantResult {
    /// The variant's name.
    pub name: String,
    /// Its policy keys, as written in `[upstreams.u]`.
    pub policy: String,
    /// Latency over rounds (from each request's scheduled send time).
    pub latency: Measured,
    /// Requests the load generator sent, over all rounds.
    pub offered: u64,
    /// Requests the upstream received, over all rounds (retries and hedges included).
    pub upstream_requests: u64,
    /// Upstream requests per offered request, per round.
    pub upstream_per_offered: Spread,
    /// Extra upstream requests as a percentage of the offered ones, per round.
    pub extra_pct: Spread,
    /// Requests answered below 400, as a percentage of those sent, per round.
    pub success_pct: Spread,
    /// Latency over every request of every round together. A round of a few thousand
    /// requests puts p99.9 on its 2nd or 3rd slowest, so one round's p99.9 flips between the
    /// body and the tail on a single event (both replicas straggling at once); the pooled
    /// figure rests on `rounds` times as many. The goals read these.
    pub pooled_ms: Pooled,
}

/// Latency percentiles over all rounds' requests, ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Pooled {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// The slowest request.
    pub max: f64,
}

impl Pooled {
    fn of(reports: &[LoadReport]) -> Pooled {
        let mut all: Option<manifold_load::Histogram<u64>> = None;
        for r in reports {
            match &mut all {
                None => all = Some(r.histogram.clone()),
                // Same bounds and precision (one generator): adding cannot fail; if it ever
                // did, the pooled figure would only lack that round.
                Some(h) => {
                    let _ = h.add(&r.histogram);
                }
            }
        }
        let at = |q: f64| {
            all.as_ref()
                .filter(|h| !h.is_empty())
                .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
        };
        Pooled {
            p50: at(0.5),
            p99: at(0.99),
            p999: at(0.999),
            max: all.as_ref().map_or(0.0, |h| h.max() as f64 / 1000.0),
        }
    }
}

/// A scenario's goal, checked against the medians measured.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    /// The goal in words, with the figures it compares.
    pub what: String,
    /// Whether the run met it.
    pub met: bool,
}

/// The whole result of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct VariantsReport {
    /// `hedge`, `balance`, `retry-storm`.
    pub scenario: &'static str,
    /// The upstream and its replicas, in words.
    pub setup: String,
    /// Scheduled requests per second.
    pub rate: f64,
    /// Seconds per measurement.
    pub duration_s: f64,
    /// Rounds.
    pub rounds: usize,
    /// One entry per variant, the baseline first.
    pub variants: Vec<VariantResult>,
    /// The goal and whether it was met.
    pub goal: Goal,
}

impl VariantsReport {
    /// A markdown table, as `docs/benchmarks.md` quotes it.
    pub fn to_markdown(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{}; {:.0} req/s, {} rounds of {:.0} s per variant, interleaved; medians over rounds [min–max]\n",
            self.setup, self.rate, self.rounds, self.duration_s
        );
        let cell =
            |x: &Spread, d: usize| format!("{:.d$} [{:.d$}–{:.d$}]", x.median, x.min, x.max, d = d);
        let _ = writeln!(
            s,
            "| variant | policy | p50 ms | p99 ms | p99.9 ms | all rounds: p50 / p99 / p99.9 / max ms | upstream / offered | extra upstream % | success % | errors |"
        );
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for v in &self.variants {
            let m = &v.latency;
            let _ = writeln!(
                s,
                "| {} | `{}` | {} | {} | {} | {:.1} / {:.1} / {:.1} / {:.1} | {} | {} | {} | {} |",
                v.name,
                if v.policy.is_empty() {
                    "(defaults)".to_owned()
                } else {
                    v.policy.replace('\n', "; ")
                },
                cell(&m.p50_ms, 1),
                cell(&m.p99_ms, 1),
                cell(&m.p999_ms, 1),
                v.pooled_ms.p50,
                v.pooled_ms.p99,
                v.pooled_ms.p999,
                v.pooled_ms.max,
                cell(&v.upstream_per_offered, 3),
                cell(&v.extra_pct, 1),
                cell(&v.success_pct, 1),
                m.errors_cell()
            );
        }
        let _ = writeln!(
            s,
            "\ngoal: {} — {}",
            self.goal.what,
            if self.goal.met { "met" } else { "NOT met" }
        );
        s
    }

    /// The variant named `name`.
    pub fn variant(&self, name: &str) -> Option<&VariantResult> {
        self.variants.iter().find(|v| v.name == name)
    }
}

/// A running variant: its gateway's address (and process, when it is a child).
struct Running {
    variant: Variant,
    /// `http://ADDR` of its listener.
    base: String,
    _process: Option<crate::peers::RunningPeer>,
}

/// Start the sim, one gateway per variant, measure them side by side, stop everything. The
/// report's goal is left for the scenario to fill in (`goal` gets the variants' results).
pub(crate) async fn run(
    scenario: &'static str,
    setup: String,
    mut sim_config: SimConfig,
    variants: Vec<Variant>,
    load: &Load,
    goal: impl FnOnce(&[VariantResult]) -> Goal,
    progress: &mut impl FnMut(&str),
) -> Result<VariantsReport, BenchError> {
    load.check()?;
    sim_config.timer = load.timer.clone();
    progress("starting the simulated upstream");
    let sim = Sim::start(sim_config)
        .await
        .map_err(|e| BenchError::Setup(format!("simulator: {e}")))?;
    let stop = CancellationToken::new();
    let result = measure(&sim, &variants, load, &stop, progress).await;
    stop.cancel();
    sim.shutdown().await;
    let results = result?;
    Ok(VariantsReport {
        scenario,
        setup,
        rate: load.rate,
        duration_s: load.duration.as_secs_f64(),
        rounds: load.rounds,
        goal: goal(&results),
        variants: results,
    })
}

async fn start_gateways(
    sim: &RunningSim,
    variants: &[Variant],
    gateway_exe: Option<&std::path::Path>,
    stop: &CancellationToken,
) -> Result<Vec<Running>, BenchError> {
    let endpoints = sim.urls(SERVICE);
    let mut running = Vec::new();
    for v in variants {
        let toml = gateway_toml(&endpoints, v);
        let file = format!("bench-{}.toml", v.name.replace(' ', "-"));
        let config = manifold_config::compile(file.as_ref(), &toml).map_err(|e| {
            BenchError::Setup(format!("gateway config of variant `{}`: {e}", v.name))
        })?;
        if let Some(exe) = gateway_exe {
            let setup = |s: crate::peers::Skipped| {
                BenchError::Setup(format!("gateway of variant `{}`: {}", v.name, s.reason))
            };
            let cmd = crate::peers::manifold_serve(exe, &toml, PATH).map_err(setup)?;
            let peer = crate::peers::start(cmd).await.map_err(setup)?;
            running.push(Running {
                variant: v.clone(),
                base: peer.url(""),
                _process: Some(peer),
            });
            continue;
        }
        let gw = manifold_gateway::Gateway::bind(config)
            .await
            .map_err(|e| BenchError::Setup(format!("gateway of variant `{}`: {e}", v.name)))?;
        let addr = gw.local_addr();
        // The gateway logs through whatever the caller set up (the CLI: warnings only).
        tokio::spawn(gw.run(stop.child_token()).with_current_subscriber());
        running.push(Running {
            variant: v.clone(),
            base: format!("http://{addr}"),
            _process: None,
        });
    }
    Ok(running)
}

fn load_spec(load: &Load, base: &str, duration: Duration) -> LoadSpec {
    let mut spec = LoadSpec::new(format!("{base}{PATH}"), load.rate);
    spec.duration = Some(duration);
    spec.timeout = Duration::from_secs(5);
    spec.timer = load.timer.clone();
    spec
}

/// One measurement's figures.
struct Round {
    report: LoadReport,
    upstream: u64,
}

async fn measure(
    sim: &RunningSim,
    variants: &[Variant],
    load: &Load,
    stop: &CancellationToken,
    progress: &mut impl FnMut(&str),
) -> Result<Vec<VariantResult>, BenchError> {
    let running = start_gateways(sim, variants, load.gateway_exe.as_deref(), stop).await?;
    let n = running.len();
    if !load.warmup.is_zero() {
        for r in &running {
            progress(&format!("warming up: {}", r.variant.name));
            manifold_load::run(load_spec(load, &r.base, load.warmup)).await?;
        }
    }
    let idx: Vec<usize> = (0..n).collect();
    let mut rounds: Vec<Vec<Round>> = (0..n).map(|_| Vec::new()).collect();
    for round in 0..load.rounds {
        for i in rotated(&idx, round) {
            let r = &running[i];
            progress(&format!(
                "round {}/{}: {}",
                round + 1,
                load.rounds,
                r.variant.name
            ));
            // Let the previous measurement's stragglers (cancelled hedges, late retries) end
            // before the counters are zeroed.
            tokio::time::sleep(Duration::from_millis(100)).await;
            sim.reset_stats();
            let report = manifold_load::run(load_spec(load, &r.base, load.duration)).await?;
            // Hedges and retries reach the sim before their request's answer; this covers a
            // hedge sent in the same instant as the winning answer.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let upstream = sim.stats().service_calls(SERVICE);
            rounds[i].push(Round { report, upstream });
        }
    }
    Ok(running
        .iter()
        .zip(&rounds)
        .map(|(r, got)| summarize(&r.variant, load.rate, got))
        .collect())
}

fn summarize(variant: &Variant, rate: f64, rounds: &[Round]) -> VariantResult {
    let reports: Vec<LoadReport> = rounds.iter().map(|r| r.report.clone()).collect();
    let per = |f: &dyn Fn(&Round) -> f64| Spread::of(&rounds.iter().map(f).collect::<Vec<_>>());
    let ratio = |r: &Round| {
        if r.report.sent == 0 {
            0.0
        } else {
            r.upstream as f64 / r.report.sent as f64
        }
    };
    VariantResult {
        name: variant.name.clone(),
        policy: variant.policy.trim().to_owned(),
        pooled_ms: Pooled::of(&reports),
        latency: measured(&variant.name, rate, &reports),
        offered: rounds.iter().map(|r| r.report.sent).sum(),
        upstream_requests: rounds.iter().map(|r| r.upstream).sum(),
        upstream_per_offered: per(&ratio),
        extra_pct: per(&|r| (ratio(r) - 1.0) * 100.0),
        success_pct: per(&|r| {
            if r.report.sent == 0 {
                0.0
            } else {
                r.report.ok as f64 / r.report.sent as f64 * 100.0
            }
        }),
    }
}

/// `a / b`, or infinity when `b` is 0 (a ratio against nothing is unbounded, not an error).
pub(crate) fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::INFINITY
    }
}

/// `what` must be a finite number in `range`: the one check of a scenario's numeric knobs.
pub(crate) fn check_range(
    what: &str,
    value: f64,
    range: std::ops::RangeInclusive<f64>,
) -> Result<(), BenchError> {
    if value.is_finite() && range.contains(&value) {
        Ok(())
    } else {
        Err(BenchError::Spec(format!(
            "{what} must be {} to {}, got {value}",
            range.start(),
            range.end()
        )))
    }
}

/// A scenario's replica count must be in `range`.
pub(crate) fn check_replicas(
    replicas: usize,
    range: std::ops::RangeInclusive<usize>,
) -> Result<(), BenchError> {
    if range.contains(&replicas) {
        Ok(())
    } else {
        Err(BenchError::Spec(format!(
            "replicas must be {} to {}, got {replicas}",
            range.start(),
            range.end()
        )))
    }
}

/// A median service time must be above 0 and at most 10 s.
pub(crate) fn check_median(what: &str, median: Duration) -> Result<(), BenchError> {
    if median.is_zero() || median > Duration::from_secs(10) {
        return Err(BenchError::Spec(format!(
            "{what} must be above 0 and at most 10s, got {median:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
