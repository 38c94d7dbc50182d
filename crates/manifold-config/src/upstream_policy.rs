//! The resilience keys of an `[upstreams.NAME]` — `balance`, `resolve_every`, `retry`, `hedge`,
//! `circuit_breaker` — from TOML to the validated values of [`crate::policy`].
//!
//! Every bound here is there because the runtime would misbehave past it, not for taste: a
//! budget above 1 lets retries more than double the load they are meant to cap; NaN compares
//! false with everything, so a NaN threshold would never trip; a duration of years overflows
//! the clock a deadline is added to; a hedge or breaker without a floor turns into a request
//! storm or an endpoint that never comes back. Absent keys take the model's defaults, so a
//! table only says what differs.

use crate::compile::duration;
use crate::error::{Diagnostics, ErrorKind};
use crate::policy::{
    Balance, BreakerPolicy, HedgeAfter, HedgePolicy, RetryOn, RetryPolicy, HEDGE_FLOOR,
};
use crate::spanned::Spanned;
use serde::Deserialize;
use std::ops::RangeInclusive;
use std::time::Duration;

/// `retry = { … }` as written. Unknown keys are refused by serde, naming the allowed ones.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetry {
    attempts: Option<Spanned<i64>>,
    budget: Option<Spanned<f64>>,
    min_per_second: Option<Spanned<i64>>,
    #[schemars(extend("pattern" = crate::schema::DURATION_PATTERN))]
    backoff: Option<Spanned<String>>,
    // Names (`"connect"`, `"timeout"`…) or status codes, so read as TOML values.
    #[schemars(with = "Option<Vec<crate::schema::RetryOnValue>>")]
    on: Option<Spanned<Vec<Spanned<toml::Value>>>>,
}

/// `hedge = { … }` as written.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHedge {
    after: Option<Spanned<String>>,
    max: Option<Spanned<i64>>,
    budget: Option<Spanned<f64>>,
}

/// `circuit_breaker = { … }` as written.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBreaker {
    failure_rate: Option<Spanned<f64>>,
    min_requests: Option<Spanned<i64>>,
    #[schemars(extend("pattern" = crate::schema::DURATION_PATTERN))]
    window: Option<Spanned<String>>,
    #[schemars(extend("pattern" = crate::schema::DURATION_PATTERN))]
    open_for: Option<Spanned<String>>,
    #[schemars(extend("pattern" = crate::schema::DURATION_PATTERN))]
    max_open_for: Option<Spanned<String>>,
    max_ejected: Option<Spanned<f64>>,
}

/// `hedge`'s values when its table leaves them out: the example, The Tail at Scale's
/// shape (hedge the slowest 5 %, at most one extra attempt, at most 5 % more requests).
pub(crate) const DEFAULT_HEDGE: HedgePolicy = HedgePolicy {
    after: HedgeAfter::Percentile(95.0),
    max: 1,
    budget: 0.05,
};

/// Percentiles a hedge may follow: below p50 it would hedge most calls; above p99.9 the
/// estimate from an upstream's recent answers is mostly noise.
const PERCENTILES: RangeInclusive<f64> = 50.0..=99.9;
/// The longest policy duration (a hedge delay, a breaker window or opening).
const MAX_POLICY_DURATION: Duration = Duration::from_secs(60 * 60);

/// `balance = "p2c" | "round_robin"`.
pub(crate) fn balance(
    v: &Spanned<String>,
    what: &str,
    diag: &mut Diagnostics<'_>,
) -> Option<Balance> {
    match v.get_ref().as_str() {
        "p2c" => Some(Balance::P2c),
        "round_robin" => Some(Balance::RoundRobin),
        other => {
            diag.push(
                ErrorKind::Value,
                v.span(),
                format!("`{what}` is {other:?}; write \"p2c\" (power of two choices over peak-EWMA, the default) or \"round_robin\""),
            );
            None
        }
    }
}

/// `resolve_every`: at least 1 s (a resolver hammered in a loop is an outage of its own), at
/// most a day.
pub(crate) fn resolve_every(
    v: &Spanned<String>,
    what: &str,
    diag: &mut Diagnostics<'_>,
) -> Option<Duration> {
    dur_in(
        v,
        what,
        Duration::from_secs(1)..=Duration::from_secs(24 * 60 * 60),
        diag,
    )
}

