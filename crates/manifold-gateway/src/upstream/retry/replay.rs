//! A streamed request body that can be sent again as long as none of it was read.
//!
//! A proxied body is a stream from the client: once a byte has gone to an upstream it is gone.
//! But when the connection could not be made, hyper drops the request without ever polling its
//! body. [`ReplayBody`] keeps the body in a per-request slot; each attempt takes it out wrapped
//! in a [`Reclaim`], which puts it back if it is dropped unpolled. So a failed connect can be
//! retried on another endpoint, and anything else cannot (the upstream saw it once).

use super::super::Body;
use crate::error::{BoxError, CallError, CallErrorKind};
use bytes::Bytes;
use http::request::Parts;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

/// The body of one proxied request, shared by its attempts (cloning shares the slot).
#[derive(Clone)]
pub(crate) struct ReplayBody {
    // Per request, taken at most once per attempt: never contended.
    slot: Arc<Mutex<Option<Body>>>,
}

impl std::fmt::Debug for ReplayBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayBody")
            .field("available", &self.is_available())
            .finish()
    }
}

impl ReplayBody {
    pub(crate) fn new(body: Body) -> Self {
        ReplayBody {
            slot: Arc::new(Mutex::new(Some(body))),
        }
    }

    /// Whether the body is in the slot (never read, and no attempt holds it).
    pub(crate) fn is_available(&self) -> bool {
        self.slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// The body for one attempt, if it can still be sent.
    pub(crate) fn take(&self) -> Option<Reclaim> {
        let body = self
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        Some(Reclaim {
            inner: Some(body),
            slot: Arc::clone(&self.slot),
            polled: false,
        })
    }
}

/// The head of one proxied request, shared by its attempts (cloning shares the slot).
///
/// Why a slot rather than a copy per attempt: copying the head (its header map, extensions,
/// and a first clone of each `Bytes` that was never shared) cost about 4,000 instructions and
/// seven allocations per proxied request, for a retry that by default follows only a failed
/// connect, when nothing was sent. So an attempt that may be followed only after sending
/// nothing takes the head, and the attempt service puts it back if its request comes back
/// unsent ([`ReplayHead::give_back`]); one that may be followed whatever happens copies it.
#[derive(Debug, Clone)]
pub(crate) struct ReplayHead {
    // Per request, used once per attempt: never contended.
    slot: Arc<Mutex<Option<Parts>>>,
}

impl ReplayHead {
    pub(crate) fn new(head: Parts) -> Self {
        ReplayHead {
            slot: Arc::new(Mutex::new(Some(head))),
        }
    }

    /// Whether the head is in the slot (no attempt took it, or it came back).
    pub(crate) fn is_available(&self) -> bool {
        self.slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// The head for one attempt: taken out when `take` says so or when this is its last
    /// holder (no later attempt can need it), else a copy.
    pub(crate) fn get(&self, take: bool) -> Option<Parts> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if take || Arc::strong_count(&self.slot) == 1 {
            slot.take()
        } else {
            slot.clone()
        }
    }

    /// Put a taken head back (its request was not sent), for the next attempt.
    pub(crate) fn give_back(&self, head: Parts) {
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(head);
    }
}

/// How a fetched request's attempts get it.
///
/// Why two forms: a request a later attempt may follow after it was sent (an idempotent one:
/// retried on a status or a timeout, or hedged) is shared, and each attempt but the last sends
/// a copy (its head cloned: ~700 instructions and a header map). A request that only a failed
/// connect can follow (not idempotent, or a delivery) is taken by its attempt instead, and put
/// back when the client hands it back unsent (`Attempts::gives_back`), as a proxied head is
/// ([`ReplayHead`]).
#[derive(Debug, Clone)]
pub(crate) enum FetchHead {
    Shared(Arc<http::Request<Bytes>>),
    Slot(Arc<Mutex<Option<http::Request<Bytes>>>>),
}

impl FetchHead {
    /// `req` as its attempts should get it (see the type's docs); `gives_back`: whether the
    /// upstream's client hands an unsent request back.
    pub(crate) fn new(req: http::Request<Bytes>, idempotent: bool, gives_back: bool) -> Self {
        if idempotent || !gives_back {
            FetchHead::Shared(Arc::new(req))
        } else {
            FetchHead::Slot(Arc::new(Mutex::new(Some(req))))
        }
    }
}

impl FetchHead {
    /// Whether an attempt can still get it: a taken one came back unsent.
    pub(crate) fn can_resend(&self) -> bool {
        match self {
            FetchHead::Shared(_) => true,
            FetchHead::Slot(slot) => lock(slot).is_some(),
        }
    }

