//! Several `manifold serve` processes with one config behave as one gateway: they share the
//! Redis tier and the NATS JetStream or RabbitMQ queue (real Redis :6379, NATS :4222 and
//! RabbitMQ :5672 on loopback).
//!
//! - a call result cached by one replica is a hit (`hit-l2`) on another;
//! - a purge on one replica reaches the other's in-process tier;
//! - each replica's `/readyz` reflects its own dependencies (Redis, the queue's broker), checked
//!   through relays that take them away from one replica only;
//! - tasks accepted by a replica killed with `kill -9` mid-delivery are delivered by the other
//!   (NATS JetStream, and RabbitMQ with its statuses in Redis), which also answers their status;
//! - the embedded queue is single-node: a second process on its path is refused, and `manifold
//!   check` says so.
//!
//! Every wait is for an observed event, bounded by [`WAIT`]; every process, relay, stream and
//! directory is owned by a guard, so a failing assertion leaves nothing behind. Each test has its
//! own Redis key prefix and NATS stream (see [`unique`]).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use manifold_queue::test_support::Relay;
use tokio::time::Instant;

use crate::offload::{
    assert_all_delivered, reserve_addr, unique, Backend, Gateway, Store, Upstream, NATS_URL, QUICK,
    WAIT,
};

const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// A plain HTTP/1.1 exchange: `(status, lower-cased headers, body)`.
fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, BTreeMap<String, String>, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {out:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

/// The `Manifold-Cache` outcome of `GET /items/{id}` on `gateway`.
fn item(gateway: &Gateway, id: u32) -> String {
    let (status, headers, body) = http(gateway.addr, "GET", &format!("/items/{id}"));
    assert_eq!(status, 200, "GET /items/{id}: {body}");
    headers
        .get("manifold-cache")
        .cloned()
        .unwrap_or_else(|| panic!("no manifold-cache header: {headers:?}"))
}

/// Polls `probe` until it gives `Some`, for at most [`WAIT`], 50 ms apart (each poll is one
/// request to a gateway: the event waited for is observed, not assumed).
fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    eventually_saying(what, || probe().ok_or_else(String::new))
}

