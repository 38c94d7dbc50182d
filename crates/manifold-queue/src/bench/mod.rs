//! `manifold bench offload`: enqueue latency and throughput per backend, each beside the
//! physical limit measured in the same run.
//!
//! For each backend:
//! - **raw**: the durable write the backend cannot beat, measured right before it: a loop of
//!   256-byte appends each followed by `fdatasync` in the same directory (embedded), a
//!   JetStream publish awaiting its ack (NATS), a persistent publish awaiting its confirm
//!   (RabbitMQ). One at a time for latency; `concurrency` at a time for throughput.
//! - **open loop**: enqueues scheduled at a fixed `rate`, latency measured from the *scheduled*
//!   time (a stall shows in the percentiles instead of slowing the sender).
//! - **closed loop**: `concurrency` enqueuers back to back: sustained tasks per second.
//!
//! Every loop is bounded in count and time; brokers get names unique to the run, deleted after.
//!
//! `loops` drives the open and closed loops; `embedded`, `nats` and `rabbitmq` measure each
//! backend beside its raw durable write.

mod embedded;
mod loops;
#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "rabbitmq")]
mod rabbitmq;

use std::path::PathBuf;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::task::Task;
use crate::Backend;
use embedded::bench_embedded;
#[cfg(feature = "nats")]
use nats::bench_nats;
#[cfg(feature = "rabbitmq")]
use rabbitmq::bench_rabbitmq;

/// What to measure and how hard.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Backends to measure, in order.
    pub backends: Vec<Backend>,
    /// Scratch directory for the embedded queue and the raw fsync loop (same disk). A fresh
    /// subdirectory is created and removed.
    pub dir: PathBuf,
    /// NATS server.
    pub nats_url: String,
    /// RabbitMQ server.
    pub rabbitmq_url: String,
    /// Open-loop rate, tasks per second.
    pub rate: u32,
    /// Open-loop duration.
    pub duration: Duration,
    /// Closed-loop concurrent enqueuers.
    pub concurrency: usize,
    /// Closed-loop task count bound.
    pub max_tasks: u64,
    /// Closed-loop time bound.
    pub max_duration: Duration,
    /// Sequential raw durable writes for the latency baseline.
    pub raw_samples: u32,
    /// Task body size in bytes.
    pub body_bytes: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            backends: vec![Backend::Embedded, Backend::Nats, Backend::Rabbitmq],
            dir: std::env::temp_dir(),
            nats_url: "nats://127.0.0.1:4222".into(),
            rabbitmq_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            rate: 1000,
            duration: Duration::from_secs(5),
            concurrency: 256,
            max_tasks: 100_000,
            max_duration: Duration::from_secs(10),
            raw_samples: 500,
            body_bytes: 256,
        }
    }
}

/// Percentiles of one latency series, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        Latency {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// A closed-loop throughput run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Operations completed.
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Wall time in seconds.
    pub seconds: f64,
    /// `ops / seconds`.
    pub per_second: f64,
    /// Concurrent workers.
    pub concurrency: usize,
}

/// An open-loop run: operations started at fixed times, `rate` per second.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OpenLoop {
    /// Operations per second scheduled.
    pub rate: u32,
    /// Latency from each operation's *scheduled* start (coordinated-omission free; includes the
    /// sender's timer lag, about 1 ms at most with tokio's millisecond timer).
    pub latency: Latency,
    /// Latency from each operation's actual start (service time).
    pub service: Latency,
    /// Operations that failed (not in the histograms).
    pub errors: u64,
}

/// Results for one backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendBench {
    /// `embedded`, `nats` or `rabbitmq`.
    pub backend: String,
    /// Why it was not measured (server unreachable...), if so.
    pub skipped: Option<String>,
    /// What the raw baseline is.
    pub raw_what: String,
    /// Raw durable writes one at a time: the latency of a single durable write.
    pub raw_sequential: Option<Latency>,
    /// Raw durable writes at the open-loop rate, same driver as the enqueues.
    pub raw_open_loop: Option<OpenLoop>,
    /// Raw durable writes, `concurrency` at a time, back to back.
    pub raw_throughput: Option<Throughput>,
    /// Enqueues at the open-loop rate.
    pub enqueue_open_loop: Option<OpenLoop>,
    /// Enqueues, `concurrency` at a time, back to back.
    pub enqueue_throughput: Option<Throughput>,
    /// `enqueue p99 / raw p99`, both open loop at the same rate, from scheduled times. The
    /// issue's goal is at most 2.
    pub p99_ratio: Option<f64>,
    /// Embedded only: enqueues per fsync during the closed loop (group commit at work).
    pub tasks_per_commit: Option<f64>,
}

impl BackendBench {
    fn new(backend: Backend, raw_what: &str) -> Self {
        BackendBench {
            backend: backend.as_str().into(),
            skipped: None,
            raw_what: raw_what.into(),
            raw_sequential: None,
            raw_open_loop: None,
            raw_throughput: None,
            enqueue_open_loop: None,
            enqueue_throughput: None,
            p99_ratio: None,
            tasks_per_commit: None,
        }
    }

    fn finish(mut self) -> Self {
        if let (Some(raw), Some(q)) = (self.raw_open_loop, self.enqueue_open_loop) {
            self.p99_ratio = Some(q.latency.p99_us as f64 / raw.latency.p99_us.max(1) as f64);
        }
        self
    }
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// One entry per requested backend.
    pub backends: Vec<BackendBench>,
}

fn histogram() -> Histogram<u64> {
    // Constant, valid bounds (1 µs .. 100 s, 3 significant digits): this cannot fail.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

fn bench_task(n: u64, body_bytes: usize) -> Task {
    Task::new(
        format!("bench-{n}"),
        "bench",
        "POST",
        "/bench",
        vec![("content-type".into(), "application/json".into())],
        vec![b'x'; body_bytes],
    )
}

fn run_id() -> String {
    let t = crate::clock::Clock::system().now_ms();
    format!("mqbench_{}_{t}", std::process::id())
}

/// Runs every requested backend and returns the figures. Servers that cannot be reached are
/// reported as skipped, never with made-up figures.
pub async fn run(opts: &BenchOptions) -> BenchReport {
    let mut backends = Vec::new();
    for backend in &opts.backends {
        let result = match backend {
            Backend::Embedded => bench_embedded(opts).await,
            Backend::Nats => bench_nats(opts).await,
            Backend::Rabbitmq => bench_rabbitmq(opts).await,
        };
        backends.push(result.unwrap_or_else(|e| {
            let mut b = BackendBench::new(*backend, "");
            b.skipped = Some(e.to_string());
            b
        }));
    }
    BenchReport { backends }
}

#[cfg(not(feature = "nats"))]
async fn bench_nats(_opts: &BenchOptions) -> Result<BackendBench, crate::error::QueueError> {
    Err(crate::error::QueueError::Config(
        "built without the `nats` feature".into(),
    ))
}

#[cfg(not(feature = "rabbitmq"))]
async fn bench_rabbitmq(_opts: &BenchOptions) -> Result<BackendBench, crate::error::QueueError> {
    Err(crate::error::QueueError::Config(
        "built without the `rabbitmq` feature".into(),
    ))
}
