//! A scripted attempt service for the policies' unit tests (paused time): each call's endpoint,
//! delay and outcome come from a script; every call is recorded, with whether its future was
//! dropped before it finished (cancelled).

use super::attempt::{Attempt, BoxFuture, Tried};
use super::endpoints::EndpointId;
use super::request::Replay;
use super::{Answer, Budget};
use crate::error::{CallError, CallErrorKind};
use http::{HeaderMap, HeaderValue, StatusCode};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// A test request: its budget, and whether it may be sent twice.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub(crate) budget: Budget,
    pub(crate) idempotent: bool,
}

impl Req {
    pub(crate) fn new(idempotent: bool, deadline: Option<Instant>) -> Self {
        Req {
            budget: Budget {
                deadline,
                timeout: None,
                announce: true,
                idempotent: None,
                connect_only: false,
            },
            idempotent,
        }
    }
}

impl Replay for Req {
    fn budget(&self) -> &Budget {
        &self.budget
    }
    fn idempotent(&self) -> bool {
        self.idempotent
    }
}

/// How a scripted attempt ends.
#[derive(Debug, Clone)]
pub(crate) enum End {
    /// An answer with this status (and `Retry-After`, if any).
    Status(u16, Option<&'static str>),
    /// A failure of this kind.
    Fail(CallErrorKind),
    /// Never.
    Hang,
}

/// One scripted attempt: on which endpoint, after how long, how it ends.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub(crate) endpoint: u64,
    pub(crate) after: Duration,
    pub(crate) end: End,
}

/// What the service saw of one call.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) avoid: Option<EndpointId>,
    pub(crate) at: Instant,
    pub(crate) cancelled: Arc<AtomicBool>,
}

type Script = dyn Fn(usize, Option<EndpointId>) -> Step + Send + Sync;

#[derive(Clone)]
pub(crate) struct Fake {
    script: Arc<Script>,
    pub(crate) seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    /// `script(n, avoid)` decides call `n` (from 0).
    pub(crate) fn new(
        script: impl Fn(usize, Option<EndpointId>) -> Step + Send + Sync + 'static,
    ) -> Self {
        Fake {
            script: Arc::new(script),
            seen: Arc::default(),
        }
    }

    pub(crate) fn calls(&self) -> Vec<Seen> {
        self.seen.lock().expect("not poisoned").clone()
    }
}

/// Sets its flag when dropped unless disarmed: the call's future was dropped unfinished.
struct DropFlag(Option<Arc<AtomicBool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f.store(true, Ordering::SeqCst);
        }
    }
}

pub(crate) fn answer(status: u16, retry_after: Option<&'static str>) -> Answer {
    let mut headers = HeaderMap::new();
    if let Some(r) = retry_after {
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static(r));
    }
    Answer {
        status: StatusCode::from_u16(status).expect("a status"),
        headers,
        body: bytes::Bytes::new(),
        trail: None,
    }
}

impl tower::Service<Attempt<Req>> for Fake {
    type Response = Tried<Answer>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Tried<Answer>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, attempt: Attempt<Req>) -> Self::Future {
        let cancelled = Arc::new(AtomicBool::new(false));
        let n = {
            let mut seen = self.seen.lock().expect("not poisoned");
            seen.push(Seen {
                avoid: attempt.avoid,
                at: Instant::now(),
                cancelled: Arc::clone(&cancelled),
            });
            seen.len() - 1
        };
        let step = (self.script)(n, attempt.avoid);
        if let Some(cell) = &attempt.picked {
            cell.store(step.endpoint, Ordering::Relaxed);
        }
        Box::pin(async move {
            let mut flag = DropFlag(Some(cancelled));
            let started = Instant::now();
            tokio::time::sleep(step.after).await;
            let result = match step.end {
                End::Status(s, r) => Ok(answer(s, r)),
                End::Fail(kind) => Err(CallError::new(kind, "scripted")),
                End::Hang => std::future::pending().await,
            };
            flag.0 = None;
            Ok(Tried {
                result,
                endpoint: Some(EndpointId::from_raw(step.endpoint)),
                shown: Some(format!("e{}", step.endpoint)),
                took: started.elapsed(),
                earlier: Vec::new(),
            })
        })
    }
}

/// Endpoint `n` of a script.
pub(crate) fn ep(n: u64) -> EndpointId {
    EndpointId::from_raw(n)
}
