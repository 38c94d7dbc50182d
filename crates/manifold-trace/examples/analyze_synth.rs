//! Analyze synthetic checkout traces and print the terminal report (a quick look at the output).
use manifold_trace::analysis::{Analyzer, Options, WhatIf};
use manifold_trace::read::read_bytes;
use manifold_trace::report;
use manifold_trace::Warnings;

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let doc = manifold_trace::synth::checkout_file(n, 1);
    let opts = Options {
        what_if: vec![WhatIf::parse("speedup:payments:POST /payments=50%").expect("what-if")],
        emit_plan: Some("checkout".into()),
        ..Options::default()
    };
    let mut an = Analyzer::new(opts);
    let mut w = Warnings::default();
    for r in read_bytes(doc.as_bytes(), &mut an.interner, &mut w).expect("read") {
        an.add_raw(r);
    }
    let rep = report::build(&an);
    print!("{}", report::render_text(&rep));
    print!(
        "{}",
        report::render_plan(&an, "checkout").unwrap_or_default()
    );
}
