//! `manifold bench compose --telemetry`: what Manifold's own telemetry costs, measured.
//!
//! The compose scenario's checkout DAG (same simulator, same service times) through three
//! gateways side by side, each on a runtime of its own so its CPU is read from its own threads:
//! telemetry off (`metrics = false`, `tracing = false`), metrics only, and full tracing at
//! `sample_ratio = 1.0` exported to a local OTLP sink (a loopback HTTP server that reads and
//! counts every export). Open-loop load at one rate, the three interleaved round by round (each round starting with the
//! next);
//! medians over rounds with [min–max]. The goal: full tracing adds at most 5% CPU per
//! request and at most 50 µs at p50 at 2,000 requests/s; metrics alone at most 2%.

use crate::compose::{cpu_us, gateway_config, measure, sim_config, OwnRuntime};
use crate::peers::ThreadsCpu;
use crate::{BenchError, Spread};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use manifold_sim::Sim;
use manifold_timer::Timer;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The goals, from the issue.
pub const GOAL_FULL_CPU_PCT: f64 = 5.0;
/// At most this much more p50 latency with full tracing, µs.
pub const GOAL_FULL_P50_US: f64 = 50.0;
/// At most this much more CPU per request with metrics only, %.
pub const GOAL_METRICS_CPU_PCT: f64 = 2.0;

/// What to run.
#[derive(Debug, Clone)]
pub struct TelemetrySpec {
    /// Service times in ms: order, payment, inventory, shipping, confirm.
    pub delays_ms: [u64; 5],
    /// Open-loop rate, requests per second.
    pub rate: f64,
    /// Length of one measurement.
    pub duration: Duration,
    /// Rounds (each measures every mode once).
    pub rounds: usize,
    /// How the simulator and the load generator wait.
    pub timer: Timer,
}

impl Default for TelemetrySpec {
    fn default() -> Self {
        TelemetrySpec {
            delays_ms: [2, 4, 3, 5, 1],
            rate: 2000.0,
            duration: Duration::from_secs(5),
            rounds: 3,
            timer: Timer::precise(),
        }
    }
}

impl TelemetrySpec {
    /// A short run for smoke tests and `--quick`.
    pub fn quick() -> Self {
        TelemetrySpec {
            rate: 500.0,
            duration: Duration::from_secs(2),
            rounds: 2,
            ..TelemetrySpec::default()
        }
    }
}

/// The three gateways.
const MODES: [&str; 3] = ["off", "metrics", "full tracing"];

/// One mode's figures over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct ModeResult {
    /// `off`, `metrics`, `full tracing`.
    pub mode: String,
    /// Latency percentiles, ms.
    pub p50_ms: Spread,
    /// 99th percentile, ms.
    pub p99_ms: Spread,
    /// CPU of this gateway's runtime threads per answered request, µs (`None` without `/proc`).
    pub cpu_us_per_request: Option<Spread>,
    /// Answered and failed requests, over all rounds.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct TelemetryReport {
    /// Open-loop rate, requests per second.
    pub rate: f64,
    /// One measurement's length, seconds.
    pub duration_s: f64,
    /// Rounds.
    pub rounds: usize,
    /// Off, metrics, full tracing.
    pub modes: Vec<ModeResult>,
    /// Export requests and bytes the OTLP sink received.
    pub sink_requests: u64,
    /// Bytes of protobuf the sink read.
    pub sink_bytes: u64,
    /// Spans the full-tracing gateway exported and dropped (`/metrics`).
    pub spans_exported: Option<f64>,
    /// Spans dropped, every reason.
    pub spans_dropped: Option<f64>,
    /// Metrics only vs off: extra CPU per request, % (medians).
    pub metrics_cpu_pct: Option<f64>,
    /// Full tracing vs off: extra CPU per request, %.
    pub full_cpu_pct: Option<f64>,
    /// Full tracing vs off: extra p50, µs.
    pub full_p50_us: f64,
    /// Metrics only vs off: extra p50, µs.
    pub metrics_p50_us: f64,
}

/// One mode's measurements so far.
#[derive(Debug, Clone, Default)]
struct Samples {
    p50: Vec<f64>,
    p99: Vec<f64>,
    cpu: Vec<f64>,
    ok: u64,
    errors: u64,
}

struct Gateway {
    url: String,
    admin: SocketAddr,
    threads: String,
    _runtime: OwnRuntime,
}

