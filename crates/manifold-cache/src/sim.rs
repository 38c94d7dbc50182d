//! Hit-ratio simulator: how close does the L1 admission/eviction policy come to the best any
//! cache of the same size could do on the same key stream?
//!
//! The stream is Zipf-distributed (a few keys are hot, a long tail is cold), which is what real
//! read traffic looks like. Every policy sees the exact same stream:
//!
//! * `gateway_l1` — the L1 exactly as [`crate::Cache::new`] builds it (moka 0.12 bounded by
//!   bytes through a weigher, same expiry, its frequency sketch sized at construction), fed
//!   `get` then `insert` on a miss as the gateway does. This is the figure the goal is
//!   about;
//! * `moka` — moka 0.12 bounded by entry count (no weigher): *not* what the gateway runs, kept as
//!   the reference for it. moka sizes its TinyLFU frequency sketch from `max_capacity` when there
//!   is no weigher, but with one from about a quarter of the entries the cache will hold (a
//!   sketch ~4× smaller that also ages ~4× sooner: ~2.6 points here). The gateway's L1 works
//!   around that (see `size_frequency_sketch` in `cache.rs`), so the two should agree;
//! * `quick_cache` — the alternative CRATES.md names (a CLOCK-Pro variant);
//! * `lru` — the baseline every cache is compared with (a plain least-recently-used list);
//! * `optimum` — Bélády's MIN computed offline with knowledge of the future: on a miss, admit the
//!   key only if it is needed again sooner than the cached key needed latest, and evict that one.
//!   No online policy can beat it, so it is the ceiling. (`optimum_without_bypass` is the
//!   textbook variant that must admit every miss: a lower ceiling, for reference.)
//! * `lfu_online` — a perfect online LFU: exact counts of every key since the start (unbounded
//!   memory, no aging), a miss admitted only if its count beats the least counted cached key.
//!   On an independent Zipf stream the best a policy can do without seeing the future is to keep
//!   the keys seen most often so far, so this is (near) the ceiling for *online* policies; TinyLFU
//!   variants approximate it with a bounded sketch.
//! * `lfu_static` — the oracle static bound: the `capacity` keys requested most in the whole
//!   stream, each admitted on first sight and kept (its first request is a compulsory miss).
//!
//! `manifold bench cache` prints these figures; the goal (issue 4, point 8) is the gateway's L1
//! within five points of the optimum.

use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde::Serialize;

use crate::CacheError;

/// What to simulate. The defaults are issue 4's point 8: Zipf(0.99) over 100,000 keys, a cache
/// holding 10,000 of them, a million requests.
#[derive(Clone, Debug, Serialize)]
pub struct HitRatioParams {
    /// Distinct keys in the key space.
    pub keys: u64,
    /// Entries the cache holds.
    pub capacity: u64,
    /// Requests in the stream.
    pub requests: u64,
    /// Zipf exponent `s` (0.99 is the usual "web traffic" skew).
    pub exponent: f64,
    /// Seed for the stream, so two runs (and two policies) see the same keys.
    pub seed: u64,
}

impl Default for HitRatioParams {
    fn default() -> Self {
        Self {
            keys: 100_000,
            capacity: 10_000,
            requests: 1_000_000,
            exponent: 0.99,
            seed: 0x5eed,
        }
    }
}

