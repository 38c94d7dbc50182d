//! The two-tier cache and its one entry point, [`Cache::get_or_fetch`].

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::entry::Entry;
use crate::l2::L2;
use crate::policy::CachePolicy;
use crate::purge_bus::{invalidate_l1_prefix, PurgeBus, RedisReadiness};
use crate::stats::{CacheStats, CallCounters, L1Stats, Registry};
use crate::{CacheError, CachedResponse};

mod flight;
mod l1;
mod outcome;
mod settings;

use flight::Start;
pub(crate) use l1::{build_l1, L1};
pub use outcome::Outcome;
pub use settings::{
    CacheSettings, RedisSettings, DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRY_BYTES, DEFAULT_REDIS_PREFIX,
    DEFAULT_REDIS_RETRY_AFTER, DEFAULT_REDIS_TIMEOUT, REFRESH_RETRY_AFTER,
};

/// The call-result cache: an in-process tier (moka, bounded by bytes), an optional shared Redis
/// or Memcached tier, request coalescing, stale-while-revalidate, stale-if-error and early refresh.
///
/// Cheap to clone (one `Arc`); build one per gateway and share it.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("max_bytes", &self.inner.max_bytes)
            .field("l2", &self.inner.l2.as_ref().map(L2::backend))
            .finish()
    }
}

type FlightResult<E> = Result<(CachedResponse, Outcome), E>;
type FlightRx<E> = watch::Receiver<Option<Published<E>>>;

/// What a flight publishes: its result, and whether the callers that joined it may take it.
/// They may not when it is an answer meant for one client ([`crate::policy::for_one_client`]):
/// joined callers share the key, not every header of their requests (a proxy route's key holds
/// a few), so the answer was chosen for the leader's request alone. They then fetch for
/// themselves, as they would have with no flight to join.
#[derive(Clone)]
struct Published<E> {
    result: FlightResult<E>,
    shared: bool,
}

impl<E> Published<E> {
    fn shared(result: FlightResult<E>) -> Self {
        Published {
            result,
            shared: true,
        }
    }
}

/// One in-flight fetch for a key; the receiver is type-erased because `get_or_fetch` is
/// generic over the fetcher's error type.
struct Flight {
    id: u64,
    rx: Box<dyn Any + Send + Sync>,
}

struct Inner {
    l1: moka::future::Cache<String, Arc<Entry>>,
    l2: Option<L2>,
    /// With Redis: purges reach the other replicas' L1 ([`crate::purge_bus`]).
    bus: Option<PurgeBus>,
    /// With Memcached: the same, by watching its generations
    /// ([`crate::l2::memcached::watch`]).
    _watcher: Option<crate::l2::memcached::watch::Watcher>,
    flights: Mutex<HashMap<String, Flight>>,
    next_flight: AtomicU64,
    registry: Registry,
    max_bytes: u64,
    max_entry_bytes: u64,
    rng: AtomicU64,
}

impl Cache {
    /// Builds the cache. With a Redis tier this must run inside a Tokio runtime; it does not
    /// connect yet (the connection manager connects on first use and reconnects by itself), so
    /// a gateway starts even while Redis is down. Errors only for invalid settings.
    ///
    /// It runs a little CPU-bound work on the calling thread to size the in-process tier's
    /// frequency sketch (0.2 ms for the default 64 MiB, ~0.4 s for 4 GiB).
    pub fn new(settings: CacheSettings) -> Result<Self, CacheError> {
        if settings.max_bytes == 0 {
            return Err(CacheError::Config(
                "cache max_bytes must be above zero".into(),
            ));
        }
        let l2 = L2::from_settings(&settings)?;
        let l1 = build_l1(settings.max_bytes);
        let bus = (settings.redis.as_ref())
            .map(|r| PurgeBus::start(r, l1.clone()))
            .transpose()?;
        let watcher = match &l2 {
            Some(L2::Memcached(tier)) => {
                crate::l2::memcached::watch::Watcher::start(tier.watched(), l1.clone())
            }
            _ => None,
        };
        use std::hash::{BuildHasher, Hasher};
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Ok(Self {
            inner: Arc::new(Inner {
                l1,
                l2,
                bus,
                _watcher: watcher,
                flights: Mutex::new(HashMap::new()),
                next_flight: AtomicU64::new(1),
                registry: Registry::default(),
                max_bytes: settings.max_bytes,
                max_entry_bytes: settings.max_entry_bytes,
                rng: AtomicU64::new(seed),
            }),
        })
    }

