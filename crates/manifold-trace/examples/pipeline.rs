//! One pass of one stage over a file, for profilers (`perf record`, `valgrind --tool=callgrind`):
//! `pipeline parse|read|critical PATH` runs the parse-only pass, the streaming read into spans,
//! or the read + assembly + critical path, once, and prints the span count;
//! `pipeline gen PATH [TRACES]` writes the synthetic file that the `speed` example measures.

use manifold_trace::assemble::assemble;
use manifold_trace::read::read_file;
use manifold_trace::{critical_path, CpGraph, Interner, Semantics, Warnings};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("read", String::as_str);
    let path = std::path::PathBuf::from(args.get(2).map_or("synthetic.json", String::as_str));
    let mut i = Interner::new();
    let mut w = Warnings::default();
    let mut n = 0u64;
    let mut sum = 0i64;
    match mode {
        "gen" => {
            // `pipeline gen PATH [TRACES]`: the synthetic file that `speed` measures (seed 11)
            let traces = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(500);
            std::fs::write(&path, manifold_trace::synth::checkout_file(traces, 11)).expect("write");
        }
        "parse" => {
            let data = std::fs::read(&path).expect("read");
            serde_json::from_slice::<serde::de::IgnoredAny>(&data).expect("json");
        }
        "read" => {
            read_file(&path, &mut i, &mut w, &mut |r, _, _| {
                n += r.spans.len() as u64
            })
            .expect("read");
        }
        _ => {
            read_file(&path, &mut i, &mut w, &mut |r, i, w| {
                n += r.spans.len() as u64;
                if let Some(tr) = assemble(r.trace_id, r.spans, i, w) {
                    let g = CpGraph::from_trace(&tr, w);
                    sum += critical_path(&g, Semantics::JAEGER).sections.len() as i64;
                }
            })
            .expect("read");
        }
    }
    println!("{mode}: {n} spans, {sum} sections");
}
