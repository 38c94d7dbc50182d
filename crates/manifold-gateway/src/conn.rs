//! One client connection's life: what may keep it open, and what closes it.
//!
//! hyper's `header_read_timeout` only starts once hyper-util's auto builder has read enough
//! bytes to tell HTTP/1 from HTTP/2, so a client that sends nothing, or part of the HTTP/2
//! preface, would hold its connection slot forever; with `max_connections` such sockets nobody
//! else is served. So the connection task keeps its own clock ([`run`]):
//!
//! * until the first request head is complete (hyper hands the request to the service), the
//!   connection lives at most `header_read_timeout` from the accept, whatever it sent;
//! * after that, a connection with no request in flight for `h2_idle_timeout` is shut down
//!   gracefully (HTTP/2 GOAWAY). HTTP/1 keep-alive connections are closed sooner by hyper's own
//!   `header_read_timeout`, which runs while a keep-alive connection waits for its next head;
//!   HTTP/2 PINGs that go unanswered close a dead peer's connection sooner too;
//! * a connection whose writes to the client have waited `send_timeout` with no byte going out
//!   is dropped, its answer cut ([`crate::send`]); on HTTP/2 one proxied stream its client
//!   stops reading is cut on its own after the same time ([`crate::stream_send`]);
//! * a connection whose client cancels most of its requests before their answers (HTTP/2
//!   "rapid reset", CVE-2023-44487: open a stream, reset it, open the next) is dropped: each
//!   such stream costs the gateway a request and often an upstream request, and costs the
//!   client two frames ([`PREMATURE_RESET_MIN`]);
//! * on shutdown it is asked to finish (`drain`), and dropped when the drain timeout passes
//!   (`kill`), with the HTTP/2 stream tasks it spawned ([`Exec`]).

use crate::idle::IdleState;
use crate::respond;
use crate::respond::ClientId;
use crate::server::Limits;
use crate::upstream::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Requests a connection may start before the rapid-reset rule applies: past it, a connection
/// whose client cancelled more than half of its requests before their answer's head is dropped.
///
/// Why this rule: it is Envoy's answer to CVE-2023-44487 (a connection with at least 500
/// requests, more than half of them reset prematurely, is closed), which a browser cancelling
/// the odd request never meets. h2's own guard counts only streams reset before the server
/// accepted them, and hyper accepts at once, so it does not see this attack.
pub(crate) const PREMATURE_RESET_MIN: u64 = 500;

/// What a connection is doing, as its requests report it.
#[derive(Debug)]
pub(crate) struct Activity {
    /// When the connection was accepted (the origin of `last_ms`).
    since: Instant,
    /// Requests handed to the service so far (0 until the first head is complete).
    requests: AtomicU64,
    /// Requests whose answer head is not sent yet.
    in_flight: AtomicUsize,
    /// Requests dropped before their answer's head was made: the client reset the stream (or
    /// closed the connection) first.
    cancelled: AtomicU64,
    /// When a request last ended, in ms since `since`.
    last_ms: AtomicU64,
    /// Whether a plaintext HTTP/1 connection may drop hyper's buffers now, and the request to
    /// finish ([`crate::idle`]).
    pub(crate) idle: IdleState,
    /// How the writes to the client are going ([`crate::send`]).
    pub(crate) sending: crate::send::Sending,
}

/// What the connection's clock says when it rings.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// No request head was completed within `header_read_timeout` of the accept.
    NoHead,
    /// No request in flight for `h2_idle_timeout`.
    Idle,
    /// The client cancels most of its requests (see [`PREMATURE_RESET_MIN`]).
    Resets,
    /// Look again then.
    Wait(Instant),
}

impl Activity {
    pub(crate) fn new() -> Self {
        Activity {
            since: Instant::now(),
            requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            cancelled: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            idle: IdleState::default(),
            sending: crate::send::Sending::default(),
        }
    }

