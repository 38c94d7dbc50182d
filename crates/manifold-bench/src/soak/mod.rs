//! `manifold bench soak`: the gateway under steady load for minutes, with upstreams failing now
//! and then, watched from outside for what a long run shows and a short benchmark does not —
//! memory that creeps, file descriptors that leak, requests that are never answered.
//!
//! The gateway runs as a `manifold serve` child process, so its resident memory (`VmRSS`) and
//! open file descriptors (`/proc/PID/fd`) are its own, sampled every few seconds. The load is open
//! loop (manifold-load's engine), split evenly over three routes: a composed one (a required call
//! and an optional one that reads it), a cached one and a proxy one, each against its own
//! simulated upstream. Every `fault_every` one upstream, in turn, stalls (accepts, answers
//! nothing) or goes down (connections dropped, new ones refused, then restarted on its port) for
//! `fault_for`; the simulator also draws a few faults per request (resets, 503s) throughout.
//!
//! Goals, judged in the report: RSS at the end of the load within 5% of RSS at the end of the
//! warm-up; file descriptors back to their idle baseline once the load stops and the upstreams are
//! gone (idle keep-alive connections would otherwise stay pooled for 90 s: stopping the upstreams
//! closes them, and what stays open is a leak); every request answered, with 2xx or the right
//! error (502, 503, 504), none timed out or dropped.

mod faults;
mod report;
mod setup;

pub use report::{
    AnswerGoal, FaultRecord, FdGoal, RouteOutcome, RssGoal, Sample, SoakReport, RIGHT_ERRORS,
    RSS_DRIFT_GOAL_PCT,
};

pub use faults::{FaultKind, Window};

use crate::peers;
use crate::BenchError;
use faults::{drive_faults, windows};
use manifold_load::{KeyDist, LoadSpec};
use setup::{Upstream, ROUTES, UPSTREAMS};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The longest soak accepted: a day.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// The highest rate accepted, requests per second over all routes.
pub const MAX_RATE: f64 = 100_000.0;
/// The shortest time between fault windows (which bounds their number).
pub const MIN_FAULT_EVERY: Duration = Duration::from_millis(250);
/// The most periodic samples one run takes (the interval grows to fit).
pub const MAX_SAMPLES: u32 = 5_000;

/// What to run. `None` fields are derived from `duration` (see [`SoakSpec::plan`]).
#[derive(Debug, Clone)]
pub struct SoakSpec {
    /// The `manifold` binary, run as `manifold serve`.
    pub manifold_exe: PathBuf,
    /// Length of the load.
    pub duration: Duration,
    /// Requests per second over all routes together.
    pub rate: f64,
    /// Time between fault windows; zero: none. Default: 30 s, at most a quarter of the run.
    pub fault_every: Option<Duration>,
    /// Length of a fault window. Default: 3 s, at most a third of `fault_every`.
    pub fault_for: Option<Duration>,
    /// Warm-up before RSS is compared. Default: 10% of the run, at most 60 s.
    pub warmup: Option<Duration>,
    /// Time between samples. Default: a sixtieth of the run, within 250 ms – 5 s.
    pub sample_every: Option<Duration>,
    /// The load generator gives up on a request this long after its scheduled time (far above the
    /// gateway's own 1 s bound, so a timeout is an unanswered request, not a slow one).
    pub timeout: Duration,
    /// The most to wait, after the load, for file descriptors to come back to the baseline.
    pub settle: Duration,
}

impl SoakSpec {
    /// Ten minutes at 2,000 requests/s: the soak the issue asks for.
    pub fn new(manifold_exe: PathBuf) -> SoakSpec {
        SoakSpec {
            manifold_exe,
            duration: Duration::from_secs(600),
            rate: 2000.0,
            fault_every: None,
            fault_for: None,
            warmup: None,
            sample_every: None,
            timeout: Duration::from_secs(5),
            settle: Duration::from_secs(10),
        }
    }

    /// Thirty seconds at 500 requests/s, to see that it works.
    pub fn quick(manifold_exe: PathBuf) -> SoakSpec {
        SoakSpec {
            duration: Duration::from_secs(30),
            rate: 500.0,
            ..SoakSpec::new(manifold_exe)
        }
    }

