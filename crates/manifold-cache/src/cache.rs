//! The two-tier cache and its one entry point, [`Cache::get_or_fetch`].

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::entry::Entry;
use crate::l2::{Lock, L2};
use crate::policy::{is_failure, CachePolicy};
use crate::purge_bus::{invalidate_l1_prefix, PurgeBus, RedisReadiness};
use crate::stats::{CacheStats, CallCounters, L1Stats, Registry};
use crate::MemcachedSettings;
use crate::{CacheError, CachedResponse};

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

/// Where an answer came from: the `Manifold-Cache` header's value for a call
/// ([`Outcome::as_str`]) and the counter it is added to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Fresh, from the in-process tier.
    Hit,
    /// Fresh, from Redis.
    L2Hit,
    /// Fetched from the upstream for this caller (stored if the policy allowed it).
    Miss,
    /// Stale within the policy's window, answered at once; a background refresh was started
    /// (or is already running).
    Stale,
    /// Stale, answered because refreshing it failed (upstream error or 5xx).
    StaleIfError,
    /// Another caller's fetch (or another replica's, through the Redis lock) answered this one.
    Coalesced,
    /// The policy caches nothing; the fetcher ran directly.
    Bypass,
}

impl Outcome {
    /// The short name used in the `Manifold-Cache` response header (`user=hit`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::L2Hit => "hit-l2",
            Self::Miss => "miss",
            Self::Stale => "stale",
            Self::StaleIfError => "stale-if-error",
            Self::Coalesced => "coalesced",
            Self::Bypass => "bypass",
        }
    }

    /// Whether the answer came from the cache rather than a fetch made for this caller.
    pub fn is_cached(self) -> bool {
        !matches!(self, Self::Miss | Self::Bypass)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
type FlightRx<E> = watch::Receiver<Option<FlightResult<E>>>;

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
    flights: Mutex<HashMap<String, Flight>>,
    next_flight: AtomicU64,
    registry: Registry,
    max_bytes: u64,
    max_entry_bytes: u64,
    rng: AtomicU64,
}

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

