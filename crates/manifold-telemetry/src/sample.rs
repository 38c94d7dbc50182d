//! Sampling: parent-based at the head, with a ratio for new traces; a tail rule at the end.
//!
//! The head decision is what goes out in `traceparent` (so downstream services that sample by
//! parent agree with us). Every request is recorded whatever the head said — spans are a few
//! small structs held until the request ends — so the tail rule can still keep every error and
//! every slow request. Downstream services that followed an unsampled parent will have no spans
//! of their own in such a trace; ours are complete.

use std::time::Duration;

use crate::context::{TraceId, TraceParent};
use crate::error::TelemetryError;

/// The ratio sampler, deterministic in the trace id (the right-most 7 bytes, which level 2 of the
/// spec asks to be random), so every service using the same rule agrees on a trace.
#[derive(Clone, Copy, Debug)]
pub struct Sampler {
    /// Sample when the id's 56-bit random part is below this.
    threshold: u64,
}

const RANDOM_BITS: u32 = 56;

impl Sampler {
    /// A sampler keeping `ratio` of new traces; refuses NaN and anything outside `0.0..=1.0`.
    pub fn new(ratio: f64) -> Result<Sampler, TelemetryError> {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(TelemetryError::SampleRatio(ratio));
        }
        // 1.0 maps to 2^56, above every 56-bit value; the cast saturates and is exact here.
        let threshold = (ratio * (1u64 << RANDOM_BITS) as f64) as u64;
        Ok(Sampler { threshold })
    }

    /// The head decision: the parent's `sampled` flag when there is a parent, else the ratio.
    pub fn head(&self, parent: Option<&TraceParent>, trace_id: &TraceId) -> bool {
        match parent {
            Some(p) => p.sampled(),
            None => self.ratio_keeps(trace_id),
        }
    }

    fn ratio_keeps(&self, trace_id: &TraceId) -> bool {
        let mut low = [0u8; 8];
        low[1..].copy_from_slice(&trace_id.0[9..]);
        u64::from_be_bytes(low) < self.threshold
    }
}

/// The tail rule: what is kept whatever the head said.
#[derive(Clone, Copy, Debug, Default)]
pub struct TailRule {
    /// Keep every request at least this slow (`None`: by error only).
    pub keep_slower_than: Option<Duration>,
}

impl TailRule {
    /// Whether a finished request is exported: sampled at the head, failed, or slow.
    pub fn keep(&self, head_sampled: bool, failed: bool, duration: Duration) -> bool {
        head_sampled || failed || self.keep_slower_than.is_some_and(|t| duration >= t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::propagate::new_trace_id;

    #[test]
    fn bad_ratios_are_refused() {
        for r in [f64::NAN, -0.1, 1.000_001, f64::INFINITY] {
            assert!(Sampler::new(r).is_err(), "{r}");
        }
    }

    #[test]
    fn ratio_one_keeps_all_zero_keeps_none() {
        let all = Sampler::new(1.0).expect("valid");
        let none = Sampler::new(0.0).expect("valid");
        let max = TraceId([0xff; 16]);
        assert!(all.head(None, &max));
        assert!(!none.head(
            None,
            &TraceId([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        ));
    }

    #[test]
    fn a_ratio_keeps_about_that_share() {
        let s = Sampler::new(0.25).expect("valid");
        let kept = (0..20_000)
            .filter(|_| s.head(None, &new_trace_id()))
            .count();
        // 5,000 expected; 6 standard deviations is ±367.
        assert!((4_600..=5_400).contains(&kept), "{kept}");
    }

    #[test]
    fn the_parent_decides_when_there_is_one() {
        let s = Sampler::new(0.0).expect("valid");
        let mut p = TraceParent {
            version: 0,
            trace_id: TraceId([1; 16]),
            parent_id: crate::context::SpanId([1; 8]),
            flags: 1,
        };
        assert!(s.head(Some(&p), &p.trace_id));
        p.flags = 0;
        let s = Sampler::new(1.0).expect("valid");
        assert!(!s.head(Some(&p), &p.trace_id));
    }

    #[test]
    fn the_tail_keeps_errors_and_slow_requests() {
        let t = TailRule {
            keep_slower_than: Some(Duration::from_millis(500)),
        };
        assert!(!t.keep(false, false, Duration::from_millis(499)));
        assert!(t.keep(false, false, Duration::from_millis(500)));
        assert!(t.keep(false, true, Duration::ZERO));
        assert!(t.keep(true, false, Duration::ZERO));
        assert!(!TailRule::default().keep(false, false, Duration::MAX));
    }
}
