//! What the shared tier hands back is bounded like what the cache stores itself: an entry
//! heavier than this replica's `max_entry_bytes` (written by a replica configured otherwise,
//! or by anything else with access to Redis) is a miss, never served or kept in memory.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use manifold_cache::{Cache, CachePolicy, CacheSettings, CachedResponse, Outcome};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_entry_over_max_entry_bytes_is_a_miss() {
    let prefix = unique_prefix("oversize");
    let policy = CachePolicy::new("user", Duration::from_secs(60));
    // A replica allowing 4 MiB entries writes a 64 KiB one.
    let big = cache_with(SHARED_REDIS, &prefix);
    big.get_or_fetch("k".into(), &policy, || async {
        Ok::<_, UpstreamDown>(CachedResponse::new(
            StatusCode::OK,
            Bytes::from(vec![b'x'; 64 * 1024]),
        ))
    })
    .await
    .unwrap();
    let conn = raw(SHARED_REDIS).await;
    eventually("the entry is in redis", || {
        let (mut conn, prefix) = (conn.clone(), prefix.clone());
        async move { keys_under(&mut conn, &prefix).await.len() == 1 }
    })
    .await;

    let small = Cache::new(CacheSettings {
        max_entry_bytes: 8 * 1024,
        redis: Some(redis_settings(SHARED_REDIS, &prefix)),
        ..CacheSettings::default()
    })
    .unwrap();
    let up = Upstream::new();
    let (r, o) = small
        .get_or_fetch("k".into(), &policy, up.fetch(Duration::ZERO))
        .await
        .unwrap();
    // Not the 64 KiB body: a short message if this fails.
    assert_eq!((o, r.body.len()), (Outcome::Miss, 2));
    assert_eq!(body(&r), "v1");
    assert_eq!(up.calls(), 1);
    let l2 = small.stats().l2.unwrap();
    assert_eq!((l2.hits, l2.too_large), (0, 1));
    cleanup(SHARED_REDIS, &prefix).await;
}
