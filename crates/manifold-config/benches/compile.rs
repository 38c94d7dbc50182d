//! Plan compilation cost (paid once per config load, not per request):
//! `cargo bench -p manifold-config`.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/shop.toml");
    let source = std::fs::read_to_string(path).expect("examples/shop.toml");
    c.bench_function("compile_shop_config", |b| {
        b.iter(|| black_box(manifold_config::compile(path.as_ref(), black_box(&source)).is_ok()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
