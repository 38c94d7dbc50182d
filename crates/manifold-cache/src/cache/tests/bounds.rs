//! Purges, the byte bound, statistics and settings the cache refuses.

use super::*;
use crate::MemcachedSettings;

#[tokio::test(start_paused = true)]
async fn purge_removes_only_the_prefix() {
    let cache = cache();
    let up = Upstream::new();
    let policy = CachePolicy::new("c", secs(30));
    for key in [
        "users GET /users/1",
        "users GET /users/2",
        "orders GET /orders/1",
    ] {
        get_key(&cache, &policy, &up, key).await.unwrap();
    }
    assert_eq!(cache.purge_prefix("users ").await.unwrap(), 2);
    assert_eq!(
        get_key(&cache, &policy, &up, "users GET /users/1")
            .await
            .unwrap()
            .1,
        Outcome::Miss
    );
    assert_eq!(
        get_key(&cache, &policy, &up, "orders GET /orders/1")
            .await
            .unwrap()
            .1,
        Outcome::Hit
    );
    assert_eq!(cache.purge_prefix("").await.unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_byte_bound_holds_and_oversized_answers_pass_through() {
    let settings = CacheSettings {
        max_bytes: 64 * 1024,
        max_entry_bytes: 8 * 1024,
        redis: None,
        memcached: None,
    };
    let cache = Cache::new(settings).unwrap();
    let policy = CachePolicy::new("big", secs(30));
    for i in 0..100 {
        let body = Bytes::from(vec![b'x'; 4 * 1024]);
        cache
            .get_or_fetch(format!("k{i}"), &policy, move || async move {
                Ok::<_, UpstreamDown>(CachedResponse::new(StatusCode::OK, body))
            })
            .await
            .unwrap();
    }
    cache.run_pending_tasks().await;
    let l1 = cache.stats().l1;
    assert!(l1.bytes <= 64 * 1024, "{l1:?}");
    assert!(l1.entries > 0 && l1.entries < 100, "{l1:?}");
    let huge = Bytes::from(vec![b'x'; 9 * 1024]);
    for _ in 0..2 {
        let huge = huge.clone();
        cache
            .get_or_fetch("huge".into(), &policy, move || async move {
                Ok::<_, UpstreamDown>(CachedResponse::new(StatusCode::OK, huge))
            })
            .await
            .unwrap();
    }
    assert_eq!(cache.stats().calls["big"].not_stored, 2);
}

#[tokio::test(start_paused = true)]
async fn stats_serialise_for_the_admin_listener() {
    let cache = cache();
    let up = Upstream::new();
    let policy = CachePolicy::new("user", secs(30));
    get(&cache, &policy, &up, ms(0)).await.unwrap();
    get(&cache, &policy, &up, ms(0)).await.unwrap();
    let json = serde_json::to_value(cache.stats()).unwrap();
    assert_eq!(json["calls"]["user"]["hit"], 1);
    assert_eq!(json["calls"]["user"]["miss"], 1);
    assert!(json["l2"].is_null());
    assert_eq!(cache.stats().calls["user"].hit_ratio(), 0.5);
    assert_eq!(
        serde_json::to_value(Outcome::StaleIfError).unwrap(),
        "stale-if-error"
    );
    assert_eq!(Outcome::L2Hit.to_string(), "hit-l2");
}

#[test]
fn bad_settings_are_config_errors() {
    let zero = CacheSettings {
        max_bytes: 0,
        ..CacheSettings::default()
    };
    assert!(matches!(Cache::new(zero), Err(CacheError::Config(_))));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let bad = CacheSettings {
            redis: Some(RedisSettings::new("not a url")),
            ..CacheSettings::default()
        };
        assert!(matches!(Cache::new(bad), Err(CacheError::Config(_))));
    });
    // Outside a runtime a Redis tier cannot be built.
    let outside = CacheSettings {
        redis: Some(RedisSettings::new("redis://127.0.0.1:6379")),
        ..CacheSettings::default()
    };
    assert!(matches!(Cache::new(outside), Err(CacheError::Config(_))));
}

#[tokio::test]
async fn redis_and_memcached_together_are_refused_naming_both() {
    let both = CacheSettings {
        redis: Some(RedisSettings::new("redis://127.0.0.1:6379")),
        memcached: Some(MemcachedSettings::new(vec!["127.0.0.1:11211".into()])),
        ..CacheSettings::default()
    };
    match Cache::new(both) {
        Err(CacheError::Config(msg)) => {
            assert!(msg.contains("redis") && msg.contains("memcached"), "{msg}");
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    let bad = CacheSettings {
        memcached: Some(MemcachedSettings::new(vec!["no-port".into()])),
        ..CacheSettings::default()
    };
    assert!(matches!(Cache::new(bad), Err(CacheError::Config(_))));
}

/// A stored entry holds every header but those of one exchange (framing, date, request ids),
/// whatever the fetcher handed over; an answer that is not stored keeps them all, for the
/// caller that fetched it.
#[tokio::test(start_paused = true)]
async fn entries_drop_per_exchange_headers_and_unstored_answers_keep_all_of_them() {
    let cache = cache();
    let policy = CachePolicy::new("c", secs(30));
    let answer = |cache_control: &'static str| {
        move || async move {
            let h = |n: &'static str, v: &'static str| {
                (
                    http::header::HeaderName::from_static(n),
                    http::HeaderValue::from_static(v),
                )
            };
            let mut r = CachedResponse::new(StatusCode::OK, Bytes::from_static(b"{}"));
            for (n, v) in [
                h("content-type", "application/json"),
                h("x-request-cost", "7"),
                h("access-control-allow-origin", "*"),
                h("content-security-policy", "default-src 'self'"),
                h("date", "Mon, 07 Dec 2026 14:00:00 GMT"),
                h("content-length", "2"),
                h("x-request-id", "the-filling-request"),
                h("connection", "keep-alive"),
            ] {
                r = r.with_header(n, v);
            }
            if !cache_control.is_empty() {
                r = r.with_header(
                    http::header::CACHE_CONTROL,
                    http::HeaderValue::from_static(cache_control),
                );
            }
            Ok::<_, UpstreamDown>(r)
        }
    };
    let names = |r: &CachedResponse| -> Vec<String> {
        r.headers.iter().map(|(n, _)| n.to_string()).collect()
    };
    let stored = [
        "content-type",
        "x-request-cost",
        "access-control-allow-origin",
        "content-security-policy",
    ];
    // The miss that stores it and the hit after it answer the same headers.
    for want in [Outcome::Miss, Outcome::Hit] {
        let (r, o) = cache
            .get_or_fetch("k".into(), &policy, answer(""))
            .await
            .unwrap();
        assert_eq!((o, names(&r)), (want, stored.map(String::from).to_vec()));
    }
    let (r, o) = cache
        .get_or_fetch("other".into(), &policy, answer("no-store"))
        .await
        .unwrap();
    assert_eq!(o, Outcome::Miss);
    assert_eq!(names(&r).len(), 9, "{:?}", names(&r));
}
