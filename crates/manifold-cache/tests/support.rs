//! Shared helpers: unique prefixes, a counting fetcher, a raw Redis client, a private
//! `redis-server` child, and the private-server child it shares with the memcached helpers.

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::StatusCode;
use manifold_cache::{Cache, CacheSettings, CachedResponse, RedisSettings};
use tokio::sync::Semaphore;

pub(crate) const SHARED_REDIS: &str = "redis://127.0.0.1:6379";

/// A key prefix unique to this test run and test, so parallel runs never meet.
pub(crate) fn unique_prefix(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("manifold-test:{}:{nanos}:{test}:", std::process::id())
}

pub(crate) fn redis_settings(url: &str, prefix: &str) -> RedisSettings {
    RedisSettings {
        url: url.to_owned(),
        prefix: prefix.to_owned(),
        // Generous for a loaded 2-core CI machine; the outage tests prove the bound matters.
        timeout: Duration::from_millis(500),
        retry_after: Duration::from_millis(200),
    }
}

pub(crate) fn cache_with(url: &str, prefix: &str) -> Cache {
    Cache::new(CacheSettings {
        redis: Some(redis_settings(url, prefix)),
        ..CacheSettings::default()
    })
    .unwrap()
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct UpstreamDown;

/// A fetcher that counts calls and, optionally, holds each call until the test releases it.
#[derive(Clone)]
pub(crate) struct Upstream {
    calls: Arc<AtomicUsize>,
    gate: Option<Arc<Semaphore>>,
}

pub(crate) type FetchFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<CachedResponse, UpstreamDown>> + Send>,
>;

impl Upstream {
    pub(crate) fn new() -> Self {
        Self {
            calls: Arc::new(AtomicUsize::new(0)),
            gate: None,
        }
    }

    /// Every call waits for one permit from `release`.
    pub(crate) fn gated() -> Self {
        Self {
            calls: Arc::new(AtomicUsize::new(0)),
            gate: Some(Arc::new(Semaphore::new(0))),
        }
    }

    pub(crate) fn release(&self, n: usize) {
        if let Some(g) = &self.gate {
            g.add_permits(n);
        }
    }

    pub(crate) fn calls(&self) -> usize {
        self.calls.load(SeqCst)
    }

    pub(crate) fn fetch(&self, delay: Duration) -> impl FnOnce() -> FetchFuture + Send + 'static {
        let calls = self.calls.clone();
        let gate = self.gate.clone();
        move || {
            Box::pin(async move {
                let n = calls.fetch_add(1, SeqCst) + 1;
                if let Some(g) = gate {
                    g.acquire().await.unwrap().forget();
                }
                tokio::time::sleep(delay).await;
                Ok(CachedResponse::new(
                    StatusCode::OK,
                    Bytes::from(format!("v{n}")),
                ))
            })
        }
    }
}

pub(crate) fn body(r: &CachedResponse) -> String {
    String::from_utf8(r.body.to_vec()).unwrap()
}

/// A plain connection for looking at Redis directly.
pub(crate) async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Keys under `prefix` (SCAN, so it is safe on the shared instance).
pub(crate) async fn keys_under(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .unwrap();
        out.extend(keys);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    out.sort();
    out
}

/// Removes everything the test wrote (entries and locks). Entries carry expiries too, so a
/// failed test leaves nothing behind for long.
pub(crate) async fn cleanup(url: &str, prefix: &str) {
    let mut conn = raw(url).await;
    for key in keys_under(&mut conn, prefix).await {
        let _: i64 = redis::cmd("UNLINK")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    assert!(keys_under(&mut conn, prefix).await.is_empty());
}

/// Polls `check` every 10 ms for up to 10 s.
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1_000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A server child on its own loopback port, killed on drop: what the private `redis-server` and
/// `memcached` share (spawning with output discarded, waiting until it answers, stopping).
pub(crate) struct PrivateChild {
    child: Option<tokio::process::Child>,
    pub(crate) port: u16,
}

impl PrivateChild {
    /// Spawns `cmd` (panicking with `missing` when it cannot) and polls `answers` until the
    /// server is up.
    pub(crate) async fn spawn<F, Fut>(
        mut cmd: tokio::process::Command,
        port: u16,
        missing: &str,
        what: &str,
        answers: F,
    ) -> Self
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect(missing);
        eventually(what, answers).await;
        Self {
            child: Some(child),
            port,
        }
    }

    /// A loopback port free at the time of asking.
    pub(crate) fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Kills the server and waits until it is gone.
    pub(crate) async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }
}

impl Drop for PrivateChild {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// A private `redis-server` on its own port, killed on drop. Never the shared one on 6379.
pub(crate) struct PrivateRedis(PrivateChild);

impl std::ops::Deref for PrivateRedis {
    type Target = PrivateChild;
    fn deref(&self) -> &PrivateChild {
        &self.0
    }
}

impl std::ops::DerefMut for PrivateRedis {
    fn deref_mut(&mut self) -> &mut PrivateChild {
        &mut self.0
    }
}

impl PrivateRedis {
    pub(crate) async fn start_on(port: u16) -> Self {
        let mut cmd = tokio::process::Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        let url = format!("redis://127.0.0.1:{port}");
        let client = redis::Client::open(url.as_str()).unwrap();
        let missing = "redis-server must be installed (apt-get install redis-server)";
        Self(
            PrivateChild::spawn(
                cmd,
                port,
                missing,
                "private redis-server answers PING",
                || {
                    let client = client.clone();
                    async move {
                        match client.get_multiplexed_async_connection().await {
                            Ok(mut c) => redis::cmd("PING")
                                .query_async::<String>(&mut c)
                                .await
                                .is_ok(),
                            Err(_) => false,
                        }
                    }
                },
            )
            .await,
        )
    }

    pub(crate) async fn start() -> Self {
        Self::start_on(PrivateChild::free_port()).await
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}
