//! Request coalescing and refresh: one fetch in flight per key, joined by everyone asking meanwhile,
//! and the background refreshes that keep stale answers useful.

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Flight, FlightResult, FlightRx, Inner, Outcome, Published, REFRESH_RETRY_AFTER};
use crate::entry::Entry;
use crate::l2::Lock;
use crate::policy::{for_one_client, is_failure, CachePolicy};
use crate::stats::CallCounters;
use crate::CachedResponse;

pub(super) enum Start<F, E> {
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

impl Inner {
    /// Starts a background refresh of `entry` unless one is already running. True if started.
    pub(super) fn refresh<F, Fut, E>(
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
    pub(super) fn start<F, Fut, E>(
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
        tx: watch::Sender<Option<Published<E>>>,
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
            if let Some(found) = l2.get(key, self.max_entry_bytes).await {
                let now = Instant::now();
                let newer = stale
                    .as_ref()
                    .is_none_or(|s| found.response.stored_at > s.response.stored_at);
                if newer && now < found.stale_until {
                    let found = Arc::new(found);
                    self.l1.insert(key.to_owned(), found.clone()).await;
                    if now < found.fresh_until {
                        drop(guard);
                        tx.send_replace(Some(Published::shared(Ok((
                            found.response.clone(),
                            Outcome::L2Hit,
                        )))));
                        return;
                    }
                    if stale.is_none() {
                        // Stale in Redis: answer with it now, refresh below.
                        tx.send_replace(Some(Published::shared(Ok((
                            found.response.clone(),
                            Outcome::Stale,
                        )))));
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
                        if let Some(found) = l2.get(key, self.max_entry_bytes).await {
                            if Instant::now() < found.stale_until {
                                let found = Arc::new(found);
                                self.l1.insert(key.to_owned(), found.clone()).await;
                                drop(guard);
                                tx.send_replace(Some(Published::shared(Ok((
                                    found.response.clone(),
                                    Outcome::Coalesced,
                                )))));
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
        let mut shared = true;
        let answer: FlightResult<E> = match (result, usable_stale) {
            (Ok(response), Some(old)) if is_failure(response.status) => {
                counters.refresh_failures.fetch_add(1, Relaxed);
                self.defer_refresh(key, old, now + REFRESH_RETRY_AFTER, true)
                    .await;
                Ok((old.response.clone(), Outcome::StaleIfError))
            }
            (Ok(response), _) => match policy.lifetimes(&response) {
                Some(life) if response.kept_weight() as u64 <= self.max_entry_bytes => {
                    let kept = response.into_kept();
                    let entry = Arc::new(Entry::new(kept, now, life.ttl, life.stale, fetch_time));
                    self.l1.insert(key.to_owned(), entry.clone()).await;
                    write = Some((entry.clone(), life.ttl.saturating_add(life.stale)));
                    Ok((entry.response.clone(), Outcome::Miss))
                }
                _ => {
                    counters.not_stored.fetch_add(1, Relaxed);
                    shared = !for_one_client(&response);
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
            tx.send_replace(Some(Published {
                result: answer,
                shared,
            }));
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
