//! The in-process tier's frequency sketch: sized for the byte bound, reached in one batch.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

use super::*;

/// moka sizes its TinyLFU frequency sketch 4× too small when a weigher bounds it by bytes;
/// `build_l1` sizes it itself. On the same Zipf stream the byte-bounded L1 must then hit as
/// often as moka bounded by entries (which moka sizes right), and without the workaround it
/// does not. If that second half fails, moka fixed its sizing and `size_frequency_sketch` can
/// go.
#[test]
fn the_byte_bounded_l1_gets_a_full_size_frequency_sketch() {
    use crate::sim::{byte_bounded_hit_ratio, gateway_l1_hit_ratio, moka_hit_ratio, zipf_stream};
    let params = crate::sim::HitRatioParams {
        keys: 20_000,
        capacity: 1_000,
        requests: 60_000,
        exponent: 0.99,
        seed: 1,
    };
    let stream = zipf_stream(&params).unwrap();
    let by_entries = moka_hit_ratio(&stream, params.capacity).unwrap();
    let l1 = gateway_l1_hit_ratio(&stream, params.capacity).unwrap();
    let undersized = byte_bounded_hit_ratio(&stream, params.capacity, |max_bytes| {
        build_l1_with_sketch(max_bytes, 0)
    })
    .unwrap();
    assert!(
        (l1 - by_entries).abs() < 0.01,
        "L1 {l1:.4} vs moka by entries {by_entries:.4}"
    );
    assert!(
        by_entries - undersized > 0.01,
        "without sizing the sketch: {undersized:.4} vs moka by entries {by_entries:.4}"
    );
}

#[test]
fn sketch_plans_reach_their_capacity_in_one_crossing_batch() {
    for max_bytes in [1 << 10, 1 << 20, 64 << 20, 1 << 30, 4 << 30, 7 << 30] {
        let sketch = sketch_entries(max_bytes);
        let plan = SketchPlan::new(max_bytes, sketch).expect("a plan");
        let heavies = SKETCH_HEAVIES as f64 * f64::from(plan.heavy_weight);
        // moka's formula, at the housekeeping that applies the heavies.
        let capacity = (plan.entries as f64 * (heavies / max_bytes as f64)) as u64;
        assert!(
            capacity <= sketch && capacity + 2 >= sketch,
            "{max_bytes}: {capacity} for {sketch}"
        );
        assert!(
            heavies >= max_bytes as f64 / 2.0,
            "{max_bytes}: must reach half full"
        );
        assert!(plan.entries >= SKETCH_HEAVIES && plan.entries <= MAX_SKETCH_PLACEHOLDERS);
    }
    assert_eq!(sketch_entries(64 << 20), 65_536);
    assert_eq!(sketch_entries(1), 1024);
    assert!(SketchPlan::new(64 << 20, 0).is_none());
    assert!(
        SketchPlan::new(16 << 30, sketch_entries(16 << 30)).is_none(),
        "too large"
    );
}

#[tokio::test]
async fn the_l1_starts_empty_and_usable_after_sizing_its_sketch() {
    let l1 = build_l1(1 << 20);
    l1.run_pending_tasks().await;
    assert_eq!((l1.entry_count(), l1.weighted_size()), (0, 0));
    assert_eq!(l1.iter().count(), 0);
    let response = CachedResponse::new(StatusCode::OK, Bytes::from_static(b"hello"));
    let ttl = Duration::from_secs(60);
    let entry = Arc::new(Entry::new(
        response,
        Instant::now(),
        ttl,
        Duration::ZERO,
        Duration::ZERO,
    ));
    l1.insert("k".to_owned(), entry.clone()).await;
    l1.run_pending_tasks().await;
    assert!(l1.get("k").await.is_some());
    let weight = "k".len() + entry.response.weight();
    assert_eq!(l1.weighted_size(), weight as u64);
}
