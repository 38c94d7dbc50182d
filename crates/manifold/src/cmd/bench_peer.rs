//! `manifold bench-peer hyper` (hidden): the bare hyper proxy that `manifold bench proxy` runs
//! beside Manifold as the floor of a hyper-based proxy's cost (`manifold_bench::floor`), and
//! `hyper-per-core`, the same proxy with a single-threaded runtime and a listener per thread.

use anyhow::Context as _;
use std::net::SocketAddr;
use std::process::ExitCode;

/// A benchmark peer built into this binary, so that `manifold bench` can run it as a process
/// of its own and read its CPU. Not for production: no limits, no timeouts.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Which peer: `hyper`, a bare tokio + hyper 1.x keep-alive reverse proxy on the
    /// work-stealing runtime; `hyper-per-core`, the same on one single-threaded runtime per
    /// thread, each with its own `SO_REUSEPORT` listener and upstream pool (threads:
    /// `TOKIO_WORKER_THREADS`, else one per core, as the other runtime's workers).
    #[arg(value_enum)]
    peer: Peer,
    /// Where to listen (loopback).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// The one upstream every request goes to.
    #[arg(long, value_name = "ADDR")]
    upstream: SocketAddr,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Peer {
    Hyper,
    HyperPerCore,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.listen.ip().is_loopback() && args.upstream.ip().is_loopback(),
        "bench-peer listens on and forwards to loopback only (got --listen {} --upstream {})",
        args.listen,
        args.upstream
    );
    if let Peer::HyperPerCore = args.peer {
        let threads = std::env::var("TOKIO_WORKER_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
            .unwrap_or(1);
        manifold_bench::floor::serve_per_core(args.listen, args.upstream, threads)
            .with_context(|| format!("serving on {}", args.listen))?;
        return Ok(ExitCode::SUCCESS);
    }
    super::runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        manifold_bench::floor::serve(listener, args.upstream)
            .await
            .context("accepting connections")?;
        Ok(ExitCode::SUCCESS)
    })
}
