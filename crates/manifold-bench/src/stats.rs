//! Medians and spread over rounds.

use serde::Serialize;
use std::collections::BTreeMap;

/// A figure's median over rounds, with its spread.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// Median over the rounds.
    pub median: f64,
    /// Smallest round.
    pub min: f64,
    /// Largest round.
    pub max: f64,
}

impl Spread {
    /// Median, min and max of `values` (NaN-free; empty gives zeros).
    pub fn of(values: &[f64]) -> Spread {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Spread {
                median: 0.0,
                min: 0.0,
                max: 0.0,
            };
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Spread {
            median,
            min: v[0],
            max: v[v.len() - 1],
        }
    }
}

/// One target's latency at one rate, over rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// What was measured ("manifold", "hand-written", …).
    pub target: String,
    /// Scheduled requests per second.
    pub rate: f64,
    /// p50 in milliseconds.
    pub p50_ms: Spread,
    /// p99 in milliseconds.
    pub p99_ms: Spread,
    /// p99.9 in milliseconds.
    pub p999_ms: Spread,
    /// The slowest request, milliseconds.
    pub max_ms: Spread,
    /// Requests that failed, summed over rounds.
    pub errors: u64,
    /// Requests sent, summed over rounds.
    pub sent: u64,
    /// The failed requests by kind (`timeout`, `connect`, `closed`, `other`, and each error
    /// status by itself: `http_503`, `http_504`), summed over rounds: a table that says "12 errors" without saying which sends
    /// its reader back to rerun the bench.
    pub errors_by_kind: BTreeMap<String, u64>,
}

impl Measured {
    /// `errors/sent`, and the kinds when there were errors: `3/30000 (http_503 1, timeout 2)`.
    pub fn errors_cell(&self) -> String {
        if self.errors == 0 {
            return format!("0/{}", self.sent);
        }
        format!("{}/{} ({})", self.errors, self.sent, self.error_kinds())
    }

    /// The failed requests by kind, `http_503 1, timeout 2`; empty when none failed.
    pub fn error_kinds(&self) -> String {
        let kinds: Vec<String> = self
            .errors_by_kind
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        kinds.join(", ")
    }

    /// Why a goal resting on these figures cannot be decided: some requests failed, so the
    /// latency figures describe only the ones that did not (a gateway that fails its slowest
    /// requests looks fast). `None` when every request succeeded.
    pub fn undecided_because(&self) -> Option<String> {
        (self.errors > 0).then(|| {
            format!(
                "{} had {} failed of {} sent ({})",
                self.target,
                self.errors,
                self.sent,
                self.error_kinds()
            )
        })
    }
}

/// Why goals resting on these figures cannot be decided (see `compose::GoalCheck::undecided`).
pub(crate) fn undecided(figures: &[&Measured]) -> Option<String> {
    let reasons: Vec<String> = figures
        .iter()
        .filter_map(|m| m.undecided_because())
        .collect();
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

/// Failed requests by kind over several load reports, keyed by the kind's stable name; an
/// error status by the status itself (`http_503`, `http_504`), because "5xx" does not say
/// whether a gateway shed the request (503) or an upstream failed it (502, 504).
pub(crate) fn errors_by_kind<'a>(
    reports: impl IntoIterator<Item = &'a manifold_load::LoadReport>,
) -> BTreeMap<String, u64> {
    use manifold_load::ErrorKind;
    let mut out = BTreeMap::new();
    for r in reports {
        for (k, n) in &r.errors_by_kind {
            if !matches!(k, ErrorKind::Http4xx | ErrorKind::Http5xx) {
                *out.entry(k.as_str().to_owned()).or_insert(0) += n;
            }
        }
        for (status, n) in r.statuses.range(400..) {
            *out.entry(format!("http_{status}")).or_insert(0) += n;
        }
    }
    out
}

/// CPU per request, µs, from CPU seconds read before and after `requests` answered requests.
pub(crate) fn per_request_us(
    before: Option<f64>,
    after: Option<f64>,
    requests: u64,
) -> Option<f64> {
    match (before, after) {
        (Some(b), Some(a)) if requests > 0 => Some((a - b) / requests as f64 * 1e6),
        _ => None,
    }
}