enum Start<F, E> {
    /// We started the flight.
    Led {
        rx: FlightRx<E>,
        handle: JoinHandle<()>,
    },
    /// A flight was already running; the fetcher is handed back for the fallback.
    Joined { rx: FlightRx<E>, fetch: F },
    /// A flight for this key runs with another error type (two callers sharing a key with
    /// different fetchers): no coalescing possible.
    Mismatch { fetch: F },
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
        use std::hash::{BuildHasher, Hasher};
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Ok(Self {
            inner: Arc::new(Inner {
                l1,
                l2,
                bus,
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
                    .and_then(|v| v.clone());
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
                    Some(Ok((response, outcome))) => {
                        let outcome = match outcome {
                            Outcome::Stale | Outcome::StaleIfError => outcome,
                            _ => Outcome::Coalesced,
                        };
                        Ok((response, outcome))
                    }
                    Some(Err(e)) => Err(e),
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

    /// Starts a background refresh of `entry` unless one is already running. True if started.
    fn refresh<F, Fut, E>(
        self: &Arc<Self>,
        key: String,
        policy: &CachePolicy,
        fetch: F,
        entry: Arc<Entry>,
        counters: &Arc<CallCounters>,
    ) -> bool
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<CachedResponse, E>> + Send + 'static,
        E: Clone + Send + Sync + 'static,
    {
        match self.start(key, policy, fetch, Some(entry), counters) {
            Start::Led { .. } => {
                counters.refreshes.fetch_add(1, Relaxed);
                true
            }
            Start::Joined { .. } | Start::Mismatch { .. } => false,
        }
    }

    /// Joins the key's flight, or starts one in its own task.
    fn start<F, Fut, E>(
        self: &Arc<Self>,
        key: String,
        policy: &CachePolicy,
        fetch: F,
        stale: Option<Arc<Entry>>,
        counters: &Arc<CallCounters>,
    ) -> Start<F, E>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<CachedResponse, E>> + Send + 'static,
        E: Clone + Send + Sync + 'static,
    {
        let mut flights = lock(&self.flights);
        if let Some(flight) = flights.get(&key) {
            return match flight.rx.downcast_ref::<FlightRx<E>>() {
                Some(rx) => Start::Joined {
                    rx: rx.clone(),
                    fetch,
                },
                None => Start::Mismatch { fetch },
            };
        }
        let (tx, rx) = watch::channel(None);
        let id = self.next_flight.fetch_add(1, Relaxed);
        flights.insert(
            key.clone(),
            Flight {
                id,
                rx: Box::new(rx.clone()),
            },
        );
        drop(flights);
        let guard = FlightGuard {
            inner: self.clone(),
            key,
            id,
        };
        let policy = policy.clone();
        let counters = counters.clone();
        let handle = tokio::spawn(async move {
            guard
                .inner
                .clone()
                .fly(guard, policy, fetch, stale, tx, counters)
                .await;
        });
        Start::Led { rx, handle }
    }

    /// One flight: Redis, the lock, the fetch, storing, answering, then the slow tail (Redis
    /// write, unlock) after everyone has their answer.
    async fn fly<F, Fut, E>(
        self: Arc<Self>,
        guard: FlightGuard,
        policy: CachePolicy,
        fetch: F,
        mut stale: Option<Arc<Entry>>,
        tx: watch::Sender<Option<FlightResult<E>>>,
        counters: Arc<CallCounters>,
    ) where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<CachedResponse, E>> + Send + 'static,
        E: Clone + Send + Sync + 'static,
    {
        let key = guard.key.as_str();
        // Callers that got a stale answer are not waiting, but a refresh still publishes its
        // result: a caller arriving after the stale entry ran out joins this flight.
        let mut answered_early = false;

        // 1. The shared tier: another replica may have it, or a newer version of our stale one.
        if let Some(l2) = &self.l2 {
            if let Some(found) = l2.get(key).await {
                let now = Instant::now();
                let newer = stale
                    .as_ref()
                    .is_none_or(|s| found.response.stored_at > s.response.stored_at);
                if newer && now < found.stale_until {
                    let found = Arc::new(found);
                    self.l1.insert(key.to_owned(), found.clone()).await;
                    if now < found.fresh_until {
                        drop(guard);
                        tx.send_replace(Some(Ok((found.response.clone(), Outcome::L2Hit))));
                        return;
                    }
                    if stale.is_none() {
                        // Stale in Redis: answer with it now, refresh below.
                        tx.send_replace(Some(Ok((found.response.clone(), Outcome::Stale))));
                        answered_early = true;
                        counters.refreshes.fetch_add(1, Relaxed);
                    }
                    stale = Some(found);
                }
            }
        }

        // 2. The cross-replica lock.
        let mut token = None;
        if let (Some(l2), Some(lease)) = (&self.l2, policy.lock) {
            match l2.try_lock(key, lease).await {
                Lock::Acquired(t) => token = Some(t),
                Lock::Unavailable => {}
                Lock::Held => {
                    if let Some(old) = &stale {
                        // Another replica is refreshing: keep answering stale, look again soon.
                        let retry = Instant::now() + lease.min(REFRESH_RETRY_AFTER);
                        self.defer_refresh(key, old, retry, false).await;
                        return;
                    }
                    l2.note_lock_wait();
                    let deadline = Instant::now() + lease;
                    let step =
                        (lease / 20).clamp(Duration::from_millis(5), Duration::from_millis(50));
                    while Instant::now() < deadline {
                        tokio::time::sleep(step).await;
                        if let Some(found) = l2.get(key).await {
                            if Instant::now() < found.stale_until {
                                let found = Arc::new(found);
                                self.l1.insert(key.to_owned(), found.clone()).await;
                                drop(guard);
                                tx.send_replace(Some(Ok((
                                    found.response.clone(),
                                    Outcome::Coalesced,
                                ))));
                                return;
                            }
                        }
                        if !l2.healthy_for(key) {
                            break;
                        }
                    }
                    // The other replica did not deliver within its lease: fetch ourselves.
                }
            }
        }

        // 3. The upstream.
        let started = Instant::now();
        let result = fetch().await;
        let fetch_time = started.elapsed();
        let now = Instant::now();
        let usable_stale = stale.as_ref().filter(|s| now < s.stale_until);
        let mut write = None;
        let answer: FlightResult<E> = match (result, usable_stale) {
            (Ok(response), Some(old)) if is_failure(response.status) => {
                counters.refresh_failures.fetch_add(1, Relaxed);
                self.defer_refresh(key, old, now + REFRESH_RETRY_AFTER, true)
                    .await;
                Ok((old.response.clone(), Outcome::StaleIfError))
            }
            (Ok(response), _) => match policy.lifetimes(&response) {
                Some(life) if response.weight() as u64 <= self.max_entry_bytes => {
                    let entry =
                        Arc::new(Entry::new(response, now, life.ttl, life.stale, fetch_time));
                    self.l1.insert(key.to_owned(), entry.clone()).await;
                    write = Some((entry.clone(), life.ttl.saturating_add(life.stale)));
                    Ok((entry.response.clone(), Outcome::Miss))
                }
                _ => {
                    counters.not_stored.fetch_add(1, Relaxed);
                    Ok((response, Outcome::Miss))
                }
            },
            (Err(_), Some(old)) => {
                counters.refresh_failures.fetch_add(1, Relaxed);
                self.defer_refresh(key, old, now + REFRESH_RETRY_AFTER, true)
                    .await;
                Ok((old.response.clone(), Outcome::StaleIfError))
            }
            (Err(err), None) => {
                if stale.is_some() {
                    counters.refresh_failures.fetch_add(1, Relaxed);
                }
                Err(err)
            }
        };

        // 4. Answer: the entry is in L1 first, then the flight ends, then waiters wake, so a
        //    caller arriving at any moment finds either the flight or the entry.
        let key = guard.key.clone();
        drop(guard);
        if !answered_early {
            tx.send_replace(Some(answer));
        }
        drop(tx);

        // 5. The slow tail, off everyone's path.
        if let Some(l2) = &self.l2 {
            if let Some((entry, lifetime)) = write {
                l2.set(&key, &entry, lifetime).await;
            }
            if let Some(token) = token {
                l2.unlock(&key, &token).await;
            }
        }
    }

    /// Keeps the stale entry `old` (if it is still the one in L1) but holds off further
    /// refreshes until `retry_at`; `failed` labels its answers stale-if-error.
    async fn defer_refresh(&self, key: &str, old: &Arc<Entry>, retry_at: Instant, failed: bool) {
        let mut updated = Entry::clone(old);
        updated.retry_at = Some(retry_at);
        updated.refresh_failed = failed || old.refresh_failed;
        let updated = Arc::new(updated);
        let old = old.clone();
        self.l1
            .entry_by_ref(key)
            .and_compute_with(|current| async move {
                use moka::ops::compute::Op;
                match current {
                    Some(cur) if Arc::ptr_eq(cur.value(), &old) => Op::Put(updated),
                    // Replaced (a newer answer) or removed (purge, eviction): leave it.
                    _ => Op::Nop,
                }
            })
            .await;
    }
}

/// Removes the flight from the map when the flight's task ends in any way (answer, panic,
/// runtime shutdown), so the key never stays blocked.
struct FlightGuard {
    inner: Arc<Inner>,
    key: String,
    id: u64,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        let mut flights = lock(&self.inner.flights);
        if flights.get(&self.key).is_some_and(|f| f.id == self.id) {
            flights.remove(&self.key);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The map stays consistent across a panic (single inserts/removes), so poisoning is moot.
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
