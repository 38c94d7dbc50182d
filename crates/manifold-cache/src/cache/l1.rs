//! The in-process tier: moka bounded by bytes, its expiry, and the frequency sketch sized up front
//! so admission works from the first request.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::entry::Entry;
use crate::CachedResponse;

/// moka expires entries by its own (real) clock; that only reclaims memory. Freshness is
/// decided by this crate on Tokio's clock.
struct L1Expiry;

#[allow(clippy::disallowed_types)] // moka's trait names std's Instant; we do not use it.
impl moka::Expiry<String, Arc<Entry>> for L1Expiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<Entry>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.stale_until.saturating_duration_since(Instant::now()))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Arc<Entry>,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.stale_until.saturating_duration_since(Instant::now()))
    }
}

/// The in-process tier exactly as [`Cache::new`] builds it: moka bounded by bytes (the weigher
/// counts key, kept headers and body), entries reclaimed at the end of their stale window, and
/// a TinyLFU frequency sketch sized for [`sketch_entries`]`(max_bytes)` entries (moka would size
/// it 4× too small: see [`size_frequency_sketch`]). Shared with [`crate::sim`] so the hit-ratio
/// simulation measures the policy the gateway runs, not a look-alike.
pub(crate) fn build_l1(max_bytes: u64) -> L1 {
    build_l1_with_sketch(max_bytes, sketch_entries(max_bytes))
}

/// The in-process tier's type.
pub(crate) type L1 = moka::future::Cache<String, Arc<Entry>>;

/// The entry weight [`sketch_entries`] assumes: a small JSON answer with its key, kept headers
/// and the ~200 B per-entry overhead.
pub(crate) const TYPICAL_ENTRY_BYTES: u64 = 1024;
/// Bounds of [`sketch_entries`]: below 1024 a sketch counts too little to tell keys apart (moka's
/// own floor is 128); 4 Mi entries (a 32 MiB sketch, for a 4 GiB tier) is plenty.
pub(crate) const SKETCH_ENTRIES: std::ops::RangeInclusive<u64> = 1024..=(4 << 20);

/// How many entries the L1's frequency sketch is sized for: as many as `max_bytes` holds at
/// [`TYPICAL_ENTRY_BYTES`] each, within [`SKETCH_ENTRIES`].
pub(crate) fn sketch_entries(max_bytes: u64) -> u64 {
    (max_bytes / TYPICAL_ENTRY_BYTES).clamp(*SKETCH_ENTRIES.start(), *SKETCH_ENTRIES.end())
}

/// Heavy placeholders of [`size_frequency_sketch`]: few enough that moka applies them in one
/// housekeeping batch (it runs housekeeping itself once 64 writes are pending).
const SKETCH_HEAVIES: u64 = 60;
/// Most placeholders [`size_frequency_sketch`] inserts (a few microseconds each). Tiers too
/// large to be sized with this many (over ~7.5 GiB) keep moka's own sizing.
const MAX_SKETCH_PLACEHOLDERS: u64 = 1 << 17;
/// Attempts at sizing the sketch before leaving it to moka (an attempt fails only if the thread
/// stalled for moka's 300 ms housekeeping interval in the middle of one, and is then discarded).
const SKETCH_ATTEMPTS: u32 = 3;

/// [`build_l1`] with the frequency sketch sized for about `sketch` entries (0: moka's own sizing).
pub(crate) fn build_l1_with_sketch(max_bytes: u64, sketch: u64) -> L1 {
    if let Some(plan) = SketchPlan::new(max_bytes, sketch) {
        for _ in 0..SKETCH_ATTEMPTS {
            let (l1, (light, heavy)) = new_l1(max_bytes, Some(plan));
            if block_on(size_frequency_sketch(&l1, plan, &light, &heavy)) {
                return l1;
            }
        }
    }
    new_l1(max_bytes, None).0
}

/// The light and heavy placeholders of [`size_frequency_sketch`].
type Placeholders = (Arc<Entry>, Arc<Entry>);

/// The moka cache, with the placeholders its weigher knows (none without a `plan`).
fn new_l1(max_bytes: u64, plan: Option<SketchPlan>) -> (L1, Placeholders) {
    let builder = moka::future::Cache::builder()
        .max_capacity(max_bytes)
        .expire_after(L1Expiry);
    let weight = |key: &String, entry: &Arc<Entry>| {
        u32::try_from(key.len() + entry.response.weight()).unwrap_or(u32::MAX)
    };
    let placeholder = || {
        let response = CachedResponse::new(http::StatusCode::OK, bytes::Bytes::new());
        let hour = Duration::from_secs(3600);
        let entry = Entry::new(
            response,
            Instant::now(),
            hour,
            Duration::ZERO,
            Duration::ZERO,
        );
        Arc::new(entry)
    };
    let (light, heavy) = (placeholder(), placeholder());
    let Some(plan) = plan else {
        return (builder.weigher(weight).build(), (light, heavy));
    };
    let (l, h) = (light.clone(), heavy.clone());
    // Real entries are never these two allocations, so they always weigh what they weigh.
    let l1 = builder
        .weigher(move |key: &String, entry: &Arc<Entry>| {
            if Arc::ptr_eq(entry, &l) {
                0
            } else if Arc::ptr_eq(entry, &h) {
                plan.heavy_weight
            } else {
                weight(key, entry)
            }
        })
        .build();
    (l1, (light, heavy))
}

