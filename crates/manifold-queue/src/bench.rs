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

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::embedded::{EmbeddedOptions, EmbeddedQueue};
use crate::error::QueueError;
use crate::queue::Queue;
use crate::task::Task;
use crate::Backend;

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

/// Starts `rate · duration` operations at fixed times, each in its own task, and measures each
/// from its scheduled time and from its actual start.
async fn open_loop<F, Fut>(opts: &BenchOptions, op: F) -> OpenLoop
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let total = (f64::from(opts.rate) * opts.duration.as_secs_f64()).ceil() as u64;
    let interval = Duration::from_secs_f64(1.0 / f64::from(opts.rate.max(1)));
    let start = Instant::now();
    let mut handles = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for i in 0..total {
        let scheduled = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled).await;
        let fut = op(i);
        handles.push(tokio::spawn(async move {
            let started = Instant::now();
            let ok = fut.await;
            let end = Instant::now();
            (end - scheduled, end - started, ok)
        }));
    }
    let (mut from_scheduled, mut service) = (histogram(), histogram());
    let mut errors = 0;
    for handle in handles {
        match handle.await {
            Ok((latency, serv, true)) => {
                let _ = from_scheduled.record(micros(latency));
                let _ = service.record(micros(serv));
            }
            _ => errors += 1,
        }
    }
    OpenLoop {
        rate: opts.rate,
        latency: Latency::of(&from_scheduled),
        service: Latency::of(&service),
        errors,
    }
}

/// Open loop and closed loop of enqueues on `queue`.
async fn measure_queue(queue: Arc<dyn Queue>, opts: &BenchOptions) -> (OpenLoop, Throughput) {
    let body = opts.body_bytes;
    let q = Arc::clone(&queue);
    let open = open_loop(opts, move |i| {
        let q = Arc::clone(&q);
        async move { q.enqueue(bench_task(i, body)).await.is_ok() }
    })
    .await;
    let tp = closed_loop(opts, opts.concurrency, move |i| {
        let q = Arc::clone(&queue);
        async move { q.enqueue(bench_task(i, body)).await.is_ok() }
    })
    .await;
    (open, tp)
}

/// `concurrency` workers calling `op` back to back until `max_tasks` or `max_duration`.
async fn closed_loop<F, Fut>(opts: &BenchOptions, concurrency: usize, op: F) -> Throughput
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + opts.max_duration;
    let max_tasks = opts.max_tasks;
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (op, next, errors, done) = (
            Arc::clone(&op),
            Arc::clone(&next),
            Arc::clone(&errors),
            Arc::clone(&done),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= max_tasks || Instant::now() >= deadline {
                    break;
                }
                if op(i).await {
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let seconds = start.elapsed().as_secs_f64();
    let ops = done.load(Ordering::Relaxed);
    Throughput {
        ops,
        errors: errors.load(Ordering::Relaxed),
        seconds,
        per_second: ops as f64 / seconds.max(1e-9),
        concurrency,
    }
}

/// A directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One append + `fdatasync` on a shared append-only file.
fn raw_durable_write(file: &std::fs::File, record: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = file;
    f.write_all(record)?;
    file.sync_data()
}

/// Raw durable writes on this disk: one at a time, at the open-loop rate, and many at once.
async fn raw_fsync(
    dir: &std::path::Path,
    opts: &BenchOptions,
) -> Result<(Latency, OpenLoop, Throughput), QueueError> {
    let io = |e: std::io::Error| QueueError::storage("raw fsync loop", e);
    let file = Arc::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("raw-fsync.bin"))
            .map_err(io)?,
    );
    let record: Arc<[u8]> = vec![b'r'; opts.body_bytes].into();

    let (f, r, samples) = (Arc::clone(&file), Arc::clone(&record), opts.raw_samples);
    let sequential = tokio::task::spawn_blocking(move || {
        let mut h = histogram();
        for _ in 0..samples {
            let t = Instant::now();
            raw_durable_write(&f, &r)?;
            let _ = h.record(micros(t.elapsed()));
        }
        Ok::<_, std::io::Error>(Latency::of(&h))
    })
    .await
    .map_err(|e| QueueError::storage("raw fsync loop", e))?
    .map_err(io)?;

    let write = move |file: Arc<std::fs::File>, record: Arc<[u8]>| async move {
        tokio::task::spawn_blocking(move || raw_durable_write(&file, &record).is_ok())
            .await
            .unwrap_or(false)
    };
    let (f, r) = (Arc::clone(&file), Arc::clone(&record));
    let open = open_loop(opts, move |_| write(Arc::clone(&f), Arc::clone(&r))).await;
    // Blocking threads, not tasks: cap them.
    let (f, r) = (Arc::clone(&file), Arc::clone(&record));
    let tp = closed_loop(opts, opts.concurrency.min(64), move |_| {
        write(Arc::clone(&f), Arc::clone(&r))
    })
    .await;
    Ok((sequential, open, tp))
}