/// Run the three gateways against one simulator.
pub async fn run(
    spec: &TelemetrySpec,
    mut progress: impl FnMut(&str),
) -> Result<TelemetryReport, BenchError> {
    if !(spec.rate.is_finite() && spec.rate > 0.0) || spec.rounds == 0 {
        return Err(BenchError::Spec(
            "the rate must be positive and there must be at least one round".into(),
        ));
    }
    let mut sim_cfg = sim_config(spec.delays_ms)?;
    sim_cfg.timer = spec.timer.clone();
    let sim = Sim::start(sim_cfg)
        .await
        .map_err(|e| BenchError::Setup(format!("simulator: {e}")))?;
    let stop = CancellationToken::new();
    let sink = Sink::start(stop.clone()).await?;
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let mut gateways = Vec::new();
    for (i, mode) in MODES.iter().enumerate() {
        let mut config = gateway_config(&sim)?;
        let t = &mut config.telemetry;
        t.metrics = i >= 1;
        t.tracing = i >= 2;
        t.sample_ratio = 1.0;
        if i == 2 {
            t.otlp = Some(manifold_config::OtlpSettings {
                endpoint: format!("http://{}", sink.addr),
                timeout: Duration::from_secs(5),
                queue_capacity: 4096,
            });
        }
        let threads = format!("bench-tm{i}-{run}");
        let runtime = OwnRuntime::new(&threads)?;
        let gw_stop = stop.clone();
        let (addr, admin) = runtime
            .start(async move {
                let gw = manifold_gateway::Gateway::bind(config).await?;
                let addrs = (gw.local_addr(), gw.admin_addr());
                tokio::spawn(gw.run(gw_stop));
                Ok::<_, manifold_gateway::GatewayError>(addrs)
            })
            .await?
            .map_err(|e| BenchError::Setup(format!("gateway ({mode}): {e}")))?;
        gateways.push(Gateway {
            url: format!("http://{addr}/checkout"),
            admin,
            threads,
            _runtime: runtime,
        });
    }
    // Warm every gateway's connection pools once.
    for gw in &gateways {
        measure(&gw.url, 200.0, Duration::from_millis(500), &spec.timer).await?;
    }
    let mut samples: Vec<Samples> = vec![Samples::default(); MODES.len()];
    for round in 0..spec.rounds {
        // Each round starts with the next mode: none is always measured first or right after
        // the exporter's busiest moment.
        for k in 0..MODES.len() {
            let i = (k + round) % MODES.len();
            let gw = &gateways[i];
            progress(&format!(
                "{} at {} req/s, round {}/{}",
                MODES[i],
                spec.rate,
                round + 1,
                spec.rounds
            ));
            let before = ThreadsCpu::read(&gw.threads);
            let r = measure(&gw.url, spec.rate, spec.duration, &spec.timer).await?;
            let cpu = cpu_us(before, ThreadsCpu::read(&gw.threads), r.ok);
            let s = &mut samples[i];
            s.p50.push(r.percentile_ms(0.5));
            s.p99.push(r.percentile_ms(0.99));
            s.cpu.extend(cpu);
            s.ok += r.ok;
            s.errors += r.errors;
            // Let the exporter send what this round left before the next gateway runs.
            tokio::time::sleep(Duration::from_millis(1200)).await;
        }
    }
    let full_metrics = scrape(gateways[2].admin).await;
    let spans_exported = full_metrics
        .as_deref()
        .and_then(|t| sample(t, "manifold_telemetry_spans_exported_total "));
    let spans_dropped = full_metrics.as_deref().map(|t| {
        t.lines()
            .filter(|l| l.starts_with("manifold_telemetry_spans_dropped_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    });
    stop.cancel();
    drop(gateways);
    sim.shutdown().await;

    let modes: Vec<ModeResult> = samples
        .into_iter()
        .enumerate()
        .map(|(i, s)| ModeResult {
            mode: MODES[i].to_owned(),
            p50_ms: Spread::of(&s.p50),
            p99_ms: Spread::of(&s.p99),
            cpu_us_per_request: (!s.cpu.is_empty()).then(|| Spread::of(&s.cpu)),
            ok: s.ok,
            errors: s.errors,
        })
        .collect();
    let cpu_pct = |i: usize| {
        let off = modes[0].cpu_us_per_request.as_ref()?.median;
        let on = modes[i].cpu_us_per_request.as_ref()?.median;
        (off > 0.0).then(|| (on - off) / off * 100.0)
    };
    let p50_us = |i: usize| (modes[i].p50_ms.median - modes[0].p50_ms.median) * 1000.0;
    Ok(TelemetryReport {
        rate: spec.rate,
        duration_s: spec.duration.as_secs_f64(),
        rounds: spec.rounds,
        metrics_cpu_pct: cpu_pct(1),
        full_cpu_pct: cpu_pct(2),
        full_p50_us: p50_us(2),
        metrics_p50_us: p50_us(1),
        modes,
        sink_requests: sink.requests.load(Ordering::Relaxed),
        sink_bytes: sink.bytes.load(Ordering::Relaxed),
        spans_exported,
        spans_dropped,
    })
}

impl TelemetryReport {
    /// The report as a Markdown table with the goals.
    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "## Telemetry overhead: checkout DAG at {} req/s, {} s × {} rounds (medians [min–max])\n\n\
             | gateway | p50 ms | p99 ms | CPU µs/request | ok | errors |\n|---|---|---|---|---|---|\n",
            self.rate, self.duration_s, self.rounds
        );
        for m in &self.modes {
            let cpu = m
                .cpu_us_per_request
                .as_ref()
                .map_or("n/a".to_owned(), |c| spread(c, 1));
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                m.mode,
                spread(&m.p50_ms, 2),
                spread(&m.p99_ms, 2),
                cpu,
                m.ok,
                m.errors
            ));
        }
        let pct = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:+.1}%"));
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        out.push_str(&format!(
            "\nMetrics only vs off: CPU {} (goal ≤ {GOAL_METRICS_CPU_PCT}%: {}), p50 {:+.0} µs.\n\
             Full tracing vs off: CPU {} (goal ≤ {GOAL_FULL_CPU_PCT}%: {}), p50 {:+.0} µs (goal ≤ {GOAL_FULL_P50_US} µs: {}).\n\
             OTLP sink: {} exports, {} bytes; spans exported {}, dropped {}.\n",
            pct(self.metrics_cpu_pct),
            verdict(self.metrics_cpu_pct.is_some_and(|v| v <= GOAL_METRICS_CPU_PCT)),
            self.metrics_p50_us,
            pct(self.full_cpu_pct),
            verdict(self.full_cpu_pct.is_some_and(|v| v <= GOAL_FULL_CPU_PCT)),
            self.full_p50_us,
            verdict(self.full_p50_us <= GOAL_FULL_P50_US),
            self.sink_requests,
            self.sink_bytes,
            self.spans_exported.map_or("n/a".to_owned(), |v| v.to_string()),
            self.spans_dropped.map_or("n/a".to_owned(), |v| v.to_string()),
        ));
        out
    }
}

