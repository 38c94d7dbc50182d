//! Coalescing: one fetch per key however many callers wait, and what happens when a caller
//! gives up, the fetcher fails or panics.

use super::*;

#[tokio::test(start_paused = true)]
async fn fifty_concurrent_misses_make_one_fetch() {
    let cache = cache();
    let up = Upstream::new();
    let policy = CachePolicy::new("user", secs(30));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (cache, up, policy) = (cache.clone(), up.clone(), policy.clone());
        tasks.push(tokio::spawn(async move {
            get(&cache, &policy, &up, ms(100)).await
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        let (body, outcome) = t.await.unwrap().unwrap();
        assert_eq!(body, "v1");
        outcomes.push(outcome);
    }
    assert_eq!(up.calls(), 1);
    assert_eq!(outcomes.iter().filter(|o| **o == Outcome::Miss).count(), 1);
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == Outcome::Coalesced)
            .count(),
        49
    );
    let s = cache.stats().calls["user"].clone();
    assert_eq!((s.miss, s.coalesced), (1, 49));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_giving_up_does_not_cancel_the_shared_fetch() {
    let cache = cache();
    let up = Upstream::new();
    let policy = CachePolicy::new("user", secs(30));
    // The first caller (the one whose fetcher runs) gives up after 10 ms.
    let impatient = {
        let (cache, up, policy) = (cache.clone(), up.clone(), policy.clone());
        tokio::spawn(async move {
            tokio::time::timeout(ms(10), get(&cache, &policy, &up, ms(100))).await
        })
    };
    settle().await;
    let patient = {
        let (cache, up, policy) = (cache.clone(), up.clone(), policy.clone());
        tokio::spawn(async move { get(&cache, &policy, &up, ms(100)).await })
    };
    assert!(
        impatient.await.unwrap().is_err(),
        "the impatient caller timed out"
    );
    assert_eq!(
        patient.await.unwrap(),
        Ok(("v1".into(), Outcome::Coalesced))
    );
    assert_eq!(up.calls(), 1);
    // And the answer was stored for later callers.
    assert_eq!(
        get(&cache, &policy, &up, ms(100)).await.unwrap().1,
        Outcome::Hit
    );
}

#[tokio::test(start_paused = true)]
async fn errors_reach_every_coalesced_caller_and_are_not_stored() {
    let cache = cache();
    let up = Upstream::new();
    let policy = CachePolicy::new("user", secs(30));
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let (cache, up, policy) = (cache.clone(), up.clone(), policy.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_fetch("k".into(), &policy, up.failing(ms(50)))
                .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap_err(), UpstreamDown);
    }
    assert_eq!(up.calls(), 1);
    assert_eq!(cache.stats().calls["user"].error, 5);
    // Nothing stored: the next call fetches again.
    let (_, o) = cache
        .get_or_fetch("k".into(), &policy, up.fetch(ms(0), 200))
        .await
        .unwrap();
    assert_eq!(o, Outcome::Miss);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_fetcher_panics_its_caller_and_waiters_fetch_for_themselves() {
    let cache = cache();
    let policy = CachePolicy::new("p", secs(30));
    let leader = {
        let (cache, policy) = (cache.clone(), policy.clone());
        tokio::spawn(async move {
            cache
                .get_or_fetch("k".into(), &policy, || async {
                    sleep(ms(50)).await;
                    panic!("fetcher bug");
                    #[allow(unreachable_code)]
                    Ok::<CachedResponse, UpstreamDown>(CachedResponse::new(
                        StatusCode::OK,
                        Bytes::new(),
                    ))
                })
                .await
        })
    };
    settle().await;
    let up = Upstream::new();
    let waiter = {
        let (cache, policy, up) = (cache.clone(), policy.clone(), up.clone());
        tokio::spawn(async move { get_key(&cache, &policy, &up, "k").await })
    };
    assert!(leader.await.unwrap_err().is_panic());
    assert_eq!(waiter.await.unwrap().unwrap().1, Outcome::Miss);
    assert_eq!(up.calls(), 1);
    // The key is not stuck behind the dead flight.
    assert_eq!(
        get_key(&cache, &policy, &up, "k").await.unwrap().1,
        Outcome::Miss
    );
}

#[tokio::test(start_paused = true)]
async fn a_caller_arriving_after_the_stale_window_joins_the_running_refresh() {
    let cache = cache();
    let up = Upstream::new();
    let policy = CachePolicy::new("user", secs(10)).with_stale(secs(5));
    get(&cache, &policy, &up, ms(0)).await.unwrap();
    advance(secs(11)).await;
    // Stale: answered at once; the refresh takes 10 s.
    assert_eq!(
        get(&cache, &policy, &up, secs(10)).await,
        Ok(("v1".into(), Outcome::Stale))
    );
    settle().await;
    advance(secs(5)).await; // the stale window is over, the refresh still runs
    assert_eq!(
        get(&cache, &policy, &up, secs(10)).await,
        Ok(("v2".into(), Outcome::Coalesced))
    );
    assert_eq!(up.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_coalesce_per_key_not_across_keys() {
    let cache = cache();
    let up = Upstream::new();
    let policy = CachePolicy::new("user", secs(30));
    let mut tasks = Vec::new();
    for round in 0..20 {
        for key in 0..20 {
            let (cache, up, policy) = (cache.clone(), up.clone(), policy.clone());
            tasks.push(tokio::spawn(async move {
                let (r, o) = cache
                    .get_or_fetch(format!("k{key}"), &policy, up.fetch(ms(50), 200))
                    .await
                    .unwrap();
                (round, key, r.body, o)
            }));
        }
    }
    let mut bodies = std::collections::HashMap::new();
    for t in tasks {
        let (_, key, body, o) = t.await.unwrap();
        assert!(matches!(o, Outcome::Miss | Outcome::Coalesced), "{o:?}");
        // Every caller for one key got that key's single answer.
        assert_eq!(bodies.entry(key).or_insert_with(|| body.clone()), &body);
    }
    assert_eq!(up.calls(), 20, "one fetch per key");
    let s = cache.stats().calls["user"].clone();
    assert_eq!((s.miss, s.coalesced), (20, 380));
}

/// An answer meant for one client (`Cache-Control: private` or `no-store`, or one setting a
/// cookie) is not stored, and neither is it handed to the callers that joined its fetch: each
/// fetches for itself, as it would have with no fetch to join. (A proxy route's key does not
/// hold every header it forwards: the joiners' requests may differ from the leader's in
/// exactly what made the answer private.)
#[tokio::test(start_paused = true)]
async fn an_answer_for_one_client_is_not_handed_to_joined_callers() {
    for (name, value) in [
        (http::header::CACHE_CONTROL, "private"),
        (http::header::CACHE_CONTROL, "no-store"),
        (http::header::SET_COOKIE, "sid=1"),
    ] {
        let cache = cache();
        let policy = CachePolicy::new("user", secs(30));
        let calls = Arc::new(AtomicUsize::new(0));
        let fetch = |calls: Arc<AtomicUsize>| {
            let (name, value) = (name.clone(), value);
            move || async move {
                let n = calls.fetch_add(1, SeqCst) + 1;
                sleep(ms(50)).await;
                let mut headers = http::HeaderMap::new();
                headers.insert(name, http::HeaderValue::from_static(value));
                Ok::<_, UpstreamDown>(CachedResponse::from_parts(
                    StatusCode::OK,
                    &headers,
                    Bytes::from(format!("for caller {n}")),
                ))
            }
        };
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let (cache, policy, fetch) = (cache.clone(), policy.clone(), fetch(calls.clone()));
            tasks.push(tokio::spawn(async move {
                cache.get_or_fetch("k".into(), &policy, fetch).await
            }));
        }
        let mut bodies = Vec::new();
        for t in tasks {
            let (r, o) = t.await.unwrap().unwrap();
            assert_eq!(o, Outcome::Miss, "{name}: {value}");
            bodies.push(r.body);
        }
        bodies.sort();
        bodies.dedup();
        assert_eq!(
            bodies.len(),
            3,
            "{name}: {value}: one answer went to several callers"
        );
        assert_eq!(calls.load(SeqCst), 3);
    }
}
