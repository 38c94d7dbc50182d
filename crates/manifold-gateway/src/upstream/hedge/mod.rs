//! Hedging (The Tail at Scale's "hedged requests"): when an idempotent attempt has not answered
//! by the upstream's live latency percentile (or a fixed delay), a second attempt goes to
//! another endpoint; the first good answer wins and the others are cancelled — their futures
//! dropped, so their connections are closed (HTTP/1) or their streams reset (HTTP/2), and their
//! leases end as cancelled, saying nothing about their endpoints.
//!
//! Hedges are paid from their own budget (`hedge.budget` of the upstream's calls over the
//! budget window, no reserve): an upstream that is slow everywhere gets at most that much more
//! load, not twice as much.
//!
//! The latencies learnt are those of good answers, each from its own attempt's start, a hedge
//! that won included: the slow attempts it beat are not learnt, so with many calls hedged the
//! estimate leans fast (hedging earlier). The budget caps what that can cost.
//!
//! A failed attempt does not end the group while another is running: the other may still
//! answer. When every attempt failed, the last failure goes up to the retry service, with the
//! earlier ones in its record.

pub(crate) mod latency;

use super::attempt::{Answered, Attempt, AttemptKind, BoxFuture, Tried, NONE_PICKED};
use super::endpoints::EndpointId;
use super::request::Replay;
use super::retry::budget::RetryBudget;
use futures::future::Either;
use futures::stream::{FuturesUnordered, StreamExt};
use latency::Latency;
use manifold_config::policy::{HedgeAfter, HedgePolicy, BUDGET_WINDOW, HEDGE_FLOOR};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service, ServiceExt};

/// An upstream's hedging: when, how many, and its budget.
#[derive(Debug)]
pub(crate) struct Hedging {
    after: After,
    max: u32,
    budget: RetryBudget,
}

#[derive(Debug)]
enum After {
    Fixed(Duration),
    Live(Latency),
}

impl Hedging {
    pub(crate) fn new(policy: &HedgePolicy) -> Self {
        Hedging {
            after: match policy.after {
                HedgeAfter::Fixed(d) => After::Fixed(d),
                HedgeAfter::Percentile(p) => After::Live(Latency::new(p)),
            },
            max: policy.max,
            budget: RetryBudget::new(policy.budget, 0, BUDGET_WINDOW),
        }
    }

    /// How long an attempt may run before the next one goes out: never below the floor.
    pub(crate) fn delay(&self) -> Duration {
        let d = match &self.after {
            After::Fixed(d) => *d,
            After::Live(l) => l.estimate().unwrap_or(latency::FALLBACK),
        };
        d.max(HEDGE_FLOOR)
    }

    fn record(&self, took: Duration) {
        if let After::Live(l) = &self.after {
            l.record(took);
        }
    }
}

/// Adds hedging to an attempt service.
#[derive(Debug, Clone)]
pub(crate) struct HedgeLayer {
    hedging: Option<Arc<Hedging>>,
}

impl HedgeLayer {
    /// `None`: no hedging (the service passes calls straight through).
    pub(crate) fn new(policy: Option<&HedgePolicy>) -> Self {
        HedgeLayer {
            hedging: policy.map(|p| Arc::new(Hedging::new(p))),
        }
    }
}

impl<S> Layer<S> for HedgeLayer {
    type Service = Hedge<S>;
    fn layer(&self, inner: S) -> Hedge<S> {
        Hedge {
            inner,
            hedging: self.hedging.clone(),
        }
    }
}

/// The hedging service over an attempt service `S`.
#[derive(Debug, Clone)]
pub(crate) struct Hedge<S> {
    inner: S,
    hedging: Option<Arc<Hedging>>,
}

impl<S, R, T> Service<Attempt<R>> for Hedge<S>
where
    S: Service<Attempt<R>, Response = Tried<T>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    R: Replay,
    T: Answered,
{
    type Response = Tried<T>;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<Result<Tried<T>, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, attempt: Attempt<R>) -> Self::Future {
        match &self.hedging {
            Some(h) if h.max > 0 && attempt.req.idempotent() => {
                let h = Arc::clone(h);
                let inner = self.inner.clone();
                Either::Right(Box::pin(hedged(h, inner, attempt)))
            }
            _ => Either::Left(self.inner.call(attempt)),
        }
    }
}

/// Run `attempt`, hedging it as `h` says.
async fn hedged<S, R, T>(
    h: Arc<Hedging>,
    inner: S,
    attempt: Attempt<R>,
) -> Result<Tried<T>, Infallible>
where
    S: Service<Attempt<R>, Response = Tried<T>, Error = Infallible> + Clone,
    R: Replay,
    T: Answered,
{
    // A call counts once: the retry service's later attempts come with an endpoint to avoid.
    if attempt.avoid.is_none() {
        h.budget.deposit();
    }
    let delay = h.delay();
    let picked = Arc::new(AtomicU64::new(NONE_PICKED));
    let mut running = FuturesUnordered::new();
    let Attempt {
        req,
        avoid: first_avoid,
        kind: first_kind,
        ..
    } = attempt;
    // Owns what it sends from (a closure borrowing them would need them `Sync`).
    let send = {
        let picked = Arc::clone(&picked);
        move |avoid, kind| {
            inner.clone().oneshot(Attempt {
                req: req.clone(),
                avoid,
                picked: Some(Arc::clone(&picked)),
                kind,
            })
        }
    };
    running.push(send(first_avoid, first_kind));
    let mut hedges = 0u32;
    let mut earlier = Vec::new();
    let timer = tokio::time::sleep(delay);
    let mut timer = std::pin::pin!(timer);
    let mut armed = true;
    loop {
        tokio::select! {
            biased;
            Some(done) = running.next() => {
                let Ok(mut tried) = done;
                if tried.is_good() {
                    h.record(tried.took);
                } else if !running.is_empty() {
                    // Another attempt may still answer.
                    earlier.append(&mut tried.earlier);
                    earlier.push(tried.record());
                    continue;
                }
                if !earlier.is_empty() {
                    earlier.append(&mut tried.earlier);
                    tried.earlier = earlier;
                }
                // Dropping `running` cancels the losers.
                return Ok(tried);
            }
            () = &mut timer, if armed => {
                if hedges < h.max && h.budget.try_withdraw() {
                    hedges += 1;
                    let last = picked.load(Ordering::Relaxed);
                    let avoid = (last != NONE_PICKED)
                        .then_some(EndpointId::from_raw(last))
                        .or(first_avoid);
                    running.push(send(avoid, AttemptKind::Hedge));
                    timer.as_mut().reset(tokio::time::Instant::now() + delay);
                    armed = hedges < h.max;
                } else {
                    armed = false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