async fn bench_embedded(opts: &BenchOptions) -> Result<BackendBench, QueueError> {
    let mut out = BackendBench::new(
        Backend::Embedded,
        "append + fdatasync of one task-sized record, same directory",
    );
    let scratch = Scratch(opts.dir.join(run_id()));
    std::fs::create_dir_all(&scratch.0).map_err(|e| QueueError::storage("create bench dir", e))?;
    let (seq, open, tp) = raw_fsync(&scratch.0, opts).await?;
    out.raw_sequential = Some(seq);
    out.raw_open_loop = Some(open);
    out.raw_throughput = Some(tp);

    let queue = Arc::new(
        EmbeddedQueue::open(EmbeddedOptions {
            max_tasks: opts.max_tasks.saturating_mul(4).max(1_000_000),
            max_bytes: 1 << 34,
            ..EmbeddedOptions::at(scratch.0.join("queue"))
        })
        .await?,
    );
    let commits_before = queue.commits();
    let (open, tp) = measure_queue(queue.clone() as Arc<dyn Queue>, opts).await;
    let commits = queue.commits().saturating_sub(commits_before);
    let enqueued = tp.ops + (open.latency.count);
    out.tasks_per_commit = Some(enqueued as f64 / commits.max(1) as f64);
    out.enqueue_open_loop = Some(open);
    out.enqueue_throughput = Some(tp);
    drop(queue);
    drop(scratch);
    Ok(out.finish())
}

