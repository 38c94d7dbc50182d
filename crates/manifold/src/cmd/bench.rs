//! `manifold bench SCENARIO`: Manifold beside its baselines, measured in one run.

use std::process::ExitCode;
use std::time::Duration;

mod scenarios;

use scenarios::{
    run_analyze, run_cache, run_memory, run_offload, run_overload, run_proxy, run_soak,
    run_telemetry, run_variants,
};

/// The scenarios `manifold bench` can run.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Scenario {
    /// The checkout DAG through Manifold vs a hand-written tokio::join! aggregator vs the ideal.
    Compose,
    /// Cache hit ratio (the memory tier vs LRU, LFU bounds and Bélády on Zipf(0.99)), L1 hit through the gateway vs a
    /// direct upstream round trip, L2 hit vs a raw Redis GET (docs/cache.md).
    Cache,
    /// Plain reverse proxying: direct (the limit) vs a Manifold `proxy` route (as a
    /// `manifold serve` child, CPU from /proc) vs nginx, HAProxy and Envoy with keep-alive on
    /// both sides and as many worker threads as Manifold, and a bare tokio + hyper proxy from this
    /// binary (`hyper`: what Manifold's stack costs with nothing of Manifold's on it;
    /// `hyper-per-core`: the same with a single-threaded runtime and listener per thread).
    Proxy,
    /// Durable enqueue per backend (embedded, NATS, RabbitMQ): open-loop p50/p99 and sustained
    /// tasks/s beside the raw durable write measured in the same run (docs/offload.md).
    Offload,
    /// Minutes of open-loop load over composed, cached and proxy routes with periodic upstream
    /// faults: the `manifold serve` child's RSS and open file descriptors over time, and whether
    /// every request was answered (default 10 min at 2,000 req/s; --quick: 30 s at 500).
    Soak,
    /// An upstream with 2% stragglers at 20× its median: the same route without and with
    /// `hedge = { after = "p95", max = 1, budget = 0.05 }`; p50/p99/p99.9 and the extra
    /// upstream requests (goal: p99.9 ≥ 10× lower for ≤ 5% extra).
    Hedge,
    /// Three replicas, one 20× slower: `balance = "round_robin"` vs `"p2c"` (goal: p99 ≥ 3×
    /// lower with p2c).
    Balance,
    /// An upstream failing 50% with 503: plain `attempts = 3` vs the default retry budget;
    /// upstream requests per offered request and success rate (goal: ≤ 1.2× + the minimum
    /// with the budget).
    RetryStorm,
    /// Offered load at twice the gateway's measured capacity, with the adaptive concurrency
    /// limit and without a limit, side by side: goodput, admitted p99 against unloaded, shed.
    Overload,
    /// `manifold analyze` on a generated Jaeger file of at least a million spans beside a
    /// parse-only pass (serde into IgnoredAny) over the same file: spans per second and per
    /// CPU-second of each, and the ratio (goals: ≥ 1 M spans per CPU-second, ≤ 2×).
    Analyze,
    /// Resident memory per idle keep-alive client connection (default 10,000 of them) and per
    /// request in flight (default 1,000, proxied and composed), Manifold (a `manifold serve`
    /// child) beside nginx with as many workers (goal: at most nginx's per connection).
    Memory,
}

