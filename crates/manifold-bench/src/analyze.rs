//! `manifold bench analyze`: the trace analyzer beside a parse-only pass over the same file,
//! measured in one run (issue 15, goal 4).
//!
//! The file is a generated Jaeger file of at least a million spans (the synthetic checkout of
//! `manifold_trace::synth`, which has every pattern the analysis looks for), or one given with
//! `--file`. Each round runs, one after the other on this thread:
//!
//! * the parse-only pass: read the file and run `serde_json` over every byte into
//!   `serde::de::IgnoredAny` — the least any JSON reader of this file must do;
//! * the whole of `manifold analyze`: the streaming read, assembly, clock-skew correction,
//!   critical paths, recommendations with their re-simulated savings, and the report.
//!
//! Each is timed by the wall clock and by this thread's on-CPU time
//! (`/proc/thread-self/schedstat`): on a machine shared with other work the CPU time is what
//! "per core" means, and it does not grow when the thread waits for a core. Figures are
//! medians over the rounds with their spread; the ratio is taken round by round (analyze over
//! the parse-only pass of the same round), then its median. The goals: at least 1 M spans per
//! CPU-second, and at least half the parse-only pass's speed (a ratio of at most 2).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use tokio::time::Instant;

use manifold_trace::analysis::{Analyzer, Options};
use serde::Serialize;

use crate::{BenchError, Spread};

/// Spans per CPU-second the analyzer should reach.
pub const GOAL_SPANS_PER_CPU_S: f64 = 1e6;
/// The analyzer's time over the parse-only pass's it should stay within.
pub const GOAL_RATIO: f64 = 2.0;
/// Largest generated file, in spans (about 350 bytes each on disk).
pub const MAX_SPANS: u64 = 10_000_000;
/// Most rounds.
pub const MAX_ROUNDS: usize = 50;
/// Largest file given: the parse-only pass holds the whole file in memory.
pub const MAX_FILE_BYTES: u64 = 4 << 30;

/// What to measure.
#[derive(Debug, Clone)]
pub struct AnalyzeSpec {
    /// Spans of the generated file (at least; whole traces of 33 or 35 spans).
    pub spans: u64,
    /// Rounds (each: parse-only, then analyze).
    pub rounds: usize,
    /// Measure this file instead of generating one.
    pub file: Option<PathBuf>,
    /// Where the generated file is written (and removed after the run).
    pub dir: PathBuf,
}

impl Default for AnalyzeSpec {
    fn default() -> Self {
        AnalyzeSpec {
            spans: 1_000_000,
            rounds: 5,
            file: None,
            dir: std::env::temp_dir(),
        }
    }
}

impl AnalyzeSpec {
    /// A smoke test: 50,000 spans, 2 rounds.
    pub fn quick() -> Self {
        AnalyzeSpec {
            spans: 50_000,
            rounds: 2,
            ..AnalyzeSpec::default()
        }
    }

    fn check(&self) -> Result<(), BenchError> {
        if self.file.is_none() && !(1..=MAX_SPANS).contains(&self.spans) {
            return Err(BenchError::Spec(format!(
                "analyze: spans must be in 1..={MAX_SPANS}, got {}",
                self.spans
            )));
        }
        if !(1..=MAX_ROUNDS).contains(&self.rounds) {
            return Err(BenchError::Spec(format!(
                "analyze: rounds must be in 1..={MAX_ROUNDS}, got {}",
                self.rounds
            )));
        }
        Ok(())
    }
}

