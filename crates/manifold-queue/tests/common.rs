//! Helpers shared by the integration tests.
// The broker modules use the delivery helpers; an embedded-only build does not.
#![cfg_attr(not(any(feature = "nats", feature = "rabbitmq")), allow(dead_code))]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use manifold_queue::{Deliver, DeliveryError, Task, IDEMPOTENCY_KEY_HEADER};

/// A name unique to this test run and call: `<tag>_<pid>_<nanos>`.
pub(crate) fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("mqtest_{tag}_{}_{nanos}", std::process::id())
}

/// A directory removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn task(n: usize) -> Task {
    Task::new(
        format!("order-{n}.shipping"),
        "shipping",
        "POST",
        "/shipping/labels",
        vec![("content-type".into(), "application/json".into())],
        format!("{{\"order_id\":{n}}}").into_bytes(),
    )
}

/// Fails each task's first `fail_first` attempts (503), then accepts; records the
/// `Idempotency-Key` of every attempt per task id.
pub(crate) struct Flaky {
    pub(crate) fail_first: usize,
    pub(crate) attempts: Mutex<HashMap<String, Vec<String>>>,
}

impl Flaky {
    pub(crate) fn new(fail_first: usize) -> Self {
        Flaky {
            fail_first,
            attempts: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn seen(&self) -> HashMap<String, Vec<String>> {
        self.attempts.lock().unwrap().clone()
    }
}

impl Deliver for Flaky {
    async fn deliver(&self, task: &Task) -> Result<(), DeliveryError> {
        let key = task
            .delivery_headers()
            .find(|(n, _)| *n == IDEMPOTENCY_KEY_HEADER)
            .map(|(_, v)| v.to_owned())
            .unwrap_or_default();
        let n = {
            let mut all = self.attempts.lock().unwrap();
            let seen = all.entry(task.id.clone()).or_default();
            seen.push(key);
            seen.len()
        };
        if n <= self.fail_first {
            Err(DeliveryError::from_status(503))
        } else {
            Ok(())
        }
    }
}

/// Polls `done` every 20 ms for at most 60 s (a bound, not a timing assertion).
pub(crate) async fn wait_until(mut done: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not reached within 60 s");
}
