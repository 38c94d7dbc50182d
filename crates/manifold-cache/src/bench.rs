//! Latency of a cache hit, measured beside its physical limit in the same run (BENCHMARKS.md:
//! ratios in one run): an L1 hit is a hash lookup; an L2 hit is compared with a raw Redis `GET`
//! of the same bytes over the same kind of connection, interleaved sample by sample.
//!
//! `manifold bench cache` calls [`measure_latency`] and [`crate::sim::simulate_hit_ratios`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::StatusCode;
use serde::Serialize;
use tokio::time::Instant;

use crate::{
    Cache, CacheError, CachePolicy, CacheSettings, CachedResponse, Outcome, RedisSettings,
};

/// What to measure.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyParams {
    /// Samples per measured operation (bounded to 1..=1,000,000).
    pub samples: u32,
    /// Size of the cached body.
    pub body_bytes: usize,
    /// Redis to measure the L2 tier against; `None` measures L1 only.
    pub redis_url: Option<String>,
}

impl Default for LatencyParams {
    fn default() -> Self {
        Self {
            samples: 20_000,
            body_bytes: 1_024,
            redis_url: None,
        }
    }
}

/// Percentiles of one operation, in microseconds.
#[derive(Clone, Debug, Serialize)]
pub struct LatencySummary {
    /// Samples recorded.
    pub samples: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Slowest sample.
    pub max_us: f64,
}

/// The run's figures.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyReport {
    /// The parameters.
    pub params: LatencyParams,
    /// `get_or_fetch` answered from the in-process tier.
    pub l1_hit: LatencySummary,
    /// `get_or_fetch` answered from Redis (L1 evicted before each sample).
    pub l2_hit: Option<LatencySummary>,
    /// A raw `GET` of the same key and bytes: the physical limit of an L2 hit.
    pub redis_get: Option<LatencySummary>,
    /// `l2_hit.p50 / redis_get.p50` (goal: ≤ 1.5).
    pub l2_over_redis_p50: Option<f64>,
    /// `l2_hit.p99 / redis_get.p99`.
    pub l2_over_redis_p99: Option<f64>,
    /// Why the Redis figures are missing, when they are.
    pub redis_skipped: Option<String>,
}

fn histogram() -> Result<Histogram<u64>, CacheError> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3)
        .map_err(|e| CacheError::Input(format!("histogram: {e}")))
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
    h.saturating_record(ns);
}

fn summary(h: &Histogram<u64>) -> LatencySummary {
    let us = |ns: u64| ns as f64 / 1_000.0;
    LatencySummary {
        samples: h.len(),
        p50_us: us(h.value_at_quantile(0.50)),
        p99_us: us(h.value_at_quantile(0.99)),
        p999_us: us(h.value_at_quantile(0.999)),
        max_us: us(h.max()),
    }
}

#[derive(Clone, Debug)]
struct Never;

