//! `manifold analyze`: where the time went in any system's traces, and what would fix it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use manifold_trace::analysis::{Analyzer, Options, WhatIf};
use manifold_trace::read::{analyze_file, analyze_stream, expand_paths, ReadError};
use manifold_trace::report;
use manifold_trace::Semantics;

/// Read Jaeger, Zipkin or OTLP traces; show the critical-path hotspots and what would fix them.
#[derive(Debug, clap::Args)]
#[command(
    about = "Where the time went in traces (Jaeger, Zipkin, OTLP JSON), and what would fix it",
    long_about = "Reads trace files (Jaeger UI/API JSON, Jaeger api_v2/v3 protobuf-JSON, Zipkin v2, \
OTLP/JSON; plain or gzip; files or directories), computes each trace's critical path, aggregates \
the hotspots per operation, and recommends changes (parallelize, batch, cache, async, retry, \
limited-concurrency, slow-dependency) with the saving measured by re-simulating the traces.",
    after_help = "Examples:\n  manifold analyze traces/ \n  manifold analyze export.json.gz --json\n  \
manifold analyze traces/ --html report.html\n  \
curl -s 127.0.0.1:9901/traces?format=jaeger | manifold analyze -\n  manifold analyze traces/ --what-if speedup:db:query=50% --what-if async:shop:publish\n  \
manifold analyze crisp/ --skew-tolerance 0.01\n  manifold analyze traces/ --emit-plan frontend:checkout > route.toml\n\n\
The --json contract is documented in docs/analyze.md."
)]
pub(crate) struct Args {
    /// Trace files or directories (`.json`, `.ndjson`, `.jsonl`, optionally `.gz`); `-` reads
    /// standard input (plain JSON, such as the gateway's `GET /traces?format=jaeger`).
    #[arg(required = true, value_name = "TRACE_FILES")]
    paths: Vec<PathBuf>,
    /// Print the machine-readable report (stable contract) instead of the terminal report.
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML page (hotspots, median and slowest waterfalls).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// CRISP's overlap allowance: consecutive critical siblings may overlap by this fraction of
    /// their parent's duration (0 = Jaeger's strict ordering; CRISP uses 0.01).
    #[arg(long, default_value_t = 0.0, value_name = "FRACTION")]
    skew_tolerance: f64,
    /// Do not correct clock skew between client and server spans.
    #[arg(long)]
    no_skew_correction: bool,
    /// Simulate a change: parallelize:SVC:OP, speedup:SVC:OP=50%, async:SVC:OP, cache:SVC:OP=0.9,
    /// batch:SVC:OP (repeatable; applied together).
    #[arg(long = "what-if", value_name = "CHANGE")]
    what_if: Vec<String>,
    /// Write the Manifold route (TOML) for this endpoint (SERVICE:OPERATION or a part of it)
    /// to stdout, running its calls as the DAG its traces allow.
    #[arg(long, value_name = "ROUTE")]
    emit_plan: Option<String>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !(0.0..1.0).contains(&args.skew_tolerance) {
        anyhow::bail!(
            "config: --skew-tolerance must be in [0, 1), got {}",
            args.skew_tolerance
        );
    }
    let what_if = args
        .what_if
        .iter()
        .map(|w| WhatIf::parse(w))
        .collect::<Result<Vec<_>, _>>()?;
    let opts = Options {
        semantics: Semantics {
            overlap_allowance: args.skew_tolerance,
        },
        no_skew_correction: args.no_skew_correction,
        what_if,
        emit_plan: args.emit_plan.clone(),
    };
    // Before reading, which can take minutes on a large export.
    let html = args
        .html
        .as_deref()
        .map(super::LateOutput::open)
        .transpose()?;
    let mut an = Analyzer::new(opts);
    let stdin = Path::new("-");
    let named: Vec<PathBuf> = args.paths.iter().filter(|p| *p != stdin).cloned().collect();
    let files = expand_paths(&named)?;
    let explicit: Vec<PathBuf> = named.iter().filter(|p| p.is_file()).cloned().collect();
    let mut read_any = false;
    if named.len() < args.paths.len() {
        analyze_stream(
            &mut an,
            Box::new(std::io::stdin().lock()),
            Path::new("<stdin>"),
        )
        .context("reading traces from standard input")?;
        read_any = true;
    }
    for f in &files {
        match analyze_file(&mut an, f) {
            Ok(_) => read_any = true,
            Err(e @ ReadError::NotATrace { .. }) if !explicit.contains(f) => {
                eprintln!("skipping {e}");
            }
            Err(e) => return Err(e).context("reading traces"),
        }
    }
    if !read_any {
        anyhow::bail!("input: no trace files found in {:?}", args.paths);
    }
    let rep = report::build(&an);
    if let Some(route) = &args.emit_plan {
        let plan = report::render_plan(&an, route)
            .ok_or_else(|| anyhow::anyhow!("input: no trace has an endpoint matching {route:?}"))?;
        let mut out = std::io::stdout().lock();
        out.write_all(plan.as_bytes())?;
        if let Some(file) = html {
            file.write(report::render_html(&an, &rep).as_bytes())?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(file) = html {
        file.write(report::render_html(&an, &rep).as_bytes())?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &rep)?;
        out.write_all(b"\n")?;
    } else {
        out.write_all(report::render_text(&rep).as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}
