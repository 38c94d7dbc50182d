//! NATS beside its physical limit: a JetStream publish awaiting its ack (file storage).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::loops::{closed_loop, measure_queue, open_loop};
use super::{bench_task, histogram, micros, run_id, BackendBench, BenchOptions, Latency};
use crate::error::QueueError;
use crate::queue::Queue;
use crate::Backend;

pub(super) async fn bench_nats(opts: &BenchOptions) -> Result<BackendBench, QueueError> {
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