    /// Requests handed to the service so far.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests whose answer head is not sent yet.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// When the connection was accepted.
    pub(crate) fn since(&self) -> Instant {
        self.since
    }

    /// When a connection with no request in flight is idle too long (`h2_idle_timeout` after
    /// its last request ended), as [`run`] tells it.
    pub(crate) fn idle_until(&self, limits: &Limits) -> Instant {
        self.since
            + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
            + limits.h2_idle_timeout
    }

    fn touch(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// A request starts. Its start is not written down (a clock read per request): the time is
    /// read only while nothing is in flight ([`Activity::verdict`], the park's due time), and
    /// then the last event is a request's end, which [`InFlight`]'s drop writes.
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InFlight {
            activity: Arc::clone(self),
            answered: false,
        }
    }

    /// The client cancels most of its requests: more than half of at least
    /// [`PREMATURE_RESET_MIN`].
    fn resets_too_many(&self) -> bool {
        let requests = self.requests.load(Ordering::Relaxed);
        requests >= PREMATURE_RESET_MIN
            && self.cancelled.load(Ordering::Relaxed).saturating_mul(2) > requests
    }

    /// A request was dropped before its answer: count it, and when the connection now resets
    /// too many, wake its clock ([`run`]) to drop it.
    fn cancelled(&self) {
        self.cancelled.fetch_add(1, Ordering::Relaxed);
        if self.resets_too_many() {
            self.sending.wake.notify_one();
        }
    }

    fn verdict(&self, now: Instant, limits: &Limits) -> Verdict {
        if self.resets_too_many() {
            return Verdict::Resets;
        }
        if self.requests.load(Ordering::Relaxed) == 0 {
            let deadline = self.since + limits.header_read_timeout;
            // Nothing rings when a request ends: look again no later than a request ending
            // after `now` could leave the connection idle too long.
            return if now >= deadline {
                Verdict::NoHead
            } else {
                Verdict::Wait(deadline.min(now + limits.h2_idle_timeout))
            };
        }
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Verdict::Wait(now + limits.h2_idle_timeout);
        }
        let idle_at = self.idle_until(limits);
        if now >= idle_at {
            Verdict::Idle
        } else {
            Verdict::Wait(idle_at)
        }
    }
}

/// One request in flight; its end counts as activity, and its end before an answer as a
/// cancellation.
struct InFlight {
    activity: Arc<Activity>,
    answered: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.activity;
        a.touch();
        a.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.answered {
            a.cancelled();
        }
    }
}

/// Answer one request: the `Host` rule first, then the handler; every 5xx the gateway made up
/// is logged here, once, with the request id ([`respond::log_answer`]).
pub(crate) async fn answer<H, F>(
    activity: Arc<Activity>,
    req: Request<Incoming>,
    peer: SocketAddr,
    handler: H,
    passthrough: bool,
) -> Result<Response<Body>, Infallible>
where
    H: Fn(Request<Incoming>, SocketAddr, ClientId) -> F,
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    let mut in_flight = activity.begin();
    if let Some(fault) = respond::host_fault(&req) {
        tracing::debug!(%peer, fault, "request refused");
        in_flight.answered = true;
        return Ok(respond::bad_host(fault, req.version()));
    }
    let id = respond::client_request_id(req.headers());
    let method = req.method().clone();
    // For the log line of a failed answer (the handler takes the request). A `Uri` clone
    // shares the parsed bytes: no copy.
    let uri = req.uri().clone();
    let Ok(mut resp) = handler(req, peer, id.clone()).await;
    in_flight.answered = true;
    respond::log_answer(&mut resp, id, &method, uri.path(), passthrough);
    Ok(resp)
}

/// What ends a listener's connections: its limits, the drain and the kill.
#[derive(Debug, Clone)]
pub(crate) struct Ends {
    pub(crate) limits: Limits,
    /// Asks every connection to finish.
    pub(crate) drain: CancellationToken,
    /// Ends them (the drain timeout passed).
    pub(crate) kill: CancellationToken,
}

