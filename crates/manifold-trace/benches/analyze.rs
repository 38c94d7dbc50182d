//! Parse + critical path against a parse-only pass over the same bytes (the physical limit).
//!
//! `cargo bench -p manifold-trace --bench analyze`. The same-run comparison with the Python
//! reference implementation is `bench/compare.sh`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use manifold_trace::analysis::{Analyzer, Options};
use manifold_trace::assemble::assemble;
use manifold_trace::read::read_bytes;
use manifold_trace::{critical_path, CpGraph, Interner, Semantics, Warnings};

fn bench(c: &mut Criterion) {
    let doc = manifold_trace::synth::checkout_file(2000, 42).into_bytes();
    let mut i = Interner::new();
    let mut w = Warnings::default();
    let spans: usize = read_bytes(&doc, &mut i, &mut w)
        .expect("synthetic")
        .iter()
        .map(|t| t.spans.len())
        .sum();
    let mut g = c.benchmark_group("analyze");
    g.throughput(Throughput::Elements(spans as u64));
    g.bench_function("parse_only_serde_ignored", |b| {
        b.iter(|| serde_json::from_slice::<serde::de::IgnoredAny>(&doc).expect("json"))
    });
    g.bench_function("read_assemble_critical_path", |b| {
        b.iter(|| {
            let mut i = Interner::new();
            let mut w = Warnings::default();
            let mut n = 0usize;
            for r in read_bytes(&doc, &mut i, &mut w).expect("read") {
                if let Some(t) = assemble(r.trace_id, r.spans, &i, &mut w) {
                    let g = CpGraph::from_trace(&t, &mut w);
                    n += critical_path(&g, Semantics::JAEGER).sections.len();
                }
            }
            n
        })
    });
    g.bench_function("full_analysis", |b| {
        b.iter(|| {
            let mut an = Analyzer::new(Options::default());
            let mut w = Warnings::default();
            for r in read_bytes(&doc, &mut an.interner, &mut w).expect("read") {
                an.add_raw(r);
            }
            an.traces
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
