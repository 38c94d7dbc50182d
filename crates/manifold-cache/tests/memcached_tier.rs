//! The Memcached tier, against real memcached servers: the shared one on 11211 and private
//! children for the multi-server and outage tests.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use manifold_cache::{
    Cache, CachePolicy, CacheSettings, CachedResponse, MemcachedSettings, Outcome,
};

use crate::mc_support::*;
use crate::support::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn policy() -> CachePolicy {
    CachePolicy::new("user", Duration::from_secs(60))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_finds_the_first_ones_entries_in_memcached() {
    let prefix = unique_prefix("mc-replica");
    let key = "users GET /users/7";
    let first = mc_cache(&[SHARED_MEMCACHED], &prefix);
    let up = Upstream::new();
    let (_, o) = first
        .get_or_fetch(key.into(), &policy(), up.fetch(ms(0)))
        .await
        .unwrap();
    assert_eq!(o, Outcome::Miss);
    eventually("the first instance wrote its entry", || async {
        has_entry(SHARED_MEMCACHED, &prefix, key).await
    })
    .await;
    // The entry is in memcached a moment before the writer counts it (it counts on the reply).
    eventually("the first instance counted its write", || async {
        first.stats().l2.unwrap().writes == 1
    })
    .await;
    let l2 = first.stats().l2.unwrap();
    assert_eq!(
        (l2.backend, l2.healthy, l2.writes, l2.errors),
        ("memcached", true, 1, 0)
    );

    let second = mc_cache(&[SHARED_MEMCACHED], &prefix);
    let (r, o) = second
        .get_or_fetch(key.into(), &policy(), up.fetch(ms(0)))
        .await
        .unwrap();
    assert_eq!((body(&r).as_str(), o), ("v1", Outcome::L2Hit));
    assert!(r.stored_at.is_some());
    let (_, o) = second
        .get_or_fetch(key.into(), &policy(), up.fetch(ms(0)))
        .await
        .unwrap();
    assert_eq!(o, Outcome::Hit, "promoted into the second instance's L1");
    assert_eq!(up.calls(), 1);
    // A deployment with another prefix does not see it.
    let other_prefix = unique_prefix("mc-other");
    let other = mc_cache(&[SHARED_MEMCACHED], &other_prefix);
    let (_, o) = other
        .get_or_fetch(key.into(), &policy(), up.fetch(ms(0)))
        .await
        .unwrap();
    assert_eq!(o, Outcome::Miss);
    mc_cleanup(SHARED_MEMCACHED, &prefix, &[key]).await;
    mc_cleanup(SHARED_MEMCACHED, &other_prefix, &[key]).await;
    assert!(!has_entry(SHARED_MEMCACHED, &prefix, key).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_spread_over_two_servers_and_both_instances_place_a_key_alike() {
    let (a, b) = (
        PrivateMemcached::start().await,
        PrivateMemcached::start().await,
    );
    let (a_addr, b_addr) = (a.addr(), b.addr());
    let prefix = unique_prefix("mc-ring");
    // The second instance lists the servers the other way round: placement must not care.
    let first = mc_cache(&[&a_addr, &b_addr], &prefix);
    let second = mc_cache(&[&b_addr, &a_addr], &prefix);
    let up = Upstream::new();
    let keys: Vec<String> = (0..40).map(|i| format!("users GET /users/{i}")).collect();
    for key in &keys {
        first
            .get_or_fetch(key.clone(), &policy(), up.fetch(ms(0)))
            .await
            .unwrap();
    }
    eventually("every entry is written", || async {
        first.stats().l2.unwrap().writes == 40
    })
    .await;
    // Each entry is on exactly one server, and both servers got a fair share.
    let mut on_a = 0;
    for key in &keys {
        let (in_a, in_b) = (
            has_entry(&a_addr, &prefix, key).await,
            has_entry(&b_addr, &prefix, key).await,
        );
        assert!(in_a != in_b, "{key} on exactly one server");
        on_a += usize::from(in_a);
    }
    assert!((8..=32).contains(&on_a), "{on_a} of 40 on the first server");
    // The other instance finds every one of them: it looks on the same server.
    for key in &keys {
        let (_, o) = second
            .get_or_fetch(key.clone(), &policy(), up.fetch(ms(0)))
            .await
            .unwrap();
        assert_eq!(o, Outcome::L2Hit, "{key}");
    }
    assert_eq!(up.calls(), 40);
    let servers = second.stats().l2.unwrap().servers;
    assert_eq!(servers.len(), 2);
    assert!(servers.iter().all(|s| s.healthy), "{servers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_lock_only_one_instance_fetches_a_missing_key() {
    let prefix = unique_prefix("mc-lock");
    let first = mc_cache(&[SHARED_MEMCACHED], &prefix);
    let second = mc_cache(&[SHARED_MEMCACHED], &prefix);
    let policy = policy().with_lock(Duration::from_secs(5));
    let up = Upstream::gated();
    let a = {
        let (c, up, p) = (first.clone(), up.clone(), policy.clone());
        tokio::spawn(async move { c.get_or_fetch("k".into(), &p, up.fetch(ms(0))).await })
    };
    eventually("the first instance holds the lock and fetches", || async {
        up.calls() == 1
    })
    .await;
    let b = {
        let (c, up, p) = (second.clone(), up.clone(), policy.clone());
        tokio::spawn(async move { c.get_or_fetch("k".into(), &p, up.fetch(ms(0))).await })
    };
    eventually("the second instance waits on the lock", || {
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
    let lock = mc_key(&prefix, "l", "k");
    eventually("the lock is released", || {
        let lock = lock.clone();
        async move {
            mc_raw(
                SHARED_MEMCACHED,
                &format!("mg {lock} q\r\nmn\r\n"),
                "MN\r\n",
            )
            .await
                == "MN\r\n"
        }
    })
    .await;
    mc_cleanup(SHARED_MEMCACHED, &prefix, &["k"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_with_empty_memory_answers_a_stale_memcached_entry_at_once() {
    let prefix = unique_prefix("mc-stale");
    let policy = CachePolicy::new("user", ms(300)).with_stale(Duration::from_secs(60));
    let first = mc_cache(&[SHARED_MEMCACHED], &prefix);
    let up = Upstream::gated();
    up.release(1);
    first
        .get_or_fetch("k".into(), &policy, up.fetch(ms(0)))
        .await
        .unwrap();
    eventually("the entry is in memcached", || async {
        has_entry(SHARED_MEMCACHED, &prefix, "k").await
    })
    .await;
    tokio::time::sleep(ms(400)).await; // past the 300 ms ttl, inside the stale window
                                       // A new instance: nothing in memory, a stale entry in memcached. Its refresh is held
                                       // closed, so the answer below cannot have waited for it.
    let second = mc_cache(&[SHARED_MEMCACHED], &prefix);
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
    assert_eq!(up.calls(), 2, "exactly one refresh");
    // The second instance writes its refresh to memcached after answering from it: until that
    // write lands, the first instance's own refresh would find only its old copy there and go
    // to the (gated) upstream itself. Wait for the write, as a replica would in time.
    eventually("the refresh is written to memcached", || async {
        second.stats().l2.unwrap().writes == 1
    })
    .await;
    // The first instance, its own copy stale too, picks the refreshed one up from memcached.
    eventually("the first instance serves the refresh", || {
        let (first, up, policy) = (first.clone(), up.clone(), policy.clone());
        async move {
            let (r, _) = first
                .get_or_fetch("k".into(), &policy, up.fetch(ms(0)))
                .await
                .unwrap();
            body(&r) == "v2"
        }
    })
    .await;
    assert_eq!(up.calls(), 2);
    mc_cleanup(SHARED_MEMCACHED, &prefix, &["k"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_memcached_degrades_to_l1_with_no_error_and_recovers() {
    let mut server = PrivateMemcached::start().await;
    let addr = server.addr();
    let prefix = unique_prefix("mc-outage");
    let cache = mc_cache(&[&addr], &prefix);
    let up = Upstream::new();
    let get = |key: &str| {
        let (cache, up, key) = (cache.clone(), up.clone(), key.to_owned());
        async move { cache.get_or_fetch(key, &policy(), up.fetch(ms(0))).await }
    };
    assert_eq!(get("a").await.unwrap().1, Outcome::Miss);
    eventually("entry a is in the private memcached", || async {
        has_entry(&addr, &prefix, "a").await
    })
    .await;

    server.stop().await;

    // Known keys: L1 hits. New keys: fetched, stored in L1, then hits. Never an error.
    assert_eq!(get("a").await.unwrap().1, Outcome::Hit);
    assert_eq!(get("b").await.unwrap().1, Outcome::Miss);
    assert_eq!(get("b").await.unwrap().1, Outcome::Hit);
    for key in ["c", "d", "e", "f"] {
        assert_eq!(get(key).await.unwrap().1, Outcome::Miss);
    }
    // An instance started while memcached is down still starts and answers.
    let late = mc_cache(&[&addr], &prefix);
    let (_, o) = late
        .get_or_fetch("a".into(), &policy(), up.fetch(ms(0)))
        .await
        .unwrap();
    assert_eq!(o, Outcome::Miss);
    let l2 = cache.stats().l2.unwrap();
    assert!(!l2.healthy && !l2.servers[0].healthy, "{l2:?}");
    assert!(
        l2.errors + l2.timeouts >= 1,
        "the outage was counted: {l2:?}"
    );
    assert!(l2.skipped >= 1, "requests skipped the down server: {l2:?}");
    assert_eq!(cache.shared_tier_healthy(), Some(false));
    assert_eq!(cache.redis_healthy(), None);
    // Purge is administration: there the error is reported, naming the server.
    let err = cache.purge_prefix("").await.unwrap_err();
    assert!(err.to_string().contains(&addr), "{err}");

    // memcached comes back on the same port: the next probe reconnects and the tier heals.
    let _server = PrivateMemcached::start_on(server.port).await;
    let mut n = 0;
    eventually("the tier is healthy again", || {
        n += 1;
        let get = get(&format!("after-{n}"));
        let cache = cache.clone();
        async move {
            get.await.unwrap();
            cache.shared_tier_healthy() == Some(true)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memcached_that_never_answers_is_bounded_by_the_timeout() {
    // A listener that accepts connections and never replies: the slowest possible memcached.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let cache = Cache::new(CacheSettings {
        memcached: Some(MemcachedSettings {
            timeout: ms(50),
            ..MemcachedSettings::new(vec![addr])
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
        .expect("a silent memcached must not hold the request")
        .unwrap();
        assert!(matches!(o, Outcome::Miss | Outcome::Hit));
    }
    assert_eq!(up.calls(), 1);
    let l2 = cache.stats().l2.unwrap();
    assert!(l2.timeouts >= 1 && !l2.healthy, "{l2:?}");
    hold.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_server_announcing_a_huge_value_is_refused_without_allocating_it() {
    // Answers every command with a 4 GB value announcement, then nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let serve = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = sock.write_all(b"VA 4000000000\r\n").await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    let cache = Cache::new(CacheSettings {
        memcached: Some(MemcachedSettings::new(vec![addr])),
        ..CacheSettings::default()
    })
    .unwrap();
    let up = Upstream::new();
    let (_, o) = cache
        .get_or_fetch("k".into(), &policy(), up.fetch(ms(0)))
        .await
        .unwrap();
    assert_eq!(o, Outcome::Miss);
    let l2 = cache.stats().l2.unwrap();
    assert!(
        l2.errors >= 1 && !l2.healthy,
        "a protocol error, not a wait: {l2:?}"
    );
    serve.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_by_prefix_invalidates_memcached_entries_for_every_instance() {
    let prefix = unique_prefix("mc-purge");
    let keys = [
        "users GET /users/1",
        "users GET /users/2",
        "orders GET /o/1",
    ];
    let first = mc_cache(&[SHARED_MEMCACHED], &prefix);
    let up = Upstream::new();
    for key in keys {
        first
            .get_or_fetch(key.into(), &policy(), up.fetch(ms(0)))
            .await
            .unwrap();
    }
    eventually("three entries written", || async {
        first.stats().l2.unwrap().writes == 3
    })
    .await;
    // `users ` names one namespace: its entries go, `orders` stays, in both instances.
    assert_eq!(first.purge_prefix("users ").await.unwrap(), 2, "2 in L1");
    let second = mc_cache(&[SHARED_MEMCACHED], &prefix);
    let outcome = |cache: &Cache, key: &str| {
        let (cache, up, key) = (cache.clone(), up.clone(), key.to_owned());
        async move {
            cache
                .get_or_fetch(key, &policy(), up.fetch(ms(0)))
                .await
                .unwrap()
                .1
        }
    };
    assert_eq!(outcome(&second, "orders GET /o/1").await, Outcome::L2Hit);
    assert_eq!(outcome(&second, "users GET /users/1").await, Outcome::Miss);
    assert_eq!(outcome(&first, "users GET /users/2").await, Outcome::Miss);
    // What is written after the purge is served again.
    eventually("the new users entries are written", || async {
        first.stats().l2.unwrap().writes == 4 && second.stats().l2.unwrap().writes == 1
    })
    .await;
    let third = mc_cache(&[SHARED_MEMCACHED], &prefix);
    assert_eq!(outcome(&third, "users GET /users/1").await, Outcome::L2Hit);
    // An empty prefix empties the whole tier for this deployment.
    first.purge_prefix("").await.unwrap();
    let fourth = mc_cache(&[SHARED_MEMCACHED], &prefix);
    for key in keys {
        assert_eq!(outcome(&fourth, key).await, Outcome::Miss, "{key}");
    }
    mc_cleanup(SHARED_MEMCACHED, &prefix, &keys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_over_the_item_size_are_not_stored_and_are_counted() {
    let prefix = unique_prefix("mc-large");
    let big = |len: usize| {
        move || async move {
            Ok::<_, UpstreamDown>(CachedResponse::new(
                StatusCode::OK,
                Bytes::from(vec![b'x'; len]),
            ))
        }
    };
    // Over the configured item size: never sent.
    let small_items = Cache::new(CacheSettings {
        memcached: Some(MemcachedSettings {
            max_item_bytes: 4096,
            ..mc_settings(&[SHARED_MEMCACHED], &prefix)
        }),
        ..CacheSettings::default()
    })
    .unwrap();
    small_items
        .get_or_fetch("big".into(), &policy(), big(8_000))
        .await
        .unwrap();
    eventually("the oversized entry is counted", || async {
        small_items.stats().l2.unwrap().too_large == 1
    })
    .await;
    // Configured above what the server accepts (1 MiB by default): memcached refuses it, the
    // refusal is counted as too large and the server stays healthy.
    let lax = Cache::new(CacheSettings {
        memcached: Some(MemcachedSettings {
            max_item_bytes: 4 << 20,
            ..mc_settings(&[SHARED_MEMCACHED], &prefix)
        }),
        ..CacheSettings::default()
    })
    .unwrap();
    lax.get_or_fetch("huge".into(), &policy(), big(2 << 20))
        .await
        .unwrap();
    eventually("the refusal is counted", || async {
        lax.stats().l2.unwrap().too_large == 1
    })
    .await;
    let l2 = lax.stats().l2.unwrap();
    assert!(l2.healthy && l2.writes == 0, "{l2:?}");
    assert!(!has_entry(SHARED_MEMCACHED, &prefix, "big").await);
    assert!(!has_entry(SHARED_MEMCACHED, &prefix, "huge").await);
    // The tier still works for entries that fit.
    lax.get_or_fetch("small".into(), &policy(), big(100))
        .await
        .unwrap();
    eventually("a small entry is written", || async {
        lax.stats().l2.unwrap().writes == 1
    })
    .await;
    mc_cleanup(SHARED_MEMCACHED, &prefix, &["big", "huge", "small"]).await;
}

/// Memcached cannot broadcast a purge as Redis does: each replica watches the generations its
/// L1 rests on, so a purge on one replica empties the others' memory within about a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_one_replica_empties_the_others_memory_through_the_generations() {
    let prefix = unique_prefix("mc-watch");
    let keys = ["users GET /u/1", "orders GET /o/1"];
    let (a, b) = (
        mc_cache(&[SHARED_MEMCACHED], &prefix),
        mc_cache(&[SHARED_MEMCACHED], &prefix),
    );
    let up = Upstream::new();
    let get = |cache: &Cache, key: &str| {
        let (cache, up, key) = (cache.clone(), up.clone(), key.to_owned());
        async move {
            cache
                .get_or_fetch(key, &policy(), up.fetch(ms(0)))
                .await
                .unwrap()
                .1
        }
    };
    for key in keys {
        assert_eq!(get(&a, key).await, Outcome::Miss);
        eventually("A's entry in memcached", || async {
            has_entry(SHARED_MEMCACHED, &prefix, key).await
        })
        .await;
        assert_eq!(get(&b, key).await, Outcome::L2Hit);
        assert_eq!(get(&b, key).await, Outcome::Hit, "in B's memory now");
    }
    // No waiting for B's watcher to have read anything first: what B's entries were read under
    // is what its first reading compares with.
    a.purge_prefix("users ").await.unwrap();
    let mut outcome = Outcome::Hit;
    for _ in 0..500 {
        outcome = get(&b, "users GET /u/1").await;
        if outcome != Outcome::Hit {
            break;
        }
        tokio::time::sleep(ms(10)).await;
    }
    assert_eq!(
        outcome,
        Outcome::Miss,
        "gone from B's memory and from memcached"
    );
    assert_eq!(
        get(&b, "orders GET /o/1").await,
        Outcome::Hit,
        "another namespace stays"
    );
    // Emptying the whole cache reaches B's memory too.
    a.purge_prefix("").await.unwrap();
    for _ in 0..500 {
        outcome = get(&b, "orders GET /o/1").await;
        if outcome != Outcome::Hit {
            break;
        }
        tokio::time::sleep(ms(10)).await;
    }
    assert_eq!(outcome, Outcome::Miss);
    mc_cleanup(SHARED_MEMCACHED, &prefix, &keys).await;
}
