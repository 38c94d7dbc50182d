//! Caching through the whole gateway: real upstreams, the real Redis on 127.0.0.1:6379 under a
//! prefix unique to each test (removed afterwards), and a private `redis-server` for the outage.

use crate::support::*;
use serde_json::json;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SHARED_REDIS: &str = "redis://127.0.0.1:6379";

pub(crate) fn unique_prefix(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("manifold-gw-test:{}:{nanos}:{test}:", std::process::id())
}

async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn keys_under(conn: &mut redis::aio::MultiplexedConnection, prefix: &str) -> Vec<String> {
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
            return out;
        }
        cursor = next;
    }
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

pub(crate) fn cache_header(h: &http::HeaderMap) -> String {
    h.get("manifold-cache")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

pub(crate) async fn admin_json(gw: &TestGateway, method: &str, path: &str) -> serde_json::Value {
    let (s, _, b) = send(method, &format!("http://{}{path}", gw.admin), None).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    json(&b)
}

/// A profile route whose `user` call is cached and whose `orders` call is not.
pub(crate) fn profile_config(up: &Upstream, cache_section: &str, policy: &str) -> String {
    format!(
        r#"
{cache_section}
[upstreams.users]
endpoints = ["{url}"]
[upstreams.orders]
endpoints = ["{url}"]

[routes.profile]
path = "/profile/{{id}}"
  [[routes.profile.calls]]
  name = "user"
  upstream = "users"
  path = "/users/{{path.id}}"
  cache = {policy}
  [[routes.profile.calls]]
  name = "orders"
  upstream = "orders"
  path = "/orders"
  query = {{ user = "{{user.id}}" }}
"#,
        url = up.url()
    )
}

pub(crate) fn count(up: &Upstream, prefix: &str) -> usize {
    up.requests()
        .iter()
        .filter(|s| s.path_and_query.starts_with(prefix))
        .count()
}

#[tokio::test]
async fn repeated_keys_stop_reaching_the_upstream() {
    let up = Upstream::start(vec![
        (
            "GET",
            "/users/",
            Reply::json(0, json!({"id": 7, "name": "ada"})),
        ),
        ("GET", "/orders", Reply::json(0, json!([1, 2]))),
    ])
    .await;
    let prefix = unique_prefix("repeat");
    let gw = TestGateway::start(&profile_config(
        &up,
        &format!("[cache]\nredis = \"{SHARED_REDIS}\"\nprefix = \"{prefix}\""),
        r#"{ ttl = "60s" }"#,
    ))
    .await;

    let mut headers = Vec::new();
    for _ in 0..5 {
        let (s, h, b) = send("GET", &gw.url("/profile/7"), None).await;
        assert_eq!(s, 200);
        assert_eq!(
            json(&b),
            json!({"user": {"id": 7, "name": "ada"}, "orders": [1, 2]})
        );
        headers.push(cache_header(&h));
    }
    assert_eq!(headers[0], "user=miss");
    assert!(headers[1..].iter().all(|h| h == "user=hit"), "{headers:?}");
    assert_eq!(
        count(&up, "/users/7"),
        1,
        "the cached call reached the upstream once"
    );
    assert_eq!(count(&up, "/orders"), 5, "the uncached call is not cached");

    // Another key is another entry.
    let (_, h, _) = send("GET", &gw.url("/profile/8"), None).await;
    assert_eq!(cache_header(&h), "user=miss");
    assert_eq!(count(&up, "/users/8"), 1);

    let stats = admin_json(&gw, "GET", "/cache").await;
    let user = &stats["calls"]["profile.user"];
    assert_eq!(
        (user["hit"].as_u64(), user["miss"].as_u64()),
        (Some(4), Some(2)),
        "{stats}"
    );
    assert!(stats["l2"]["writes"].as_u64().unwrap() >= 1, "{stats}");

    // Purge one upstream's keys from both tiers: the next request goes upstream again.
    let purged = admin_json(&gw, "DELETE", "/cache?prefix=users%20GET%20/users/7").await;
    assert!(purged["removed"].as_u64().unwrap() >= 1, "{purged}");
    let (_, h, _) = send("GET", &gw.url("/profile/7"), None).await;
    assert_eq!(cache_header(&h), "user=miss");
    assert_eq!(count(&up, "/users/7"), 2);

    // A bare DELETE is refused rather than emptying everything.
    let (s, _, _) = send("DELETE", &format!("http://{}/cache", gw.admin), None).await;
    assert_eq!(s, 400);
    admin_json(&gw, "DELETE", "/cache?prefix=").await;
    let mut conn = redis_conn(SHARED_REDIS).await;
    assert!(keys_under(&mut conn, &prefix).await.is_empty());
}

#[tokio::test]
async fn errors_are_not_cached_unless_the_policy_says_so() {
    let up = Upstream::start(vec![
        (
            "GET",
            "/users/404",
            Reply::raw(0, 404, "{\"error\":\"none\"}"),
        ),
        (
            "GET",
            "/users/500",
            Reply::raw(0, 500, "{\"error\":\"boom\"}"),
        ),
        ("GET", "/orders", Reply::json(0, json!([]))),
    ])
    .await;
    let plain = TestGateway::start(&profile_config(&up, "", r#"{ ttl = "60s" }"#)).await;
    for _ in 0..2 {
        let (s, _, b) = send("GET", &plain.url("/profile/500"), None).await;
        assert_eq!(s, 502);
        assert_eq!(json(&b)["error"]["upstream_status"], 500);
    }
    assert_eq!(
        count(&up, "/users/500"),
        2,
        "a 5xx is not stored by default"
    );

    let negative = TestGateway::start(&profile_config(
        &up,
        "",
        r#"{ ttl = "60s", errors = "30s" }"#,
    ))
    .await;
    for _ in 0..3 {
        let (s, _, b) = send("GET", &negative.url("/profile/404"), None).await;
        assert_eq!(s, 502);
        assert_eq!(json(&b)["error"]["upstream_status"], 404);
    }
    assert_eq!(
        count(&up, "/users/404"),
        1,
        "negative caching keeps the 404"
    );
}

#[tokio::test]
async fn a_failed_request_still_names_its_cached_calls_outcomes() {
    let up = Upstream::start(vec![
        ("GET", "/users/", Reply::json(0, json!({"id": 7}))),
        ("GET", "/orders", Reply::raw(0, 500, "{\"error\":\"boom\"}")),
    ])
    .await;
    let gw = TestGateway::start(&profile_config(&up, "", r#"{ ttl = "60s" }"#)).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (s, h, b) = send("GET", &gw.url("/profile/7"), None).await;
        assert_eq!(s, 502, "{}", String::from_utf8_lossy(&b));
        assert_eq!(json(&b)["error"]["call"], "orders");
        seen.push(cache_header(&h));
    }
    // The uncached call failed; the cached one was fetched, then answered from memory.
    assert_eq!(seen, ["user=miss", "user=hit"]);
}

#[tokio::test]
async fn a_burst_of_50_concurrent_misses_makes_one_upstream_call() {
    let up = Upstream::start(vec![
        ("GET", "/users/", Reply::json(300, json!({"id": 1}))),
        ("GET", "/orders", Reply::json(0, json!([]))),
    ])
    .await;
    let gw = TestGateway::start(&profile_config(&up, "", r#"{ ttl = "60s" }"#)).await;
    let url = gw.url("/profile/1");
    let answers = futures::future::join_all((0..50).map(|_| {
        let url = url.clone();
        async move { send("GET", &url, None).await }
    }))
    .await;
    let mut outcomes: Vec<String> = answers
        .iter()
        .map(|(s, h, b)| {
            assert_eq!(*s, 200, "{}", String::from_utf8_lossy(b));
            assert_eq!(json(b)["user"], json!({"id": 1}));
            cache_header(h)
        })
        .collect();
    assert_eq!(
        count(&up, "/users/1"),
        1,
        "one upstream call for the whole burst"
    );
    outcomes.sort();
    outcomes.dedup();
    assert!(
        outcomes
            .iter()
            .all(|o| o == "user=miss" || o == "user=coalesced" || o == "user=hit"),
        "{outcomes:?}"
    );
    let stats = admin_json(&gw, "GET", "/cache").await;
    let user = &stats["calls"]["profile.user"];
    assert_eq!(user["miss"], 1, "{stats}");
    let served: u64 = ["miss", "coalesced", "hit"]
        .iter()
        .map(|k| user[k].as_u64().unwrap())
        .sum();
    assert_eq!(served, 50, "{stats}");
}

#[tokio::test]
async fn a_second_gateway_finds_the_first_ones_entries_in_redis() {
    let up = Upstream::start(vec![
        ("GET", "/users/", Reply::json(0, json!({"id": 3}))),
        ("GET", "/orders", Reply::json(0, json!([]))),
    ])
    .await;
    let prefix = unique_prefix("second");
    let config = profile_config(
        &up,
        &format!(
            "[cache]\nredis = \"{SHARED_REDIS}\"\nprefix = \"{prefix}\"\nredis_timeout = \"500ms\""
        ),
        r#"{ ttl = "60s" }"#,
    );
    let first = TestGateway::start(&config).await;
    let second = TestGateway::start(&config).await;
    assert_ne!(first.addr, second.addr);

    let (_, h, _) = send("GET", &first.url("/profile/3"), None).await;
    assert_eq!(cache_header(&h), "user=miss");
    let mut conn = redis_conn(SHARED_REDIS).await;
    eventually("the first gateway's entry is in redis", || {
        let mut conn = conn.clone();
        let prefix = prefix.clone();
        async move {
            !keys_under(&mut conn, &format!("{prefix}e:"))
                .await
                .is_empty()
        }
    })
    .await;

    let (s, h, b) = send("GET", &second.url("/profile/3"), None).await;
    assert_eq!(s, 200);
    assert_eq!(json(&b)["user"], json!({"id": 3}));
    assert_eq!(cache_header(&h), "user=hit-l2");
    let (_, h, _) = send("GET", &second.url("/profile/3"), None).await;
    assert_eq!(
        cache_header(&h),
        "user=hit",
        "promoted to the second gateway's memory"
    );
    assert_eq!(count(&up, "/users/3"), 1);

    // Purging through one gateway empties Redis for both.
    admin_json(&first, "DELETE", "/cache?prefix=").await;
    assert!(keys_under(&mut conn, &prefix).await.is_empty());
}

#[tokio::test]
async fn a_stale_entry_answers_at_once_and_is_refreshed_exactly_once() {
    // Every upstream answer takes 400 ms: a request that waited for the refresh would see it
    // finished; a stale answer arrives while the refresh is still running.
    let up = Upstream::start(vec![
        ("GET", "/users/", Reply::json(400, json!({"id": 5}))),
        ("GET", "/orders", Reply::json(0, json!([]))),
    ])
    .await;
    let gw = TestGateway::start(&profile_config(
        &up,
        "",
        r#"{ ttl = "100ms", stale = "60s" }"#,
    ))
    .await;
    let (_, h, _) = send("GET", &gw.url("/profile/5"), None).await;
    assert_eq!(cache_header(&h), "user=miss");
    tokio::time::sleep(Duration::from_millis(150)).await; // past ttl, inside stale

    let url = gw.url("/profile/5");
    let answers = futures::future::join_all((0..10).map(|_| {
        let url = url.clone();
        async move { send("GET", &url, None).await }
    }))
    .await;
    for (s, h, b) in &answers {
        assert_eq!(*s, 200);
        assert_eq!(json(b)["user"], json!({"id": 5}));
        assert_eq!(cache_header(h), "user=stale");
    }
    let refreshes: Vec<Seen> = up
        .requests()
        .into_iter()
        .filter(|s| s.path_and_query.starts_with("/users/5"))
        .collect();
    assert_eq!(refreshes.len(), 2, "one miss and exactly one refresh");
    assert!(
        refreshes[1].end.is_none(),
        "the stale answers did not wait for the refresh"
    );
    eventually("the refresh finishes", || {
        let up = up.clone();
        async move {
            up.requests()
                .iter()
                .filter(|s| s.path_and_query.starts_with("/users/5"))
                .all(|s| s.end.is_some())
        }
    })
    .await;
    eventually("the refreshed entry is fresh", || {
        let url = url.clone();
        async move { cache_header(&send("GET", &url, None).await.1) == "user=hit" }
    })
    .await;
    assert_eq!(count(&up, "/users/5"), 2, "still exactly one refresh");
    let stats = admin_json(&gw, "GET", "/cache").await;
    assert_eq!(stats["calls"]["profile.user"]["refreshes"], 1, "{stats}");
}

/// A `redis-server` of this test's own on a free port, killed on drop. Never the shared one.
struct PrivateRedis {
    child: Option<tokio::process::Child>,
    port: u16,
}

impl PrivateRedis {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server must be installed");
        let url = format!("redis://127.0.0.1:{port}");
        eventually("the private redis-server answers", || {
            let url = url.clone();
            async move {
                match redis::Client::open(url.as_str())
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                {
                    Ok(mut c) => redis::cmd("PING")
                        .query_async::<String>(&mut c)
                        .await
                        .is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await;
        PrivateRedis {
            child: Some(child),
            port,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }
}

#[tokio::test]
async fn redis_stopped_mid_test_degrades_to_memory_with_no_client_error() {
    let up = Upstream::start(vec![
        ("GET", "/users/", Reply::json(0, json!({"id": 9}))),
        ("GET", "/orders", Reply::json(0, json!([]))),
    ])
    .await;
    let mut redis = PrivateRedis::start().await;
    let gw = TestGateway::start(&profile_config(
        &up,
        &format!(
            "[cache]\nredis = \"{}\"\nprefix = \"outage:\"\nredis_timeout = \"200ms\"\nredis_retry_after = \"100ms\"",
            redis.url()
        ),
        r#"{ ttl = "60s" }"#,
    ))
    .await;
    let (s, h, _) = send("GET", &gw.url("/profile/1"), None).await;
    assert_eq!((s.as_u16(), cache_header(&h).as_str()), (200, "user=miss"));
    let conn = redis_conn(&redis.url()).await;
    eventually("the entry reached the private redis", || {
        let mut conn = conn.clone();
        async move { !keys_under(&mut conn, "outage:e:").await.is_empty() }
    })
    .await;
    assert_eq!(
        admin_json(&gw, "GET", "/cache").await["l2"]["healthy"],
        true
    );

    redis.stop().await;
    // Known key: from memory. New keys: from the upstream. Never an error for the client.
    let (s, h, _) = send("GET", &gw.url("/profile/1"), None).await;
    assert_eq!((s.as_u16(), cache_header(&h).as_str()), (200, "user=hit"));
    for id in 2..6 {
        let (s, h, b) = send("GET", &gw.url(&format!("/profile/{id}")), None).await;
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
        assert_eq!(json(&b)["user"], json!({"id": 9}));
        assert_eq!(cache_header(&h), "user=miss");
    }
    // ...and they are now in memory.
    let (_, h, _) = send("GET", &gw.url("/profile/2"), None).await;
    assert_eq!(cache_header(&h), "user=hit");
    let stats = admin_json(&gw, "GET", "/cache").await;
    let l2 = &stats["l2"];
    assert_eq!(l2["healthy"], false, "{stats}");
    let trouble: u64 = ["errors", "timeouts"]
        .iter()
        .map(|k| l2[k].as_u64().unwrap())
        .sum();
    assert!(trouble >= 1, "the outage is counted: {stats}");
    // A purge while Redis is down empties memory and says Redis failed.
    let (s, _, b) = send(
        "DELETE",
        &format!("http://{}/cache?prefix=", gw.admin),
        None,
    )
    .await;
    assert_eq!(s, 502, "{}", String::from_utf8_lossy(&b));
    let (_, h, _) = send("GET", &gw.url("/profile/2"), None).await;
    assert_eq!(cache_header(&h), "user=miss", "memory was purged anyway");
}

#[tokio::test]
async fn a_whole_get_route_can_be_cached_with_a_key_template() {
    let up = Upstream::start(vec![(
        "GET",
        "/items/",
        Reply::json(0, json!({"item": true})),
    )])
    .await;
    let gw = TestGateway::start(&format!(
        r#"
[upstreams.items]
endpoints = ["{url}"]

[routes.item]
path = "/item/{{id}}"
cache = {{ ttl = "60s", key = "item:{{path.id}}:{{header.accept-language}}" }}
  [[routes.item.calls]]
  name = "i"
  upstream = "items"
  path = "/items/{{path.id}}"

[routes.raw]
path = "/items/{{*rest}}"
proxy = "items"
cache = {{ ttl = "60s" }}
"#,
        url = up.url()
    ))
    .await;
    for expected in ["item=miss", "item=hit", "item=hit"] {
        let (s, h, b) = send("GET", &gw.url("/item/1?ignored=1"), None).await;
        assert_eq!(s, 200);
        assert_eq!(json(&b), json!({"i": {"item": true}}));
        assert_eq!(h.get("content-type").unwrap(), "application/json");
        assert_eq!(cache_header(&h), expected);
    }
    assert_eq!(count(&up, "/items/1"), 1);
    for expected in ["raw=miss", "raw=hit"] {
        let (s, h, b) = send("GET", &gw.url("/items/2"), None).await;
        assert_eq!(s, 200);
        assert_eq!(json(&b), json!({"item": true}));
        assert_eq!(cache_header(&h), expected);
    }
    assert_eq!(count(&up, "/items/2"), 1);
}
