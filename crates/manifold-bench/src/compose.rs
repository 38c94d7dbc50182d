//! `manifold bench compose`: the checkout DAG (order → payment ∥ inventory ∥ shipping → confirm)
//! on simulated upstreams with small fixed delays, through Manifold, through the hand-written
//! `tokio::join!` aggregator, and through the peers a user would otherwise write (the seed
//! document's Flask aggregators under gunicorn, sequential and `ThreadPoolExecutor`; a Node
//! `Promise.all` aggregator on express), all against the same simulator in one run.
//!
//! Latency: open-loop at fixed rates (from `manifold-load`), the targets interleaved round by
//! round (the order rotates each round), medians and spread over rounds, beside the ideal (the
//! critical path of the configured service times) and the measured floor: a server that makes no
//! upstream call but waits the critical path exactly as the simulator waits (tokio sleeps on the
//! same runtime: order, then the longest of payment, inventory and shipping, then confirm),
//! driven by the same load in the same rounds. The ideal cannot be reached on a machine whose
//! timer rounds every sleep up to the next millisecond and whose load generator shares the
//! cores; the floor is what the same waits cost here, so "over the floor" is the aggregator's
//! own cost plus its three sequential upstream hops. A peer that cannot keep up with a rate
//! (more than 1% errors, or a backlog that makes the run overrun its schedule by half, at least
//! a second) is marked saturated there and not
//! driven at higher rates; after each peer run the benchmark waits until the peer has drained
//! its backlog, so it cannot steal CPU from the next target. Throughput: closed loop, the same
//! DAG with instant upstreams, so the aggregators' own CPU is what limits it. Peers that are not
//! installed are reported as skipped.
//!
//! Manifold and the hand-written aggregator each run on a tokio runtime of their own (two worker
//! threads, as each would have in its own process on this 2-core machine); the load generator,
//! the simulator and the floor share the caller's. With everything on one runtime a backlog in
//! one component queued the others' tasks behind its own, which made the tail a property of the
//! harness more than of the aggregator measured.

use crate::aggregator::{self, CheckoutUpstreams};
use crate::peers::{self, RunningPeer, Skipped, ThreadsCpu};
use crate::stats::spread_if_any;
use crate::{BenchError, Measured, Spread};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use manifold_load::LoadSpec;
use manifold_sim::{RunningSim, Sim, SimConfig};
use manifold_timer::Timer;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The issue's goal at 2,000 req/s: at most this much added at p50, ms.
pub const GOAL_P50_MS: f64 = 0.2;
/// The issue's goal at 2,000 req/s: at most this much added at p99, ms.
pub const GOAL_P99_MS: f64 = 1.0;
/// The issue's goal: closed-loop throughput at least this fraction of the hand-written one's.
pub const GOAL_THROUGHPUT_RATIO: f64 = 0.9;
/// The rate the goal is stated at, requests per second.
pub const GOAL_RATE: f64 = 2000.0;

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
    /// Where the peers live (`bench/peers`: their code and installs). `None`: Manifold and the
    /// hand-written aggregator only.
    pub peers_dir: Option<PathBuf>,
    /// How the simulated upstreams wait out their service times, the floor its waits, and the
    /// load generator its send times. [`Timer::precise`] (the default) ends each wait within
    /// tens of microseconds; with tokio's timer each is rounded up to the next 1 ms tick and
    /// every wait due in the same tick ends in one burst, which puts the floor itself ~4 ms over
    /// the ideal (docs/benchmarks.md).
    pub timer: Timer,
    /// The p99 service-level objective the report finds each target's highest rate within
    /// (BENCHMARKS.md); `None`: twice the configured ideal.
    pub slo_p99: Option<Duration>,
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
            peers_dir: Some(peers::default_dir()),
            timer: Timer::precise(),
            slo_p99: None,
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

    /// The p99 SLO in ms: `slo_p99`, else twice the configured ideal.
    pub fn slo_p99_ms(&self) -> f64 {
        self.slo_p99
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(2.0 * self.ideal_ms())
    }
}

/// One rate's figures.
#[derive(Debug, Clone, Serialize)]
pub struct RateResult {
    /// Scheduled requests per second.
    pub rate: f64,
    /// The measured floor: a server that only waits the critical path as the simulator does.
    pub floor: Measured,
    /// One loopback HTTP round trip: the load generator to a simulated endpoint with no service
    /// time, at the same rate. Each aggregator makes four of these in sequence (the client's,
    /// then order, the fan-out, confirm), so they bound from below what any aggregator adds.
    pub hop: Measured,
    /// Manifold's latency.
    pub manifold: Measured,
    /// The hand-written aggregator's latency.
    pub hand_written: Measured,
    /// Manifold's median p50 minus the ideal, in ms.
    pub added_p50_over_ideal_ms: f64,
    /// Manifold's median p99 minus the ideal, in ms.
    pub added_p99_over_ideal_ms: f64,
    /// Manifold's median p50 minus the floor's, in ms.
    pub added_p50_over_floor_ms: f64,
    /// Manifold's median p99 minus the floor's, in ms.
    pub added_p99_over_floor_ms: f64,
    /// The hand-written aggregator's median p50 minus the floor's, in ms.
    pub hand_written_p50_over_floor_ms: f64,
    /// The hand-written aggregator's median p99 minus the floor's, in ms.
    pub hand_written_p99_over_floor_ms: f64,
    /// The floor's median p50 minus the ideal, in ms: what this machine adds to the same waits
    /// with no aggregator at all (timer rounding, the load generator's lag, one HTTP hop).
    pub floor_p50_over_ideal_ms: f64,
    /// The floor's median p99 minus the ideal, in ms.
    pub floor_p99_over_ideal_ms: f64,
    /// Manifold's median p50 minus the hand-written one's, in ms.
    pub added_p50_over_hand_written_ms: f64,
    /// Manifold's median p99 minus the hand-written one's, in ms.
    pub added_p99_over_hand_written_ms: f64,
    /// Manifold over the ideal recorded in its own runs.
    pub manifold_over_recorded: Option<OverRecorded>,
    /// The hand-written aggregator over the ideal recorded in its own runs.
    pub hand_written_over_recorded: Option<OverRecorded>,
    /// CPU of Manifold's runtime threads per answered request, µs, over rounds (`None` where
    /// `/proc` could not be read).
    pub manifold_cpu_us_per_request: Option<Spread>,
    /// The same for the hand-written aggregator's runtime.
    pub hand_written_cpu_us_per_request: Option<Spread>,
    /// The peers that ran (Flask, Node), in the same rounds.
    pub peers: Vec<PeerLatency>,
}

/// A target's latency beside the ideal of the same run computed from what the upstreams
/// recorded: each request's critical path of its calls' own service times (order + the longest
/// of payment, inventory and shipping + confirm, joined by `X-Request-Id`), so timer lateness
/// and scheduling inside the upstreams count as upstream time, as BENCHMARKS.md defines the
/// limit. Medians over rounds [min–max].
#[derive(Debug, Clone, Serialize)]
pub struct OverRecorded {
    /// The recorded ideal's p50, ms.
    pub ideal_p50_ms: Spread,
    /// The recorded ideal's p99, ms.
    pub ideal_p99_ms: Spread,
    /// The target's p50 minus the recorded ideal's p50 of the same run, ms.
    pub added_p50_ms: Spread,
    /// The target's p99 minus the recorded ideal's p99 of the same run, ms.
    pub added_p99_ms: Spread,
    /// Requests whose five calls were all recorded, fewest in any round (the simulator keeps
    /// the last 10,000 calls per endpoint).
    pub requests: usize,
}

/// One peer's latency at one rate.
#[derive(Debug, Clone, Serialize)]
pub struct PeerLatency {
    /// "flask-sequential", "flask-threadpool", "node".
    pub target: String,
    /// The figures, when it was driven at this rate.
    pub latency: Option<Measured>,
    /// It could not keep up with this rate (over 1% errors, or its backlog made the run last
    /// 50% and at least 1 s past its schedule), or with a lower one.
    pub saturated: bool,
    /// Why there is no figure, when there is none.
    pub note: Option<String>,
    /// Its median p50 over Manifold's.
    pub p50_over_manifold: Option<f64>,
    /// Its median p99 over Manifold's.
    pub p99_over_manifold: Option<f64>,
}