/// Drive one connection until it ends (its output), or is idle too long, never sends a request
/// head, or is aborted at the drain timeout (`None`). `shut_down` asks it to finish gracefully:
/// stop taking requests, finish those in flight (HTTP/2: GOAWAY).
pub(crate) async fn run<C, T, E>(
    conn: C,
    mut shut_down: impl FnMut(Pin<&mut C>),
    activity: &Activity,
    peer: SocketAddr,
    ends: &Ends,
) -> Option<T>
where
    C: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let limits = &ends.limits;
    tokio::pin!(conn);
    // The clock's timer and the drain and kill waits live as long as the connection: made
    // afresh in every turn of the loop, each would be registered and deregistered again. The
    // timer is reset only when it rings (or the drain begins); a request's start or end never
    // needs it earlier (see `Activity::verdict`), so nothing else wakes this loop.
    let clock = tokio::time::sleep_until(activity.since());
    let drain = ends.drain.cancelled();
    let kill = ends.kill.cancelled();
    let blocked = activity.sending.wake.notified();
    tokio::pin!(clock, drain, kill, blocked);
    let mut stall = crate::send::Stall::default();
    let mut closing = false;
    // When an idle connection was asked to close: one that has not closed a
    // `header_read_timeout` later (a peer that never acknowledges the GOAWAY) is dropped.
    let mut idle_since: Option<Instant> = None;
    loop {
        let wake = match activity.verdict(Instant::now(), limits) {
            Verdict::Wait(at) => at,
            Verdict::Resets => {
                tracing::warn!(
                    %peer,
                    requests = activity.requests(),
                    cancelled = activity.cancelled.load(Ordering::Relaxed),
                    "the client cancelled most of its requests before their answers (HTTP/2 rapid reset?); connection closed"
                );
                return None;
            }
            Verdict::NoHead => {
                tracing::debug!(
                    %peer,
                    timeout = ?limits.header_read_timeout,
                    "no request head within header_read_timeout; connection closed"
                );
                return None;
            }
            Verdict::Idle if !closing => {
                tracing::debug!(%peer, idle = ?limits.h2_idle_timeout, "idle connection closed");
                shut_down(conn.as_mut());
                closing = true;
                idle_since = Some(Instant::now());
                continue;
            }
            // Already closing: because of the drain (its timeout bounds the rest), or because
            // it was idle (bounded here).
            Verdict::Idle => match idle_since {
                Some(since) if Instant::now() >= since + limits.header_read_timeout => {
                    tracing::debug!(%peer, "idle connection did not close; dropped");
                    return None;
                }
                Some(since) => since + limits.header_read_timeout,
                None => Instant::now() + limits.h2_idle_timeout,
            },
        };
        let wake = match stall.check(&activity.sending, Instant::now(), limits.send_timeout) {
            Ok(Some(at)) => wake.min(at),
            Ok(None) => wake,
            Err(()) => {
                tracing::debug!(
                    %peer,
                    timeout = ?limits.send_timeout,
                    "the client accepted no byte of the answer within send_timeout; connection closed"
                );
                return None;
            }
        };
        clock.as_mut().reset(wake);
        tokio::select! {
            biased;
            ended = conn.as_mut() => {
                return match ended {
                    Ok(out) => Some(out),
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                        None
                    }
                };
            }
            () = kill.as_mut() => {
                tracing::debug!(%peer, "connection aborted at the drain timeout");
                return None;
            }
            () = drain.as_mut(), if !closing => {
                shut_down(conn.as_mut());
                closing = true;
            }
            () = clock.as_mut() => {}
            () = blocked.as_mut() => {
                blocked.set(activity.sending.wake.notified());
            }
        }
    }
}

