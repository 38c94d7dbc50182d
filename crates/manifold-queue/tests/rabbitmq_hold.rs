//! Tasks waiting on a long retry delay do not hold the whole RabbitMQ prefetch: a due task
//! behind more waiting tasks than the consumer may hold unacked is still delivered (against the
//! real RabbitMQ on 127.0.0.1:5672).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use manifold_queue::test_support::DropRabbit;
use manifold_queue::{Queue, RabbitOptions, RabbitQueue};

use crate::common::{task, unique};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// More than the consumer's prefetch (2,000).
const WAITING: usize = 2_100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_task_behind_a_prefetch_of_waiting_ones_is_delivered() {
    let name = unique("rmq_hold");
    let _cleanup = DropRabbit {
        url: URL,
        queues: vec![name.clone(), format!("{name}.dead")],
        exchanges: Vec::new(),
    };
    let q = RabbitQueue::connect(options(&name)).await.unwrap();
    let in_an_hour = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 3_600_000;
    // As after one upstream answered 503 with `Retry-After: 3600` to many tasks.
    for n in 0..WAITING {
        let mut t = task(n);
        t.not_before = in_an_hour;
        q.enqueue(t).await.unwrap();
    }
    let due = task(WAITING);
    let due_id = due.id.clone();
    q.enqueue(due).await.unwrap();

    let found = async {
        loop {
            let mut leases = q.lease(10, Duration::from_millis(500)).await.unwrap();
            assert!(leases.len() <= 1, "tasks an hour early were leased");
            if let Some(lease) = leases.pop() {
                assert_eq!(lease.task.id, due_id, "a task an hour early was leased");
                q.ack(lease).await.unwrap();
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), found)
        .await
        .expect("the due task never came: the waiting ones held the whole prefetch");
    // Every waiting task is still in the queue (parked back, or held and returned when the
    // consumer's channel closed), none lost: a replica without a consumer counts them ready.
    q.close().await.unwrap();
    drop(q);
    let counter = RabbitQueue::connect(options(&name)).await.unwrap();
    let mut depth = 0;
    for _ in 0..100 {
        depth = counter.stats().await.unwrap().depth;
        if depth == WAITING as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        depth, WAITING as u64,
        "waiting tasks were lost or duplicated"
    );
    counter.close().await.unwrap();
}

fn options(name: &str) -> RabbitOptions {
    RabbitOptions {
        url: URL.into(),
        queue: name.into(),
        max_tasks: 10_000,
        max_bytes: 64 << 20,
        max_task_bytes: 64 * 1024,
        retry_after: Duration::from_secs(1),
    }
}
