//! Fuzz format detection and the streaming scanner over whole files, then the full analysis.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manifold_trace::analysis::{Analyzer, Options};
use manifold_trace::model::Warnings;

fuzz_target!(|data: &[u8]| {
    let mut an = Analyzer::new(Options { emit_plan: Some("a".into()), ..Options::default() });
    let mut w = Warnings::default();
    if let Ok(traces) = manifold_trace::read::read_bytes(data, &mut an.interner, &mut w) {
        for t in traces {
            an.add_raw(t);
        }
        let r = manifold_trace::report::build(&an);
        let _ = manifold_trace::report::render_text(&r);
        let _ = manifold_trace::report::render_html(&an, &r);
        let _ = manifold_trace::report::render_plan(&an, "a");
    }
});
