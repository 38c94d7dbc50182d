//! Medians and spread over rounds.

use serde::Serialize;

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
}
