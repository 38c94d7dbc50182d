//! `manifold bench compose`: the checkout DAG (order → payment ∥ inventory ∥ shipping → confirm)
//! on simulated upstreams with small fixed delays, through Manifold and through the hand-written
//! `tokio::join!` aggregator, in one process and one run.
//!
//! Latency: open-loop at fixed rates (from `manifold-load`), the two targets interleaved round
//! by round (A B, then B A), medians and spread over rounds, beside the ideal (the critical path
//! of the configured service times). Throughput: closed loop, the same DAG with instant
//! upstreams, so the aggregators' own CPU is what limits it.

use crate::aggregator::{self, CheckoutUpstreams};
use crate::{BenchError, Measured, Spread};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use manifold_load::LoadSpec;
use manifold_sim::{RunningSim, Sim, SimConfig};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The request body every checkout sends.
pub const CHECKOUT_BODY: &str =
    r#"{"total": 42.5, "items": [{"sku": "a-1", "qty": 2}], "address": "1 Main St"}"#;

/// What to run.
#[derive(Debug, Clone)]
pub struct ComposeSpec {
    /// Service times in ms: order, payment, inventory, shipping, confirm.
    pub delays_ms: [u64; 5],
    /// Open-loop rates to measure, requests per second.
    pub rates: Vec<f64>,
    /// Length of one measurement.
    pub duration: Duration,
    /// Rounds per rate (each round measures every target once).
    pub rounds: usize,
    /// Closed-loop throughput: concurrent clients, and how long.
    pub throughput_clients: usize,
    /// Length of one closed-loop measurement (0 skips throughput).
    pub throughput_duration: Duration,
}

impl Default for ComposeSpec {
    fn default() -> Self {
        ComposeSpec {
            delays_ms: [2, 4, 3, 5, 1],
            rates: vec![500.0, 1000.0, 2000.0],
            duration: Duration::from_secs(5),
            rounds: 3,
            throughput_clients: 64,
            throughput_duration: Duration::from_secs(3),
        }
    }
}

impl ComposeSpec {
    /// A short run for smoke tests and `--quick`.
    pub fn quick() -> Self {
        ComposeSpec {
            rates: vec![500.0, 2000.0],
            duration: Duration::from_secs(2),
            rounds: 2,
            throughput_duration: Duration::from_secs(1),
            ..Default::default()
        }
    }

    /// The plan's critical path from the configured service times:
    /// order + max(payment, inventory, shipping) + confirm.
    pub fn ideal_ms(&self) -> f64 {
        let [o, p, i, s, c] = self.delays_ms;
        (o + p.max(i).max(s) + c) as f64
    }
}

/// One rate's figures.
#[derive(Debug, Clone, Serialize)]
pub struct RateResult {
    /// Scheduled requests per second.
    pub rate: f64,
    /// Manifold's latency.
    pub manifold: Measured,
    /// The hand-written aggregator's latency.
    pub hand_written: Measured,
    /// Manifold's median p50 minus the ideal, in ms.
    pub added_p50_over_ideal_ms: f64,
    /// Manifold's median p99 minus the ideal, in ms.
    pub added_p99_over_ideal_ms: f64,
    /// Manifold's median p50 minus the hand-written one's, in ms.
    pub added_p50_over_hand_written_ms: f64,
    /// Manifold's median p99 minus the hand-written one's, in ms.
    pub added_p99_over_hand_written_ms: f64,
}

/// Closed-loop throughput, requests per second, over rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Concurrent clients.
    pub clients: usize,
    /// Manifold.
    pub manifold_rps: Spread,
    /// The hand-written aggregator.
    pub hand_written_rps: Spread,
    /// Manifold's median over the hand-written median.
    pub ratio: f64,
}

/// The whole result.
#[derive(Debug, Clone, Serialize)]
pub struct ComposeReport {
    /// Always "compose".
    pub scenario: &'static str,
    /// Service times in ms: order, payment, inventory, shipping, confirm.
    pub delays_ms: [u64; 5],
    /// The critical path of the service times, ms.
    pub ideal_ms: f64,
    /// Seconds per measurement.
    pub duration_s: f64,
    /// Rounds per rate.
    pub rounds: usize,
    /// Per-rate latency.
    pub rates: Vec<RateResult>,
    /// Closed-loop throughput, when measured.
    pub throughput: Option<Throughput>,
}

