//! `manifold serve`: run the gateway until SIGTERM or Ctrl-C.

use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Run the gateway.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  manifold sim --shop &            # simulated upstreams on 127.0.0.1:7001-7006\n  \
manifold serve -c examples/shop.toml\n  \
curl -s -X POST localhost:8080/checkout -d '{\"total\": 42, \"items\": [1], \"address\": \"x\"}'\n\n\
On SIGTERM or Ctrl-C the gateway answers /readyz with 503 at once and keeps serving for\n\
server.drain_delay (so load balancers stop sending), then stops accepting and lets in-flight\n\
requests finish for up to server.drain_timeout; connections still open then are closed."
)]
pub(crate) struct Args {
    /// The config file.
    #[arg(short, long, value_name = "FILE", default_value = "manifold.toml")]
    config: PathBuf,
    /// Override `server.listen` (e.g. 127.0.0.1:0 for a free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Override `server.admin`.
    #[arg(long, value_name = "ADDR")]
    admin: Option<std::net::SocketAddr>,
}

/// `open_files`: the process's open-file limit, checked against `server.max_connections`.
pub(crate) async fn run(args: Args, open_files: Option<u64>) -> anyhow::Result<ExitCode> {
    let mut config = match manifold_config::load(&args.config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::from(1));
        }
    };
    if let Some(l) = args.listen {
        config.server.listen = Some(l);
    }
    if let Some(a) = args.admin {
        config.server.admin = a;
    }
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    if let Some(warning) =
        open_files.and_then(|l| manifold_gateway::open_files_warning(&config.server, l))
    {
        tracing::warn!("{warning}");
    }
    let routes = config.routes.len();
    let gateway = manifold_gateway::Gateway::bind(config)
        .await
        .context("starting the gateway")?;
    // Signals are caught from here on, before the line that says the gateway is up: a
    // supervisor that sends SIGTERM as soon as it reads that line must get a graceful drain,
    // never the default action (the process killed mid-request).
    let stop = CancellationToken::new();
    stop_on_signal(stop.clone())?;
    // One machine-readable line so scripts and tests can find the ports.
    // With `server.tls` beside a plaintext listener, its address follows (TLS only: it is the
    // first address).
    let https = match gateway.tls_addr() {
        Some(a) if a != gateway.local_addr() => format!(", https on {a}"),
        _ => String::new(),
    };
    println!(
        "manifold listening on {} (admin {}), {routes} route(s){https}",
        gateway.local_addr(),
        gateway.admin_addr()
    );
    gateway.run(stop).await;
    Ok(ExitCode::SUCCESS)
}

/// Cancel `stop` on SIGTERM or Ctrl-C. The handlers are installed before this returns (a
/// `ctrl_c()` future would only install its handler when first polled).
fn stop_on_signal(stop: CancellationToken) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("listening for Ctrl-C")?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            stop.cancel();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    Ok(())
}
