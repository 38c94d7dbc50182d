//! An upstream's endpoints and the choice of one per attempt.
//!
//! The stack asks [`Endpoints::pick`] for a [`Lease`] on one endpoint before each attempt and
//! hands the lease back with the attempt's [`Outcome`] ([`Lease::finish`]; dropping it counts as
//! cancelled). Everything that needs per-endpoint state lives behind these two calls — the
//! balancer's in-flight counts and latency estimates ([`super::balance`]), circuit breaking and
//! ejection ([`super::breaker`]), re-resolved addresses ([`super::resolve`]) — so the stack's
//! retry and hedge loop does not change when they do.
//!
//! How an attempt's end counts (see [`judge`]): an answer below 500 is a success and its time
//! an RTT sample, but for 429, which the balancer counts as a failure's penalty (and the
//! breaker not at all). A failure that is the endpoint's fault (connect, reset, its own timeout, a
//! 5xx) counts against its breaker and, for the balancer, as an answer that took the upstream's
//! `timeout` (or longer, if it did): a refused connection fails in microseconds, and counting
//! that as a fast answer would send a dead endpoint *more* traffic. The penalty decays like any
//! peak (within a few `EWMA_DECAY`s), so the endpoint is tried again. A cancelled attempt (a
//! hedge's loser) or one cut by the route's deadline says only that its RTT is at least what
//! it ran: it raises the estimate when above it, and counts for nothing else. One that failed
//! while the proxied request's body was waiting on its client says nothing at all.

use super::balance::{Balancer, Load};
use super::breaker::{self, Breaker, Change, Gate, Verdict};
pub(super) use super::resolve::Target;
use super::resolve::{self, Key};
use crate::error::{CallError, CallErrorKind};
use http::StatusCode;
use manifold_config::policy::BreakerPolicy;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Names one endpoint across picks (and across re-resolutions, while its address stays): a
/// retry or hedge passes the last one back to prefer another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct EndpointId(u64);

impl EndpointId {
    /// As a number, for an atomic cell a hedge reads while the attempt that wrote it runs.
    pub(crate) fn to_raw(self) -> u64 {
        self.0
    }

    /// Back from [`EndpointId::to_raw`].
    pub(crate) fn from_raw(raw: u64) -> Self {
        EndpointId(raw)
    }
}

/// How an attempt on a leased endpoint ended, as the balancer and breaker count it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Outcome<'a> {
    /// The endpoint answered with this status (for a streamed proxy answer: its head).
    Answered(StatusCode),
    /// The attempt failed this way.
    Failed(&'a CallErrorKind),
    /// The attempt was abandoned before it ended (a hedge's loser, a cancelled request): it
    /// says nothing about the endpoint.
    Cancelled,
    /// The attempt failed while the request's body was still waiting on the client: it says
    /// nothing about the endpoint, not even a lower bound of its RTT.
    ClientStalled,
}

/// One endpoint: its address and what the balancer and breaker know of it.
#[derive(Debug)]
struct Endpoint {
    id: EndpointId,
    target: Target,
    load: Load,
    breaker: Option<Breaker>,
}

/// What the endpoints of an upstream share with their leases and the resolver task.
#[derive(Debug)]
struct Shared {
    upstream: String,
    balancer: Balancer,
    breaker: Option<BreakerPolicy>,
    /// A failed attempt counts for the balancer as an answer this slow (the upstream's timeout).
    penalty: Duration,
    /// The current endpoints. Read (an `Arc` clone under a read lock) once per pick; written
    /// only when a resolution changes the addresses.
    set: RwLock<Arc<[Arc<Endpoint>]>>,
    /// How many of `set` are ejected, as of the last change: zero lets picks skip the breakers.
    ejected: AtomicUsize,
    /// Serializes ejection decisions, so that two endpoints tripping at once cannot both pass
    /// the cap. Taken only when a breaker changes state.
    ejecting: Mutex<()>,
    next_id: AtomicU64,
    configured: Vec<manifold_config::Endpoint>,
    /// Endpoints a resolution dropped, with when: an address that comes back within
    /// [`RETIRED_FOR`] gets its state back (see [`Shared::replace`]). Oldest first.
    retired: Mutex<Vec<(Instant, Arc<Endpoint>)>>,
}