/// Side-by-side benchmarks: ratios against baselines measured in the same run.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  manifold bench compose\n  manifold bench compose --quick --json\n  \
manifold bench compose --rates 1000,2000,4000 --duration 10s --rounds 5\n  \
manifold bench proxy --rates 1000,5000,10000\n  \
manifold bench soak --duration 30s --rate 500\n  \
manifold bench hedge --quick --json\n  \
manifold bench overload --json\n  \
manifold bench analyze --spans 2000000 --rounds 5\n  \
manifold bench memory --connections 10000 --in-flight 1000 --rounds 3\n\n\
Peers (Flask + gunicorn, Node + express, nginx, HAProxy, Envoy) are installed by bench/peers/install.sh; a peer\n\
that is not installed is reported as skipped.\n\
Latency is measured open loop (from each request's scheduled send time), the targets interleaved\n\
round by round; figures are medians over rounds with [min–max]. See docs/benchmarks.md."
)]
pub(crate) struct Args {
    /// What to measure.
    #[arg(value_enum)]
    scenario: Scenario,
    /// A short run (seconds, not minutes): for smoke tests.
    #[arg(long)]
    quick: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Open-loop rates, requests per second, comma separated.
    #[arg(long, value_delimiter = ',', value_name = "R1,R2,…")]
    rates: Option<Vec<f64>>,
    /// Length of each measurement (e.g. 5s).
    #[arg(long, value_parser = manifold_load::parse_duration)]
    duration: Option<Duration>,
    /// Rounds per rate.
    #[arg(long)]
    rounds: Option<usize>,
    /// Where the peers live (default: bench/peers of this repository).
    #[arg(long, value_name = "DIR", conflicts_with = "no_peers")]
    peers: Option<std::path::PathBuf>,
    /// Measure Manifold and the built-in baselines only.
    #[arg(long)]
    no_peers: bool,
    /// `compose`, `hedge`, `balance`, `retry-storm`: how the simulated upstreams (and the floor)
    /// and the load generator wait: `precise` (default) or `tokio` (every wait rounded up to the
    /// next 1 ms tick).
    #[arg(long, value_enum)]
    timer: Option<super::TimerArg>,
    /// `compose`: the p99 objective the report finds each target's highest rate within (e.g.
    /// 15ms; default twice the configured ideal).
    #[arg(long, value_parser = manifold_load::parse_duration, value_name = "DURATION")]
    slo_p99: Option<Duration>,
    /// `compose`: measure what Manifold's own telemetry costs instead: the checkout through
    /// three gateways side by side, each a `manifold serve` child whose whole-process CPU is
    /// read (telemetry off, metrics only, full tracing at sample_ratio 1.0 to a local OTLP
    /// sink) at one rate (`--rates`, default 2000).
    #[arg(long)]
    telemetry: bool,
    /// `cache`: length of the Zipf key stream the hit ratios are measured on.
    #[arg(long, value_name = "N")]
    requests: Option<u64>,
    /// `overload`: the load generator's most requests in flight, one connection each (default
    /// 1000). Fewer connections put fewer requests in the gateway's run queue at once.
    /// `memory`: idle keep-alive connections held open (default 10,000; --quick 1,000).
    #[arg(long, value_name = "N")]
    connections: Option<usize>,
    /// `overload`: offered load as a multiple of the capacity found (default 2, the issue's
    /// goal; 1 to 10). Below 2, how the admitted tail grows with the excess the gateway must
    /// refuse.
    #[arg(long, value_name = "F")]
    factor: Option<f64>,
    /// `memory`: slow requests held in flight at once (default 1,000; --quick 100).
    #[arg(long, value_name = "K")]
    in_flight: Option<usize>,
    /// `memory`: how long the upstream holds each slow request (default 8s, --quick 4s; at
    /// least 500ms: enough to have all of them in flight before the first is answered).
    #[arg(long, value_parser = manifold_load::parse_duration, value_name = "DURATION")]
    upstream_delay: Option<Duration>,
    /// `analyze`: spans of the generated file (default 1,000,000; --quick 50,000).
    #[arg(long, value_name = "N")]
    spans: Option<u64>,
    /// `analyze`: measure this Jaeger/Zipkin/OTLP JSON file instead of a generated one.
    #[arg(long, value_name = "PATH")]
    file: Option<std::path::PathBuf>,
    /// `soak`: requests per second over all routes together (default 2000).
    #[arg(long, value_name = "R")]
    rate: Option<f64>,
    /// `soak`: time between upstream fault windows (default 30s, at most a quarter of the run;
    /// 0s: no faults).
    #[arg(long, value_parser = manifold_load::parse_duration, value_name = "DURATION")]
    fault_every: Option<Duration>,
    /// `soak`: how long before RSS is compared (default 10% of the run, at most 60s).
    #[arg(long, value_parser = manifold_load::parse_duration, value_name = "DURATION")]
    warmup: Option<Duration>,
    /// `soak`: the program run as the gateway, with `serve -c …` after it (default: this
    /// binary). Soak another build, or a script that `exec`s this binary under a heap profiler,
    /// so the sampled process is the gateway itself. `memory`: the same, to compare builds
    /// (e.g. one with `--features mimalloc`).
    #[arg(long, value_name = "PATH")]
    gateway_exe: Option<std::path::PathBuf>,
}

/// `--rates`, `--duration`, `--rounds` as given (each `None` keeps the scenario's default).
type Overrides = (Option<Vec<f64>>, Option<Duration>, Option<usize>);