/// Hit ratios in `[0, 1]` of each policy on one stream.
#[derive(Clone, Debug, Serialize)]
pub struct HitRatioReport {
    /// The parameters the stream was drawn with.
    pub params: HitRatioParams,
    /// The gateway's L1 exactly as [`crate::Cache::new`] builds it (moka bounded by bytes, its
    /// frequency sketch sized at construction).
    pub gateway_l1: f64,
    /// moka 0.12 bounded by entry count, without a weigher: not the gateway's configuration, but
    /// what its L1 should match.
    pub moka: f64,
    /// quick_cache 0.7, for comparison.
    pub quick_cache: f64,
    /// Least recently used: the baseline.
    pub lru: f64,
    /// Bélády's offline optimum (with bypass): the ceiling.
    pub optimum: f64,
    /// Bélády's MIN without bypass (every miss is admitted, as in demand paging): the optimum
    /// for a cache that must keep what it fetched.
    pub optimum_without_bypass: f64,
    /// Perfect online LFU (exact counts, no aging, admission by count): about the ceiling for
    /// online policies on this stream.
    pub lfu_online: f64,
    /// Static oracle LFU: the `capacity` most requested keys of the whole stream, each missed
    /// once.
    pub lfu_static: f64,
}

/// Largest stream the simulator accepts: the offline optimum keeps one `u32` per request.
pub const MAX_REQUESTS: u64 = 50_000_000;

/// Draws the key stream: `requests` keys in `0..keys`, Zipf-distributed, deterministic per seed.
pub fn zipf_stream(params: &HitRatioParams) -> Result<Vec<u32>, CacheError> {
    validate(params)?;
    let zipf = Zipf::new(params.keys as f64, params.exponent)
        .map_err(|err| CacheError::Input(format!("zipf distribution: {err}")))?;
    let mut rng = StdRng::seed_from_u64(params.seed);
    let len = usize::try_from(params.requests)
        .map_err(|_| CacheError::Input("too many requests for this platform".into()))?;
    let mut out = Vec::with_capacity(len);
    for _ in 0..len {
        // Zipf yields ranks 1..=keys as floats; rank 1 is the hottest key.
        let rank = zipf.sample(&mut rng) as u64;
        let key = rank.saturating_sub(1).min(params.keys - 1);
        out.push(key as u32);
    }
    Ok(out)
}

fn validate(params: &HitRatioParams) -> Result<(), CacheError> {
    if params.keys == 0 || params.keys > u64::from(u32::MAX) {
        return Err(CacheError::Input(format!(
            "keys must be in 1..=2^32-1, got {}",
            params.keys
        )));
    }
    if params.capacity == 0 {
        return Err(CacheError::Input("capacity must be at least 1".into()));
    }
    if params.requests == 0 || params.requests > MAX_REQUESTS {
        return Err(CacheError::Input(format!(
            "requests must be in 1..={MAX_REQUESTS}, got {}",
            params.requests
        )));
    }
    if !(params.exponent > 0.0 && params.exponent.is_finite()) {
        return Err(CacheError::Input(format!(
            "exponent must be > 0, got {}",
            params.exponent
        )));
    }
    Ok(())
}

/// Runs every policy (and the two LFU bounds) on one stream and reports their hit ratios.
///
/// CPU-bound (about a second per policy for the default million requests in a release build) and
/// synchronous: from async code call it inside `tokio::task::spawn_blocking`. It builds its own
/// small runtime to drive moka's async API, so it must not run on a runtime thread.
pub fn simulate_hit_ratios(params: &HitRatioParams) -> Result<HitRatioReport, CacheError> {
    let stream = zipf_stream(params)?;
    let capacity = params.capacity;
    Ok(HitRatioReport {
        params: params.clone(),
        gateway_l1: gateway_l1_hit_ratio(&stream, capacity)?,
        moka: moka_hit_ratio(&stream, capacity)?,
        quick_cache: quick_cache_hit_ratio(&stream, capacity)?,
        lru: lru_hit_ratio(&stream, params.keys, capacity),
        optimum: belady_hit_ratio(&stream, params.keys, capacity),
        optimum_without_bypass: belady_demand_hit_ratio(&stream, params.keys, capacity),
        lfu_online: lfu_online_hit_ratio(&stream, params.keys, capacity),
        lfu_static: lfu_static_hit_ratio(&stream, params.keys, capacity),
    })
}

