//! Freshness on paused time: TTL, stale-while-revalidate, stale-if-error, early refresh, and what
//! the upstream's answer allows to be stored.

use super::*;

#[tokio::test(start_paused = true)]
async fn repeated_keys_stop_reaching_the_upstream_until_the_ttl_ends() {
    let cache = cache();
    let up = Upstream::new();
    let policy = CachePolicy::new("user", secs(30));
    assert_eq!(
        get(&cache, &policy, &up, ms(20)).await,
        Ok(("v1".into(), Outcome::Miss))
    );
    for _ in 0..10 {
        assert_eq!(
            get(&cache, &policy, &up, ms(20)).await,
            Ok(("v1".into(), Outcome::Hit))
        );
    }
    assert_eq!(up.calls(), 1);
    advance(secs(29)).await;
    assert_eq!(
        get(&cache, &policy, &up, ms(20)).await.unwrap().1,
        Outcome::Hit
    );
    advance(secs(2)).await; // past the ttl, no stale window: gone
    assert_eq!(
        get(&cache, &policy, &up, ms(20)).await,
        Ok(("v2".into(), Outcome::Miss))
    );
    assert_eq!(up.calls(), 2);
    let stats = cache.stats().calls["user"].clone();
    assert_eq!((stats.miss, stats.hit), (2, 11));
    // The stored answer says when it was stored.
    let (r, _) = cache
        .get_or_fetch("users GET /users/1".into(), &policy, up.fetch(ms(0), 200))
        .await
        .unwrap();
    assert!(r.stored_at.is_some());
}

#[tokio::test(start_paused = true)]
async fn stale_answers_at_once_and_refreshes_exactly_once_in_the_background() {
    let cache = cache();
    let up = Upstream::new();
    let policy = CachePolicy::new("user", secs(30)).with_stale(secs(300));
    assert_eq!(
        get(&cache, &policy, &up, ms(0)).await.unwrap().1,
        Outcome::Miss
    );
    advance(secs(31)).await;
    // The refresh takes 1 s; every caller meanwhile gets the stale answer without waiting.
    let before = Instant::now();
    for _ in 0..20 {
        assert_eq!(
            get(&cache, &policy, &up, secs(1)).await,
            Ok(("v1".into(), Outcome::Stale))
        );
    }
    assert_eq!(
        Instant::now(),
        before,
        "stale answers never waited (paused clock did not move)"
    );
    settle().await;
    assert_eq!(up.calls(), 2, "one refresh for twenty stale answers");
    sleep(secs(2)).await;
    assert_eq!(
        get(&cache, &policy, &up, ms(0)).await,
        Ok(("v2".into(), Outcome::Hit))
    );
    assert_eq!(up.calls(), 2);
    let s = cache.stats().calls["user"].clone();
    assert_eq!((s.stale, s.refreshes, s.refresh_failures), (20, 1, 0));
    // Past ttl + stale: a plain miss.
    advance(secs(400)).await;
    assert_eq!(
        get(&cache, &policy, &up, ms(0)).await,
        Ok(("v3".into(), Outcome::Miss))
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_keeps_the_stale_entry_and_backs_off() {
    let cache = cache();
    let up = Upstream::new();
    let policy = CachePolicy::new("user", secs(10)).with_stale(secs(60));
    let key = || "k".to_owned();
    cache
        .get_or_fetch(key(), &policy, up.fetch(ms(0), 200))
        .await
        .unwrap();
    advance(secs(11)).await;
    let (r, o) = cache
        .get_or_fetch(key(), &policy, up.failing(ms(5)))
        .await
        .unwrap();
    assert_eq!((r.body.as_ref(), o), (&b"v1"[..], Outcome::Stale));
    settle().await;
    sleep(ms(10)).await;
    assert_eq!(up.calls(), 2);
    // The refresh failed: answers say so, and no new refresh for REFRESH_RETRY_AFTER.
    for _ in 0..5 {
        let (r, o) = cache
            .get_or_fetch(key(), &policy, up.failing(ms(5)))
            .await
            .unwrap();
        assert_eq!((r.body.as_ref(), o), (&b"v1"[..], Outcome::StaleIfError));
    }
    assert_eq!(up.calls(), 2);
    advance(REFRESH_RETRY_AFTER).await;
    // A 5xx answer is a failure too: stale-if-error again, one more upstream call.
    let (_, o) = cache
        .get_or_fetch(key(), &policy, up.fetch(ms(5), 503))
        .await
        .unwrap();
    assert_eq!(o, Outcome::StaleIfError);
    settle().await;
    sleep(ms(10)).await;
    assert_eq!(up.calls(), 3);
    advance(REFRESH_RETRY_AFTER).await;
    // Recovery: the next refresh succeeds and the entry is fresh again.
    let (_, o) = cache
        .get_or_fetch(key(), &policy, up.fetch(ms(5), 200))
        .await
        .unwrap();
    assert_eq!(o, Outcome::StaleIfError);
    settle().await;
    sleep(ms(10)).await;
    let (r, o) = cache
        .get_or_fetch(key(), &policy, up.failing(ms(0)))
        .await
        .unwrap();
    assert_eq!((r.body.as_ref(), o), (&b"v4"[..], Outcome::Hit));
    let s = cache.stats().calls["user"].clone();
    assert_eq!((s.refreshes, s.refresh_failures), (3, 2));
}

#[tokio::test(start_paused = true)]
async fn non_2xx_answers_pass_through_unless_negative_caching_is_on() {
    let cache = cache();
    let up = Upstream::new();
    let plain = CachePolicy::new("plain", secs(30));
    for _ in 0..2 {
        let (r, o) = cache
            .get_or_fetch("a".into(), &plain, up.fetch(ms(0), 404))
            .await
            .unwrap();
        assert_eq!((r.status, o), (StatusCode::NOT_FOUND, Outcome::Miss));
    }
    assert_eq!(up.calls(), 2);
    assert_eq!(cache.stats().calls["plain"].not_stored, 2);
    // A 5xx with no stale entry is the answer (not an error), and is not stored either.
    let (r, _) = cache
        .get_or_fetch("a".into(), &plain, up.fetch(ms(0), 502))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);

    let negative = CachePolicy::new("neg", secs(30)).with_errors(secs(5));
    cache
        .get_or_fetch("b".into(), &negative, up.fetch(ms(0), 404))
        .await
        .unwrap();
    let (r, o) = cache
        .get_or_fetch("b".into(), &negative, up.fetch(ms(0), 200))
        .await
        .unwrap();
    assert_eq!((r.status, o), (StatusCode::NOT_FOUND, Outcome::Hit));
    advance(secs(6)).await;
    let (r, o) = cache
        .get_or_fetch("b".into(), &negative, up.fetch(ms(0), 200))
        .await
        .unwrap();
    assert_eq!(
        (r.status, o),
        (StatusCode::OK, Outcome::Miss),
        "negative entries have no stale window"
    );
}

#[tokio::test(start_paused = true)]
async fn upstream_no_cache_is_respected_when_asked_and_no_store_always() {
    let cache = cache();
    let calls = Arc::new(AtomicUsize::new(0));
    let fetch = |calls: Arc<AtomicUsize>, cc: &'static str| {
        move || async move {
            calls.fetch_add(1, SeqCst);
            Ok::<_, UpstreamDown>(
                CachedResponse::new(StatusCode::OK, Bytes::from_static(b"x")).with_header(
                    http::header::CACHE_CONTROL,
                    http::HeaderValue::from_static(cc),
                ),
            )
        }
    };
    let respect = CachePolicy::new("r", secs(30)).with_respect_cache_control(true);
    let ignore = CachePolicy::new("i", secs(30));
    let never = CachePolicy::new("n", secs(30));
    for _ in 0..3 {
        cache
            .get_or_fetch("r".into(), &respect, fetch(calls.clone(), "no-cache"))
            .await
            .unwrap();
        cache
            .get_or_fetch("i".into(), &ignore, fetch(calls.clone(), "no-cache"))
            .await
            .unwrap();
        cache
            .get_or_fetch("n".into(), &never, fetch(calls.clone(), "no-store"))
            .await
            .unwrap();
    }
    assert_eq!(
        calls.load(SeqCst),
        7,
        "3 for the respecting call, 1 for the other, 3 for the no-store answers"
    );
    let stats = cache.stats();
    assert_eq!(stats.calls["r"].not_stored, 3);
    assert_eq!(stats.calls["i"].hit, 2);
    assert_eq!(stats.calls["n"].not_stored, 3);
}

