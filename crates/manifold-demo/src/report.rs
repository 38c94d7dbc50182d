//! What the demo measured, and its three renderings: the terminal table, the JSON document and
//! (in `html.rs`) the HTML page.

use serde::Serialize;
use std::fmt::Write as _;

/// The whole run. Serializes (`--json`) to
/// `{"scenarios":[{"name","ideal_ms",…,"strategies":[{"name","p50_ms","p99_ms",…}]}]}`.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    /// One entry per scenario, in the spec's order.
    pub scenarios: Vec<ScenarioResult>,
}

/// One scenario under every strategy.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// The scenario's name (`checkout`, `profile`).
    pub name: String,
    /// The best plan's critical path in ms: the smallest `plan_ms` of the strategies, i.e. what
    /// the calls' own service times allow at best (`null` if no plan has `expect` hints).
    pub ideal_ms: Option<f64>,
    /// The method and path sent.
    pub request: String,
    /// Scheduled requests per second of every measurement.
    pub rate: f64,
    /// Seconds of load per measurement.
    pub duration_s: f64,
    /// For a contrast: the shop it ran on and what it compares (absent for the seed shop's rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The latency figure `gain` compares: `p50` (the seed shop's rows: the latency levers move
    /// the median) or `p99` (contrasts: hedging and balancing move the tail).
    pub gain_on: Gain,
    /// One entry per strategy, the baseline first.
    pub strategies: Vec<StrategyResult>,
}

/// Which latency figure a scenario's gains compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Gain {
    /// The median.
    P50,
    /// The 99th percentile.
    P99,
}

impl Gain {
    /// The figure of `r` this gain compares.
    pub fn of(self, r: &StrategyResult) -> f64 {
        match self {
            Gain::P50 => r.p50_ms,
            Gain::P99 => r.p99_ms,
        }
    }

    /// `p50` or `p99`.
    pub fn name(self) -> &'static str {
        match self {
            Gain::P50 => "p50",
            Gain::P99 => "p99",
        }
    }
}

/// One scenario under one strategy.
#[derive(Debug, Clone, Serialize)]
pub struct StrategyResult {
    /// The strategy's name.
    pub name: String,
    /// Median latency in ms, from each request's scheduled send time.
    pub p50_ms: f64,
    /// 99th-percentile latency in ms.
    pub p99_ms: f64,
    /// This strategy's plan's critical path in ms (from the calls' `expect` hints).
    pub plan_ms: Option<f64>,
    /// The baseline's latency over this one's, on the scenario's `gain_on` figure (p50 unless
    /// said otherwise; 1.0 for the baseline itself).
    pub gain: f64,
    /// Requests sent in the measurement.
    pub sent: u64,
    /// Requests that failed (error status, timeout, connection failure).
    pub errors: u64,
    /// The config file the strategy runs.
    pub config: String,
    /// For a plan with cached calls: the share of those calls answered without reaching the
    /// upstream (hits, stale answers, coalesced misses), from the calls the sim received during
    /// the measurement: `1 - upstream calls / (requests × cached calls)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_hit_ratio: Option<f64>,
    /// For a plan with offloaded (`mode = "async"`) calls: were they all still done?
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offloaded: Option<OffloadResult>,
    /// For a contrast: the requests its changed service received, retries and hedges included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamCalls>,
    /// The latency distribution, for the chart (not in the JSON).
    #[serde(skip)]
    pub cdf: Vec<CdfPoint>,
    /// One request alone, for the waterfall (not in the JSON).
    #[serde(skip)]
    pub waterfall: Option<Waterfall>,
}