/// One peer's closed-loop throughput.
#[derive(Debug, Clone, Serialize)]
pub struct PeerThroughput {
    /// "flask-sequential", "flask-threadpool", "node".
    pub target: String,
    /// Requests per second over rounds.
    pub rps: Spread,
    /// Manifold's median over this peer's.
    pub manifold_over_peer: f64,
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
    /// CPU of Manifold's runtime threads per answered request, µs, over rounds.
    pub manifold_cpu_us_per_request: Option<Spread>,
    /// The same for the hand-written aggregator's runtime.
    pub hand_written_cpu_us_per_request: Option<Spread>,
    /// The peers that ran.
    pub peers: Vec<PeerThroughput>,
}

/// The issue's goal, checked against both references at one rate.
#[derive(Debug, Clone, Serialize)]
pub struct GoalCheck {
    /// The rate checked: 2,000 req/s when measured, else the highest rate measured.
    pub rate: f64,
    /// Manifold's median p50 minus the ideal, ms (goal ≤ [`GOAL_P50_MS`]).
    pub p50_over_ideal_ms: f64,
    /// Manifold's median p99 minus the ideal, ms (goal ≤ [`GOAL_P99_MS`]).
    pub p99_over_ideal_ms: f64,
    /// Manifold's median p50 minus the measured floor's, ms.
    pub p50_over_floor_ms: f64,
    /// Manifold's median p99 minus the measured floor's, ms.
    pub p99_over_floor_ms: f64,
    /// Both latency goals hold over the ideal.
    pub met_over_ideal: bool,
    /// Manifold's p50 minus the recorded ideal's p50 of the same run (median over rounds), ms:
    /// the ideal as BENCHMARKS.md defines it, from the upstreams' own recorded service times.
    pub p50_over_recorded_ideal_ms: Option<f64>,
    /// The same at p99, ms.
    pub p99_over_recorded_ideal_ms: Option<f64>,
    /// Both latency goals hold over the recorded ideal.
    pub met_over_recorded_ideal: Option<bool>,
    /// Both latency goals hold over the measured floor.
    pub met_over_floor: bool,
    /// Closed-loop throughput, Manifold over the hand-written aggregator, when measured.
    pub throughput_ratio: Option<f64>,
    /// The throughput goal holds, when measured.
    pub throughput_met: Option<bool>,
    /// One loopback round trip at this rate (the load generator to a simulated endpoint with
    /// no service time), median p50 in ms: an aggregator makes four in sequence.
    pub one_hop_p50_ms: f64,
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
    /// How the upstreams, the floor and the load generator waited: `precise` or `tokio`.
    pub timer: &'static str,
    /// Seconds per measurement.
    pub duration_s: f64,
    /// Rounds per rate.
    pub rounds: usize,
    /// Per-rate latency.
    pub rates: Vec<RateResult>,
    /// Closed-loop throughput, when measured.
    pub throughput: Option<Throughput>,
    /// The p99 SLO each target's highest rate within is found for, ms.
    pub slo_p99_ms: f64,
    /// Each target's highest rate within the SLO.
    pub within_slo: Vec<WithinSlo>,
    /// The issue's goal against the ideal and against the measured floor (`None`: no rate).
    pub goal: Option<GoalCheck>,
    /// Peers that could not run, and why (not installed, failed to start).
    pub skipped: Vec<Skipped>,
}

/// How far one target's rate can go with its p99 inside the SLO (BENCHMARKS.md: "the highest
/// rate whose p99 stays within the SLO").
#[derive(Debug, Clone, Serialize)]
pub struct WithinSlo {
    /// "floor", "manifold", "hand-written", or a peer.
    pub target: String,
    /// The highest rate measured at which the target's median p99 was within the SLO, as it
    /// was at every lower rate measured; `None`: not even at the lowest.
    pub highest_rate: Option<f64>,
    /// The lowest rate measured at which it was not (or the target was not driven, saturated
    /// at a lower rate); `None`: within at every rate measured, so the limit is higher.
    pub first_over: Option<f64>,
}

/// Each target's [`WithinSlo`], from the rates in ascending order.
fn within_slo(rates: &[RateResult], slo_ms: f64) -> Vec<WithinSlo> {
    let mut sorted: Vec<&RateResult> = rates.iter().collect();
    sorted.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    let mut names: Vec<String> = vec!["floor".into(), "manifold".into(), "hand-written".into()];
    for r in &sorted {
        for p in &r.peers {
            if !names.contains(&p.target) {
                names.push(p.target.clone());
            }
        }
    }
    names
        .into_iter()
        .map(|target| {
            let mut out = WithinSlo {
                target: target.clone(),
                highest_rate: None,
                first_over: None,
            };
            for r in &sorted {
                let p99 = match target.as_str() {
                    "floor" => Some(r.floor.p99_ms.median),
                    "manifold" => Some(r.manifold.p99_ms.median),
                    "hand-written" => Some(r.hand_written.p99_ms.median),
                    peer => r
                        .peers
                        .iter()
                        .find(|p| p.target == peer && !p.saturated)
                        .and_then(|p| p.latency.as_ref())
                        .map(|l| l.p99_ms.median),
                };
                match p99 {
                    Some(p99) if p99 <= slo_ms => out.highest_rate = Some(r.rate),
                    _ => {
                        out.first_over = Some(r.rate);
                        break;
                    }
                }
            }
            out
        })
        .collect()
}

pub(crate) fn sim_config(delays: [u64; 5]) -> Result<SimConfig, BenchError> {
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
[services.hop]
  [[services.hop.endpoints]]
  method = "POST"
  path = "/hop"
  latency = "0ms"
  response = {{ body = {{ ok = true }} }}
"#
    );
    SimConfig::from_toml(&toml).map_err(|e| BenchError::Setup(format!("simulator config: {e}")))
}

/// The gateway config for the checkout route against `sim`.
pub fn gateway_config(sim: &RunningSim) -> Result<manifold_config::Config, BenchError> {
    manifold_config::compile("bench-compose.toml".as_ref(), &gateway_toml(sim)?)
        .map_err(|e| BenchError::Setup(format!("gateway config: {e}")))
}

/// The checkout gateway's config as TOML (what [`gateway_config`] compiles, and what a
/// `manifold serve` child is given).
pub fn gateway_toml(sim: &RunningSim) -> Result<String, BenchError> {
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
  headers = {{ "x-request-id" = "{{query.rid}}" }}
  path = "/orders"
  body = "{{request.body}}"
  [[routes.checkout.calls]]
  name = "payment"
  upstream = "payment"
  method = "POST"
  headers = {{ "x-request-id" = "{{query.rid}}" }}
  path = "/payments"
  body = {{ order_id = "{{order.id}}", amount = "{{request.body.total}}" }}
  [[routes.checkout.calls]]
  name = "inventory"
  upstream = "inventory"
  method = "POST"
  headers = {{ "x-request-id" = "{{query.rid}}" }}
  path = "/inventory/reserve"
  body = {{ order_id = "{{order.id}}", items = "{{request.body.items}}" }}
  [[routes.checkout.calls]]
  name = "shipping"
  upstream = "shipping"
  method = "POST"
  headers = {{ "x-request-id" = "{{query.rid}}" }}
  path = "/shipping/labels"
  body = {{ order_id = "{{order.id}}", address = "{{request.body.address}}" }}
  [[routes.checkout.calls]]
  name = "confirm"
  upstream = "order"
  method = "POST"
  headers = {{ "x-request-id" = "{{query.rid}}" }}
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
    Ok(toml)
}

/// The checkout's five calls as the simulator keys them (service, endpoint), in the order
/// order, payment, inventory, shipping, confirm.
const CHECKOUT_CALLS: [(&str, &str); 5] = [
    ("order", "POST /orders"),
    ("payment", "POST /payments"),
    ("inventory", "POST /inventory/reserve"),
    ("shipping", "POST /shipping/labels"),
    ("order", "POST /orders/{id}/confirm"),
];

