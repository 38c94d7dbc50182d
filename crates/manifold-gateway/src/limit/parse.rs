//! The memory budget of parsed JSON (`[server] max_parsed_bytes`): request bodies and composed
//! calls' answers.
//!
//! Why: a composed route that reads its request body parses it into a `serde_json::Value`,
//! and parsed, a JSON text takes far more than its size: every object is a B-tree node of
//! ~640 bytes (serde_json's map is a `BTreeMap`, whose smallest node holds 11 entries), every
//! value 32 bytes plus its share of its container. 1 MiB of `[{"a":0},{"a":0},…]` (the body
//! limit's default) is ~90 MiB parsed, measured, and the concurrency limit admits a thousand
//! requests at once: a few clients could take the machine's memory. The body limit bounds
//! one text, not what it becomes; this budget bounds what all of them become together. A call's
//! answer is the same case with a larger text (`max_response_bytes`, 16 MiB: ~1.4 GB parsed at
//! worst), parsed once per request that reads it, cache hits included: a popular route over a
//! large answer multiplies it by its concurrency. Its share is held while its request runs; a
//! refused answer fails its call as `shed` (503, `Retry-After`) or `too_large` (502).
//!
//! How: before parsing, [`estimate`] reads the text once (no allocation) for an upper bound of
//! what parsing it takes; the request holds that much of the budget until it ends. When the
//! budget is spent the request is answered 503 at once, as a shed one (it would be refused the
//! memory, not queued for it); a body whose estimate is more than the whole budget is 413.
//! Bodies under [`FREE_BELOW`] bytes are not counted: most bodies are that small, and what a
//! thousand of them can take (~0.4 MiB each at worst) is bounded by the concurrency limit.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bodies shorter than this are parsed without the budget (see the module docs).
pub(crate) const FREE_BELOW: usize = 4 * 1024;

/// The budget's unit, bytes: permits are KiB, so a budget of terabytes still fits.
const UNIT: u64 = 1024;

/// An upper bound of the memory `serde_json::from_slice::<Value>(json)` takes, in bytes, from
/// one pass over the text: the text itself (strings are copied), ~640 bytes an object and 64
/// a value (its `Value` and room in its container, which grows by doubling).
pub(crate) fn estimate(json: &[u8]) -> u64 {
    let (mut objects, mut values) = (0u64, 1u64);
    let (mut in_string, mut escaped) = (false, false);
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' => objects += 1,
            b',' | b'[' | b':' => values += 1,
            _ => {}
        }
    }
    (json.len() as u64)
        .saturating_add(objects.saturating_mul(640))
        .saturating_add(values.saturating_mul(64))
}

/// Why a body was not given its share of the budget.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The budget is spent by the requests in flight: try again soon.
    Spent,
    /// This body alone would take more than the whole budget (the estimate, bytes).
    TooLarge(u64),
}

/// What parsed request bodies may take at once. Shared by every route, kept across reloads.
#[derive(Debug)]
pub(crate) struct ParseBudget {
    permits: Arc<Semaphore>,
    total: u64,
}

impl ParseBudget {
    /// A budget of `bytes`.
    pub(crate) fn new(bytes: u64) -> ParseBudget {
        let units = (bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS as u64);
        ParseBudget {
            permits: Arc::new(Semaphore::new(units as usize)),
            total: units,
        }
    }

    /// The whole budget, bytes (as configured, rounded down to the unit).
    pub(crate) fn bytes(&self) -> u64 {
        self.total.saturating_mul(UNIT)
    }

    /// The share of the budget parsing `json` needs, held until the permit is dropped; none
    /// for a body under [`FREE_BELOW`] bytes.
    pub(crate) fn take(&self, json: &[u8]) -> Result<Option<OwnedSemaphorePermit>, Refused> {
        if json.len() < FREE_BELOW {
            return Ok(None);
        }
        let bytes = estimate(json);
        let units = bytes.div_ceil(UNIT);
        if units > self.total {
            return Err(Refused::TooLarge(bytes));
        }
        // `total` fits a u32 or less (the semaphore's own bound); so does `units`.
        let units = u32::try_from(units).map_err(|_| Refused::TooLarge(bytes))?;
        Arc::clone(&self.permits)
            .try_acquire_many_owned(units)
            .map(Some)
            .map_err(|_| Refused::Spent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_estimate_counts_objects_and_values_outside_strings() {
        assert_eq!(estimate(b"0"), 1 + 64);
        assert_eq!(estimate(br#"{"a":0}"#), 7 + 640 + 2 * 64);
        // Brackets, braces, commas and colons inside a string are text.
        assert_eq!(estimate(br#""{[,:]}""#), 8 + 64);
        assert_eq!(estimate(br#""a\"{,""#), 7 + 64);
        // The hostile shape: ~100 bytes of parsed memory per byte of text.
        let hostile = format!("[{}{{\"a\":0}}]", "{\"a\":0},".repeat(10_000));
        let ratio = estimate(hostile.as_bytes()) / hostile.len() as u64;
        assert!((90..=120).contains(&ratio), "{ratio}");
    }

    #[test]
    fn small_bodies_are_free_and_the_budget_is_given_back() {
        let budget = ParseBudget::new(512 * 1024);
        assert!(matches!(budget.take(b"[1,2,3]"), Ok(None)));
        let body = format!("[{}0]", "0,".repeat(10_000)); // 20 KB: ~660 KB estimated
        assert_eq!(
            budget.take(body.as_bytes()).err(),
            Some(Refused::TooLarge(estimate(body.as_bytes())))
        );
        let body = format!("[{}0]", "0,".repeat(3_000)); // 6 KB: ~198 KB estimated
        let first = budget
            .take(body.as_bytes())
            .expect("room")
            .expect("counted");
        let second = budget
            .take(body.as_bytes())
            .expect("room")
            .expect("counted");
        assert_eq!(budget.take(body.as_bytes()).err(), Some(Refused::Spent));
        drop(first);
        assert!(budget.take(body.as_bytes()).is_ok());
        drop(second);
    }

    /// Absurd budgets: one below the unit is one unit (a 4 KiB body never fits), one past what
    /// the semaphore counts is clamped, not a panic, and takes any body.
    #[test]
    fn absurd_budgets_are_clamped_not_a_panic() {
        let body = format!("[{}0]", "0,".repeat(3_000));
        let tiny = ParseBudget::new(1);
        assert!(matches!(
            tiny.take(body.as_bytes()),
            Err(Refused::TooLarge(_))
        ));
        let huge = ParseBudget::new(u64::MAX);
        let hostile = format!("[{}{{\"a\":0}}]", "{\"a\":0},".repeat(100_000));
        assert!(matches!(huge.take(hostile.as_bytes()), Ok(Some(_))));
    }

    proptest! {
        /// Whatever the text, the estimate is at least its length and never panics.
        #[test]
        fn the_estimate_is_total(text in proptest::collection::vec(any::<u8>(), 0..2048)) {
            prop_assert!(estimate(&text) >= text.len() as u64);
        }
    }
}
