//! Purge broadcast between replicas (two `Cache`s sharing a Redis prefix stand for two
//! gateways), against real Redis servers.

use std::time::Duration;

use manifold_cache::{Cache, CachePolicy, Outcome};

use crate::support::*;

fn policy() -> CachePolicy {
    CachePolicy::new("user", Duration::from_secs(300))
}

async fn get(cache: &Cache, up: &Upstream, key: &str) -> Outcome {
    cache
        .get_or_fetch(key.into(), &policy(), up.fetch(Duration::ZERO))
        .await
        .unwrap()
        .1
}

async fn subscribed(cache: &Cache) {
    let cache = cache.clone();
    eventually("the replica is subscribed to purge broadcasts", || {
        let cache = cache.clone();
        async move {
            let r = cache.redis_readiness(Duration::from_secs(1)).await;
            r.is_some_and(|r| r.purge_subscribed && r.reachable.is_ok())
        }
    })
    .await;
}

/// Polls `key` on `cache` until it is no longer answered from memory (`Hit`); a `Hit` changes
/// nothing, so without the broadcast this never ends (the entry lives 5 minutes).
async fn purged_from_memory(cache: &Cache, up: &Upstream, key: &str) -> Outcome {
    for _ in 0..1_000 {
        let o = get(cache, up, key).await;
        if o != Outcome::Hit {
            return o;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{key} is still answered from this replica's memory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_one_replica_empties_the_others_memory() {
    let prefix = unique_prefix("bus");
    let (a, b) = (
        cache_with(SHARED_REDIS, &prefix),
        cache_with(SHARED_REDIS, &prefix),
    );
    subscribed(&a).await;
    subscribed(&b).await;
    let up = Upstream::new();
    let conn = raw(SHARED_REDIS).await;
    for (n, key) in ["users GET /u/1", "orders GET /o/1"]
        .into_iter()
        .enumerate()
    {
        assert_eq!(get(&a, &up, key).await, Outcome::Miss);
        // A writes to Redis after answering: wait for it before asking B.
        eventually("A's entry in redis", || {
            let (mut conn, prefix) = (conn.clone(), prefix.clone());
            async move { keys_under(&mut conn, &prefix).await.len() == n + 1 }
        })
        .await;
        assert_eq!(get(&b, &up, key).await, Outcome::L2Hit);
        assert_eq!(get(&b, &up, key).await, Outcome::Hit, "in B's memory now");
    }

    a.purge_prefix("users ").await.unwrap();
    assert_eq!(
        purged_from_memory(&b, &up, "users GET /u/1").await,
        Outcome::Miss,
        "gone from B's memory and from Redis"
    );
    assert_eq!(
        get(&b, &up, "orders GET /o/1").await,
        Outcome::Hit,
        "another prefix stays"
    );
    // The sender purged itself already and ignores its own broadcast.
    assert_eq!(get(&a, &up, "orders GET /o/1").await, Outcome::Hit);
    cleanup(SHARED_REDIS, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_purge_channel_is_ignored_and_the_subscriber_survives() {
    let prefix = unique_prefix("garbage");
    let cache = cache_with(SHARED_REDIS, &prefix);
    subscribed(&cache).await;
    let up = Upstream::new();
    assert_eq!(get(&cache, &up, "k1").await, Outcome::Miss);
    assert_eq!(get(&cache, &up, "k2").await, Outcome::Miss);

    let channel = format!("{prefix}purge");
    let mut conn = raw(SHARED_REDIS).await;
    let huge = format!("mfpurge1 0000000000000001 {}", "k".repeat(64 * 1024));
    let garbage: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"hello".to_vec(),
        b"mfpurge1 zzzzzzzzzzzzzzzz k1".to_vec(),
        b"mfpurge1 0000000000000001 \xff\xfe".to_vec(),
        b"mfpurge9 0000000000000001 k1".to_vec(),
        huge.into_bytes(), // too large: ignored unread, although it would match k1
        (0..=255u8).collect(),
    ];
    for message in &garbage {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(message.as_slice())
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    // A well-formed message from "another replica", sent after the garbage: the subscriber is
    // still there and applies it; the garbage purged nothing.
    let _: i64 = redis::cmd("PUBLISH")
        .arg(&channel)
        .arg("mfpurge1 0000000000000002 k2")
        .query_async(&mut conn)
        .await
        .unwrap();
    // k2 is in Redis still (only memory is purged by a broadcast): an L2 hit.
    assert_eq!(purged_from_memory(&cache, &up, "k2").await, Outcome::L2Hit);
    assert_eq!(get(&cache, &up, "k1").await, Outcome::Hit);
    assert!(
        cache
            .redis_readiness(Duration::from_secs(1))
            .await
            .unwrap()
            .purge_subscribed
    );
    cleanup(SHARED_REDIS, &prefix).await;
}

/// A replica that lost its subscription cannot know which purges it missed: once subscribed
/// again it empties its memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_resubscribes_after_an_outage_empties_its_memory() {
    let mut server = PrivateRedis::start().await;
    let prefix = unique_prefix("resubscribe");
    let cache = cache_with(&server.url(), &prefix);
    subscribed(&cache).await;
    let up = Upstream::new();
    assert_eq!(get(&cache, &up, "k").await, Outcome::Miss);
    assert_eq!(get(&cache, &up, "k").await, Outcome::Hit);

    server.stop().await;
    let watched = cache.clone();
    eventually("the subscription is seen lost", || {
        let cache = watched.clone();
        async move {
            let r = cache.redis_readiness(Duration::from_millis(200)).await;
            r.is_some_and(|r| !r.purge_subscribed && r.reachable.is_err())
        }
    })
    .await;
    assert_eq!(
        get(&cache, &up, "k").await,
        Outcome::Hit,
        "memory serves during the outage"
    );

    let server = PrivateRedis::start_on(server.port).await;
    subscribed(&cache).await;
    // The restarted Redis is empty, so the entry is fetched again: a miss, not a memory hit.
    assert_eq!(get(&cache, &up, "k").await, Outcome::Miss);
    drop(server);
}
