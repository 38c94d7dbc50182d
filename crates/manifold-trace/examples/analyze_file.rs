//! `analyze_file write N PATH` writes N synthetic checkout traces; `analyze_file read PATH` runs
//! the full streaming analysis on a file and prints a summary (used to check that peak memory
//! follows the largest trace, not the file: run it under `/usr/bin/time -v`).
use manifold_trace::analysis::{Analyzer, Options};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("write") => {
            let n: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
            let path = args
                .get(3)
                .cloned()
                .unwrap_or_else(|| "synthetic.json".into());
            std::fs::write(&path, manifold_trace::synth::checkout_file(n, 5)).expect("write");
        }
        Some("read") => {
            let path = std::path::PathBuf::from(
                args.get(2)
                    .cloned()
                    .unwrap_or_else(|| "synthetic.json".into()),
            );
            let mut an = Analyzer::new(Options::default());
            manifold_trace::read::analyze_file(&mut an, &path).expect("read");
            let r = manifold_trace::report::build(&an);
            println!(
                "{} traces, {} spans, {} recommendations",
                r.traces,
                r.spans,
                r.recommendations.len()
            );
        }
        _ => eprintln!("usage: analyze_file write N PATH | analyze_file read PATH"),
    }
}
