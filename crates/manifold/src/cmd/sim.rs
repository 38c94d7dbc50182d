//! `manifold sim`: simulated upstream services on loopback (see `docs/sim.md`).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use manifold_sim::{RunningSim, Sim, SimConfig};

/// Run simulated upstream services on loopback: per-endpoint latency distributions, injected
/// faults and JSON replies, seeded so runs repeat.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  manifold sim --shop                      # the seed documents' shop on ports 7001-7006
  manifold sim -c examples/sim.toml        # your own services (see docs/sim.md)
  manifold sim --shop --base-port 0 --json # ephemeral ports, addresses as one JSON line

Every listener also answers GET /__stats (call counts per endpoint, JSON; add ?calls=1 for each
call's start and end times), POST /__reset (zero the counters) and POST /__stall?for=1s (freeze
every service, to see a stall in a load generator's percentiles).")]
pub(crate) struct Args {
    /// The sim config (TOML; see examples/sim.toml).
    #[arg(short, long, value_name = "FILE", required_unless_present = "shop")]
    config: Option<PathBuf>,
    /// Run the built-in shop instead: order, payment, inventory, shipping, users, orders, with the
    /// seed documents' service times (150/50, 200, 100, 250/250, 100, 200 ms).
    #[arg(long, conflicts_with = "config")]
    shop: bool,
    /// With --shop: the order service's port; the others follow in that order (payment on
    /// BASE+1 … orders on BASE+5). 0 gives every service an ephemeral port.
    #[arg(long, value_name = "PORT", default_value_t = 7001, requires = "shop")]
    base_port: u16,
    /// Replace the config's random seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Print the listening addresses as one JSON line:
    /// {"services":{"NAME":["http://ADDR", …]}, "stats":"http://ADDR/__stats"}.
    #[arg(long)]
    json: bool,
    /// Stop after this long (e.g. 30s, 5m); default: run until Ctrl-C.
    #[arg(long = "for", value_name = "DURATION", value_parser = manifold_load::parse_duration)]
    run_for: Option<Duration>,
    /// How service times are waited out: `precise` ends each within tens of microseconds;
    /// `tokio` rounds each up to the next millisecond tick, as a plain tokio service would.
    #[arg(long, value_enum, default_value_t = super::TimerArg::Precise)]
    timer: super::TimerArg,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut config = match (&args.config, args.shop) {
        (_, true) => SimConfig::shop_at(args.base_port)?,
        (Some(path), false) => SimConfig::from_file(path)?,
        (None, false) => anyhow::bail!("input error: give -c FILE or --shop"),
    };
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    config.timer = args.timer.timer();
    super::runtime()?.block_on(serve(config, args.json, args.run_for))
}

async fn serve(
    config: SimConfig,
    json: bool,
    run_for: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let sim = Sim::start(config).await?;
    announce(&sim, json).context("writing the addresses to stdout")?;
    let stop = async {
        match run_for {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        () = stop => {}
    }
    if !json {
        let stats = sim.stats();
        println!("\ncalls served:");
        for (name, svc) in &stats.services {
            for (ep, e) in &svc.endpoints {
                println!("  {name:<12} {ep:<32} {:>8}", e.calls);
            }
        }
    }
    sim.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

fn announce(sim: &RunningSim, json: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let first = sim.services().first().and_then(|s| sim.url(s));
    if json {
        let services: serde_json::Map<String, serde_json::Value> = sim
            .services()
            .into_iter()
            .map(|s| (s.to_owned(), serde_json::json!(sim.urls(s))))
            .collect();
        let line = serde_json::json!({
            "services": services,
            "stats": first.map(|u| format!("{u}/__stats")),
        });
        writeln!(out, "{line}")?;
    } else {
        for s in sim.services() {
            writeln!(out, "{s:<12} {}", sim.urls(s).join("  "))?;
        }
        if let Some(u) = first {
            writeln!(out, "stats: GET {u}/__stats   (Ctrl-C to stop)")?;
        }
    }
    out.flush()
}
