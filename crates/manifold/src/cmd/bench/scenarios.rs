//! Each scenario's runner: its spec from the arguments, the run, the report (the dispatch and
//! the arguments are in the parent module).

use std::process::ExitCode;
use std::time::Duration;

use super::{emit, Args, Scenario};

/// `manifold bench analyze`: the analyzer beside a parse-only pass over the same file.
pub(super) fn run_analyze(args: &Args) -> anyhow::Result<ExitCode> {
    let mut spec = if args.quick {
        manifold_bench::analyze::AnalyzeSpec::quick()
    } else {
        manifold_bench::analyze::AnalyzeSpec::default()
    };
    anyhow::ensure!(
        args.rates.is_none() && args.duration.is_none(),
        "`bench analyze` takes --spans, --file and --rounds, not --rates or --duration"
    );
    spec.spans = args.spans.unwrap_or(spec.spans);
    spec.rounds = args.rounds.unwrap_or(spec.rounds);
    spec.file = args.file.clone();
    let quiet = args.json;
    let report = manifold_bench::analyze::run(&spec, |step| {
        if !quiet {
            eprintln!("  {step}");
        }
    })?;
    emit(args.json, &report, || report.to_markdown())
}

/// `manifold bench compose --telemetry`: off / metrics only / full tracing, side by side.
pub(super) fn run_telemetry(args: &Args) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("cannot find this binary to run `manifold serve`: {e}"))?;
    let mut spec = if args.quick {
        manifold_bench::telemetry::TelemetrySpec::quick(exe)
    } else {
        manifold_bench::telemetry::TelemetrySpec::new(exe)
    };
    let (rates, duration, rounds) = args.overrides()?;
    if let Some(r) = rates {
        anyhow::ensure!(
            r.len() == 1,
            "--telemetry measures one rate: give --rates R"
        );
        spec.rate = r[0];
    }
    spec.duration = duration.unwrap_or(spec.duration);
    spec.rounds = rounds.unwrap_or(spec.rounds);
    if let Some(t) = args.timer {
        spec.timer = t.timer();
    }
    let quiet = args.json;
    let report =
        crate::cmd::runtime()?.block_on(manifold_bench::telemetry::run(&spec, |step| {
            if !quiet {
                eprintln!("  measuring {step}");
            }
        }))?;
    emit(args.json, &report, || report.to_markdown())
}

/// `manifold bench cache`: every figure beside its limit, from one run.
pub(super) fn run_cache(args: &Args) -> anyhow::Result<ExitCode> {
    let mut spec = if args.quick {
        manifold_bench::cache::CacheSpec::quick()
    } else {
        manifold_bench::cache::CacheSpec::default()
    };
    if let Some(n) = args.requests {
        anyhow::ensure!(n > 0, "--requests must be at least 1");
        spec.hit_ratio.requests = n;
    }
    let quiet = args.json;
    let report = crate::cmd::runtime()?.block_on(manifold_bench::cache::run(&spec, |step| {
        if !quiet {
            eprintln!("  measuring {step}");
        }
    }))?;
    emit(args.json, &report, || report.to_markdown())
}

/// `manifold bench proxy`: direct vs Manifold (a `manifold serve` child of this binary) vs nginx,
/// HAProxy and Envoy.
pub(super) fn run_proxy(args: &Args) -> anyhow::Result<ExitCode> {
    let mut spec = if args.quick {
        manifold_bench::proxy::ProxySpec::quick()
    } else {
        manifold_bench::proxy::ProxySpec::default()
    };
    let (rates, duration, rounds) = args.overrides()?;
    spec.rates = rates.unwrap_or(spec.rates);
    spec.duration = duration.unwrap_or(spec.duration);
    spec.rounds = rounds.unwrap_or(spec.rounds);
    spec.peers_dir = args.peers_dir();
    // Run the gateway as a child `manifold serve` so its CPU can be read from /proc.
    spec.manifold_exe = std::env::current_exe().ok();
    let quiet = args.json;
    let report = crate::cmd::runtime()?.block_on(manifold_bench::proxy::run(&spec, |step| {
        if !quiet {
            eprintln!("  measuring {step}");
        }
    }))?;
    emit(args.json, &report, || report.to_markdown())
}

