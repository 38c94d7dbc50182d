//! The resilience policies of an `[upstreams.NAME]` and the listener's concurrency limit, as
//! validated values (issue 13). The gateway's upstream stack reads these; nothing here runs.
//!
//! Defaults follow what an operator of Envoy, linkerd or nginx expects: balancing is
//! power-of-two-choices over peak-EWMA when there are several endpoints; a failed *connect*
//! (nothing was sent, so any method is safe) is retried on another endpoint under a budget, as
//! nginx's `proxy_next_upstream error` does; breaking and hedging are off until configured,
//! since they change what an upstream sees.

use serde::{Serialize, Serializer};
use std::time::Duration;

fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

/// `balance`: how an attempt's endpoint is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Power of two choices over peak-EWMA cost (RTT estimate × (in flight + 1)).
    #[default]
    P2c,
    /// Each endpoint in turn.
    RoundRobin,
}

/// Peak-EWMA's starting RTT estimate for an endpoint with no answers yet (linkerd's default).
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// Peak-EWMA's decay: how fast an old RTT estimate is forgotten (linkerd's default).
pub const EWMA_DECAY: Duration = Duration::from_secs(10);

/// One outcome `retry.on` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// No connection was made: nothing was sent (the only one a non-idempotent call retries).
    Connect,
    /// The connection broke while sending or receiving.
    Reset,
    /// The attempt's timeout passed (never the request's deadline: no time is left).
    Timeout,
    /// The upstream answered this status (500–599).
    Status(u16),
}

/// `retry = { attempts, budget, min_per_second, backoff, on }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = never retry).
    pub attempts: u32,
    /// Retries may add at most this fraction of the upstream's requests over a 10 s window…
    pub budget: f64,
    /// … plus this many retries per second, so a quiet upstream can still be retried.
    pub min_per_second: u32,
    /// The base of the exponential backoff (full jitter), before `Retry-After`.
    #[serde(serialize_with = "ser_duration")]
    pub backoff: Duration,
    /// Which outcomes are retried.
    pub on: Vec<RetryOn>,
}

impl Default for RetryPolicy {
    /// Without a `retry` key: a failed connect is tried again on another endpoint, under the
    /// default budget (nginx's `proxy_next_upstream error`, made safe against storms).
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            budget: 0.2,
            min_per_second: 10,
            backoff: Duration::from_millis(25),
            on: vec![RetryOn::Connect],
        }
    }
}

/// The window a retry or hedge budget counts requests over (Finagle's and linkerd's 10 s).
pub const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// When a hedge fires.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HedgeAfter {
    /// The upstream's live latency percentile (e.g. 95.0 for `"p95"`).
    Percentile(f64),
    /// A fixed delay.
    #[serde(serialize_with = "ser_duration")]
    Fixed(Duration),
}

/// `hedge = { after, max, budget }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HedgePolicy {
    /// When the next attempt goes out if none has answered.
    pub after: HedgeAfter,
    /// Extra attempts at most (beyond the first).
    pub max: u32,
    /// Hedges may add at most this fraction of the upstream's requests (over the budget window).
    pub budget: f64,
}

/// Below this, a percentile-based hedge delay is raised to it.
pub const HEDGE_FLOOR: Duration = Duration::from_millis(1);

/// `circuit_breaker = { failure_rate, min_requests, window, open_for }`, per endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerPolicy {
    /// A failure rate at or above this (0 < r ≤ 1) over the window opens the endpoint…
    pub failure_rate: f64,
    /// … once the window holds at least this many requests.
    pub min_requests: u32,
    /// How far back failures are counted.
    #[serde(serialize_with = "ser_duration")]
    pub window: Duration,
    /// How long an opened endpoint takes no traffic before one probe decides; doubles with each
    /// consecutive opening, up to `max_open_for`.
    #[serde(serialize_with = "ser_duration")]
    pub open_for: Duration,
    /// The cap on `open_for`'s growth.
    #[serde(serialize_with = "ser_duration")]
    pub max_open_for: Duration,
    /// At most this fraction of an upstream's endpoints are ejected at once (Envoy's
    /// `max_ejection_percent`), so the rest keep serving.
    pub max_ejected: f64,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            failure_rate: 0.5,
            min_requests: 20,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(5 * 60),
            max_ejected: 0.5,
        }
    }
}

/// `[server] concurrency`: how many requests the main listener works on at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Concurrency {
    /// A limit that follows the measured latency (gradient, as Envoy's adaptive concurrency
    /// filter), with a floor generous enough that a healthy gateway never sheds.
    #[default]
    Adaptive,
    /// A fixed limit.
    Fixed(u32),
}

/// Every policy of one upstream, defaults filled in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamPolicies {
    /// How endpoints are chosen.
    pub balance: Balance,
    /// How often hostnames in endpoints are resolved again (every address is an endpoint).
    #[serde(serialize_with = "ser_duration")]
    pub resolve_every: Duration,
    /// Retries (the default retries connect failures only).
    pub retry: RetryPolicy,
    /// Hedging, when configured.
    pub hedge: Option<HedgePolicy>,
    /// Per-endpoint circuit breaking, when configured.
    pub circuit_breaker: Option<BreakerPolicy>,
}

impl Default for UpstreamPolicies {
    fn default() -> Self {
        UpstreamPolicies {
            balance: Balance::P2c,
            resolve_every: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            hedge: None,
            circuit_breaker: None,
        }
    }
}