/// The offloaded calls of one measurement, counted by the sim after the answers went out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OffloadResult {
    /// The offloaded calls, by name (`shipping`).
    pub calls: Vec<String>,
    /// Offloaded calls accepted: successful requests × offloaded calls per request.
    pub accepted: u64,
    /// Distinct `Idempotency-Key`s the sim answered `ok` for those calls: work done once each,
    /// however often at-least-once delivery repeated it.
    pub delivered: u64,
    /// How long after the last answer the last of them was delivered, ms.
    pub drained_after_ms: f64,
    /// The median time from a checkout's answer until a client following its receipt's
    /// `status_url` with `?wait=` saw the offloaded work `done` (the label ready), ms; measured
    /// on a few requests sent alone after the load. `None` when not measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_p50_ms: Option<f64>,
}

/// What one service received during a measurement, against what the plan asks of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamCalls {
    /// The service (`orders`, `payment`).
    pub service: String,
    /// Requests it received (hedges, retries and cancelled attempts included).
    pub calls: u64,
    /// What the plan asks: requests sent × the route's calls to that service.
    pub planned: u64,
    /// `calls` above `planned`, as a percentage of `planned`.
    pub extra_pct: f64,
    /// The requests each replica received, in the shop's replica order: where the balancer
    /// sent them (the last replica is the misbehaving one).
    pub by_replica: Vec<u64>,
}

/// A point of a cumulative latency distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CdfPoint {
    /// Latency in ms.
    pub ms: f64,
    /// Fraction of requests at or below it (0..=1).
    pub fraction: f64,
}

/// One request sent alone, and the upstream calls the sim saw for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Waterfall {
    /// The request's latency as the client saw it, ms.
    pub total_ms: f64,
    /// The upstream calls, by start time; times in ms since the request was sent.
    pub calls: Vec<WaterfallCall>,
}

/// One upstream call in a [`Waterfall`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WaterfallCall {
    /// `service · METHOD /pattern`, e.g. `order · POST /orders`.
    pub label: String,
    /// When the sim received it, ms after the request was sent.
    pub start_ms: f64,
    /// When the sim answered it, ms after the request was sent.
    pub end_ms: f64,
}

impl DemoReport {
    /// The stable `--json` form, one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }

    /// Whether every request of every measurement succeeded and every offloaded call was
    /// delivered.
    pub fn all_ok(&self) -> bool {
        self.scenarios.iter().flat_map(|s| &s.strategies).all(|s| {
            s.errors == 0
                && s.offloaded
                    .as_ref()
                    .is_none_or(|o| o.delivered >= o.accepted)
        })
    }

    /// The terminal table: scenario, strategy, p50, p99, the plan's ideal, the gain over the
    /// baseline (and an errors column when any request failed).
    pub fn table(&self) -> String {
        let baseline = self
            .scenarios
            .first()
            .and_then(|s| s.strategies.first())
            .map_or("baseline", |s| s.name.as_str());
        let with_errors = !self.all_ok();
        let gain_head = format!("gain over {baseline}");
        let mut rows = vec![vec![
            "scenario".to_owned(),
            "strategy".to_owned(),
            "p50".to_owned(),
            "p99".to_owned(),
            "ideal".to_owned(),
            gain_head,
        ]];
        if with_errors {
            rows[0].push("errors".to_owned());
        }
        rows[0].push(String::new());
        for s in &self.scenarios {
            let base = s.strategies.first().map_or(0.0, |b| s.gain_on.of(b));
            for (i, r) in s.strategies.iter().enumerate() {
                let gain = if i == 0 {
                    "—".to_owned()
                } else {
                    match s.gain_on {
                        Gain::P50 => format!("{:.2}× ({:+.0} ms)", r.gain, r.p50_ms - base),
                        Gain::P99 => format!(
                            "{:.2}× on p99 ({:+.0} ms) over {}",
                            r.gain,
                            r.p99_ms - base,
                            s.strategies.first().map_or("", |b| b.name.as_str())
                        ),
                    }
                };
                let mut row = vec![
                    s.name.clone(),
                    r.name.clone(),
                    format!("{:.0} ms", r.p50_ms),
                    format!("{:.0} ms", r.p99_ms),
                    r.plan_ms.map_or("—".to_owned(), |p| format!("{p:.0} ms")),
                    gain,
                ];
                if with_errors {
                    row.push(format!("{}/{}", r.errors, r.sent));
                }
                let mut note = Vec::new();
                if let (0, Some(summary)) = (i, &s.summary) {
                    note.push(summary.clone());
                }
                note.extend(r.note());
                row.push(note.join("; "));
                rows.push(row);
            }
        }
        let cols = rows[0].len();
        let width = |c: usize| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols).map(width).collect();
        let mut out = String::new();
        for row in &rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                let pad = widths[c] - cell.chars().count();
                // Text columns left-aligned, figures right-aligned.
                if c < 2 || c == 5 || c == cols - 1 {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                } else {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                }
                line.push_str("  ");
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        out
    }

    /// The self-contained HTML report: a latency chart per scenario and a waterfall of one
    /// request per strategy, as inline SVG (no scripts, no network).
    pub fn to_html(&self) -> String {
        crate::html::render(self)
    }
}

