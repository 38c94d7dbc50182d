//! The one classification of a call's failure: what kind it is, whose fault, and whether trying
//! again may help (pingora's `ErrorType` / `ErrorSource` / `RetryType`, in one small enum).
//!
//! Every outbound request's transport failure is mapped here, by the upstream stack only; the
//! executor, the proxy, the dispatcher, and later the retry, breaker and metrics code, all read
//! the same [`CallErrorKind`] rather than re-deriving it from hyper's errors.

use http::StatusCode;
use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// Why one downstream call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallErrorKind {
    /// The call's own timeout passed.
    Timeout,
    /// The route's end-to-end deadline passed.
    Deadline,
    /// No connection could be made (refused, unreachable, connect timeout): nothing was sent.
    Connect,
    /// The upstream answered with a status outside 2xx.
    Status(u16),
    /// The upstream's body was not JSON.
    InvalidJson,
    /// The upstream's body was larger than `server.max_response_bytes`.
    TooLarge,
    /// The connection broke (reset, closed early) while sending or receiving.
    Io,
    /// The offload queue is full: try again after this long.
    QueueFull(std::time::Duration),
    /// The offload queue could not take the task durably.
    Queue,
    /// The task the call rendered is larger than `[queue] max_task_bytes`: 413, the client's
    /// (its values made it so). Sending it again cannot help, unlike [`CallErrorKind::Queue`].
    TaskTooLarge,
    /// The request could not be built from the client's input (e.g. a value that is not a valid
    /// header value).
    Input,
    /// The call was not sent: a call whose result it reads failed (an optional one, else the
    /// request would have failed already), so it has no input to render; or that result gave a
    /// value that cannot be sent (`crate::render::unsendable`). 502: the cause is upstream.
    InputUnavailable,
    /// Every endpoint of the upstream is ejected by its circuit breaker: the call fails at once
    /// rather than wait on a dead dependency (503: try again once one half-opens).
    BreakerOpen,
    /// The gateway refused the work for want of room (the answer arrived, but parsing it would
    /// take more of `server.max_parsed_bytes` than is left): 503 with `Retry-After`.
    Shed,
}

/// Whose fault a failure is: what the log level, the metrics and the breaker go by (only an
/// upstream's faults count against it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The upstream (or the network to it): slow, refusing, resetting, answering badly.
    Upstream,
    /// The client's request (a value that cannot be sent).
    Client,
    /// The gateway itself (its queue).
    Gateway,
}

impl CallErrorKind {
    /// A short stable name, used in error bodies and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            CallErrorKind::Timeout => "timeout",
            CallErrorKind::Deadline => "deadline",
            CallErrorKind::Connect => "connect",
            CallErrorKind::Status(_) => "upstream_status",
            CallErrorKind::InvalidJson => "invalid_json",
            CallErrorKind::TooLarge => "too_large",
            CallErrorKind::Io => "io",
            CallErrorKind::Input => "bad_input",
            CallErrorKind::QueueFull(_) => "queue_full",
            CallErrorKind::Queue => "queue",
            CallErrorKind::TaskTooLarge => "task_too_large",
            CallErrorKind::InputUnavailable => "input_unavailable",
            CallErrorKind::BreakerOpen => "breaker_open",
            CallErrorKind::Shed => "shed",
        }
    }

    /// What a client is told of a failure of this kind under `error_detail = "brief"`: words
    /// that name nothing behind the gateway. `None` for a client's own bad input, whose message
    /// is about what it sent and is kept.
    pub fn brief_message(&self) -> Option<&'static str> {
        Some(match self {
            CallErrorKind::Timeout => "the call did not answer in time",
            CallErrorKind::Deadline => "the route's deadline passed",
            CallErrorKind::Connect => "the call's service could not be reached",
            CallErrorKind::Status(_) => "the call's service answered with an error",
            CallErrorKind::InvalidJson => "the call's service did not answer JSON",
            CallErrorKind::TooLarge => "the call's answer was too large",
            CallErrorKind::Io => "the connection to the call's service broke",
            CallErrorKind::QueueFull(_) => "the queue is full; try again later",
            CallErrorKind::Queue => "the call could not be queued",
            CallErrorKind::InputUnavailable => "a call this one reads failed",
            CallErrorKind::BreakerOpen => "the call's service is unavailable",
            CallErrorKind::Shed => "the gateway is busy; try again later",
            CallErrorKind::Input | CallErrorKind::TaskTooLarge => return None,
        })
    }

    /// The status the client gets when a required call fails this way.
    pub fn client_status(&self) -> StatusCode {
        match self {
            CallErrorKind::Timeout | CallErrorKind::Deadline => StatusCode::GATEWAY_TIMEOUT,
            CallErrorKind::Input => StatusCode::BAD_REQUEST,
            CallErrorKind::TaskTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            CallErrorKind::QueueFull(_)
            | CallErrorKind::Queue
            | CallErrorKind::BreakerOpen
            | CallErrorKind::Shed => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// Whether trying again might succeed. A deadline is never retried: no time is left.
    pub fn is_retryable(&self) -> bool {
        match self {
            CallErrorKind::Timeout | CallErrorKind::Connect | CallErrorKind::Io => true,
            CallErrorKind::Status(s) => *s >= 500,
            _ => false,
        }
    }

    /// Whose fault it is.
    pub fn fault(&self) -> Fault {
        match self {
            CallErrorKind::Input | CallErrorKind::TaskTooLarge => Fault::Client,
            CallErrorKind::QueueFull(_) | CallErrorKind::Queue | CallErrorKind::Shed => {
                Fault::Gateway
            }
            CallErrorKind::Status(s) if *s < 500 => Fault::Client,
            _ => Fault::Upstream,
        }
    }
}

/// One downstream call's failure, with enough context to answer the client and log it.
#[derive(Debug, Clone, thiserror::Error)]
pub struct CallError {
    /// What went wrong.
    pub kind: CallErrorKind,
    /// Human-readable detail.
    pub message: String,
    /// The attempts the upstream stack made, when the call got that far (boxed: most errors
    /// never carry one, and a `CallError` travels in every call's result type).
    pub trail: Option<Box<Trail>>,
}

impl CallError {
    pub(crate) fn new(kind: CallErrorKind, message: impl Into<String>) -> Self {
        CallError {
            kind,
            message: message.into(),
            trail: None,
        }
    }

    /// This error with the stack's record of the attempts that led to it.
    pub(crate) fn with_trail(mut self, trail: Option<Box<Trail>>) -> Self {
        if trail.is_some() {
            self.trail = trail;
        }
        self
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)?;
        match &self.trail {
            Some(t) => write!(f, " ({t})"),
            None => Ok(()),
        }
    }
}

