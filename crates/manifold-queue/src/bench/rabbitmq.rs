//! RabbitMQ beside its physical limit: a persistent publish to a durable queue awaiting its
//! confirm.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::loops::{closed_loop, measure_queue, open_loop};
use super::{bench_task, histogram, micros, run_id, BackendBench, BenchOptions, Latency};
use crate::error::QueueError;
use crate::queue::Queue;
use crate::Backend;

pub(super) async fn bench_rabbitmq(opts: &BenchOptions) -> Result<BackendBench, QueueError> {
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
