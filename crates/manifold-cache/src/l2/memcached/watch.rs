//! Purges reaching every replica's in-process tier when the shared tier is Memcached.
//!
//! With Redis, a purge is broadcast on pub/sub ([`crate::purge_bus`]). Memcached has no pub/sub,
//! but a purge there is already visible to everyone: it renews a *generation* value on every
//! server (see the module doc of [`super`]). So each replica watches the generations that matter
//! to its own L1 — the whole cache's, and the namespace of every key it holds — and when one
//! changes (or disappears: an evicted or restarted generation invalidates everything under it
//! in Memcached too), it drops the L1 entries under it. A purge on one replica therefore reaches
//! the others' L1 within [`WATCH_EVERY`] plus a round trip, instead of when their entries expire.
//!
//! Why polling rather than something pushed: memcached cannot push, and one pipelined `mg` per
//! server per second, for the handful of namespaces a gateway caches, costs nothing next to the
//! traffic it serves. The watcher never blocks a request: it runs in its own task, bounded by the
//! tier's timeout, and skips a server that errs (that server's generations are compared again
//! once it answers; what changed meanwhile is then seen).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::conn::{Batch, Server};
use super::generation;
use crate::cache::L1;
use crate::purge_bus::invalidate_l1_prefix;

/// How often the generations are read.
pub(crate) const WATCH_EVERY: Duration = Duration::from_secs(1);
/// Most namespaces watched. A gateway's namespaces are its cached calls' names, a handful; past
/// this (a hostile or absurd key space) only the whole cache's generation is watched, and a
/// namespace purge elsewhere reaches this L1 when its entries expire.
pub(crate) const MAX_NAMESPACES: usize = 512;

/// What the watcher needs of the tier: its servers, how it names generation keys, its timeout.
pub(crate) struct Watched {
    pub(crate) servers: Vec<Arc<Server>>,
    pub(crate) prefix: String,
    pub(crate) timeout: Duration,
    pub(crate) observed: Observed,
}

/// The generations the request path last read or wrote an entry under, per server and key.
///
/// Why: the watcher's first reading of a namespace would otherwise be a blind baseline — an entry
/// that entered L1 under generation G, then a purge elsewhere (G → G'), then the first reading
/// (G') would look like no change, and the purged entry would live on in L1. Seeded from what
/// the entry was actually read or written under, the first reading compares with G.
#[derive(Clone, Default)]
pub(crate) struct Observed(Arc<Mutex<HashMap<(usize, String), u64>>>);

/// Most generations remembered; past it the memory starts afresh (bounded whatever the key
/// space; the watcher's own readings carry on).
const MAX_OBSERVED: usize = 4 * MAX_NAMESPACES;

impl Observed {
    pub(crate) fn record(&self, server: usize, key: String, generation: u64) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_OBSERVED && !map.contains_key(&(server, key.clone())) {
            map.clear();
        }
        map.insert((server, key), generation);
    }

    fn get(&self, server: usize, key: &str) -> Option<u64> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&(server, key.to_owned())).copied()
    }
}

/// The watcher task; aborted when dropped (with the cache).
pub(crate) struct Watcher(JoinHandle<()>);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Watcher {
    /// Starts watching, if a Tokio runtime is running (a cache built outside one, in a test or a
    /// tool, keeps its L1 until entries expire, as before).
    pub(crate) fn start(watched: Watched, l1: L1) -> Option<Self> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        Some(Watcher(handle.spawn(watch_forever(watched, l1))))
    }
}

async fn watch_forever(watched: Watched, l1: L1) {
    let mut seen = Seen {
        observed: watched.observed.clone(),
        ..Seen::default()
    };
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let namespaces = namespaces(&l1);
        for (i, server) in watched.servers.iter().enumerate() {
            let keys = generation_keys(&watched.prefix, &namespaces);
            let mut batch = Batch::default();
            for (key, _) in &keys {
                batch.get(key);
            }
            // What the request path had observed before this reading was sent: a generation it
            // records while the reading is in flight may be newer than the reply (see
            // `Seen::changed`).
            let observed: Vec<Option<u64>> = keys
                .iter()
                .map(|(key, _)| seen.observed.get(i, key))
                .collect();
            let replies = match tokio::time::timeout(watched.timeout, server.run(&batch)).await {
                Ok(Ok(replies)) if replies.len() == keys.len() => replies,
                // Down, slow or confused: the request path marks and counts it; compare what
                // it holds with what it held once it answers again.
                _ => {
                    seen.carry(i);
                    continue;
                }
            };
            for (((key, scope), reply), observed) in keys.into_iter().zip(&replies).zip(observed) {
                if seen.changed(i, key, generation(reply), observed) {
                    let dropped = invalidate_l1_prefix(&l1, scope.prefix()).await;
                    tracing::debug!(target: "manifold_cache", server = %server.addr, scope = scope.prefix(), dropped, "memcached generation renewed: L1 entries dropped");
                }
            }
        }
        seen.end_round();
    }
}

/// What a generation covers in L1.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    /// The whole cache (`""`).
    All,
    /// One namespace: its keys start with `"{name} "`.
    Namespace(String),
}

impl Scope {
    fn prefix(&self) -> &str {
        match self {
            Scope::All => "",
            Scope::Namespace(p) => p,
        }
    }
}

