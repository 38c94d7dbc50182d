//! One pass of one stage over a file, for profilers (`perf record`, `valgrind --tool=callgrind`):
//! `pipeline parse|read|critical|analyze PATH` runs the parse-only pass, the streaming read into
//! spans, the read + assembly + critical path, or the whole of `manifold analyze` (the analysis
//! and the report), once, and prints the span count;
//! `pipeline gen PATH [TRACES]` writes the synthetic file that the `speed` example measures;
//! `pipeline report PATH [ROUTE [WHAT-IF…]]` prints everything `manifold analyze` can write for the file
//! (the JSON report, the text report, the HTML page and the route plan), to compare two builds.

use manifold_trace::analysis::{Analyzer, Options};
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
        "analyze" => {
            let mut an = Analyzer::new(Options::default());
            manifold_trace::read::analyze_file(&mut an, &path).expect("read");
            let rep = manifold_trace::report::build(&an);
            n = rep.spans;
            sum = rep.recommendations.len() as i64;
        }
        "report" => {
            let route = args.get(3).cloned().filter(|r| !r.is_empty());
            let what_if = args
                .iter()
                .skip(4)
                .map(|w| manifold_trace::analysis::WhatIf::parse(w).expect("--what-if"))
                .collect();
            let mut an = Analyzer::new(Options {
                emit_plan: route.clone(),
                what_if,
                ..Options::default()
            });
            if let Err(e) = manifold_trace::read::analyze_file(&mut an, &path) {
                println!("error: {e}");
                return;
            }
            let rep = manifold_trace::report::build(&an);
            println!("{}", serde_json::to_string_pretty(&rep).expect("json"));
            println!("{}", manifold_trace::report::render_text(&rep));
            println!("{}", manifold_trace::report::render_html(&an, &rep));
            if let Some(r) = route {
                println!("{:?}", manifold_trace::report::render_plan(&an, &r));
            }
            return;
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