/// Records kept per call: enough to explain any sane `attempts`, bounded whatever it is.
pub(crate) const MAX_RECORDS: usize = 8;

/// What the upstream stack did for one call: the upstream, each attempt's endpoint and how it
/// ended, and why no further attempt was made. It is what the error body, the
/// `Manifold-Partial` header and the log line of a failed call show.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Trail {
    /// The `[upstreams.NAME]`.
    pub upstream: String,
    /// Attempts made, hedges included (may exceed `records.len()`).
    pub attempts: u32,
    /// The first attempts, at most [`MAX_RECORDS`] (the last one replaces the eighth).
    pub records: Vec<AttemptRecord>,
    /// Why the stack stopped although the last outcome was one its policy retries.
    pub stopped: Option<Stop>,
}

impl Trail {
    /// Count one more attempt and keep its record, within [`MAX_RECORDS`] (beyond, the last
    /// record replaces the previous last: the first and the latest attempts are what explain).
    pub(crate) fn push(&mut self, record: AttemptRecord) {
        self.attempts = self.attempts.saturating_add(1);
        if self.records.len() < MAX_RECORDS {
            self.records.push(record);
        } else if let Some(last) = self.records.last_mut() {
            *last = record;
        }
    }

    /// The endpoint of the last attempt that reached one.
    pub fn endpoint(&self) -> Option<&str> {
        self.records
            .iter()
            .rev()
            .find_map(|r| r.endpoint.as_deref())
    }
}

impl fmt::Display for Trail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.attempts == 1 { "" } else { "s" };
        write!(
            f,
            "upstream `{}`, {} attempt{plural}:",
            self.upstream, self.attempts
        )?;
        for (n, r) in self.records.iter().enumerate() {
            let sep = if n == 0 { " " } else { ", " };
            write!(
                f,
                "{sep}{} {}",
                r.endpoint.as_deref().unwrap_or("-"),
                r.ended.label()
            )?;
        }
        if let Some(stop) = self.stopped {
            write!(f, "; not retried: {}", stop.as_str())?;
        }
        Ok(())
    }
}

/// One attempt: where it went and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// The endpoint's `host:port`; `None` when no endpoint was picked (e.g. all ejected).
    pub endpoint: Option<String>,
    /// How it ended.
    pub ended: Ended,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// A failure of this kind (`connect`, `timeout`, `breaker_open`, …).
    Failed(CallErrorKind),
    /// An answer with this status.
    Answered(u16),
}

