//! `manifold bench cache` (issue 4, point 8): the cache beside its limits, in one run.
//!
//! - **Hit ratio**: a Zipf(0.99) stream over 100,000 keys against a cache holding 10,000: moka
//!   (the in-process tier) beside an LRU baseline and Bélády's offline optimum on the same
//!   stream ([`manifold_cache::sim::simulate_hit_ratios`]).
//! - **Hit latency in the library**: an L1 hit, and an L2 (Redis) hit beside a raw Redis `GET` of
//!   the same bytes, interleaved ([`manifold_cache::bench::measure_latency`]).
//! - **L1 hit end to end in the gateway**: a GET to a route whose call is cached, through the
//!   real gateway on loopback, interleaved with the same GET sent straight to the upstream (one
//!   loopback HTTP round trip: the physical limit). Closed loop, one request at a time, so the
//!   figure is the gateway's own latency for a hit, not queueing.

use crate::BenchError;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use manifold_cache::bench::{LatencyParams, LatencyReport, LatencySummary};
use manifold_cache::sim::{HitRatioParams, HitRatioReport};
use serde::Serialize;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct CacheSpec {
    /// The hit-ratio stream.
    pub hit_ratio: HitRatioParams,
    /// Samples for each latency figure.
    pub samples: u32,
    /// Redis for the L2 figures (`None`: skipped, and said so).
    pub redis_url: Option<String>,
}

impl Default for CacheSpec {
    fn default() -> Self {
        CacheSpec {
            hit_ratio: HitRatioParams::default(),
            samples: 20_000,
            redis_url: Some("redis://127.0.0.1:6379".into()),
        }
    }
}

impl CacheSpec {
    /// Seconds, not minutes: for smoke tests (a shorter stream, fewer samples).
    pub fn quick() -> Self {
        CacheSpec {
            hit_ratio: HitRatioParams {
                requests: 200_000,
                ..HitRatioParams::default()
            },
            samples: 2_000,
            ..CacheSpec::default()
        }
    }
}

/// Percentiles of end-to-end requests, microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct E2e {
    /// Through the gateway, answered from its memory tier (`Manifold-Cache: item=hit`).
    pub gateway_l1_hit: LatencySummary,
    /// The same GET straight to the upstream (which answers at once).
    pub direct_upstream: LatencySummary,
}

/// Everything `manifold bench cache` measured.
#[derive(Debug, Clone, Serialize)]
pub struct CacheReport {
    /// The spec.
    pub spec: CacheSpec,
    /// Hit ratios on one Zipf stream.
    pub hit_ratio: HitRatioReport,
    /// `optimum - gateway_l1`, in percentage points (goal: ≤ 5): the memory tier exactly as
    /// the gateway builds it (bounded by bytes, its frequency sketch sized by `build_l1`).
    pub l1_points_below_optimum: f64,
    /// The library's own hit latencies, with the raw Redis GET beside L2.
    pub library: LatencyReport,
    /// L1 hit through the gateway, beside a direct upstream round trip.
    pub gateway: E2e,
}

/// Run every part. `progress` is told what is being measured.
pub async fn run(spec: &CacheSpec, progress: impl Fn(&str)) -> Result<CacheReport, BenchError> {
    progress("hit ratio: the gateway's memory tier vs LRU, online LFU and Bélády on a Zipf stream");
    let params = spec.hit_ratio.clone();
    let hit_ratio =
        tokio::task::spawn_blocking(move || manifold_cache::sim::simulate_hit_ratios(&params))
            .await
            .map_err(|e| BenchError::Setup(format!("simulation task: {e}")))?
            .map_err(|e| BenchError::Setup(format!("simulation: {e}")))?;
    progress("library hit latency: L1, L2 and a raw Redis GET");
    let library = manifold_cache::bench::measure_latency(&LatencyParams {
        samples: spec.samples,
        body_bytes: 1024,
        redis_url: spec.redis_url.clone(),
    })
    .await
    .map_err(|e| BenchError::Setup(format!("latency: {e}")))?;
    progress("gateway L1 hit end to end vs a direct upstream round trip");
    let gateway = gateway_e2e(spec.samples).await?;
    Ok(CacheReport {
        spec: spec.clone(),
        l1_points_below_optimum: (hit_ratio.optimum - hit_ratio.gateway_l1) * 100.0,
        hit_ratio,
        library,
        gateway,
    })
}

const BODY: &[u8] = br#"{"id":1,"name":"item","tags":["a","b","c"]}"#;

async fn upstream(stop: CancellationToken) -> Result<SocketAddr, BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| BenchError::Setup(format!("upstream: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| BenchError::Setup(format!("upstream: {e}")))?;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => a,
            };
            let Ok((stream, _)) = accepted else { return };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    let mut r = Response::new(Full::new(Bytes::from_static(BODY)));
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn summary(samples: &mut [Duration]) -> LatencySummary {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_nanos() as f64 / 1_000.0
    };
    LatencySummary {
        samples: samples.len() as u64,
        p50_us: at(0.50),
        p99_us: at(0.99),
        p999_us: at(0.999),
        max_us: at(1.0),
    }
}