    /// Check the spec and derive what it leaves open.
    pub fn plan(&self) -> Result<Plan, BenchError> {
        let bad = |m: String| Err(BenchError::Spec(m));
        let d = self.duration;
        if d < Duration::from_secs(1) || d > MAX_DURATION {
            return bad(format!(
                "soak duration must be between 1s and {}, got {}",
                humantime::format_duration(MAX_DURATION),
                humantime::format_duration(d)
            ));
        }
        if !self.rate.is_finite() || self.rate < 1.0 || self.rate > MAX_RATE {
            return bad(format!(
                "soak rate must be between 1 and {MAX_RATE} requests/s, got {}",
                self.rate
            ));
        }
        if self.timeout <= setup::GATEWAY_TIMEOUT {
            return bad("the load generator's timeout must exceed the gateway's 1s".into());
        }
        // The load generator's own bounds (total requests), checked before anything starts.
        let mut per_route = LoadSpec::new("http://127.0.0.1/", self.rate / ROUTES.len() as f64);
        per_route.duration = Some(d);
        if let Err(e) = per_route.total_requests() {
            return bad(format!("soak load: {e}"));
        }
        let fault_every = self
            .fault_every
            .unwrap_or((d / 4).min(Duration::from_secs(30)));
        let fault_for = self
            .fault_for
            .unwrap_or((fault_every / 3).min(Duration::from_secs(3)));
        if !fault_every.is_zero() && fault_every < MIN_FAULT_EVERY {
            return bad(format!(
                "fault windows can be at most one per {}, asked one per {}",
                humantime::format_duration(MIN_FAULT_EVERY),
                humantime::format_duration(fault_every)
            ));
        }
        if !fault_every.is_zero() && (fault_for.is_zero() || fault_for >= fault_every) {
            return bad(format!(
                "a fault window ({}) must be longer than 0 and shorter than the time between windows ({})",
                humantime::format_duration(fault_for),
                humantime::format_duration(fault_every)
            ));
        }
        let warmup = self.warmup.unwrap_or((d / 10).min(Duration::from_secs(60)));
        if warmup >= d {
            return bad("the warm-up must be shorter than the run".into());
        }
        let sample_every = self
            .sample_every
            .unwrap_or(d / 60)
            .clamp(Duration::from_millis(250), Duration::from_secs(5))
            .max(d / MAX_SAMPLES);
        Ok(Plan {
            warmup,
            sample_every,
            fault_every: (!fault_every.is_zero()).then_some(fault_every),
            fault_for,
            windows: windows(d, fault_every, fault_for),
        })
    }
}

/// A spec with its derived values.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Warm-up before RSS is compared.
    pub warmup: Duration,
    /// Time between samples.
    pub sample_every: Duration,
    /// Time between fault windows (`None`: no faults).
    pub fault_every: Option<Duration>,
    /// Length of each window.
    pub fault_for: Duration,
    /// The windows, in order.
    pub windows: Vec<Window>,
}

/// Read `/proc/PID/status` and `/proc/PID/fd`: (RSS KiB, threads, fds).
fn read_proc(pid: u32) -> Option<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((field("VmRSS:")?, field("Threads:")?, fds))
}

fn sample(pid: u32, t0: Instant, phase: &str, fault: Option<String>) -> Result<Sample, BenchError> {
    let (rss_kib, threads, fds) = read_proc(pid).ok_or_else(|| {
        BenchError::Setup(format!("cannot read /proc/{pid} (did the gateway exit?)"))
    })?;
    Ok(Sample {
        t_s: Instant::now().saturating_duration_since(t0).as_secs_f64(),
        phase: phase.into(),
        rss_kib,
        fds,
        threads,
        fault,
    })
}

/// Sample every `every` until `stop`: `warmup` before `warmup`, `load` after.
async fn sample_periodically(
    pid: u32,
    t0: Instant,
    every: Duration,
    warmup: Duration,
    fault: watch::Receiver<Option<String>>,
    stop: CancellationToken,
) -> Result<Vec<Sample>, BenchError> {
    let mut out = Vec::new();
    let mut tick = tokio::time::interval_at(t0 + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(out),
            _ = tick.tick() => {}
        }
        let phase = if t0.elapsed() < warmup {
            "warmup"
        } else {
            "load"
        };
        out.push(sample(pid, t0, phase, fault.borrow().clone())?);
    }
}

