//! The Memcached tier: the same role as Redis (shared by every replica, entries expire, a lock
//! per key for coalescing across replicas), spread over several servers by consistent hashing
//! ([`ring`]).
//!
//! What memcached lacks, and how this tier makes up for it:
//!
//! * **No scan, so no purge by prefix.** Each server holds *generation* values: one for the
//!   whole cache (`{prefix}g`) and one per namespace, the key's first word (`{prefix}n:users`
//!   for `users GET /users/1`). An entry records the generations current when it was written and
//!   is valid only while both still match. A purge writes new random generations on every
//!   server: a prefix with a space (`users `, `users GET /x`) renews its namespace, an empty one
//!   or one without a space (which could be the start of several names) renews the whole cache.
//!   So a purge invalidates a superset of what it names in this tier, never less. Generations
//!   are random, not counters: one evicted or lost (restart) cannot come back to an old value,
//!   it only invalidates more.
//! * **Keys are at most 250 bytes of printable ASCII.** Cache keys contain spaces, so a key is
//!   written as is only when it is safe and short, and as `#` + its SHA-256 otherwise.
//! * **TTLs are whole seconds (and over 30 days means a date).** An entry's exact expiry
//!   (wall-clock milliseconds) is stored with it and decides freshness; memcached's own expiry
//!   is rounded up to the second and capped at 30 days. Replicas' clocks must agree (NTP) for
//!   freshness to agree to the millisecond.
//! * **Items are at most 1 MiB by default** (`-I`). Larger entries are not written, and counted
//!   (`too_large`).
//!
//! A server that errs or times out is marked down for `retry_after` (its keys skip the tier);
//! its keys are **not** moved to another server, so every replica keeps the same mapping.

mod conn;
mod ring;
mod settings;
pub(crate) mod watch;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use self::conn::{Batch, Reply, Server};
use self::ring::Ring;
pub use self::settings::*;
use super::{Health, Lock};
use crate::entry::Entry;
use crate::stats::{L2Counters, ServerState};
use crate::CacheError;

/// memcached's key length limit.
const MAX_KEY: usize = 250;
/// Bytes memcached spends per item besides key and value (header, CAS, suffix), rounded up.
const ITEM_OVERHEAD: usize = 64;
/// Our header before the entry: expiry ms, cache generation, namespace generation.
const VALUE_HEADER: usize = 24;
/// A TTL above this many seconds is read by memcached as a Unix date.
const MAX_RELATIVE_TTL: u64 = 30 * 24 * 3600;
/// Per-server bound for administration (purge).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct MemcachedTier {
    servers: Vec<Arc<Server>>,
    ring: Ring,
    prefix: String,
    timeout: Duration,
    max_item_bytes: usize,
    pub(crate) counters: L2Counters,
    /// The generations this process last read or wrote an entry under, for the watcher's first
    /// reading of a key ([`watch`]).
    observed: watch::Observed,
}

/// The two generations an entry is valid under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Generations {
    cache: u64,
    namespace: u64,
}

impl MemcachedTier {
    /// Builds the tier without connecting (connections open on first use), so a gateway starts
    /// even while memcached is down. Errors only for invalid settings.
    pub(crate) fn new(settings: &MemcachedSettings) -> Result<Self, CacheError> {
        settings.check().map_err(CacheError::Config)?;
        let max_item_bytes = usize::try_from(settings.max_item_bytes).unwrap_or(usize::MAX);
        let servers = settings
            .servers
            .iter()
            .map(|addr| {
                let health = Health::new(
                    format!("memcached cache server {addr}"),
                    settings.retry_after,
                );
                Arc::new(Server::new(addr.clone(), health, max_item_bytes))
            })
            .collect();
        Ok(Self {
            servers,
            ring: Ring::new(&settings.servers),
            prefix: settings.prefix.clone(),
            timeout: settings.timeout,
            max_item_bytes,
            counters: L2Counters::default(),
            observed: watch::Observed::default(),
        })
    }

    pub(crate) fn healthy(&self) -> bool {
        self.servers.iter().all(|s| s.health.healthy())
    }

