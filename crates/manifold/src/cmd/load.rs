//! `manifold load`: the open-loop load generator (see `docs/load.md`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use manifold_load::{KeyDist, LoadSpec};

/// Send HTTP requests on a fixed schedule and report latency percentiles measured from each
/// request's scheduled send time, so server stalls show (no coordinated omission).
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  manifold load http://127.0.0.1:8080/user-profile/42 --rate 100 --duration 10s
  manifold load 'http://127.0.0.1:8080/user-profile/{key}' --rate 500 --duration 30s \\
      --zipf 1.0 --keys 10000
  manifold load http://127.0.0.1:8080/checkout -X POST -b '{\"items\":[1],\"total\":25}' \\
      --rate 50 --requests 1000 --connections 16 --json

URLs may hold {seq} (the request's number, from 1) and {key} (a random key in 1..=--keys,
uniform or --zipf). Several URLs are used in turn. --json prints one line:
{\"sent\",\"ok\",\"errors\",\"rate\",\"duration_s\",\"latency_ms\":{\"p50\",\"p90\",\"p99\",\"p999\",\"max\"}}")]
pub(crate) struct Args {
    /// Target URL(s), http:// only; may contain {seq} and {key}.
    #[arg(required = true, value_name = "URL")]
    urls: Vec<String>,
    /// Requests per second, scheduled at a fixed interval (above 0, at most 1,000,000).
    #[arg(short, long)]
    rate: f64,
    /// How long to schedule requests for (e.g. 10s, 1m).
    #[arg(short, long, value_parser = manifold_load::parse_duration,
          required_unless_present = "requests")]
    duration: Option<Duration>,
    /// Stop after this many requests (with --duration: whichever comes first). A run schedules
    /// at most 100,000,000 requests, over at most a week.
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// Most requests in flight at once (so about that many connections); requests waiting for a
    /// slot still count their latency from their scheduled time. 1 to 1,000,000; default: no cap.
    #[arg(short, long)]
    connections: Option<usize>,
    /// HTTP method.
    #[arg(short = 'X', long, default_value = "GET")]
    method: String,
    /// A request header, `NAME: VALUE` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Request body; may contain {seq} and {key}. Content-Type defaults to application/json.
    #[arg(short = 'b', long, conflicts_with = "body_file")]
    body: Option<String>,
    /// Read the request body from a file (at most 16 MiB).
    #[arg(long, value_name = "FILE")]
    body_file: Option<PathBuf>,
    /// Number of distinct {key} values (1..=N).
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// Draw {key} Zipf-distributed with this exponent (e.g. 1.0) instead of uniformly.
    #[arg(long, value_name = "S")]
    zipf: Option<f64>,
    /// Give up on a request this long after its scheduled time (at most 1h).
    #[arg(long, default_value = "10s", value_parser = manifold_load::parse_duration)]
    timeout: Duration,
    /// Seed for the {key} draws.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as one JSON line (stable; see docs/load.md).
    #[arg(long)]
    json: bool,
    /// How the scheduler waits for each send time: `precise` sends within tens of
    /// microseconds of schedule; `tokio` up to a millisecond late, in bursts on 1 ms ticks (the
    /// lag counts into latency, which is measured from the scheduled time).
    #[arg(long, value_enum, default_value_t = super::TimerArg::Precise)]
    timer: super::TimerArg,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut spec = LoadSpec::new(String::new(), args.rate);
    spec.urls = args.urls;
    spec.method = http_method(&args.method)?;
    for h in &args.headers {
        let (k, v) = h
            .split_once(':')
            .with_context(|| format!("input error: header {h:?} is not `NAME: VALUE`"))?;
        spec.headers
            .push((k.trim().to_owned(), v.trim().to_owned()));
    }
    spec.body = match (args.body, &args.body_file) {
        (Some(b), _) => Some(b),
        (None, Some(path)) => Some(read_body_file(path)?),
        (None, None) => None,
    };
    spec.duration = args.duration;
    spec.requests = args.requests;
    spec.connections = args.connections;
    spec.timeout = args.timeout;
    spec.seed = args.seed;
    spec.timer = args.timer.timer();
    spec.keys = match args.zipf {
        Some(s) => KeyDist::Zipf { n: args.keys, s },
        None => KeyDist::Uniform { n: args.keys },
    };
    spec.progress = true;
    // Check the spec before starting a runtime, so input errors come first and fast.
    spec.total_requests()?;
    let report = super::runtime()?.block_on(async {
        tokio::select! {
            r = manifold_load::run(spec) => r.map_err(anyhow::Error::from),
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted before the run finished")),
        }
    })?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The body file's text, read up to [`manifold_load::MAX_BODY_BYTES`] (the largest body a run
/// sends): a wrong path such as `/dev/zero` is refused instead of read until memory runs out.
fn read_body_file(path: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Read as _;
    let max = manifold_load::MAX_BODY_BYTES as u64;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_string(&mut text))
        .with_context(|| format!("io error: reading {}", path.display()))?;
    if text.len() as u64 > max {
        anyhow::bail!(
            "input error: the body file {} is larger than {} MiB",
            path.display(),
            max >> 20
        );
    }
    Ok(text)
}

fn http_method(m: &str) -> anyhow::Result<manifold_load::Method> {
    manifold_load::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
        .map_err(|_| anyhow::anyhow!("input error: bad HTTP method {m:?}"))
}