/// One pass's figures over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    /// Wall seconds per round.
    pub wall_s: Spread,
    /// On-CPU seconds of the measuring thread per round (`None` without
    /// `/proc/thread-self/schedstat`).
    pub cpu_s: Option<Spread>,
    /// Spans per wall second.
    pub spans_per_s: Spread,
    /// Spans per CPU-second (the per-core speed).
    pub spans_per_cpu_s: Option<Spread>,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct AnalyzeReport {
    /// The file measured.
    pub file: String,
    /// True when this run generated it.
    pub generated: bool,
    /// Its size.
    pub bytes: u64,
    /// Traces the analysis counted.
    pub traces: u64,
    /// Spans the analysis counted.
    pub spans: u64,
    /// Rounds run.
    pub rounds: usize,
    /// Read + `serde_json` into `IgnoredAny`.
    pub parse_only: Stage,
    /// The whole of `manifold analyze` (read, analysis, report).
    pub analyze: Stage,
    /// Analyze time over parse-only time, round by round, by CPU time (wall time without it).
    pub ratio: Spread,
    /// `/proc/loadavg` before the first round.
    pub load_before: Option<String>,
    /// `/proc/loadavg` after the last round.
    pub load_after: Option<String>,
    /// Median spans per CPU-second of analyze ≥ 1 M and median ratio ≤ 2.
    pub goals_met: bool,
}

/// Run the rounds; `progress` hears what is being done.
pub fn run(spec: &AnalyzeSpec, progress: impl Fn(&str)) -> Result<AnalyzeReport, BenchError> {
    spec.check()?;
    let (path, generated) = match &spec.file {
        Some(f) => (f.clone(), false),
        None => {
            let path = spec.dir.join(format!(
                "manifold-bench-analyze-{}-{}.json",
                std::process::id(),
                spec.spans
            ));
            progress(&format!(
                "writing {} spans to {}",
                spec.spans,
                path.display()
            ));
            generate(&path, spec.spans)?;
            (path, true)
        }
    };
    let out = measure(spec, &path, &progress);
    if generated {
        let _ = std::fs::remove_file(&path);
    }
    out
}

/// Write a synthetic checkout file of at least `spans` spans.
fn generate(path: &Path, spans: u64) -> Result<u64, BenchError> {
    let io = |e: std::io::Error| BenchError::Setup(format!("writing {}: {e}", path.display()));
    let f = std::fs::File::create(path).map_err(io)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    // every checkout trace has at least 33 spans
    let written =
        manifold_trace::synth::write_checkout_file(&mut w, spans.div_ceil(33), 11).map_err(io)?;
    w.flush().map_err(io)?;
    Ok(written)
}

struct Round {
    wall: f64,
    cpu: Option<f64>,
}

fn timed<T>(f: impl FnOnce() -> Result<T, BenchError>) -> Result<(T, Round), BenchError> {
    let cpu0 = thread_cpu_s();
    let t = Instant::now();
    let v = f()?;
    let wall = t.elapsed().as_secs_f64();
    let cpu = match (cpu0, thread_cpu_s()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    Ok((v, Round { wall, cpu }))
}

fn measure(
    spec: &AnalyzeSpec,
    path: &Path,
    progress: &impl Fn(&str),
) -> Result<AnalyzeReport, BenchError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| BenchError::Setup(format!("reading {}: {e}", path.display())))?;
    // The passes read the file several times, the parse-only one whole into memory: a device
    // (`/dev/zero` never ends, and its size reads 0) or a pipe (read once) cannot be measured.
    if !meta.is_file() {
        return Err(BenchError::Spec(format!(
            "analyze: {} is not a regular file",
            path.display()
        )));
    }
    let bytes = meta.len();
    if bytes > MAX_FILE_BYTES {
        return Err(BenchError::Spec(format!(
            "analyze: {} has {bytes} bytes; the parse-only pass holds the file in memory, at \
             most {MAX_FILE_BYTES}",
            path.display()
        )));
    }
    let load_before = load_average();
    let (mut parse, mut full) = (Vec::new(), Vec::new());
    let (mut traces, mut spans) = (0u64, 0u64);
    for r in 0..spec.rounds {
        progress(&format!("round {}/{}: parse-only", r + 1, spec.rounds));
        let ((), p) = timed(|| parse_only(path))?;
        progress(&format!("round {}/{}: analyze", r + 1, spec.rounds));
        let ((t, s), a) = timed(|| analyze(path))?;
        (traces, spans) = (t, s);
        parse.push(p);
        full.push(a);
    }
    let ratios: Vec<f64> = parse
        .iter()
        .zip(&full)
        .map(|(p, a)| match (p.cpu, a.cpu) {
            (Some(pc), Some(ac)) if pc > 0.0 => ac / pc,
            _ => a.wall / p.wall,
        })
        .collect();
    let (parse_only, analyze) = (stage(&parse, spans), stage(&full, spans));
    let ratio = Spread::of(&ratios);
    let speed = analyze
        .spans_per_cpu_s
        .unwrap_or(analyze.spans_per_s)
        .median;
    Ok(AnalyzeReport {
        file: path.display().to_string(),
        generated: spec.file.is_none(),
        bytes,
        traces,
        spans,
        rounds: spec.rounds,
        parse_only,
        analyze,
        goals_met: speed >= GOAL_SPANS_PER_CPU_S && ratio.median <= GOAL_RATIO,
        ratio,
        load_before,
        load_after: load_average(),
    })
}