/// Run the soak. `progress` is told what is happening.
pub async fn run(spec: &SoakSpec, progress: impl Fn(&str)) -> Result<SoakReport, BenchError> {
    let plan = spec.plan()?;
    progress("starting the simulated upstreams and `manifold serve`");
    let mut ups = Vec::new();
    for name in UPSTREAMS {
        ups.push(Upstream::start(name).await?);
    }
    let urls = [0, 1, 2, 3].map(|i| ups[i].url());
    let mut cmd = peers::manifold_serve(
        &spec.manifold_exe,
        &setup::gateway_toml(&urls),
        // Any answer means ready; a path no route serves opens no upstream connection that
        // would then sit in the baseline.
        "/__soak_ready",
    )
    .map_err(|s| BenchError::Setup(format!("manifold serve: {}", s.reason)))?;
    // Faults are driven on purpose: one log line per failed request would be CPU and disk.
    cmd.env = vec![("RUST_LOG".into(), "error".into())];
    let gateway = peers::start(cmd)
        .await
        .map_err(|s| BenchError::Setup(format!("manifold serve: {}", s.reason)))?;
    let pid = gateway.pid();

    // The readiness probe's connection closes as it returns; give the gateway a moment to notice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = sample(pid, Instant::now(), "baseline", None)?;
    let specs = ROUTES
        .iter()
        .enumerate()
        .map(|(i, (_, _, path))| {
            let mut l = LoadSpec::new(gateway.url(path), spec.rate / ROUTES.len() as f64);
            l.duration = Some(spec.duration);
            l.timeout = spec.timeout;
            l.keys = KeyDist::Uniform { n: 1000 };
            l.seed = i as u64 + 1;
            l
        })
        .collect::<Vec<_>>();
    progress(&format!(
        "{:.0} req/s for {} ({} fault windows), sampling pid {pid} every {}",
        spec.rate,
        humantime::format_duration(spec.duration),
        plan.windows.len(),
        humantime::format_duration(plan.sample_every)
    ));
    let t0 = Instant::now();
    let (fault_tx, fault_rx) = watch::channel(None);
    let stop = CancellationToken::new();
    let sampler = tokio::spawn(sample_periodically(
        pid,
        t0,
        plan.sample_every,
        plan.warmup,
        fault_rx,
        stop.clone(),
    ));
    let loads_done = CancellationToken::new();
    let loads = async {
        let r = drive_loads(specs).await;
        loads_done.cancel();
        r
    };
    let faults = drive_faults(&mut ups, &plan.windows, t0, fault_tx, loads_done.clone());
    let (loads, faults) = tokio::join!(loads, faults);
    stop.cancel();
    let periodic = sampler
        .await
        .map_err(|e| BenchError::Setup(format!("sampler task: {e}")))?;
    let loads = loads?;
    let mut samples = vec![baseline];
    samples.extend(periodic?);
    let after = sample(pid, t0, "after", None)?;
    samples.push(after.clone());

    progress("load done: stopping the upstreams, waiting for file descriptors to settle");
    for up in &mut ups {
        up.stop().await;
    }
    let settle_from = Instant::now();
    let mut settled = sample(pid, t0, "settled", None)?;
    while settled.fds > samples[0].fds && settle_from.elapsed() < spec.settle {
        tokio::time::sleep(Duration::from_millis(100)).await;
        settled = sample(pid, t0, "settled", None)?;
    }
    let settle_s = settle_from.elapsed().as_secs_f64();
    samples.push(settled.clone());
    drop(gateway);

    let routes: Vec<RouteOutcome> = ROUTES
        .iter()
        .zip(&loads)
        .map(|((route, kind, _), r)| RouteOutcome::of(route, kind, r))
        .collect();
    let answers = AnswerGoal::of(&routes);
    let rss = report::rss_goal(&samples);
    let fds = FdGoal {
        baseline: samples[0].fds,
        max: samples.iter().map(|s| s.fds).max().unwrap_or(0),
        after_load: after.fds,
        settled: settled.fds,
        settle_s,
        met: settled.fds <= samples[0].fds,
    };
    Ok(SoakReport {
        scenario: "soak",
        gateway: format!(
            "`{} serve` child process (pid {pid})",
            spec.manifold_exe.display()
        ),
        duration_s: spec.duration.as_secs_f64(),
        rate: spec.rate,
        warmup_s: plan.warmup.as_secs_f64(),
        sample_every_s: plan.sample_every.as_secs_f64(),
        fault_every_s: plan.fault_every.map(|d| d.as_secs_f64()),
        fault_for_s: plan.fault_for.as_secs_f64(),
        routes,
        faults,
        samples,
        goals_met: rss.met && fds.met && answers.met,
        rss,
        fds,
        answers,
    })
}

