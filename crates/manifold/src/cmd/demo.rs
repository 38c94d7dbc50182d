//! `manifold demo`: the seed shop's scenarios under each strategy, side by side (see `docs/demo.md`).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use tracing::instrument::WithSubscriber as _;

/// See the latency levers work: starts the simulated shop and a gateway per strategy in this
/// process, sends each scenario through each strategy with the same open-loop load, and prints
/// p50, p99, the plan's ideal (its critical path) and the gain over running the calls one after
/// another, with what the cache answered and proof that offloaded work was still done; then the
/// contrasts (hedged, balanced), each on a shop with misbehaving replicas, without and with the
/// policy, the gain read on p99.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  manifold demo                          # about 2.5 minutes: 20 req/s for 10 s per measurement
  manifold demo --quick                  # about 45 s
  manifold demo --quick --json           # one JSON line: scenarios, ideal_ms, p50_ms, p99_ms, …
  manifold demo --report demo.html       # also a self-contained HTML report

Strategies are config files compiled into the binary: examples/shop-sequential.toml
(sequential), examples/shop.toml (concurrent), examples/shop-cached.toml (cached: the profile's
calls) and examples/shop-offloaded.toml (offloaded: the checkout's shipping label). Scenarios are
checkout (order → payment, inventory, shipping → confirm) and profile (user + orders, user ids
drawn Zipf(0.99) over 100 users); each strategy runs the scenarios its file has a route for.
Contrasts: hedged (profile; one of two orders replicas straggling; examples/shop.toml vs
examples/shop-hedged.toml) and balanced (checkout; one of three payment replicas turning 5x
slower mid-run; examples/shop-round-robin.toml vs examples/shop-p2c.toml).
See docs/demo.md.")]
pub(crate) struct Args {
    /// Shorter measurements (3 s each): the whole run takes about 45 s.
    #[arg(long)]
    quick: bool,
    /// Print the results as one JSON line instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML report (latency charts, one waterfall per strategy).
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
    /// Scheduled requests per second in every measurement (default 20).
    #[arg(long)]
    rate: Option<f64>,
    /// Length of each measurement, e.g. 10s (default 10s, or 3s with --quick).
    #[arg(long, value_parser = manifold_load::parse_duration)]
    duration: Option<std::time::Duration>,
    /// How the simulated shop waits out its service times and the load generator its send
    /// times: `precise` (default) or `tokio` (every wait rounded up to the next 1 ms tick).
    #[arg(long, value_enum, default_value_t)]
    timer: super::TimerArg,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut spec = if args.quick {
        manifold_demo::DemoSpec::quick()
    } else {
        manifold_demo::DemoSpec::full()
    };
    spec.timer = args.timer.timer();
    if let Some(rate) = args.rate {
        spec.rate = rate;
    }
    if let Some(d) = args.duration {
        spec.duration = d;
    }
    // Before the run, which takes minutes: a report path that cannot be written fails now.
    let report_file = args
        .report
        .as_deref()
        .map(super::LateOutput::open)
        .transpose()?;
    let tty = std::io::stderr().is_terminal();
    let progress = |step: &str| {
        if tty {
            eprintln!("{step}");
        }
    };
    // The sim and the gateways log their start and stop at `info`: noise here. Warnings and
    // errors still show; RUST_LOG overrides.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let quiet = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .finish();
    let report =
        super::runtime()?.block_on(manifold_demo::run(&spec, progress).with_subscriber(quiet))?;

    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.table());
    }
    if let (Some(file), Some(path)) = (report_file, &args.report) {
        file.write(report.to_html().as_bytes())?;
        if tty {
            eprintln!("report written to {}", path.display());
        }
    }
    if report.all_ok() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: some requests failed (see the errors column)");
        Ok(ExitCode::from(1))
    }
}