impl Ended {
    /// `connect`, `timeout`, `503`, …: what the error body and headers show.
    pub fn label(&self) -> Cow<'static, str> {
        match self {
            Ended::Failed(CallErrorKind::Status(s)) | Ended::Answered(s) => {
                Cow::Owned(s.to_string())
            }
            Ended::Failed(k) => Cow::Borrowed(k.as_str()),
        }
    }
}

/// Why the stack made no further attempt after an outcome its policy retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The retry budget of the upstream is spent: the first error is the answer.
    BudgetExhausted,
    /// `retry.attempts` were made.
    Attempts,
    /// The backoff (or `Retry-After`) would have run past the request's deadline.
    Deadline,
    /// A non-idempotent call is retried only when nothing was sent (`connect`).
    NotIdempotent,
    /// The streamed request body was already (partly) sent.
    BodySent,
    /// The upstream's `Retry-After` is longer than the call's timeout.
    RetryAfter,
}

impl Stop {
    /// A short stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Stop::BudgetExhausted => "budget_exhausted",
            Stop::Attempts => "attempts",
            Stop::Deadline => "deadline",
            Stop::NotIdempotent => "not_idempotent",
            Stop::BodySent => "body_sent",
            Stop::RetryAfter => "retry_after",
        }
    }
}

/// A failure of a target's pooled client: `connect` when no connection was made (so nothing was
/// sent, which is what makes a POST safe to try again later), `io` otherwise.
pub(crate) fn transport(upstream: &str, e: &super::client::SendError) -> CallError {
    let kind = if e.is_connect() {
        CallErrorKind::Connect
    } else {
        CallErrorKind::Io
    };
    CallError::new(kind, format!("upstream `{upstream}`: {}", error_chain(e)))
}

/// No answer within `within`: `deadline` when the route's deadline was the tighter bound,
/// `timeout` when the call's own timeout was.
pub(crate) fn no_answer(upstream: &str, by_deadline: bool, within: Duration) -> CallError {
    let kind = if by_deadline {
        CallErrorKind::Deadline
    } else {
        CallErrorKind::Timeout
    };
    CallError::new(
        kind,
        format!(
            "no complete answer from upstream `{upstream}` within {}",
            humantime::format_duration(within)
        ),
    )
}

/// A status outside 2xx, as a composed call's failure.
pub(crate) fn status(upstream: &str, status: StatusCode) -> CallError {
    CallError::new(
        CallErrorKind::Status(status.as_u16()),
        format!("upstream `{upstream}` answered {status}"),
    )
}

/// `err: cause: cause` — hyper's top-level messages alone are too vague to act on.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_answer_whose_fault_and_whether_to_retry() {
        let cases = [
            (CallErrorKind::Connect, Fault::Upstream, true),
            (CallErrorKind::Io, Fault::Upstream, true),
            (CallErrorKind::Timeout, Fault::Upstream, true),
            (CallErrorKind::Deadline, Fault::Upstream, false),
            (CallErrorKind::Status(503), Fault::Upstream, true),
            (CallErrorKind::Status(404), Fault::Client, false),
            (CallErrorKind::TooLarge, Fault::Upstream, false),
            (CallErrorKind::Input, Fault::Client, false),
            (CallErrorKind::Queue, Fault::Gateway, false),
            (CallErrorKind::TaskTooLarge, Fault::Client, false),
            (CallErrorKind::BreakerOpen, Fault::Upstream, false),
        ];
        for (kind, fault, retry) in cases {
            assert_eq!(kind.fault(), fault, "{kind:?}");
            assert_eq!(kind.is_retryable(), retry, "{kind:?}");
        }
        assert_eq!(
            CallErrorKind::BreakerOpen.client_status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn a_trail_keeps_the_first_and_the_last_attempts_and_says_why_it_stopped() {
        let mut t = Trail {
            upstream: "u".into(),
            ..Trail::default()
        };
        for n in 0..20u16 {
            t.push(AttemptRecord {
                endpoint: Some(format!("h:{n}")),
                ended: Ended::Answered(500 + n),
            });
        }
        t.stopped = Some(Stop::BudgetExhausted);
        assert_eq!(t.attempts, 20);
        assert_eq!(t.records.len(), MAX_RECORDS);
        assert_eq!(t.endpoint(), Some("h:19"));
        let shown = t.to_string();
        assert!(
            shown.starts_with("upstream `u`, 20 attempts: h:0 500, "),
            "{shown}"
        );
        assert!(
            shown.ends_with("h:19 519; not retried: budget_exhausted"),
            "{shown}"
        );
        let e = CallError::new(CallErrorKind::Connect, "no").with_trail(Some(Box::new(t)));
        assert!(
            e.to_string().starts_with("connect: no (upstream `u`"),
            "{e}"
        );
    }
}
