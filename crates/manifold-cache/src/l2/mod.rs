//! The shared tier (L2): Redis or Memcached, one at a time. [`L2`] is the one type the cache
//! talks to, so `cache.rs` keeps one code path for both; each backend keeps the same promises:
//!
//! * nothing here slows or fails a request: every request-path command is bounded by a short
//!   timeout, and an error or timeout marks the tier (Redis) or the server (Memcached) down for
//!   `retry_after` ([`Health`]), during which requests skip it;
//! * entries carry their remaining lifetime, so stale-while-revalidate works across replicas;
//! * a short-lived lock per key (`SET NX PX` / memcached `add` with an expiry) lets one replica
//!   fetch while the others wait;
//! * administration (purge) reports its errors instead of hiding them.

pub(crate) mod memcached;
mod redis;

use std::sync::atomic::{AtomicBool, Ordering, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::entry::Entry;
use crate::stats::{L2Counters, L2Stats};
use crate::{CacheError, CacheSettings};

pub(crate) use self::memcached::MemcachedTier;
pub use self::memcached::{
    check_server_addr, MemcachedSettings, DEFAULT_MEMCACHED_MAX_ITEM_BYTES,
    DEFAULT_MEMCACHED_RETRY_AFTER, DEFAULT_MEMCACHED_TIMEOUT, MAX_MEMCACHED_PREFIX,
    MAX_MEMCACHED_SERVERS, MEMCACHED_ITEM_BYTES,
};
pub(crate) use self::redis::RedisTier;

/// The result of trying to take a key's cross-replica lock.
pub(crate) enum Lock {
    /// We hold it, with this token (what releasing it needs).
    Acquired(String),
    /// Another replica holds it.
    Held,
    /// The tier is unavailable: proceed without a lock.
    Unavailable,
}

/// The configured shared tier.
pub(crate) enum L2 {
    Redis(RedisTier),
    Memcached(MemcachedTier),
}

impl L2 {
    /// The shared tier `settings` ask for, if any. Both at once is a configuration error: two
    /// shared tiers would each hold part of the truth.
    pub(crate) fn from_settings(settings: &CacheSettings) -> Result<Option<Self>, CacheError> {
        match (&settings.redis, &settings.memcached) {
            (Some(_), Some(_)) => Err(CacheError::Config(
                "cache redis and cache memcached are both set; choose one shared tier".into(),
            )),
            (Some(r), None) => Ok(Some(Self::Redis(RedisTier::new(r)?))),
            (None, Some(m)) => Ok(Some(Self::Memcached(MemcachedTier::new(m)?))),
            (None, None) => Ok(None),
        }
    }

    /// `"redis"` or `"memcached"`, for logs and stats.
    pub(crate) fn backend(&self) -> &'static str {
        match self {
            Self::Redis(_) => "redis",
            Self::Memcached(_) => "memcached",
        }
    }

    /// Whether the whole tier is up (every server, for Memcached).
    pub(crate) fn healthy(&self) -> bool {
        match self {
            Self::Redis(t) => t.healthy(),
            Self::Memcached(t) => t.healthy(),
        }
    }

    /// Whether the part of the tier holding `key` is up.
    pub(crate) fn healthy_for(&self, key: &str) -> bool {
        match self {
            Self::Redis(t) => t.healthy(),
            Self::Memcached(t) => t.healthy_for(key),
        }
    }

    /// The entry under `key`, unless it weighs more than `max_entry_bytes` (counted in
    /// `too_large`). Why bounded here: the shared tier is an input too. A replica configured
    /// with a larger bound, or anything else that can write to it, must not get an entry into
    /// this replica's memory or answers that this replica would never have stored itself.
    pub(crate) async fn get(&self, key: &str, max_entry_bytes: u64) -> Option<Entry> {
        let found = match self {
            Self::Redis(t) => t.get(key, max_entry_bytes).await,
            Self::Memcached(t) => t.get(key).await,
        }?;
        if found.response.weight() as u64 > max_entry_bytes {
            self.counters().too_large.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(found)
    }

    pub(crate) async fn set(&self, key: &str, entry: &Entry, lifetime: Duration) {
        match self {
            Self::Redis(t) => t.set(key, entry, lifetime).await,
            Self::Memcached(t) => t.set(key, entry, lifetime).await,
        }
    }

    pub(crate) async fn try_lock(&self, key: &str, lease: Duration) -> Lock {
        match self {
            Self::Redis(t) => t.try_lock(key, lease).await,
            Self::Memcached(t) => t.try_lock(key, lease).await,
        }
    }

    pub(crate) async fn unlock(&self, key: &str, token: &str) {
        match self {
            Self::Redis(t) => t.unlock(key, token).await,
            Self::Memcached(t) => t.unlock(key, token).await,
        }
    }

    pub(crate) async fn delete(&self, key: &str) {
        match self {
            Self::Redis(t) => t.delete(key).await,
            Self::Memcached(t) => t.delete(key).await,
        }
    }

    /// Removes (Redis) or invalidates (Memcached) every entry under `prefix`; the count of keys
    /// removed, which Memcached cannot know (0).
    pub(crate) async fn purge(&self, prefix: &str) -> Result<u64, CacheError> {
        match self {
            Self::Redis(t) => t.purge(prefix).await,
            Self::Memcached(t) => t.purge(prefix).await.map(|()| 0),
        }
    }

    pub(crate) fn counters(&self) -> &L2Counters {
        match self {
            Self::Redis(t) => &t.counters,
            Self::Memcached(t) => &t.counters,
        }
    }

    pub(crate) fn note_lock_wait(&self) {
        self.counters().lock_waits.fetch_add(1, Relaxed);
    }

    pub(crate) fn stats(&self) -> L2Stats {
        let mut stats = self.counters().snapshot(self.healthy());
        stats.backend = self.backend();
        if let Self::Memcached(t) = self {
            stats.servers = t.server_states();
        }
        stats
    }
}

/// Up or down, for one tier or one server: after an error or timeout, requests skip it for
/// `retry_after`; then one caller probes while the others keep skipping. Transitions are logged
/// once, not per request.
pub(crate) struct Health {
    /// What the log lines name: "redis cache tier", "memcached server 10.0.0.1:11211".
    what: String,
    retry_after: Duration,
    down_until: Mutex<Option<Instant>>,
    healthy: AtomicBool,
}

impl Health {
    pub(crate) fn new(what: String, retry_after: Duration) -> Self {
        Self {
            what,
            retry_after,
            down_until: Mutex::new(None),
            healthy: AtomicBool::new(true),
        }
    }

    pub(crate) fn healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    /// Whether to try now. While down, only one caller per `retry_after` probes.
    pub(crate) fn admit(&self) -> bool {
        let mut down = match self.down_until.lock() {
            Ok(d) => d,
            Err(p) => p.into_inner(),
        };
        match *down {
            None => true,
            Some(until) => {
                let now = Instant::now();
                if now >= until {
                    *down = Some(now + self.retry_after); // this caller probes; others wait
                    true
                } else {
                    false
                }
            }
        }
    }

    pub(crate) fn mark_up(&self) {
        if !self.healthy.swap(true, Relaxed) {
            tracing::info!(target: "manifold_cache", what = %self.what, "{} reachable again", self.what);
        }
        if let Ok(mut down) = self.down_until.lock() {
            *down = None;
        }
    }

    pub(crate) fn mark_down(&self, op: &'static str, error: &dyn std::fmt::Display) {
        if let Ok(mut down) = self.down_until.lock() {
            *down = Some(Instant::now() + self.retry_after);
        }
        if self.healthy.swap(false, Relaxed) {
            tracing::warn!(
                target: "manifold_cache",
                op,
                %error,
                retry_after_ms = self.retry_after.as_millis() as u64,
                "{} unavailable; serving from the in-process tier and upstreams",
                self.what
            );
        }
    }
}
