//! The eager DAG executor: every call starts the instant the calls it reads from are done.
//!
//! Scheduling is by counting. Each request owns a vector of result slots and a vector of
//! remaining-dependency counters copied from the plan; when a call finishes, its dependents'
//! counters drop and those reaching zero start at once, into one `FuturesUnordered`. Nothing
//! waits for a whole level, so a request costs its plan's critical path. Dropping the executor's
//! future (client gone, deadline passed, a required call failed) drops every call in flight,
//! which closes their upstream connections: the upstreams see the cancellation.

use crate::cache::CacheOutcome;
use crate::error::{CallError, CallErrorKind};
use crate::render::{RequestCtx, Scope};
use crate::upstream::{Budget, Read, Upstream};
use bytes::Bytes;
use futures::future::Either;
use futures::stream::{FuturesUnordered, StreamExt};
use http::uri::PathAndQuery;
use http::Request;
use manifold_cache::{Cache, CachePolicy, CachedResponse};
use manifold_config::{Call, Plan};
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

pub(crate) use crate::upstream::DEADLINE_HEADER;
pub(crate) use request::build_request;
pub(crate) use request::copy_for_attempt;
use request::{build_request_in, Scratch};

mod answer;
mod request;

use answer::{parse_answer, response_status};

/// What the executor hands back to the composer.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Each call's result (`None` for calls that never ran, `Some(Null)` for failed optional
    /// calls).
    pub(crate) results: Vec<Option<Value>>,
    /// The optional calls that failed, as `Manifold-Partial` items (the name, then why:
    /// [`crate::respond::partial_item`]).
    pub(crate) partial: Vec<String>,
    /// Each cached call's outcome, by call index (`None` for uncached calls and cached calls
    /// that failed or never ran).
    pub(crate) cache: Vec<Option<CacheOutcome>>,
    /// The shares of `server.max_parsed_bytes` the results hold: given back when the outcome
    /// is dropped, after the answer is rendered from the results.
    _parsed: Vec<OwnedSemaphorePermit>,
}

/// What the executor runs calls with, shared by every request.
#[derive(Clone, Copy)]
pub(crate) struct Env<'a> {
    /// The route's name (`[routes.NAME]`): the scope of a client's `Idempotency-Key`.
    pub(crate) route: &'a str,
    /// `server.error_detail`: what `Manifold-Partial` tells of a failed optional call.
    pub(crate) error_detail: manifold_config::ErrorDetail,
    /// One stack per upstream, by index.
    pub(crate) clients: &'a [Arc<Upstream>],
    /// `server.max_response_bytes`.
    pub(crate) max_response_bytes: u64,
    /// The gateway's cache.
    pub(crate) cache: &'a Cache,
    /// This plan's calls' cache policies, by call index (empty when none is cached).
    pub(crate) policies: &'a [Option<Arc<CachePolicy>>],
    /// The durable queue, when some route has `mode = "async"` calls.
    pub(crate) queue: Option<&'a Arc<dyn manifold_queue::Queue>>,
    /// How clients follow offloaded calls (`status_url`, `status_requires`).
    pub(crate) follow: &'a crate::status::Follow,
    /// The request's trace context (none when the route is not recorded).
    pub(crate) trace: Option<&'a crate::telemetry::TraceCtx>,
    /// The route's calls' metric handles, by call index (empty when not recorded).
    pub(crate) calls: &'a [Arc<crate::telemetry::CallTele>],
    /// `server.max_parsed_bytes`: what the parsed answers of all requests' calls may take,
    /// with the parsed request bodies.
    pub(crate) parse_budget: &'a Arc<crate::limit::ParseBudget>,
}

/// A call's result: its answer parsed, and the share of the parse budget that holds while the
/// value lives (none for a small answer, a receipt or a failed optional call's `null`).
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) value: Value,
    pub(crate) share: Option<OwnedSemaphorePermit>,
}

impl From<Value> for Parsed {
    fn from(value: Value) -> Parsed {
        Parsed { value, share: None }
    }
}

/// A required call failed, or the deadline passed: what the client is told.
#[derive(Debug)]
pub(crate) struct Failure {
    /// The call(s) concerned.
    pub(crate) calls: Vec<String>,
    /// Why.
    pub(crate) error: CallError,
    /// The cached calls' outcomes so far, as in [`Outcome::cache`]: a failed request still
    /// says which of its calls the cache answered (`Manifold-Cache`).
    pub(crate) cache: Vec<Option<CacheOutcome>>,
}

