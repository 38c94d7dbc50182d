//! The `manifold` command line: a thin shell that parses arguments and hands each subcommand to
//! the library crate that does the work. Nothing here should be worth unit-testing on its own.

mod cmd;

/// With `--features mimalloc`: mimalloc instead of jemalloc (issue 12's soak: glibc's malloc keeps
/// the memory a connection burst used in its arenas long after the connections close).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// By default (feature `jemalloc`): jemalloc, whose background thread gives freed pages back to
/// the kernel a second after they are freed, where glibc's malloc keeps them resident: 10,000
/// idle connections cost ~1 KB each instead of ~3.5–4 KB (issue 15 goal 3). Its settings are
/// compiled in from .cargo/config.toml.
#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::{CommandFactory, Parser, Subcommand};

/// Manifold: a latency-optimizing service-composition gateway.
///
/// Manifold sits in front of your services and removes the waiting: it runs each route's
/// downstream calls as a dependency graph (every call starts the instant its inputs are ready),
/// and shows where the time goes.
#[derive(Debug, Parser)]
#[command(name = "manifold", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(cmd::serve::Args),
    /// Validate a config; print each route's DAG and its critical path.
    Check(cmd::check::Args),
    /// Benchmark Manifold beside its baselines, in one run (see docs/benchmarks.md).
    Bench(cmd::bench::Args),
    /// A benchmark peer built into this binary (`manifold bench proxy` runs it).
    #[command(hide = true)]
    BenchPeer(cmd::bench_peer::Args),
    /// Manage the call-result cache of a running gateway (purge by key prefix).
    Cache(cmd::cache::Args),
    /// Operate the offload queue of a running gateway: stats, dead letters, replay, purge.
    Queue(cmd::queue::Args),
    /// Reload a running gateway's config (as SIGHUP does), and show what changed.
    Reload(cmd::reload::Args),
    /// Run simulated upstream services (latency distributions, faults) on loopback.
    Sim(cmd::sim::Args),
    /// Open-loop load: requests on a fixed schedule, latency from the scheduled send time.
    Load(cmd::load::Args),
    /// Where the time went in traces (Jaeger, Zipkin, OTLP), and what would fix it.
    Analyze(cmd::analyze::Args),
    /// The seed shop's scenarios under each strategy, measured side by side (see docs/demo.md).
    Demo(cmd::demo::Args),
    /// Write a commented starter config (to standard output, or -o FILE).
    Init(cmd::init::Args),
    /// Print the config file's JSON Schema (for editor completion and validation).
    Schema(cmd::schema::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cmd::completions::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let logs = cmd::init_logging();
    let open_files = cmd::raise_open_file_limit();
    let result = match cli.command {
        Command::Serve(args) => {
            cmd::runtime().and_then(|rt| rt.block_on(cmd::serve::run(args, open_files)))
        }
        Command::Check(args) => cmd::check::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::BenchPeer(args) => cmd::bench_peer::run(args),
        Command::Cache(args) => cmd::cache::run(args),
        Command::Queue(args) => cmd::queue::run(args),
        Command::Reload(args) => cmd::reload::run(args),
        Command::Sim(args) => cmd::sim::run(args),
        Command::Load(args) => cmd::load::run(args),
        Command::Analyze(args) => cmd::analyze::run(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Init(args) => cmd::init::run(args),
        Command::Schema(args) => cmd::schema::run(args),
        Command::Completions(args) => cmd::completions::run(args, Cli::command()),
    };
    // The command's log lines first, then its error.
    drop(logs);
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", render(&err));
            std::process::ExitCode::from(1)
        }
    }
}

/// The error and its causes on one line, `what: why: why`, as `{:#}` writes it, less each cause
/// the line already ends with: many library errors write their cause into their own message and
/// also return it as their source, which printed every OS error twice ("No such file or
/// directory (os error 2): No such file or directory (os error 2)").
fn render(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod render_tests {

    /// An error that writes its source into its own message and returns it as its source too
    /// (what `#[error("…: {source}")]` with `#[source]` does).
    #[derive(Debug)]
    struct Echoing {
        what: &'static str,
        source: std::io::Error,
    }

    impl std::fmt::Display for Echoing {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "io: {}: {}", self.what, self.source)
        }
    }

    impl std::error::Error for Echoing {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    /// Found by rev-cli: `manifold analyze /nonexistent`, `manifold sim -c DIR`, `manifold demo
    /// --rate 0` printed their cause twice.
    #[test]
    fn a_cause_already_in_the_message_is_written_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let err = anyhow::Error::from(Echoing {
            what: "a.json",
            source: io,
        })
        .context("reading traces");
        assert_eq!(
            super::render(&err),
            "reading traces: io: a.json: entity not found"
        );
        // Causes that say something new are all kept.
        let err = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(super::render(&err), "outer: middle: inner");
    }
}

#[cfg(all(test, feature = "jemalloc", not(feature = "mimalloc")))]
mod tests {
    /// The settings that make jemalloc give freed memory back come from .cargo/config.toml at
    /// build time: a build that missed them would still work, only keep what it freed resident.
    #[test]
    fn jemalloc_purges_freed_pages_from_a_background_thread() {
        let conf = tikv_jemalloc_ctl::config::malloc_conf::read().unwrap();
        assert!(conf.contains("background_thread:true"), "{conf}");
        assert!(conf.contains("dirty_decay_ms:250"), "{conf}");
        assert!(tikv_jemalloc_ctl::opt::background_thread::read().unwrap());
    }
}
