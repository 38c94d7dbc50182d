//! The overload report: its figures, and the markdown table docs/benchmarks.md quotes.

use super::{GOAL_GOODPUT, GOAL_P99_RATIO};
use crate::stats::Spread;
use serde::Serialize;

/// The harness's CPU share at or above which its own lateness is in the client's figures
/// (a single process whose load generator and simulator share the machine's other core).
const HARNESS_BUSY: f64 = 0.8;

/// One capacity step.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Offered req/s.
    pub offered: f64,
    /// 2xx answers per second.
    pub goodput: f64,
    /// Failed requests.
    pub errors: u64,
    /// Whether the answers kept up with the offered rate.
    pub kept_up: bool,
}

/// One gateway's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// "adaptive" or "no limit".
    pub target: String,
    /// Unloaded p99 of 2xx answers, ms.
    pub unloaded_p99_ms: f64,
    /// Overload: 2xx answers per second, over rounds.
    pub goodput: Spread,
    /// Overload: goodput's median over capacity.
    pub goodput_of_capacity: f64,
    /// Overload: p99 of 2xx answers, ms, over rounds.
    pub admitted_p99_ms: Spread,
    /// Overload: admitted p99's median over the unloaded p99.
    pub p99_over_unloaded: f64,
    /// Overload: 503 answers (shed), summed over rounds.
    pub shed: u64,
    /// Overload: requests with no answer in time (timeouts, connection failures), summed.
    pub unanswered: u64,
    /// Overload: requests offered, summed.
    pub offered: u64,
    /// The first overload run (from a standing start, not in the rounds): goodput, req/s.
    pub first_goodput: f64,
    /// The first overload run: admitted p99, ms.
    pub first_admitted_p99_ms: f64,
    /// Overload: how far the load generator itself fell behind its schedule at worst, ms, over
    /// rounds. The generator measures from each request's *scheduled* time, so its own lag is
    /// in the client's latencies: a large lag says the tail is partly the harness's.
    pub generator_lag_ms: Spread,
    /// Unloaded p99 of 2xx answers measured from each request's send instead of its scheduled
    /// time (the generator's own lateness taken out), ms.
    pub unloaded_p99_from_send_ms: f64,
    /// Overload: admitted p99 measured from each request's send, ms, over rounds.
    pub admitted_p99_from_send_ms: Spread,
    /// Overload: `admitted_p99_from_send_ms`'s median over `unloaded_p99_from_send_ms`.
    pub from_send_over_unloaded: f64,
    /// Overload: p99 of how late the generator sent (its lag plus its wait for a connection
    /// slot), ms, over rounds.
    pub send_delay_p99_ms: Spread,
    /// Overload: the gateway's CPU (user + system, all its threads) over each round's wall
    /// time, as a share of one core, over rounds.
    pub gateway_cpu: Spread,
    /// Overload: the harness's CPU (the load generator, this process, and the simulated
    /// upstreams, its `manifold sim` child) over each round's wall time, as a share of one
    /// core, over rounds.
    pub harness_cpu: Spread,
    /// Overload: how long the gateway's threads were runnable but waiting for a core
    /// (`/proc/PID/task/*/schedstat`), over each round's wall time, over rounds. Every
    /// millisecond of it is a millisecond some admitted request waited that the gateway's own
    /// work did not cause: the machine's cores were busy with something else.
    pub gateway_waiting: Spread,
}

/// The whole result.
#[derive(Debug, Clone, Serialize)]
pub struct OverloadReport {
    /// Always "overload".
    pub scenario: &'static str,
    /// Worker threads of each gateway.
    pub gateway_threads: usize,
    /// The capacity search, in order.
    pub steps: Vec<Step>,
    /// The highest rate whose answers kept up, req/s.
    pub capacity: f64,
    /// The overload rate, req/s.
    pub offered: f64,
    /// Seconds per overload measurement.
    pub duration_s: f64,
    /// Overload rounds.
    pub rounds: usize,
    /// The load generator's most requests in flight (connections).
    pub connections: usize,
    /// adaptive, then no limit.
    pub targets: Vec<Target>,
    /// Whether the adaptive limit met the goal.
    pub goal_met: bool,
}

