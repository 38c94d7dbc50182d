//! What the policies may send again: a composed call's request (a `Bytes` body, replayable at
//! will) and a proxied one (a streamed body, replayable only while nothing was sent), and the
//! one rule of which requests are idempotent (what retries and hedges other than a failed
//! connect need).

use super::retry::replay::{FetchHead, ReplayBody, ReplayHead};
use super::{Budget, Read};
use crate::telemetry::CallTrace;
use http::HeaderMap;

/// A request the policies may send more than once.
pub(crate) trait Replay: Clone + Send + 'static {
    /// The caller's budget (deadline, timeout).
    fn budget(&self) -> &Budget;
    /// Whether outcomes other than a failed connect may be retried or hedged: the method is
    /// idempotent (GET, HEAD, OPTIONS, PUT, DELETE), the call is marked `idempotent = true`,
    /// or the request carries an `Idempotency-Key`.
    fn idempotent(&self) -> bool;
    /// Whether it can be sent again now (a streamed body that was read cannot).
    fn can_resend(&self) -> bool {
        true
    }
}

/// Whether a request may be sent twice with the effect of once (RFC 9110 §9.2.2, or an
/// `Idempotency-Key`), unless its call's config decided, or its caller allows connects only.
pub(crate) fn is_idempotent(method: &http::Method, headers: &HeaderMap, budget: &Budget) -> bool {
    use http::Method;
    if budget.connect_only {
        return false;
    }
    if let Some(decided) = budget.idempotent {
        return decided;
    }
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    ) || headers.contains_key("idempotency-key")
}

/// A composed, offloaded or cache-filling call: a `Bytes` body, replayable at will.
#[derive(Debug, Clone)]
pub(crate) struct FetchReq {
    pub(crate) req: FetchHead,
    /// The call's trace context, beside the request rather than in its extensions: an attempt
    /// that copies the request (each one the retry policy might follow with another) then
    /// copies no extension map (a box, its table and a box for the context: three allocations).
    pub(crate) trace: Option<CallTrace>,
    pub(crate) budget: Budget,
    pub(crate) read: Read,
    pub(crate) idempotent: bool,
}

impl Replay for FetchReq {
    fn budget(&self) -> &Budget {
        &self.budget
    }
    fn idempotent(&self) -> bool {
        self.idempotent
    }
    fn can_resend(&self) -> bool {
        self.req.can_resend()
    }
}

/// A proxied request: its head, and its streamed body (none for a bodiless request, which is
/// replayable like a `Bytes` one).
#[derive(Debug, Clone)]
pub(crate) struct SendReq {
    pub(crate) head: ReplayHead,
    pub(crate) body: Option<ReplayBody>,
    pub(crate) budget: Budget,
    pub(crate) idempotent: bool,
    /// Whether a later attempt may follow one that sent the request (a reset, a timeout or a
    /// status the policy retries, on an idempotent request): then each attempt but the last
    /// sends a copy of the head. Otherwise an attempt takes the head, and it comes back only
    /// when nothing was sent ([`ReplayHead`]).
    pub(crate) copy_head: bool,
    /// The call's trace context, when it is not in the head's extensions (see
    /// [`FetchReq::trace`]).
    pub(crate) trace: Option<CallTrace>,
}

impl Replay for SendReq {
    fn budget(&self) -> &Budget {
        &self.budget
    }
    /// A streamed body is retried only when nothing was sent (`connect`).
    fn idempotent(&self) -> bool {
        self.idempotent && self.body.is_none()
    }
    fn can_resend(&self) -> bool {
        self.head.is_available() && self.body.as_ref().is_none_or(ReplayBody::is_available)
    }
}