/// The spread of a per-round figure, only when every round measured it (a figure missing
/// from some rounds would be a median of a different set).
pub(crate) fn spread_if_any(v: &[Option<f64>]) -> Option<Spread> {
    let got: Vec<f64> = v.iter().flatten().copied().collect();
    (!got.is_empty() && got.len() == v.len()).then(|| Spread::of(&got))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(Spread::of(&[3.0, 1.0, 2.0]).median, 2.0);
        assert_eq!(Spread::of(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
        let s = Spread::of(&[5.0, f64::NAN, 1.0]);
        assert_eq!((s.min, s.max), (1.0, 5.0));
        assert_eq!(Spread::of(&[]).median, 0.0);
    }

    /// Error statuses are named exactly (a shed 503 apart from an upstream's 502 or 504); the
    /// other kinds keep their names; statuses below 400 are not errors.
    #[test]
    fn error_statuses_are_counted_by_status_across_reports() {
        use manifold_load::{ErrorKind, Histogram, LoadReport, Percentiles, HISTOGRAM_MAX_US};
        let report = |errors: &[(ErrorKind, u64)], statuses: &[(u16, u64)]| {
            let h = Histogram::<u64>::new_with_bounds(1, HISTOGRAM_MAX_US, 3).unwrap();
            LoadReport {
                sent: 0,
                ok: 0,
                errors: 0,
                rate: 0.0,
                duration_s: 0.0,
                latency_ms: Percentiles {
                    p50: 0.0,
                    p90: 0.0,
                    p99: 0.0,
                    p999: 0.0,
                    max: 0.0,
                },
                target_rate: 0.0,
                errors_by_kind: errors.iter().copied().collect(),
                statuses: statuses.iter().copied().collect(),
                ok_histogram: h.clone(),
                ok_from_send_histogram: h.clone(),
                send_delay_histogram: h.clone(),
                histogram: h,
                max_send_lag: std::time::Duration::ZERO,
            }
        };
        let a = report(
            &[(ErrorKind::Http5xx, 3), (ErrorKind::Timeout, 1)],
            &[(200, 10), (503, 2), (504, 1)],
        );
        let b = report(
            &[(ErrorKind::Http5xx, 1), (ErrorKind::Http4xx, 1)],
            &[(200, 5), (404, 1), (503, 1)],
        );
        let kinds = errors_by_kind([&a, &b]);
        let want: BTreeMap<String, u64> = [
            ("http_404", 1),
            ("http_503", 3),
            ("http_504", 1),
            ("timeout", 1),
        ]
        .into_iter()
        .map(|(k, n)| (k.to_owned(), n))
        .collect();
        assert_eq!(kinds, want);
    }

    fn figures(target: &str, errors: &[(&str, u64)]) -> Measured {
        let one = Spread {
            median: 1.0,
            min: 1.0,
            max: 1.0,
        };
        Measured {
            target: target.into(),
            rate: 1000.0,
            p50_ms: one,
            p99_ms: one,
            p999_ms: one,
            max_ms: one,
            errors: errors.iter().map(|(_, n)| n).sum(),
            sent: 5000,
            errors_by_kind: errors.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect(),
        }
    }

    #[test]
    fn errors_are_shown_by_kind_and_make_a_goal_undecided() {
        let clean = figures("nginx", &[]);
        assert_eq!(clean.errors_cell(), "0/5000");
        assert_eq!(clean.undecided_because(), None);
        let failed = figures("manifold", &[("timeout", 3), ("http_5xx", 2)]);
        assert_eq!(failed.errors_cell(), "5/5000 (http_5xx 2, timeout 3)");
        assert_eq!(undecided(&[&clean]), None);
        assert_eq!(
            undecided(&[&clean, &failed]).as_deref(),
            Some("manifold had 5 failed of 5000 sent (http_5xx 2, timeout 3)")
        );
    }
}