impl OverloadReport {
    /// A markdown table, as `docs/benchmarks.md` quotes it.
    pub fn to_markdown(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|st| {
                format!(
                    "{:.0}→{:.0}{}",
                    st.offered,
                    st.goodput,
                    if st.kept_up { "" } else { " ✗" }
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "a composed route (3 calls to instant simulated upstreams) on a gateway of {} worker thread(s); capacity {:.0} req/s (offered→answered/s: {}); offered {:.0} req/s for {:.0} s × {} round(s) from at most {} connections, medians [min–max]\n",
            self.gateway_threads,
            self.capacity,
            steps.join(", "),
            self.offered,
            self.duration_s,
            self.rounds,
            self.connections
        );
        let _ = writeln!(
            s,
            "| limit | goodput req/s | of capacity | unloaded p99 ms | admitted p99 ms | p99 / unloaded | shed (503) | unanswered | offered | first run: goodput, admitted p99 ms | generator lag ms | CPU, gateway / harness (% of a core) |"
        );
        let _ = writeln!(
            s,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        let cell =
            |x: &Spread, d: usize| format!("{:.d$} [{:.d$}–{:.d$}]", x.median, x.min, x.max, d = d);
        for t in &self.targets {
            let _ = writeln!(
                s,
                "| {} | {} | {:.0}% | {:.2} | {} | {:.1}× | {} | {} | {} | {:.0}, {:.1} | {} | {:.0} / {:.0} |",
                t.target,
                cell(&t.goodput, 0),
                t.goodput_of_capacity * 100.0,
                t.unloaded_p99_ms,
                cell(&t.admitted_p99_ms, 2),
                t.p99_over_unloaded,
                t.shed,
                t.unanswered,
                t.offered,
                t.first_goodput,
                t.first_admitted_p99_ms,
                cell(&t.generator_lag_ms, 1),
                t.gateway_cpu.median * 100.0,
                t.harness_cpu.median * 100.0
            );
        }
        if let Some(a) = self.targets.first() {
            if a.harness_cpu.median >= HARNESS_BUSY {
                let _ = writeln!(
                    s,
                    "\nthe harness (the load generator and the simulated upstreams) used {:.0}% of a core during the adaptive rounds: it was late itself, so the admitted p99 is partly the harness's",
                    a.harness_cpu.median * 100.0
                );
            }
        }
        let _ = writeln!(
            s,
            "\nthe same answers measured from each request's send instead of its scheduled time (the generator's lateness taken out; the simulated upstreams' is still in):\n"
        );
        let _ = writeln!(
            s,
            "| limit | unloaded p99 from send ms | admitted p99 from send ms | ratio | send delay p99 ms | gateway runnable, waiting for a core (% of wall time) |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
        for t in &self.targets {
            let _ = writeln!(
                s,
                "| {} | {:.2} | {} | {:.1}× | {} | {:.1} |",
                t.target,
                t.unloaded_p99_from_send_ms,
                cell(&t.admitted_p99_from_send_ms, 2),
                t.from_send_over_unloaded,
                cell(&t.send_delay_p99_ms, 2),
                t.gateway_waiting.median * 100.0,
            );
        }
        let factor = if self.capacity > 0.0 {
            self.offered / self.capacity
        } else {
            0.0
        };
        let _ = writeln!(
            s,
            "\ngoal (adaptive: goodput ≥ {:.0}% of capacity, admitted p99 ≤ {GOAL_P99_RATIO}× unloaded): {}{}",
            GOAL_GOODPUT * 100.0,
            if self.goal_met { "met" } else { "not met" },
            if (factor - 2.0).abs() > 1e-9 {
                format!(" (the goal is stated at 2× capacity; this run offered {factor:.2}×)")
            } else {
                String::new()
            }
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(harness: f64) -> OverloadReport {
        let one = |x: f64| Spread::of(&[x]);
        let target = |name: &str| Target {
            target: name.to_owned(),
            unloaded_p99_ms: 4.0,
            goodput: one(7000.0),
            goodput_of_capacity: 1.5,
            admitted_p99_ms: one(12.0),
            p99_over_unloaded: 3.0,
            shed: 100,
            unanswered: 0,
            offered: 90_000,
            first_goodput: 5000.0,
            first_admitted_p99_ms: 400.0,
            generator_lag_ms: one(8.0),
            unloaded_p99_from_send_ms: 1.5,
            admitted_p99_from_send_ms: one(2.5),
            from_send_over_unloaded: 2.5 / 1.5,
            send_delay_p99_ms: one(7.25),
            gateway_cpu: one(0.86),
            harness_cpu: one(harness),
            gateway_waiting: one(0.125),
        };
        OverloadReport {
            scenario: "overload",
            gateway_threads: 1,
            steps: Vec::new(),
            capacity: 4500.0,
            offered: 9000.0,
            duration_s: 5.0,
            rounds: 2,
            connections: 1000,
            targets: vec![target("adaptive"), target("no limit")],
            goal_met: false,
        }
    }

    #[test]
    fn each_side_s_cpu_is_shown_and_a_busy_harness_is_named() {
        let md = report(0.95).to_markdown();
        assert!(md.contains("| 86 / 95 |"), "{md}");
        assert!(md.contains("the harness"), "{md}");
        let md = report(0.40).to_markdown();
        assert!(md.contains("| 86 / 40 |"), "{md}");
        assert!(!md.contains("the harness"), "{md}");
    }

    #[test]
    fn the_tail_from_the_send_is_shown_beside_the_send_delay() {
        let md = report(0.40).to_markdown();
        assert!(
            md.contains("| adaptive | 1.50 | 2.50 [2.50–2.50] | 1.7× | 7.25 [7.25–7.25] | 12.5 |"),
            "{md}"
        );
    }
}