fn ratio(hits: u64, total: usize) -> f64 {
    if total == 0 {
        0.0
    } else {
        hits as f64 / total as f64
    }
}

/// Bytes each simulated L1 entry weighs (key + kept headers + body + overhead): a round 1 KiB,
/// the entry size the L1 sizes its frequency sketch for, so its sketch is sized for the entries
/// it holds, as moka's is when bounded by entries. Lighter entries would leave it a smaller
/// sketch than that (at 512 B, half the size: 1.3 points less on the default stream); heavier
/// ones a larger one, which ages more slowly (2× to 16×: 0.3 points more on this stationary
/// stream). See docs/cache.md.
pub const SIM_ENTRY_BYTES: usize = 1024;

/// Hit ratio of the gateway's L1 (built by the same function as [`crate::Cache::new`], bounded
/// by bytes) sized to hold `capacity` entries of [`SIM_ENTRY_BYTES`], fed the way
/// [`crate::Cache::get_or_fetch`] feeds it: a `get`, and on a miss an `insert` of the fetched
/// entry (fresh for an hour, so nothing expires during the run).
pub fn gateway_l1_hit_ratio(stream: &[u32], capacity: u64) -> Result<f64, CacheError> {
    byte_bounded_hit_ratio(stream, capacity, crate::cache::build_l1)
}

/// [`gateway_l1_hit_ratio`] with the L1 built by `build` from its byte bound (for tests of the
/// L1's construction).
pub(crate) fn byte_bounded_hit_ratio(
    stream: &[u32],
    capacity: u64,
    build: impl FnOnce(u64) -> crate::cache::L1,
) -> Result<f64, CacheError> {
    use crate::entry::Entry;
    use std::sync::Arc;
    use std::time::Duration;
    const KEY_LEN: usize = 10; // u32::MAX has 10 digits
    let body_len = SIM_ENTRY_BYTES
        - KEY_LEN
        - crate::CachedResponse::new(http::StatusCode::OK, bytes::Bytes::new()).weight();
    let body = bytes::Bytes::from(vec![b'x'; body_len]);
    let max_bytes = capacity
        .checked_mul(SIM_ENTRY_BYTES as u64)
        .ok_or_else(|| CacheError::Input("capacity too large".into()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|err| CacheError::Io(format!("building the simulator runtime: {err}")))?;
    let hits = runtime.block_on(async {
        let l1 = build(max_bytes);
        let mut hits = 0u64;
        for &key in stream {
            let key = format!("{key:0KEY_LEN$}");
            if l1.get(&key).await.is_some() {
                hits += 1;
            } else {
                let response = crate::CachedResponse::new(http::StatusCode::OK, body.clone());
                let now = tokio::time::Instant::now();
                let hour = Duration::from_secs(3600);
                let entry = Entry::new(response, now, hour, Duration::ZERO, Duration::ZERO);
                l1.insert(key, Arc::new(entry)).await;
            }
        }
        hits
    });
    Ok(ratio(hits, stream.len()))
}

/// Perfect online LFU holding `capacity` entries: exact request counts of every key so far, no
/// aging; a missed key is admitted only if its count beats the least counted cached key's
/// (which it then evicts).
pub fn lfu_online_hit_ratio(stream: &[u32], keys: u64, capacity: u64) -> f64 {
    use std::collections::BTreeSet;
    let mut count = vec![0u32; keys as usize];
    let mut cached = vec![false; keys as usize];
    let mut by_count: BTreeSet<(u32, u32)> = BTreeSet::new();
    let mut hits = 0u64;
    for &key in stream {
        let k = key as usize;
        if cached[k] {
            hits += 1;
            by_count.remove(&(count[k], key));
            count[k] += 1;
            by_count.insert((count[k], key));
            continue;
        }
        count[k] += 1;
        if (by_count.len() as u64) < capacity {
            by_count.insert((count[k], key));
            cached[k] = true;
            continue;
        }
        if let Some(&(least, victim)) = by_count.first() {
            if count[k] > least {
                by_count.remove(&(least, victim));
                cached[victim as usize] = false;
                by_count.insert((count[k], key));
                cached[k] = true;
            }
        }
    }
    ratio(hits, stream.len())
}

/// Static oracle LFU: the `capacity` keys requested most over the whole stream, each one missed
/// on its first request and kept from then on.
pub fn lfu_static_hit_ratio(stream: &[u32], keys: u64, capacity: u64) -> f64 {
    let mut count = vec![0u64; keys as usize];
    for &key in stream {
        count[key as usize] += 1;
    }
    count.sort_unstable_by(|a, b| b.cmp(a));
    let top = &count[..(capacity.min(keys) as usize)];
    let requests: u64 = top.iter().sum();
    let first_sights = top.iter().filter(|&&c| c > 0).count() as u64;
    ratio(requests - first_sights, stream.len())
}

/// Hit ratio of moka's `future::Cache` holding `capacity` entries, bounded by entry count (no
/// weigher, unlike the gateway's L1: see [`gateway_l1_hit_ratio`]).
pub fn moka_hit_ratio(stream: &[u32], capacity: u64) -> Result<f64, CacheError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|err| CacheError::Io(format!("building the simulator runtime: {err}")))?;
    let hits = runtime.block_on(async {
        let cache: moka::future::Cache<u32, ()> = moka::future::Cache::new(capacity);
        let mut hits = 0u64;
        for &key in stream {
            if cache.get(&key).await.is_some() {
                hits += 1;
            } else {
                cache.insert(key, ()).await;
            }
        }
        hits
    });
    Ok(ratio(hits, stream.len()))
}

