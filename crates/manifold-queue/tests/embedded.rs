//! The embedded backend through the public entry point the gateway uses.

use crate::common::{task, TempDir};

#[tokio::test]
async fn embedded_backend_opens_from_queue_config() {
    let dir = TempDir::new("config");
    let cfg = manifold_queue::QueueConfig {
        path: dir.path().join("q"),
        ..manifold_queue::QueueConfig::default()
    };
    let q = manifold_queue::open(&cfg).await.unwrap();
    assert_eq!(q.backend(), manifold_queue::Backend::Embedded);
    q.enqueue(task(1)).await.unwrap();
    assert_eq!(q.stats().await.unwrap().depth, 1);
    let bad = manifold_queue::QueueConfig {
        max_attempts: 0,
        ..cfg
    };
    assert_eq!(
        manifold_queue::open(&bad).await.err().map(|e| e.kind()),
        Some(manifold_queue::ErrorKind::Config)
    );
}
