//! Retries under a budget: `retry = { attempts, budget, min_per_second, backoff, on }`.
//!
//! An outcome named in `on` (`connect`, `reset`, `timeout`, a 5xx status) is tried again on
//! another endpoint, after an exponential, fully jittered backoff that honours `Retry-After`,
//! when all of these hold (else the outcome is the answer, and the trail says why):
//! - the request is idempotent ([`Replay::idempotent`]), or nothing was sent (`connect`);
//! - fewer than `attempts` were made, and the request can still be sent (a streamed body that
//!   was read cannot);
//! - the wait ends before the request's deadline (each attempt is then bounded by the smaller
//!   of the timeout and what is left, in the attempt service), and `Retry-After` is not longer
//!   than the call's timeout;
//! - the upstream's retry [`budget`] has room.
//!
//! A deadline miss is never retried: no time is left. Tower's own `Retry` and `TpsBudget` are
//! not used (see CRATES.md: an open bug lets a 0.6 ratio through at 100%).

pub(crate) mod backoff;
pub(crate) mod budget;
pub(crate) mod replay;

use super::attempt::{Answered, Attempt, AttemptKind, BoxFuture, Tried};
use super::error::{Stop, Trail};
use super::request::Replay;
use crate::error::{CallError, CallErrorKind};
use backoff::Backoff;
use budget::RetryBudget;
use manifold_config::policy::{RetryOn, RetryPolicy, BUDGET_WINDOW};
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

/// A retry needs at least this much time left after its backoff: timers fire on millisecond
/// ticks (a wait may end up to 1 ms late), and an attempt with less is lost before it starts.
const MIN_LEFT: Duration = Duration::from_millis(2);

/// An upstream's retry policy, with its budget.
#[derive(Debug)]
pub(crate) struct Retrying {
    upstream: String,
    /// The upstream's timeout, for a call without its own: the longest `Retry-After` honoured.
    timeout: Duration,
    attempts: u32,
    on: On,
    backoff: Backoff,
    budget: RetryBudget,
}

/// The outcomes `retry.on` names.
#[derive(Debug, Default)]
struct On {
    connect: bool,
    reset: bool,
    timeout: bool,
    statuses: Vec<u16>,
}

impl On {
    fn new(list: &[RetryOn]) -> Self {
        let mut on = On::default();
        for o in list {
            match o {
                RetryOn::Connect => on.connect = true,
                RetryOn::Reset => on.reset = true,
                RetryOn::Timeout => on.timeout = true,
                RetryOn::Status(s) => on.statuses.push(*s),
            }
        }
        on
    }

    /// Whether `tried` ended in a way the policy retries, and if so whether nothing was sent
    /// (`Some(true)`: a failed connect, which any method may retry).
    fn covers<T: Answered>(&self, tried: &Tried<T>) -> Option<bool> {
        match &tried.result {
            Err(e) => match e.kind {
                CallErrorKind::Connect => self.connect.then_some(true),
                CallErrorKind::Io => self.reset.then_some(false),
                CallErrorKind::Timeout => self.timeout.then_some(false),
                _ => None,
            },
            Ok(a) => self
                .statuses
                .contains(&a.status().as_u16())
                .then_some(false),
        }
    }
}

impl Retrying {
    pub(crate) fn new(upstream: &str, timeout: Duration, policy: &RetryPolicy) -> Self {
        Retrying {
            upstream: upstream.to_owned(),
            timeout,
            attempts: policy.attempts.max(1),
            on: On::new(&policy.on),
            backoff: Backoff::new(policy.backoff),
            budget: RetryBudget::new(policy.budget, policy.min_per_second, BUDGET_WINDOW),
        }
    }
}

/// Adds retries to an attempt service.
#[derive(Debug, Clone)]
pub(crate) struct RetryLayer {
    retrying: Arc<Retrying>,
}

impl RetryLayer {
    pub(crate) fn new(retrying: Arc<Retrying>) -> Self {
        RetryLayer { retrying }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            retrying: Arc::clone(&self.retrying),
        }
    }
}

/// The retry service over an attempt service `S`: takes a request, answers with the final
/// outcome (a status the caller may still treat as a failure carries the trail with it).
#[derive(Debug, Clone)]
pub(crate) struct Retry<S> {
    inner: S,
    retrying: Arc<Retrying>,
}

impl<S> Retry<S> {
    /// The service it retries.
    pub(crate) fn inner(&self) -> &S {
        &self.inner
    }

    /// Whether a request that was sent may be tried again: the policy retries an outcome
    /// other than a failed connect (a reset, a timeout, a status), and allows a second attempt.
    pub(crate) fn retries_what_was_sent(&self) -> bool {
        let p = &self.retrying;
        p.attempts > 1 && (p.on.reset || p.on.timeout || !p.on.statuses.is_empty())
    }

