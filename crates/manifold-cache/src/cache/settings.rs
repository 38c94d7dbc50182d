//! How the cache is built: its bounds, timeouts and the shared tier's settings, with their defaults.

use std::time::Duration;

use crate::MemcachedSettings;

/// Default L1 bound: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default largest entry: 4 MiB (bigger answers pass through uncached).
pub const DEFAULT_MAX_ENTRY_BYTES: u64 = 4 * 1024 * 1024;
/// Default Redis command timeout: short, because a slow cache must not cost more than it saves.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(50);
/// Default pause before probing Redis again after it failed.
pub const DEFAULT_REDIS_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Default per-deployment key prefix in Redis.
pub const DEFAULT_REDIS_PREFIX: &str = "manifold:";
/// After a refresh failed, the stale entry is answered without a new refresh for this long,
/// so a failing upstream is not asked on every request.
pub const REFRESH_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How the cache is built (`[cache]` in the config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheSettings {
    /// Bound of the in-process tier in bytes (bodies, kept headers, keys, ~200 B overhead per
    /// entry).
    pub max_bytes: u64,
    /// Answers heavier than this are not stored in either tier.
    pub max_entry_bytes: u64,
    /// The shared Redis tier, if any.
    pub redis: Option<RedisSettings>,
    /// The shared Memcached tier, if any (never with `redis`: [`Cache::new`] refuses both).
    pub memcached: Option<MemcachedSettings>,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            redis: None,
            memcached: None,
        }
    }
}

/// The Redis tier's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://[user:pass@]host:port[/db]` (or `rediss://` where the redis crate has TLS).
    pub url: String,
    /// Prepended to every key, so deployments sharing a Redis never see each other's entries
    /// and a purge touches only this deployment.
    pub prefix: String,
    /// Every request-path command is abandoned after this long.
    pub timeout: Duration,
    /// After an error or timeout, requests skip Redis for this long (one probes).
    pub retry_after: Duration,
}

impl RedisSettings {
    /// Settings for `url` with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: DEFAULT_REDIS_PREFIX.to_owned(),
            timeout: DEFAULT_REDIS_TIMEOUT,
            retry_after: DEFAULT_REDIS_RETRY_AFTER,
        }
    }
}