/// How long the state of an address a resolution dropped is kept for its return. A name whose
/// answer flaps between sets (round-robin DNS answering with a subset, a replica failing its
/// health check on and off) must not reset the breaker and the latency estimate of each
/// address at every round: an ejected replica would come back as new, closed and with the
/// fresh 30 ms estimate, every `resolve_every`.
const RETIRED_FOR: Duration = Duration::from_secs(300);
/// The most dropped endpoints remembered (the oldest go first).
const MAX_RETIRED: usize = 4 * super::resolve::MAX_ADDRESSES;

/// The endpoints of one upstream.
#[derive(Debug)]
pub(super) struct Endpoints {
    shared: Arc<Shared>,
    /// Dropped with the upstream: stops its resolver task at once.
    _resolver: Option<oneshot::Sender<()>>,
}

impl Endpoints {
    /// The endpoints as configured; when some are hostnames and a tokio runtime is running,
    /// a task resolves them now and every `resolve_every` while these endpoints live.
    pub(super) fn new(up: &manifold_config::Upstream) -> Endpoints {
        let now = Instant::now();
        let shared = Arc::new(Shared {
            upstream: up.name.clone(),
            balancer: Balancer::new(up.policies.balance),
            breaker: up.policies.circuit_breaker.clone(),
            penalty: up.timeout,
            set: RwLock::new(Arc::from(Vec::new())),
            ejected: AtomicUsize::new(0),
            ejecting: Mutex::new(()),
            next_id: AtomicU64::new(0),
            configured: up.endpoints.clone(),
            retired: Mutex::new(Vec::new()),
        });
        let initial: Vec<Arc<Endpoint>> = up
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, ep)| shared.endpoint(Target::configured(i, ep), now))
            .collect();
        *shared.write_set() = Arc::from(initial);
        let names = resolve::names(up);
        let resolver = match tokio::runtime::Handle::try_current() {
            Ok(_) if !names.is_empty() => {
                let (tx, rx) = oneshot::channel();
                resolve::spawn(
                    up.name.clone(),
                    names,
                    up.policies.resolve_every,
                    Arc::downgrade(&shared),
                    rx,
                );
                Some(tx)
            }
            _ => None,
        };
        Endpoints {
            shared,
            _resolver: resolver,
        }
    }

    /// A lease on the endpoint the next attempt goes to, preferring one other than `avoid` (the
    /// previous attempt's) where there is a choice. An ejected endpoint whose `open_for` has
    /// passed is taken first, as its one probe. Fails at once when no endpoint may take
    /// traffic: `breaker_open` when their breakers are all open.
    pub(super) fn pick(&self, avoid: Option<EndpointId>) -> Result<Lease, CallError> {
        self.shared.pick(Instant::now(), avoid)
    }

    /// Each current endpoint's shown name, breaker state (closed without a breaker) and P2C
    /// cost in seconds (the decayed RTT estimate × (in flight + 1)), for `/metrics`.
    pub(super) fn gauges(
        &self,
        now: Instant,
    ) -> Vec<(String, manifold_telemetry::metrics::BreakerState, f64)> {
        self.shared
            .snapshot()
            .iter()
            .map(|e| {
                let state = e
                    .breaker
                    .as_ref()
                    .map_or(manifold_telemetry::metrics::BreakerState::Closed, |b| {
                        b.metric_state()
                    });
                (e.target.shown.clone(), state, e.load.cost(now) / 1e9)
            })
            .collect()
    }

    /// The ids and shown names of the current endpoints (for tests and `check`).
    #[cfg(test)]
    pub(super) fn current(&self) -> Vec<(EndpointId, String)> {
        self.shared
            .snapshot()
            .iter()
            .map(|e| (e.id, e.target.shown.clone()))
            .collect()
    }

    #[cfg(test)]
    fn ejected(&self) -> usize {
        self.shared
            .snapshot()
            .iter()
            .filter(|e| e.breaker.as_ref().is_some_and(Breaker::is_ejected))
            .count()
    }
}

