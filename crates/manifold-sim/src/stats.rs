//! Call counting and call records: what `GET /__stats` and [`crate::RunningSim::stats`] report.
//!
//! Counters are atomics on the request path; the per-endpoint call log is a bounded ring (the
//! last [`RECENT_CAP`] calls) so a long run cannot grow memory without limit.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// How many recent calls each endpoint of each replica remembers.
pub const RECENT_CAP: usize = 10_000;

/// The longest `X-Request-Id` a call record keeps (longer ones are cut at a character boundary).
pub const REQUEST_ID_CAP: usize = 128;

/// How many distinct `Idempotency-Key` values each endpoint of each replica remembers; beyond it
/// [`EndpointStats::idempotency_keys`] stops growing (a long run cannot grow memory without
/// limit), and [`EndpointStats::idempotency_keys_capped`] says so.
pub const IDEMPOTENCY_KEYS_CAP: usize = 1_000_000;

/// Fault names in the order of [`EndpointCounters::faults`].
pub(crate) const FAULT_NAMES: [&str; 4] = ["status", "reset", "hang", "slow_body"];

/// Live counters of one endpoint on one replica.
#[derive(Debug, Default)]
pub(crate) struct EndpointCounters {
    calls: AtomicU64,
    ok: AtomicU64,
    faults: [AtomicU64; 4],
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    recent: Mutex<VecDeque<Recorded>>,
    /// Hashes of the `Idempotency-Key`s of calls answered `ok`: how many distinct pieces of work
    /// were done, however often each was delivered (at-least-once delivery repeats some).
    keys: Mutex<HashSet<u64>>,
}

#[derive(Debug, Clone)]
struct Recorded {
    seq: u64,
    request_id: Option<Box<str>>,
    start: Instant,
    end: Instant,
    outcome: &'static str,
    status: Option<u16>,
}

/// One finished (or abandoned) call, times in milliseconds since the sim started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// The endpoint's call number on this replica (the `{seq}` placeholder), from 1.
    pub seq: u64,
    /// The request's `X-Request-Id` header, if it had one (at most [`REQUEST_ID_CAP`] bytes): how
    /// a caller ties the calls one of its requests made together, e.g. to compute each request's
    /// critical path from the service times recorded here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// When the request head arrived.
    pub start_ms: f64,
    /// When the response head was handed to the connection, or when the call was abandoned.
    pub end_ms: f64,
    /// `ok`, `status`, `reset`, `hang`, `slow_body`, or `cancelled` (the client left or the sim
    /// stopped before the answer).
    pub outcome: String,
    /// The status sent, if a response was sent.
    pub status: Option<u16>,
}

/// Counters of one endpoint (on one replica, or summed over a service's replicas).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointStats {
    /// Requests that reached this endpoint.
    pub calls: u64,
    /// Requests answered without an injected fault.
    pub ok: u64,
    /// Injected faults by kind (`status`, `reset`, `hang`, `slow_body`).
    pub faults: BTreeMap<String, u64>,
    /// Requests being served now.
    pub in_flight: u64,
    /// The most requests served at once since the last reset (for a service: the largest of its
    /// replicas').
    pub max_in_flight: u64,
    /// Distinct `Idempotency-Key` header values among the calls answered `ok` since the last
    /// reset: the work actually done when a client (Manifold's offload dispatcher) may deliver
    /// the same task more than once. Summed over replicas for a service.
    #[serde(default)]
    pub idempotency_keys: u64,
    /// Whether [`IDEMPOTENCY_KEYS_CAP`] was reached (the count is then a lower bound).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub idempotency_keys_capped: bool,
    /// The last calls, oldest first (only with `?calls=1` or [`crate::RunningSim::stats_with_calls`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent: Option<Vec<CallRecord>>,
}

/// One replica's listener and counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaStats {
    /// Where it listens.
    pub addr: String,
    /// Its latency multiplier.
    pub latency_scale: f64,
    /// Requests it dealt as stragglers (`straggler_rate`) since the last reset.
    #[serde(default)]
    pub stragglers: u64,
    /// Requests to its endpoints.
    pub calls: u64,
    /// Requests that matched no endpoint (404/405).
    pub not_found: u64,
    /// Per endpoint, keyed `"METHOD /path/{pattern}"`.
    pub endpoints: BTreeMap<String, EndpointStats>,
}

/// One service: totals over its replicas, then each replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStats {
    /// Requests to all its endpoints on all replicas.
    pub calls: u64,
    /// Per endpoint over all replicas, keyed `"METHOD /path/{pattern}"`.
    pub endpoints: BTreeMap<String, EndpointStats>,
    /// Each replica.
    pub replicas: Vec<ReplicaStats>,
}

/// A snapshot of the whole sim: the JSON of `GET /__stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimStats {
    /// Milliseconds since the sim started (the origin of every `start_ms`/`end_ms`).
    pub uptime_ms: f64,
    /// Services by name.
    pub services: BTreeMap<String, ServiceStats>,
}