/// Each request's critical path, ms, of the service times the simulator recorded for its calls:
/// order + the longest of payment, inventory and shipping + confirm, for every request whose
/// five calls all answered `ok` and are all still in the call log (joined by `X-Request-Id`).
pub fn recorded_critical_paths(stats: &manifold_sim::SimStats) -> Vec<f64> {
    let mut by_id: HashMap<&str, [Option<f64>; 5]> = HashMap::new();
    for (i, (service, endpoint)) in CHECKOUT_CALLS.iter().enumerate() {
        let Some(s) = stats.services.get(*service) else {
            continue;
        };
        for r in &s.replicas {
            let calls = r.endpoints.get(*endpoint).and_then(|e| e.recent.as_ref());
            for c in calls.into_iter().flatten() {
                if let (Some(id), "ok") = (c.request_id.as_deref(), c.outcome.as_str()) {
                    by_id.entry(id).or_default()[i] = Some(c.end_ms - c.start_ms);
                }
            }
        }
    }
    by_id
        .values()
        .filter_map(|&[o, p, i, s, c]| Some(o? + p?.max(i?).max(s?) + c?))
        .collect()
}

/// The `q`-quantile (0..=1) of `v` by nearest rank; `None` when empty.
fn quantile(v: &mut [f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// One run's recorded ideal beside the target's latency: (ideal p50, ideal p99, added p50,
/// added p99, requests joined).
type RecordedRun = (f64, f64, f64, f64, usize);

fn recorded_run(sim: &RunningSim, r: &manifold_load::LoadReport) -> Option<RecordedRun> {
    let mut paths = recorded_critical_paths(&sim.stats_with_calls());
    let n = paths.len();
    let p50 = quantile(&mut paths, 0.50)?;
    let p99 = quantile(&mut paths, 0.99)?;
    Some((p50, p99, r.latency_ms.p50 - p50, r.latency_ms.p99 - p99, n))
}

fn over_recorded(runs: &[RecordedRun]) -> Option<OverRecorded> {
    if runs.is_empty() {
        return None;
    }
    let col = |f: fn(&RecordedRun) -> f64| Spread::of(&runs.iter().map(f).collect::<Vec<_>>());
    Some(OverRecorded {
        ideal_p50_ms: col(|r| r.0),
        ideal_p99_ms: col(|r| r.1),
        added_p50_ms: col(|r| r.2),
        added_p99_ms: col(|r| r.3),
        requests: runs.iter().map(|r| r.4).min().unwrap_or(0),
    })
}

/// The floor's answer to one checkout: the shape and about the size of the aggregators' answer
/// (`{order: {id, status}, payment, shipping: {label}}`), so writing it costs what theirs does.
fn floor_answer(seq: u64) -> Value {
    json!({
        "order": {"id": format!("00000000-0000-4000-8000-{seq:012x}"), "status": "confirmed"},
        "payment": "paid",
        "shipping": {"label": format!("L-{seq}")},
    })
}

/// One checkout on the floor: read and parse the body as the simulator does, then wait the
/// critical path the way the simulator's services wait, with no HTTP in between: three
/// sequential waits (order; payment ∥ inventory ∥ shipping, joined, so the longest decides;
/// confirm). Each wait is a `tokio::time::sleep` on this process's runtime, as in
/// `manifold-sim`'s handler, so the timer's rounding up to the next millisecond tick is paid
/// once per wait, as the aggregators pay it once per upstream call.
async fn floor_checkout(
    delays: [Duration; 5],
    timer: Timer,
    seq: Arc<AtomicU64>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let bytes = req.into_body().collect().await?.to_bytes();
    let _parsed: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let [order, payment, inventory, shipping, confirm] = delays;
    timer.sleep(order).await;
    tokio::join!(
        timer.sleep(payment),
        timer.sleep(inventory),
        timer.sleep(shipping),
    );
    timer.sleep(confirm).await;
    let n = seq.fetch_add(1, Ordering::Relaxed) + 1;
    let mut resp = Response::new(Full::new(Bytes::from(floor_answer(n).to_string())));
    *resp.status_mut() = StatusCode::CREATED;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// Serve the measured floor for service times `delays_ms` (order, payment, inventory, shipping,
/// confirm) on `127.0.0.1:0` until `stop`, on the caller's runtime (the simulator's); returns the
/// bound address. Connections are served as the simulator serves them (hyper's auto builder,
/// `TCP_NODELAY`).
pub async fn start_floor(
    delays_ms: [u64; 5],
    timer: Timer,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let delays = delays_ms.map(Duration::from_millis);
    let seq = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        let builder = auto::Builder::new(TokioExecutor::new());
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let seq = Arc::clone(&seq);
                    let timer = timer.clone();
                    let conn = builder
                        .serve_connection(
                            TokioIo::new(stream),
                            service_fn(move |req| {
                                floor_checkout(delays, timer.clone(), Arc::clone(&seq), req)
                            }),
                        )
                        .into_owned();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = conn => {}
                            _ = stop.cancelled() => {}
                        }
                    });
                }
                _ = stop.cancelled() => break,
            }
        }
    });
    Ok(addr)
}

/// A peer's URL, where to ask whether it has drained its backlog, and its process.
struct PeerTarget {
    name: String,
    url: String,
    drain: String,
    /// Index of its process in [`Targets::running`] (Flask's two aggregators share one).
    process: usize,
}

