//! The Redis tier: shared by every replica, entries expire in Redis, keys under a per-deployment
//! prefix.
//!
//! Nothing here may slow or fail a request: every command is bounded by a short timeout, and an
//! error or timeout marks the tier down for `retry_after` ([`Health`]), during which requests
//! skip it (one probe per period finds out when it is back). Transitions are logged once, not
//! per request.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;

use super::{Health, Lock};
use crate::entry::Entry;
use crate::stats::L2Counters;
use crate::{CacheError, RedisSettings};

/// Per-command bound for administration (purge), which may scan many keys.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys per SCAN step and per UNLINK.
const SCAN_COUNT: usize = 1_000;

pub(crate) struct RedisTier {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    health: Health,
    token_seed: u64,
    token_counter: AtomicU64,
    pub(crate) counters: L2Counters,
}

const UNLOCK_SCRIPT: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

impl RedisTier {
    /// Builds the tier without connecting (the connection manager connects on first use and
    /// reconnects after failures), so a gateway starts even when Redis is down.
    /// Must run inside a Tokio runtime.
    pub(crate) fn new(settings: &RedisSettings) -> Result<Self, CacheError> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|e| CacheError::Config(format!("redis url {:?}: {e}", settings.url)))?;
        if settings.timeout.is_zero() {
            return Err(CacheError::Config(
                "cache redis timeout must be above zero".into(),
            ));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(CacheError::Config(
                "a cache with a redis tier must be built inside a Tokio runtime".into(),
            ));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(|e| {
            CacheError::Redis {
                context: "creating the redis connection manager".into(),
                source: e,
            }
        })?;
        use std::hash::{BuildHasher, Hasher};
        let token_seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Ok(Self {
            conn,
            prefix: settings.prefix.clone(),
            timeout: settings.timeout,
            health: Health::new("redis cache tier".into(), settings.retry_after),
            token_seed,
            token_counter: AtomicU64::new(0),
            counters: L2Counters::default(),
        })
    }

    pub(crate) fn healthy(&self) -> bool {
        self.health.healthy()
    }

    fn entry_key(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + 2 + key.len());
        k.push_str(&self.prefix);
        k.push_str("e:");
        k.push_str(key);
        k
    }

    fn lock_key(&self, key: &str) -> String {
        format!("{}l:{}", self.prefix, key)
    }

    /// Runs one bounded command; `None` when skipped, failed or too slow (all counted).
    async fn run<T, F>(&self, op: &'static str, fut: F) -> Option<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if !self.health.admit() {
            self.counters.skipped.fetch_add(1, Relaxed);
            return None;
        }
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => {
                self.health.mark_up();
                Some(v)
            }
            Ok(Err(e)) => {
                self.counters.errors.fetch_add(1, Relaxed);
                self.health.mark_down(op, &e);
                None
            }
            Err(_) => {
                self.counters.timeouts.fetch_add(1, Relaxed);
                self.health
                    .mark_down(op, &format_args!("no answer within {:?}", self.timeout));
                None
            }
        }
    }

    /// Reads an entry with its remaining lifetime (GETRANGE + PTTL in one round trip).
    ///
    /// Why GETRANGE rather than GET: at most `max_entry_bytes + 1` bytes of the value are
    /// read, so a huge value (written by a replica with a larger bound, or by anyone else)
    /// costs this replica that much memory, not its size. An entry's encoding is never longer
    /// than its weight, so a longer value is an entry this replica would not store: it is
    /// counted in `too_large` and read as a miss.
    pub(crate) async fn get(&self, key: &str, max_entry_bytes: u64) -> Option<Entry> {
        let k = self.entry_key(key);
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("GETRANGE").arg(&k).arg(0).arg(max_entry_bytes);
        pipe.pttl(&k);
        let (value, pttl): (Vec<u8>, i64) = self.run("get", pipe.query_async(&mut conn)).await?;
        // GETRANGE reads a missing key as empty, and no entry encodes to nothing.
        if value.is_empty() {
            self.counters.misses.fetch_add(1, Relaxed);
            return None;
        }
        if value.len() as u64 > max_entry_bytes {
            self.counters.too_large.fetch_add(1, Relaxed);
            return None;
        }
        // -1: no expiry (not written by us), -2: expired between GET and PTTL.
        let Ok(remaining) = u64::try_from(pttl) else {
            self.counters.misses.fetch_add(1, Relaxed);
            return None;
        };
        match Entry::decode(
            Bytes::from(value),
            Duration::from_millis(remaining),
            Instant::now(),
        ) {
            Some(entry) => {
                self.counters.hits.fetch_add(1, Relaxed);
                Some(entry)
            }
            None => {
                self.counters.decode_errors.fetch_add(1, Relaxed);
                None
            }
        }
    }

    /// Writes an entry expiring after `lifetime` (its fresh + stale time).
    pub(crate) async fn set(&self, key: &str, entry: &Entry, lifetime: Duration) {
        let k = self.entry_key(key);
        let value = entry.encode();
        let ms = u64::try_from(lifetime.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(&k).arg(value).arg("PX").arg(ms);
        if self
            .run("set", cmd.query_async::<()>(&mut conn))
            .await
            .is_some()
        {
            self.counters.writes.fetch_add(1, Relaxed);
        }
    }

    /// Tries to take the key's lock for `lease`.
    pub(crate) async fn try_lock(&self, key: &str, lease: Duration) -> Lock {
        let token = format!(
            "{:016x}{:016x}",
            self.token_seed,
            self.token_counter.fetch_add(1, Relaxed)
        );
        let ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.lock_key(key))
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(ms);
        match self
            .run("lock", cmd.query_async::<Option<String>>(&mut conn))
            .await
        {
            Some(Some(_)) => Lock::Acquired(token),
            Some(None) => Lock::Held,
            None => Lock::Unavailable,
        }
    }

    /// Releases the lock if we still hold it (it may have expired and been taken by another).
    pub(crate) async fn unlock(&self, key: &str, token: &str) {
        let mut conn = self.conn.clone();
        let script = redis::Script::new(UNLOCK_SCRIPT);
        let mut invocation = script.key(self.lock_key(key));
        invocation.arg(token);
        let _: Option<i64> = self.run("unlock", invocation.invoke_async(&mut conn)).await;
    }

    /// Deletes one entry.
    pub(crate) async fn delete(&self, key: &str) {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("UNLINK");
        cmd.arg(self.entry_key(key));
        let _: Option<i64> = self.run("delete", cmd.query_async(&mut conn)).await;
    }

    /// Deletes every entry whose cache key starts with `prefix` (SCAN + UNLINK, so Redis never
    /// blocks on a large purge). Returns how many keys were removed.
    pub(crate) async fn purge(&self, prefix: &str) -> Result<u64, CacheError> {
        let pattern = format!("{}*", glob_escape(&self.entry_key(prefix)));
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut removed = 0u64;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT);
            let (next, keys): (u64, Vec<Vec<u8>>) =
                admin(scan.query_async(&mut conn), "scan").await?;
            if !keys.is_empty() {
                let mut unlink = redis::cmd("UNLINK");
                for k in &keys {
                    unlink.arg(k.as_slice());
                }
                let n: u64 = admin(unlink.query_async(&mut conn), "unlink").await?;
                removed += n;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        self.health.mark_up();
        Ok(removed)
    }
}

async fn admin<T>(
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    op: &str,
) -> Result<T, CacheError> {
    match tokio::time::timeout(ADMIN_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(CacheError::Redis {
            context: format!("purge: {op}"),
            source,
        }),
        Err(_) => Err(CacheError::Timeout(format!(
            "purge: redis {op} took over {ADMIN_TIMEOUT:?}"
        ))),
    }
}

/// Escapes Redis glob metacharacters so a prefix matches literally.
pub(crate) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_escape_makes_prefixes_literal() {
        assert_eq!(glob_escape("users GET /a?b=*"), "users GET /a\\?b=\\*");
        assert_eq!(glob_escape("[x]\\"), "\\[x\\]\\\\");
    }
}
