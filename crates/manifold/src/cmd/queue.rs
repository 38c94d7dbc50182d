//! `manifold queue stats|status|dead|replay|purge`: operate the offload queue of a running
//! gateway.
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
manifold queue status 9f2c…                            # one task's state and history\n  \
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
    /// One task's status, its transitions (when, attempts, errors) and its result.
    Status {
        /// The task id (a receipt's `task_id`).
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        id: String,
        /// Print the status as JSON instead of a history table.
        #[arg(long)]
        json: bool,
    },
    /// List dead letters, or show one.
    Dead {
        /// Show this task only.
        #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
        id: Option<String>,
        /// At most this many (1 to 1,000, as the gateway lists).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: u16,
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
    #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
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
        Action::Status { id, .. } => (
            "GET",
            format!("/queue/status/{}", super::admin::encode_segment(id)),
        ),
        Action::Dead { id: Some(id), .. } => (
            "GET",
            format!("/queue/dead/{}", super::admin::encode_segment(id)),
        ),
        Action::Dead { id: None, limit } => ("GET", format!("/queue/dead?limit={limit}")),
        Action::Replay(w) => ("POST", format!("/queue/replay?{}", w.query())),
        Action::Purge(w) => ("DELETE", format!("/queue/dead?{}", w.query())),
    };
    let (status, body) =
        super::runtime()?.block_on(super::admin::request(&admin, method, &path))?;
    if !(200..300).contains(&status) {
        bail!(
            "the gateway at {admin} answered {status}: {}",
            super::admin::excerpt(&body)
        );
    }
    match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(v) if matches!(args.action, Action::Status { json: false, .. }) => {
            print!("{}", history(&v));
        }
        Ok(mut v) => {
            // The gateway redacts dead letters' credentials; an older one did not.
            manifold_queue::redact::json_headers(&mut v);
            println!("{}", serde_json::to_string_pretty(&v)?)
        }
        Err(_) => println!("{}", body.trim()),
    }
    Ok(ExitCode::SUCCESS)
}

/// 10000-01-01T00:00:00Z in milliseconds since the epoch: the first time RFC 3339 cannot write.
const LAST_RFC3339_MS: u64 = 253_402_300_800_000;

/// A task's status as an operator reads it: the headline, one line per transition, the result.
fn history(v: &serde_json::Value) -> String {
    let at = |ms: &serde_json::Value| match ms.as_u64() {
        // RFC 3339 ends with the year 9999 (humantime's formatter fails past it, and
        // `to_string` panics on that): a later time is shown as the number it was sent as.
        Some(ms) if ms < LAST_RFC3339_MS => {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
            humantime::format_rfc3339_millis(t).to_string()
        }
        Some(ms) => format!("{ms} ms after the epoch"),
        None => "?".into(),
    };
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_owned();
    let mut out = format!(
        "task {}: {} after {} attempt(s), updated {}\n",
        text(&v["task_id"]),
        text(&v["status"]),
        v["attempts"].as_u64().unwrap_or(0),
        at(&v["updated_at"])
    );
    if let Some(steps) = v["history"].as_array() {
        for step in steps {
            out.push_str(&format!(
                "  {}  {:<10}  attempts {}{}\n",
                at(&step["at"]),
                text(&step["status"]),
                step["attempts"].as_u64().unwrap_or(0),
                step["error"]
                    .as_str()
                    .map(|e| format!("  error: {e}"))
                    .unwrap_or_default()
            ));
        }
    }
    if let Some(e) = v["last_error"].as_str() {
        out.push_str(&format!("last error: {e}\n"));
    }
    if v["result_omitted"].as_bool() == Some(true) {
        out.push_str("result: omitted (larger than max_result_bytes)\n");
    } else if !v["result"].is_null() {
        out.push_str(&format!(
            "result ({}): {}\n",
            v["result_status"],
            serde_json::to_string(&v["result"]).unwrap_or_default()
        ));
    }
    if let Some(exp) = v.get("expires_at").filter(|e| !e.is_null()) {
        out.push_str(&format!("kept until {}\n", at(exp)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::history;

    #[test]
    fn the_history_lists_every_transition_and_the_result() {
        let v = serde_json::json!({
            "task_id": "9f2c", "status": "done", "attempts": 1, "updated_at": 1_700_000_000_300u64,
            "last_error": "upstream: status 503", "result_status": 201,
            "result": {"label": "L-1"}, "expires_at": 1_700_003_600_300u64,
            "history": [
                {"status": "queued", "at": 1_700_000_000_000u64, "attempts": 0},
                {"status": "delivering", "at": 1_700_000_000_100u64, "attempts": 0},
                {"status": "retrying", "at": 1_700_000_000_200u64, "attempts": 1, "error": "upstream: status 503"},
                {"status": "done", "at": 1_700_000_000_300u64, "attempts": 1}
            ]
        });
        let out = history(&v);
        assert!(
            out.starts_with("task 9f2c: done after 1 attempt(s), updated 2023-11-14T22:13:20.300Z"),
            "{out}"
        );
        assert_eq!(
            out.lines().filter(|l| l.starts_with("  2023")).count(),
            4,
            "{out}"
        );
        assert!(
            out.contains("retrying    attempts 1  error: upstream: status 503"),
            "{out}"
        );
        assert!(out.contains(r#"result (201): {"label":"L-1"}"#), "{out}");
        let omitted = serde_json::json!({"task_id": "x", "status": "done", "result_omitted": true});
        assert!(history(&omitted).contains("omitted"));
    }

    /// Found by rev-cli: a time past the year 9999 (a gateway's bug, or whatever answers at the
    /// admin address) made `manifold queue status` panic in the time formatter.
    #[test]
    fn times_past_the_year_9999_are_shown_as_numbers() {
        let v = serde_json::json!({
            "task_id": "x", "status": "done", "updated_at": u64::MAX,
            "history": [{"status": "queued", "at": 253_402_300_800_000u64},
                        {"status": "done", "at": 253_402_300_799_999u64}],
            "expires_at": 1e300,
        });
        let out = history(&v);
        assert!(
            out.contains("updated 18446744073709551615 ms after the epoch"),
            "{out}"
        );
        assert!(out.contains("253402300800000 ms after the epoch"), "{out}");
        assert!(out.contains("9999-12-31T23:59:59.999Z"), "{out}");
        assert!(out.contains("kept until ?"), "{out}");
    }
}
