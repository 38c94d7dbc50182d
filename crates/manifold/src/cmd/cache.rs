//! `manifold cache purge --prefix P -c FILE`: remove cached entries from a running gateway.
//!
//! It asks the gateway's admin listener (`DELETE /cache?prefix=…`, address from the config's
//! `server.admin` or `--admin`), so the gateway's own memory tier is emptied along with Redis;
//! talking to Redis directly would leave that gateway answering from memory.

use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// The longest prefix sent: cache keys are a route, a method and a path (URLs past a few KiB
/// are refused by most servers), and a request line must hold it percent-encoded.
const MAX_PREFIX_BYTES: usize = 16 * 1024;

/// Manage the call-result cache of a running gateway.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  manifold cache purge --prefix \"users \" -c manifold.toml\n  \
manifold cache purge --prefix \"users GET /users/42\" --admin 127.0.0.1:9901\n  \
manifold cache purge --prefix \"\" -c manifold.toml      # everything\n\n\
Default keys read `{upstream} {METHOD} {path?query}`; a whole route's `route:{name} …`.\n\
The purge goes through the gateway's admin listener: its memory and the shared Redis or\n\
Memcached tier (memcached entries are invalidated by namespace, a superset of the prefix;\n\
other replicas keep their in-memory copies until ttl + stale). See docs/cache.md."
)]
pub(crate) struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Remove every entry whose key starts with PREFIX, from memory and the shared tier.
    Purge {
        /// The key prefix ("" removes everything).
        #[arg(long)]
        prefix: String,
        /// The gateway's config file (its `server.admin` is the address asked).
        #[arg(
            short = 'c',
            long = "config",
            value_name = "FILE",
            default_value = "manifold.toml"
        )]
        config: PathBuf,
        /// The admin address to ask instead of the config's.
        #[arg(long, value_name = "ADDR")]
        admin: Option<SocketAddr>,
        /// A file holding the admin token (`server.admin_token`); else
        /// `$MANIFOLD_ADMIN_TOKEN`, else the config's.
        #[arg(long, value_name = "PATH")]
        token_file: Option<PathBuf>,
    },
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Action::Purge {
        prefix,
        config,
        admin,
        token_file,
    } = args.action;
    let admin = super::admin::target(admin, &config, token_file.as_deref())?;
    // Past this a request line is refused (by the gateway with a bodiless 414, or before
    // it is sent): say why at once.
    if prefix.len() > MAX_PREFIX_BYTES {
        bail!(
            "a prefix of {} bytes does not fit in a request line (at most {MAX_PREFIX_BYTES}); \
             purge by a shorter prefix",
            prefix.len()
        );
    }
    let (status, body) = super::runtime()?.block_on(super::admin::request(
        &admin,
        "DELETE",
        &format!("/cache?prefix={}", super::admin::encode(&prefix)),
    ))?;
    if status == 414 {
        // hyper's own answer to a request line past its limit, with no body to say so.
        bail!(
            "the gateway at {admin} answered 414 URI Too Long: a prefix of {} bytes does not fit in \
             its request line; purge by a shorter prefix",
            prefix.len()
        );
    }
    if !(200..300).contains(&status) {
        bail!(
            "the gateway at {admin} answered {status}: {}",
            super::admin::excerpt(&body)
        );
    }
    // The gateway answers {"removed": N}; anything else is not its purge.
    let removed = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["removed"].as_u64())
        .with_context(|| {
            format!(
                "the gateway at {admin} answered {status} without a count of removed entries: {}",
                super::admin::excerpt(&body)
            )
        })?;
    println!(
        "removed {removed} entries under {prefix:?} (memory and Redis of the gateway at {admin})"
    );
    Ok(ExitCode::SUCCESS)
}