impl Shared {
    fn endpoint(&self, target: Target, now: Instant) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            id: EndpointId(self.next_id.fetch_add(1, Ordering::Relaxed)),
            target,
            load: Load::new(now),
            breaker: self.breaker.as_ref().map(|p| Breaker::new(p, now)),
        })
    }

    fn snapshot(&self) -> Arc<[Arc<Endpoint>]> {
        // A poisoned lock only means a panic while swapping an `Arc`: the value is whole.
        Arc::clone(
            &self
                .set
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn write_set(&self) -> std::sync::RwLockWriteGuard<'_, Arc<[Arc<Endpoint>]>> {
        self.set
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn pick(self: &Arc<Self>, now: Instant, avoid: Option<EndpointId>) -> Result<Lease, CallError> {
        let set = self.snapshot();
        if set.is_empty() {
            return Err(CallError::new(
                CallErrorKind::Connect,
                format!("upstream `{}` has no endpoints", self.upstream),
            ));
        }
        let avoid = avoid.and_then(|id| set.iter().position(|e| e.id == id));
        let chosen = self
            .choose(&set, now, avoid)
            .or_else(|| avoid.and_then(|_| self.choose(&set, now, None)));
        let Some((i, probe)) = chosen else {
            return Err(CallError::new(
                CallErrorKind::BreakerOpen,
                format!(
                    "upstream `{}`: all {} of its endpoints are ejected by the circuit breaker",
                    self.upstream,
                    set.len()
                ),
            ));
        };
        let endpoint = Arc::clone(&set[i]);
        endpoint.load.start();
        Ok(Lease {
            shared: Arc::clone(self),
            endpoint,
            started: now,
            probe,
            settled: false,
        })
    }

    /// The index of the endpoint to lease, and whether it is a probe; `exclude` is skipped.
    fn choose(
        &self,
        set: &[Arc<Endpoint>],
        now: Instant,
        exclude: Option<usize>,
    ) -> Option<(usize, bool)> {
        let any_ejected = self.ejected.load(Ordering::Relaxed) > 0;
        if any_ejected {
            let probe = set.iter().enumerate().find(|(i, e)| {
                Some(*i) != exclude && e.breaker.as_ref().is_some_and(|b| b.claim_probe(now))
            });
            if let Some((i, _)) = probe {
                return Some((i, true));
            }
        }
        let eligible = |i: usize| {
            Some(i) != exclude
                && (!any_ejected
                    || set[i]
                        .breaker
                        .as_ref()
                        .is_none_or(|b| b.gate(now) == Gate::Closed))
        };
        let cost = |i: usize| set[i].load.cost(now);
        self.balancer
            .pick(set.len(), eligible, cost)
            .map(|i| (i, false))
    }

    /// A breaker tripped: open it if the ejection cap allows.
    fn trip(&self, endpoint: &Endpoint, breaker: &Breaker, now: Instant) {
        let _serial = self
            .ejecting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let set = self.snapshot();
        // An endpoint a resolution has just removed is not opened.
        if !set.iter().any(|e| e.id == endpoint.id) {
            return;
        }
        let fraction = self.breaker.as_ref().map_or(0.0, |p| p.max_ejected);
        let out = count_ejected(&set);
        if out < breaker::max_ejected(fraction, set.len()) && breaker.open(now) {
            self.ejected.store(out + 1, Ordering::Relaxed);
            tracing::warn!(upstream = %self.upstream, endpoint = %endpoint.target.shown,
                "circuit breaker opened: the endpoint is ejected");
        }
    }

    /// A breaker closed (or the set changed): count again.
    fn recount(&self) {
        let _serial = self
            .ejecting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.ejected
            .store(count_ejected(&self.snapshot()), Ordering::Relaxed);
    }

    /// Replace the targets of the resolved configured endpoints, keeping the state of every
    /// address that stays, and giving back its state to one that returns within
    /// [`RETIRED_FOR`] — unless it is ejected and the set's ejection cap is already used up,
    /// then it comes back new (the cap says never more are out than that fraction).
    fn replace(&self, resolved: &[(usize, Vec<SocketAddr>)]) {
        let now = Instant::now();
        {
            let mut set = self.write_set();
            let mut retired = self
                .retired
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            retired.retain(|(at, _)| now.saturating_duration_since(*at) < RETIRED_FOR);
            let mut next: Vec<Arc<Endpoint>> = set
                .iter()
                .filter(|e| !resolved.iter().any(|(i, _)| *i == e.target.key.index))
                .cloned()
                .collect();
            let mut back: Vec<EndpointId> = Vec::new();
            for (index, addrs) in resolved {
                let Some(ep) = self.configured.get(*index) else {
                    continue;
                };
                for addr in addrs {
                    let key = Key {
                        index: *index,
                        addr: Some(*addr),
                    };
                    let kept = set.iter().find(|e| e.target.key == key).cloned();
                    let kept = kept.or_else(|| {
                        let at = retired.iter().position(|(_, e)| e.target.key == key)?;
                        let (_, e) = retired.remove(at);
                        back.push(e.id);
                        Some(e)
                    });
                    next.push(kept.unwrap_or_else(|| {
                        self.endpoint(Target::resolved(*index, ep, *addr), now)
                    }));
                }
            }
            self.within_cap(&mut next, &back, now);
            // Configured order, then address order: stable for round robin and for logs.
            next.sort_by_key(|e| e.target.key.index);
            if next.len() == set.len() && next.iter().zip(set.iter()).all(|(a, b)| a.id == b.id) {
                return;
            }
            for gone in set.iter().filter(|e| !next.iter().any(|n| n.id == e.id)) {
                retired.push((now, Arc::clone(gone)));
            }
            let over = retired.len().saturating_sub(MAX_RETIRED);
            retired.drain(..over);
            *set = Arc::from(next);
        }
        self.recount();
    }

    /// Endpoints that came `back` ejected beyond the set's ejection cap come back new.
    fn within_cap(&self, next: &mut [Arc<Endpoint>], back: &[EndpointId], now: Instant) {
        let fraction = self.breaker.as_ref().map_or(0.0, |p| p.max_ejected);
        let cap = breaker::max_ejected(fraction, next.len());
        let is_out = |e: &Endpoint| e.breaker.as_ref().is_some_and(Breaker::is_ejected);
        let mut out = next
            .iter()
            .filter(|e| is_out(e) && !back.contains(&e.id))
            .count();
        for e in next.iter_mut() {
            if !back.contains(&e.id) || !is_out(e) {
                continue;
            }
            if out < cap {
                out += 1;
            } else {
                let key = e.target.key;
                let Some(ep) = self.configured.get(key.index) else {
                    continue;
                };
                let target = match key.addr {
                    Some(addr) => Target::resolved(key.index, ep, addr),
                    None => Target::configured(key.index, ep),
                };
                *e = self.endpoint(target, now);
            }
        }
    }
}

impl resolve::Apply for Shared {
    fn apply(&self, resolved: &[(usize, Vec<SocketAddr>)]) {
        self.replace(resolved);
    }
}

fn count_ejected(set: &[Arc<Endpoint>]) -> usize {
    set.iter()
        .filter(|e| e.breaker.as_ref().is_some_and(Breaker::is_ejected))
        .count()
}

/// What the balancer learns from an attempt's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sample {
    /// An answer: its time is an RTT sample.
    Rtt,
    /// A failure of the endpoint: count the penalty (or the time, if longer).
    Penalty,
    /// Abandoned: its RTT is at least its time.
    AtLeast,
    /// Nothing (the client's input, the gateway's own failures).
    None,
}

