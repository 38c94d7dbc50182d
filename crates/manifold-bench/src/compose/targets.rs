//! Every target of one run, started against one simulator, and what their threads spent.

use super::{floor::start_floor, gateway_config, sim_config, Slot};
use crate::aggregator::{self, CheckoutUpstreams};
use crate::peers::{self, RunningPeer, Skipped, ThreadsCpu};
use crate::BenchError;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use manifold_sim::{RunningSim, Sim};
use manifold_timer::Timer;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A peer's URL, where to ask whether it has drained its backlog, and its process.
pub(super) struct PeerTarget {
    pub(super) name: String,
    pub(super) url: String,
    pub(super) drain: String,
    /// Index of its process in [`Targets::running`] (Flask's two aggregators share one).
    pub(super) process: usize,
}

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

/// Every target running against one simulator.
pub(super) struct Targets {
    pub(super) sim: RunningSim,
    pub(super) floor: String,
    /// The simulator's no-service-time endpoint: one loopback round trip.
    pub(super) hop: String,
    pub(super) manifold: String,
    pub(super) hand_written: String,
    pub(super) peers: Vec<PeerTarget>,
    /// Kept alive for the run; dropping them stops the processes.
    pub(super) running: Vec<RunningPeer>,
    pub(super) skipped: Vec<Skipped>,
    pub(super) stop: CancellationToken,
    /// Manifold's and the hand-written aggregator's runtimes.
    pub(super) runtimes: Vec<OwnRuntime>,
    /// Their thread names, in that order.
    pub(super) threads: [String; 2],
}

impl Targets {
    /// Let peer `i` finish what it has taken on before the next target is measured: its accept
    /// queue drained (a probe answers), then its processes idle. A saturated peer keeps working
    /// through requests it had already accepted, on connections the probe does not share, and
    /// that work would load whatever is measured next.
    pub(super) async fn drain_peer(&self, i: usize) {
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
    pub(super) fn cpu(&self, slot: Slot) -> Option<ThreadsCpu> {
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

pub(super) async fn start_targets(
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
    pub(super) async fn shutdown(self) {
        self.stop.cancel();
        drop(self.running);
        drop(self.runtimes);
        self.sim.shutdown().await;
    }
}

/// Wait (up to a minute) until `peer`'s processes use less than about 7% of a core over
/// 200 ms (`/proc` counts CPU in 10 ms ticks: at most one tick in a window).
pub(super) async fn settle(peer: &RunningPeer) {
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
pub(super) async fn drain(url: &str) {
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