/// Hit ratio of quick_cache's unsync cache holding `capacity` entries.
pub fn quick_cache_hit_ratio(stream: &[u32], capacity: u64) -> Result<f64, CacheError> {
    let capacity = usize::try_from(capacity)
        .map_err(|_| CacheError::Input("capacity too large for this platform".into()))?;
    let mut cache: quick_cache::unsync::Cache<u32, ()> = quick_cache::unsync::Cache::new(capacity);
    let mut hits = 0u64;
    for &key in stream {
        if cache.get(&key).is_some() {
            hits += 1;
        } else {
            cache.insert(key, ());
        }
    }
    Ok(ratio(hits, stream.len()))
}

const NIL: u32 = u32::MAX;

/// Hit ratio of a plain LRU holding `capacity` entries, over keys in `0..keys`.
pub fn lru_hit_ratio(stream: &[u32], keys: u64, capacity: u64) -> f64 {
    // An intrusive doubly linked list over key indexes: O(1) per access, no hashing.
    let n = keys as usize;
    let mut prev = vec![NIL; n];
    let mut next = vec![NIL; n];
    let mut cached = vec![false; n];
    let (mut head, mut tail) = (NIL, NIL); // head = most recent
    let mut size = 0u64;
    let mut hits = 0u64;
    let unlink = |k: u32, prev: &mut [u32], next: &mut [u32], head: &mut u32, tail: &mut u32| {
        let (p, nx) = (prev[k as usize], next[k as usize]);
        if p == NIL {
            *head = nx;
        } else {
            next[p as usize] = nx;
        }
        if nx == NIL {
            *tail = p;
        } else {
            prev[nx as usize] = p;
        }
    };
    for &key in stream {
        let k = key as usize;
        if cached[k] {
            hits += 1;
            unlink(key, &mut prev, &mut next, &mut head, &mut tail);
        } else {
            if size == capacity {
                let victim = tail;
                unlink(victim, &mut prev, &mut next, &mut head, &mut tail);
                cached[victim as usize] = false;
            } else {
                size += 1;
            }
            cached[k] = true;
        }
        // push front
        prev[k] = NIL;
        next[k] = head;
        if head != NIL {
            prev[head as usize] = key;
        }
        head = key;
        if tail == NIL {
            tail = key;
        }
    }
    ratio(hits, stream.len())
}

