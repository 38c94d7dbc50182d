//! Rendering cost per request: the checkout route's call bodies, URL and the composed response,
//! rendered from compiled templates. `cargo bench -p manifold-gateway`.

use criterion::{criterion_group, criterion_main, Criterion};
use manifold_config::RouteKind;
use manifold_gateway::render::{RequestCtx, Scope};
use std::hint::black_box;

fn shop_plan() -> manifold_config::Plan {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/shop.toml");
    let config = manifold_config::load(path.as_ref()).expect("examples/shop.toml is valid");
    match config.route("checkout").map(|r| &r.kind) {
        Some(RouteKind::Compose(plan)) => plan.clone(),
        _ => panic!("no checkout route"),
    }
}

fn bench(c: &mut Criterion) {
    let plan = shop_plan();
    let req = RequestCtx {
        body: serde_json::json!({"total": 42.5, "items": [{"sku": "a-1", "qty": 2}, {"sku": "b-2", "qty": 1}], "address": "1 Main St, Springfield"}),
        ..Default::default()
    };
    let results: Vec<Option<serde_json::Value>> = vec![
        Some(serde_json::json!({"id": 1234, "status": "created", "total": 42.5})),
        Some(serde_json::json!({"status": "paid", "id": "pay_1"})),
        Some(serde_json::json!({"reserved": true})),
        Some(serde_json::json!({"label": "L-1", "carrier": "ups"})),
        Some(serde_json::json!({"id": 1234, "status": "confirmed"})),
    ];
    let scope = Scope {
        req: &req,
        results: &results,
    };
    let mut g = c.benchmark_group("render");
    g.bench_function("checkout_call_bodies_and_paths", |b| {
        b.iter(|| {
            let mut total = 0;
            for call in &plan.calls {
                let mut url = String::with_capacity(64);
                scope.render_url_part(&call.path, &mut url);
                total += url.len();
                if let Some(body) = &call.body {
                    total += serde_json::to_vec(&scope.json(body))
                        .map(|v| v.len())
                        .unwrap_or(0);
                }
            }
            black_box(total)
        })
    });
    g.bench_function("checkout_response", |b| {
        b.iter(|| black_box(serde_json::to_vec(&scope.json(&plan.response.body)).map(|v| v.len())))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
