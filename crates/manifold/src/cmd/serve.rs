//! `manifold serve`: run the gateway until SIGTERM or Ctrl-C; reload its config on SIGHUP (and,
//! with `--watch`, when the file changes).

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
requests finish for up to server.drain_timeout; connections still open then are closed.\n\n\
On SIGHUP (`kill -HUP PID`, `systemctl reload`), `manifold reload`, or with --watch when the\n\
file changes, the config is read again: an invalid one is logged and the running one stays;\n\
a valid one is swapped in without dropping a request. See docs/operations.md, \"Reloading\"."
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
    /// Reload the config when the file changes (its time, size and contents are looked at
    /// every second).
    #[arg(long)]
    watch: bool,
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
    let overrides = manifold_gateway::Overrides {
        listen: args.listen,
        admin: args.admin,
    };
    overrides.apply(&mut config);
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    if let Some(warning) =
        open_files.and_then(|l| manifold_gateway::open_files_warning(&config.server, l))
    {
        tracing::warn!("{warning}");
    }
    let routes = config.routes.len();
    // SIGHUP's default action ends the process: take it over before the (possibly slow) start,
    // so a reload asked for meanwhile runs once the gateway is up instead of killing it.
    let hup = hangup()?;
    let gateway = manifold_gateway::Gateway::bind(config)
        .await
        .context("starting the gateway")?;
    gateway.set_overrides(overrides);
    // Signals are caught from here on, before the line that says the gateway is up: a
    // supervisor that sends SIGTERM as soon as it reads that line must get a graceful drain,
    // never the default action (the process killed mid-request).
    let stop = CancellationToken::new();
    stop_on_signal(stop.clone())?;
    reload_on_signal(hup, gateway.reloader());
    if args.watch {
        gateway
            .reloader()
            .watch(std::time::Duration::from_secs(1), stop.clone());
    }
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
    manifold_gateway::flush_access_log();
    Ok(ExitCode::SUCCESS)
}

#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = ();

/// Catch SIGHUP from now on (signals that arrive before [`reload_on_signal`] runs are kept).
fn hangup() -> anyhow::Result<Hangup> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        signal(SignalKind::hangup()).context("listening for SIGHUP")
    }
    #[cfg(not(unix))]
    Ok(())
}

/// Reload on each SIGHUP. The outcome is logged by the reload itself.
fn reload_on_signal(hup: Hangup, reloader: manifold_gateway::Reloader) {
    #[cfg(unix)]
    {
        let mut hup = hup;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the config");
                let _ = reloader.reload().await;
            }
        });
    }
    #[cfg(not(unix))]
    drop((hup, reloader));
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