/// Measures hit latencies. Writes one key under a unique prefix in Redis and removes it after.
/// Run it on an otherwise idle runtime (wall-clock timings); a Redis that cannot be reached is
/// reported in `redis_skipped`, never as a made-up figure.
pub async fn measure_latency(params: &LatencyParams) -> Result<LatencyReport, CacheError> {
    if params.samples == 0 || params.samples > 1_000_000 {
        return Err(CacheError::Input(format!(
            "samples must be in 1..=1000000, got {}",
            params.samples
        )));
    }
    let body = Bytes::from(vec![b'x'; params.body_bytes]);
    let policy = CachePolicy::new("bench", Duration::from_secs(600));
    let key = "bench GET /item/1".to_owned();
    let fetch = |body: Bytes| {
        move || async move { Ok::<_, Never>(CachedResponse::new(StatusCode::OK, body)) }
    };

    // L1 alone.
    let local = Cache::new(CacheSettings::default())?;
    local
        .get_or_fetch(key.clone(), &policy, fetch(body.clone()))
        .await
        .map_err(|_| never())?;
    let mut l1 = histogram()?;
    for _ in 0..params.samples {
        let start = Instant::now();
        let r = local
            .get_or_fetch(key.clone(), &policy, fetch(body.clone()))
            .await;
        record(&mut l1, start.elapsed());
        if !matches!(r, Ok((_, Outcome::Hit))) {
            return Err(CacheError::Io("L1 benchmark sample was not a hit".into()));
        }
    }

    let mut report = LatencyReport {
        params: params.clone(),
        l1_hit: summary(&l1),
        l2_hit: None,
        redis_get: None,
        l2_over_redis_p50: None,
        l2_over_redis_p99: None,
        redis_skipped: None,
    };
    let Some(url) = &params.redis_url else {
        report.redis_skipped = Some("no redis url given".into());
        return Ok(report);
    };

    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let prefix = format!("manifold-bench:{}:{nanos}:", std::process::id());
    let settings = RedisSettings {
        prefix: prefix.clone(),
        ..RedisSettings::new(url.clone())
    };
    let shared = Cache::new(CacheSettings {
        redis: Some(settings),
        ..CacheSettings::default()
    })?;
    let client = redis::Client::open(url.as_str())
        .map_err(|e| CacheError::Config(format!("redis url {url:?}: {e}")))?;
    let raw = tokio::time::timeout(
        Duration::from_secs(2),
        redis::aio::ConnectionManager::new(client),
    )
    .await;
    let mut raw = match raw {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            report.redis_skipped = Some(format!("redis at {url} unreachable: {e}"));
            return Ok(report);
        }
        Err(_) => {
            report.redis_skipped = Some(format!("redis at {url} did not answer within 2s"));
            return Ok(report);
        }
    };
    shared
        .get_or_fetch(key.clone(), &policy, fetch(body.clone()))
        .await
        .map_err(|_| never())?;
    let redis_key = format!("{prefix}e:{key}");
    // Wait (bounded) for the background write to land.
    let mut present = false;
    for _ in 0..200 {
        let n: i64 = redis::cmd("EXISTS")
            .arg(&redis_key)
            .query_async(&mut raw)
            .await
            .map_err(|source| CacheError::Redis {
                context: "bench: EXISTS".into(),
                source,
            })?;
        if n == 1 {
            present = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if !present {
        report.redis_skipped = Some("the cache's write did not reach redis within 2s".into());
        return Ok(report);
    }

    let (mut l2, mut get) = (histogram()?, histogram()?);
    let mut result = Ok(());
    for _ in 0..params.samples {
        shared.evict_local(&key).await;
        let start = Instant::now();
        let r = shared
            .get_or_fetch(key.clone(), &policy, fetch(body.clone()))
            .await;
        record(&mut l2, start.elapsed());
        if !matches!(r, Ok((_, Outcome::L2Hit))) {
            result = Err(CacheError::Io(
                "L2 benchmark sample was not an L2 hit (redis slow or down?)".into(),
            ));
            break;
        }
        let start = Instant::now();
        let v: redis::RedisResult<Option<Vec<u8>>> = redis::cmd("GET")
            .arg(&redis_key)
            .query_async(&mut raw)
            .await;
        record(&mut get, start.elapsed());
        if let Err(source) = v {
            result = Err(CacheError::Redis {
                context: "bench: GET".into(),
                source,
            });
            break;
        }
    }
    let purge = shared.purge_prefix("").await;
    result?;
    purge?;
    let (l2, get) = (summary(&l2), summary(&get));
    report.l2_over_redis_p50 = Some(l2.p50_us / get.p50_us.max(f64::MIN_POSITIVE));
    report.l2_over_redis_p99 = Some(l2.p99_us / get.p99_us.max(f64::MIN_POSITIVE));
    report.l2_hit = Some(l2);
    report.redis_get = Some(get);
    Ok(report)
}

fn never() -> CacheError {
    CacheError::Io("benchmark fetcher failed".into())
}