/// How [`size_frequency_sketch`] reaches a sketch capacity: `entries` placeholders weighing 0,
/// then [`SKETCH_HEAVIES`] of them re-inserted weighing `heavy_weight` each, so that at the
/// housekeeping that enables the sketch `entry_count · weighted_size / max_capacity = entries ·
/// SKETCH_HEAVIES · heavy_weight / max_bytes ≈ sketch`.
#[derive(Clone, Copy, Debug)]
struct SketchPlan {
    entries: u64,
    heavy_weight: u32,
}

impl SketchPlan {
    /// `None` when the capacity cannot be reached within [`MAX_SKETCH_PLACEHOLDERS`].
    fn new(max_bytes: u64, sketch: u64) -> Option<Self> {
        let target = u128::from(sketch) * u128::from(max_bytes);
        let per_entry = u128::from(SKETCH_HEAVIES) * u128::from(u32::MAX);
        let entries = target.div_ceil(per_entry).max(u128::from(SKETCH_HEAVIES));
        let entries = u64::try_from(entries).ok()?;
        let heavy_weight = target / (u128::from(entries) * u128::from(SKETCH_HEAVIES));
        let heavy_weight = u32::try_from(heavy_weight).ok()?;
        // The cache must be under half full until the heavies, which must take it over.
        let heavies_weight = u128::from(SKETCH_HEAVIES) * u128::from(heavy_weight);
        let crosses_half = max_bytes >= 2 && heavies_weight >= u128::from(max_bytes.div_ceil(2));
        (sketch > 0 && entries <= MAX_SKETCH_PLACEHOLDERS && crosses_half).then_some(Self {
            entries,
            heavy_weight,
        })
    }
}

/// Makes moka size the (still empty) cache's TinyLFU frequency sketch as `plan` says, then
/// empties the cache. False if it could not be sure it did (the cache is still usable, and
/// empty).
///
/// moka sizes the sketch once, at the first housekeeping that finds the cache at least half
/// full, and never resizes it. Without a weigher it sizes it for `max_capacity` entries; with
/// one, for `entry_count · weighted_size / max_capacity` (moka 0.12.16, `BaseCache::
/// enable_frequency_sketch`): at half full that is a quarter of the entries the cache will hold
/// (the intent is clearly `entry_count · max_capacity / weighted_size`). A sketch 4× too small
/// confuses keys more and ages (halves every counter) 4× too often: 2.6 points of hit ratio on
/// the Zipf benchmark (docs/cache.md).
///
/// So, before the cache is handed out: `plan.entries` placeholders weighing 0 (the cache stays
/// "empty", no sketch yet), then in one housekeeping batch [`SKETCH_HEAVIES`] of them re-inserted
/// weighing `plan.heavy_weight` (an update is not checked against the capacity, so the batch
/// can weigh far more than `max_bytes`, which is what lets a few dozen placeholders stand for
/// tens of thousands of entries). That housekeeping enables the sketch with exactly those
/// counts, evicts the excess, and the placeholders are then removed. Inserts do not count in
/// the sketch, so it starts clean.
async fn size_frequency_sketch(
    l1: &L1,
    plan: SketchPlan,
    light: &Arc<Entry>,
    heavy: &Arc<Entry>,
) -> bool {
    // NUL never appears in a key built by `default_key`; and nobody else uses the cache yet.
    let key = |i: u64| format!("\0sketch {i}");
    for i in 0..plan.entries {
        l1.insert(key(i), light.clone()).await;
    }
    l1.run_pending_tasks().await;
    let settled = l1.entry_count() == plan.entries && l1.weighted_size() == 0;
    for i in 0..SKETCH_HEAVIES {
        l1.insert(key(i), heavy.clone()).await;
    }
    // moka ran no housekeeping while the heavies were inserted (that would have changed these
    // counters), so the next one sees the whole batch at once.
    let one_batch = settled && l1.entry_count() == plan.entries && l1.weighted_size() == 0;
    l1.run_pending_tasks().await;
    for i in 0..plan.entries {
        l1.invalidate(&key(i)).await;
    }
    l1.run_pending_tasks().await;
    one_batch
}

/// Runs a future to completion on this thread. Only for [`size_frequency_sketch`]: moka's
/// futures there never wait for anything (nobody else holds the cache yet), so this needs no
/// runtime and blocks only for the CPU time they take.
fn block_on<F: Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return out,
            Poll::Pending => std::thread::park(),
        }
    }
}

#[cfg(test)]
mod tests;
