//! Fuzz the jaeger parser, then everything downstream of it (assembly, skew correction, critical
//! path in both semantics, re-simulation): no input may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manifold_trace::model::{Interner, Warnings};

fuzz_target!(|data: &[u8]| {
    let mut interner = Interner::new();
    let mut warnings = Warnings::default();
    if let Ok(traces) = manifold_trace::format::jaeger::parse(data, &mut interner, &mut warnings) {
        for t in traces {
            downstream(t, &interner, &mut warnings);
        }
    }
});

fn downstream(t: manifold_trace::format::RawTrace, interner: &Interner, warnings: &mut Warnings) {
    use manifold_trace::{critical_path, CpGraph, Semantics};
    let Some(mut trace) = manifold_trace::assemble::assemble(t.trace_id, t.spans, interner, warnings) else { return };
    manifold_trace::skew::correct_clock_skew(&mut trace, warnings);
    let g = CpGraph::from_trace(&trace, warnings);
    let a = critical_path(&g, Semantics::JAEGER);
    let _ = critical_path(&g, Semantics::CRISP);
    let d = manifold_trace::sim::simulate(&g, &manifold_trace::sim::Plan::identity(g.len()));
    assert_eq!(d[g.root as usize], g.duration(g.root), "identity simulation");
    let total: i64 = a.sections.iter().map(|s| s.end - s.start).sum();
    assert!(a.sections.is_empty() || total == g.duration(g.root), "sections tile the root");
}