    /// What [`watch::Watcher`] reads: the same servers (and connections), prefix and timeout.
    pub(crate) fn watched(&self) -> watch::Watched {
        watch::Watched {
            servers: self.servers.clone(),
            prefix: self.prefix.clone(),
            timeout: self.timeout,
            observed: self.observed.clone(),
        }
    }

    /// An entry of `key` was read or written under `gens` on its server: what L1 now holds
    /// rests on them.
    fn observe(&self, key: &str, gens: Generations) {
        let server = self.ring.pick(key);
        self.observed
            .record(server, self.cache_gen_key(), gens.cache);
        self.observed
            .record(server, self.namespace_gen_key(key), gens.namespace);
    }

    pub(crate) fn healthy_for(&self, key: &str) -> bool {
        self.server(key).health.healthy()
    }

    pub(crate) fn server_states(&self) -> Vec<ServerState> {
        self.servers
            .iter()
            .map(|s| ServerState {
                addr: s.addr.clone(),
                healthy: s.health.healthy(),
            })
            .collect()
    }

    fn server(&self, key: &str) -> &Server {
        &self.servers[self.ring.pick(key)]
    }

    /// `{prefix}{kind}:{key}`, the key hashed unless it is short and safe for memcached.
    fn mkey(&self, kind: &str, key: &str) -> String {
        mkey(&self.prefix, kind, key)
    }

    fn cache_gen_key(&self) -> String {
        format!("{}g", self.prefix)
    }

    fn namespace_gen_key(&self, key: &str) -> String {
        self.mkey("n", namespace(key))
    }

    /// Runs one bounded batch on `server`; `None` when skipped, failed or too slow (counted,
    /// and the server marked down).
    async fn run(&self, server: &Server, op: &'static str, batch: &Batch) -> Option<Vec<Reply>> {
        if !server.health.admit() {
            self.counters.skipped.fetch_add(1, Relaxed);
            return None;
        }
        match tokio::time::timeout(self.timeout, server.run(batch)).await {
            Ok(Ok(replies)) => {
                server.health.mark_up();
                Some(replies)
            }
            Ok(Err(e)) => {
                self.counters.errors.fetch_add(1, Relaxed);
                server.health.mark_down(op, &e);
                None
            }
            Err(_) => {
                self.counters.timeouts.fetch_add(1, Relaxed);
                server
                    .health
                    .mark_down(op, &format_args!("no answer within {:?}", self.timeout));
                None
            }
        }
    }

    /// Reads an entry and both generations in one round trip; a hit only if the generations
    /// match and its expiry has not passed.
    pub(crate) async fn get(&self, key: &str) -> Option<Entry> {
        let server = self.server(key);
        let mut batch = Batch::default();
        batch
            .get(&self.cache_gen_key())
            .get(&self.namespace_gen_key(key))
            .get(&self.mkey("e", key));
        let replies = self.run(server, "get", &batch).await?;
        let [cache, namespace, entry] = <[Reply; 3]>::try_from(replies).ok()?;
        let Reply::Value(value) = entry else {
            self.counters.misses.fetch_add(1, Relaxed);
            return None;
        };
        let current = match (generation(&cache), generation(&namespace)) {
            (Some(cache), Some(namespace)) => Generations { cache, namespace },
            // A generation is gone (purge lost, eviction, restart): nothing under it is valid.
            _ => {
                self.counters.misses.fetch_add(1, Relaxed);
                return None;
            }
        };
        match decode_value(value, current, now_ms()) {
            Decoded::Entry(rest, remaining) => {
                match Entry::decode(rest, remaining, Instant::now()) {
                    Some(e) => {
                        self.counters.hits.fetch_add(1, Relaxed);
                        self.observe(key, current);
                        Some(e)
                    }
                    None => {
                        self.counters.decode_errors.fetch_add(1, Relaxed);
                        None
                    }
                }
            }
            Decoded::Invalid => {
                self.counters.misses.fetch_add(1, Relaxed);
                None
            }
            Decoded::Garbage => {
                self.counters.decode_errors.fetch_add(1, Relaxed);
                None
            }
        }
    }

