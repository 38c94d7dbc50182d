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
            if let Some(note) = embedded_queue_note(&config) {
                eprintln!("{note}");
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

/// The embedded queue is one redb file that one process opens at a time (a second `manifold
/// serve` on the same path is refused), so it cannot back several replicas: said whenever a
/// route offloads to it, and as a warning when `[cache] redis` suggests the config is meant for
/// replicas.
fn embedded_queue_note(config: &manifold_config::Config) -> Option<String> {
    let offloads = config.routes.iter().any(|r| match &r.kind {
        manifold_config::RouteKind::Compose(p) => p
            .calls
            .iter()
            .any(|c| c.mode != manifold_config::Mode::Sync),
        _ => false,
    });
    if !offloads || config.queue.backend != manifold_queue::Backend::Embedded {
        return None;
    }
    let path = config.queue.path.display();
    let single = format!(
        "the embedded queue ({path}) is single-node: one `manifold serve` per path (a second \
         process on the same path is refused), and its tasks are delivered only by that process"
    );
    Some(if config.cache.redis.is_some() {
        format!(
            "warning: {single}; `[cache] redis` is shared by replicas, but this queue is not: \
             replicas need `[queue] backend = \"nats\"` or `\"rabbitmq\"` (docs/replicas.md)"
        )
    } else {
        format!(
            "note: {single}; to run replicas use `[queue] backend = \"nats\"` or \
             `\"rabbitmq\"` (docs/replicas.md)"
        )
    })
}