/// The routes' loads side by side (one open-loop schedule each, all at once).
async fn drive_loads(specs: Vec<LoadSpec>) -> Result<Vec<manifold_load::LoadReport>, BenchError> {
    let handles: Vec<_> = specs
        .into_iter()
        .map(|s| tokio::spawn(manifold_load::run(s)))
        .collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(
            h.await
                .map_err(|e| BenchError::Setup(format!("load task: {e}")))??,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(duration: Duration) -> SoakSpec {
        SoakSpec {
            duration,
            ..SoakSpec::new("manifold".into())
        }
    }

    #[test]
    fn the_default_plan_is_ten_minutes_with_a_fault_every_30_seconds() {
        let s = SoakSpec::new("manifold".into());
        assert_eq!((s.duration, s.rate), (Duration::from_secs(600), 2000.0));
        let p = s.plan().unwrap();
        assert_eq!(p.warmup, Duration::from_secs(60));
        assert_eq!(p.sample_every, Duration::from_secs(5));
        assert_eq!(p.fault_every, Some(Duration::from_secs(30)));
        assert_eq!(p.fault_for, Duration::from_secs(3));
        // At 30, 60, … 570 s: each followed by at least its length of load.
        assert_eq!(p.windows.len(), 19);
        assert_eq!(p.windows[0].start, Duration::from_secs(30));
        assert_eq!(p.windows[18].start, Duration::from_secs(570));
        // Eight windows cover every upstream with both kinds.
        let mut seen: Vec<(usize, FaultKind)> = p.windows[..8]
            .iter()
            .map(|w| (w.upstream, w.kind))
            .collect();
        seen.sort_by_key(|(u, k)| (*u, *k == FaultKind::Down));
        seen.dedup();
        assert_eq!(seen.len(), 8, "{seen:?}");
    }

    #[test]
    fn a_short_run_scales_its_warmup_samples_and_faults_and_sees_both_kinds() {
        let p = SoakSpec::quick("manifold".into()).plan().unwrap();
        assert_eq!(p.warmup, Duration::from_secs(3));
        assert_eq!(p.sample_every, Duration::from_millis(500));
        assert_eq!(p.fault_every, Some(Duration::from_millis(7500)));
        assert_eq!(p.fault_for, Duration::from_millis(2500));
        let kinds: Vec<FaultKind> = p.windows.iter().map(|w| w.kind).collect();
        assert_eq!(
            kinds,
            [FaultKind::Stall, FaultKind::Down, FaultKind::Stall],
            "{p:?}"
        );
    }

    #[test]
    fn bad_specs_are_refused_and_zero_turns_faults_off() {
        let mut s = spec(Duration::from_millis(500));
        assert!(s.plan().is_err());
        s.duration = MAX_DURATION + Duration::from_secs(1);
        assert!(s.plan().is_err());
        s.duration = Duration::from_secs(10);
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY, MAX_RATE * 2.0] {
            s.rate = rate;
            assert!(s.plan().is_err(), "{rate}");
        }
        // Within the rate and duration bounds, but above the load generator's request count.
        s.duration = MAX_DURATION;
        s.rate = MAX_RATE;
        let err = s.plan().unwrap_err().to_string();
        assert!(err.contains("above the"), "{err}");
        s.duration = Duration::from_secs(10);
        s.rate = 10.0;
        s.fault_every = Some(Duration::from_secs(2));
        s.fault_for = Some(Duration::from_secs(2));
        assert!(s.plan().is_err());
        s.fault_for = Some(Duration::ZERO);
        assert!(s.plan().is_err());
        s.fault_every = Some(Duration::from_millis(100));
        s.fault_for = Some(Duration::from_millis(10));
        assert!(s.plan().is_err());
        s.fault_every = Some(Duration::ZERO);
        let p = s.plan().unwrap();
        assert!(p.fault_every.is_none() && p.windows.is_empty());
        // A day sampled every 5 s would be 17,280 samples: the interval grows instead.
        s.duration = MAX_DURATION;
        assert!(s.plan().unwrap().sample_every >= MAX_DURATION / MAX_SAMPLES);
    }
}