fn stage(rounds: &[Round], spans: u64) -> Stage {
    let wall: Vec<f64> = rounds.iter().map(|r| r.wall).collect();
    let cpu: Option<Vec<f64>> = rounds.iter().map(|r| r.cpu).collect();
    let per = |secs: &[f64]| -> Spread {
        Spread::of(
            &secs
                .iter()
                .map(|s| spans as f64 / s.max(1e-9))
                .collect::<Vec<_>>(),
        )
    };
    Stage {
        wall_s: Spread::of(&wall),
        spans_per_s: per(&wall),
        cpu_s: cpu.as_deref().map(Spread::of),
        spans_per_cpu_s: cpu.as_deref().map(per),
    }
}

/// Read the file and parse every byte, building nothing.
fn parse_only(path: &Path) -> Result<(), BenchError> {
    let data = std::fs::read(path)
        .map_err(|e| BenchError::Setup(format!("reading {}: {e}", path.display())))?;
    serde_json::from_slice::<serde::de::IgnoredAny>(&data).map_err(|e| {
        BenchError::Setup(format!(
            "parse-only: {} is not plain JSON (gzip is not measured): {e}",
            path.display()
        ))
    })?;
    Ok(())
}

/// What `manifold analyze FILE --json` computes: (traces, spans).
fn analyze(path: &Path) -> Result<(u64, u64), BenchError> {
    let mut an = Analyzer::new(Options::default());
    manifold_trace::read::analyze_file(&mut an, path)
        .map_err(|e| BenchError::Setup(format!("analyze: {e}")))?;
    let report = manifold_trace::report::build(&an);
    let json = serde_json::to_vec(&report)
        .map_err(|e| BenchError::Setup(format!("analyze: report: {e}")))?;
    std::hint::black_box(json);
    Ok((report.traces, report.spans))
}

/// This thread's on-CPU seconds so far (`None` where the kernel does not keep schedstat).
fn thread_cpu_s() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

fn load_average() -> Option<String> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

