//! One module per subcommand. Each exposes `Args` (clap) and `run`, returning the process exit code.

pub(crate) mod admin;
pub(crate) mod analyze;
pub(crate) mod bench;
pub(crate) mod cache;
pub(crate) mod check;
pub(crate) mod demo;
pub(crate) mod load;
pub(crate) mod queue;
pub(crate) mod serve;
pub(crate) mod sim;

/// Build the multi-threaded tokio runtime the async subcommands run on.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Structured logs to stderr, filtered by `RUST_LOG` (default `info`).
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