type CallOutput = (usize, Result<Parsed, CallError>, Option<CacheOutcome>);
pub(crate) type CallFuture = Pin<Box<dyn Future<Output = CallOutput> + Send>>;

/// A call in flight: a plain call's future as it is (`Right`), anything else boxed (`Left`:
/// cached and queued calls, and calls that finished without being sent). The plain call is
/// nearly every call; `FuturesUnordered` already puts each future in an allocation of its
/// own, so boxing it first would be a second allocation, and a copy, per call.
type Launched<F> = Either<CallFuture, F>;

/// Run `plan` for one request.
///
/// A call whose template reads a call that failed (an optional one: a required failure ends the
/// request) is not sent; it fails as "input unavailable", which fails the request or, for an
/// optional call, makes its result `null` too. `after` is ordering only: a call that merely
/// comes after a failed optional call still runs. At the deadline, if only optional calls are
/// unfinished, they are cut off and the answer is partial; otherwise 504. With
/// `enqueue = "on_success"`, async and publish calls are rendered and held, and written
/// ([`crate::queued::commit`]) only once nothing required is left to fail.
pub(crate) async fn execute(
    plan: &Plan,
    env: Env<'_>,
    req: &RequestCtx,
    deadline: Option<Instant>,
) -> Result<Outcome, Failure> {
    let n = plan.calls.len();
    // A call starts the moment its count reaches zero (roots at once), so `remaining[i] == 0`
    // also says whether call `i` was started.
    let mut remaining = plan.indegrees();
    let mut results: Vec<Option<Value>> = vec![None; n];
    // Why each failed optional call failed: what its readers are told. Allocated at the first
    // failure, like `cache_outcomes`: most requests have none.
    let mut errors: Vec<Option<CallError>> = Vec::new();
    let mut partial = Vec::new();
    let mut cache_outcomes: Vec<Option<CacheOutcome>> = Vec::new();
    let mut parsed = Vec::new();
    let mut own = Own::new();
    let mut inflight = FuturesUnordered::new();

    for &i in &plan.roots {
        let ready = Ready {
            results: &results,
            errors: &errors,
        };
        inflight.push(launch(i, plan, env, req, ready, deadline, &mut own));
    }

    // One timer for the route's deadline, armed once: a `timeout_at` per loop turn would
    // register and cancel a timer every time a call finishes.
    let expiry = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    let mut expiry = std::pin::pin!(expiry);
    loop {
        let next = tokio::select! {
            // Prefer a finished call over the deadline when both are ready.
            biased;
            next = inflight.next() => Ok(next),
            () = &mut expiry => Err(()),
        };
        let next = match next {
            Ok(next) => next,
            Err(()) => {
                let unfinished: Vec<usize> = (0..n).filter(|&i| results[i].is_none()).collect();
                if unfinished.iter().any(|&i| !plan.calls[i].optional) {
                    // The calls cut off while running, then the required ones still waiting.
                    let outstanding = unfinished
                        .iter()
                        .filter(|&&i| remaining[i] == 0)
                        .chain(
                            unfinished
                                .iter()
                                .filter(|&&i| remaining[i] != 0 && !plan.calls[i].optional),
                        )
                        .map(|&i| plan.calls[i].name.clone())
                        .collect();
                    return Err(Failure {
                        calls: outstanding,
                        error: CallError::new(
                            CallErrorKind::Deadline,
                            "the route's deadline passed before these calls finished",
                        ),
                        cache: cache_outcomes,
                    });
                }
                // Only optional calls are left: cut them off (their upstreams see the
                // connection close) and answer without them.
                inflight.clear();
                // A task is written only for a call that finished (was rendered).
                own.held.retain(|(i, _)| results[*i].is_some());
                for i in unfinished {
                    tracing::debug!(call = %plan.calls[i].name, "optional call cut off by the deadline");
                    results[i] = Some(Value::Null);
                    let mut item =
                        crate::respond::partial_item(&plan.calls[i].name, None, env.error_detail);
                    item.push_str(";kind=deadline");
                    partial.push(item);
                }
                break;
            }
        };
        let Some((i, result, cached)) = next else {
            break;
        };
        if let Some(o) = cached {
            if cache_outcomes.is_empty() {
                cache_outcomes = vec![None; n];
            }
            cache_outcomes[i] = Some(o);
        }
        match result {
            Ok(p) => {
                results[i] = Some(p.value);
                parsed.extend(p.share);
            }
            Err(e) if plan.calls[i].optional => {
                tracing::debug!(call = %plan.calls[i].name, error = %e, "optional call failed");
                results[i] = Some(Value::Null);
                if errors.is_empty() {
                    errors = vec![None; n];
                }
                partial.push(crate::respond::partial_item(
                    &plan.calls[i].name,
                    Some(&e),
                    env.error_detail,
                ));
                errors[i] = Some(e);
            }
            Err(error) => {
                // A call not sent for want of an input names that input too.
                let mut calls = vec![plan.calls[i].name.clone()];
                calls.extend(failed_reads(plan, i, &errors).map(|r| plan.calls[r].name.clone()));
                return Err(Failure {
                    calls,
                    error,
                    cache: cache_outcomes,
                });
            }
        }
        for &d in &plan.dependents[i] {
            remaining[d] -= 1;
            if remaining[d] == 0 {
                let ready = Ready {
                    results: &results,
                    errors: &errors,
                };
                inflight.push(launch(d, plan, env, req, ready, deadline, &mut own));
            }
        }
    }
    drop(inflight);
    if !own.held.is_empty() {
        match crate::queued::commit(env.queue, plan, own.held).await {
            Ok(failed) => {
                for (i, e) in failed {
                    tracing::debug!(call = %plan.calls[i].name, error = %e, "optional task not written");
                    results[i] = Some(Value::Null);
                    partial.push(crate::respond::partial_item(
                        &plan.calls[i].name,
                        Some(&e),
                        env.error_detail,
                    ));
                }
            }
            Err((i, error)) => {
                return Err(Failure {
                    calls: vec![plan.calls[i].name.clone()],
                    error,
                    cache: cache_outcomes,
                })
            }
        }
    }
    Ok(Outcome {
        results,
        partial,
        cache: cache_outcomes,
        _parsed: parsed,
    })
}