#[cfg(feature = "nats")]
async fn bench_nats(opts: &BenchOptions) -> Result<BackendBench, QueueError> {
    use crate::nats::{NatsOptions, NatsQueue};
    use async_nats::jetstream;

    let mut out = BackendBench::new(
        Backend::Nats,
        "JetStream publish of one task-sized message awaiting its ack (file storage)",
    );
    let name = run_id();
    let broker = |what: &str, e: Box<dyn std::error::Error + Send + Sync>| {
        QueueError::broker("nats", what.to_owned(), e)
    };
    let client = async_nats::connect(opts.nats_url.as_str())
        .await
        .map_err(|e| broker("connect", e.into()))?;
    let js = jetstream::new(client);
    let raw_name = format!("{name}_raw");
    let raw_subject = format!("{raw_name}.x");
    js.create_stream(jetstream::stream::Config {
        name: raw_name.clone(),
        subjects: vec![raw_subject.clone()],
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| broker("create raw stream", e.into()))?;
    let payload = bench_task(0, opts.body_bytes).encode()?;
    let publish = move |js: jetstream::Context, subject: String, payload: Vec<u8>| async move {
        match js.publish(subject, payload.into()).await {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        }
    };
    let mut h = histogram();
    let mut raw_error = None;
    for _ in 0..opts.raw_samples {
        let t = Instant::now();
        if publish(js.clone(), raw_subject.clone(), payload.clone()).await {
            let _ = h.record(micros(t.elapsed()));
        } else {
            raw_error = Some("raw publish failed");
            break;
        }
    }
    let (j, s, p) = (js.clone(), raw_subject.clone(), payload.clone());
    let raw_open = open_loop(opts, move |_| publish(j.clone(), s.clone(), p.clone())).await;
    let (j, s, p) = (js.clone(), raw_subject.clone(), payload.clone());
    let raw_tp = closed_loop(opts, opts.concurrency, move |_| {
        publish(j.clone(), s.clone(), p.clone())
    })
    .await;
    let _ = js.delete_stream(&raw_name).await;
    if let Some(e) = raw_error {
        return Err(broker(e, e.into()));
    }
    out.raw_sequential = Some(Latency::of(&h));
    out.raw_open_loop = Some(raw_open);
    out.raw_throughput = Some(raw_tp);

    let queue = Arc::new(
        NatsQueue::connect(NatsOptions {
            url: opts.nats_url.clone(),
            stream: name.clone(),
            consumer: format!("{name}_c"),
            max_bytes: 1 << 34,
            max_tasks: 10_000_000,
            max_task_bytes: 512 * 1024,
            retry_after: Duration::from_secs(1),
            lease_timeout: Duration::from_secs(30),
            status: crate::StatusLimits::default(),
            max_age: Duration::from_secs(3600),
        })
        .await?,
    );
    let (open, tp) = measure_queue(queue.clone() as Arc<dyn Queue>, opts).await;
    let _ = queue.destroy().await;
    out.enqueue_open_loop = Some(open);
    out.enqueue_throughput = Some(tp);
    Ok(out.finish())
}

#[cfg(not(feature = "nats"))]
async fn bench_nats(_opts: &BenchOptions) -> Result<BackendBench, QueueError> {
    Err(QueueError::Config(
        "built without the `nats` feature".into(),
    ))
}

#[cfg(feature = "rabbitmq")]
async fn bench_rabbitmq(opts: &BenchOptions) -> Result<BackendBench, QueueError> {
    use crate::rabbitmq::{RabbitOptions, RabbitQueue};
    use lapin::options::{
        BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
    };
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

    let mut out = BackendBench::new(
        Backend::Rabbitmq,
        "persistent publish of one task-sized message to a durable queue awaiting its confirm",
    );
    let name = run_id();
    let broker = |what: &str, e: lapin::Error| QueueError::broker("rabbitmq", what.to_owned(), e);
    let conn = Connection::connect(&opts.rabbitmq_url, ConnectionProperties::default())
        .await
        .map_err(|e| broker("connect", e))?;
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| broker("channel", e))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| broker("confirm_select", e))?;
    let raw_queue = format!("{name}.raw");
    channel
        .queue_declare(
            raw_queue.as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| broker("declare raw queue", e))?;
    let payload: Arc<[u8]> = bench_task(0, opts.body_bytes).encode()?.into();
    let publish = move |ch: Channel, queue: String, payload: Arc<[u8]>| async move {
        let props = BasicProperties::default().with_delivery_mode(2);
        match ch
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &payload,
                props,
            )
            .await
        {
            Ok(confirm) => matches!(confirm.await, Ok(c) if c.is_ack()),
            Err(_) => false,
        }
    };
    let mut h = histogram();
    let mut raw_ok = true;
    for _ in 0..opts.raw_samples {
        let t = Instant::now();
        if publish(channel.clone(), raw_queue.clone(), Arc::clone(&payload)).await {
            let _ = h.record(micros(t.elapsed()));
        } else {
            raw_ok = false;
            break;
        }
    }
    let (c, q, p) = (channel.clone(), raw_queue.clone(), Arc::clone(&payload));
    let raw_open = open_loop(opts, move |_| publish(c.clone(), q.clone(), Arc::clone(&p))).await;
    let (c, q, p) = (channel.clone(), raw_queue.clone(), Arc::clone(&payload));
    let raw_tp = closed_loop(opts, opts.concurrency, move |_| {
        publish(c.clone(), q.clone(), Arc::clone(&p))
    })
    .await;
    let _ = channel
        .queue_delete(raw_queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    if !raw_ok {
        let _ = conn.close(200, "bench failed".into()).await;
        return Err(QueueError::Config(
            "rabbitmq: raw publish was not confirmed".into(),
        ));
    }
    out.raw_sequential = Some(Latency::of(&h));
    out.raw_open_loop = Some(raw_open);
    out.raw_throughput = Some(raw_tp);

    let queue = Arc::new(
        RabbitQueue::connect(RabbitOptions {
            url: opts.rabbitmq_url.clone(),
            queue: name.clone(),
            max_tasks: 10_000_000,
            max_bytes: 1 << 40,
            max_task_bytes: 512 * 1024,
            retry_after: Duration::from_secs(1),
        })
        .await?,
    );
    let (open, tp) = measure_queue(queue.clone() as Arc<dyn Queue>, opts).await;
    let _ = queue.destroy().await;
    let _ = conn.close(200, "bench done".into()).await;
    out.enqueue_open_loop = Some(open);
    out.enqueue_throughput = Some(tp);
    Ok(out.finish())
}

#[cfg(not(feature = "rabbitmq"))]
async fn bench_rabbitmq(_opts: &BenchOptions) -> Result<BackendBench, QueueError> {
    Err(QueueError::Config(
        "built without the `rabbitmq` feature".into(),
    ))
}