/// [`eventually`] whose probe says what it saw instead, shown if it times out.
fn eventually_saying<T>(what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        let seen = match probe() {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?}: {what}; last seen: {seen}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `gateway` has written `n` entries to Redis (its `GET /cache` counters): the
/// write follows the answer, so a client may otherwise ask another replica before it lands.
fn stored(gateway: &Gateway, n: u64) {
    eventually("the entry written to Redis", || {
        let (status, _, body) = http(gateway.admin, "GET", "/cache");
        assert_eq!(status, 200, "{body}");
        let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
        (stats["l2"]["writes"].as_u64() >= Some(n)).then_some(())
    });
}

/// `GET /readyz` on the admin listener: `(status, body)`.
fn readyz(gateway: &Gateway) -> (u16, String) {
    let (status, _, body) = http(gateway.admin, "GET", "/readyz");
    (status, body)
}

/// The replicas' config: `GET /items/{id}` is one cached call to the upstream (key
/// `shipping GET /items/{id}`), `POST /labels` one async call; Redis and NATS at the given URLs,
/// under this test's own key prefix and stream.
fn write_config(store: &Store, upstream: SocketAddr, redis: &str, nats: &str) -> PathBuf {
    let queue = store.queue_toml().replace(NATS_URL, nats);
    let text = format!(
        r#"[cache]
redis = "{redis}"
prefix = "{prefix}:"

{queue}
[upstreams.shipping]
endpoints = ["http://{upstream}"]
timeout = "2s"
connect_timeout = "200ms"

[routes.item]
method = "GET"
path = "/items/{{id}}"
  [[routes.item.calls]]
  name = "item"
  upstream = "shipping"
  path = "/items/{{path.id}}"
  cache = {{ ttl = "5m" }}
  [routes.item.response]
  body = {{ item = "{{item}}" }}

[routes.labels]
method = "POST"
path = "/labels"
  [[routes.labels.calls]]
  name = "ship"
  upstream = "shipping"
  method = "POST"
  path = "/shipping/labels"
  body = "{{request.body}}"
  mode = "async"
  [routes.labels.response]
  status = 202
  body = {{ task = "{{ship.task_id}}" }}
"#,
        prefix = store.stream
    );
    let path = store.dir.join(format!("replicas-{}.toml", unique("cfg")));
    std::fs::write(&path, text).unwrap();
    path
}

/// How many requests the upstream received for `path`'s item (cached calls carry no body).
fn fetches(upstream: &Upstream) -> usize {
    upstream
        .log()
        .received
        .iter()
        .filter(|(_, n)| *n == u64::MAX)
        .count()
}

/// Item 5, cache: a result cached by A is a hit on B (through Redis, the upstream asked once);
/// a purge on A reaches B's in-process tier; each replica's `/readyz` reflects its own Redis
/// and queue, as seen through relays that cut them from replica C only.
#[test]
fn replicas_share_the_redis_tier_and_purges_reach_every_l1() {
    let store = Store::new(Backend::Nats, "cache");
    let upstream = Upstream::start(reserve_addr(), None);
    let shared = write_config(&store, upstream.addr, REDIS_URL, NATS_URL);
    let log = store.dir.join("gateways.log");
    let a = Gateway::start(&shared, &log);
    let b = Gateway::start(&shared, &log);

    // Both replicas are ready and say what they checked.
    for g in [&a, &b] {
        let body = eventually("a replica subscribed to purge broadcasts", || {
            let (status, body) = readyz(g);
            (status == 200 && body.contains("purge broadcast subscribed")).then_some(body)
        });
        assert!(body.starts_with("ready\n"), "{body}");
        assert!(body.contains("cache: ok, redis reachable"), "{body}");
        assert!(body.contains("queue: ok, nats reachable"), "{body}");
    }

    // L2: A fetches and stores, B finds it in Redis; the upstream was asked once.
    assert_eq!(item(&a, 1), "item=miss");
    stored(&a, 1);
    assert_eq!(item(&b, 1), "item=hit-l2");
    assert_eq!(item(&b, 1), "item=hit", "now in B's own memory");
    assert_eq!(fetches(&upstream), 1);

    // Purge on A: B's in-process copy goes too (without the broadcast B answers `hit` for the
    // next 5 minutes).
    let (status, _, body) = http(a.admin, "DELETE", "/cache?prefix=shipping%20GET%20/items/1");
    assert_eq!(status, 200, "{body}");
    eventually("B's in-process entry purged by A's broadcast", || {
        (item(&b, 1) == "item=miss").then_some(())
    });
    assert_eq!(fetches(&upstream), 2);
    // Another prefix is left alone.
    assert_eq!(item(&a, 2), "item=miss");
    stored(&a, 2);
    assert_eq!(item(&b, 2), "item=hit-l2");
    let (status, _, _) = http(b.admin, "DELETE", "/cache?prefix=shipping%20GET%20/items/9");
    assert_eq!(status, 200);
    assert_eq!(item(&b, 2), "item=hit");

    // Readiness: replica C reaches Redis and NATS through relays that can be cut.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let redis_relay = rt.block_on(Relay::start("127.0.0.1:6379")).unwrap();
    let nats_relay = rt.block_on(Relay::start("127.0.0.1:4222")).unwrap();
    let relayed = write_config(
        &store,
        upstream.addr,
        &format!("redis://{}", redis_relay.addr),
        &format!("nats://{}", nats_relay.addr),
    );
    let c = Gateway::start(&relayed, &log);
    eventually("C ready", || (readyz(&c).0 == 200).then_some(()));

    redis_relay.cut();
    let body = eventually("C unready without its Redis", || {
        let (status, body) = readyz(&c);
        (status == 503).then_some(body)
    });
    assert!(body.starts_with("not ready: cache\n"), "{body}");
    assert!(body.contains("cache: FAILING, redis"), "{body}");
    assert!(body.contains("queue: ok"), "{body}");
    assert_eq!(readyz(&a).0, 200, "A's Redis is fine: A stays ready");
    // C still serves (the cache degrades to its memory tier and the upstream).
    let (status, _, _) = http(c.addr, "GET", "/items/3");
    assert_eq!(status, 200);
    redis_relay.restore();
    eventually("C ready again with its Redis back", || {
        (readyz(&c).0 == 200).then_some(())
    });

    nats_relay.cut();
    let body = eventually("C unready without its queue", || {
        let (status, body) = readyz(&c);
        (status == 503).then_some(body)
    });
    assert!(body.starts_with("not ready: queue\n"), "{body}");
    assert!(body.contains("queue: FAILING, nats"), "{body}");
    assert_eq!(readyz(&b).0, 200, "B's queue is fine: B stays ready");
    nats_relay.restore();
    eventually("C ready again with its queue back", || {
        (readyz(&c).0 == 200).then_some(())
    });
    drop(c);
    drop(rt);
}

/// Item 5, queue: replica A accepts tasks and is killed (`kill -9`) while the upstream holds
/// some of its deliveries unanswered; replica B, running beside it, delivers every task A
/// accepted (after the consumer's `ack_wait`, the test's `lease_timeout = "3s"`) and its own,
/// each with its idempotency key. Delivery is at least once: duplicates are counted and shown,
/// not failed.
#[test]
fn tasks_of_a_replica_killed_mid_delivery_are_delivered_by_another() {
    killed_replica(Backend::Nats, "kill");
}

/// The same with RabbitMQ: the broker hands the killed replica's unacked deliveries back when its
/// connection drops, and the task statuses live in Redis, so B answers for A's tasks too.
#[test]
fn rabbitmq_tasks_of_a_replica_killed_mid_delivery_are_delivered_by_another() {
    killed_replica(Backend::RabbitMq, "kill-rabbit");
}

/// A accepts tasks and is killed mid-delivery; B delivers them all (each key at least once) and
/// answers `GET /tasks/{id}` with `done` for every task, A's included: the status is shared (NATS
/// key-value bucket, or Redis beside RabbitMQ), not held by the replica that accepted the task.
fn killed_replica(backend: Backend, tag: &str) {
    let store = Store::new(backend, tag);
    let upstream = Upstream::start(reserve_addr(), Some(QUICK));
    let config = write_config(&store, upstream.addr, REDIS_URL, NATS_URL);
    let gateways_log = store.dir.join("gateways.log");

    let a = Gateway::start(&config, &gateways_log);
    let mut tasks = a.accept(0..30);
    upstream.wait_until("A's deliveries held mid-flight", |log| {
        (log.answered.len() >= QUICK && log.held > 0).then_some(())
    });
    let b = Gateway::start(&config, &gateways_log);
    a.crash();
    upstream.release();
    tasks.extend(b.accept(30..40));

    assert_all_delivered(&upstream, &tasks);
    let log = upstream.log();
    let mut per_key: BTreeMap<&str, usize> = BTreeMap::new();
    for (key, _) in &log.answered {
        *per_key.entry(key.as_str()).or_default() += 1;
    }
    let duplicates: usize = per_key.values().map(|n| n - 1).sum();
    eprintln!(
        "{} tasks, {} answered deliveries, {duplicates} duplicate(s) (at least once; the \
         idempotency key makes them one at an idempotent upstream)",
        tasks.len(),
        log.answered.len()
    );
    assert_eq!(per_key.len(), tasks.len(), "exactly the accepted keys");
    for id in tasks.values() {
        let path = format!("/tasks/{id}");
        eventually_saying(&format!("B answers {path} with done"), || {
            let (status, _, body) = http(b.addr, "GET", &path);
            let task: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if status == 200 && task["status"] == "done" {
                return Ok(());
            }
            let warnings = std::fs::read_to_string(&gateways_log).unwrap_or_default();
            let warnings: Vec<&str> = warnings
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .collect();
            Err(format!(
                "{status} {body}; the gateways' warnings and errors:\n{}",
                warnings[warnings.len().saturating_sub(20)..].join("\n")
            ))
        });
    }
    drop(b);
}

/// Item 5, embedded queue: single-node. A second `manifold serve` on the same queue path is
/// refused at start with an error naming the file, and `manifold check` says so.
#[test]
fn a_second_gateway_on_the_same_embedded_queue_is_refused() {
    let store = Store::new(Backend::Embedded, "embedded");
    let upstream = Upstream::start(reserve_addr(), None);
    let config = store.dir.join("embedded.toml");
    let text = format!(
        r#"{}
[cache]
redis = "{REDIS_URL}"
prefix = "{}:"

[upstreams.shipping]
endpoints = ["http://{}"]

[routes.labels]
method = "POST"
path = "/labels"
  [[routes.labels.calls]]
  name = "ship"
  upstream = "shipping"
  method = "POST"
  path = "/shipping/labels"
  mode = "async"
"#,
        store.queue_toml(),
        store.stream,
        upstream.addr
    );
    std::fs::write(&config, text).unwrap();

    let check = Command::new(env!("CARGO_BIN_EXE_manifold"))
        .args(["check", "-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{stderr}");
    assert!(stderr.contains("warning: the embedded queue ("), "{stderr}");
    assert!(stderr.contains("is single-node"), "{stderr}");
    assert!(stderr.contains("backend = \"nats\""), "{stderr}");

    let log = store.dir.join("gateway.log");
    let _first = Gateway::start(&config, &log);
    let mut second = Command::new(env!("CARGO_BIN_EXE_manifold"))
        .args(["serve", "-c", config.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = second.kill();
            let _ = second.wait();
            panic!("a second gateway on the same embedded queue kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("queue.redb"), "{stderr}");
    assert!(stderr.contains("already open"), "{stderr}");
    assert!(
        stderr.contains("another process has it open") && stderr.contains("single-node"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&store.dir.join("queue").display().to_string()),
        "{stderr}"
    );
}