    /// Answers `key` from the cache, or by running `fetch` (at most one fetch per key at a time
    /// in this process, and with `policy.lock` across replicas).
    ///
    /// * Fresh in L1 → [`Outcome::Hit`]; possibly starts one early refresh (XFetch).
    /// * Stale within `policy.stale` → answered at once ([`Outcome::Stale`]) and refreshed in
    ///   the background, once per key; after a failed refresh, [`Outcome::StaleIfError`].
    /// * Otherwise one flight per key runs in its own task: Redis (bounded by its timeout),
    ///   then `fetch`. The first caller gets the flight's outcome ([`Outcome::L2Hit`],
    ///   [`Outcome::Miss`], ...), concurrent callers for the key [`Outcome::Coalesced`].
    ///
    /// Cancellation: wrap the returned future in your deadline. Dropping it (or any waiter)
    /// never cancels the shared fetch; the others still get its answer and it is still stored.
    ///
    /// Errors: only `fetch`'s own (a 5xx `Ok` answer or an `Err` with a stale entry in its
    /// window is answered from the stale entry instead). Redis trouble is never an error here.
    /// A panic in `fetch` resumes in the caller that started the flight; joined callers then
    /// run their own `fetch`.
    pub async fn get_or_fetch<F, Fut, E>(
        &self,
        key: String,
        policy: &CachePolicy,
        fetch: F,
    ) -> Result<(CachedResponse, Outcome), E>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<CachedResponse, E>> + Send + 'static,
        E: Clone + Send + Sync + 'static,
    {
        let counters = self.inner.registry.get(&policy.name);
        let result = self.lookup(key, policy, fetch, &counters).await;
        match &result {
            Ok((_, outcome)) => counters.outcome(*outcome),
            Err(_) => counters.error(),
        }
        result
    }

