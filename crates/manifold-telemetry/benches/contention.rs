//! What two threads recording into the same histogram and counter cost per record: the sharded
//! metrics (`manifold_telemetry::metrics`) against one shared set of atomics (the layout before
//! sharding, reproduced below), in the same run, so the ratio holds on a loaded machine.
//!
//!   cargo bench -p manifold-telemetry --bench contention [-- ROUNDS [OBSERVES_PER_THREAD]]
//!
//! Prints, per round and as medians, nanoseconds of CPU time per record with one thread and with
//! two threads at once (each thread's own CPU time divided by its records; Linux only).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use manifold_telemetry::metrics::{Counter, Histogram, LATENCY_BUCKETS};

/// The histogram before sharding: one set of bucket counts and one sum for every thread.
struct Shared {
    bounds_ns: [u64; LATENCY_BUCKETS.len()],
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            bounds_ns: LATENCY_BUCKETS.map(|s| (s * 1e9) as u64),
            counts: Default::default(),
            sum_ns: AtomicU64::new(0),
        }
    }

    fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let idx = self.bounds_ns.partition_point(|b| *b < ns);
        self.counts[idx].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

/// This thread's time on a CPU so far, ns (`/proc/thread-self/schedstat`, first field): unlike
/// the elapsed time, it does not count the time other processes of a loaded machine held the
/// core, and it does count the stalls of a contended cache line.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Run `record` `n` times on each of `threads` threads started together; ns of CPU time per
/// record, the mean of the threads' own figures.
fn per_record<F>(threads: usize, n: u64, record: Arc<F>) -> f64
where
    F: Fn(u64) + Send + Sync + 'static,
{
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (start, record) = (Arc::clone(&start), Arc::clone(&record));
            std::thread::spawn(move || {
                start.wait();
                let cpu = thread_cpu_ns();
                for i in 0..n {
                    record(black_box(i));
                }
                thread_cpu_ns().saturating_sub(cpu) as f64 / n as f64
            })
        })
        .collect();
    let figures: Vec<f64> = handles.into_iter().filter_map(|h| h.join().ok()).collect();
    figures.iter().sum::<f64>() / figures.len().max(1) as f64
}

/// A case: its name, and a run with this many threads giving ns per record.
type Case = (&'static str, Box<dyn Fn(usize) -> f64>);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    // `cargo bench` passes `--bench`; the numbers are ours.
    let nums: Vec<u64> = std::env::args().filter_map(|a| a.parse().ok()).collect();
    let rounds = nums.first().copied().unwrap_or(7) as usize;
    let n = nums.get(1).copied().unwrap_or(2_000_000);
    // 2 ms: the third bucket, as a checkout's calls on a local network.
    let d = |i: u64| Duration::from_nanos(2_000_000 + (i & 1023));
    let cases: Vec<Case> = vec![
        (
            "histogram, shared atomics",
            Box::new(move |t| {
                per_record(
                    t,
                    n,
                    Arc::new({
                        let h = Shared::new();
                        move |i| h.observe(d(i))
                    }),
                )
            }),
        ),
        (
            "histogram, sharded",
            Box::new(move |t| {
                per_record(
                    t,
                    n,
                    Arc::new({
                        let h = Histogram::default();
                        move |i| h.observe(d(i), None)
                    }),
                )
            }),
        ),
        (
            "counter, shared atomic",
            Box::new(move |t| {
                per_record(
                    t,
                    n,
                    Arc::new({
                        let c = AtomicU64::new(0);
                        move |_| {
                            c.fetch_add(1, Ordering::Relaxed);
                        }
                    }),
                )
            }),
        ),
        (
            "counter, sharded",
            Box::new(move |t| {
                per_record(
                    t,
                    n,
                    Arc::new({
                        let c = Counter::default();
                        move |_| c.inc()
                    }),
                )
            }),
        ),
    ];
    println!("{rounds} rounds, {n} records per thread; ns per record (1 thread | 2 threads)");
    for (name, run) in &cases {
        let mut one = Vec::new();
        let mut two = Vec::new();
        for _ in 0..rounds {
            one.push(run(1));
            two.push(run(2));
        }
        let fmt = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.1}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "{name:28} median {:6.2} | {:6.2}   rounds 1t [{}] 2t [{}]",
            median(one.clone()),
            median(two.clone()),
            fmt(&one),
            fmt(&two)
        );
    }
}
