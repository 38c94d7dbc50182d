//! The drivers every measurement shares: an open loop at a fixed rate (latency from scheduled
//! times) and a closed loop of back-to-back workers (throughput).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{bench_task, histogram, micros, BenchOptions, Latency, OpenLoop, Throughput};
use crate::queue::Queue;

/// Starts `rate · duration` operations at fixed times, each in its own task, and measures each
/// from its scheduled time and from its actual start.
pub(super) async fn open_loop<F, Fut>(opts: &BenchOptions, op: F) -> OpenLoop
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
pub(super) async fn measure_queue(
    queue: Arc<dyn Queue>,
    opts: &BenchOptions,
) -> (OpenLoop, Throughput) {
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
pub(super) async fn closed_loop<F, Fut>(
    opts: &BenchOptions,
    concurrency: usize,
    op: F,
) -> Throughput
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
