//! `manifold bench SCENARIO`: Manifold beside its baselines, measured in one run.

use std::process::ExitCode;
use std::time::Duration;

/// The scenarios `manifold bench` can run.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Scenario {
    /// The checkout DAG through Manifold vs a hand-written tokio::join! aggregator vs the ideal.
    Compose,
}

/// Side-by-side benchmarks: ratios against baselines measured in the same run.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  manifold bench compose\n  manifold bench compose --quick --json\n  \
manifold bench compose --rates 1000,2000,4000 --duration 10s --rounds 5\n\n\
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
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Scenario::Compose = args.scenario;
    let mut spec = if args.quick {
        manifold_bench::compose::ComposeSpec::quick()
    } else {
        manifold_bench::compose::ComposeSpec::default()
    };
    if let Some(r) = args.rates {
        anyhow::ensure!(
            r.iter().all(|x| x.is_finite() && *x > 0.0),
            "--rates must be positive numbers"
        );
        spec.rates = r;
    }
    if let Some(d) = args.duration {
        spec.duration = d;
    }
    if let Some(n) = args.rounds {
        anyhow::ensure!(n > 0, "--rounds must be at least 1");
        spec.rounds = n;
    }
    let quiet = args.json;
    let report = super::runtime()?.block_on(manifold_bench::compose::run(&spec, |step| {
        if !quiet {
            eprintln!("  measuring {step}");
        }
    }))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.to_markdown());
    }
    Ok(ExitCode::SUCCESS)
}