/// Every target running against one simulator.
/// A tokio runtime of one aggregator's own, as it would have in its own process: its worker
/// threads are not the ones the load generator, the simulator and the other aggregator run on,
/// so a burst in one component cannot queue another's tasks behind its own. Shut down without
/// waiting when dropped (a runtime must not be dropped the blocking way inside another).
pub(crate) struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl OwnRuntime {
    pub(crate) fn new(name: &str) -> Result<Self, BenchError> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name)
            .enable_all()
            .build()
            .map(|rt| OwnRuntime(Some(rt)))
            .map_err(|e| BenchError::Setup(format!("{name} runtime: {e}")))
    }

    /// Run `start` on this runtime (it binds and spawns there) and hand back its result.
    pub(crate) async fn start<T: Send + 'static>(
        &self,
        start: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, BenchError> {
        let rt = self
            .0
            .as_ref()
            .ok_or_else(|| BenchError::Setup("runtime already shut down".into()))?;
        rt.spawn(start)
            .await
            .map_err(|e| BenchError::Setup(format!("starting a target: {e}")))
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

struct Targets {
    sim: RunningSim,
    floor: String,
    /// The simulator's no-service-time endpoint: one loopback round trip.
    hop: String,
    manifold: String,
    hand_written: String,
    peers: Vec<PeerTarget>,
    /// Kept alive for the run; dropping them stops the processes.
    running: Vec<RunningPeer>,
    skipped: Vec<Skipped>,
    stop: CancellationToken,
    /// Manifold's and the hand-written aggregator's runtimes.
    runtimes: Vec<OwnRuntime>,
    /// Their thread names, in that order.
    threads: [String; 2],
}

impl Targets {
    /// Let peer `i` finish what it has taken on before the next target is measured: its accept
    /// queue drained (a probe answers), then its processes idle. A saturated peer keeps working
    /// through requests it had already accepted, on connections the probe does not share, and
    /// that work would load whatever is measured next.
    async fn drain_peer(&self, i: usize) {
        let Some(peer) = self.peers.get(i) else {
            return;
        };
        drain(&peer.drain).await;
        if let Some(process) = self.running.get(peer.process) {
            settle(process).await;
        }
    }

    /// The CPU so far of a slot's own runtime threads: Manifold's and the hand-written
    /// aggregator's (the floor shares the simulator's runtime and the peers are processes of
    /// their own: not measured here).
    fn cpu(&self, slot: Slot) -> Option<ThreadsCpu> {
        match slot {
            Slot::Manifold => ThreadsCpu::read(&self.threads[0]),
            Slot::HandWritten => ThreadsCpu::read(&self.threads[1]),
            Slot::Floor | Slot::Hop | Slot::Peer(_) => None,
        }
    }
}

/// CPU per request, µs, between two readings of the same threads.
pub(crate) fn cpu_us(
    before: Option<ThreadsCpu>,
    after: Option<ThreadsCpu>,
    requests: u64,
) -> Option<f64> {
    let (before, after) = (before?, after?);
    (requests > 0).then(|| after.seconds_since(&before) / requests as f64 * 1e6)
}

async fn start_targets(
    delays: [u64; 5],
    timer: &Timer,
    peers_dir: Option<&Path>,
) -> Result<Targets, BenchError> {
    let mut config = sim_config(delays)?;
    config.timer = timer.clone();
    let sim = Sim::start(config)
        .await
        .map_err(|e| BenchError::Setup(format!("simulator: {e}")))?;
    let stop = CancellationToken::new();
    // Thread names unique in this process (each within the kernel's 15 bytes), so each
    // runtime's CPU is read from its own threads even when several runs share the process.
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let threads = [format!("bench-mf-{run}"), format!("bench-hw-{run}")];
    let gateway_rt = OwnRuntime::new(&threads[0])?;
    let config = gateway_config(&sim)?;
    let gw_stop = stop.clone();
    let gw_addr = gateway_rt
        .start(async move {
            let gw = manifold_gateway::Gateway::bind(config).await?;
            let addr = gw.local_addr();
            tokio::spawn(gw.run(gw_stop));
            Ok::<_, manifold_gateway::GatewayError>(addr)
        })
        .await?
        .map_err(|e| BenchError::Setup(format!("gateway: {e}")))?;
    let manifold = format!("http://{gw_addr}/checkout");
    let up = |s: &str| sim.url(s).unwrap_or_default();
    let upstreams = CheckoutUpstreams {
        order: up("order"),
        payment: up("payment"),
        inventory: up("inventory"),
        shipping: up("shipping"),
    };
    let aggregator_rt = OwnRuntime::new(&threads[1])?;
    let agg = aggregator_rt
        .start(aggregator::start(upstreams.clone(), stop.clone()))
        .await?
        .map_err(|e| BenchError::Setup(format!("hand-written aggregator: {e}")))?;
    let floor = start_floor(delays, timer.clone(), stop.clone())
        .await
        .map_err(|e| BenchError::Setup(format!("floor: {e}")))?;
    let hop = format!("{}/hop", up("hop"));
    let mut targets = Targets {
        sim,
        floor: format!("http://{floor}/checkout"),
        hop,
        manifold,
        hand_written: format!("http://{agg}/checkout"),
        peers: Vec::new(),
        running: Vec::new(),
        skipped: Vec::new(),
        stop,
        runtimes: vec![gateway_rt, aggregator_rt],
        threads,
    };
    if let Some(dir) = peers_dir {
        let flask = match peers::flask(dir, &upstreams) {
            Ok(cmd) => peers::start(cmd).await,
            Err(s) => Err(s),
        };
        match flask {
            Ok(p) => {
                for (name, path) in [
                    ("flask-sequential", "/checkout"),
                    ("flask-threadpool", "/checkout-threadpool"),
                ] {
                    targets.peers.push(PeerTarget {
                        name: name.into(),
                        url: p.url(path),
                        drain: p.url("/healthz"),
                        process: targets.running.len(),
                    });
                }
                targets.running.push(p);
            }
            Err(s) => targets.skipped.push(s),
        }
        let node = match peers::node(dir, &upstreams) {
            Ok(cmd) => peers::start(cmd).await,
            Err(s) => Err(s),
        };
        match node {
            Ok(p) => {
                targets.peers.push(PeerTarget {
                    name: "node".into(),
                    url: p.url("/checkout"),
                    drain: p.url("/healthz"),
                    process: targets.running.len(),
                });
                targets.running.push(p);
            }
            Err(s) => targets.skipped.push(s),
        }
    }
    Ok(targets)
}

impl Targets {
    async fn shutdown(self) {
        self.stop.cancel();
        drop(self.running);
        drop(self.runtimes);
        self.sim.shutdown().await;
    }
}

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
fn saturated(r: &manifold_load::LoadReport, scheduled: Duration) -> bool {
    let d = scheduled.as_secs_f64();
    r.errors * 100 > r.sent || r.duration_s > d + (d * 0.5).max(1.0)
}

/// Wait (up to a minute) until `peer`'s processes use less than about 7% of a core over
/// 200 ms (`/proc` counts CPU in 10 ms ticks: at most one tick in a window).
async fn settle(peer: &RunningPeer) {
    const WINDOW: Duration = Duration::from_millis(200);
    const IDLE_CPU_SECONDS: f64 = 0.015;
    let until = Instant::now() + Duration::from_secs(60);
    let Some(mut last) = peer.cpu_seconds() else {
        return;
    };
    while Instant::now() < until {
        tokio::time::sleep(WINDOW).await;
        let Some(now) = peer.cpu_seconds() else {
            return;
        };
        if now - last < IDLE_CPU_SECONDS {
            return;
        }
        last = now;
    }
}

/// Wait (up to a minute) until a peer answers a probe: everything queued before the probe has
/// then been taken off its accept queue, so its backlog cannot load the next measurement.
async fn drain(url: &str) {
    let client: Client<_, http_body_util::Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        let Ok(req) = http::Request::get(url).body(http_body_util::Empty::new()) else {
            return;
        };
        if let Ok(Ok(resp)) =
            tokio::time::timeout(Duration::from_secs(60), client.request(req)).await
        {
            let _ = resp.into_body().collect().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

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

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite()).then(|| a / b)
}

/// Which target a slot of a round measures.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Slot {
    Floor,
    Hop,
    Manifold,
    HandWritten,
    Peer(usize),
}

