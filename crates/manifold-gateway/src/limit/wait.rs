//! The time a request spends waiting on its client's body, kept out of the latency the
//! adaptive limit measures.
//!
//! Why: the limit shrinks when the latency of admitted requests rises, and a request's latency
//! ran from its admission to its answer's head — which, for a request with a body, includes
//! however long its client takes to send that body. A client trickling its upload (a slowloris
//! upload, a mobile link) made its requests look as slow as it liked, and enough of them moved
//! the window's median and the baseline: the limit then fell for everyone else (or, with the
//! baseline inflated, no longer fell under a real overload). What the client controls is not
//! the gateway's latency, so the time the gateway's body reader waited for the client's next
//! frame is counted here and subtracted from the sample ([`super::Permit::finish`]).
//!
//! The meter costs nothing on the common path: a request without a body has none, and a body
//! that is already there when it is read (one that came with the head) never waits, so no clock
//! is read and no lock taken for it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// How long one request waited on its client's body; shared by its permit and its body reader
/// (carried to the reader in the request's extensions).
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientWait(Arc<Mutex<Waited>>);

#[derive(Debug, Default)]
struct Waited {
    /// Waits that ended.
    total: Duration,
    /// The wait in progress, if the reader is waiting now: a request cancelled mid-upload
    /// must not count that wait as the gateway's.
    since: Option<Instant>,
}

impl ClientWait {
    /// How long the request has waited on its client up to `now`, a wait in progress included.
    pub(crate) fn waited(&self, now: Instant) -> Duration {
        let w = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let open = w
            .since
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
        w.total.saturating_add(open)
    }

    /// Whether the request's body reader is waiting on the client now: an attempt that times
    /// out meanwhile was held up by its client, not by its endpoint.
    pub(crate) fn waiting(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .since
            .is_some()
    }

    fn set(&self, waiting: bool) {
        let now = Instant::now();
        let mut w = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if waiting {
            w.since.get_or_insert(now);
        } else if let Some(since) = w.since.take() {
            w.total = w.total.saturating_add(now.saturating_duration_since(since));
        }
    }

    /// A meter for the reader of the request's body.
    pub(crate) fn meter(&self) -> WaitMeter {
        WaitMeter {
            wait: Some(self.clone()),
            waiting: false,
        }
    }
}

/// Kept by a body reader: told of each poll of the client's body, it adds the time from a
/// `Pending` to the next `Ready` (or to its drop: a body given up while waiting) to its
/// [`ClientWait`].
#[derive(Debug, Default)]
pub(crate) struct WaitMeter {
    wait: Option<ClientWait>,
    waiting: bool,
}

impl WaitMeter {
    /// A meter that counts nothing (a body whose request carried no [`ClientWait`]).
    pub(crate) fn none() -> WaitMeter {
        WaitMeter::default()
    }

    /// The client's body answered a poll with `pending` (true: nothing yet).
    #[inline]
    pub(crate) fn polled(&mut self, pending: bool) {
        if pending == self.waiting {
            return;
        }
        if let Some(w) = &self.wait {
            w.set(pending);
            self.waiting = pending;
        }
    }
}

/// A client's body whose waits are metered (for a reader that takes any body).
#[derive(Debug)]
pub(crate) struct Metered<B> {
    inner: B,
    meter: WaitMeter,
}

impl<B> Metered<B> {
    pub(crate) fn new(inner: B, meter: WaitMeter) -> Self {
        Metered { inner, meter }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Metered<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        this.meter.polled(polled.is_pending());
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for WaitMeter {
    fn drop(&mut self) {
        self.polled(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn only_the_time_from_pending_to_ready_counts() {
        let wait = ClientWait::default();
        let waited = || wait.waited(Instant::now());
        let mut m = wait.meter();
        // Ready at once: nothing.
        m.polled(false);
        tokio::time::advance(Duration::from_millis(5)).await;
        m.polled(false);
        assert_eq!(waited(), Duration::ZERO);
        // Pending, polled again while still pending, then ready 300 ms after the first.
        m.polled(true);
        tokio::time::advance(Duration::from_millis(100)).await;
        m.polled(true);
        // The wait in progress counts for a reader of it (a request cancelled meanwhile).
        assert_eq!(waited(), Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(200)).await;
        m.polled(false);
        assert_eq!(waited(), Duration::from_millis(300));
        // Dropped while waiting: the wait so far counts.
        m.polled(true);
        tokio::time::advance(Duration::from_millis(50)).await;
        drop(m);
        tokio::time::advance(Duration::from_millis(50)).await;
        assert_eq!(
            waited(),
            Duration::from_millis(350),
            "the drop ended the wait"
        );
        // A meter of nothing counts nothing.
        let mut none = WaitMeter::none();
        none.polled(true);
        assert!(!none.waiting);
    }
}
