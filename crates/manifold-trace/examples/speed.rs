//! Same-run speed comparison (see `bench/compare.sh`): reading + critical paths against a
//! parse-only pass over the same bytes, interleaved A B A B, medians and spread; then the
//! Python reference implementation of the same algorithm on the same file.
//!
//! `cargo run --release -p manifold-trace --example speed -- [TRACES] [RUNS]`

#![allow(clippy::disallowed_types)] // a benchmark measures wall time; no tokio runtime here

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use manifold_trace::assemble::assemble;
use manifold_trace::read::read_file;
use manifold_trace::{critical_path, CpGraph, Interner, Semantics, Warnings};

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let traces: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let runs: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let path = std::env::temp_dir().join(format!("manifold-speed-{}.json", std::process::id()));
    std::fs::write(&path, manifold_trace::synth::checkout_file(traces, 11))
        .expect("write synthetic file");
    let bytes = std::fs::metadata(&path).expect("stat").len();
    let (mut parse, mut full, mut read_only) = (Vec::new(), Vec::new(), Vec::new());
    let mut spans = 0u64;
    let mut checksum = 0i64;
    for _ in 0..runs {
        // A: parse only (read the file, run the JSON parser over every byte, build nothing)
        let t = Instant::now();
        let data = std::fs::read(&path).expect("read");
        serde_json::from_slice::<serde::de::IgnoredAny>(&data).expect("json");
        drop(data);
        parse.push(t.elapsed().as_secs_f64());
        // C: streaming read into spans only (no assembly, no critical path)
        let t = Instant::now();
        let mut i = Interner::new();
        let mut w = Warnings::default();
        let mut m = 0u64;
        read_file(&path, &mut i, &mut w, &mut |r, _, _| {
            m += r.spans.len() as u64
        })
        .expect("read");
        read_only.push(t.elapsed().as_secs_f64());
        assert!(m > 0);
        // B: streaming read + assemble + critical path
        let t = Instant::now();
        let mut i = Interner::new();
        let mut w = Warnings::default();
        let (mut n, mut sum) = (0u64, 0i64);
        read_file(&path, &mut i, &mut w, &mut |r, i, w| {
            n += r.spans.len() as u64;
            if let Some(tr) = assemble(r.trace_id, r.spans, i, w) {
                let g = CpGraph::from_trace(&tr, w);
                sum += critical_path(&g, Semantics::JAEGER)
                    .sections
                    .iter()
                    .map(|s| (s.start / 1000) % 1_000_003 + 1)
                    .sum::<i64>();
            }
        })
        .expect("read");
        full.push(t.elapsed().as_secs_f64());
        spans = n;
        checksum = sum;
    }
    let (p, p_lo, p_hi) = median(parse);
    let (f, f_lo, f_hi) = median(full);
    let (r, r_lo, r_hi) = median(read_only);
    println!(
        "file: {} traces, {spans} spans, {:.1} MB",
        traces,
        bytes as f64 / 1e6
    );
    println!("parse-only (serde IgnoredAny): median {p:.3} s [{p_lo:.3}..{p_hi:.3}] = {:.2} M spans/s, {:.0} MB/s", spans as f64 / p / 1e6, bytes as f64 / p / 1e6);
    println!("read+assemble+critical path:   median {f:.3} s [{f_lo:.3}..{f_hi:.3}] = {:.2} M spans/s ({:.2}x parse-only)", spans as f64 / f / 1e6, f / p);
    println!("read into spans only:          median {r:.3} s [{r_lo:.3}..{r_hi:.3}] = {:.2} M spans/s ({:.2}x parse-only)", spans as f64 / r / 1e6, r / p);
    println!("checksum (section starts): {checksum}");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/reference.py");
    match Command::new("python3")
        .arg(&script)
        .arg(&path)
        .arg(runs.min(3).to_string())
        .output()
    {
        Ok(out) if out.status.success() => {
            let line = String::from_utf8_lossy(&out.stdout);
            let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap_or_default();
            let py = v["total_s"].as_f64().unwrap_or(f64::NAN);
            println!(
                "python reference (json + same algorithm): median {py:.3} s = {:.2} M spans/s ({:.1}x slower than Rust); checksum {}",
                spans as f64 / py / 1e6,
                py / f,
                v["checksum"]
            );
        }
        _ => println!("python reference: skipped (python3 not available)"),
    }
    let _ = std::fs::remove_file(&path);
}