/// Run the compose benchmark. `progress` is told what is being measured.
pub async fn run(
    spec: &ComposeSpec,
    mut progress: impl FnMut(&str),
) -> Result<ComposeReport, BenchError> {
    progress(
        "starting the simulator, the floor, Manifold, the hand-written aggregator and the peers",
    );
    let targets = start_targets(spec.delays_ms, &spec.timer, spec.peers_dir.as_deref()).await?;
    let skipped = targets.skipped.clone();
    for s in &skipped {
        progress(&s.to_string());
    }
    // Warm every target: connection pools, allocator, caches, interpreters.
    let warm = Duration::from_millis(500);
    for url in [
        &targets.floor,
        &targets.hop,
        &targets.manifold,
        &targets.hand_written,
    ] {
        let _ = measure(url, 200.0, warm, &spec.timer).await?;
    }
    for (i, p) in targets.peers.iter().enumerate() {
        let _ = measure(&p.url, 50.0, warm, &spec.timer).await?;
        targets.drain_peer(i).await;
    }

    let mut slots = vec![Slot::Floor, Slot::Hop, Slot::Manifold, Slot::HandWritten];
    slots.extend((0..targets.peers.len()).map(Slot::Peer));
    // A peer saturated at some rate: (that rate) — it is not driven at higher ones.
    let mut saturated_at: Vec<Option<f64>> = vec![None; targets.peers.len()];
    let mut rates = Vec::new();
    for &rate in &spec.rates {
        let (mut f, mut m, mut h) = (Vec::new(), Vec::new(), Vec::new());
        let (mut m_rec, mut h_rec) = (Vec::new(), Vec::new());
        let (mut m_cpu, mut h_cpu) = (Vec::new(), Vec::new());
        let mut hops = Vec::new();
        let mut p: Vec<Vec<manifold_load::LoadReport>> = vec![Vec::new(); targets.peers.len()];
        for round in 0..spec.rounds {
            for slot in rotated(&slots, round) {
                let (name, url) = match slot {
                    Slot::Floor => ("floor", &targets.floor),
                    Slot::Hop => ("one hop", &targets.hop),
                    Slot::Manifold => ("manifold", &targets.manifold),
                    Slot::HandWritten => ("hand-written", &targets.hand_written),
                    Slot::Peer(i) => {
                        if saturated_at[i].is_some() {
                            continue;
                        }
                        (targets.peers[i].name.as_str(), &targets.peers[i].url)
                    }
                };
                progress(&format!(
                    "{rate} req/s, round {}/{}: {name}",
                    round + 1,
                    spec.rounds
                ));
                targets.sim.reset_stats();
                let before = targets.cpu(slot);
                let r = measure(url, rate, spec.duration, &spec.timer).await?;
                let cpu = cpu_us(before, targets.cpu(slot), r.ok);
                match slot {
                    Slot::Floor => f.push(r),
                    Slot::Hop => hops.push(r),
                    Slot::Manifold => {
                        m_rec.extend(recorded_run(&targets.sim, &r));
                        m_cpu.push(cpu);
                        m.push(r);
                    }
                    Slot::HandWritten => {
                        h_rec.extend(recorded_run(&targets.sim, &r));
                        h_cpu.push(cpu);
                        h.push(r);
                    }
                    Slot::Peer(i) => {
                        if saturated(&r, spec.duration) {
                            saturated_at[i] = Some(rate);
                        }
                        p[i].push(r);
                        targets.drain_peer(i).await;
                    }
                }
            }
        }
        let floor = measured("floor", rate, &f);
        let hop = measured("one hop", rate, &hops);
        let manifold = measured("manifold", rate, &m);
        let hand_written = measured("hand-written", rate, &h);
        let peers = targets
            .peers
            .iter()
            .zip(&p)
            .zip(&saturated_at)
            .map(|((t, reports), sat)| {
                if reports.is_empty() {
                    return PeerLatency {
                        target: t.name.clone(),
                        latency: None,
                        saturated: true,
                        note: sat.map(|r| format!("not driven: saturated at {r} req/s")),
                        p50_over_manifold: None,
                        p99_over_manifold: None,
                    };
                }
                let l = measured(&t.name, rate, reports);
                PeerLatency {
                    target: t.name.clone(),
                    p50_over_manifold: ratio(l.p50_ms.median, manifold.p50_ms.median),
                    p99_over_manifold: ratio(l.p99_ms.median, manifold.p99_ms.median),
                    latency: Some(l),
                    saturated: *sat == Some(rate),
                    note: (*sat == Some(rate)).then(|| {
                        "saturated: over 1% errors or the run overran its schedule by 50%; \
                         remaining rounds skipped"
                            .to_owned()
                    }),
                }
            })
            .collect();
        rates.push(RateResult {
            rate,
            added_p50_over_ideal_ms: manifold.p50_ms.median - spec.ideal_ms(),
            added_p99_over_ideal_ms: manifold.p99_ms.median - spec.ideal_ms(),
            added_p50_over_floor_ms: manifold.p50_ms.median - floor.p50_ms.median,
            added_p99_over_floor_ms: manifold.p99_ms.median - floor.p99_ms.median,
            hand_written_p50_over_floor_ms: hand_written.p50_ms.median - floor.p50_ms.median,
            hand_written_p99_over_floor_ms: hand_written.p99_ms.median - floor.p99_ms.median,
            floor_p50_over_ideal_ms: floor.p50_ms.median - spec.ideal_ms(),
            floor_p99_over_ideal_ms: floor.p99_ms.median - spec.ideal_ms(),
            floor,
            hop,
            added_p50_over_hand_written_ms: manifold.p50_ms.median - hand_written.p50_ms.median,
            added_p99_over_hand_written_ms: manifold.p99_ms.median - hand_written.p99_ms.median,
            manifold,
            hand_written,
            manifold_over_recorded: over_recorded(&m_rec),
            hand_written_over_recorded: over_recorded(&h_rec),
            manifold_cpu_us_per_request: spread_if_any(&m_cpu),
            hand_written_cpu_us_per_request: spread_if_any(&h_cpu),
            peers,
        });
    }
    targets.shutdown().await;

    let throughput = if spec.throughput_duration.is_zero() {
        None
    } else {
        let targets = start_targets([0; 5], &spec.timer, spec.peers_dir.as_deref()).await?;
        let mut slots = vec![Slot::Manifold, Slot::HandWritten];
        slots.extend((0..targets.peers.len()).map(Slot::Peer));
        let (mut m, mut h) = (Vec::new(), Vec::new());
        let (mut m_cpu, mut h_cpu) = (Vec::new(), Vec::new());
        let mut p: Vec<Vec<f64>> = vec![Vec::new(); targets.peers.len()];
        for round in 0..spec.rounds {
            progress(&format!(
                "closed-loop throughput, round {}/{}",
                round + 1,
                spec.rounds
            ));
            for slot in rotated(&slots, round) {
                let url = match slot {
                    // Not in the throughput rotation: with instant upstreams it would only
                    // measure an empty server.
                    Slot::Floor | Slot::Hop => continue,
                    Slot::Manifold => &targets.manifold,
                    Slot::HandWritten => &targets.hand_written,
                    Slot::Peer(i) => &targets.peers[i].url,
                };
                let before = targets.cpu(slot);
                let (done, secs) = closed_loop_count(
                    url,
                    spec.throughput_clients,
                    spec.throughput_duration,
                    Some(CHECKOUT_BODY),
                )
                .await;
                let cpu = cpu_us(before, targets.cpu(slot), done);
                let rps = done as f64 / secs;
                match slot {
                    Slot::Floor | Slot::Hop => {}
                    Slot::Manifold => {
                        m.push(rps);
                        m_cpu.push(cpu);
                    }
                    Slot::HandWritten => {
                        h.push(rps);
                        h_cpu.push(cpu);
                    }
                    Slot::Peer(i) => {
                        p[i].push(rps);
                        targets.drain_peer(i).await;
                    }
                }
            }
        }
        let peer_names: Vec<String> = targets.peers.iter().map(|t| t.name.clone()).collect();
        targets.shutdown().await;
        let (manifold_rps, hand_written_rps) = (Spread::of(&m), Spread::of(&h));
        let peers = peer_names
            .into_iter()
            .zip(&p)
            .map(|(target, v)| {
                let rps = Spread::of(v);
                PeerThroughput {
                    target,
                    manifold_over_peer: ratio(manifold_rps.median, rps.median).unwrap_or(0.0),
                    rps,
                }
            })
            .collect();
        Some(Throughput {
            clients: spec.throughput_clients,
            ratio: ratio(manifold_rps.median, hand_written_rps.median).unwrap_or(0.0),
            manifold_rps,
            hand_written_rps,
            manifold_cpu_us_per_request: spread_if_any(&m_cpu),
            hand_written_cpu_us_per_request: spread_if_any(&h_cpu),
            peers,
        })
    };

    let goal = goal_check(&rates, throughput.as_ref());
    let slo_p99_ms = spec.slo_p99_ms();
    Ok(ComposeReport {
        slo_p99_ms,
        within_slo: within_slo(&rates, slo_p99_ms),
        scenario: "compose",
        delays_ms: spec.delays_ms,
        ideal_ms: spec.ideal_ms(),
        timer: spec.timer.name(),
        duration_s: spec.duration.as_secs_f64(),
        rounds: spec.rounds,
        rates,
        throughput,
        goal,
        skipped,
    })
}

/// The goal at [`GOAL_RATE`] when it was measured, else at the highest rate measured.
fn goal_check(rates: &[RateResult], throughput: Option<&Throughput>) -> Option<GoalCheck> {
    let r = rates
        .iter()
        .find(|r| r.rate == GOAL_RATE)
        .or_else(|| rates.iter().max_by(|a, b| a.rate.total_cmp(&b.rate)))?;
    let met = |p50: f64, p99: f64| p50 <= GOAL_P50_MS && p99 <= GOAL_P99_MS;
    Some(GoalCheck {
        rate: r.rate,
        p50_over_ideal_ms: r.added_p50_over_ideal_ms,
        p99_over_ideal_ms: r.added_p99_over_ideal_ms,
        p50_over_floor_ms: r.added_p50_over_floor_ms,
        p99_over_floor_ms: r.added_p99_over_floor_ms,
        met_over_ideal: met(r.added_p50_over_ideal_ms, r.added_p99_over_ideal_ms),
        p50_over_recorded_ideal_ms: r
            .manifold_over_recorded
            .as_ref()
            .map(|o| o.added_p50_ms.median),
        p99_over_recorded_ideal_ms: r
            .manifold_over_recorded
            .as_ref()
            .map(|o| o.added_p99_ms.median),
        met_over_recorded_ideal: r
            .manifold_over_recorded
            .as_ref()
            .map(|o| met(o.added_p50_ms.median, o.added_p99_ms.median)),
        met_over_floor: met(r.added_p50_over_floor_ms, r.added_p99_over_floor_ms),
        throughput_ratio: throughput.map(|t| t.ratio),
        throughput_met: throughput.map(|t| t.ratio >= GOAL_THROUGHPUT_RATIO),
        one_hop_p50_ms: r.hop.p50_ms.median,
    })
}

