//! The client's body on its way to the upstream, capped at `server.max_body_bytes`.
//!
//! A body with `Content-Length` over the limit is refused before it is read; a chunked one can
//! only be counted as it streams. When it passes the limit, or the client's framing is broken (a
//! malformed chunk), the stream ends in an error: hyper then abandons the upstream request and
//! closes that connection, so the upstream never sees a complete request (no final chunk). The
//! error that reaches [`forward`](crate::proxy::forward) is hyper's ("error from user's Body
//! stream"), so the reason is also left in a shared slot for it to answer the client with: 413
//! for too large, 400 for the client's own broken body — never 502, which would blame the
//! upstream.

use crate::error::BoxError;
use crate::limit::WaitMeter;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

/// Why the client's body stopped.
#[derive(Debug, Clone)]
pub(crate) enum BodyFault {
    /// It went past the limit (bytes).
    TooLarge(u64),
    /// The client's body could not be read (broken framing, connection reset): the detail, for
    /// the log only.
    Client(String),
}

/// The request body with its cap; [`fault`](Capped::fault) says why it failed, if it did.
pub(crate) struct Capped {
    inner: Incoming,
    left: u64,
    limit: u64,
    fault: Arc<OnceLock<BodyFault>>,
    done: bool,
    /// Counts the time spent waiting on the client (kept out of the adaptive limit's latency).
    meter: WaitMeter,
}

/// Where [`Capped`] leaves its reason.
pub(crate) type FaultSlot = Arc<OnceLock<BodyFault>>;

impl Capped {
    pub(crate) fn new(inner: Incoming, limit: u64, meter: WaitMeter) -> (Self, FaultSlot) {
        let fault = FaultSlot::default();
        let body = Capped {
            inner,
            left: limit,
            limit,
            fault: Arc::clone(&fault),
            done: false,
            meter,
        };
        (body, fault)
    }

    fn fail(&mut self, fault: BodyFault) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        let message = match &fault {
            BodyFault::TooLarge(limit) => {
                format!("the request body is larger than the limit of {limit} bytes")
            }
            BodyFault::Client(detail) => format!("the request body could not be read: {detail}"),
        };
        let _ = self.fault.set(fault);
        Poll::Ready(Some(Err(message.into())))
    }
}

impl http_body::Body for Capped {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        this.meter.polled(polled.is_pending());
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                if len > this.left {
                    return this.fail(BodyFault::TooLarge(this.limit));
                }
                this.left -= len;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.fail(BodyFault::Client(crate::upstream::error_chain(&e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
