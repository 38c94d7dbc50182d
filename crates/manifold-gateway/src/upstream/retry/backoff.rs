//! How long to wait before a retry: exponential with full jitter (AWS's "Exponential Backoff
//! and Jitter": a uniform draw in `[0, base × 2^(n-1)]`, which spreads a burst of clients that
//! failed together instead of bringing them back in step), never shorter than the upstream's
//! `Retry-After`, and never past the request's deadline.

use http::header::RETRY_AFTER;
use http::{HeaderMap, StatusCode};
use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// No single backoff is longer than this, whatever `backoff` and the attempt number.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The backoff of one upstream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    base: Duration,
}

impl Backoff {
    pub(crate) fn new(base: Duration) -> Self {
        Backoff {
            base: base.min(MAX_BACKOFF),
        }
    }

    /// The wait before retry `n` (1 for the first retry), drawn with `unit` in `[0, 1)`.
    pub(crate) fn delay_with(&self, n: u32, unit: f64) -> Duration {
        let shift = n.saturating_sub(1).min(20);
        let ceiling = self
            .base
            .checked_mul(1 << shift)
            .unwrap_or(MAX_BACKOFF)
            .min(MAX_BACKOFF);
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        ceiling.mul_f64(unit)
    }

    /// The wait before retry `n`, jittered, and at least `retry_after` when the upstream said.
    pub(crate) fn delay(&self, n: u32, retry_after: Option<Duration>) -> Duration {
        let d = self.delay_with(n, unit());
        match retry_after {
            Some(r) => d.max(r),
            None => d,
        }
    }
}

/// `Retry-After` in seconds on a 503 or 429 answer (RFC 9110 §10.2.3; the HTTP-date form is not
/// honoured: a clock-skewed date is worse than the backoff).
pub(crate) fn retry_after(status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    if status != StatusCode::SERVICE_UNAVAILABLE && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    // At most 9 digits: no overflow, and longer than any timeout anyway.
    if v.is_empty() || v.len() > 9 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u64>().ok().map(Duration::from_secs)
}

/// A uniform draw in `[0, 1)` from a per-thread xorshift generator: jitter needs no quality
/// beyond spreading, and no lock or shared state.
fn unit() -> f64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x9e37_79b9_7f4a_7c15);
            h.finish() | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        // The top 53 bits as a fraction.
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn full_jitter_stays_within_the_doubling_ceiling() {
        let b = Backoff::new(25 * MS);
        assert_eq!(b.delay_with(1, 0.0), Duration::ZERO);
        assert_eq!(b.delay_with(1, 1.0), 25 * MS);
        assert_eq!(b.delay_with(2, 1.0), 50 * MS);
        assert_eq!(b.delay_with(3, 0.5), 50 * MS);
        assert_eq!(b.delay_with(40, 1.0), MAX_BACKOFF);
        assert_eq!(b.delay_with(u32::MAX, f64::NAN), Duration::ZERO);
        assert_eq!(Backoff::new(Duration::MAX).delay_with(1, 1.0), MAX_BACKOFF);
        for n in 1..5 {
            let ceiling = 25 * MS * (1 << (n - 1));
            let draws: Vec<Duration> = (0..400).map(|_| b.delay(n, None)).collect();
            assert!(draws.iter().all(|d| *d <= ceiling), "retry {n}");
            // Spread over the range, not stuck at one end.
            assert!(draws.iter().any(|d| *d < ceiling / 4), "retry {n}");
            assert!(draws.iter().any(|d| *d > ceiling * 3 / 4), "retry {n}");
        }
    }

    #[test]
    fn hostile_retry_after_values_are_bounded_and_never_panic() {
        let b = Backoff::new(25 * MS);
        let mut h = HeaderMap::new();
        let at = |h: &HeaderMap| retry_after(StatusCode::SERVICE_UNAVAILABLE, h);
        for (value, want) in [
            ("0", Some(Duration::ZERO)),
            ("-1", None),
            ("1e3", None),
            ("+5", None),
            ("100000000000000000000", None),
            ("999999999", Some(Duration::from_secs(999_999_999))),
            ("Fri, 31 Dec 9999 23:59:59 GMT", None),
            ("Thu, 01 Jan 1970 00:00:00 GMT", None),
            ("soon, please", None),
        ] {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(RETRY_AFTER, v);
                assert_eq!(at(&h), want, "{value}");
                // The wait is a plain max: no arithmetic to overflow (the retry loop stops
                // before sleeping when it is past the attempt's timeout).
                let _ = b.delay(u32::MAX, at(&h));
            }
        }
        // A hundred copies: the first is read, once.
        h.clear();
        for i in 0..100 {
            h.append(RETRY_AFTER, HeaderValue::from(i + 1));
        }
        assert_eq!(at(&h), Some(Duration::from_secs(1)));
    }

    #[test]
    fn retry_after_raises_the_wait_on_503_and_429_only() {
        let b = Backoff::new(25 * MS);
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        let after = retry_after(StatusCode::SERVICE_UNAVAILABLE, &h);
        assert_eq!(after, Some(Duration::from_secs(2)));
        assert_eq!(b.delay(1, after), Duration::from_secs(2));
        assert!(retry_after(StatusCode::TOO_MANY_REQUESTS, &h).is_some());
        assert!(retry_after(StatusCode::BAD_GATEWAY, &h).is_none());
        for bad in [
            "-1",
            "1.5",
            "",
            "99999999999999999999",
            "Wed, 21 Oct 2015 07:28:00 GMT",
        ] {
            h.insert(RETRY_AFTER, HeaderValue::from_static(bad));
            assert!(
                retry_after(StatusCode::SERVICE_UNAVAILABLE, &h).is_none(),
                "{bad}"
            );
        }
    }
}
