//! The embedded queue beside its physical limit: appends with `fdatasync` in the same directory.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::time::Instant;

use super::loops::{closed_loop, measure_queue, open_loop};
use super::{histogram, micros, run_id, BackendBench, BenchOptions, Latency, OpenLoop, Throughput};
use crate::embedded::{EmbeddedOptions, EmbeddedQueue};
use crate::error::QueueError;
use crate::queue::Queue;
use crate::Backend;

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

pub(super) async fn bench_embedded(opts: &BenchOptions) -> Result<BackendBench, QueueError> {
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