    /// Writes an entry valid under the current generations (creating them if they are
    /// missing), expiring after `lifetime`. Entries over the item size are counted, not sent.
    pub(crate) async fn set(&self, key: &str, entry: &Entry, lifetime: Duration) {
        let entry_key = self.mkey("e", key);
        let encoded = entry.encode();
        if VALUE_HEADER + encoded.len() + entry_key.len() + ITEM_OVERHEAD > self.max_item_bytes {
            self.counters.too_large.fetch_add(1, Relaxed);
            return;
        }
        let server = self.server(key);
        let Some(gens) = self.current_generations(server, key).await else {
            return;
        };
        self.observe(key, gens);
        let expires_ms =
            now_ms().saturating_add(u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX));
        let mut value = Vec::with_capacity(VALUE_HEADER + encoded.len());
        value.extend_from_slice(&expires_ms.to_be_bytes());
        value.extend_from_slice(&gens.cache.to_be_bytes());
        value.extend_from_slice(&gens.namespace.to_be_bytes());
        value.extend_from_slice(&encoded);
        let mut batch = Batch::default();
        batch.set(&entry_key, &value, ttl_secs(lifetime), false, false);
        match self.run(server, "set", &batch).await.as_deref() {
            Some([Reply::Stored { .. }]) => {
                self.counters.writes.fetch_add(1, Relaxed);
            }
            Some([Reply::ServerError(msg)]) if msg.contains("too large") => {
                self.counters.too_large.fetch_add(1, Relaxed);
            }
            Some(other) => {
                self.counters.errors.fetch_add(1, Relaxed);
                tracing::debug!(target: "manifold_cache", server = %server.addr, reply = ?other, "memcached refused an entry");
            }
            None => {}
        }
    }

    /// The generations on `server` for `key`, each created (a random value, `add` so the first
    /// writer wins) when missing.
    async fn current_generations(&self, server: &Server, key: &str) -> Option<Generations> {
        let keys = [self.cache_gen_key(), self.namespace_gen_key(key)];
        let mut batch = Batch::default();
        batch.get(&keys[0]).get(&keys[1]);
        let replies = self.run(server, "set", &batch).await?;
        let mut gens = [generation(replies.first()?), generation(replies.get(1)?)];
        if gens.iter().any(Option::is_none) {
            let mut create = Batch::default();
            let fresh: Vec<String> = (0..2).map(|_| new_generation().to_string()).collect();
            for (i, g) in gens.iter().enumerate() {
                if g.is_none() {
                    create.set(&keys[i], fresh[i].as_bytes(), 0, true, false);
                }
            }
            // Then read them back: ours, or another writer's that won the `add`.
            create.get(&keys[0]).get(&keys[1]);
            let replies = self.run(server, "set", &create).await?;
            let read_back = replies
                .len()
                .checked_sub(2)
                .and_then(|i| replies.get(i..))?;
            gens = [generation(&read_back[0]), generation(&read_back[1])];
        }
        match gens {
            [Some(cache), Some(namespace)] => Some(Generations { cache, namespace }),
            _ => {
                self.counters.decode_errors.fetch_add(1, Relaxed);
                None
            }
        }
    }

    /// Tries to take the key's lock for `lease` (rounded up to whole seconds; memcached's clock
    /// ticks in seconds, so the lock may end up to a second early, which costs at worst one
    /// extra fetch): an `add` that fails while another replica's lock item exists. The token is the item's CAS value, so
    /// only the holder's unlock deletes it.
    pub(crate) async fn try_lock(&self, key: &str, lease: Duration) -> Lock {
        let server = self.server(key);
        let mut batch = Batch::default();
        batch.set(&self.mkey("l", key), b"1", ttl_secs(lease), true, true);
        match self.run(server, "lock", &batch).await.as_deref() {
            Some([Reply::Stored { cas: Some(cas) }]) => Lock::Acquired(cas.to_string()),
            Some([Reply::NotStored]) => Lock::Held,
            _ => Lock::Unavailable,
        }
    }

    /// Releases the lock if we still hold it (same CAS value: not expired and re-taken).
    pub(crate) async fn unlock(&self, key: &str, token: &str) {
        let Ok(cas) = token.parse::<u64>() else {
            return;
        };
        let mut batch = Batch::default();
        batch.delete(&self.mkey("l", key), Some(cas));
        let _ = self.run(self.server(key), "unlock", &batch).await;
    }

    /// Deletes one entry.
    pub(crate) async fn delete(&self, key: &str) {
        let mut batch = Batch::default();
        batch.delete(&self.mkey("e", key), None);
        let _ = self.run(self.server(key), "delete", &batch).await;
    }

    /// Invalidates every entry under `prefix` by renewing a generation on every server (see the
    /// module doc for which). An error names the servers that could not be reached: their
    /// entries may still be served until they expire, so the purge should be retried.
    pub(crate) async fn purge(&self, prefix: &str) -> Result<(), CacheError> {
        let gen_key = match prefix.split_once(' ') {
            Some((ns, _)) => self.mkey("n", ns),
            None => self.cache_gen_key(),
        };
        let value = new_generation().to_string();
        let mut tasks = tokio::task::JoinSet::new();
        for server in &self.servers {
            let server = server.clone();
            let mut batch = Batch::default();
            batch.set(&gen_key, value.as_bytes(), 0, false, false);
            tasks.spawn(async move {
                let result = tokio::time::timeout(ADMIN_TIMEOUT, server.run(&batch)).await;
                let outcome = match result {
                    Ok(Ok(r)) if matches!(r.as_slice(), [Reply::Stored { .. }]) => {
                        server.health.mark_up();
                        Ok(())
                    }
                    Ok(Ok(r)) => Err(format!("{}: unexpected reply {r:?}", server.addr)),
                    Ok(Err(e)) => Err(format!("{}: {e}", server.addr)),
                    Err(_) => Err(format!(
                        "{}: no answer within {ADMIN_TIMEOUT:?}",
                        server.addr
                    )),
                };
                outcome
            });
        }
        let mut failed = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failed.push(e),
                Err(e) => failed.push(format!("purge task failed: {e}")),
            }
        }
        if failed.is_empty() {
            tracing::info!(target: "manifold_cache", prefix, generation = %gen_key, "memcached entries invalidated");
            Ok(())
        } else {
            Err(CacheError::Memcached(format!(
                "purge: renewing {gen_key:?} failed on {}",
                failed.join("; ")
            )))
        }
    }
}