/// `manifold bench hedge | balance | retry-storm`: one upstream's policies side by side, each
/// variant's gateway a `manifold serve` child of this binary; `--rates` takes one rate.
pub(super) fn run_variants(args: &Args) -> anyhow::Result<ExitCode> {
    use manifold_bench::{balance, hedge, retry_storm};
    let (rates, duration, rounds) = args.overrides()?;
    anyhow::ensure!(
        rates.as_ref().is_none_or(|r| r.len() == 1),
        "`bench hedge`, `balance` and `retry-storm` take one rate (--rates R)"
    );
    let apply = |load: &mut manifold_bench::variants::Load| {
        if let Some(r) = rates.as_ref().and_then(|r| r.first()) {
            load.rate = *r;
        }
        load.duration = duration.unwrap_or(load.duration);
        load.rounds = rounds.unwrap_or(load.rounds);
        if let Some(t) = args.timer {
            load.timer = t.timer();
        }
        // Each variant's gateway a `manifold serve` child of this binary, as in production.
        load.gateway_exe = std::env::current_exe().ok();
    };
    let quiet = args.json;
    let progress = |step: &str| {
        if !quiet {
            eprintln!("  measuring {step}");
        }
    };
    // The sim and the in-process gateways log their start and stop at `info`: noise here.
    // Warnings and errors still show; RUST_LOG overrides.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let quiet_logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .finish();
    let _logs = tracing::subscriber::set_default(quiet_logs);
    let rt = crate::cmd::runtime()?;
    let report = match args.scenario {
        Scenario::Hedge => {
            let mut spec = if args.quick {
                hedge::HedgeSpec::quick()
            } else {
                hedge::HedgeSpec::default()
            };
            apply(&mut spec.load);
            rt.block_on(hedge::run(&spec, progress))?
        }
        Scenario::Balance => {
            let mut spec = if args.quick {
                balance::BalanceSpec::quick()
            } else {
                balance::BalanceSpec::default()
            };
            apply(&mut spec.load);
            rt.block_on(balance::run(&spec, progress))?
        }
        _ => {
            let mut spec = if args.quick {
                retry_storm::RetryStormSpec::quick()
            } else {
                retry_storm::RetryStormSpec::default()
            };
            apply(&mut spec.load);
            rt.block_on(retry_storm::run(&spec, progress))?
        }
    };
    emit(args.json, &report, || report.to_markdown())
}

/// `manifold bench overload`: two `manifold serve` children of this binary (adaptive limit, no
/// limit) at twice the capacity measured in the same run.
pub(super) fn run_overload(args: &Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.rates.is_none(),
        "`bench overload` finds its own rates (capacity, then twice it)"
    );
    let exe = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("cannot find this binary to run `manifold serve`: {e}"))?;
    let mut spec = if args.quick {
        manifold_bench::overload::OverloadSpec::quick(exe)
    } else {
        manifold_bench::overload::OverloadSpec::new(exe)
    };
    if let Some(d) = args.duration {
        spec.duration = d;
    }
    if let Some(r) = args.rounds {
        anyhow::ensure!(r > 0, "--rounds must be at least 1");
        spec.rounds = r;
    }
    if let Some(c) = args.connections {
        anyhow::ensure!(
            (1..=20_000).contains(&c),
            "--connections must be between 1 and 20000"
        );
        spec.connections = c;
    }
    if let Some(f) = args.factor {
        anyhow::ensure!(
            f.is_finite() && (1.0..=10.0).contains(&f),
            "--factor must be between 1 and 10"
        );
        spec.factor = f;
    }
    let quiet = args.json;
    let report = crate::cmd::runtime()?.block_on(manifold_bench::overload::run(&spec, |step| {
        if !quiet {
            eprintln!("  measuring {step}");
        }
    }))?;
    emit(args.json, &report, || report.to_markdown())
}

/// `manifold bench memory`: RSS per idle connection and per request in flight, Manifold (a
/// `manifold serve` child of this binary) beside nginx.
pub(super) fn run_memory(args: &Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.rates.is_none() && args.duration.is_none(),
        "`bench memory` takes --connections, --in-flight, --upstream-delay and --rounds, not \
         --rates or --duration"
    );
    let exe = gateway_exe(args)?;
    let mut spec = if args.quick {
        manifold_bench::memory::MemorySpec::quick(exe)
    } else {
        manifold_bench::memory::MemorySpec::new(exe)
    };
    spec.connections = args.connections.unwrap_or(spec.connections);
    spec.in_flight = args.in_flight.unwrap_or(spec.in_flight);
    spec.upstream_delay = args.upstream_delay.unwrap_or(spec.upstream_delay);
    spec.rounds = args.rounds.unwrap_or(spec.rounds);
    spec.peers_dir = args.peers_dir();
    let quiet = args.json;
    let report = crate::cmd::runtime()?.block_on(manifold_bench::memory::run(&spec, |step| {
        if !quiet {
            eprintln!("  {step}");
        }
    }))?;
    emit(args.json, &report, || report.to_markdown())
}