#[tokio::test(start_paused = true)]
async fn a_zero_policy_bypasses_the_cache() {
    let cache = cache();
    let up = Upstream::new();
    let off = CachePolicy::new("off", Duration::ZERO);
    for _ in 0..3 {
        let (_, o) = cache
            .get_or_fetch("k".into(), &off, up.fetch(ms(0), 200))
            .await
            .unwrap();
        assert_eq!(o, Outcome::Bypass);
    }
    assert_eq!(up.calls(), 3);
    assert_eq!(cache.stats().calls["off"].bypass, 3);
}

#[tokio::test(start_paused = true)]
async fn early_refresh_keeps_a_hot_key_from_expiring() {
    let cache = cache();
    let up = Upstream::new();
    // The fetch takes 1 s; beta 1: with 0.1 s left, each hit refreshes with p = e^-0.1 ≈ 0.9.
    let policy = CachePolicy::new("hot", secs(10)).with_early_refresh(1.0);
    assert_eq!(
        get(&cache, &policy, &up, secs(1)).await.unwrap().1,
        Outcome::Miss
    );
    advance(ms(9_900)).await;
    for _ in 0..50 {
        assert_eq!(
            get(&cache, &policy, &up, secs(1)).await,
            Ok(("v1".into(), Outcome::Hit))
        );
    }
    settle().await;
    assert_eq!(
        up.calls(),
        2,
        "one early refresh, however many hits wanted one"
    );
    sleep(ms(1_100)).await; // past the original expiry, the refresh has landed
    assert_eq!(
        get(&cache, &policy, &up, secs(1)).await,
        Ok(("v2".into(), Outcome::Hit))
    );
    let s = cache.stats().calls["hot"].clone();
    assert_eq!((s.early_refreshes, s.miss), (1, 1));
}