/// The generation keys to read, with what each covers: the whole cache's first.
fn generation_keys(prefix: &str, namespaces: &BTreeSet<String>) -> Vec<(String, Scope)> {
    let mut keys = Vec::with_capacity(namespaces.len() + 1);
    keys.push((format!("{prefix}g"), Scope::All));
    for ns in namespaces {
        keys.push((
            super::mkey(prefix, "n", ns),
            Scope::Namespace(format!("{ns} ")),
        ));
    }
    keys
}

/// The namespaces of the keys in L1 (at most [`MAX_NAMESPACES`]).
fn namespaces(l1: &L1) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (key, _) in l1.iter() {
        let ns = super::namespace(&key);
        if ns.len() == key.len() || out.contains(ns) {
            continue; // a key without a namespace is covered by the whole cache's generation
        }
        if out.len() == MAX_NAMESPACES {
            break;
        }
        out.insert(ns.to_owned());
    }
    out
}

/// The generations last read, per server and key. Only this round's keys are kept (and a
/// skipped server's last readings), so namespaces that left L1 are forgotten: bounded by
/// [`MAX_NAMESPACES`] + 1 keys per server.
#[derive(Default)]
struct Seen {
    before: HashMap<(usize, String), Option<u64>>,
    now: HashMap<(usize, String), Option<u64>>,
    /// What a key's first reading is compared with.
    observed: Observed,
}

impl Seen {
    /// Records `now` for `key` on server `i`; whether it differs from the generation read
    /// before or, where none was read (a first reading, or the key was missing), from
    /// `observed`: the one the request path had read an entry under ([`Observed`]) when this
    /// reading was sent. Nothing to compare with: no change (the first write creates the
    /// generation).
    ///
    /// Why `observed` as of the sending: the request path creates a missing generation and
    /// records it while a reading may be in flight. Compared with the record made after the
    /// reading was sent, the reading's "missing" looked like a vanished generation, and the
    /// watcher dropped the L1 entry just written under it (seen once in CI: the outage test's
    /// L1 hit was a miss).
    fn changed(&mut self, i: usize, key: String, now: Option<u64>, observed: Option<u64>) -> bool {
        let before = match self.before.get(&(i, key.clone())) {
            Some(Some(read)) => Some(*read),
            _ => observed,
        };
        self.now.insert((i, key), now);
        matches!(before, Some(b) if now != Some(b))
    }

    /// Server `i` was not read this round: keep what it showed last.
    fn carry(&mut self, i: usize) {
        for (k, v) in &self.before {
            if k.0 == i {
                self.now.insert(k.clone(), *v);
            }
        }
    }

    fn end_round(&mut self) {
        self.before = std::mem::take(&mut self.now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_renewed_or_vanished_generation_is_a_change() {
        let mut seen = Seen::default();
        let round = |seen: &mut Seen, i: usize, key: &str, now: Option<u64>| {
            let changed = seen.changed(i, key.into(), now, None);
            seen.end_round();
            changed
        };
        assert!(!round(&mut seen, 0, "g", None), "nothing yet");
        assert!(!round(&mut seen, 0, "g", Some(7)), "created");
        assert!(!round(&mut seen, 0, "g", Some(7)), "unchanged");
        assert!(round(&mut seen, 0, "g", Some(9)), "renewed by a purge");
        assert!(round(&mut seen, 0, "g", None), "evicted or restarted");
        assert!(!round(&mut seen, 0, "g", Some(11)), "recreated by a write");
        // Two servers; the second skipped for a round still compares with what it showed.
        assert!(!seen.changed(0, "g".into(), Some(11), None));
        assert!(
            !seen.changed(1, "g".into(), Some(5), None),
            "its first reading"
        );
        seen.end_round();
        assert!(!seen.changed(0, "g".into(), Some(11), None));
        seen.carry(1);
        seen.end_round();
        assert!(
            seen.changed(1, "g".into(), Some(6), None),
            "renewed while it was skipped"
        );
        // A namespace that left L1 is forgotten after a round.
        assert!(!seen.changed(0, "n:users".into(), Some(1), None));
        seen.end_round();
        seen.end_round();
        assert!(
            !seen.changed(0, "n:users".into(), Some(2), None),
            "a first reading again"
        );
        // A first reading compares with what the request path read an entry under.
        assert!(
            seen.changed(0, "n:orders".into(), Some(4), Some(3)),
            "purged before the first reading"
        );
        assert!(
            !seen.changed(0, "n:other".into(), Some(4), None),
            "never observed"
        );
    }

    /// A reading sent before the request path created and recorded a generation finds it
    /// missing: not a vanished generation (the entry just written rests on it). A purge after
    /// that reading is still seen, against what was observed.
    #[test]
    fn a_reading_older_than_the_observed_generation_is_no_change() {
        let mut seen = Seen::default();
        // Sent with nothing observed; the request path then created generation 7.
        assert!(!seen.changed(0, "g".into(), None, None));
        seen.end_round();
        // Next round, sent after 7 was observed: a purge renewed it to 8.
        assert!(seen.changed(0, "g".into(), Some(8), Some(7)));
        seen.end_round();
        assert!(!seen.changed(0, "g".into(), Some(8), Some(7)), "read since");
    }

    #[test]
    fn the_whole_cache_then_each_namespace_with_its_key_prefix() {
        let ns: BTreeSet<String> = ["orders".to_owned(), "users".to_owned()].into();
        let keys = generation_keys("p:", &ns);
        assert_eq!(keys[0], ("p:g".to_owned(), Scope::All));
        assert_eq!(keys[1].0, super::super::mkey("p:", "n", "orders"));
        assert_eq!(keys[1].1.prefix(), "orders ");
        assert_eq!(keys[2].1.prefix(), "users ");
    }
}