    /// The request for one attempt (see the type's docs), and for a taken one what puts it
    /// back if it comes back unsent; an error when an earlier attempt sent it.
    pub(crate) fn for_attempt(
        self,
        upstream: &str,
    ) -> (Result<http::Request<Bytes>, CallError>, Option<GiveBack>) {
        match self {
            FetchHead::Shared(shared) => (
                Ok(Arc::try_unwrap(shared)
                    .unwrap_or_else(|shared| crate::exec::copy_for_attempt(&shared))),
                None,
            ),
            FetchHead::Slot(slot) => match lock(&slot).take() {
                Some(r) => {
                    let back = GiveBack {
                        undo: Undo::of(&r),
                        body: r.body().clone(),
                        slot: Arc::clone(&slot),
                    };
                    (Ok(r), Some(back))
                }
                None => (
                    Err(CallError::new(
                        CallErrorKind::Io,
                        format!(
                            "upstream `{upstream}`: the request was already sent and cannot be sent again"
                        ),
                    )),
                    None,
                ),
            },
        }
    }
}

/// Puts a taken fetch request back in its slot when its attempt's client hands it back unsent.
pub(crate) struct GiveBack {
    undo: Undo,
    /// The body as it was taken (a reference count): the attempt's is boxed on its way out.
    body: Bytes,
    slot: Arc<Mutex<Option<http::Request<Bytes>>>>,
}

impl GiveBack {
    /// `unsent` came back: undo what the attempt changed and put it back for the next one.
    pub(crate) fn give_back(self, unsent: http::Request<Body>) {
        let parts = self.undo.restore(unsent);
        *lock(&self.slot) = Some(http::Request::from_parts(parts, self.body));
    }
}

/// The slot's lock; it holds a plain value, so a panic elsewhere cannot leave it half-written.
pub(crate) fn lock(
    slot: &Mutex<Option<http::Request<Bytes>>>,
) -> MutexGuard<'_, Option<http::Request<Bytes>>> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What an attempt that took a proxied request's head changes in it, to undo when the request
/// comes back unsent: the URI (made absolute against the endpoint, then origin form again) and
/// `Host` (the endpoint's, added when the client's was removed). The headers every attempt sets
/// anew (`traceparent`, `tracestate`, `Manifold-Deadline-Ms`; `X-Request-Id`, the same value
/// each time) need no undoing.
pub(crate) struct Undo {
    uri: http::Uri,
    had_host: bool,
}

impl Undo {
    /// What `req` is before an attempt changes it.
    pub(crate) fn of<B>(req: &http::Request<B>) -> Undo {
        Undo {
            uri: req.uri().clone(),
            had_host: req.headers().contains_key(http::header::HOST),
        }
    }

    /// The head as the attempt got it; the body is dropped unpolled, which puts it back in its
    /// own slot ([`ReplayBody`]).
    pub(crate) fn restore(self, unsent: http::Request<Body>) -> Parts {
        let (mut parts, body) = unsent.into_parts();
        drop(body);
        parts.uri = self.uri;
        if !self.had_host {
            parts.headers.remove(http::header::HOST);
        }
        parts
    }
}

/// One attempt's hold on the body: back to the slot if dropped before it was polled.
pub(crate) struct Reclaim {
    inner: Option<Body>,
    slot: Arc<Mutex<Option<Body>>>,
    polled: bool,
}

impl Drop for Reclaim {
    fn drop(&mut self) {
        if !self.polled {
            if let Some(body) = self.inner.take() {
                *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(body);
            }
        }
    }
}

impl http_body::Body for Reclaim {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        // From the first poll on, bytes may have left: this body is never sent again.
        this.polled = true;
        match this.inner.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), http_body::Body::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    fn body(s: &'static str) -> Body {
        Full::new(Bytes::from_static(s.as_bytes()))
            .map_err(|never| match never {})
            .boxed()
    }

    #[tokio::test]
    async fn an_unpolled_body_comes_back_and_a_polled_one_does_not() {
        let replay = ReplayBody::new(body("abc"));
        let first = replay.take().expect("the body");
        assert!(!replay.is_available() && replay.take().is_none());
        drop(first);
        assert!(replay.is_available(), "dropped unpolled: back in the slot");
        let second = replay.take().expect("the body again");
        let got = second.collect().await.expect("read").to_bytes();
        assert_eq!(&got[..], b"abc");
        assert!(!replay.is_available(), "read: gone for good");
        assert!(replay.take().is_none());
    }

    #[test]
    fn a_head_is_copied_taken_or_given_back_as_asked() {
        let (parts, ()) = http::Request::get("/a")
            .body(())
            .expect("a request")
            .into_parts();
        let head = ReplayHead::new(parts);
        let other = head.clone();
        assert_eq!(head.get(false).expect("a copy").uri, "/a");
        assert!(head.is_available(), "copied: still there");
        let taken = head.get(true).expect("taken");
        assert!(!other.is_available() && head.get(false).is_none());
        head.give_back(taken);
        assert!(other.is_available(), "given back");
        drop(other);
        // The last holder takes it, whatever it asks.
        assert!(head.get(false).is_some());
        assert!(!head.is_available());
    }
}