/// What launching calls leaves with the request: the tasks held until the commit
/// (`enqueue = "on_success"`), and the buffers its calls are rendered with.
struct Own {
    held: Vec<(usize, manifold_queue::Task)>,
    scratch: Scratch,
}

impl Own {
    fn new() -> Own {
        Own {
            held: Vec::new(),
            scratch: Scratch::new(),
        }
    }
}

/// What the calls finished so far left: results, and the errors of failed optional calls.
#[derive(Clone, Copy)]
struct Ready<'a> {
    results: &'a [Option<Value>],
    errors: &'a [Option<CallError>],
}

/// The calls that call `i` reads and that failed (`after` does not count: ordering only).
fn failed_reads<'a>(
    plan: &'a Plan,
    i: usize,
    errors: &'a [Option<CallError>],
) -> impl Iterator<Item = usize> + 'a {
    plan.calls[i]
        .reads
        .iter()
        .copied()
        .filter(|&r| errors.get(r).is_some_and(Option::is_some))
}

/// Start call `i`, whose dependencies are all done: not at all when an input it reads failed;
/// rendered and held when its route writes tasks on success; otherwise sent (or written) now.
fn launch<'e>(
    i: usize,
    plan: &Plan,
    env: Env<'e>,
    req: &RequestCtx,
    ready: Ready<'_>,
    deadline: Option<Instant>,
    own: &mut Own,
) -> Launched<impl Future<Output = CallOutput> + Send + 'e> {
    let call = &plan.calls[i];
    let failed: Vec<(usize, &CallError)> = failed_reads(plan, i, ready.errors)
        .filter_map(|r| Some((r, ready.errors.get(r)?.as_ref()?)))
        .collect();
    if !failed.is_empty() {
        let causes: Vec<String> = failed
            .iter()
            .map(|&(r, why)| format!("`{}` ({why})", plan.calls[r].name))
            .collect();
        // An input cut off by the route's deadline (its own timer can fire just before the
        // route's) makes this call late too: 504 as if the route's timer had fired first.
        let late = failed
            .iter()
            .any(|(_, e)| e.kind == CallErrorKind::Deadline);
        let kind = if late {
            CallErrorKind::Deadline
        } else {
            CallErrorKind::InputUnavailable
        };
        let e = CallError::new(
            kind,
            format!(
                "call `{}` was not sent: input {} unavailable",
                call.name,
                causes.join(", ")
            ),
        );
        return Either::Left(Box::pin(std::future::ready((i, Err(e), None))));
    }
    let scope = Scope {
        req,
        results: ready.results,
    };
    if call.mode != manifold_config::Mode::Sync
        && plan.enqueue == manifold_config::Enqueue::OnSuccess
    {
        let result = crate::queued::stage(call, env, scope).map(|task| {
            let receipt = crate::offload::receipt(&task, env.follow);
            own.held.push((i, task));
            Parsed::from(receipt)
        });
        return Either::Left(Box::pin(std::future::ready((i, result, None))));
    }
    start_call(i, call, env, scope, deadline, &mut own.scratch)
}