    async fn lookup<F, Fut, E>(
        &self,
        key: String,
        policy: &CachePolicy,
        fetch: F,
        counters: &Arc<CallCounters>,
    ) -> FlightResult<E>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<CachedResponse, E>> + Send + 'static,
        E: Clone + Send + Sync + 'static,
    {
        if policy.is_bypass() {
            return fetch().await.map(|r| (r, Outcome::Bypass));
        }
        let inner = &self.inner;
        if let Some(entry) = inner.l1.get(&key).await {
            let now = Instant::now();
            let may_refresh = entry.retry_at.is_none_or(|t| now >= t);
            if now < entry.fresh_until {
                if let Some(beta) = policy.early_refresh {
                    if may_refresh && inner.xfetch_due(&entry, beta, now) {
                        let response = entry.response.clone();
                        if inner.refresh(key, policy, fetch, entry, counters) {
                            counters.early_refreshes.fetch_add(1, Relaxed);
                        }
                        return Ok((response, Outcome::Hit));
                    }
                }
                return Ok((entry.response.clone(), Outcome::Hit));
            }
            if now < entry.stale_until {
                let outcome = if entry.refresh_failed {
                    Outcome::StaleIfError
                } else {
                    Outcome::Stale
                };
                let response = entry.response.clone();
                if may_refresh {
                    inner.refresh(key, policy, fetch, entry, counters);
                }
                return Ok((response, outcome));
            }
        }
        match inner.start(key, policy, fetch, None, counters) {
            Start::Led { mut rx, handle } => {
                let answer = rx
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|v| v.clone())
                    .map(|p| p.result);
                match answer {
                    Some(result) => result,
                    None => match handle.await {
                        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
                        // The flight always answers before it ends, unless the runtime is
                        // shutting down and cancelled it, in which case this task is being
                        // torn down too.
                        _ => std::future::pending().await,
                    },
                }
            }
            Start::Joined { mut rx, fetch } => {
                let answer = rx
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|v| v.clone());
                match answer {
                    // An answer for the leader's client alone: fetch for ourselves.
                    Some(Published { shared: false, .. }) => {
                        fetch().await.map(|r| (r, Outcome::Miss))
                    }
                    Some(Published {
                        result: Ok((response, outcome)),
                        ..
                    }) => {
                        let outcome = match outcome {
                            Outcome::Stale | Outcome::StaleIfError => outcome,
                            _ => Outcome::Coalesced,
                        };
                        Ok((response, outcome))
                    }
                    Some(Published { result: Err(e), .. }) => Err(e),
                    // The flight died (its fetcher panicked): fetch for ourselves.
                    None => fetch().await.map(|r| (r, Outcome::Miss)),
                }
            }
            Start::Mismatch { fetch } => fetch().await.map(|r| (r, Outcome::Miss)),
        }
    }

    /// Removes every entry whose key starts with `prefix` from both tiers (Redis: SCAN + UNLINK
    /// under the deployment prefix; Memcached, which cannot list keys: a new generation for the
    /// prefix's namespace, or the whole cache, which invalidates a superset), then, with Redis,
    /// broadcasts the prefix so every other replica drops it from its own L1
    /// ([`crate::purge_bus`]). Returns the number of entries removed here, L1 and Redis added (an
    /// entry held in both counts twice; Memcached's invalidated entries cannot be counted and add
    /// 0). `""` empties the cache. A fetch in flight during the purge may store its answer
    /// afterwards.
    pub async fn purge_prefix(&self, prefix: &str) -> Result<u64, CacheError> {
        let local = invalidate_l1_prefix(&self.inner.l1, prefix).await;
        let remote = match &self.inner.l2 {
            Some(l2) => l2.purge(prefix).await?,
            None => 0,
        };
        // After Redis: a replica refilling its L1 from Redis must not find the old entry there.
        let replicas = match &self.inner.bus {
            Some(bus) => Some(bus.publish(prefix).await?),
            None => None,
        };
        tracing::info!(target: "manifold_cache", prefix, l1 = local, l2 = remote, broadcast_to = ?replicas, "cache purged");
        Ok(local + remote)
    }

    /// Removes one key from both tiers (errors from Redis are counted, not returned).
    pub async fn invalidate(&self, key: &str) {
        self.inner.l1.invalidate(key).await;
        if let Some(l2) = &self.inner.l2 {
            l2.delete(key).await;
        }
    }

    /// Removes one key from this process's tier only (Redis keeps it): for benchmarks and
    /// tests of the Redis path, or a replica that knows its copy is outdated.
    pub async fn evict_local(&self, key: &str) {
        self.inner.l1.invalidate(key).await;
    }

    /// A snapshot of every counter, for the admin listener.
    pub fn stats(&self) -> CacheStats {
        let inner = &self.inner;
        CacheStats {
            calls: inner.registry.snapshot(),
            l1: L1Stats {
                entries: inner.l1.entry_count(),
                bytes: inner.l1.weighted_size(),
                max_bytes: inner.max_bytes,
            },
            l2: inner.l2.as_ref().map(L2::stats),
        }
    }

    /// Runs L1's pending maintenance (evictions, expirations) now, so `stats()` is exact. For
    /// tests and benchmarks; the cache does this by itself as it is used.
    pub async fn run_pending_tasks(&self) {
        self.inner.l1.run_pending_tasks().await;
    }

    /// Whether the Redis tier is configured and currently considered up.
    pub fn redis_healthy(&self) -> Option<bool> {
        self.inner
            .l2
            .as_ref()
            .filter(|l2| matches!(l2, L2::Redis(_)))
            .map(L2::healthy)
    }

    /// Whether a shared tier (Redis or Memcached) is configured, and if so whether it is up
    /// (for Memcached: every server).
    pub fn shared_tier_healthy(&self) -> Option<bool> {
        self.inner.l2.as_ref().map(L2::healthy)
    }

    /// For a replica's readiness: PINGs Redis (bounded by `timeout`) and reports the tier's and
    /// the purge subscription's state. `None` without a Redis tier.
    pub async fn redis_readiness(&self, timeout: Duration) -> Option<RedisReadiness> {
        let (bus, l2) = (self.inner.bus.as_ref()?, self.inner.l2.as_ref()?);
        Some(RedisReadiness {
            reachable: bus.ping(timeout).await,
            tier_healthy: l2.healthy(),
            purge_subscribed: bus.subscribed(),
        })
    }
}

impl Inner {
    /// XFetch: refresh early with probability growing as expiry nears, scaled by how long the
    /// fetch took (`delta`) and `beta`: due when `delta · beta · −ln(u) ≥ time left`, u ∈ (0,1].
    fn xfetch_due(&self, entry: &Entry, beta: f64, now: Instant) -> bool {
        let delta = entry.fetch_time.as_secs_f64();
        if delta <= 0.0 || beta <= 0.0 {
            return false;
        }
        let left = entry
            .fresh_until
            .saturating_duration_since(now)
            .as_secs_f64();
        delta * beta * -self.uniform().ln() >= left
    }

    /// A uniform sample in (0, 1] (splitmix64 over a shared counter: cheap and good enough to
    /// spread refreshes).
    fn uniform(&self) -> f64 {
        let mut z = self.rng.fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests;