    /// Run `req` under the policy: what the service's `call` does, as a plain future the
    /// caller awaits in place. [`super::Upstream`] goes through here: the service's boxed
    /// future (and its own clone of the policy) cost an allocation and a copy of the whole
    /// retry state machine on every call, for a type nothing needs to name.
    pub(crate) async fn run<R, T>(&self, req: R) -> Result<T, CallError>
    where
        S: Service<Attempt<R>, Response = Tried<T>, Error = Infallible> + Clone,
        R: Replay,
        T: Answered,
    {
        run(&self.retrying, self.inner.clone(), req).await
    }
}

impl<S, R, T> Service<R> for Retry<S>
where
    S: Service<Attempt<R>, Response = Tried<T>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    R: Replay,
    T: Answered,
{
    type Response = T;
    type Error = CallError;
    type Future = BoxFuture<Result<T, CallError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        // Readiness is checked per attempt, below.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: R) -> Self::Future {
        let retrying = Arc::clone(&self.retrying);
        let inner = self.inner.clone();
        Box::pin(async move { run(&retrying, inner, req).await })
    }
}

async fn run<S, R, T>(policy: &Retrying, mut inner: S, req: R) -> Result<T, CallError>
where
    S: Service<Attempt<R>, Response = Tried<T>, Error = Infallible> + Clone,
    R: Replay,
    T: Answered,
{
    policy.budget.deposit();
    let idempotent = req.idempotent();
    let deadline = req.budget().deadline;
    let longest_wait = req.budget().timeout.unwrap_or(policy.timeout);
    let mut trail: Option<Box<Trail>> = None;
    let mut req = Some(req);
    let mut avoid = None;
    let mut n = 1u32;
    loop {
        // The last possible attempt gets the request itself (its body need not be copied).
        let this = match &req {
            Some(r) if n < policy.attempts => r.clone(),
            _ => match req.take() {
                Some(r) => r,
                // Unreachable: the loop ends at the last attempt.
                None => {
                    return Err(CallError::new(
                        CallErrorKind::Io,
                        format!("upstream `{}`: no request left to send", policy.upstream),
                    ))
                }
            },
        };
        // The attempt and hedge services are always ready (see their `poll_ready`); `ready`
        // keeps the contract without cloning the service for each attempt as `oneshot` would.
        let Ok(ready) = inner.ready().await;
        let Ok(mut tried) = ready
            .call(Attempt {
                req: this,
                avoid,
                picked: None,
                kind: if n == 1 {
                    AttemptKind::First
                } else {
                    AttemptKind::Retry
                },
            })
            .await;
        let plain_success = trail.is_none()
            && tried.earlier.is_empty()
            && matches!(&tried.result, Ok(a) if a.status().is_success());
        if plain_success {
            return tried.result;
        }
        let t = trail.get_or_insert_with(|| {
            Box::new(Trail {
                upstream: policy.upstream.clone(),
                ..Trail::default()
            })
        });
        for r in tried.earlier.drain(..) {
            t.push(r);
        }
        t.push(tried.record());
        let Some(nothing_sent) = policy.on.covers(&tried) else {
            return finish(tried.result, trail);
        };
        let retry_after = match &tried.result {
            Ok(a) => backoff::retry_after(a.status(), a.headers()),
            Err(_) => None,
        };
        let delay = policy.backoff.delay(n, retry_after);
        let stop = if !idempotent && !nothing_sent {
            Some(Stop::NotIdempotent)
        } else if n >= policy.attempts {
            Some(Stop::Attempts)
        } else if !req.as_ref().is_some_and(Replay::can_resend) {
            Some(Stop::BodySent)
        } else if retry_after.is_some_and(|r| r > longest_wait) {
            Some(Stop::RetryAfter)
        } else if deadline.is_some_and(|d| Instant::now() + delay + MIN_LEFT >= d) {
            Some(Stop::Deadline)
        } else if !policy.budget.try_withdraw() {
            Some(Stop::BudgetExhausted)
        } else {
            None
        };
        if let Some(stop) = stop {
            t.stopped = Some(stop);
            return finish(tried.result, trail);
        }
        avoid = tried.endpoint;
        // The answer being retried is dropped now (its body was read whole, or is closed).
        drop(tried);
        tokio::time::sleep(delay).await;
        n += 1;
    }
}

/// The final outcome, with the trail attached.
fn finish<T: Answered>(
    result: Result<T, CallError>,
    trail: Option<Box<Trail>>,
) -> Result<T, CallError> {
    match result {
        Ok(mut a) => {
            if let Some(t) = trail {
                a.attach(t);
            }
            Ok(a)
        }
        Err(e) => Err(e.with_trail(trail)),
    }
}

#[cfg(test)]
mod tests;
