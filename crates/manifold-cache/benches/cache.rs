//! Criterion benchmarks of the request-path pieces: an L1 hit through `get_or_fetch`, building
//! a key, parsing `Cache-Control`. (L2 against raw Redis: `examples/latency.rs`, which
//! interleaves the two in one run.)

use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::StatusCode;
use manifold_cache::{
    default_key, Cache, CacheControl, CachePolicy, CacheSettings, CachedResponse,
};

#[derive(Clone, Debug)]
struct Never;

fn l1_hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = Cache::new(CacheSettings::default()).unwrap();
    let policy = CachePolicy::new("bench", Duration::from_secs(600));
    let body = Bytes::from(vec![b'x'; 1024]);
    let fetch = move || {
        let body = body.clone();
        move || async move { Ok::<_, Never>(CachedResponse::new(StatusCode::OK, body)) }
    };
    let key = "users GET /users/42".to_owned();
    rt.block_on(cache.get_or_fetch(key.clone(), &policy, fetch()))
        .unwrap();
    c.bench_function("l1_hit_1KiB", |b| {
        b.iter(|| {
            rt.block_on(cache.get_or_fetch(key.clone(), &policy, fetch()))
                .unwrap()
        })
    });
}

fn keys_and_headers(c: &mut Criterion) {
    c.bench_function("default_key_with_vary", |b| {
        b.iter(|| {
            default_key(
                "users",
                "GET",
                std::hint::black_box("/users/42?fields=name,email"),
                &[("accept-language", "en-US"), ("x-tenant", "acme")],
            )
        })
    });
    c.bench_function("cache_control_parse", |b| {
        b.iter(|| {
            CacheControl::parse(std::hint::black_box(
                "public, max-age=60, stale-while-revalidate=30",
            ))
        })
    });
}

criterion_group!(benches, l1_hit, keys_and_headers);
criterion_main!(benches);
