//! `manifold check`: validate a config and show each upstream's policies and each route's DAG.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Validate a config file; print each upstream's policies (balancing, retries, hedging, circuit
/// breaking, defaults included) and each route's calls, dependency edges, levels and critical path.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  manifold check -c examples/shop.toml\n\n\
Every problem is reported with file:line:column; the exit code is 1 when there is any.\n\
Warnings (valid, probably not meant) are printed the same way and do not fail the check.\n\
Give calls latency hints (expect = \"120ms\") to see the critical path.")]
pub(crate) struct Args {
    /// The config file.
    #[arg(short, long, value_name = "FILE", default_value = "manifold.toml")]
    config: PathBuf,
    /// Print the compiled plans as JSON (what the admin `/config` endpoint shows) instead.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    match manifold_config::load(&args.config) {
        Ok(config) => {
            // Warnings do not fail the check: the config is valid, probably not as meant.
            for w in &config.warnings {
                eprintln!("{w}");
            }
            let out = if args.json {
                format!("{}\n", serde_json::to_string_pretty(&config)?)
            } else {
                format!(
                    "{}\nok: {} is valid\n",
                    manifold_config::describe(&config),
                    args.config.display()
                )
            };
            // `manifold check | head` closes the pipe early: that is not an error of the check.
            match std::io::stdout().lock().write_all(out.as_bytes()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(ExitCode::SUCCESS),
            }
        }
        Err(errors) => {
            eprintln!("{errors}");
            Ok(ExitCode::from(1))
        }
    }
}
