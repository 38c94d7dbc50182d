//! What one route keeps: the last N requests (a ring), the slowest N (a min-heap on duration),
//! and the failed requests of the last `errors_for` (a time-ordered deque, also capped), with
//! one index by trace id. A request held by several of them is stored once; it leaves with the
//! last one holding it.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::context::TraceId;
use crate::span::FinishedTrace;

/// The bounds of one route's store (checked by [`super::TraceStore::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The last N requests.
    pub recent: usize,
    /// The N slowest requests since start.
    pub slowest: usize,
    /// Failed requests are kept this long …
    pub errors_for: Duration,
    /// … and at most this many.
    pub max_errors: usize,
}

#[derive(Debug)]
struct Held {
    trace: Arc<FinishedTrace>,
    /// How many of the three containers hold it (1 to 3).
    holders: u8,
}

/// One route's requests. Not synchronised: the store keeps it behind the route's mutex.
#[derive(Debug, Default)]
pub(crate) struct Kept {
    held: HashMap<u64, Held, BuildHasherDefault<SeqHasher>>,
    /// The latest held request of each trace id (a client may reuse its trace id across
    /// requests; the others are still found by a scan).
    by_id: HashMap<TraceId, u64, IdHashing>,
    recent: VecDeque<u64>,
    slowest: BinaryHeap<Reverse<(Duration, u64)>>,
    errors: VecDeque<(Instant, u64)>,
}

impl Kept {
    /// Keep `trace` (numbered `seq`, increasing) where the bounds say. A few pushes and pops,
    /// no allocation beyond the containers' amortised growth to their bounds. `now` is read
    /// only when failed requests are kept or the trace failed: the clock is what times the
    /// error window, and most requests record with none held (a read is ~100 instructions).
    pub(crate) fn record(
        &mut self,
        b: &Bounds,
        seq: u64,
        trace: Arc<FinishedTrace>,
        now: impl FnOnce() -> Instant,
    ) {
        let mut holders = 0u8;
        if b.recent > 0 {
            self.recent.push_back(seq);
            holders += 1;
            while self.recent.len() > b.recent {
                if let Some(old) = self.recent.pop_front() {
                    self.release(old);
                }
            }
        }
        if b.slowest > 0 {
            let d = trace.duration;
            if self.slowest.len() < b.slowest {
                self.slowest.push(Reverse((d, seq)));
                holders += 1;
            } else if self
                .slowest
                .peek()
                .is_some_and(|Reverse((min, _))| d > *min)
            {
                if let Some(Reverse((_, old))) = self.slowest.pop() {
                    self.release(old);
                }
                self.slowest.push(Reverse((d, seq)));
                holders += 1;
            }
        }
        let kept_failed = b.max_errors > 0 && trace.failed();
        // Nothing to expire and nothing to time: no clock.
        let now = (kept_failed || !self.errors.is_empty()).then(now);
        if let Some(now) = now {
            self.expire(b, now);
        }
        if let (true, Some(now)) = (kept_failed, now) {
            self.errors.push_back((now, seq));
            holders += 1;
            while self.errors.len() > b.max_errors {
                if let Some((_, old)) = self.errors.pop_front() {
                    self.release(old);
                }
            }
        }
        if holders > 0 {
            self.by_id.insert(trace.trace_id, seq);
            self.held.insert(seq, Held { trace, holders });
        }
    }

    /// Let failed requests older than `errors_for` go.
    pub(crate) fn expire(&mut self, b: &Bounds, now: Instant) {
        while let Some(&(at, seq)) = self.errors.front() {
            if now.saturating_duration_since(at) < b.errors_for {
                break;
            }
            self.errors.pop_front();
            self.release(seq);
        }
    }

    /// One holder lets `seq` go; the last one removes it. One lookup in each map (through
    /// their entries), not a lookup and then a removal: this runs for every request recorded
    /// once the ring is full.
    fn release(&mut self, seq: u64) {
        let Entry::Occupied(mut held) = self.held.entry(seq) else {
            return;
        };
        let h = held.get_mut();
        h.holders = h.holders.saturating_sub(1);
        if h.holders > 0 {
            return;
        }
        let gone = held.remove();
        if let Entry::Occupied(latest) = self.by_id.entry(gone.trace.trace_id) {
            if *latest.get() == seq {
                latest.remove();
            }
        }
    }

    /// Every request held, with its number.
    pub(crate) fn all(&self) -> impl Iterator<Item = (u64, &Arc<FinishedTrace>)> {
        self.held.iter().map(|(&seq, h)| (seq, &h.trace))
    }

    /// The latest held request of trace `id`.
    pub(crate) fn find(&self, id: &TraceId) -> Option<(u64, &Arc<FinishedTrace>)> {
        if let Some(seq) = self.by_id.get(id) {
            if let Some(h) = self.held.get(seq) {
                return Some((*seq, &h.trace));
            }
        }
        self.all()
            .filter(|(_, t)| t.trace_id == *id)
            .max_by_key(|(seq, _)| *seq)
    }