/// How an outcome counts for the breaker and the balancer.
fn judge(outcome: Outcome<'_>) -> (Verdict, Sample) {
    match outcome {
        Outcome::Answered(s) if s.is_server_error() => (Verdict::Failure, Sample::Penalty),
        // "Too many requests": the endpoint is shedding, and its refusals are fast. As an RTT
        // they made it the cheapest endpoint, so P2C sent the overloaded replica *more*
        // traffic (peak EWMA's fast-failure trap, as with a fast 503). For the balancer it is
        // as slow as a failure; for the breaker neither (a replica protecting itself is not
        // broken, and ejecting it would push its load onto the others all at once).
        Outcome::Answered(StatusCode::TOO_MANY_REQUESTS) => (Verdict::Neutral, Sample::Penalty),
        Outcome::Answered(_) => (Verdict::Success, Sample::Rtt),
        Outcome::Cancelled => (Verdict::Neutral, Sample::AtLeast),
        Outcome::ClientStalled => (Verdict::Neutral, Sample::None),
        Outcome::Failed(kind) => match kind {
            CallErrorKind::Connect | CallErrorKind::Io | CallErrorKind::Timeout => {
                (Verdict::Failure, Sample::Penalty)
            }
            CallErrorKind::Status(s) if *s >= 500 => (Verdict::Failure, Sample::Penalty),
            CallErrorKind::Status(429) => (Verdict::Neutral, Sample::Penalty),
            // It answered: a status the caller refuses, or a body it cannot use.
            CallErrorKind::Status(_) | CallErrorKind::InvalidJson | CallErrorKind::TooLarge => {
                (Verdict::Success, Sample::Rtt)
            }
            CallErrorKind::Deadline => (Verdict::Neutral, Sample::AtLeast),
            _ => (Verdict::Neutral, Sample::None),
        },
    }
}