impl AnalyzeReport {
    /// The report as a markdown table.
    pub fn to_markdown(&self) -> String {
        let m = |x: f64| x / 1e6;
        let mut out = format!(
            "## manifold analyze beside a parse-only pass\n\n{} ({}): {:.1} MB, {} traces, {} spans; \
             {} rounds, each parse-only then analyze on one thread; load average {} before, {} \
             after.\n\n| pass | spans/s (wall) | spans per CPU-second | wall s | CPU s |\n|---|---:|---:|---:|---:|\n",
            self.file,
            if self.generated { "generated" } else { "given" },
            self.bytes as f64 / 1e6,
            self.traces,
            self.spans,
            self.rounds,
            self.load_before.as_deref().unwrap_or("?"),
            self.load_after.as_deref().unwrap_or("?"),
        );
        for (name, s) in [
            ("parse-only (serde IgnoredAny)", &self.parse_only),
            ("analyze (read + analysis + report)", &self.analyze),
        ] {
            let cpu = |o: Option<Spread>, f: &dyn Fn(f64) -> f64, digits: usize| match o {
                Some(x) => format!(
                    "{:.d$} [{:.d$}–{:.d$}]",
                    f(x.median),
                    f(x.min),
                    f(x.max),
                    d = digits
                ),
                None => "n/a".into(),
            };
            out.push_str(&format!(
                "| {name} | {:.2} M [{:.2}–{:.2}] | {} | {:.3} [{:.3}–{:.3}] | {} |\n",
                m(s.spans_per_s.median),
                m(s.spans_per_s.min),
                m(s.spans_per_s.max),
                cpu(s.spans_per_cpu_s, &|x| x / 1e6, 2).replace(" [", " M ["),
                s.wall_s.median,
                s.wall_s.min,
                s.wall_s.max,
                cpu(s.cpu_s, &|x| x, 3),
            ));
        }
        out.push_str(&format!(
            "\nanalyze / parse-only: **{:.2}×** [{:.2}–{:.2}] ({} time, round by round). Goals: \
             ≥ {:.0} M spans per CPU-second and ≤ {:.0}× the parse-only pass: **{}**.\n",
            self.ratio.median,
            self.ratio.min,
            self.ratio.max,
            if self.analyze.cpu_s.is_some() {
                "CPU"
            } else {
                "wall"
            },
            GOAL_SPANS_PER_CPU_S / 1e6,
            GOAL_RATIO,
            if self.goals_met { "met" } else { "not met" }
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_run_reports_both_passes_and_removes_its_file() {
        let dir = std::env::temp_dir().join(format!("mb-analyze-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let spec = AnalyzeSpec {
            spans: 2_000,
            rounds: 2,
            file: None,
            dir: dir.clone(),
        };
        let r = run(&spec, |_| {}).expect("bench");
        // 61 traces of 33 or 35 spans: at least what was asked
        assert_eq!(r.traces, 2_000u64.div_ceil(33));
        assert!(r.spans >= 2_000 && r.spans < 2_000 + 35 * 2, "{}", r.spans);
        assert!(r.generated && r.bytes > 0);
        assert!(r.parse_only.spans_per_s.median > 0.0 && r.analyze.spans_per_s.median > 0.0);
        assert!(r.ratio.median > 0.0);
        let md = r.to_markdown();
        assert!(
            md.contains("parse-only") && md.contains("analyze / parse-only"),
            "{md}"
        );
        let left: Vec<_> = std::fs::read_dir(&dir).expect("list").collect();
        assert!(left.is_empty(), "the generated file is removed: {left:?}");
        let _ = std::fs::remove_dir(&dir);
    }

    #[test]
    fn out_of_range_specs_are_refused() {
        for spec in [
            AnalyzeSpec {
                spans: 0,
                ..AnalyzeSpec::quick()
            },
            AnalyzeSpec {
                spans: MAX_SPANS + 1,
                ..AnalyzeSpec::quick()
            },
            AnalyzeSpec {
                rounds: 0,
                ..AnalyzeSpec::quick()
            },
            AnalyzeSpec {
                rounds: MAX_ROUNDS + 1,
                ..AnalyzeSpec::quick()
            },
        ] {
            assert!(matches!(run(&spec, |_| {}), Err(BenchError::Spec(_))));
        }
    }

    #[test]
    fn a_file_that_is_not_a_trace_is_an_error_naming_it() {
        let path = std::env::temp_dir().join(format!("mb-analyze-bad-{}.json", std::process::id()));
        std::fs::write(&path, b"{\"hello\": 1}").expect("write");
        let spec = AnalyzeSpec {
            file: Some(path.clone()),
            ..AnalyzeSpec::quick()
        };
        let err = run(&spec, |_| {}).expect_err("not a trace");
        assert!(err.to_string().contains("analyze"), "{err}");
        assert!(path.exists(), "a given file is left alone");
        let _ = std::fs::remove_file(&path);
    }

    /// Found by rev-cli: `manifold bench analyze --file /dev/zero` passed the size check (a
    /// device's size reads 0) and the parse-only pass read it until memory ran out.
    #[test]
    fn a_file_that_is_not_a_regular_file_is_refused() {
        for path in ["/dev/zero", "/tmp"] {
            let spec = AnalyzeSpec {
                file: Some(path.into()),
                ..AnalyzeSpec::quick()
            };
            let err = run(&spec, |_| {}).expect_err("not a regular file");
            assert!(
                err.to_string().contains("not a regular file"),
                "{path}: {err}"
            );
        }
    }
}
