//! The offload benchmark's library entry point, small enough for a test run (a full run is
//! `manifold bench offload`).

use std::time::Duration;

use manifold_queue::bench::{self, BenchOptions};
use manifold_queue::Backend;

use crate::common::TempDir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_measures_every_backend_beside_its_raw_limit() {
    let dir = TempDir::new("bench");
    let mut backends = vec![Backend::Embedded];
    if cfg!(feature = "nats") {
        backends.push(Backend::Nats);
    }
    if cfg!(feature = "rabbitmq") {
        backends.push(Backend::Rabbitmq);
    }
    let opts = BenchOptions {
        backends: backends.clone(),
        dir: dir.path().to_path_buf(),
        rate: 200,
        duration: Duration::from_millis(500),
        concurrency: 16,
        max_tasks: 500,
        max_duration: Duration::from_secs(20),
        raw_samples: 20,
        ..BenchOptions::default()
    };
    let report = bench::run(&opts).await;
    assert_eq!(report.backends.len(), backends.len());
    for b in &report.backends {
        assert_eq!(b.skipped, None, "{} skipped", b.backend);
        assert_eq!(b.raw_sequential.unwrap().count, 20, "{}", b.backend);
        let raw = b.raw_open_loop.unwrap();
        assert_eq!((raw.latency.count, raw.errors), (100, 0), "{}", b.backend);
        let open = b.enqueue_open_loop.unwrap();
        assert_eq!(
            open.latency.count, 100,
            "{}: every enqueue recorded",
            b.backend
        );
        assert_eq!((open.service.count, open.errors), (100, 0), "{}", b.backend);
        assert!(open.service.p50_us <= open.latency.p50_us, "{}", b.backend);
        assert!(b.raw_throughput.unwrap().ops > 0, "{}", b.backend);
        let tp = b.enqueue_throughput.unwrap();
        assert_eq!((tp.ops, tp.errors), (500, 0), "{}", b.backend);
        assert!(b.p99_ratio.is_some());
    }
    let embedded = &report.backends[0];
    assert_eq!(embedded.backend, Backend::Embedded.as_str());
    assert!(embedded.tasks_per_commit.unwrap() >= 1.0);
    // The scratch directory is cleaned up.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
