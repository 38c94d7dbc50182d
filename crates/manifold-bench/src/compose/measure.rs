//! Driving one target: open loop at a rate, closed loop for throughput, and the figures.

use super::CHECKOUT_BODY;
use crate::{BenchError, Measured, Spread};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use manifold_load::LoadSpec;
use manifold_timer::Timer;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// One open-loop measurement of `url`.
pub(crate) async fn measure(
    url: &str,
    rate: f64,
    duration: Duration,
    timer: &Timer,
) -> Result<manifold_load::LoadReport, BenchError> {
    // `rid` numbers each request; the aggregators pass it on to every call as `X-Request-Id`,
    // so the simulator's call records can be joined per request (the floor and peers ignore it).
    let mut spec = LoadSpec::new(format!("{url}?rid={{seq}}"), rate);
    spec.timer = timer.clone();
    spec.method = http::Method::POST;
    spec.headers = vec![("content-type".into(), "application/json".into())];
    spec.body = Some(CHECKOUT_BODY.into());
    spec.duration = Some(duration);
    spec.timeout = Duration::from_secs(5);
    Ok(manifold_load::run(spec).await?)
}

/// The target could not keep up: more than 1% errors, or its backlog made the run last well
/// past its schedule (half the scheduled time again, and at least a second more).
pub(super) fn saturated(r: &manifold_load::LoadReport, scheduled: Duration) -> bool {
    let d = scheduled.as_secs_f64();
    r.errors * 100 > r.sent || r.duration_s > d + (d * 0.5).max(1.0)
}

/// `body`: `POST` it as JSON; `None`: `GET`. Returns (successful requests, elapsed seconds).
/// Closed loop: `clients` tasks each send the next request as soon as the last one answered.
/// `body`: `POST` it as JSON; `None`: `GET`. Returns (successful requests, elapsed seconds).
pub(crate) async fn closed_loop_count(
    url: &str,
    clients: usize,
    duration: Duration,
    body: Option<&'static str>,
) -> (u64, f64) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let until = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, done, url) = (client.clone(), Arc::clone(&done), url.to_owned());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let req = match body {
                    Some(b) => http::Request::post(url.as_str())
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from_static(b.as_bytes()))),
                    None => http::Request::get(url.as_str()).body(Full::new(Bytes::new())),
                };
                let Ok(req) = req else {
                    return;
                };
                let Ok(Ok(resp)) =
                    tokio::time::timeout(Duration::from_secs(5), client.request(req)).await
                else {
                    continue;
                };
                let ok = resp.status().is_success();
                if resp.into_body().collect().await.is_ok() && ok {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (done.load(Ordering::Relaxed), start.elapsed().as_secs_f64())
}

pub(crate) fn measured(target: &str, rate: f64, reports: &[manifold_load::LoadReport]) -> Measured {
    let pick = |f: fn(&manifold_load::LoadReport) -> f64| {
        Spread::of(&reports.iter().map(f).collect::<Vec<_>>())
    };
    Measured {
        target: target.to_owned(),
        rate,
        p50_ms: pick(|r| r.latency_ms.p50),
        p99_ms: pick(|r| r.latency_ms.p99),
        p999_ms: pick(|r| r.latency_ms.p999),
        max_ms: pick(|r| r.latency_ms.max),
        errors: reports.iter().map(|r| r.errors).sum(),
        sent: reports.iter().map(|r| r.sent).sum(),
        errors_by_kind: crate::stats::errors_by_kind(reports),
    }
}

/// `items` rotated left by `by`: round `r` starts with a different target each time, so none
/// always runs on a machine warmed (or loaded) by the same neighbour.
pub(crate) fn rotated<T: Clone>(items: &[T], by: usize) -> Vec<T> {
    if items.is_empty() {
        return Vec::new();
    }
    let by = by % items.len();
    items[by..].iter().chain(&items[..by]).cloned().collect()
}