impl ComposeReport {
    /// A markdown table, as `docs/benchmarks.md` quotes it.
    pub fn to_markdown(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "checkout DAG, service times {:?} ms (order, payment, inventory, shipping, confirm); configured ideal (critical path) {:.1} ms; floor = measured in the same rounds: one server that makes no upstream call and waits the critical path as the simulator does (order, then the longest of payment/inventory/shipping, then confirm); waits timed by the {} timer; {} rounds of {:.1} s per rate, medians [min–max]\n",
            self.delays_ms, self.ideal_ms, self.timer, self.rounds, self.duration_s
        );
        let _ = writeln!(
            s,
            "| rate | target | p50 ms | p99 ms | p99.9 ms | max ms | errors |"
        );
        let _ = writeln!(s, "|---:|---|---:|---:|---:|---:|---:|");
        let cell = |x: &Spread| format!("{:.2} [{:.2}–{:.2}]", x.median, x.min, x.max);
        for r in &self.rates {
            for m in [&r.floor, &r.hop, &r.manifold, &r.hand_written]
                .into_iter()
                .chain(r.peers.iter().filter_map(|p| p.latency.as_ref()))
            {
                let sat = r.peers.iter().any(|p| p.target == m.target && p.saturated);
                let _ = writeln!(
                    s,
                    "| {:.0}/s | {}{} | {} | {} | {} | {} | {}/{} |",
                    r.rate,
                    m.target,
                    if sat { " (saturated)" } else { "" },
                    cell(&m.p50_ms),
                    cell(&m.p99_ms),
                    cell(&m.p999_ms),
                    cell(&m.max_ms),
                    m.errors,
                    m.sent
                );
            }
            for p in r.peers.iter().filter(|p| p.latency.is_none()) {
                let _ = writeln!(
                    s,
                    "| {:.0}/s | {} | {} | | | | |",
                    r.rate,
                    p.target,
                    p.note.as_deref().unwrap_or("not measured")
                );
            }
        }
        if !self.within_slo.is_empty() {
            let each: Vec<String> = self
                .within_slo
                .iter()
                .map(|w| {
                    let highest = match w.highest_rate {
                        Some(r) => format!("{r:.0}/s"),
                        None => "none".to_owned(),
                    };
                    match w.first_over {
                        Some(r) => format!("{} {highest} (over at {r:.0}/s)", w.target),
                        None => format!("{} {highest} (within at every rate measured)", w.target),
                    }
                })
                .collect();
            let _ = writeln!(
                s,
                "\nhighest rate with p99 within the {:.1} ms SLO (`--slo-p99`; default twice the configured ideal): {}",
                self.slo_p99_ms,
                each.join("; ")
            );
        }
        let _ = writeln!(
            s,
            "\n| rate | Manifold over floor, p50 / p99 ms | hand-written over floor, p50 / p99 ms | Manifold over hand-written, p50 / p99 ms | Manifold over configured ideal, p50 / p99 ms | floor over configured ideal, p50 / p99 ms |"
        );
        let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|");
        for r in &self.rates {
            let _ = writeln!(
                s,
                "| {:.0}/s | {:+.2} / {:+.2} | {:+.2} / {:+.2} | {:+.2} / {:+.2} | {:+.2} / {:+.2} | {:+.2} / {:+.2} |",
                r.rate,
                r.added_p50_over_floor_ms,
                r.added_p99_over_floor_ms,
                r.hand_written_p50_over_floor_ms,
                r.hand_written_p99_over_floor_ms,
                r.added_p50_over_hand_written_ms,
                r.added_p99_over_hand_written_ms,
                r.added_p50_over_ideal_ms,
                r.added_p99_over_ideal_ms,
                r.floor_p50_over_ideal_ms,
                r.floor_p99_over_ideal_ms,
            );
        }
        if self
            .rates
            .iter()
            .any(|r| r.manifold_over_recorded.is_some())
        {
            let _ = writeln!(
                s,
                "\nThe recorded ideal: each request's critical path of the service times the simulator recorded for its own calls (joined by X-Request-Id), so the upstreams' timer lateness counts as upstream time; each target beside the recorded ideal of its own runs.\n\n| rate | target | recorded ideal p50 / p99 ms | added p50 / p99 ms | requests joined |\n|---:|---|---:|---:|---:|"
            );
            for r in &self.rates {
                for (name, o) in [
                    ("manifold", &r.manifold_over_recorded),
                    ("hand-written", &r.hand_written_over_recorded),
                ] {
                    if let Some(o) = o {
                        let _ = writeln!(
                            s,
                            "| {:.0}/s | {name} | {:.2} / {:.2} | {:+.2} [{:+.2}–{:+.2}] / {:+.2} [{:+.2}–{:+.2}] | {} |",
                            r.rate,
                            o.ideal_p50_ms.median,
                            o.ideal_p99_ms.median,
                            o.added_p50_ms.median,
                            o.added_p50_ms.min,
                            o.added_p50_ms.max,
                            o.added_p99_ms.median,
                            o.added_p99_ms.min,
                            o.added_p99_ms.max,
                            o.requests,
                        );
                    }
                }
            }
        }
        let cpu = |x: &Option<Spread>| match x {
            Some(x) => format!("{:.1} [{:.1}–{:.1}]", x.median, x.min, x.max),
            None => "not measured".to_owned(),
        };
        let _ = writeln!(
            s,
            "\nCPU per answered request of each aggregator's own runtime threads (from /proc/self/task), µs:\n\n| rate | Manifold | hand-written |\n|---:|---:|---:|"
        );
        for r in &self.rates {
            let _ = writeln!(
                s,
                "| {:.0}/s | {} | {} |",
                r.rate,
                cpu(&r.manifold_cpu_us_per_request),
                cpu(&r.hand_written_cpu_us_per_request)
            );
        }
        if let Some(t) = &self.throughput {
            let _ = writeln!(
                s,
                "| closed loop | {} | {} |",
                cpu(&t.manifold_cpu_us_per_request),
                cpu(&t.hand_written_cpu_us_per_request)
            );
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
            for p in &t.peers {
                let _ = writeln!(
                    s,
                    "- {}: {:.0} req/s [{:.0}–{:.0}]; Manifold / {} = {:.2}",
                    p.target, p.rps.median, p.rps.min, p.rps.max, p.target, p.manifold_over_peer
                );
            }
        }
        let peer_ratios: Vec<String> = self
            .rates
            .iter()
            .flat_map(|r| {
                r.peers.iter().filter_map(move |p| {
                    Some(format!(
                        "| {:.0}/s | {} | {:.2}× | {:.2}× |",
                        r.rate, p.target, p.p50_over_manifold?, p.p99_over_manifold?
                    ))
                })
            })
            .collect();
        if !peer_ratios.is_empty() {
            let _ = writeln!(
                s,
                "\n| rate | peer | its p50 / Manifold's | its p99 / Manifold's |"
            );
            let _ = writeln!(s, "|---:|---|---:|---:|");
            for l in peer_ratios {
                let _ = writeln!(s, "{l}");
            }
        }
        if let Some(g) = &self.goal {
            let _ = writeln!(s, "\n{}", g.line());
        }
        for k in &self.skipped {
            let _ = writeln!(s, "\n{k}");
        }
        s
    }
}

