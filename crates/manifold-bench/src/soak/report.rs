//! What a soak found: the gateway process sampled over time, every request's outcome by route
//! and status class, the fault windows, and the three goals judged from them.

use manifold_load::{ErrorKind, LoadReport, Percentiles};
use serde::Serialize;
use std::collections::BTreeMap;

/// The most RSS may grow from the end of the warm-up to the end of the load, percent.
pub const RSS_DRIFT_GOAL_PCT: f64 = 5.0;

/// Statuses that are the right answer when an upstream fails: the gateway's own 502 (an upstream
/// error or refused connection) and 504 (timeout, deadline), and a proxied upstream's 503.
/// Anything else that is not 2xx (a 4xx to a valid request, a 500 from the gateway) is wrong.
pub const RIGHT_ERRORS: [u16; 3] = [502, 503, 504];

/// One reading of the gateway process.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the load started (0 for the baseline, read before it).
    pub t_s: f64,
    /// `baseline` (idle, before the load), `warmup`, `load`, `after` (the load has just
    /// ended), `settled` (the upstreams stopped and the connections given time to close).
    pub phase: String,
    /// Resident memory (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Open file descriptors (entries of `/proc/PID/fd`).
    pub fds: u64,
    /// Threads of the process.
    pub threads: u64,
    /// The fault window open at that moment (`stall users`, `down catalog`), if any.
    pub fault: Option<String>,
}

/// One fault window as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    /// Seconds since the load started.
    pub at_s: f64,
    /// The upstream it hit.
    pub upstream: String,
    /// `stall` (the upstream accepts but answers nothing until the window ends) or `down` (the
    /// upstream is stopped: its connections dropped, new ones refused, then restarted).
    pub kind: String,
    /// How long it lasted, seconds.
    pub for_s: f64,
    /// Why the upstream could not be restarted after a `down` window (it stayed down).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Every request to one route, by outcome.
#[derive(Debug, Clone, Serialize)]
pub struct RouteOutcome {
    /// The gateway route.
    pub route: String,
    /// `composed`, `cached` or `proxy`.
    pub kind: String,
    /// Requests scheduled (each one is in exactly one of the counts below).
    pub sent: u64,
    /// Answered 2xx.
    pub ok: u64,
    /// Answered with a right error ([`RIGHT_ERRORS`]), by status.
    pub right_errors: BTreeMap<u16, u64>,
    /// Answered with any other status, by status.
    pub wrong: BTreeMap<u16, u64>,
    /// Never answered, by why: `timeout` (no answer within the load generator's timeout),
    /// `connect`, `closed` (the connection dropped mid-request), `other`.
    pub unanswered: BTreeMap<String, u64>,
    /// Latency of the answered requests from their scheduled send time, ms.
    pub latency_ms: Percentiles,
    /// How far the load generator itself ever fell behind its schedule, ms.
    pub max_send_lag_ms: f64,
}

impl RouteOutcome {
    pub(crate) fn of(route: &str, kind: &str, r: &LoadReport) -> RouteOutcome {
        let mut o = RouteOutcome {
            route: route.into(),
            kind: kind.into(),
            sent: r.sent,
            ok: 0,
            right_errors: BTreeMap::new(),
            wrong: BTreeMap::new(),
            unanswered: BTreeMap::new(),
            latency_ms: r.latency_ms,
            max_send_lag_ms: r.max_send_lag.as_secs_f64() * 1000.0,
        };
        for (&status, &n) in &r.statuses {
            if (200..300).contains(&status) {
                o.ok += n;
            } else if RIGHT_ERRORS.contains(&status) {
                *o.right_errors.entry(status).or_default() += n;
            } else {
                *o.wrong.entry(status).or_default() += n;
            }
        }
        for (&kind, &n) in &r.errors_by_kind {
            // Answers with a status are counted above, from `statuses`.
            if !matches!(kind, ErrorKind::Http4xx | ErrorKind::Http5xx) {
                *o.unanswered.entry(kind.as_str().to_owned()).or_default() += n;
            }
        }
        o
    }
}

