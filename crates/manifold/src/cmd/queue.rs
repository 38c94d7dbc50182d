//! `manifold queue stats|dead|replay|purge`: operate the offload queue of a running gateway.
//!
//! Like `manifold cache`, it goes through the gateway's admin listener: the embedded queue's file
//! is locked by the running gateway, and brokers are shared by every replica anyway.

use anyhow::bail;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Operate the offload queue of a running gateway (async calls).
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  manifold queue stats -c manifold.toml\n  \
manifold queue dead --admin 127.0.0.1:9901            # the dead letters, oldest first\n  \
manifold queue dead --id 0190c2…                       # one, with its last error\n  \
manifold queue replay --all                            # back into the queue, due now\n  \
manifold queue purge --id 0190c2…                      # gone for good\n\n\
Output is JSON, credentials shown as ***. With server.admin_token set, the token comes from\n\
--token-file, $MANIFOLD_ADMIN_TOKEN or the config. See docs/offload.md.")]
pub(crate) struct Args {
    #[command(subcommand)]
    action: Action,
    /// The gateway's config file (its `server.admin` is the address asked).
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        default_value = "manifold.toml",
        global = true
    )]
    config: PathBuf,
    /// The admin address to ask instead of the config's.
    #[arg(long, value_name = "ADDR", global = true)]
    admin: Option<SocketAddr>,
    /// A file holding the admin token (`server.admin_token`); else `$MANIFOLD_ADMIN_TOKEN`,
    /// else the config's.
    #[arg(long, value_name = "PATH", global = true)]
    token_file: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Depth, oldest age, in-flight and dead tasks, and the dispatcher's counters.
    Stats,
    /// List dead letters, or show one.
    Dead {
        /// Show this task only.
        #[arg(long)]
        id: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Move dead letters back into the queue, due now.
    Replay(Which),
    /// Delete dead letters for good.
    Purge(Which),
}

#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct Which {
    /// One task, by id.
    #[arg(long)]
    id: Option<String>,
    /// All of them.
    #[arg(long)]
    all: bool,
}

impl Which {
    fn query(&self) -> String {
        match &self.id {
            Some(id) => format!("id={}", super::admin::encode(id)),
            None => "all=1".to_owned(),
        }
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let admin = super::admin::target(args.admin, &args.config, args.token_file.as_deref())?;
    let (method, path) = match &args.action {
        Action::Stats => ("GET", "/queue".to_owned()),
        Action::Dead { id: Some(id), .. } => {
            ("GET", format!("/queue/dead/{}", super::admin::encode(id)))
        }
        Action::Dead { id: None, limit } => ("GET", format!("/queue/dead?limit={limit}")),
        Action::Replay(w) => ("POST", format!("/queue/replay?{}", w.query())),
        Action::Purge(w) => ("DELETE", format!("/queue/dead?{}", w.query())),
    };
    let (status, body) =
        super::runtime()?.block_on(super::admin::request(&admin, method, &path))?;
    if !(200..300).contains(&status) {
        bail!("the gateway at {admin} answered {status}: {}", body.trim());
    }
    match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(mut v) => {
            // The gateway redacts dead letters' credentials; an older one did not.
            manifold_queue::redact::json_headers(&mut v);
            println!("{}", serde_json::to_string_pretty(&v)?)
        }
        Err(_) => println!("{}", body.trim()),
    }
    Ok(ExitCode::SUCCESS)
}
