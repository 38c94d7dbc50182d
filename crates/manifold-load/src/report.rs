//! The result of a run: counts, achieved rate, latency percentiles, errors by kind.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The histogram's upper bound in microseconds (one hour); longer latencies are clamped.
pub const HISTOGRAM_MAX_US: u64 = 3_600_000_000;

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No answer within the timeout (counted from the scheduled send time).
    Timeout,
    /// The connection could not be opened (refused, unreachable).
    Connect,
    /// The connection was closed or reset before a complete answer.
    Closed,
    /// The server answered 4xx.
    Http4xx,
    /// The server answered 5xx.
    Http5xx,
    /// Anything else (protocol error, oversized response).
    Other,
}

impl ErrorKind {
    /// The stable name used in output (`timeout`, `connect`, `closed`, `http_4xx`, `http_5xx`,
    /// `other`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Closed => "closed",
            ErrorKind::Http4xx => "http_4xx",
            ErrorKind::Http5xx => "http_5xx",
            ErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// The largest.
    pub max: f64,
}

/// What a run measured. Serializes (`--json`) to exactly
/// `{"sent","ok","errors","rate","duration_s","latency_ms":{"p50","p90","p99","p999","max"}}`;
/// the other fields are for in-process use.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Requests scheduled and sent (every one is accounted for in `ok` or `errors`).
    pub sent: u64,
    /// Requests answered with a status below 400.
    pub ok: u64,
    /// Requests that failed, of any kind (see `errors_by_kind`).
    pub errors: u64,
    /// Achieved rate: requests completed per second over `duration_s`.
    pub rate: f64,
    /// Seconds from the first scheduled send to the last completion.
    pub duration_s: f64,
    /// Latency, from each request's scheduled send time to the end of its response body, of every
    /// request that got a response (any status). Requests without one (timeouts, connection
    /// failures) are counted in `errors` instead.
    pub latency_ms: Percentiles,
    /// The rate asked for.
    #[serde(skip)]
    pub target_rate: f64,
    /// Failures by kind.
    #[serde(skip)]
    pub errors_by_kind: BTreeMap<ErrorKind, u64>,
    /// Responses by status code.
    #[serde(skip)]
    pub statuses: BTreeMap<u16, u64>,
    /// The latencies, in microseconds (for charts and other percentiles).
    #[serde(skip)]
    pub histogram: Histogram<u64>,
    /// The latencies of the answers counted in `ok` only (status below 400), in microseconds:
    /// where fast refusals (a 503 from a load-shedding server) would flatter `histogram`.
    #[serde(skip)]
    pub ok_histogram: Histogram<u64>,
    /// The same answers as `ok_histogram`, measured from when each request's send began (after
    /// its connection slot) instead of from its scheduled time: what is left when the
    /// generator's own lateness (`send_delay_histogram`) is taken out. A server's verdict
    /// still reads `ok_histogram`; this one says how much of it was the client's.
    #[serde(skip)]
    pub ok_from_send_histogram: Histogram<u64>,
    /// For every request whose send began and ended before its timeout, how long after its
    /// scheduled time the send began (the generator's lag plus the wait for a connection
    /// slot), in microseconds.
    #[serde(skip)]
    pub send_delay_histogram: Histogram<u64>,
    /// How far behind its schedule the generator itself ever sent (a large value means the
    /// machine could not keep up with the rate; latencies are still measured from the schedule).
    #[serde(skip)]
    pub max_send_lag: Duration,
}

impl LoadReport {
    /// The latency at quantile `q` (0..=1) in milliseconds; 0 if nothing was measured.
    pub fn percentile_ms(&self, q: f64) -> f64 {
        if self.histogram.is_empty() {
            return 0.0;
        }
        us_to_ms(self.histogram.value_at_quantile(q.clamp(0.0, 1.0)))
    }

    /// The stable `--json` form, one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }

    pub(crate) fn percentiles(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles {
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
            };
        }
        Percentiles {
            p50: us_to_ms(h.value_at_quantile(0.5)),
            p90: us_to_ms(h.value_at_quantile(0.9)),
            p99: us_to_ms(h.value_at_quantile(0.99)),
            p999: us_to_ms(h.value_at_quantile(0.999)),
            max: us_to_ms(h.max()),
        }
    }
}

fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.latency_ms;
        writeln!(
            f,
            "requests  {} sent, {} ok, {} errors",
            self.sent, self.ok, self.errors
        )?;
        writeln!(
            f,
            "rate      {:.1} req/s achieved (target {:.1}) over {:.2} s",
            self.rate, self.target_rate, self.duration_s
        )?;
        writeln!(
            f,
            "latency   p50 {:.2} ms   p90 {:.2} ms   p99 {:.2} ms   p99.9 {:.2} ms   max {:.2} ms",
            l.p50, l.p90, l.p99, l.p999, l.max
        )?;
        writeln!(
            f,
            "          (measured from each request's scheduled send time)"
        )?;
        if !self.errors_by_kind.is_empty() {
            let kinds: Vec<String> = self
                .errors_by_kind
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            writeln!(f, "errors    {}", kinds.join(", "))?;
        }
        if self.max_send_lag > Duration::from_millis(10) {
            writeln!(
                f,
                "warning   the generator fell up to {:.1} ms behind its schedule",
                self.max_send_lag.as_secs_f64() * 1000.0
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_exactly_the_documented_shape() {
        let mut h = Histogram::<u64>::new_with_bounds(1, HISTOGRAM_MAX_US, 3).unwrap();
        for us in [1000, 2000, 3000] {
            h.record(us).unwrap();
        }
        let r = LoadReport {
            sent: 4,
            ok: 3,
            errors: 1,
            rate: 3.9,
            duration_s: 1.02,
            latency_ms: LoadReport::percentiles(&h),
            target_rate: 4.0,
            errors_by_kind: [(ErrorKind::Timeout, 1)].into(),
            statuses: [(200, 3)].into(),
            ok_histogram: h.clone(),
            ok_from_send_histogram: h.clone(),
            send_delay_histogram: h.clone(),
            histogram: h,
            max_send_lag: Duration::ZERO,
        };
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        let keys = |v: &serde_json::Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(
            keys(&v),
            ["duration_s", "errors", "latency_ms", "ok", "rate", "sent"]
        );
        assert_eq!(keys(&v["latency_ms"]), ["max", "p50", "p90", "p99", "p999"]);
        // Written in the documented order.
        assert!(r.to_json().starts_with(
            r#"{"sent":4,"ok":3,"errors":1,"rate":3.9,"duration_s":1.02,"latency_ms":{"p50":"#
        ));
        assert_eq!(v["errors"], 1);
        // HDR precision: 3 significant digits.
        assert!((v["latency_ms"]["p50"].as_f64().unwrap() - 2.0).abs() < 0.003);
        assert!((v["latency_ms"]["max"].as_f64().unwrap() - 3.0).abs() < 0.004);
        assert!((r.percentile_ms(1.0) - 3.0).abs() < 0.004);
        let text = r.to_string();
        assert!(text.contains("timeout 1"), "{text}");
    }
}