impl StrategyResult {
    /// What the row proves beyond latency, in words: the cache's share, or that the offloaded
    /// work was still done.
    pub fn note(&self) -> Option<String> {
        let mut notes = Vec::new();
        if let Some(h) = self.cache_hit_ratio {
            notes.push(format!("cache answered {:.0}% of cached calls", h * 100.0));
        }
        if let Some(o) = &self.offloaded {
            notes.push(format!(
                "{}: {}/{} done in the background; the last {:.1} s after the last answer",
                o.calls.join(", "),
                o.delivered,
                o.accepted,
                o.drained_after_ms / 1000.0
            ));
            if let Some(ready) = o.ready_p50_ms {
                notes.push(format!(
                    "followed with status_url?wait: done {ready:.0} ms after the answer (p50)"
                ));
            }
        }
        if let Some(u) = &self.upstream {
            let by: Vec<String> = u.by_replica.iter().map(u64::to_string).collect();
            notes.push(format!(
                "{}: {} requests for {} calls ({:+.1}%), by replica {}",
                u.service,
                u.calls,
                u.planned,
                u.extra_pct,
                by.join("/")
            ));
        }
        (!notes.is_empty()).then(|| notes.join("; "))
    }
}

/// A small report for the renderers' tests.
#[cfg(test)]
pub(crate) fn sample() -> DemoReport {
    let strat = |name: &str, p50: f64, plan: f64, gain: f64| StrategyResult {
        name: name.to_owned(),
        p50_ms: p50,
        p99_ms: p50 + 5.0,
        plan_ms: Some(plan),
        gain,
        sent: 60,
        errors: 0,
        config: format!("examples/{name}.toml"),
        cache_hit_ratio: None,
        offloaded: None,
        upstream: None,
        cdf: vec![
            CdfPoint {
                ms: p50 - 1.0,
                fraction: 0.1,
            },
            CdfPoint {
                ms: p50,
                fraction: 0.5,
            },
            CdfPoint {
                ms: p50 + 5.0,
                fraction: 1.0,
            },
        ],
        waterfall: Some(Waterfall {
            total_ms: p50,
            calls: vec![WaterfallCall {
                label: "order · POST /orders".to_owned(),
                start_ms: 0.5,
                end_ms: 150.7,
            }],
        }),
    };
    DemoReport {
        scenarios: vec![ScenarioResult {
            name: "checkout".to_owned(),
            ideal_ms: Some(450.0),
            request: "POST /checkout".to_owned(),
            rate: 20.0,
            duration_s: 3.0,
            summary: None,
            gain_on: Gain::P50,
            strategies: vec![
                strat("sequential", 752.0, 750.0, 1.0),
                strat("concurrent", 451.0, 450.0, 752.0 / 451.0),
            ],
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_documented_shape() {
        let v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        let obj = v.as_object().unwrap();
        assert_eq!(obj.keys().collect::<Vec<_>>(), ["scenarios"]);
        let s = &v["scenarios"][0];
        assert_eq!(s["name"], "checkout");
        assert_eq!(s["ideal_ms"], 450.0);
        let c = &s["strategies"][1];
        assert_eq!(c["name"], "concurrent");
        assert_eq!(c["p50_ms"], 451.0);
        assert_eq!(c["p99_ms"], 456.0);
        // Chart data stays out of the JSON.
        assert!(c.get("cdf").is_none() && c.get("waterfall").is_none());
    }

    #[test]
    fn table_has_a_row_per_strategy_and_the_gain_over_the_baseline() {
        let t = sample().table();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].contains("gain over sequential"), "{t}");
        assert!(
            lines[1].contains("sequential") && lines[1].contains("752 ms"),
            "{t}"
        );
        assert!(
            lines[2].contains("concurrent") && lines[2].contains("1.67× (-301 ms)"),
            "{t}"
        );
        assert!(!lines[0].contains("errors"), "{t}");
    }

    #[test]
    fn notes_say_what_the_cache_answered_and_that_offloaded_work_was_done() {
        let mut r = sample();
        r.scenarios[0].strategies[1].cache_hit_ratio = Some(0.704);
        r.scenarios[0].strategies[1].offloaded = Some(OffloadResult {
            calls: vec!["shipping".to_owned()],
            accepted: 60,
            delivered: 60,
            drained_after_ms: 310.0,
            ready_p50_ms: Some(212.4),
        });
        assert!(r.all_ok());
        let t = r.table();
        assert!(
            t.contains("cache answered 70% of cached calls; shipping: 60/60 done in the background; the last 0.3 s after the last answer; followed with status_url?wait: done 212 ms after the answer (p50)"),
            "{t}"
        );
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        let c = &v["scenarios"][0]["strategies"][1];
        assert_eq!(c["cache_hit_ratio"], 0.704);
        assert_eq!(c["offloaded"]["delivered"], 60);
        // Absent where they do not apply.
        assert!(v["scenarios"][0]["strategies"][0]
            .get("offloaded")
            .is_none());
        // An offloaded call that was never delivered fails the demo.
        if let Some(o) = r.scenarios[0].strategies[1].offloaded.as_mut() {
            o.delivered = 59;
        }
        assert!(!r.all_ok());
    }

    #[test]
    fn a_contrast_gains_on_p99_and_counts_its_services_requests() {
        let mut r = sample();
        let s = &mut r.scenarios[0];
        s.name = "hedged".to_owned();
        s.summary = Some("orders straggles".to_owned());
        s.gain_on = Gain::P99;
        s.strategies[0].p99_ms = 800.0;
        s.strategies[1].p99_ms = 400.0;
        s.strategies[1].gain = 2.0;
        s.strategies[1].upstream = Some(UpstreamCalls {
            service: "orders".to_owned(),
            calls: 63,
            planned: 60,
            extra_pct: 5.0,
            by_replica: vec![40, 23],
        });
        let t = r.table();
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[1].ends_with("orders straggles"), "{t}");
        assert!(
            lines[2].contains("2.00× on p99 (-400 ms) over sequential")
                && lines[2].contains("orders: 63 requests for 60 calls (+5.0%), by replica 40/23"),
            "{t}"
        );
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["scenarios"][0]["gain_on"], "p99");
        assert_eq!(
            v["scenarios"][0]["strategies"][1]["upstream"]["extra_pct"],
            5.0
        );
    }

    #[test]
    fn failed_requests_add_an_errors_column() {
        let mut r = sample();
        r.scenarios[0].strategies[1].errors = 3;
        assert!(!r.all_ok());
        let t = r.table();
        assert!(t.lines().next().unwrap().contains("errors"), "{t}");
        assert!(t.contains("3/60"), "{t}");
    }
}