/// The executor of a listener's HTTP/2 stream tasks: tokio's, except that the tasks end when
/// the listener's drain timeout passes (dropping the connection alone would leave them running).
#[derive(Debug, Clone)]
pub(crate) struct Exec {
    kill: CancellationToken,
}

impl Exec {
    pub(crate) fn new(kill: CancellationToken) -> Self {
        Exec { kill }
    }
}

impl<F> hyper::rt::Executor<F> for Exec
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        let kill = self.kill.clone();
        tokio::spawn(async move {
            let _ = kill.run_until_cancelled_owned(fut).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            h2_idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            max_connections: 1,
            drain: Duration::from_secs(1),
            passthrough: true,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_of_a_connection() {
        let a = Arc::new(Activity::new());
        let l = limits();
        let t0 = Instant::now();
        // No head yet: the deadline counts from the accept.
        assert_eq!(a.verdict(t0, &l), Verdict::Wait(t0 + l.header_read_timeout));
        assert_eq!(a.verdict(t0 + l.header_read_timeout, &l), Verdict::NoHead);
        // A request in flight holds the connection whatever the time.
        tokio::time::advance(Duration::from_secs(2)).await;
        let r = a.begin();
        assert!(matches!(
            a.verdict(Instant::now() + Duration::from_secs(3600), &l),
            Verdict::Wait(_)
        ));
        // Idle counts from the end of the last request.
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(r);
        let end = Instant::now();
        assert_eq!(a.verdict(end, &l), Verdict::Wait(end + l.h2_idle_timeout));
        assert_eq!(a.verdict(end + l.h2_idle_timeout, &l), Verdict::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_timeout_shorter_than_the_head_timeout_is_kept_without_a_wake_up() {
        // No request ending rings the clock: before the first head, it looks again at the
        // earliest a first request could have left the connection idle too long.
        let a = Arc::new(Activity::new());
        let l = Limits {
            h2_idle_timeout: Duration::from_secs(3),
            send_timeout: Duration::from_secs(60),
            ..limits()
        };
        let t0 = Instant::now();
        assert_eq!(a.verdict(t0, &l), Verdict::Wait(t0 + l.h2_idle_timeout));
        tokio::time::advance(Duration::from_secs(4)).await;
        let t4 = Instant::now();
        assert_eq!(a.verdict(t4, &l), Verdict::Wait(t4 + l.h2_idle_timeout));
        drop(a.begin());
        // The request ended at 4 s: idle from then, closed at 7 s, before the 10 s head
        // deadline.
        let at = a.verdict(Instant::now(), &l);
        assert_eq!(at, Verdict::Wait(t4 + l.h2_idle_timeout));
        assert_eq!(a.verdict(t4 + l.h2_idle_timeout, &l), Verdict::Idle);
    }

    /// The clock ends a connection that sent one request and went quiet `h2_idle_timeout`
    /// after that request, though nothing but its timer wakes it.
    #[tokio::test(start_paused = true)]
    async fn run_closes_a_connection_idle_since_its_last_request() {
        let a = Arc::new(Activity::new());
        let ends = Ends {
            limits: Limits {
                h2_idle_timeout: Duration::from_secs(3),
                send_timeout: Duration::from_secs(60),
                ..limits()
            },
            drain: CancellationToken::new(),
            kill: CancellationToken::new(),
        };
        let peer: SocketAddr = ([127, 0, 0, 1], 1).into();
        let start = Instant::now();
        let conn = async {
            tokio::time::advance(Duration::from_secs(1)).await;
            drop(a.begin());
            std::future::pending::<Result<(), std::fmt::Error>>().await
        };
        let mut asked = None;
        let out = run(conn, |_| asked = Some(Instant::now()), &a, peer, &ends);
        // Asked to finish at 1 s + 3 s; never finishing, dropped a `header_read_timeout` later.
        assert_eq!(out.await, None);
        assert_eq!(asked, Some(start + Duration::from_secs(4)));
    }
}