/// Bélády's optimum (MIN with bypass) for a cache of `capacity` entries: computed offline from
/// the whole stream, the ceiling for every online policy.
pub fn belady_hit_ratio(stream: &[u32], keys: u64, capacity: u64) -> f64 {
    use std::collections::BinaryHeap;
    const NEVER: u32 = u32::MAX;
    // next_use[i]: the index of the next request for stream[i]'s key, or NEVER.
    let mut next_use = vec![NEVER; stream.len()];
    let mut last_seen = vec![NEVER; keys as usize];
    for (i, &key) in stream.iter().enumerate().rev() {
        next_use[i] = last_seen[key as usize];
        last_seen[key as usize] = i as u32;
    }
    // For each cached key, when it is needed next (NEVER if not cached); a max-heap of
    // (next use, key) with lazy deletion finds the key needed latest.
    let mut cached_next = vec![NEVER; keys as usize];
    let mut is_cached = vec![false; keys as usize];
    let mut heap: BinaryHeap<(u32, u32)> = BinaryHeap::new();
    let mut size = 0u64;
    let mut hits = 0u64;
    for (i, &key) in stream.iter().enumerate() {
        let k = key as usize;
        let nu = next_use[i];
        if is_cached[k] {
            hits += 1;
            if nu == NEVER {
                // Never needed again: dropping it now frees room at no cost.
                is_cached[k] = false;
                size -= 1;
            } else {
                cached_next[k] = nu;
                heap.push((nu, key));
            }
            continue;
        }
        if nu == NEVER {
            continue; // bypass: admitting it cannot produce a hit
        }
        if size < capacity {
            is_cached[k] = true;
            cached_next[k] = nu;
            heap.push((nu, key));
            size += 1;
            continue;
        }
        // Find the cached key needed latest (skipping stale heap entries).
        while let Some(&(top_nu, top_key)) = heap.peek() {
            if is_cached[top_key as usize] && cached_next[top_key as usize] == top_nu {
                break;
            }
            heap.pop();
        }
        if let Some(&(top_nu, top_key)) = heap.peek() {
            if top_nu > nu {
                heap.pop();
                is_cached[top_key as usize] = false;
                is_cached[k] = true;
                cached_next[k] = nu;
                heap.push((nu, key));
            }
        }
    }
    ratio(hits, stream.len())
}

