//! The report as `docs/benchmarks.md` quotes it.

use super::*;

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
                    "| {:.0}/s | {}{} | {} | {} | {} | {} | {} |",
                    r.rate,
                    m.target,
                    if sat { " (saturated)" } else { "" },
                    cell(&m.p50_ms),
                    cell(&m.p99_ms),
                    cell(&m.p999_ms),
                    cell(&m.max_ms),
                    m.errors_cell()
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
        let times = |x: &Option<Spread>| match x {
            Some(x) => format!("{:.2}× [{:.2}–{:.2}]", x.median, x.min, x.max),
            None => "not measured".to_owned(),
        };
        let _ = writeln!(
            s,
            "\nCPU per answered request of each aggregator's own runtime threads (from /proc/self/task), µs, and their ratio paired by round:\n\n| rate | Manifold | hand-written | Manifold / hand-written |\n|---:|---:|---:|---:|"
        );
        for r in &self.rates {
            let _ = writeln!(
                s,
                "| {:.0}/s | {} | {} | {} |",
                r.rate,
                cpu(&r.manifold_cpu_us_per_request),
                cpu(&r.hand_written_cpu_us_per_request),
                times(&r.against_hand_written.cpu_ratio)
            );
        }
        if let Some(t) = &self.throughput {
            let _ = writeln!(
                s,
                "| closed loop | {} | {} | {} |",
                cpu(&t.manifold_cpu_us_per_request),
                cpu(&t.hand_written_cpu_us_per_request),
                times(&t.cpu_ratio)
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
            let _ = writeln!(s, "\n{}", g.hand_written_line());
            let _ = writeln!(s, "\n{}", g.line());
        }
        for k in &self.skipped {
            let _ = writeln!(s, "\n{k}");
        }
        s
    }
}

impl GoalCheck {
    /// One line: issue 15's goal against the hand-written aggregator, with its verdict.
    pub fn hand_written_line(&self) -> String {
        let cpu = match self.cpu_ratio {
            Some(r) => format!("CPU per request {r:.2}× (goal ≤ {GOAL_CPU_RATIO:.2}×)"),
            None => "CPU per request not measured".to_owned(),
        };
        let verdict = match (&self.undecided, self.met_against_hand_written) {
            (Some(why), _) => format!("not decided: {why}"),
            (None, Some(true)) => "met".to_owned(),
            (None, Some(false)) => "not met".to_owned(),
            (None, None) => "not decided (CPU not measured)".to_owned(),
        };
        format!(
            "Goal against the hand-written aggregator at {:.0} req/s, medians of paired rounds: \
             p50 {:+.3} ms (goal ≤ +{GOAL_HW_P50_MS} ms), p99 {:+.3} ms (goal ≤ +{GOAL_HW_P99_MS} ms), \
             {cpu}: {verdict}.",
            self.rate, self.p50_over_hand_written_ms, self.p99_over_hand_written_ms,
        )
    }

    /// One line: the goal against the ideal and against the measured floor, each with its
    /// verdict, and the throughput ratio.
    pub fn line(&self) -> String {
        let undecided = self
            .undecided
            .as_ref()
            .map(|why| format!("not decided: {why}"));
        let verdict = |met: bool| match &undecided {
            Some(u) => u.clone(),
            None if met => "met".to_owned(),
            None => "not met".to_owned(),
        };
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
                // Closed-loop rounds count what was done; the open-loop errors say nothing of them.
                "; closed-loop throughput {r:.2} of the hand-written aggregator's (goal ≥ {GOAL_THROUGHPUT_RATIO:.2}): {}",
                if m { "met" } else { "not met" }
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