fn sim_config(delays: [u64; 5]) -> Result<SimConfig, BenchError> {
    let [o, p, i, s, c] = delays;
    let toml = format!(
        r#"
seed = 7
host = "127.0.0.1"
[services.order]
  [[services.order.endpoints]]
  method = "POST"
  path = "/orders"
  latency = "{o}ms"
  response = {{ status = 201, body = {{ id = "{{uuid}}", status = "created" }} }}
  [[services.order.endpoints]]
  method = "POST"
  path = "/orders/{{id}}/confirm"
  latency = "{c}ms"
  response = {{ body = {{ id = "{{path.id}}", status = "confirmed" }} }}
[services.payment]
  [[services.payment.endpoints]]
  method = "POST"
  path = "/payments"
  latency = "{p}ms"
  response = {{ body = {{ status = "paid", order_id = "{{body.order_id}}" }} }}
[services.inventory]
  [[services.inventory.endpoints]]
  method = "POST"
  path = "/inventory/reserve"
  latency = "{i}ms"
  response = {{ body = {{ reserved = true }} }}
[services.shipping]
  [[services.shipping.endpoints]]
  method = "POST"
  path = "/shipping/labels"
  latency = "{s}ms"
  response = {{ body = {{ label = "L-{{seq}}" }} }}
"#
    );
    SimConfig::from_toml(&toml).map_err(|e| BenchError::Setup(format!("simulator config: {e}")))
}

/// The gateway config for the checkout route against `sim`.
pub fn gateway_config(sim: &RunningSim) -> Result<manifold_config::Config, BenchError> {
    let url = |s: &str| {
        sim.url(s)
            .ok_or_else(|| BenchError::Setup(format!("simulator has no service {s}")))
    };
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
[upstreams.order]
endpoints = ["{order}"]
[upstreams.payment]
endpoints = ["{payment}"]
[upstreams.inventory]
endpoints = ["{inventory}"]
[upstreams.shipping]
endpoints = ["{shipping}"]

[routes.checkout]
method = "POST"
path = "/checkout"
deadline = "5s"
  [[routes.checkout.calls]]
  name = "order"
  upstream = "order"
  method = "POST"
  path = "/orders"
  body = "{{request.body}}"
  [[routes.checkout.calls]]
  name = "payment"
  upstream = "payment"
  method = "POST"
  path = "/payments"
  body = {{ order_id = "{{order.id}}", amount = "{{request.body.total}}" }}
  [[routes.checkout.calls]]
  name = "inventory"
  upstream = "inventory"
  method = "POST"
  path = "/inventory/reserve"
  body = {{ order_id = "{{order.id}}", items = "{{request.body.items}}" }}
  [[routes.checkout.calls]]
  name = "shipping"
  upstream = "shipping"
  method = "POST"
  path = "/shipping/labels"
  body = {{ order_id = "{{order.id}}", address = "{{request.body.address}}" }}
  [[routes.checkout.calls]]
  name = "confirm"
  upstream = "order"
  method = "POST"
  path = "/orders/{{order.id}}/confirm"
  after = ["payment", "inventory", "shipping"]
  [routes.checkout.response]
  status = 201
  body = {{ order = "{{confirm}}", payment = "{{payment.status}}", shipping = "{{shipping}}" }}
"#,
        order = url("order")?,
        payment = url("payment")?,
        inventory = url("inventory")?,
        shipping = url("shipping")?,
    );
    manifold_config::compile("bench-compose.toml".as_ref(), &toml)
        .map_err(|e| BenchError::Setup(format!("gateway config: {e}")))
}

/// Both targets running against one simulator.
struct Targets {
    sim: RunningSim,
    manifold: String,
    hand_written: String,
    stop: CancellationToken,
}

async fn start_targets(delays: [u64; 5]) -> Result<Targets, BenchError> {
    let sim = Sim::start(sim_config(delays)?)
        .await
        .map_err(|e| BenchError::Setup(format!("simulator: {e}")))?;
    let stop = CancellationToken::new();
    let gw = manifold_gateway::Gateway::bind(gateway_config(&sim)?)
        .await
        .map_err(|e| BenchError::Setup(format!("gateway: {e}")))?;
    let manifold = format!("http://{}/checkout", gw.local_addr());
    tokio::spawn(gw.run(stop.clone()));
    let up = |s: &str| sim.url(s).unwrap_or_default();
    let agg = aggregator::start(
        CheckoutUpstreams {
            order: up("order"),
            payment: up("payment"),
            inventory: up("inventory"),
            shipping: up("shipping"),
        },
        stop.clone(),
    )
    .await
    .map_err(|e| BenchError::Setup(format!("hand-written aggregator: {e}")))?;
    Ok(Targets {
        sim,
        manifold,
        hand_written: format!("http://{agg}/checkout"),
        stop,
    })
}