async fn gateway_e2e(samples: u32) -> Result<E2e, BenchError> {
    let samples = samples.clamp(1, 1_000_000);
    let stop = CancellationToken::new();
    let up = upstream(stop.clone()).await?;
    let toml = format!(
        r#"[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
[upstreams.items]
endpoints = ["http://{up}"]
[routes.item]
path = "/item/{{id}}"
  [[routes.item.calls]]
  name = "item"
  upstream = "items"
  path = "/items/{{path.id}}"
  cache = {{ ttl = "1h" }}
"#
    );
    let config = manifold_config::compile("bench-cache.toml".as_ref(), &toml)
        .map_err(|e| BenchError::Setup(format!("gateway config: {e}")))?;
    let gw = manifold_gateway::Gateway::bind(config)
        .await
        .map_err(|e| BenchError::Setup(format!("gateway: {e}")))?;
    let gw_addr = gw.local_addr();
    tokio::spawn(gw.run(stop.clone()));
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let get = |url: String| {
        let client = client.clone();
        async move {
            let uri: http::Uri = url
                .parse()
                .map_err(|e| BenchError::Setup(format!("url: {e}")))?;
            let resp = client
                .get(uri)
                .await
                .map_err(|e| BenchError::Setup(format!("request: {e}")))?;
            let hit = resp
                .headers()
                .get(manifold_gateway::CACHE_HEADER)
                .is_some_and(|v| v == "item=hit");
            let status = resp.status();
            resp.into_body()
                .collect()
                .await
                .map_err(|e| BenchError::Setup(format!("body: {e}")))?;
            if !status.is_success() {
                return Err(BenchError::Setup(format!("{url} answered {status}")));
            }
            Ok::<_, BenchError>(hit)
        }
    };
    let via = format!("http://{gw_addr}/item/1");
    let direct = format!("http://{up}/items/1");
    // Warm: the entry, both connections.
    for _ in 0..3 {
        get(via.clone()).await?;
        get(direct.clone()).await?;
    }
    let mut g = Vec::with_capacity(samples as usize);
    let mut d = Vec::with_capacity(samples as usize);
    for _ in 0..samples {
        let t = Instant::now();
        let hit = get(via.clone()).await?;
        g.push(t.elapsed());
        if !hit {
            stop.cancel();
            return Err(BenchError::Setup(
                "a gateway sample was not an L1 hit".into(),
            ));
        }
        let t = Instant::now();
        get(direct.clone()).await?;
        d.push(t.elapsed());
    }
    stop.cancel();
    Ok(E2e {
        gateway_l1_hit: summary(&mut g),
        direct_upstream: summary(&mut d),
    })
}

impl CacheReport {
    /// The report as Markdown tables.
    pub fn to_markdown(&self) -> String {
        let h = &self.hit_ratio;
        let pct = |x: f64| format!("{:.1}%", x * 100.0);
        let mut s = format!(
            "## Hit ratio: Zipf({}) over {} keys, cache of {}, {} requests\n\n| policy | hit ratio |\n|---|---|\n| LRU (baseline) | {} |\n| the gateway's memory tier (moka bounded by bytes, sketch sized by Manifold) | {} |\n| moka bounded by entries | {} |\n| quick_cache | {} |\n| perfect online LFU (exact counts) | {} |\n| static LFU (the most requested keys, known in advance) | {} |\n| Bélády's optimum | {} |\n\nThe memory tier is {:.1} points below the optimum (goal: ≤ 5).\n\n",
            h.params.exponent,
            h.params.keys,
            h.params.capacity,
            h.params.requests,
            pct(h.lru),
            pct(h.gateway_l1),
            pct(h.moka),
            pct(h.quick_cache),
            pct(h.lfu_online),
            pct(h.lfu_static),
            pct(h.optimum),
            self.l1_points_below_optimum
        );
        let row = |name: &str, l: &LatencySummary| {
            format!(
                "| {name} | {:.1} | {:.1} | {:.1} |\n",
                l.p50_us, l.p99_us, l.p999_us
            )
        };
        s.push_str("## Hit latency (µs)\n\n| operation | p50 | p99 | p99.9 |\n|---|---|---|---|\n");
        s.push_str(&row("L1 hit (library)", &self.library.l1_hit));
        if let Some(l2) = &self.library.l2_hit {
            s.push_str(&row("L2 hit (library)", l2));
        }
        if let Some(r) = &self.library.redis_get {
            s.push_str(&row("raw Redis GET (same run)", r));
        }
        s.push_str(&row(
            "L1 hit through the gateway, end to end",
            &self.gateway.gateway_l1_hit,
        ));
        s.push_str(&row(
            "direct upstream round trip (same run)",
            &self.gateway.direct_upstream,
        ));
        if let (Some(p50), Some(p99)) = (
            self.library.l2_over_redis_p50,
            self.library.l2_over_redis_p99,
        ) {
            s.push_str(&format!(
                "\nL2 / raw Redis: {p50:.2}× at p50, {p99:.2}× at p99 (goal ≤ 1.5×).\n"
            ));
        }
        if let Some(why) = &self.library.redis_skipped {
            s.push_str(&format!("\nRedis figures skipped: {why}\n"));
        }
        s.push_str(&format!(
            "Gateway L1 hit p99: {:.0} µs (goal < 100 µs).\n",
            self.gateway.gateway_l1_hit.p99_us
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_run_measures_every_figure() {
        let spec = CacheSpec {
            hit_ratio: HitRatioParams {
                keys: 1_000,
                capacity: 100,
                requests: 20_000,
                ..HitRatioParams::default()
            },
            samples: 50,
            redis_url: Some("redis://127.0.0.1:6379".into()),
        };
        let r = run(&spec, |_| {}).await.unwrap();
        assert!(r.hit_ratio.lru <= r.hit_ratio.optimum);
        assert!(r.hit_ratio.gateway_l1 <= r.hit_ratio.optimum);
        assert_eq!(r.gateway.gateway_l1_hit.samples, 50);
        assert_eq!(r.gateway.direct_upstream.samples, 50);
        assert!(r.library.l2_hit.is_some(), "{:?}", r.library.redis_skipped);
        let md = r.to_markdown();
        assert!(md.contains("Bélády") && md.contains("end to end"), "{md}");
    }
}