/// `retry = { attempts, budget, min_per_second, backoff, on }`.
pub(crate) fn retry(raw: &RawRetry, what: &str, diag: &mut Diagnostics<'_>) -> Option<RetryPolicy> {
    let before = diag.len();
    let mut r = RetryPolicy::default();
    if let Some(v) = &raw.attempts {
        let why = "attempts in all, the first included; 1 never retries";
        if let Some(x) = int_in(v, &format!("{what}.attempts"), 1..=10, why, diag) {
            r.attempts = x;
        }
    }
    if let Some(v) = &raw.budget {
        let why = "the fraction of the upstream's requests retries may add";
        if let Some(x) = fraction(v, &format!("{what}.budget"), true, why, diag) {
            r.budget = x;
        }
    }
    if let Some(v) = &raw.min_per_second {
        let why = "retries per second allowed beyond the budget";
        if let Some(x) = int_in(v, &format!("{what}.min_per_second"), 0..=10_000, why, diag) {
            r.min_per_second = x;
        }
    }
    if let Some(v) = &raw.backoff {
        if let Some(x) = dur_in(
            v,
            &format!("{what}.backoff"),
            Duration::ZERO..=Duration::from_secs(10),
            diag,
        ) {
            r.backoff = x;
        }
    }
    if let Some(list) = &raw.on {
        r.on.clear();
        for v in list.get_ref() {
            if let Some(o) = retry_on(v, &format!("{what}.on"), diag) {
                if !r.on.contains(&o) {
                    r.on.push(o);
                }
            }
        }
    }
    (diag.len() == before).then_some(r)
}

fn retry_on(v: &Spanned<toml::Value>, what: &str, diag: &mut Diagnostics<'_>) -> Option<RetryOn> {
    let parsed = match v.get_ref() {
        toml::Value::String(s) => match s.as_str() {
            "connect" => Some(RetryOn::Connect),
            "reset" => Some(RetryOn::Reset),
            "timeout" => Some(RetryOn::Timeout),
            s if s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()) => s
                .parse()
                .ok()
                .filter(|c| (500..=599).contains(c))
                .map(RetryOn::Status),
            _ => None,
        },
        // `503` without quotes means the same; refusing it would only be pedantry.
        toml::Value::Integer(i) => u16::try_from(*i)
            .ok()
            .filter(|c| (500..=599).contains(c))
            .map(RetryOn::Status),
        _ => None,
    };
    if parsed.is_none() {
        diag.push(
            ErrorKind::Value,
            v.span(),
            format!(
                "`{what}`: {} is not a retryable outcome; write \"connect\", \"reset\", \"timeout\" or a status from \"500\" to \"599\" (a 4xx is the client's fault: repeating it changes nothing)",
                v.get_ref()
            ),
        );
    }
    parsed
}

/// How `retry.on` writes an outcome (for messages and `manifold check`).
pub(crate) fn retry_on_name(o: RetryOn) -> String {
    match o {
        RetryOn::Connect => "connect".into(),
        RetryOn::Reset => "reset".into(),
        RetryOn::Timeout => "timeout".into(),
        RetryOn::Status(s) => s.to_string(),
    }
}

/// `hedge = { after, max, budget }`. `timeout` is the upstream's: a fixed delay at or past it
/// never fires (the attempt times out first), which is worth a warning.
pub(crate) fn hedge(
    raw: &RawHedge,
    what: &str,
    timeout: Duration,
    diag: &mut Diagnostics<'_>,
) -> Option<HedgePolicy> {
    let before = diag.len();
    let mut h = DEFAULT_HEDGE;
    if let Some(v) = &raw.after {
        if let Some(x) = hedge_after(v, &format!("{what}.after"), diag) {
            h.after = x;
        }
        if let HedgeAfter::Fixed(d) = h.after {
            if d >= timeout {
                diag.warn(
                    v.span(),
                    format!("`{what}.after` ({}) is not shorter than the upstream's timeout ({}): no hedge would ever be sent", humantime::format_duration(d), humantime::format_duration(timeout)),
                );
            }
        }
    }
    if let Some(v) = &raw.max {
        if let Some(x) = int_in(
            v,
            &format!("{what}.max"),
            1..=3,
            "extra attempts beyond the first",
            diag,
        ) {
            h.max = x;
        }
    }
    if let Some(v) = &raw.budget {
        let why = "the fraction of the upstream's requests hedges may add";
        if let Some(x) = fraction(v, &format!("{what}.budget"), false, why, diag) {
            h.budget = x;
        }
    }
    (diag.len() == before).then_some(h)
}

fn hedge_after(v: &Spanned<String>, what: &str, diag: &mut Diagnostics<'_>) -> Option<HedgeAfter> {
    let s = v.get_ref().trim();
    if let Some(p) = s.strip_prefix('p') {
        let ok = !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        return match p.parse::<f64>() {
            Ok(p) if ok && PERCENTILES.contains(&p) => Some(HedgeAfter::Percentile(p)),
            _ => {
                diag.push(
                    ErrorKind::Value,
                    v.span(),
                    format!("`{what}`: {s:?} is not a percentile from \"p50\" to \"p99.9\" (e.g. \"p95\"); or write a delay such as \"20ms\""),
                );
                None
            }
        };
    }
    if humantime::parse_duration(s).is_err() {
        diag.push(
            ErrorKind::Value,
            v.span(),
            format!("`{what}`: {s:?} is neither a percentile (\"p50\" to \"p99.9\", e.g. \"p95\") nor a delay (e.g. \"20ms\")"),
        );
        return None;
    }
    dur_in(v, what, HEDGE_FLOOR..=MAX_POLICY_DURATION, diag).map(HedgeAfter::Fixed)
}