    /// Requests held (each once).
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    /// The sizes of the ring, the slowest heap and the error deque.
    #[cfg(test)]
    pub(crate) fn sizes_with_index(&self) -> (usize, usize) {
        (self.held.len(), self.by_id.len())
    }

    /// The sizes of the ring, the slowest heap and the error deque.
    #[cfg(test)]
    pub(crate) fn sizes(&self) -> (usize, usize, usize) {
        (self.recent.len(), self.slowest.len(), self.errors.len())
    }
}

/// The hasher of the store's own sequence numbers. Every request kept is inserted and later
/// removed by its number, and SipHash (std's default, made for keys an attacker chooses) was
/// a third of the store's cost per request; these numbers are the store's, increasing, never a
/// client's, so one multiply spreads them (Fibonacci hashing: good high bits, and distinct low
/// bits for consecutive numbers).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SeqHasher(u64);

impl Hasher for SeqHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The hashing of trace ids, which a client chooses (its `traceparent`): keyed by a random
/// per-store secret, so a client cannot aim its ids at one bucket, and a folded 64×64→128-bit
/// multiply per 8 bytes (foldhash's construction) instead of SipHash's rounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdHashing {
    key: [u64; 2],
}

impl Default for IdHashing {
    fn default() -> Self {
        IdHashing {
            // Odd, so the multiply never collapses to zero.
            key: [rand::random(), rand::random::<u64>() | 1],
        }
    }
}

impl BuildHasher for IdHashing {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher {
            state: self.key[0],
            key: self.key[1],
        }
    }
}

/// See [`IdHashing`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdHasher {
    state: u64,
    key: u64,
}

impl IdHasher {
    fn mix(&mut self, v: u64) {
        let p = u128::from(self.state ^ v) * u128::from(self.key);
        self.state = (p as u64) ^ ((p >> 64) as u64);
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // One more round, so the last word's bits reach the top bits the table reads.
        let p = u128::from(self.state) * u128::from(self.key.rotate_left(32) | 1);
        (p as u64) ^ ((p >> 64) as u64)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            let mut w = [0u8; 8];
            w[..tail.len()].copy_from_slice(tail);
            // The tail's length too: "a" and "a\0" must not hash alike.
            self.mix(u64::from_le_bytes(w) ^ ((tail.len() as u64) << 59));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }
}

#[cfg(test)]
mod hash_tests {
    use super::*;
    use std::collections::HashSet;
    use std::hash::Hash;

    fn hash_of<B: BuildHasher, T: Hash>(b: &B, v: &T) -> u64 {
        b.hash_one(v)
    }

    #[test]
    fn sequence_numbers_hash_apart_in_the_bits_the_table_reads() {
        let b = BuildHasherDefault::<SeqHasher>::default();
        let n = 4096u64;
        let hashes: HashSet<u64> = (0..n).map(|s| hash_of(&b, &s)).collect();
        assert_eq!(hashes.len() as u64, n);
        // Low bits pick the bucket: consecutive numbers fill a table of their count.
        let low: HashSet<u64> = hashes.iter().map(|h| h & (n - 1)).collect();
        assert_eq!(low.len() as u64, n);
        // The top 7 bits are the control byte: not all alike.
        let top: HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(top.len() > 64, "{} distinct control bytes", top.len());
    }

    #[test]
    fn trace_ids_hash_by_a_secret_key_and_every_byte_counts() {
        let a = IdHashing::default();
        let b = IdHashing::default();
        let id = TraceId([7; 16]);
        assert_eq!(hash_of(&a, &id), hash_of(&a, &id));
        assert_ne!(hash_of(&a, &id), hash_of(&b, &id), "two stores, two keys");
        let mut seen = HashSet::new();
        seen.insert(hash_of(&a, &id));
        for i in 0..16 {
            for bit in 0..8 {
                let mut other = id;
                other.0[i] ^= 1 << bit;
                assert!(seen.insert(hash_of(&a, &other)), "byte {i} bit {bit}");
            }
        }
        // Strings' tails: a shorter input padded with zeros is not the same input.
        let mut h1 = a.build_hasher();
        h1.write(b"a");
        let mut h2 = a.build_hasher();
        h2.write(b"a\0");
        assert_ne!(h1.finish(), h2.finish());
    }

    #[test]
    fn the_index_and_the_held_map_shrink_as_requests_leave() {
        let b = Bounds {
            recent: 3,
            slowest: 0,
            errors_for: Duration::from_secs(60),
            max_errors: 0,
        };
        let mut k = Kept::default();
        let now = Instant::now();
        for seq in 0..100u8 {
            k.record(
                &b,
                u64::from(seq),
                super::super::tests::trace(seq, 1, 200, vec![]),
                || now,
            );
        }
        assert_eq!(k.sizes_with_index(), (3, 3));
        let last = TraceId({
            let mut t = [0u8; 16];
            t[0] = 1;
            t[15] = 99;
            t
        });
        assert_eq!(k.find(&last).map(|(seq, _)| seq), Some(99));
    }
}