impl SimStats {
    /// Calls to one endpoint of a service over all replicas (0 if unknown). `endpoint` is
    /// `"METHOD /pattern"`, e.g. `"POST /orders/{id}/confirm"`.
    pub fn calls(&self, service: &str, endpoint: &str) -> u64 {
        self.services
            .get(service)
            .and_then(|s| s.endpoints.get(endpoint))
            .map_or(0, |e| e.calls)
    }

    /// Calls to all endpoints of a service (0 if unknown).
    pub fn service_calls(&self, service: &str) -> u64 {
        self.services.get(service).map_or(0, |s| s.calls)
    }
}

/// Marks a call in flight; records it when finished or dropped.
pub(crate) struct CallGuard<'a> {
    counters: &'a EndpointCounters,
    seq: u64,
    request_id: Option<Box<str>>,
    start: Instant,
    done: bool,
    /// Hash of the request's `Idempotency-Key`, counted if the call is answered `ok`.
    key: Option<u64>,
}

impl EndpointCounters {
    /// A call arrived; `idempotency_key` is its `Idempotency-Key` header and `request_id` its
    /// `X-Request-Id`, if any.
    pub(crate) fn begin(
        &self,
        seq: u64,
        idempotency_key: Option<&[u8]>,
        request_id: Option<&str>,
    ) -> CallGuard<'_> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Ordering::Relaxed);
        CallGuard {
            counters: self,
            seq,
            request_id: request_id.map(|id| {
                let mut end = id.len().min(REQUEST_ID_CAP);
                while !id.is_char_boundary(end) {
                    end -= 1;
                }
                id[..end].into()
            }),
            start: Instant::now(),
            done: false,
            key: idempotency_key.map(|k| {
                use std::hash::{BuildHasher, BuildHasherDefault};
                BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                    .hash_one(k)
            }),
        }
    }

    pub(crate) fn count_fault(&self, name: &str) {
        if let Some(i) = FAULT_NAMES.iter().position(|n| *n == name) {
            self.faults[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn reset(&self) {
        self.calls.store(0, Ordering::Relaxed);
        self.ok.store(0, Ordering::Relaxed);
        for f in &self.faults {
            f.store(0, Ordering::Relaxed);
        }
        self.max_in_flight
            .store(self.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
        lock(&self.recent).clear();
        lock(&self.keys).clear();
    }

    pub(crate) fn snapshot(&self, origin: Instant, with_calls: bool) -> EndpointStats {
        let ms = |t: Instant| t.saturating_duration_since(origin).as_secs_f64() * 1000.0;
        // One lock, taken and released here: a guard living in the struct literal below would
        // be held to the end of the statement.
        let keys = lock(&self.keys).len();
        EndpointStats {
            calls: self.calls.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
            faults: FAULT_NAMES
                .iter()
                .zip(&self.faults)
                .map(|(n, c)| ((*n).to_owned(), c.load(Ordering::Relaxed)))
                .collect(),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            max_in_flight: self.max_in_flight.load(Ordering::Relaxed),
            idempotency_keys: keys as u64,
            idempotency_keys_capped: keys >= IDEMPOTENCY_KEYS_CAP,
            recent: with_calls.then(|| {
                lock(&self.recent)
                    .iter()
                    .map(|r| CallRecord {
                        seq: r.seq,
                        request_id: r.request_id.as_deref().map(str::to_owned),
                        start_ms: ms(r.start),
                        end_ms: ms(r.end),
                        outcome: r.outcome.to_owned(),
                        status: r.status,
                    })
                    .collect()
            }),
        }
    }
}

impl CallGuard<'_> {
    /// The call is answered (or faulted) with `outcome`.
    pub(crate) fn finish(mut self, outcome: &'static str, status: Option<u16>) {
        self.record(outcome, status);
    }

    fn record(&mut self, outcome: &'static str, status: Option<u16>) {
        if self.done {
            return;
        }
        self.done = true;
        let c = self.counters;
        c.in_flight.fetch_sub(1, Ordering::Relaxed);
        if outcome == "ok" {
            c.ok.fetch_add(1, Ordering::Relaxed);
            if let Some(key) = self.key {
                let mut keys = lock(&c.keys);
                if keys.len() < IDEMPOTENCY_KEYS_CAP {
                    keys.insert(key);
                }
            }
        }
        let mut recent = lock(&c.recent);
        if recent.len() == RECENT_CAP {
            recent.pop_front();
        }
        recent.push_back(Recorded {
            seq: self.seq,
            request_id: self.request_id.take(),
            start: self.start,
            end: Instant::now(),
            outcome,
            status,
        });
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.record("cancelled", None);
    }
}

/// Merge per-replica endpoint stats into service totals.
pub(crate) fn merge(into: &mut EndpointStats, from: &EndpointStats) {
    into.calls += from.calls;
    into.ok += from.ok;
    for (k, v) in &from.faults {
        *into.faults.entry(k.clone()).or_default() += v;
    }
    into.in_flight += from.in_flight;
    into.max_in_flight = into.max_in_flight.max(from.max_in_flight);
    into.idempotency_keys += from.idempotency_keys;
    into.idempotency_keys_capped |= from.idempotency_keys_capped;
}

/// Lock a mutex, recovering from poisoning (a panic while recording must not stop the counting).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
