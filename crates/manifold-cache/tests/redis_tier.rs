//! The Redis tier, against real Redis servers.

use std::time::Duration;

use manifold_cache::{Cache, CachePolicy, CacheSettings, Outcome, RedisSettings};

use crate::support::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn policy() -> CachePolicy {
    CachePolicy::new("user", Duration::from_secs(60))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_keys_stop_reaching_the_fetcher_and_land_in_redis() {
    let prefix = unique_prefix("repeat");
    let cache = cache_with(SHARED_REDIS, &prefix);
    let up = Upstream::new();
    let mut outcomes = Vec::new();
    for _ in 0..20 {
        let (r, o) = cache
            .get_or_fetch("users GET /users/1".into(), &policy(), up.fetch(ms(0)))
            .await
            .unwrap();
        assert_eq!(body(&r), "v1");
        outcomes.push(o);
    }
    assert_eq!(up.calls(), 1);
    assert_eq!(outcomes[0], Outcome::Miss);
    assert!(outcomes[1..].iter().all(|o| *o == Outcome::Hit));
    let mut conn = raw(SHARED_REDIS).await;
    let key = format!("{prefix}e:users GET /users/1");
    eventually("the entry is written to redis", || {
        let (mut conn, key) = (conn.clone(), key.clone());
        async move {
            redis::cmd("EXISTS")
                .arg(&key)
                .query_async::<i64>(&mut conn)
                .await
                .unwrap()
                == 1
        }
    })
    .await;
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        pttl > 0 && pttl <= 60_000,
        "entries expire in redis (pttl {pttl})"
    );
    let l2 = cache.stats().l2.unwrap();
    assert!(l2.healthy);
    assert_eq!((l2.misses, l2.writes, l2.errors, l2.timeouts), (1, 1, 0, 0));
    cleanup(SHARED_REDIS, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_50_concurrent_misses_makes_one_fetch() {
    let prefix = unique_prefix("burst");
    let cache = cache_with(SHARED_REDIS, &prefix);
    let up = Upstream::gated();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (cache, up) = (cache.clone(), up.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_fetch("hot".into(), &policy(), up.fetch(ms(0)))
                .await
        }));
    }
    // Hold the one fetch until every caller has arrived (all are waiting on it).
    eventually("the fetch started", || async { up.calls() == 1 }).await;
    tokio::time::sleep(ms(100)).await;
    up.release(1);
    let mut coalesced = 0;
    for t in tasks {
        let (r, o) = t.await.unwrap().unwrap();
        assert_eq!(body(&r), "v1");
        if o == Outcome::Coalesced {
            coalesced += 1;
        } else {
            assert_eq!(o, Outcome::Miss);
        }
    }
    assert_eq!(up.calls(), 1);
    assert_eq!(coalesced, 49);
    cleanup(SHARED_REDIS, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_finds_the_first_ones_entries_in_redis() {
    let prefix = unique_prefix("replica");
    let first = cache_with(SHARED_REDIS, &prefix);
    let up = Upstream::new();
    first
        .get_or_fetch("users GET /users/7".into(), &policy(), up.fetch(ms(0)))
        .await
        .unwrap();
    let mut conn = raw(SHARED_REDIS).await;
    eventually("the first replica wrote its entry", || {
        let mut conn = conn.clone();
        let prefix = prefix.clone();
        async move { keys_under(&mut conn, &prefix).await.len() == 1 }
    })
    .await;

    let second = cache_with(SHARED_REDIS, &prefix);
    let (r, o) = second
        .get_or_fetch("users GET /users/7".into(), &policy(), up.fetch(ms(0)))
        .await
        .unwrap();
    assert_eq!((body(&r).as_str(), o), ("v1", Outcome::L2Hit));
    assert!(r.stored_at.is_some());
    let (_, o) = second
        .get_or_fetch("users GET /users/7".into(), &policy(), up.fetch(ms(0)))
        .await
        .unwrap();
    assert_eq!(o, Outcome::Hit, "promoted into the second replica's L1");
    assert_eq!(up.calls(), 1);
    assert_eq!(second.stats().calls["user"].l2_hit, 1);
    // A deployment with another prefix does not see it.
    let other = cache_with(SHARED_REDIS, &unique_prefix("other"));
    let (_, o) = other
        .get_or_fetch("users GET /users/7".into(), &policy(), up.fetch(ms(0)))
        .await
        .unwrap();
    assert_eq!(o, Outcome::Miss);
    let _ = keys_under(&mut conn, &prefix).await;
    cleanup(SHARED_REDIS, &prefix).await;
    other.purge_prefix("").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_entry_answers_at_once_and_is_refreshed_exactly_once_in_the_background() {
    let prefix = unique_prefix("stale");
    let cache = cache_with(SHARED_REDIS, &prefix);
    let policy = CachePolicy::new("user", ms(300)).with_stale(Duration::from_secs(60));
    let up = Upstream::gated();
    up.release(1);
    cache
        .get_or_fetch("k".into(), &policy, up.fetch(ms(0)))
        .await
        .unwrap();
    tokio::time::sleep(ms(400)).await; // past the 300 ms ttl, inside the stale window
                                       // The refresh fetch is held closed: every answer below arrives while it cannot finish.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (cache, up, policy) = (cache.clone(), up.clone(), policy.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_fetch("k".into(), &policy, up.fetch(ms(0)))
                .await
        }));
    }
    for t in tasks {
        let (r, o) = t.await.unwrap().unwrap();
        assert_eq!((body(&r).as_str(), o), ("v1", Outcome::Stale));
    }
    eventually("the refresh started", || async { up.calls() == 2 }).await;
    up.release(1);
    eventually("the refreshed entry is served", || {
        let (cache, up, policy) = (cache.clone(), up.clone(), policy.clone());
        async move {
            let (r, o) = cache
                .get_or_fetch("k".into(), &policy, up.fetch(ms(0)))
                .await
                .unwrap();
            body(&r) == "v2" && o == Outcome::Hit
        }
    })
    .await;
    assert_eq!(up.calls(), 2, "exactly one background refresh");
    let s = cache.stats().calls["user"].clone();
    // 20 from the burst, plus any the polling loop saw before the refresh landed.
    assert!(s.stale >= 20, "{s:?}");
    assert_eq!(s.refreshes, 1);
    // Redis holds the refreshed version for the other replicas.
    let conn = raw(SHARED_REDIS).await;
    let key = format!("{prefix}e:k");
    eventually("redis has the refreshed entry", || {
        let (mut conn, key) = (conn.clone(), key.clone());
        async move {
            let v: Option<Vec<u8>> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            v.is_some_and(|v| v.ends_with(b"v2"))
        }
    })
    .await;

    cleanup(SHARED_REDIS, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_test_degrades_to_l1_with_no_error_and_recovers() {
    let mut server = PrivateRedis::start().await;
    let url = server.url();
    let prefix = unique_prefix("outage");
    let cache = cache_with(&url, &prefix);
    let up = Upstream::new();
    let get = |key: &str| {
        let (cache, up, key) = (cache.clone(), up.clone(), key.to_owned());
        async move { cache.get_or_fetch(key, &policy(), up.fetch(ms(0))).await }
    };
    assert_eq!(get("a").await.unwrap().1, Outcome::Miss);
    let conn = raw(&url).await;
    eventually("entry a is in the private redis", || {
        let (mut conn, prefix) = (conn.clone(), prefix.clone());
        async move { keys_under(&mut conn, &prefix).await.len() == 1 }
    })
    .await;
    drop(conn);

    server.stop().await;

    // Known keys: L1 hits. New keys: fetched, stored in L1, then hits. Never an error.
    assert_eq!(get("a").await.unwrap().1, Outcome::Hit);
    assert_eq!(get("b").await.unwrap().1, Outcome::Miss);
    assert_eq!(get("b").await.unwrap().1, Outcome::Hit);
    for key in ["c", "d", "e", "f"] {
        assert_eq!(get(key).await.unwrap().1, Outcome::Miss);
    }
    // A replica started while Redis is down still starts and answers.
    let late = cache_with(&url, &prefix);
    let (r, o) = late
        .get_or_fetch("a".into(), &policy(), up.fetch(ms(0)))
        .await
        .unwrap();
    assert_eq!(o, Outcome::Miss);
    assert!(!body(&r).is_empty());
    let l2 = cache.stats().l2.unwrap();
    assert!(!l2.healthy, "{l2:?}");
    assert!(
        l2.errors + l2.timeouts >= 1,
        "the outage was counted: {l2:?}"
    );
    assert_eq!(cache.redis_healthy(), Some(false));
    // Purge is administration: there the error is reported.
    assert!(cache.purge_prefix("").await.is_err());

    // Redis comes back on the same port: the connection manager reconnects and the tier heals.
    let server = PrivateRedis::start_on(server.port).await;
    let mut n = 0;
    eventually("the tier is healthy again", || {
        n += 1;
        let get = get(&format!("after-{n}"));
        let cache = cache.clone();
        async move {
            get.await.unwrap();
            cache.redis_healthy() == Some(true)
        }
    })
    .await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_never_answers_is_bounded_by_the_timeout() {
    // A listener that accepts connections and never replies: the slowest possible Redis.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let cache = Cache::new(CacheSettings {
        redis: Some(RedisSettings {
            timeout: ms(50),
            ..RedisSettings::new(format!("redis://{addr}"))
        }),
        ..CacheSettings::default()
    })
    .unwrap();
    let up = Upstream::new();
    for _ in 0..3 {
        let (_, o) = tokio::time::timeout(
            Duration::from_secs(5),
            cache.get_or_fetch("k".into(), &policy(), up.fetch(ms(0))),
        )
        .await
        .expect("a silent redis must not hold the request")
        .unwrap();
        assert!(matches!(o, Outcome::Miss | Outcome::Hit));
    }
    assert_eq!(up.calls(), 1);
    let l2 = cache.stats().l2.unwrap();
    assert!(l2.timeouts >= 1 && !l2.healthy, "{l2:?}");
    hold.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_a_prefix_from_both_tiers() {
    let prefix = unique_prefix("purge");
    let cache = cache_with(SHARED_REDIS, &prefix);
    let up = Upstream::new();
    for key in [
        "users GET /users/1",
        "users GET /users/2",
        "users GET /users/3",
        "orders GET /o/1",
    ] {
        cache
            .get_or_fetch(key.into(), &policy(), up.fetch(ms(0)))
            .await
            .unwrap();
    }
    let mut conn = raw(SHARED_REDIS).await;
    eventually("four entries in redis", || {
        let (mut conn, prefix) = (conn.clone(), prefix.clone());
        async move { keys_under(&mut conn, &prefix).await.len() == 4 }
    })
    .await;
    // Glob characters in the prefix match literally.
    assert_eq!(
        cache.purge_prefix("users GET /users/[12]").await.unwrap(),
        0
    );
    assert_eq!(
        cache.purge_prefix("users ").await.unwrap(),
        6,
        "3 in L1 + 3 in redis"
    );
    assert_eq!(
        keys_under(&mut conn, &prefix).await,
        vec![format!("{prefix}e:orders GET /o/1")]
    );
    let (_, o) = cache
        .get_or_fetch("users GET /users/1".into(), &policy(), up.fetch(ms(0)))
        .await
        .unwrap();
    assert_eq!(o, Outcome::Miss);
    let (_, o) = cache
        .get_or_fetch("orders GET /o/1".into(), &policy(), up.fetch(ms(0)))
        .await
        .unwrap();
    assert_eq!(o, Outcome::Hit);
    cleanup(SHARED_REDIS, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_lock_only_one_replica_fetches_a_missing_key() {
    let prefix = unique_prefix("lock");
    let first = cache_with(SHARED_REDIS, &prefix);
    let second = cache_with(SHARED_REDIS, &prefix);
    let policy = policy().with_lock(Duration::from_secs(5));
    let up = Upstream::gated();
    let a = {
        let (c, up, p) = (first.clone(), up.clone(), policy.clone());
        tokio::spawn(async move { c.get_or_fetch("k".into(), &p, up.fetch(ms(0))).await })
    };
    eventually("the first replica holds the lock and fetches", || async {
        up.calls() == 1
    })
    .await;
    let b = {
        let (c, up, p) = (second.clone(), up.clone(), policy.clone());
        tokio::spawn(async move { c.get_or_fetch("k".into(), &p, up.fetch(ms(0))).await })
    };
    eventually("the second replica waits on the lock", || {
        let second = second.clone();
        async move { second.stats().l2.unwrap().lock_waits == 1 }
    })
    .await;
    up.release(1);
    let (ra, oa) = a.await.unwrap().unwrap();
    let (rb, ob) = b.await.unwrap().unwrap();
    assert_eq!((body(&ra).as_str(), oa), ("v1", Outcome::Miss));
    assert_eq!((body(&rb).as_str(), ob), ("v1", Outcome::Coalesced));
    assert_eq!(up.calls(), 1);
    let conn = raw(SHARED_REDIS).await;
    eventually("the lock is released", || {
        let (mut conn, prefix) = (conn.clone(), prefix.clone());
        async move {
            !keys_under(&mut conn, &prefix)
                .await
                .iter()
                .any(|k| k.starts_with(&format!("{prefix}l:")))
        }
    })
    .await;
    cleanup(SHARED_REDIS, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_empty_memory_answers_a_stale_redis_entry_at_once() {
    let prefix = unique_prefix("stale-l2");
    let policy = CachePolicy::new("user", ms(300)).with_stale(Duration::from_secs(60));
    let first = cache_with(SHARED_REDIS, &prefix);
    let up = Upstream::gated();
    up.release(1);
    first
        .get_or_fetch("k".into(), &policy, up.fetch(ms(0)))
        .await
        .unwrap();
    let conn = raw(SHARED_REDIS).await;
    eventually("the entry is in redis", || {
        let (mut conn, prefix) = (conn.clone(), prefix.clone());
        async move { keys_under(&mut conn, &prefix).await.len() == 1 }
    })
    .await;
    tokio::time::sleep(ms(400)).await;
    // A new replica: nothing in memory, a stale entry in Redis. Its refresh is held closed,
    // so the answer below cannot have waited for it.
    let second = cache_with(SHARED_REDIS, &prefix);
    let (r, o) = second
        .get_or_fetch("k".into(), &policy, up.fetch(ms(0)))
        .await
        .unwrap();
    assert_eq!((body(&r).as_str(), o), ("v1", Outcome::Stale));
    eventually("the refresh started", || async { up.calls() == 2 }).await;
    up.release(1);
    eventually("the refreshed entry is served", || {
        let (second, up, policy) = (second.clone(), up.clone(), policy.clone());
        async move {
            let (r, o) = second
                .get_or_fetch("k".into(), &policy, up.fetch(ms(0)))
                .await
                .unwrap();
            body(&r) == "v2" && o == Outcome::Hit
        }
    })
    .await;
    assert_eq!(up.calls(), 2);
    cleanup(SHARED_REDIS, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_lock_only_one_replica_refreshes_a_stale_key() {
    let prefix = unique_prefix("lock-refresh");
    // B re-checks 1 s (the lease) after finding the lock taken; A's refreshed entry is fresh
    // for 2.5 s, so B finds it fresh in Redis.
    let policy = CachePolicy::new("user", ms(2_500))
        .with_stale(Duration::from_secs(60))
        .with_lock(Duration::from_secs(1));
    let (a, b) = (
        cache_with(SHARED_REDIS, &prefix),
        cache_with(SHARED_REDIS, &prefix),
    );
    let up = Upstream::gated();
    up.release(1);
    a.get_or_fetch("k".into(), &policy, up.fetch(ms(0)))
        .await
        .unwrap();
    let conn = raw(SHARED_REDIS).await;
    eventually("the entry is in redis", || {
        let (mut conn, prefix) = (conn.clone(), prefix.clone());
        async move { keys_under(&mut conn, &prefix).await.len() == 1 }
    })
    .await;
    let (_, o) = b
        .get_or_fetch("k".into(), &policy, up.fetch(ms(0)))
        .await
        .unwrap();
    assert_eq!(o, Outcome::L2Hit);
    tokio::time::sleep(ms(2_600)).await; // both replicas now hold a stale copy

    // A refreshes first and holds the lock while its fetch is held closed.
    let (_, o) = a
        .get_or_fetch("k".into(), &policy, up.fetch(ms(0)))
        .await
        .unwrap();
    assert_eq!(o, Outcome::Stale);
    eventually("A's refresh holds the lock", || async { up.calls() == 2 }).await;
    // B wants to refresh too, finds the lock taken, and keeps answering stale.
    let reads_before = b.stats().l2.unwrap().hits;
    let (r, o) = b
        .get_or_fetch("k".into(), &policy, up.fetch(ms(0)))
        .await
        .unwrap();
    assert_eq!((body(&r).as_str(), o), ("v1", Outcome::Stale));
    eventually("B's refresh looked at redis", || {
        let b = b.clone();
        async move { b.stats().l2.unwrap().hits > reads_before }
    })
    .await;
    up.release(1);
    // B picks up A's refreshed entry from Redis without fetching.
    eventually("B serves A's refresh", || {
        let (b, up, policy) = (b.clone(), up.clone(), policy.clone());
        async move {
            let (r, _) = b
                .get_or_fetch("k".into(), &policy, up.fetch(ms(0)))
                .await
                .unwrap();
            body(&r) == "v2"
        }
    })
    .await;
    assert_eq!(up.calls(), 2, "the initial fetch and A's single refresh");
    cleanup(SHARED_REDIS, &prefix).await;
}