/// The namespace of a cache key: its first word (`users` in `users GET /users/1`).
fn namespace(key: &str) -> &str {
    key.split_once(' ').map_or(key, |(ns, _)| ns)
}

/// `{prefix}{kind}:{key}` with `key` as is when it is printable ASCII without spaces, does not
/// start with `#` and fits memcached's 250 bytes; else `#` and the hex SHA-256 of `key`.
fn mkey(prefix: &str, kind: &str, key: &str) -> String {
    let head = prefix.len() + kind.len() + 1;
    let safe = head + key.len() <= MAX_KEY
        && !key.starts_with('#')
        && key.bytes().all(|b| b.is_ascii_graphic());
    let mut out = String::with_capacity(head + key.len().min(MAX_KEY));
    out.push_str(prefix);
    out.push_str(kind);
    out.push(':');
    if safe {
        out.push_str(key);
    } else {
        out.push('#');
        for b in Sha256::digest(key.as_bytes()) {
            out.push_str(&format!("{b:02x}"));
        }
    }
    out
}

fn generation(reply: &Reply) -> Option<u64> {
    match reply {
        Reply::Value(v) => std::str::from_utf8(v).ok()?.parse().ok(),
        _ => None,
    }
}

/// A random generation (from the OS: two replicas must never pick the same one).
fn new_generation() -> u64 {
    use rand::{RngCore, SeedableRng};
    rand::rngs::StdRng::from_os_rng().next_u64() | 1
}

