//! Metric types recorded with relaxed atomics, and labelled families of them.
//!
//! A family maps label values to a shared metric behind a read-write lock; the gateway resolves
//! its handles once (per route, call, queue, endpoint) so the request path touches atomics only.
//! Histograms keep one exemplar per bucket behind a `try_lock`: a contended exemplar is skipped,
//! never waited for.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::context::{SpanId, TraceId};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// An integer level (in-flight requests, queue depth).
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Add one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtract one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Set the level.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// The current level.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A floating-point level (an age in seconds, a balancer cost), stored as its bits.
#[derive(Debug, Default)]
pub struct GaugeF64(AtomicU64);

impl GaugeF64 {
    /// Set the level (NaN and infinities are rendered as the formats spell them).
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    /// The current level.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// A circuit breaker's state, rendered as one 0/1 series per state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum BreakerState {
    /// Calls flow.
    #[default]
    Closed = 0,
    /// Probing with a few calls.
    HalfOpen = 1,
    /// Calls are refused.
    Open = 2,
}

impl BreakerState {
    /// Every state, in rendering order.
    pub const ALL: [BreakerState; 3] = [
        BreakerState::Closed,
        BreakerState::HalfOpen,
        BreakerState::Open,
    ];

    /// The `state` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }
}

/// The current breaker state of one endpoint.
#[derive(Debug, Default)]
pub struct StateGauge(AtomicU8);

impl StateGauge {
    /// Set the state.
    pub fn set(&self, s: BreakerState) {
        self.0.store(s as u8, Ordering::Relaxed);
    }

    /// The current state.
    pub fn get(&self) -> BreakerState {
        match self.0.load(Ordering::Relaxed) {
            1 => BreakerState::HalfOpen,
            2 => BreakerState::Open,
            _ => BreakerState::Closed,
        }
    }
}

/// Latency bucket bounds in seconds: 0.5 ms to 10 s, dense where a gateway's calls live.
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// One sampled observation that links a bucket to a trace (OpenMetrics exemplars).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exemplar {
    /// The trace.
    pub trace_id: TraceId,
    /// The span that took this long.
    pub span_id: SpanId,
    /// The observed value, nanoseconds.
    pub value_ns: u64,
    /// When, milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// A duration histogram: per-bucket counts (made cumulative when rendered), the sum in
/// nanoseconds, and the last exemplar of each bucket.
#[derive(Debug)]
pub struct Histogram {
    bounds_ns: [u64; LATENCY_BUCKETS.len()],
    /// One more than the bounds: the last is `+Inf`.
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
    exemplars: [Mutex<Option<Exemplar>>; LATENCY_BUCKETS.len() + 1],
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            bounds_ns: LATENCY_BUCKETS.map(|s| (s * 1e9) as u64),
            counts: Default::default(),
            sum_ns: AtomicU64::new(0),
            exemplars: Default::default(),
        }
    }
}

/// A read of a histogram, cumulative.
#[derive(Clone, Debug)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, cumulative count, exemplar)`, the last bound being infinity.
    pub buckets: Vec<(f64, u64, Option<Exemplar>)>,
    /// Sum of observations, seconds.
    pub sum_seconds: f64,
    /// Number of observations (equal to the last bucket).
    pub count: u64,
}

impl Histogram {
    /// Record one duration, with the trace it belongs to when that trace is sampled.
    pub fn observe(&self, d: Duration, exemplar: Option<(TraceId, SpanId)>) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let idx = self.bounds_ns.partition_point(|b| *b < ns);
        self.counts[idx].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        if let Some((trace_id, span_id)) = exemplar {
            if let Ok(mut slot) = self.exemplars[idx].try_lock() {
                let at_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                *slot = Some(Exemplar {
                    trace_id,
                    span_id,
                    value_ns: ns,
                    at_ms,
                });
            }
        }
    }

    /// A cumulative read. Buckets are read once each, so they are cumulative and never shrink
    /// between reads; the sum may include an observation a bucket does not yet (or not).
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0u64;
        let mut buckets = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            cumulative = cumulative.saturating_add(c.load(Ordering::Relaxed));
            let bound = LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            let exemplar = *self.exemplars[i]
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            buckets.push((bound, cumulative, exemplar));
        }
        HistogramSnapshot {
            buckets,
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            count: cumulative,
        }
    }
}

/// A metric name, help text and label names, with its labelled children.
#[derive(Debug)]
pub struct Family<M, const N: usize> {
    /// The metric name (counters end in `_total`).
    pub name: &'static str,
    /// The `# HELP` text.
    pub help: &'static str,
    /// The label names.
    pub labels: [&'static str; N],
    children: RwLock<BTreeMap<[Arc<str>; N], Arc<M>>>,
}

impl<M: Default, const N: usize> Family<M, N> {
    /// An empty family.
    pub fn new(name: &'static str, help: &'static str, labels: [&'static str; N]) -> Self {
        Family {
            name,
            help,
            labels,
            children: RwLock::new(BTreeMap::new()),
        }
    }

    /// The child for these label values, created on first use. Hold the handle: this takes a
    /// lock, recording on the handle does not.
    pub fn get(&self, values: [&str; N]) -> Arc<M> {
        let key: [Arc<str>; N] = values.map(Arc::from);
        if let Some(m) = self
            .children
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Arc::clone(m);
        }
        let mut w = self
            .children
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(w.entry(key).or_default())
    }

    /// Keep only the children whose label values pass `keep` (the series of things that are
    /// gone end, instead of showing their last value forever).
    pub fn retain(&self, mut keep: impl FnMut(&[Arc<str>; N]) -> bool) {
        self.children
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|k, _| keep(k));
    }

    /// Every child, sorted by label values (for rendering).
    pub fn children(&self) -> Vec<([Arc<str>; N], Arc<M>)> {
        self.children
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_le_and_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500), None); // exactly 0.0005: in the first bucket
        h.observe(Duration::from_micros(501), None);
        h.observe(Duration::from_secs(100), None);
        let s = h.snapshot();
        assert_eq!(s.buckets[0].1, 1);
        assert_eq!(s.buckets[1].1, 2);
        assert_eq!(s.buckets[LATENCY_BUCKETS.len() - 1].1, 2);
        assert_eq!(s.buckets[LATENCY_BUCKETS.len()].1, 3);
        assert!(s.buckets.last().is_some_and(|b| b.0.is_infinite()));
        assert_eq!(s.count, 3);
        assert!((s.sum_seconds - 100.001001).abs() < 1e-9);
    }

    #[test]
    fn exemplars_land_in_their_bucket() {
        let h = Histogram::default();
        let ids = (TraceId([7; 16]), SpanId([8; 8]));
        h.observe(Duration::from_millis(40), Some(ids));
        let s = h.snapshot();
        let (bound, _, ex) = s.buckets[6];
        assert_eq!(bound, 0.05);
        let ex = ex.expect("recorded");
        assert_eq!((ex.trace_id, ex.value_ns), (ids.0, 40_000_000));
    }

    #[test]
    fn families_hand_out_one_child_per_label_set() {
        let f: Family<Counter, 2> = Family::new("x_total", "x", ["a", "b"]);
        f.get(["1", "2"]).inc();
        f.get(["1", "2"]).inc();
        f.get(["1", "3"]).inc();
        let c = f.children();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].1.get(), 2);
    }
}
