//! What `manifold bench compose` reports, and the verdicts drawn from the figures.

use super::{
    GOAL_CPU_RATIO, GOAL_HW_P50_MS, GOAL_HW_P99_MS, GOAL_P50_MS, GOAL_P99_MS, GOAL_RATE,
    GOAL_THROUGHPUT_RATIO,
};
use crate::peers::Skipped;
use crate::{Measured, Spread};
use serde::Serialize;

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
    /// Manifold beside the hand-written aggregator round by round (the goal's comparison).
    pub against_hand_written: AgainstHandWritten,
    /// The peers that ran (Flask, Node), in the same rounds.
    pub peers: Vec<PeerLatency>,
}

/// Manifold beside the hand-written aggregator, paired by round: each round measures both
/// under the same schedule minutes apart at most, so a round's difference (or ratio) cancels
/// what the machine's other load did to that round, and the median is over those pairs.
///
/// CPU is measured the same way for both: each runs in this process on a tokio runtime of its
/// own with the same two worker threads, and its CPU is the sum over that runtime's threads
/// (`/proc/self/task/*/schedstat`, nanoseconds), divided by the requests it answered. The load
/// generator, the simulator and the floor run on other threads and count for neither. Child
/// processes would add what differs between two binaries (startup, allocator, runtime
/// defaults) to what is compared; the question is what the generality of the gateway costs
/// over the same code written by hand, so both get identical runtimes.
#[derive(Debug, Clone, Serialize)]
pub struct AgainstHandWritten {
    /// Manifold's p50 minus the hand-written aggregator's in the same round, ms.
    pub p50_ms: Spread,
    /// Manifold's p99 minus the hand-written aggregator's in the same round, ms.
    pub p99_ms: Spread,
    /// Manifold's CPU per answered request over the hand-written aggregator's in the same
    /// round (`None` where `/proc` could not be read in some round).
    pub cpu_ratio: Option<Spread>,
}

impl AgainstHandWritten {
    /// The pairs from per-round figures in round order (`m[i]` and `h[i]` from round `i`).
    pub(super) fn paired(
        m: &[manifold_load::LoadReport],
        h: &[manifold_load::LoadReport],
        m_cpu: &[Option<f64>],
        h_cpu: &[Option<f64>],
    ) -> Self {
        let diff = |f: fn(&manifold_load::LoadReport) -> f64| {
            Spread::of(
                &m.iter()
                    .zip(h)
                    .map(|(m, h)| f(m) - f(h))
                    .collect::<Vec<_>>(),
            )
        };
        AgainstHandWritten {
            p50_ms: diff(|r| r.latency_ms.p50),
            p99_ms: diff(|r| r.latency_ms.p99),
            cpu_ratio: cpu_ratio(m_cpu, h_cpu),
        }
    }
}

/// Per-round CPU ratios, Manifold over hand-written, when every round measured both.
pub(super) fn cpu_ratio(m_cpu: &[Option<f64>], h_cpu: &[Option<f64>]) -> Option<Spread> {
    let ratios: Vec<Option<f64>> = m_cpu
        .iter()
        .zip(h_cpu)
        .map(|(m, h)| super::ratio((*m)?, (*h)?))
        .collect();
    crate::stats::spread_if_any(&ratios)
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
    /// Manifold's CPU per request over the hand-written aggregator's, paired by round (see
    /// [`AgainstHandWritten`]).
    pub cpu_ratio: Option<Spread>,
    /// The peers that ran.
    pub peers: Vec<PeerThroughput>,
}

/// The goal, checked against both references at one rate.
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
    /// Manifold's p50 minus the hand-written aggregator's, median of paired rounds, ms (goal
    /// ≤ [`GOAL_HW_P50_MS`]).
    pub p50_over_hand_written_ms: f64,
    /// The same at p99, ms (goal ≤ [`GOAL_HW_P99_MS`]).
    pub p99_over_hand_written_ms: f64,
    /// Manifold's CPU per request over the hand-written aggregator's at this rate, median of
    /// paired rounds (goal ≤ [`GOAL_CPU_RATIO`]); `None`: not measured.
    pub cpu_ratio: Option<f64>,
    /// Both latency goals and the CPU goal hold against the hand-written aggregator (`None`:
    /// CPU not measured).
    pub met_against_hand_written: Option<bool>,
    /// One loopback round trip at this rate (the load generator to a simulated endpoint with
    /// no service time), median p50 in ms: an aggregator makes four in sequence.
    pub one_hop_p50_ms: f64,
    /// Why the verdicts above cannot be trusted, when they cannot: requests of Manifold's, the
    /// hand-written aggregator's or the floor's rounds at this rate failed, so their latency
    /// figures leave out exactly the requests that went wrong. `None`: every request succeeded.
    pub undecided: Option<String>,
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
    /// The goal against the ideal and against the measured floor (`None`: no rate).
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
pub(super) fn within_slo(rates: &[RateResult], slo_ms: f64) -> Vec<WithinSlo> {
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

/// The goal at [`GOAL_RATE`] when it was measured, else at the highest rate measured.
pub(super) fn goal_check(
    rates: &[RateResult],
    throughput: Option<&Throughput>,
) -> Option<GoalCheck> {
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
        p50_over_hand_written_ms: r.against_hand_written.p50_ms.median,
        p99_over_hand_written_ms: r.against_hand_written.p99_ms.median,
        cpu_ratio: r.against_hand_written.cpu_ratio.map(|c| c.median),
        met_against_hand_written: r.against_hand_written.cpu_ratio.map(|c| {
            r.against_hand_written.p50_ms.median <= GOAL_HW_P50_MS
                && r.against_hand_written.p99_ms.median <= GOAL_HW_P99_MS
                && c.median <= GOAL_CPU_RATIO
        }),
        undecided: crate::stats::undecided(&[&r.manifold, &r.hand_written, &r.floor]),
    })
}
