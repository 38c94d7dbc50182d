//! Counters: one set per call name, one for the shared tier (Redis or Memcached). Lock-free increments on the request
//! path; a serialisable snapshot for the admin listener (and metrics later).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::Outcome;

/// Live counters of one call.
#[derive(Debug, Default)]
pub(crate) struct CallCounters {
    hit: AtomicU64,
    l2_hit: AtomicU64,
    miss: AtomicU64,
    stale: AtomicU64,
    stale_if_error: AtomicU64,
    coalesced: AtomicU64,
    bypass: AtomicU64,
    error: AtomicU64,
    pub(crate) not_stored: AtomicU64,
    pub(crate) refreshes: AtomicU64,
    pub(crate) refresh_failures: AtomicU64,
    pub(crate) early_refreshes: AtomicU64,
}

impl CallCounters {
    pub(crate) fn outcome(&self, outcome: Outcome) {
        let c = match outcome {
            Outcome::Hit => &self.hit,
            Outcome::L2Hit => &self.l2_hit,
            Outcome::Miss => &self.miss,
            Outcome::Stale => &self.stale,
            Outcome::StaleIfError => &self.stale_if_error,
            Outcome::Coalesced => &self.coalesced,
            Outcome::Bypass => &self.bypass,
        };
        c.fetch_add(1, Relaxed);
    }

    pub(crate) fn error(&self) {
        self.error.fetch_add(1, Relaxed);
    }

    fn snapshot(&self) -> CallStats {
        CallStats {
            hit: self.hit.load(Relaxed),
            l2_hit: self.l2_hit.load(Relaxed),
            miss: self.miss.load(Relaxed),
            stale: self.stale.load(Relaxed),
            stale_if_error: self.stale_if_error.load(Relaxed),
            coalesced: self.coalesced.load(Relaxed),
            bypass: self.bypass.load(Relaxed),
            error: self.error.load(Relaxed),
            not_stored: self.not_stored.load(Relaxed),
            refreshes: self.refreshes.load(Relaxed),
            refresh_failures: self.refresh_failures.load(Relaxed),
            early_refreshes: self.early_refreshes.load(Relaxed),
        }
    }
}

/// One call's counters at one instant. Every `get_or_fetch` adds exactly one to one of the
/// first eight fields; the last four count background work.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CallStats {
    /// Fresh answers from the in-process tier.
    pub hit: u64,
    /// Fresh answers from Redis (another replica, or this one after an L1 eviction).
    pub l2_hit: u64,
    /// Answers fetched from the upstream for this caller.
    pub miss: u64,
    /// Stale answers given at once while a refresh runs.
    pub stale: u64,
    /// Stale answers given because the upstream failed.
    pub stale_if_error: u64,
    /// Answers shared from another caller's in-flight fetch.
    pub coalesced: u64,
    /// Calls the policy sent straight to the upstream.
    pub bypass: u64,
    /// Calls that returned the fetcher's error (nothing stale to fall back on).
    pub error: u64,
    /// Fetched answers not stored (status, `Cache-Control`, size).
    pub not_stored: u64,
    /// Background refreshes started (stale-while-revalidate and early refresh).
    pub refreshes: u64,
    /// Refreshes whose fetch failed (the stale entry was kept).
    pub refresh_failures: u64,
    /// Refreshes started early by XFetch while the entry was still fresh.
    pub early_refreshes: u64,
}

impl CallStats {
    /// Answers served without waiting for this caller's own upstream call, over all answers.
    pub fn hit_ratio(&self) -> f64 {
        let served = self.hit + self.l2_hit + self.stale + self.stale_if_error + self.coalesced;
        let total = served + self.miss + self.bypass + self.error;
        if total == 0 {
            0.0
        } else {
            served as f64 / total as f64
        }
    }
}

/// Counters of the shared tier.
#[derive(Debug, Default)]
pub(crate) struct L2Counters {
    pub(crate) too_large: AtomicU64,
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
    pub(crate) lock_waits: AtomicU64,
}

impl L2Counters {
    pub(crate) fn snapshot(&self, healthy: bool) -> L2Stats {
        L2Stats {
            backend: "",
            healthy,
            too_large: self.too_large.load(Relaxed),
            servers: Vec::new(),
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            writes: self.writes.load(Relaxed),
            errors: self.errors.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            decode_errors: self.decode_errors.load(Relaxed),
            lock_waits: self.lock_waits.load(Relaxed),
        }
    }
}

/// The shared tier at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct L2Stats {
    /// `"redis"` or `"memcached"`.
    pub backend: &'static str,
    /// False while the tier (Redis) or any of its servers (Memcached) is considered down (after
    /// an error or timeout, until the next probe succeeds); requests then skip it.
    pub healthy: bool,
    /// Reads that found an entry.
    pub hits: u64,
    /// Reads that found nothing.
    pub misses: u64,
    /// Entries written.
    pub writes: u64,
    /// Commands that failed (connection refused, Redis error).
    pub errors: u64,
    /// Commands that did not answer within the timeout.
    pub timeouts: u64,
    /// Operations not attempted because the tier was down.
    pub skipped: u64,
    /// Values that were not entries this version wrote (ignored).
    pub decode_errors: u64,
    /// Misses that waited for another replica holding the key's lock.
    pub lock_waits: u64,
    /// Entries not written because they exceed the item size (Memcached's `-I`, 1 MiB by
    /// default), and entries read but ignored because they weigh more than `max_entry_bytes`.
    pub too_large: u64,
    /// Memcached: each server and whether it is up (its keys skip the tier while it is down).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<ServerState>,
}

/// One Memcached server's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServerState {
    /// `host:port` as configured.
    pub addr: String,
    /// False while it is considered down.
    pub healthy: bool,
}

/// The in-process tier at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct L1Stats {
    /// Entries held (moka's estimate; maintenance runs lazily).
    pub entries: u64,
    /// Bytes held, as weighed.
    pub bytes: u64,
    /// The byte bound.
    pub max_bytes: u64,
}

/// Everything, for `GET /cache` on the admin listener.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CacheStats {
    /// Per call name.
    pub calls: BTreeMap<String, CallStats>,
    /// The in-process tier.
    pub l1: L1Stats,
    /// The shared tier (Redis or Memcached), when configured.
    pub l2: Option<L2Stats>,
}

/// Call name → counters. Read-locked on the request path (a hash of a short name), written once
/// per new name.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    calls: RwLock<HashMap<Arc<str>, Arc<CallCounters>>>,
}

impl Registry {
    pub(crate) fn get(&self, name: &Arc<str>) -> Arc<CallCounters> {
        if let Ok(map) = self.calls.read() {
            if let Some(c) = map.get(name) {
                return c.clone();
            }
        }
        match self.calls.write() {
            Ok(mut map) => map.entry(name.clone()).or_default().clone(),
            // A panic while holding the lock cannot leave the map inconsistent (inserts only);
            // counting into a detached set is better than failing a request.
            Err(poisoned) => poisoned
                .into_inner()
                .entry(name.clone())
                .or_default()
                .clone(),
        }
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<String, CallStats> {
        let map = match self.calls.read() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.iter()
            .map(|(k, v)| (k.to_string(), v.snapshot()))
            .collect()
    }
}