/// RSS after the warm-up.
#[derive(Debug, Clone, Serialize)]
pub struct RssGoal {
    /// The first sample at or after the end of the warm-up, KiB.
    pub warmup_end_kib: Option<u64>,
    /// The last sample under load, KiB.
    pub final_kib: Option<u64>,
    /// The largest sample from the end of the warm-up to the end of the load, KiB.
    pub max_kib: Option<u64>,
    /// `final / warmup_end - 1`, percent.
    pub drift_pct: Option<f64>,
    /// `max / warmup_end - 1`, percent.
    pub max_drift_pct: Option<f64>,
    /// The goal: `drift_pct` under this.
    pub goal_pct: f64,
    /// Whether it was met (false when the run was too short to have a sample after the warm-up).
    pub met: bool,
}

/// File descriptors before and after.
#[derive(Debug, Clone, Serialize)]
pub struct FdGoal {
    /// Idle, before the load.
    pub baseline: u64,
    /// The most seen under load.
    pub max: u64,
    /// Just after the load ended (idle keep-alive connections to the upstreams still pooled).
    pub after_load: u64,
    /// After the upstreams were stopped and the connections given `settle_s` to close.
    pub settled: u64,
    /// How long it took to get there (or the limit, when it did not), seconds.
    pub settle_s: f64,
    /// `settled <= baseline`.
    pub met: bool,
}

/// Every request answered.
#[derive(Debug, Clone, Serialize)]
pub struct AnswerGoal {
    /// Requests scheduled, all routes.
    pub sent: u64,
    /// Answered 2xx.
    pub ok: u64,
    /// Answered with a right error.
    pub right_errors: u64,
    /// Answered with a wrong status.
    pub wrong: u64,
    /// Not answered at all (timeouts and transport failures).
    pub unanswered: u64,
    /// `wrong == 0 && unanswered == 0`.
    pub met: bool,
}

impl AnswerGoal {
    pub(crate) fn of(routes: &[RouteOutcome]) -> AnswerGoal {
        let sum = |f: &dyn Fn(&RouteOutcome) -> u64| routes.iter().map(f).sum::<u64>();
        let wrong = sum(&|r| r.wrong.values().sum());
        let unanswered = sum(&|r| r.unanswered.values().sum());
        AnswerGoal {
            sent: sum(&|r| r.sent),
            ok: sum(&|r| r.ok),
            right_errors: sum(&|r| r.right_errors.values().sum()),
            wrong,
            unanswered,
            met: wrong == 0 && unanswered == 0,
        }
    }
}

/// Judge RSS from the samples: the warm-up end against the end of the load.
pub(crate) fn rss_goal(samples: &[Sample]) -> RssGoal {
    let under_load: Vec<&Sample> = samples.iter().filter(|s| s.phase == "load").collect();
    let warmup_end = under_load.first().map(|s| s.rss_kib);
    let final_kib = under_load.last().map(|s| s.rss_kib);
    let max_kib = under_load.iter().map(|s| s.rss_kib).max();
    let pct = |x: Option<u64>| match (warmup_end, x) {
        (Some(w), Some(x)) if w > 0 => Some((x as f64 / w as f64 - 1.0) * 100.0),
        _ => None,
    };
    let drift_pct = pct(final_kib);
    RssGoal {
        warmup_end_kib: warmup_end,
        final_kib,
        max_kib,
        drift_pct,
        max_drift_pct: pct(max_kib),
        goal_pct: RSS_DRIFT_GOAL_PCT,
        met: drift_pct.is_some_and(|d| d < RSS_DRIFT_GOAL_PCT),
    }
}

/// Everything `manifold bench soak` measured.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// Always "soak".
    pub scenario: &'static str,
    /// How the gateway ran (a `manifold serve` child process, its pid).
    pub gateway: String,
    /// Seconds of load.
    pub duration_s: f64,
    /// Scheduled requests per second, all routes together (split evenly).
    pub rate: f64,
    /// Seconds of warm-up before RSS is compared.
    pub warmup_s: f64,
    /// Seconds between samples.
    pub sample_every_s: f64,
    /// Seconds between fault windows (`None`: no faults).
    pub fault_every_s: Option<f64>,
    /// Seconds each fault window lasts.
    pub fault_for_s: f64,
    /// Every request, by route.
    pub routes: Vec<RouteOutcome>,
    /// The fault windows, in order.
    pub faults: Vec<FaultRecord>,
    /// The gateway process over time: the baseline, every periodic sample, then after the load.
    pub samples: Vec<Sample>,
    /// Goal: RSS drift after the warm-up under [`RSS_DRIFT_GOAL_PCT`].
    pub rss: RssGoal,
    /// Goal: file descriptors back to the baseline once the load stops.
    pub fds: FdGoal,
    /// Goal: every request answered, correctly or with the right error.
    pub answers: AnswerGoal,
    /// All three goals met.
    pub goals_met: bool,
}