/// One attempt's hold on an endpoint, from the pick until [`Lease::finish`]. Dropped without
/// finishing counts as [`Outcome::Cancelled`]; either way its in-flight count is released.
#[derive(Debug)]
pub(super) struct Lease {
    shared: Arc<Shared>,
    endpoint: Arc<Endpoint>,
    started: Instant,
    /// This attempt is its endpoint's half-open probe.
    probe: bool,
    settled: bool,
}

impl Lease {
    #[allow(dead_code)] // retries and hedges avoid it (items 4-5)
    pub(super) fn id(&self) -> EndpointId {
        self.endpoint.id
    }

    pub(super) fn target(&self) -> &Target {
        &self.endpoint.target
    }

    /// The endpoint's `host:port` (and its address, once resolved), for errors and logs.
    #[allow(dead_code)] // named in errors once item 7 lands
    pub(super) fn endpoint(&self) -> &str {
        &self.endpoint.target.shown
    }

    /// When the attempt started.
    pub(super) fn started(&self) -> Instant {
        self.started
    }

    /// Report how the attempt ended, at `now` (the attempt's end, read once by its caller for
    /// everything it times).
    pub(super) fn finish(mut self, now: Instant, outcome: Outcome<'_>) {
        self.settle(now, outcome);
    }

    fn settle(&mut self, now: Instant, outcome: Outcome<'_>) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        let ep = &self.endpoint;
        ep.load.end();
        let (verdict, sample) = judge(outcome);
        let took = now.saturating_duration_since(self.started);
        match sample {
            Sample::Rtt => ep.load.observe(now, took),
            Sample::Penalty => ep.load.observe(now, took.max(self.shared.penalty)),
            Sample::AtLeast => ep.load.observe_at_least(now, took),
            Sample::None => {}
        }
        let Some(breaker) = &ep.breaker else { return };
        match breaker.record(now, self.probe, verdict) {
            Change::None => {}
            Change::Tripped => self.shared.trip(ep, breaker, now),
            Change::Closed => {
                self.shared.recount();
                tracing::info!(upstream = %self.shared.upstream, endpoint = %ep.target.shown,
                    "circuit breaker closed: the probe succeeded");
            }
            Change::Reopened => {
                tracing::debug!(upstream = %self.shared.upstream, endpoint = %ep.target.shown,
                    "circuit breaker reopened: the probe failed");
            }
        }
    }
}

impl Drop for Lease {
    /// A lease that was finished has nothing to report: no clock read for it (every attempt's
    /// lease is dropped, most of them finished).
    fn drop(&mut self) {
        if !self.settled {
            self.settle(Instant::now(), Outcome::Cancelled);
        }
    }
}

#[cfg(test)]
#[path = "endpoints_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "endpoints_stack_tests.rs"]
mod stack_tests;
