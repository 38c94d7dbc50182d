//! Per-thread shards for the metrics every request records.
//!
//! Why: a counter or histogram bucket that every worker thread adds to is one cache line that
//! moves between cores on each add (an atomic read-modify-write takes the line exclusive), so
//! two workers recording the same route's latency stall on each other. Each metric here keeps
//! [`SHARDS`] copies of its atomics, each on cache lines of its own; a thread adds to the shard
//! its index names (handed out round-robin on its first record), and a read sums the shards.
//! Runtime worker threads start first and take the first indices, so up to [`SHARDS`] of them
//! never share a line; later threads wrap around and may share one (slower, never wrong).
//!
//! Reads stay monotone: each shard only grows, so a later sum is never below an earlier one.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Shards per metric. A power of two, at least the worker threads of a typical deployment; a
/// sharded histogram is `SHARDS` × 256 bytes.
pub(crate) const SHARDS: usize = 8;

/// The next thread index to hand out.
static NEXT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard, `usize::MAX` until its first record.
    static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's shard index, below [`SHARDS`].
#[inline]
pub(crate) fn index() -> usize {
    INDEX.with(|i| {
        let v = i.get();
        if v < SHARDS {
            v
        } else {
            let n = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
            i.set(n);
            n
        }
    })
}

/// `T` alone on its cache lines: 128 bytes, as the adjacent-line prefetcher of x86 cores pulls
/// lines in pairs (crossbeam's `CachePadded` makes the same choice).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_its_index_and_threads_spread() {
        let mine = index();
        assert!(mine < SHARDS);
        assert_eq!(index(), mine, "stable within a thread");
        let others: Vec<usize> = (0..SHARDS)
            .map(|_| std::thread::spawn(index).join().unwrap_or(usize::MAX))
            .collect();
        assert!(others.iter().all(|&i| i < SHARDS));
        // Round-robin: SHARDS threads started one after another cover every shard, whatever
        // other tests took meanwhile, unless they interleave; at least two distinct ones.
        let mut distinct = others.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() >= 2, "{others:?}");
    }

    #[test]
    fn padded_values_do_not_share_a_line() {
        assert_eq!(std::mem::align_of::<Padded<u64>>(), 128);
        assert_eq!(std::mem::size_of::<[Padded<u64>; 2]>(), 256);
    }
}