/// `manifold bench soak`: the gateway (a `manifold serve` child of this binary) under minutes of
/// faulty load, its RSS and file descriptors sampled from /proc.
pub(super) fn run_soak(args: &Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.rates.is_none() && args.rounds.is_none(),
        "`bench soak` takes --rate (one rate) and no --rounds"
    );
    let exe = gateway_exe(args)?;
    let mut spec = if args.quick {
        manifold_bench::soak::SoakSpec::quick(exe)
    } else {
        manifold_bench::soak::SoakSpec::new(exe)
    };
    spec.duration = args.duration.unwrap_or(spec.duration);
    spec.rate = args.rate.unwrap_or(spec.rate);
    spec.fault_every = args.fault_every;
    spec.warmup = args.warmup;
    let quiet = args.json;
    let report = crate::cmd::runtime()?.block_on(manifold_bench::soak::run(&spec, |step| {
        if !quiet {
            eprintln!("  {step}");
        }
    }))?;
    emit(args.json, &report, || report.to_markdown())
}

/// `--gateway-exe`, checked, else this binary: what runs as `manifold serve`.
fn gateway_exe(args: &Args) -> anyhow::Result<std::path::PathBuf> {
    match &args.gateway_exe {
        Some(path) => {
            anyhow::ensure!(
                path.is_file(),
                "--gateway-exe {}: no such file",
                path.display()
            );
            Ok(path.clone())
        }
        None => std::env::current_exe()
            .map_err(|e| anyhow::anyhow!("cannot find this binary to run `manifold serve`: {e}")),
    }
}

/// `manifold bench offload`: each backend's enqueue beside its raw durable write.
pub(super) fn run_offload(args: &Args) -> anyhow::Result<ExitCode> {
    let mut opts = manifold_queue::bench::BenchOptions::default();
    if args.quick {
        opts.rate = 200;
        opts.duration = Duration::from_secs(1);
        opts.max_tasks = 5_000;
        opts.max_duration = Duration::from_secs(3);
        opts.raw_samples = 50;
    }
    if let Some(rate) = args.rates.as_ref().and_then(|r| r.first()) {
        anyhow::ensure!(
            rate.is_finite() && *rate >= 1.0 && *rate <= 1_000_000.0,
            "--rates must be between 1 and 1000000 tasks/s"
        );
        opts.rate = *rate as u32;
    }
    if let Some(d) = args.duration {
        opts.duration = d;
    }
    if !args.json {
        eprintln!(
            "  measuring enqueue at {} tasks/s for {:?}, then sustained throughput, per backend",
            opts.rate, opts.duration
        );
    }
    let report = crate::cmd::runtime()?.block_on(manifold_queue::bench::run(&opts));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("| backend | enqueue p50 / p99 µs | raw p50 / p99 µs (what) | p99 ratio | enqueues/s | raw/s |");
    println!("|---|---:|---:|---:|---:|---:|");
    for b in &report.backends {
        if let Some(why) = &b.skipped {
            println!("| {} | skipped: {why} | | | | |", b.backend);
            continue;
        }
        let lat = |o: &Option<manifold_queue::bench::OpenLoop>| {
            o.as_ref().map_or("—".to_owned(), |o| {
                format!("{} / {}", o.latency.p50_us, o.latency.p99_us)
            })
        };
        let tput = |t: &Option<manifold_queue::bench::Throughput>| {
            t.as_ref()
                .map_or("—".to_owned(), |t| format!("{:.0}", t.per_second))
        };
        println!(
            "| {} | {} | {} ({}) | {} | {} | {} |",
            b.backend,
            lat(&b.enqueue_open_loop),
            lat(&b.raw_open_loop),
            b.raw_what,
            b.p99_ratio.map_or("—".to_owned(), |r| format!("{r:.2}")),
            tput(&b.enqueue_throughput),
            tput(&b.raw_throughput),
        );
    }
    Ok(ExitCode::SUCCESS)
}