enum Decoded {
    /// The entry's bytes and its remaining lifetime.
    Entry(Bytes, Duration),
    /// Written under other generations, or expired: a miss.
    Invalid,
    /// Not a value this tier wrote.
    Garbage,
}

fn decode_value(value: Bytes, current: Generations, now_ms: u64) -> Decoded {
    if value.len() < VALUE_HEADER {
        return Decoded::Garbage;
    }
    let word = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&value[i * 8..i * 8 + 8]);
        u64::from_be_bytes(a)
    };
    let (expires_ms, cache, namespace) = (word(0), word(1), word(2));
    if (Generations { cache, namespace }) != current || expires_ms <= now_ms {
        return Decoded::Invalid;
    }
    Decoded::Entry(
        value.slice(VALUE_HEADER..),
        Duration::from_millis(expires_ms - now_ms),
    )
}

/// The wall clock in Unix milliseconds: expiries are shared between replicas, so they are
/// dates, not this process's monotonic instants.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// memcached's expiry for `d`: whole seconds rounded up, at least 1, at most 30 days (above
/// that memcached would read a date).
fn ttl_secs(d: Duration) -> u32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.clamp(1, MAX_RELATIVE_TTL) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_readable_when_safe_and_hashed_otherwise() {
        assert_eq!(mkey("m:", "e", "plain-key"), "m:e:plain-key");
        for unsafe_key in [
            "users GET /users/1",
            "tab\there",
            "new\nline",
            "#looks-hashed",
            "é",
            &"x".repeat(300),
        ] {
            let k = mkey("m:", "e", unsafe_key);
            assert!(k.starts_with("m:e:#") && k.len() == 4 + 1 + 64, "{k}");
            assert!(k.bytes().all(|b| b.is_ascii_graphic()), "{k}");
        }
        // The longest prefix still leaves room for a hashed key.
        let prefix = "p".repeat(MAX_MEMCACHED_PREFIX);
        assert!(mkey(&prefix, "e", "a b").len() <= MAX_KEY);
        // Distinct keys stay distinct.
        assert_ne!(mkey("m:", "e", "a b"), mkey("m:", "e", "a  b"));
    }

    #[test]
    fn ttls_round_up_and_stay_relative() {
        assert_eq!(ttl_secs(Duration::from_millis(1)), 1);
        assert_eq!(ttl_secs(Duration::ZERO), 1);
        assert_eq!(ttl_secs(Duration::from_millis(1_001)), 2);
        assert_eq!(ttl_secs(Duration::from_secs(60)), 60);
        assert_eq!(
            ttl_secs(Duration::from_secs(365 * 86_400)),
            MAX_RELATIVE_TTL as u32
        );
    }

    #[test]
    fn values_are_valid_only_under_their_generations_and_before_expiry() {
        let gens = Generations {
            cache: 7,
            namespace: 9,
        };
        let mut v = Vec::new();
        v.extend_from_slice(&5_000u64.to_be_bytes());
        v.extend_from_slice(&7u64.to_be_bytes());
        v.extend_from_slice(&9u64.to_be_bytes());
        v.extend_from_slice(b"entry");
        let v = Bytes::from(v);
        match decode_value(v.clone(), gens, 1_000) {
            Decoded::Entry(rest, left) => {
                assert_eq!(&rest[..], b"entry");
                assert_eq!(left, Duration::from_secs(4));
            }
            _ => panic!("valid"),
        }
        assert!(matches!(
            decode_value(v.clone(), gens, 5_000),
            Decoded::Invalid
        ));
        let purged = Generations {
            cache: 7,
            namespace: 10,
        };
        assert!(matches!(
            decode_value(v.clone(), purged, 1_000),
            Decoded::Invalid
        ));
        assert!(matches!(
            decode_value(v.slice(..10), gens, 1_000),
            Decoded::Garbage
        ));
    }

    #[test]
    fn namespaces_are_first_words() {
        assert_eq!(namespace("users GET /users/1"), "users");
        assert_eq!(namespace("single"), "single");
        assert_eq!(namespace(""), "");
    }
}