/// Render call `i`'s request now (its inputs are ready) and return the future that sends it.
fn start_call<'e>(
    i: usize,
    call: &Call,
    env: Env<'e>,
    scope: Scope<'_>,
    deadline: Option<Instant>,
    scratch: &mut Scratch,
) -> Launched<impl Future<Output = CallOutput> + Send + 'e> {
    if call.mode != manifold_config::Mode::Sync {
        return Either::Left(crate::queued::start_eager(i, call, env, scope));
    }
    let upstream = Arc::clone(&env.clients[call.upstream]);
    let budget = Budget {
        deadline,
        timeout: call.timeout,
        announce: true,
        idempotent: Some(call.idempotent),
        connect_only: false,
    };
    if let Some(policy) = env.policies.get(i).and_then(Option::as_ref) {
        return Either::Left(start_cached_call(
            i, call, upstream, policy, env, scope, budget,
        ));
    }
    let tele = env.calls.get(i).cloned();
    let request =
        build_request_in(call, scope, scratch).map(|r| traced(r, env, tele.as_ref(), false));
    let read = Read::All {
        max: env.max_response_bytes,
    };
    let optional = call.optional;
    // Borrowed, not cloned: the call's future lives no longer than the request's `env`.
    let budget_for_parsing: &crate::limit::ParseBudget = env.parse_budget;
    Either::Right(async move {
        let started = Instant::now();
        let result = match request {
            Ok((r, trace)) => upstream
                .fetch_traced(r, budget, read, trace)
                .await
                .and_then(|a| {
                    parse_answer(&upstream.name, a.status, &a.body, budget_for_parsing)
                        .map_err(|e| e.with_trail(a.trail))
                }),
            Err(e) => Err(e),
        };
        crate::telemetry::observe_call(
            tele.as_ref(),
            started,
            result.as_ref().err(),
            optional,
            None,
        );
        (i, result, None)
    })
}

/// Give an upstream request its call's trace context (see [`crate::telemetry`]): the attempts
/// record their spans into this request's trace. Without tracing, the context is only the
/// `X-Request-Id`, given to the request here once (its retries and hedges copy its headers)
/// rather than by each attempt from a `CallTrace`.
///
/// With tracing, the call's `CallTrace` is returned beside the request, for
/// [`Upstream::fetch_traced`](crate::upstream::Upstream::fetch_traced) to hand to the
/// attempts: put in the request's extensions, it cost each call the extension map's
/// allocation, an insert, a remove and the map's drop (~1,500 instructions a call).
fn traced(
    mut request: Request<Bytes>,
    env: Env<'_>,
    tele: Option<&Arc<crate::telemetry::CallTele>>,
    cache_fill: bool,
) -> (Request<Bytes>, Option<crate::telemetry::CallTrace>) {
    if let (Some(ctx), Some(tele)) = (env.trace, tele) {
        if ctx.tracing() {
            // The span copies the path (`CallTrace::new`) rather than sharing the request's:
            // that path is split from the request's scratch buffer (`exec/request.rs`), which
            // also holds every call's rendered headers and bodies, so a span kept by the trace
            // store or waiting in the export queue would keep all of it alive, beyond what the
            // store's byte bound counts.
            let call = crate::telemetry::CallTrace::for_built(
                ctx.clone(),
                Arc::clone(&tele.name),
                cache_fill,
                tele.sets_tracestate,
                tele.sets_request_id,
            );
            return (request, Some(call));
        }
        // A call whose config sets its own `X-Request-Id` keeps it (see `CallTele`).
        if !tele.sets_request_id {
            ctx.apply(None, request.headers_mut());
        }
    }
    (request, None)
}

