//! The Memcached shared tier through whole gateways: two gateways sharing the real memcached on
//! 127.0.0.1:11211 (under a prefix unique to each test), and one whose memcached is down.

use crate::cache::{admin_json, cache_header, count, eventually, profile_config, unique_prefix};
use crate::support::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SHARED_MEMCACHED: &str = "127.0.0.1:11211";

/// Deletes the generation keys a test's gateways created (its entries are invalid without them
/// and expire by themselves).
async fn forget_generations(prefix: &str, namespaces: &[&str]) {
    let mut cmd = format!("md {prefix}g q\r\n");
    for ns in namespaces {
        cmd.push_str(&format!("md {prefix}n:{ns} q\r\n"));
    }
    cmd.push_str("mn\r\n");
    let mut s = tokio::net::TcpStream::connect(SHARED_MEMCACHED)
        .await
        .unwrap();
    s.write_all(cmd.as_bytes()).await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"MN\r\n");
}

#[tokio::test]
async fn a_second_gateway_finds_the_first_ones_entries_in_memcached() {
    let up = Upstream::start(vec![
        ("GET", "/users/", Reply::json(0, json!({"id": 3}))),
        ("GET", "/orders", Reply::json(0, json!([]))),
    ])
    .await;
    let prefix = unique_prefix("mc-second");
    let config = profile_config(
        &up,
        &format!(
            "[cache]\nmemcached = [\"{SHARED_MEMCACHED}\"]\nprefix = \"{prefix}\"\nmemcached_timeout = \"500ms\""
        ),
        r#"{ ttl = "60s" }"#,
    );
    let first = TestGateway::start(&config).await;
    let second = TestGateway::start(&config).await;

    let (_, h, _) = send("GET", &first.url("/profile/3"), None).await;
    assert_eq!(cache_header(&h), "user=miss");
    eventually("the first gateway wrote its entry", || async {
        admin_json(&first, "GET", "/cache").await["l2"]["writes"] == 1
    })
    .await;
    let stats = admin_json(&first, "GET", "/cache").await;
    assert_eq!(stats["l2"]["backend"], "memcached");
    assert_eq!(
        stats["l2"]["servers"],
        json!([{"addr": SHARED_MEMCACHED, "healthy": true}])
    );

    let (s, h, b) = send("GET", &second.url("/profile/3"), None).await;
    assert_eq!(s, 200);
    assert_eq!(json(&b)["user"], json!({"id": 3}));
    assert_eq!(cache_header(&h), "user=hit-l2");
    assert_eq!(count(&up, "/users/3"), 1);

    // Purging through one gateway invalidates the shared tier for every gateway: a third one,
    // with empty memory, must go to the upstream.
    let purged = admin_json(&first, "DELETE", "/cache?prefix=").await;
    assert_eq!(purged["removed"], 1, "this gateway's memory copy");
    let third = TestGateway::start(&config).await;
    let (_, h, _) = send("GET", &third.url("/profile/3"), None).await;
    assert_eq!(cache_header(&h), "user=miss");
    assert_eq!(count(&up, "/users/3"), 2);
    forget_generations(&prefix, &["users"]).await;
}

#[tokio::test]
async fn a_down_memcached_fails_no_request_and_shows_on_the_admin_listener() {
    let up = Upstream::start(vec![
        ("GET", "/users/", Reply::json(0, json!({"id": 4}))),
        ("GET", "/orders", Reply::json(0, json!([]))),
    ])
    .await;
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = profile_config(
        &up,
        &format!("[cache]\nmemcached = [\"{dead}\"]\nmemcached_retry_after = \"10s\""),
        r#"{ ttl = "60s" }"#,
    );
    let gw = TestGateway::start(&config).await;
    for expected in ["user=miss", "user=hit", "user=hit"] {
        let (s, h, b) = send("GET", &gw.url("/profile/4"), None).await;
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
        assert_eq!(cache_header(&h), expected);
    }
    let stats = admin_json(&gw, "GET", "/cache").await;
    assert_eq!(stats["l2"]["healthy"], false, "{stats}");
    assert_eq!(
        stats["l2"]["servers"],
        json!([{"addr": dead.to_string(), "healthy": false}])
    );
    // The purge empties this gateway's memory and says the shared tier could not be reached.
    let (s, _, b) = send(
        "DELETE",
        &format!("http://{}/cache?prefix=", gw.admin),
        None,
    )
    .await;
    assert_eq!(s, 502);
    let body = json(&b);
    assert_eq!(body["error"]["kind"], "memcached");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&dead.to_string()),
        "{body}"
    );
}