fn met(b: bool) -> &'static str {
    if b {
        "met"
    } else {
        "**not met**"
    }
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("—".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

fn pct(p: Option<f64>) -> String {
    p.map_or("—".into(), |p| format!("{p:+.2}%"))
}

fn counts<K: std::fmt::Display>(m: &BTreeMap<K, u64>) -> String {
    if m.is_empty() {
        return "0".into();
    }
    m.iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// At most this many periodic samples in the markdown table (the JSON has them all).
const TABLE_ROWS: usize = 60;

impl SoakReport {
    /// Markdown, as `docs/benchmarks.md` quotes it.
    pub fn to_markdown(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let faults = match self.fault_every_s {
            Some(e) => format!(
                "a fault window every {e:.2} s for {:.2} s (one upstream stalls or goes down, in turn)",
                self.fault_for_s
            ),
            None => "no fault windows".into(),
        };
        let _ = writeln!(
            s,
            "soak: {:.0} s at {:.0} req/s open loop over composed, cached and proxy routes; {faults}; gateway: {}; warm-up {:.1} s; sampled every {:.2} s\n",
            self.duration_s, self.rate, self.gateway, self.warmup_s, self.sample_every_s
        );
        let _ = writeln!(s, "| goal | measured | result |\n|---|---|---|");
        let r = &self.rss;
        let _ = writeln!(
            s,
            "| RSS drift after warm-up < {:.0}% | {} MiB at warm-up end → {} MiB at the end ({}); max {} MiB ({}) | {} |",
            r.goal_pct,
            mib(r.warmup_end_kib),
            mib(r.final_kib),
            pct(r.drift_pct),
            mib(r.max_kib),
            pct(r.max_drift_pct),
            met(r.met)
        );
        let f = &self.fds;
        let _ = writeln!(
            s,
            "| fds back to baseline | baseline {}, max {}, after the load {}, settled {} (after {:.1} s) | {} |",
            f.baseline, f.max, f.after_load, f.settled, f.settle_s, met(f.met)
        );
        let a = &self.answers;
        let _ = writeln!(
            s,
            "| every request answered | {} sent: {} 2xx, {} right errors, {} wrong, {} unanswered | {} |",
            a.sent, a.ok, a.right_errors, a.wrong, a.unanswered, met(a.met)
        );
        let _ = writeln!(
            s,
            "\n| route | kind | sent | 2xx | right errors | wrong | unanswered | p50 / p99 / max ms |\n|---|---|---:|---:|---|---|---|---:|"
        );
        for r in &self.routes {
            let l = &r.latency_ms;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {:.2} / {:.2} / {:.1} |",
                r.route,
                r.kind,
                r.sent,
                r.ok,
                counts(&r.right_errors),
                counts(&r.wrong),
                counts(&r.unanswered),
                l.p50,
                l.p99,
                l.max
            );
        }
        let _ = writeln!(
            s,
            "\n| t s | phase | RSS MiB | fds | threads | fault |\n|---:|---|---:|---:|---:|---|"
        );
        let periodic = self
            .samples
            .iter()
            .filter(|x| x.phase == "warmup" || x.phase == "load")
            .count();
        let stride = periodic.div_ceil(TABLE_ROWS).max(1);
        let mut i = 0usize;
        for x in &self.samples {
            let is_periodic = x.phase == "warmup" || x.phase == "load";
            if is_periodic {
                i += 1;
                // Every stride-th, and always the last under load (the RSS goal's end point).
                if !(i - 1).is_multiple_of(stride) && i != periodic {
                    continue;
                }
            }
            let _ = writeln!(
                s,
                "| {:.1} | {} | {:.1} | {} | {} | {} |",
                x.t_s,
                x.phase,
                x.rss_kib as f64 / 1024.0,
                x.fds,
                x.threads,
                x.fault.as_deref().unwrap_or("")
            );
        }
        if stride > 1 {
            let _ = writeln!(
                s,
                "\n(every {stride}th periodic sample shown; `--json` has all {periodic})"
            );
        }
        if !self.faults.is_empty() {
            let _ = writeln!(s, "\nfault windows:");
            for w in &self.faults {
                let _ = writeln!(
                    s,
                    "- {:.1} s: {} {} for {:.1} s{}",
                    w.at_s,
                    w.kind,
                    w.upstream,
                    w.for_s,
                    w.error
                        .as_deref()
                        .map(|e| format!(" — {e}"))
                        .unwrap_or_default()
                );
            }
        }
        let _ = writeln!(
            s,
            "\ngoals: {}",
            if self.goals_met {
                "all met"
            } else {
                "NOT all met"
            }
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(phase: &str, rss_kib: u64) -> Sample {
        Sample {
            t_s: 0.0,
            phase: phase.into(),
            rss_kib,
            fds: 10,
            threads: 3,
            fault: None,
        }
    }

    #[test]
    fn rss_drift_compares_the_warmup_end_with_the_end_of_the_load() {
        let samples = [
            sample("baseline", 1000),
            sample("warmup", 5000),
            sample("load", 10_000),
            sample("load", 11_000),
            sample("load", 10_400),
            sample("after", 20_000),
        ];
        let g = rss_goal(&samples);
        assert_eq!(g.warmup_end_kib, Some(10_000));
        assert_eq!(g.final_kib, Some(10_400));
        assert_eq!(g.max_kib, Some(11_000));
        assert!((g.drift_pct.unwrap() - 4.0).abs() < 1e-9, "{g:?}");
        assert!((g.max_drift_pct.unwrap() - 10.0).abs() < 1e-9, "{g:?}");
        assert!(g.met);
        let grown = [sample("load", 10_000), sample("load", 10_600)];
        assert!(!rss_goal(&grown).met);
        // Too short to have a sample after the warm-up: not measured, so not met.
        let g = rss_goal(&[sample("warmup", 1)]);
        assert!(g.drift_pct.is_none() && !g.met);
    }

    #[test]
    fn outcomes_are_sorted_into_ok_right_wrong_and_unanswered() {
        let mut r = LoadReport {
            sent: 10,
            ok: 4,
            errors: 6,
            rate: 0.0,
            duration_s: 1.0,
            latency_ms: Percentiles {
                p50: 1.0,
                p90: 1.0,
                p99: 1.0,
                p999: 1.0,
                max: 1.0,
            },
            target_rate: 10.0,
            errors_by_kind: BTreeMap::new(),
            statuses: [(200, 3), (201, 1), (502, 1), (504, 1), (500, 1), (404, 1)].into(),
            histogram: manifold_load::Histogram::new(3).unwrap(),
            ok_histogram: manifold_load::Histogram::new(3).unwrap(),
            ok_from_send_histogram: manifold_load::Histogram::new(3).unwrap(),
            send_delay_histogram: manifold_load::Histogram::new(3).unwrap(),
            max_send_lag: std::time::Duration::ZERO,
        };
        r.errors_by_kind = [
            (ErrorKind::Http5xx, 3),
            (ErrorKind::Http4xx, 1),
            (ErrorKind::Timeout, 1),
            (ErrorKind::Closed, 1),
        ]
        .into();
        let o = RouteOutcome::of("profile", "composed", &r);
        assert_eq!(o.ok, 4);
        assert_eq!(o.right_errors, [(502, 1), (504, 1)].into());
        assert_eq!(o.wrong, [(404, 1), (500, 1)].into());
        assert_eq!(
            o.unanswered,
            [("closed".to_owned(), 1), ("timeout".to_owned(), 1)].into()
        );
        let a = AnswerGoal::of(&[o]);
        assert_eq!(
            (a.sent, a.ok, a.right_errors, a.wrong, a.unanswered),
            (10, 4, 2, 2, 2)
        );
        assert!(!a.met);
    }
}