/// Print a report: JSON with `--json`, markdown otherwise.
fn emit<R: serde::Serialize>(
    json: bool,
    report: &R,
    markdown: impl FnOnce() -> String,
) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!("{}", markdown());
    }
    Ok(ExitCode::SUCCESS)
}

impl Args {
    /// `--rates`, `--duration` and `--rounds`, checked.
    fn overrides(&self) -> anyhow::Result<Overrides> {
        // Checked here, before any scenario starts its upstreams and gateways: the load
        // generator refused these only at the first measurement, after the setup.
        if let Some(r) = &self.rates {
            anyhow::ensure!(
                r.iter()
                    .all(|x| x.is_finite() && *x > 0.0 && *x <= manifold_load::MAX_RATE),
                "--rates must be above 0 and at most {} per second, got {r:?}",
                manifold_load::MAX_RATE
            );
        }
        if let Some(d) = self.duration {
            anyhow::ensure!(
                !d.is_zero() && d <= manifold_load::MAX_SCHEDULE,
                "--duration must be above 0 and at most {}, got {}",
                humantime::format_duration(manifold_load::MAX_SCHEDULE),
                humantime::format_duration(d)
            );
        }
        anyhow::ensure!(self.rounds != Some(0), "--rounds must be at least 1");
        Ok((self.rates.clone(), self.duration, self.rounds))
    }

    fn peers_dir(&self) -> Option<std::path::PathBuf> {
        if self.no_peers {
            return None;
        }
        Some(
            self.peers
                .clone()
                .unwrap_or_else(manifold_bench::peers::default_dir),
        )
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !args.telemetry || matches!(args.scenario, Scenario::Compose),
        "--telemetry is for `bench compose`"
    );
    anyhow::ensure!(
        args.connections.is_none()
            || matches!(args.scenario, Scenario::Overload | Scenario::Memory),
        "--connections is for `bench overload` and `bench memory`"
    );
    anyhow::ensure!(
        (args.in_flight.is_none() && args.upstream_delay.is_none())
            || matches!(args.scenario, Scenario::Memory),
        "--in-flight and --upstream-delay are for `bench memory`"
    );
    if let Scenario::Memory = args.scenario {
        return run_memory(&args);
    }
    anyhow::ensure!(
        args.factor.is_none() || matches!(args.scenario, Scenario::Overload),
        "--factor is for `bench overload`"
    );
    if let Scenario::Soak = args.scenario {
        return run_soak(&args);
    }
    anyhow::ensure!(
        matches!(args.scenario, Scenario::Analyze) || (args.spans.is_none() && args.file.is_none()),
        "--spans and --file are for `bench analyze`"
    );
    if let Scenario::Analyze = args.scenario {
        return run_analyze(&args);
    }
    anyhow::ensure!(
        args.rate.is_none()
            && args.fault_every.is_none()
            && args.warmup.is_none()
            && args.gateway_exe.is_none(),
        "--rate, --fault-every, --warmup and --gateway-exe are for `bench soak` (other scenarios \
         take --rates)"
    );
    if let Scenario::Cache = args.scenario {
        return run_cache(&args);
    }
    if let Scenario::Offload = args.scenario {
        return run_offload(&args);
    }
    if let Scenario::Proxy = args.scenario {
        return run_proxy(&args);
    }
    if let Scenario::Hedge | Scenario::Balance | Scenario::RetryStorm = args.scenario {
        return run_variants(&args);
    }
    if let Scenario::Overload = args.scenario {
        return run_overload(&args);
    }
    if args.telemetry {
        return run_telemetry(&args);
    }
    let mut spec = if args.quick {
        manifold_bench::compose::ComposeSpec::quick()
    } else {
        manifold_bench::compose::ComposeSpec::default()
    };
    let (rates, duration, rounds) = args.overrides()?;
    spec.rates = rates.unwrap_or(spec.rates);
    spec.duration = duration.unwrap_or(spec.duration);
    spec.rounds = rounds.unwrap_or(spec.rounds);
    spec.peers_dir = args.peers_dir();
    if let Some(t) = args.timer {
        spec.timer = t.timer();
    }
    if let Some(slo) = args.slo_p99 {
        anyhow::ensure!(!slo.is_zero(), "--slo-p99 must be more than 0");
        spec.slo_p99 = Some(slo);
    }
    let quiet = args.json;
    let report = super::runtime()?.block_on(manifold_bench::compose::run(&spec, |step| {
        if !quiet {
            eprintln!("  measuring {step}");
        }
    }))?;
    emit(args.json, &report, || report.to_markdown())
}