/// A cached call: render its key, then let the cache answer or run one shared fetch.
///
/// The fetch may serve other requests (coalesced waiters, a background refresh) and outlive
/// this one, so it owns everything it needs, is bounded by the call's own timeout (not this
/// request's deadline), and tells the upstream that budget. This request waits for the cache
/// only until its own deadline; giving up never cancels the shared fetch.
fn start_cached_call(
    i: usize,
    call: &Call,
    upstream: Arc<Upstream>,
    policy: &Arc<CachePolicy>,
    env: Env<'_>,
    scope: Scope<'_>,
    budget: Budget,
) -> CallFuture {
    let started = Instant::now();
    // This request waits until its own bound; the shared fetch has the call's timeout only.
    let wait = upstream.bound(started, &budget);
    let fetch_budget = Budget {
        deadline: None,
        ..budget
    };
    let tele = env.calls.get(i).cloned();
    let request = match build_request(call, scope) {
        // The fill may be shared and outlive this request: the call's context rides in the
        // request's extensions, where `Upstream::fetch` finds it.
        Ok(r) => match traced(r, env, tele.as_ref(), true) {
            (mut r, Some(trace)) => {
                r.extensions_mut().insert(trace);
                r
            }
            (r, None) => r,
        },
        Err(e) => return Box::pin(std::future::ready((i, Err(e), None))),
    };
    let local = env.trace.cloned();
    let optional = call.optional;
    let method = call.method.clone();
    let key = match call.cache.as_ref() {
        Some(spec) => {
            let pq = request
                .uri()
                .path_and_query()
                .map_or("/", PathAndQuery::as_str);
            crate::cache_key::call_key(call, spec, &upstream.name, &request, pq, scope)
        }
        None => String::new(),
    };
    let cache = env.cache.clone();
    let policy = Arc::clone(policy);
    let budget_for_parsing = Arc::clone(env.parse_budget);
    let read = Read::All {
        max: env.max_response_bytes,
    };
    Box::pin(async move {
        let shared = Arc::clone(&upstream);
        let fetch = move || async move {
            let a = shared.fetch(request, fetch_budget, read).await?;
            Ok::<_, CallError>(CachedResponse::from_parts(a.status, &a.headers, a.body))
        };
        // A span for the wait on the cache, when something other than this request's own
        // fill answered (the fill's attempts are spans of their own, marked `miss`).
        let waiting = match (&local, &tele) {
            (Some(ctx), Some(t)) => ctx.start_local(&t.name, &upstream.name, &method, false),
            _ => None,
        };
        let answer =
            tokio::time::timeout_at(wait.until, cache.get_or_fetch(key, &policy, fetch)).await;
        let out = match answer {
            Ok(Ok((response, outcome))) => (
                i,
                parse_answer(
                    &upstream.name,
                    response.status,
                    &response.body,
                    &budget_for_parsing,
                ),
                Some(outcome),
            ),
            Ok(Err(e)) => (i, Err(e), None),
            Err(_) => (
                i,
                Err(crate::upstream::error::no_answer(
                    &upstream.name,
                    wait.by_deadline,
                    wait.within,
                )),
                None,
            ),
        };
        let tier = out.2.and_then(crate::telemetry::cache_outcome);
        if let Some(span) = waiting {
            match tier {
                Some(t) if t != manifold_telemetry::CacheOutcome::Miss => {
                    span.end(manifold_telemetry::CallOutcome {
                        status: Some(response_status(&out.1)),
                        cache: Some(t),
                        ..manifold_telemetry::CallOutcome::default()
                    });
                }
                // A miss is told by the fill's own attempts; a failure by them too.
                _ => span.discard(),
            }
        }
        crate::telemetry::observe_call(
            tele.as_ref(),
            started,
            out.1.as_ref().err(),
            optional,
            out.2,
        );
        out
    })
}