impl GoalCheck {
    /// One line: the goal against the ideal and against the measured floor, each with its
    /// verdict, and the throughput ratio.
    pub fn line(&self) -> String {
        let verdict = |met: bool| if met { "met" } else { "not met" };
        let at = if self.rate == GOAL_RATE {
            format!("{:.0} req/s", self.rate)
        } else {
            format!(
                "{:.0} req/s (the highest rate measured; the goal is stated at {GOAL_RATE:.0})",
                self.rate
            )
        };
        let throughput = match (self.throughput_ratio, self.throughput_met) {
            (Some(r), Some(m)) => format!(
                "; closed-loop throughput {r:.2} of the hand-written aggregator's (goal ≥ {GOAL_THROUGHPUT_RATIO:.2}): {}",
                verdict(m)
            ),
            _ => "; throughput not measured".to_owned(),
        };
        let recorded = match (
            self.p50_over_recorded_ideal_ms,
            self.p99_over_recorded_ideal_ms,
            self.met_over_recorded_ideal,
        ) {
            (Some(p50), Some(p99), Some(m)) => format!(
                "over the recorded ideal {p50:+.2} ms p50 / {p99:+.2} ms p99: {}; ",
                verdict(m)
            ),
            _ => String::new(),
        };
        format!(
            "Goal at {at} (≤ {GOAL_P50_MS} ms added at p50, ≤ {GOAL_P99_MS} ms at p99): {recorded}over the configured ideal {:+.2} ms p50 / {:+.2} ms p99: {}; over the measured floor {:+.2} ms p50 / {:+.2} ms p99: {}{throughput}. One loopback round trip costs {:.2} ms at p50 here, and an aggregator makes four in sequence (the client's, order, the fan-out, confirm).",
            self.p50_over_ideal_ms,
            self.p99_over_ideal_ms,
            verdict(self.met_over_ideal),
            self.p50_over_floor_ms,
            self.p99_over_floor_ms,
            verdict(self.met_over_floor),
            self.one_hop_p50_ms,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_target_answers_every_request_and_the_report_is_complete() {
        let spec = ComposeSpec {
            rates: vec![100.0],
            duration: Duration::from_millis(400),
            rounds: 2,
            throughput_clients: 4,
            throughput_duration: Duration::from_millis(300),
            peers_dir: None,
            ..Default::default()
        };
        let mut steps = Vec::new();
        let report = run(&spec, |s| steps.push(s.to_owned())).await.unwrap();
        assert_eq!(report.ideal_ms, 8.0);
        let r = &report.rates[0];
        assert_eq!(r.floor.target, "floor");
        for m in [&r.floor, &r.hop, &r.manifold, &r.hand_written] {
            assert_eq!(m.errors, 0, "{m:?}");
            assert_eq!(m.sent, 80, "{m:?}");
        }
        for m in [&r.floor, &r.manifold, &r.hand_written] {
            // Nothing can beat the critical path of the service times, the floor included.
            assert!(m.p50_ms.median >= report.ideal_ms, "{m:?}");
        }
        // One round trip with no service time is quicker than any checkout.
        assert_eq!(r.hop.target, "one hop");
        assert!(r.hop.p50_ms.median < report.ideal_ms, "{:?}", r.hop);
        assert_eq!(
            r.added_p50_over_floor_ms,
            r.manifold.p50_ms.median - r.floor.p50_ms.median
        );
        assert_eq!(
            r.hand_written_p99_over_floor_ms,
            r.hand_written.p99_ms.median - r.floor.p99_ms.median
        );
        let t = report.throughput.as_ref().unwrap();
        assert!(t.manifold_rps.median > 0.0 && t.hand_written_rps.median > 0.0);
        // One for the start-up, four targets (floor, one hop, Manifold, hand-written) × two
        // rounds, two throughput rounds.
        assert_eq!(steps.len(), 1 + 4 * 2 + 2, "{steps:?}");
        assert_eq!(steps.iter().filter(|s| s.ends_with(": floor")).count(), 2);
        assert!(report.skipped.is_empty() && r.peers.is_empty());
        let goal = report.goal.as_ref().unwrap();
        assert_eq!(goal.rate, 100.0);
        assert_eq!(goal.p50_over_floor_ms, r.added_p50_over_floor_ms);
        assert_eq!(goal.throughput_ratio, Some(t.ratio));
        let md = report.to_markdown();
        for want in [
            "| 100/s | floor |",
            "| 100/s | one hop |",
            "One loopback round trip costs ",
            "| 100/s | manifold |",
            "| 100/s | hand-written |",
            "Manifold over floor, p50 / p99 ms",
            "over the configured ideal ",
            "over the measured floor ",
        ] {
            assert!(md.contains(want), "{want:?} missing from\n{md}");
        }
        let json = serde_json::to_value(&report).unwrap();
        let j = &json["rates"][0];
        assert_eq!(j["floor"]["target"], "floor");
        for key in [
            "added_p50_over_floor_ms",
            "added_p99_over_floor_ms",
            "hand_written_p50_over_floor_ms",
            "hand_written_p99_over_floor_ms",
            "floor_p50_over_ideal_ms",
            "added_p50_over_ideal_ms",
        ] {
            assert!(j[key].is_number(), "{key} missing from {j}");
        }
        assert!(json["goal"]["p50_over_floor_ms"].is_number(), "{json}");
        // Every request's five calls were joined by X-Request-Id in every round (40 each), for
        // both aggregators, and no request's recorded critical path beat the configured one.
        for o in [&r.manifold_over_recorded, &r.hand_written_over_recorded] {
            let o = o.as_ref().expect("recorded ideal");
            assert_eq!(o.requests, 40, "{o:?}");
            assert!(o.ideal_p50_ms.min >= report.ideal_ms, "{o:?}");
        }
        assert!(md.contains("recorded ideal p50 / p99 ms"), "{md}");
        // Each aggregator's runtime threads were found and did work for every answered request
        // (reading, parsing, five upstream calls, answering: never zero).
        for c in [
            &r.manifold_cpu_us_per_request,
            &r.hand_written_cpu_us_per_request,
            &t.manifold_cpu_us_per_request,
            &t.hand_written_cpu_us_per_request,
        ] {
            let c = c.as_ref().expect("CPU per request measured");
            assert!(c.min > 0.0, "{c:?}");
        }
        assert!(md.contains("| closed loop | "), "{md}");
        assert!(md.contains("| max ms |"), "{md}");
        // The SLO defaults to twice the ideal, and every built-in target is placed against it.
        assert_eq!(report.slo_p99_ms, 16.0);
        assert_eq!(report.within_slo.len(), 3, "{:?}", report.within_slo);
        assert!(
            md.contains("highest rate with p99 within the 16.0 ms SLO"),
            "{md}"
        );
        assert!(
            json["goal"]["p50_over_recorded_ideal_ms"].is_number(),
            "{json}"
        );
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut v = vec![5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(quantile(&mut v, 0.5), Some(3.0));
        assert_eq!(quantile(&mut v, 0.99), Some(5.0));
        assert_eq!(quantile(&mut v, 0.0), Some(1.0));
        assert_eq!(quantile(&mut [], 0.5), None);
    }

    /// The floor waits the critical path, not the sum: order, then the three in parallel, then
    /// confirm. Paused time: the waits are exact.
    #[tokio::test(start_paused = true)]
    async fn the_floor_waits_the_critical_path_and_answers_json() {
        let stop = CancellationToken::new();
        let addr = start_floor([2, 4, 3, 5, 1], Timer::Tokio, stop.clone())
            .await
            .unwrap();
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let req = http::Request::post(format!("http://{addr}/checkout"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(CHECKOUT_BODY.as_bytes())))
            .unwrap();
        let start = Instant::now();
        let resp = client.request(req).await.unwrap();
        let waited = start.elapsed();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["order"]["status"], "confirmed");
        assert_eq!(v["shipping"]["label"], "L-1");
        // 2 + max(4, 3, 5) + 1 = 8 ms; the sum of all five (15 ms) would mean no parallelism.
        assert!(waited >= Duration::from_millis(8), "{waited:?}");
        assert!(waited < Duration::from_millis(15), "{waited:?}");
        stop.cancel();
    }

    fn figures(target: &str, rate: f64, p50: f64, p99: f64) -> Measured {
        let one = |x| Spread {
            median: x,
            min: x,
            max: x,
        };
        Measured {
            target: target.into(),
            rate,
            p50_ms: one(p50),
            p99_ms: one(p99),
            p999_ms: one(p99),
            max_ms: one(p99),
            errors: 0,
            sent: 1,
        }
    }

    fn rate_result(rate: f64, floor: (f64, f64), manifold: (f64, f64)) -> RateResult {
        let ideal = 8.0;
        RateResult {
            rate,
            floor: figures("floor", rate, floor.0, floor.1),
            hop: figures("one hop", rate, 0.1, 0.3),
            manifold: figures("manifold", rate, manifold.0, manifold.1),
            hand_written: figures("hand-written", rate, manifold.0, manifold.1),
            added_p50_over_ideal_ms: manifold.0 - ideal,
            added_p99_over_ideal_ms: manifold.1 - ideal,
            added_p50_over_floor_ms: manifold.0 - floor.0,
            added_p99_over_floor_ms: manifold.1 - floor.1,
            hand_written_p50_over_floor_ms: manifold.0 - floor.0,
            hand_written_p99_over_floor_ms: manifold.1 - floor.1,
            floor_p50_over_ideal_ms: floor.0 - ideal,
            floor_p99_over_ideal_ms: floor.1 - ideal,
            added_p50_over_hand_written_ms: 0.0,
            added_p99_over_hand_written_ms: 0.0,
            manifold_over_recorded: None,
            hand_written_over_recorded: None,
            manifold_cpu_us_per_request: None,
            hand_written_cpu_us_per_request: None,
            peers: Vec::new(),
        }
    }

    #[test]
    fn the_highest_rate_within_the_slo_stops_at_the_first_rate_over_it() {
        let mut low = rate_result(500.0, (9.0, 10.0), (9.5, 12.0));
        low.peers.push(PeerLatency {
            target: "node".into(),
            latency: Some(figures("node", 500.0, 10.0, 14.0)),
            saturated: false,
            note: None,
            p50_over_manifold: None,
            p99_over_manifold: None,
        });
        let mut mid = rate_result(1000.0, (9.0, 11.0), (9.5, 13.0));
        mid.peers.push(PeerLatency {
            target: "node".into(),
            latency: None,
            saturated: true,
            note: Some("not driven: saturated at 500 req/s".into()),
            p50_over_manifold: None,
            p99_over_manifold: None,
        });
        let high = rate_result(2000.0, (9.0, 15.0), (9.5, 40.0));
        // Given out of order: the rates are taken ascending. A lower p99 at a higher rate after
        // one over the SLO does not count: the rate must *stay* within.
        let rates = [high, low, mid];
        let w = within_slo(&rates, 16.0);
        let by = |t: &str| w.iter().find(|x| x.target == t).unwrap().clone();
        let floor = by("floor");
        assert_eq!((floor.highest_rate, floor.first_over), (Some(2000.0), None));
        let m = by("manifold");
        assert_eq!((m.highest_rate, m.first_over), (Some(1000.0), Some(2000.0)));
        let node = by("node");
        assert_eq!(
            (node.highest_rate, node.first_over),
            (Some(500.0), Some(1000.0))
        );
        let none = within_slo(&rates, 5.0);
        assert!(none
            .iter()
            .all(|x| x.highest_rate.is_none() && x.first_over == Some(500.0)));
    }

    #[test]
    fn the_goal_is_checked_at_2000_per_second_against_both_references() {
        let rates = [
            rate_result(500.0, (9.0, 10.0), (20.0, 30.0)),
            rate_result(2000.0, (13.4, 19.5), (13.5, 20.0)),
            rate_result(4000.0, (9.0, 10.0), (20.0, 30.0)),
        ];
        let g = goal_check(&rates, None).unwrap();
        assert_eq!(g.rate, 2000.0);
        assert!(!g.met_over_ideal && g.met_over_floor, "{g:?}");
        assert_eq!(g.throughput_met, None);
        let line = g.line();
        assert!(
            line.contains("over the configured ideal +5.50 ms p50 / +12.00 ms p99: not met"),
            "{line}"
        );
        assert!(
            line.contains("over the measured floor +0.10 ms p50 / +0.50 ms p99: met"),
            "{line}"
        );
        // Without 2,000 req/s, the highest rate stands in, and says so.
        let g = goal_check(&rates[..1], None).unwrap();
        assert_eq!(g.rate, 500.0);
        assert!(
            g.line().contains("the highest rate measured"),
            "{}",
            g.line()
        );
        assert!(goal_check(&[], None).is_none());
        // With the recorded ideal, the verdict over it leads the line.
        let mut r = rate_result(2000.0, (9.0, 10.0), (9.1, 10.4));
        let one = |x| Spread {
            median: x,
            min: x,
            max: x,
        };
        r.manifold_over_recorded = Some(OverRecorded {
            ideal_p50_ms: one(8.9),
            ideal_p99_ms: one(9.9),
            added_p50_ms: one(0.2),
            added_p99_ms: one(0.5),
            requests: 100,
        });
        let g = goal_check(&[r], None).unwrap();
        assert_eq!(g.met_over_recorded_ideal, Some(true));
        assert!(
            g.line()
                .contains("over the recorded ideal +0.20 ms p50 / +0.50 ms p99: met"),
            "{}",
            g.line()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn peers_that_are_not_installed_are_reported_as_skipped_never_measured() {
        let spec = ComposeSpec {
            rates: vec![50.0],
            duration: Duration::from_millis(200),
            rounds: 1,
            throughput_duration: Duration::ZERO,
            peers_dir: Some(PathBuf::from("/nonexistent/manifold-bench-peers")),
            ..Default::default()
        };
        let report = run(&spec, |_| {}).await.unwrap();
        let names: Vec<&str> = report.skipped.iter().map(|s| s.peer.as_str()).collect();
        assert_eq!(names, ["flask", "node"], "{:?}", report.skipped);
        for s in &report.skipped {
            // Either the program itself or the peer's files under the missing directory.
            assert!(
                s.reason.contains("not found") || s.reason.contains("is missing"),
                "{s}"
            );
            assert!(s.reason.contains("install.sh"), "{s}");
        }
        // No figure for a peer that did not run; Manifold and the baseline still measured.
        assert!(report.rates[0].peers.is_empty());
        assert_eq!(report.rates[0].manifold.errors, 0);
        let md = report.to_markdown();
        assert!(
            md.contains("flask: skipped: ") && md.contains("node: skipped: "),
            "{md}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["skipped"][0]["peer"], "flask");
    }

    #[test]
    fn rotation_starts_each_round_with_another_target() {
        assert_eq!(rotated(&[1, 2, 3], 0), [1, 2, 3]);
        assert_eq!(rotated(&[1, 2, 3], 1), [2, 3, 1]);
        assert_eq!(rotated(&[1, 2, 3], 5), [3, 1, 2]);
        assert!(rotated::<u8>(&[], 3).is_empty());
    }

    /// Where the peers are installed (CI may not have them), each must answer every checkout;
    /// where they are not, each must be skipped: nothing in between.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_peer_either_answers_every_checkout_or_is_skipped() {
        let spec = ComposeSpec {
            rates: vec![20.0],
            duration: Duration::from_millis(500),
            rounds: 1,
            throughput_duration: Duration::ZERO,
            peers_dir: Some(peers::default_dir()),
            ..Default::default()
        };
        let report = run(&spec, |_| {}).await.unwrap();
        let r = &report.rates[0];
        let ran: Vec<&str> = r.peers.iter().map(|p| p.target.as_str()).collect();
        let skipped: Vec<&str> = report.skipped.iter().map(|s| s.peer.as_str()).collect();
        let flask = ran.contains(&"flask-sequential") && ran.contains(&"flask-threadpool");
        assert!(flask != skipped.contains(&"flask"), "{ran:?} {skipped:?}");
        assert!(
            ran.contains(&"node") != skipped.contains(&"node"),
            "{ran:?} {skipped:?}"
        );
        for p in &r.peers {
            let l = p.latency.as_ref().unwrap();
            assert_eq!((l.errors, l.sent), (0, 10), "{p:?}");
            // A peer cannot beat the critical path either.
            assert!(l.p50_ms.median >= report.ideal_ms, "{p:?}");
            assert!(!p.saturated && p.p50_over_manifold.is_some(), "{p:?}");
        }
    }
}