/// `median [min–max]` with `digits` decimals.
fn spread(s: &Spread, digits: usize) -> String {
    format!("{:.d$} [{:.d$}–{:.d$}]", s.median, s.min, s.max, d = digits)
}

/// A local OTLP/HTTP collector stand-in: reads every export whole, answers 200, counts.
struct Sink {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl Sink {
    async fn start(stop: CancellationToken) -> Result<Sink, BenchError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| BenchError::Setup(format!("OTLP sink: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| BenchError::Setup(format!("OTLP sink: {e}")))?;
        let (requests, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (r, b) = (Arc::clone(&requests), Arc::clone(&bytes));
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    () = stop.cancelled() => return,
                };
                let Ok((stream, _)) = accepted else {
                    continue;
                };
                let (r, b) = (Arc::clone(&r), Arc::clone(&b));
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (r, b) = (Arc::clone(&r), Arc::clone(&b));
                        async move {
                            let n = req
                                .into_body()
                                .collect()
                                .await
                                .map_or(0, |c| c.to_bytes().len());
                            r.fetch_add(1, Ordering::Relaxed);
                            b.fetch_add(n as u64, Ordering::Relaxed);
                            Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::new())))
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Sink {
            addr,
            requests,
            bytes,
        })
    }
}

/// The admin `/metrics` text, if it answers.
async fn scrape(admin: SocketAddr) -> Option<String> {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let uri: http::Uri = format!("http://{admin}/metrics").parse().ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
        .await
        .ok()?
        .ok()?;
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    String::from_utf8(body.to_vec()).ok()
}

/// The value of the first sample line starting with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_run_measures_all_three_and_the_full_one_exports() {
        let spec = TelemetrySpec {
            rate: 200.0,
            duration: Duration::from_millis(500),
            rounds: 1,
            ..TelemetrySpec::default()
        };
        let r = run(&spec, |_| {}).await.expect("bench runs");
        assert_eq!(r.modes.len(), 3);
        for m in &r.modes {
            assert!(m.ok > 50 && m.errors == 0, "{m:?}");
        }
        assert!(r.sink_requests > 0, "the sink got exports");
        assert!(r.spans_exported.is_some_and(|s| s > 0.0), "{r:?}");
        assert!(r.to_markdown().contains("full tracing"));
    }
}
