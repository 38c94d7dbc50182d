//! `manifold reload`: ask a running gateway to re-read its config file (`POST /reload` on its
//! admin listener), and print what changed, what needs a restart, or why nothing did.

use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Reload a running gateway's config.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  manifold reload -c manifold.toml                 # admin address from the file\n  \
manifold reload --admin 127.0.0.1:9901 --json\n  \
MANIFOLD_ADMIN_TOKEN=… manifold reload --admin 10.0.0.5:9901\n\n\
The gateway re-reads the file it was started with (never a path sent to it). If the file does\n\
not compile, each error is printed as file:line:col, the running config stays and the exit\n\
status is 1. Otherwise the new routes and upstreams are swapped in without dropping a request;\n\
settings that need a restart (listen addresses, [queue], [cache], …) are listed and keep their\n\
running values. With server.admin_token set, the token comes from --token-file,\n\
$MANIFOLD_ADMIN_TOKEN or the config. SIGHUP does the same (the outcome is in the gateway's log).\n\
See docs/operations.md, \"Reloading\"."
)]
pub(crate) struct Args {
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
    /// A file holding the admin token (`server.admin_token`); else `$MANIFOLD_ADMIN_TOKEN`,
    /// else the config's.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Print the gateway's JSON answer as it is.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let target = super::admin::target(args.admin, &args.config, args.token_file.as_deref())
        .context(
            "finding the gateway to reload (pass --admin ADDR if the file does not compile)",
        )?;
    let (status, body) =
        super::runtime()?.block_on(super::admin::request(&target, "POST", "/reload"))?;
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    if args.json && !answer.is_null() {
        println!("{answer}");
    }
    match status {
        // A reload's answer is a JSON report; a 200 without one came from something else.
        200 if !answer.is_object() => anyhow::bail!(
            "the gateway at {target} answered 200 without a reload report: {}",
            super::admin::excerpt(&body)
        ),
        200 => {
            if !args.json {
                print_report(&target, &answer);
            }
            Ok(ExitCode::SUCCESS)
        }
        422 => {
            if args.json && answer.is_null() {
                // Nothing was printed for it above: say what came instead.
                eprintln!(
                    "the gateway at {target} did not reload (422), and its answer is not JSON: {}",
                    super::admin::excerpt(&body)
                );
            }
            if !args.json {
                eprintln!("the gateway at {target} did not reload; its running config stays:");
                match answer["error"]["errors"].as_array() {
                    Some(errors) => {
                        for e in errors {
                            eprintln!(
                                "{}: {}",
                                e["at"].as_str().unwrap_or("?"),
                                e["message"].as_str().unwrap_or("")
                            );
                        }
                    }
                    None => eprintln!(
                        "{}",
                        answer["error"]["message"]
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| super::admin::excerpt(&body))
                    ),
                }
            }
            Ok(ExitCode::from(1))
        }
        _ => anyhow::bail!(
            "the gateway at {target} answered {status}: {}",
            super::admin::excerpt(&body)
        ),
    }
}

/// Names listed per line of the report; past it the line ends with how many more there are
/// (`--json` lists them all): a config of thousands of upstreams must not print a screenful.
const LISTED: usize = 8;

/// `names` joined, at most [`LISTED`] of them.
fn listed(names: &[&str]) -> String {
    if names.len() <= LISTED {
        return names.join(", ");
    }
    format!(
        "{}, and {} more (--json lists them all)",
        names[..LISTED].join(", "),
        names.len() - LISTED
    )
}

fn print_report(target: &super::admin::Target, answer: &serde_json::Value) {
    let names = |key: &str| {
        answer["upstreams"][key]
            .as_array()
            .map(|a| listed(&a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>()))
            .unwrap_or_default()
    };
    println!(
        "reloaded the gateway at {target}: {} route(s) from {}",
        answer["routes"],
        answer["file"].as_str().unwrap_or("?")
    );
    for (key, what) in [
        ("kept", "kept (same pools)"),
        ("changed", "changed (new pools)"),
        ("added", "added"),
        ("removed", "removed"),
    ] {
        let list = names(key);
        if !list.is_empty() {
            println!("  upstreams {what}: {list}");
        }
    }
    for r in answer["restart_required"].as_array().into_iter().flatten() {
        println!(
            "  needs a restart: {}",
            r["message"].as_str().unwrap_or_default()
        );
    }
    for w in answer["warnings"].as_array().into_iter().flatten() {
        println!("  {}", w.as_str().unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lists_of_names_are_cut_with_a_count() {
        assert_eq!(listed(&[]), "");
        assert_eq!(listed(&["a", "b"]), "a, b");
        let many: Vec<String> = (0..5000).map(|i| format!("u{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            listed(&many),
            "u0, u1, u2, u3, u4, u5, u6, u7, and 4992 more (--json lists them all)"
        );
        assert_eq!(listed(&many[..8]).matches(", ").count(), 7);
    }
}