impl Targets {
    async fn shutdown(self) {
        self.stop.cancel();
        self.sim.shutdown().await;
    }
}

/// One open-loop measurement of `url`.
async fn measure(
    url: &str,
    rate: f64,
    duration: Duration,
) -> Result<manifold_load::LoadReport, BenchError> {
    let mut spec = LoadSpec::new(url, rate);
    spec.method = http::Method::POST;
    spec.headers = vec![("content-type".into(), "application/json".into())];
    spec.body = Some(CHECKOUT_BODY.into());
    spec.duration = Some(duration);
    spec.timeout = Duration::from_secs(5);
    Ok(manifold_load::run(spec).await?)
}

/// Closed loop: `clients` tasks each send the next request as soon as the last one answered.
async fn closed_loop(url: &str, clients: usize, duration: Duration) -> f64 {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let until = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, done, url) = (client.clone(), Arc::clone(&done), url.to_owned());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let Ok(req) = http::Request::post(url.as_str())
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(CHECKOUT_BODY.as_bytes())))
                else {
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
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn measured(target: &str, rate: f64, reports: &[manifold_load::LoadReport]) -> Measured {
    let pick = |f: fn(&manifold_load::LoadReport) -> f64| {
        Spread::of(&reports.iter().map(f).collect::<Vec<_>>())
    };
    Measured {
        target: target.to_owned(),
        rate,
        p50_ms: pick(|r| r.latency_ms.p50),
        p99_ms: pick(|r| r.latency_ms.p99),
        p999_ms: pick(|r| r.latency_ms.p999),
        errors: reports.iter().map(|r| r.errors).sum(),
        sent: reports.iter().map(|r| r.sent).sum(),
    }
}

/// Run the compose benchmark. `progress` is told what is being measured.
pub async fn run(
    spec: &ComposeSpec,
    mut progress: impl FnMut(&str),
) -> Result<ComposeReport, BenchError> {
    let targets = start_targets(spec.delays_ms).await?;
    // Warm both: connection pools, allocator, caches.
    let _ = measure(&targets.manifold, 200.0, Duration::from_millis(500)).await?;
    let _ = measure(&targets.hand_written, 200.0, Duration::from_millis(500)).await?;

    let mut rates = Vec::new();
    for &rate in &spec.rates {
        let (mut m, mut h) = (Vec::new(), Vec::new());
        for round in 0..spec.rounds {
            // A B, then B A: neither target always runs on a machine warmed by the other.
            let order: [bool; 2] = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for is_manifold in order {
                let (name, url) = if is_manifold {
                    ("manifold", &targets.manifold)
                } else {
                    ("hand-written", &targets.hand_written)
                };
                progress(&format!(
                    "{rate} req/s, round {}/{}: {name}",
                    round + 1,
                    spec.rounds
                ));
                let r = measure(url, rate, spec.duration).await?;
                if is_manifold {
                    m.push(r)
                } else {
                    h.push(r)
                }
            }
        }
        let manifold = measured("manifold", rate, &m);
        let hand_written = measured("hand-written", rate, &h);
        rates.push(RateResult {
            rate,
            added_p50_over_ideal_ms: manifold.p50_ms.median - spec.ideal_ms(),
            added_p99_over_ideal_ms: manifold.p99_ms.median - spec.ideal_ms(),
            added_p50_over_hand_written_ms: manifold.p50_ms.median - hand_written.p50_ms.median,
            added_p99_over_hand_written_ms: manifold.p99_ms.median - hand_written.p99_ms.median,
            manifold,
            hand_written,
        });
    }
    targets.shutdown().await;

    let throughput = if spec.throughput_duration.is_zero() {
        None
    } else {
        let targets = start_targets([0; 5]).await?;
        let (mut m, mut h) = (Vec::new(), Vec::new());
        for round in 0..spec.rounds {
            progress(&format!(
                "closed-loop throughput, round {}/{}",
                round + 1,
                spec.rounds
            ));
            let order: [bool; 2] = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for is_manifold in order {
                let url = if is_manifold {
                    &targets.manifold
                } else {
                    &targets.hand_written
                };
                let rps = closed_loop(url, spec.throughput_clients, spec.throughput_duration).await;
                if is_manifold {
                    m.push(rps)
                } else {
                    h.push(rps)
                }
            }
        }
        targets.shutdown().await;
        let (manifold_rps, hand_written_rps) = (Spread::of(&m), Spread::of(&h));
        Some(Throughput {
            clients: spec.throughput_clients,
            ratio: if hand_written_rps.median > 0.0 {
                manifold_rps.median / hand_written_rps.median
            } else {
                0.0
            },
            manifold_rps,
            hand_written_rps,
        })
    };

    Ok(ComposeReport {
        scenario: "compose",
        delays_ms: spec.delays_ms,
        ideal_ms: spec.ideal_ms(),
        duration_s: spec.duration.as_secs_f64(),
        rounds: spec.rounds,
        rates,
        throughput,
    })
}

impl ComposeReport {
    /// A markdown table, as `docs/benchmarks.md` quotes it.
    pub fn to_markdown(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "checkout DAG, service times {:?} ms (order, payment, inventory, shipping, confirm); ideal (critical path) {:.1} ms; {} rounds of {:.0} s per rate, medians [min–max]\n",
            self.delays_ms, self.ideal_ms, self.rounds, self.duration_s
        );
        let _ = writeln!(s, "| rate | target | p50 ms | p99 ms | p99.9 ms | errors |");
        let _ = writeln!(s, "|---:|---|---:|---:|---:|---:|");
        let cell = |x: &Spread| format!("{:.2} [{:.2}–{:.2}]", x.median, x.min, x.max);
        for r in &self.rates {
            for m in [&r.manifold, &r.hand_written] {
                let _ = writeln!(
                    s,
                    "| {:.0}/s | {} | {} | {} | {} | {}/{} |",
                    r.rate,
                    m.target,
                    cell(&m.p50_ms),
                    cell(&m.p99_ms),
                    cell(&m.p999_ms),
                    m.errors,
                    m.sent
                );
            }
        }
        let _ = writeln!(
            s,
            "\n| rate | Manifold added over ideal, p50 / p99 ms | over hand-written, p50 / p99 ms |"
        );
        let _ = writeln!(s, "|---:|---:|---:|");
        for r in &self.rates {
            let _ = writeln!(
                s,
                "| {:.0}/s | {:+.2} / {:+.2} | {:+.2} / {:+.2} |",
                r.rate,
                r.added_p50_over_ideal_ms,
                r.added_p99_over_ideal_ms,
                r.added_p50_over_hand_written_ms,
                r.added_p99_over_hand_written_ms
            );
        }
        if let Some(t) = &self.throughput {
            let _ = writeln!(
                s,
                "\nclosed-loop throughput, instant upstreams, {} clients: Manifold {:.0} req/s [{:.0}–{:.0}], hand-written {:.0} req/s [{:.0}–{:.0}]: ratio {:.2}",
                t.clients,
                t.manifold_rps.median,
                t.manifold_rps.min,
                t.manifold_rps.max,
                t.hand_written_rps.median,
                t.hand_written_rps.min,
                t.hand_written_rps.max,
                t.ratio
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn both_targets_answer_every_request_and_the_report_is_complete() {
        let spec = ComposeSpec {
            rates: vec![100.0],
            duration: Duration::from_millis(400),
            rounds: 2,
            throughput_clients: 4,
            throughput_duration: Duration::from_millis(300),
            ..Default::default()
        };
        let mut steps = Vec::new();
        let report = run(&spec, |s| steps.push(s.to_owned())).await.unwrap();
        assert_eq!(report.ideal_ms, 8.0);
        let r = &report.rates[0];
        for m in [&r.manifold, &r.hand_written] {
            assert_eq!(m.errors, 0, "{m:?}");
            assert_eq!(m.sent, 80, "{m:?}");
            // Nothing can beat the critical path of the service times.
            assert!(m.p50_ms.median >= report.ideal_ms, "{m:?}");
        }
        let t = report.throughput.as_ref().unwrap();
        assert!(t.manifold_rps.median > 0.0 && t.hand_written_rps.median > 0.0);
        assert_eq!(steps.len(), 2 * 2 + 2);
        let md = report.to_markdown();
        assert!(
            md.contains("| 100/s | manifold |") && md.contains("| 100/s | hand-written |"),
            "{md}"
        );
    }
}