/// `circuit_breaker = { failure_rate, min_requests, window, open_for, max_open_for, max_ejected }`.
pub(crate) fn breaker(
    raw: &RawBreaker,
    what: &str,
    diag: &mut Diagnostics<'_>,
) -> Option<BreakerPolicy> {
    let before = diag.len();
    let mut b = BreakerPolicy::default();
    if let Some(v) = &raw.failure_rate {
        let why = "a failure rate at or above it over the window opens the endpoint";
        if let Some(x) = fraction(v, &format!("{what}.failure_rate"), false, why, diag) {
            b.failure_rate = x;
        }
    }
    if let Some(v) = &raw.min_requests {
        let why = "requests in the window before its failure rate counts";
        if let Some(x) = int_in(v, &format!("{what}.min_requests"), 1..=1_000_000, why, diag) {
            b.min_requests = x;
        }
    }
    if let Some(v) = &raw.window {
        let range = Duration::from_millis(100)..=MAX_POLICY_DURATION;
        if let Some(x) = dur_in(v, &format!("{what}.window"), range, diag) {
            b.window = x;
        }
    }
    if let Some(v) = &raw.open_for {
        if let Some(x) = dur_in(
            v,
            &format!("{what}.open_for"),
            Duration::from_millis(1)..=MAX_POLICY_DURATION,
            diag,
        ) {
            b.open_for = x;
        }
        // Left out, the cap follows a longer `open_for` rather than contradicting it.
        b.max_open_for = b.max_open_for.max(b.open_for);
    }
    if let Some(v) = &raw.max_open_for {
        let key = format!("{what}.max_open_for");
        match dur_in(v, &key, Duration::from_millis(1)..=MAX_POLICY_DURATION, diag) {
            Some(x) if x < b.open_for => diag.push(
                ErrorKind::Value,
                v.span(),
                format!(
                    "`{key}` ({}) is shorter than `open_for` ({}): it caps how far `open_for` grows with consecutive openings",
                    humantime::format_duration(x),
                    humantime::format_duration(b.open_for)
                ),
            ),
            Some(x) => b.max_open_for = x,
            None => {}
        }
    }
    if let Some(v) = &raw.max_ejected {
        let why = "the fraction of the upstream's endpoints that may be ejected at once; the rest keep serving";
        if let Some(x) = fraction(v, &format!("{what}.max_ejected"), true, why, diag) {
            b.max_ejected = x;
        }
    }
    (diag.len() == before).then_some(b)
}

/// An integer in `range`, as a `u32` (every range here fits).
fn int_in(
    v: &Spanned<i64>,
    what: &str,
    range: RangeInclusive<i64>,
    why: &str,
    diag: &mut Diagnostics<'_>,
) -> Option<u32> {
    let n = *v.get_ref();
    match u32::try_from(n) {
        Ok(u) if range.contains(&n) => Some(u),
        _ => {
            diag.push(
                ErrorKind::Value,
                v.span(),
                format!(
                    "`{what}` must be from {} to {} ({why}); got {n}",
                    range.start(),
                    range.end()
                ),
            );
            None
        }
    }
}

/// A finite fraction in [0, 1], or in (0, 1] when `zero_ok` is false.
fn fraction(
    v: &Spanned<f64>,
    what: &str,
    zero_ok: bool,
    why: &str,
    diag: &mut Diagnostics<'_>,
) -> Option<f64> {
    let f = *v.get_ref();
    let low_ok = if zero_ok { f >= 0.0 } else { f > 0.0 };
    // NaN fails both comparisons, so it lands here too.
    if f.is_finite() && low_ok && f <= 1.0 {
        return Some(f);
    }
    let range = if zero_ok {
        "from 0 to 1"
    } else {
        "more than 0 and at most 1"
    };
    diag.push(
        ErrorKind::Value,
        v.span(),
        format!("`{what}` must be a number {range} ({why}); got {f}"),
    );
    None
}

/// A duration within `range`.
fn dur_in(
    v: &Spanned<String>,
    what: &str,
    range: RangeInclusive<Duration>,
    diag: &mut Diagnostics<'_>,
) -> Option<Duration> {
    let d = duration(v, what, diag)?;
    if range.contains(&d) {
        return Some(d);
    }
    let fmt = |d: &Duration| match d.as_secs() {
        _ if d.is_zero() => "0s".to_owned(),
        // humantime says "1day" for 24h, which is not how anyone writes it here.
        s if d.subsec_nanos() == 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        _ => humantime::format_duration(*d).to_string(),
    };
    diag.push(
        ErrorKind::Value,
        v.span(),
        format!(
            "`{what}` must be from {} to {}; got {:?}",
            fmt(range.start()),
            fmt(range.end()),
            v.get_ref()
        ),
    );
    None
}
