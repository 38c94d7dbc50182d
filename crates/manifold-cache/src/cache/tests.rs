//! Behaviour of the in-process tier on paused time: TTL, stale windows, coalescing, errors.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use tokio::time::{advance, sleep};

use super::*;

#[derive(Clone, Debug, PartialEq)]
struct UpstreamDown;

/// A fake upstream call: counts invocations, waits `delay` (on paused time), answers `status`
/// with a body naming the invocation number.
#[derive(Clone)]
struct Upstream {
    calls: Arc<AtomicUsize>,
}

impl Upstream {
    fn new() -> Self {
        Self {
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(SeqCst)
    }

    fn fetch(
        &self,
        delay: Duration,
        status: u16,
    ) -> impl FnOnce() -> std::pin::Pin<
        Box<dyn Future<Output = Result<CachedResponse, UpstreamDown>> + Send>,
    > + Send
           + 'static {
        let calls = self.calls.clone();
        move || {
            Box::pin(async move {
                let n = calls.fetch_add(1, SeqCst) + 1;
                sleep(delay).await;
                Ok(CachedResponse::new(
                    StatusCode::from_u16(status).unwrap(),
                    Bytes::from(format!("v{n}")),
                ))
            })
        }
    }

    fn failing(
        &self,
        delay: Duration,
    ) -> impl FnOnce() -> std::pin::Pin<
        Box<dyn Future<Output = Result<CachedResponse, UpstreamDown>> + Send>,
    > + Send
           + 'static {
        let calls = self.calls.clone();
        move || {
            Box::pin(async move {
                calls.fetch_add(1, SeqCst);
                sleep(delay).await;
                Err(UpstreamDown)
            })
        }
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn cache() -> Cache {
    Cache::new(CacheSettings::default()).unwrap()
}

async fn get(
    cache: &Cache,
    policy: &CachePolicy,
    up: &Upstream,
    delay: Duration,
) -> Result<(String, Outcome), UpstreamDown> {
    cache
        .get_or_fetch(
            "users GET /users/1".to_owned(),
            policy,
            up.fetch(delay, 200),
        )
        .await
        .map(|(r, o)| (String::from_utf8(r.body.to_vec()).unwrap(), o))
}

/// Lets spawned flights run to completion on paused time.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    sleep(ms(1)).await;
}

async fn get_key(
    cache: &Cache,
    policy: &CachePolicy,
    up: &Upstream,
    key: &str,
) -> Result<(CachedResponse, Outcome), UpstreamDown> {
    cache
        .get_or_fetch(key.to_owned(), policy, up.fetch(ms(0), 200))
        .await
}

mod bounds;
mod coalescing;
mod freshness;
