//! The one classification of a call's failure: what kind it is, whose fault, and whether trying
//! again may help (pingora's `ErrorType` / `ErrorSource` / `RetryType`, in one small enum).
//!
//! Every outbound request's transport failure is mapped here, by the upstream stack only; the
//! executor, the proxy, the dispatcher, and later the retry, breaker and metrics code, all read
//! the same [`CallErrorKind`] rather than re-deriving it from hyper's errors.

use http::StatusCode;
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
    /// The request could not be built from the client's input (e.g. a value that is not a valid
    /// header value).
    Input,
    /// The call was not sent: a call whose result it reads failed (an optional one, else the
    /// request would have failed already), so it has no input to render. 502: the cause is
    /// upstream.
    InputUnavailable,
    /// Every endpoint of the upstream is ejected by its circuit breaker: the call fails at once
    /// rather than wait on a dead dependency (503: try again once one half-opens).
    BreakerOpen,
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
            CallErrorKind::InputUnavailable => "input_unavailable",
            CallErrorKind::BreakerOpen => "breaker_open",
        }
    }

    /// The status the client gets when a required call fails this way.
    pub fn client_status(&self) -> StatusCode {
        match self {
            CallErrorKind::Timeout | CallErrorKind::Deadline => StatusCode::GATEWAY_TIMEOUT,
            CallErrorKind::Input => StatusCode::BAD_REQUEST,
            CallErrorKind::QueueFull(_) | CallErrorKind::Queue | CallErrorKind::BreakerOpen => {
                StatusCode::SERVICE_UNAVAILABLE
            }
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
            CallErrorKind::Input => Fault::Client,
            CallErrorKind::QueueFull(_) | CallErrorKind::Queue => Fault::Gateway,
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
}

impl CallError {
    pub(crate) fn new(kind: CallErrorKind, message: impl Into<String>) -> Self {
        CallError {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

/// A failure of hyper's pooled client: `connect` when no connection was made (so nothing was
/// sent, which is what makes a POST safe to try again later), `io` otherwise.
pub(crate) fn transport(upstream: &str, e: &hyper_util::client::legacy::Error) -> CallError {
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
            "no answer from upstream `{upstream}` within {}",
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
            (CallErrorKind::BreakerOpen, Fault::Upstream, false),
        ];
        for (kind, fault, retry) in cases {
            assert_eq!(kind.fault(), fault, "{kind:?}");
            assert_eq!(kind.is_retryable(), retry, "{kind:?}");
        }
    }
}