/// Bélády's MIN without bypass: every missed key is admitted, evicting the cached key needed
/// latest (possibly never).
pub fn belady_demand_hit_ratio(stream: &[u32], keys: u64, capacity: u64) -> f64 {
    use std::collections::BinaryHeap;
    const NEVER: u32 = u32::MAX;
    let mut next_use = vec![NEVER; stream.len()];
    let mut last_seen = vec![NEVER; keys as usize];
    for (i, &key) in stream.iter().enumerate().rev() {
        next_use[i] = last_seen[key as usize];
        last_seen[key as usize] = i as u32;
    }
    let mut cached_next = vec![NEVER; keys as usize];
    let mut is_cached = vec![false; keys as usize];
    // (next use, key); NEVER sorts last-needed, so never-again keys go first.
    let mut heap: BinaryHeap<(u32, u32)> = BinaryHeap::new();
    let mut size = 0u64;
    let mut hits = 0u64;
    for (i, &key) in stream.iter().enumerate() {
        let k = key as usize;
        let nu = next_use[i];
        if is_cached[k] {
            hits += 1;
        } else if size < capacity {
            is_cached[k] = true;
            size += 1;
        } else {
            while let Some((top_nu, top_key)) = heap.pop() {
                if is_cached[top_key as usize] && cached_next[top_key as usize] == top_nu {
                    is_cached[top_key as usize] = false;
                    break;
                }
            }
            is_cached[k] = true;
        }
        cached_next[k] = nu;
        heap.push((nu, key));
    }
    ratio(hits, stream.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> HitRatioParams {
        HitRatioParams {
            keys: 1_000,
            capacity: 100,
            requests: 50_000,
            exponent: 0.99,
            seed: 7,
        }
    }

    #[test]
    fn stream_is_deterministic_and_skewed() {
        let a = zipf_stream(&small()).unwrap();
        let b = zipf_stream(&small()).unwrap();
        assert_eq!(a, b);
        assert!(a.iter().all(|&k| k < 1_000));
        let hottest = a.iter().filter(|&&k| k == 0).count();
        let cold = a.iter().filter(|&&k| k == 999).count();
        assert!(hottest > 20 * cold.max(1), "rank 1 must dominate rank 1000");
    }

    #[test]
    fn lru_on_a_cyclic_stream_misses_everything_and_optimum_does_not() {
        // The classic LRU worst case: cycling over capacity+1 keys.
        let stream: Vec<u32> = (0..1_000).map(|i| (i % 11) as u32).collect();
        assert_eq!(lru_hit_ratio(&stream, 11, 10), 0.0);
        let opt = belady_hit_ratio(&stream, 11, 10);
        assert!(opt > 0.8, "optimum {opt}");
        let demand = belady_demand_hit_ratio(&stream, 11, 10);
        assert!(demand > 0.8 && demand <= opt, "demand optimum {demand}");
    }

    #[test]
    fn lru_keeps_the_recent_keys() {
        // Capacity 2. a b a b c a: c evicts a (least recent), so the last a misses: 2 hits.
        // a b b a c a: c evicts b instead, so the last a hits: 3 hits.
        assert_eq!(lru_hit_ratio(&[0, 1, 0, 1, 2, 0], 3, 2), 2.0 / 6.0);
        assert_eq!(lru_hit_ratio(&[0, 1, 1, 0, 2, 0], 3, 2), 3.0 / 6.0);
    }

    #[test]
    fn optimum_bounds_every_policy() {
        let p = small();
        let r = simulate_hit_ratios(&p).unwrap();
        assert!(r.optimum_without_bypass <= r.optimum + 1e-9);
        for (name, v) in [
            ("optimum_without_bypass", r.optimum_without_bypass),
            ("gateway_l1", r.gateway_l1),
            ("moka", r.moka),
            ("lfu_online", r.lfu_online),
            ("lfu_static", r.lfu_static),
            ("quick_cache", r.quick_cache),
            ("lru", r.lru),
        ] {
            assert!(
                v <= r.optimum + 1e-9,
                "{name} {v} beat the optimum {}",
                r.optimum
            );
            assert!(v > 0.0, "{name} never hit");
        }
        // With the whole key space fitting, everything after the first sight is a hit.
        let all = HitRatioParams {
            capacity: 1_000,
            ..p
        };
        let stream = zipf_stream(&all).unwrap();
        let distinct = stream
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len();
        let best = 1.0 - distinct as f64 / stream.len() as f64;
        assert!((lru_hit_ratio(&stream, 1_000, 1_000) - best).abs() < 1e-12);
        assert!((belady_hit_ratio(&stream, 1_000, 1_000) - best).abs() < 1e-12);
        assert!((belady_demand_hit_ratio(&stream, 1_000, 1_000) - best).abs() < 1e-12);
    }

    #[test]
    fn bad_parameters_are_input_errors() {
        for p in [
            HitRatioParams { keys: 0, ..small() },
            HitRatioParams {
                capacity: 0,
                ..small()
            },
            HitRatioParams {
                requests: 0,
                ..small()
            },
            HitRatioParams {
                exponent: -1.0,
                ..small()
            },
        ] {
            assert!(matches!(simulate_hit_ratios(&p), Err(CacheError::Input(_))));
        }
    }
}
