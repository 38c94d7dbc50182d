//! The send timeout for one HTTP/2 stream: an answer its client has taken nothing of for
//! `send_timeout` gives its upstream (and its memory) back.
//!
//! Why: on HTTP/2 one client stream can stop while the connection goes on. HTTP/2's flow
//! control then holds the stream's answer back, hyper stops polling its body, and the socket
//! keeps taking the other streams' bytes, so neither the connection's send timeout
//! ([`crate::send`]) nor its idle timeout ever rings. Each such stream would keep its upstream
//! connection (and the upstream's work) for as long as the client likes: with 200 streams per
//! connection, a few clients that open their streams and never read them would hold every
//! upstream connection the gateway can make. nginx bounds a flow-controlled stream with the
//! same `send_timeout`.
//!
//! A client can also hold a stream before its first byte: with an initial window of 0
//! (`SETTINGS_INITIAL_WINDOW_SIZE`), nothing of the answer can go out. hyper still polls the
//! body for its first frame before it waits for the window (and holds that frame), so the rule
//! below covers this case too (`tests/stream_send.rs` pins it, should hyper change its order).
//! An answer the gateway made (composed, cached) is one frame of up to `max_response_bytes` or
//! more; held whole by hyper, up to 200 per connection, it stayed until the connection ended. So
//! data goes to hyper in slices of at most [`SLICE`] bytes (no copy): a stalled stream holds one
//! slice there and the rest here, where the watchdog drops it.
//!
//! How: the answer's body ([`StreamWatched`]) notes when it handed hyper a frame that was not
//! its last. The first time that happens a watchdog task starts; when the body has not been
//! polled again `send_timeout` after such a frame, the watchdog drops the inner body, which
//! closes the upstream connection. If the client ever reads again, the body's next poll ends the
//! stream with an error (hyper resets it). Small answers, which come whole with their head, never
//! start a watchdog; it ends with the body.

use crate::error::BoxError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// `handed` while hyper polls the body (the wait is then the upstream's, which the body's own
/// idle bound covers).
const POLLED: u64 = u64::MAX;

/// The most data handed to hyper in one frame (a slice of the body's bytes, not a copy): what
/// one stalled stream holds beyond the watchdog's reach, an HTTP/2 frame's worth by default.
/// An answer the gateway made of at most this many bytes is handed over whole, unwatched.
pub(crate) const SLICE: usize = 16 * 1024;

/// What the body and its watchdog share.
struct Shared<B> {
    /// The answer's body; `None` once the watchdog cut it.
    body: Mutex<Option<B>>,
    /// When the body last handed hyper a frame that was not its last, in ms since `base`;
    /// [`POLLED`] while hyper polls it.
    handed: AtomicU64,
    base: Instant,
    /// The body ended (its last frame, an error, or hyper dropped it).
    ended: AtomicBool,
    /// Rung when `ended` goes up: the watchdog stops at once instead of at its next look.
    end: Notify,
}

impl<B> Shared<B> {
    fn body(&self) -> MutexGuard<'_, Option<B>> {
        // The slot holds a plain value: a panic elsewhere cannot leave it half-written.
        self.body.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn end(&self) {
        if !self.ended.swap(true, Ordering::Relaxed) {
            self.end.notify_one();
        }
    }
}

/// An HTTP/2 answer bounded by `send_timeout` (see the module docs).
pub(crate) struct StreamWatched<B> {
    state: State<Sliced<B>>,
    timeout: Duration,
    /// Whose answer it is, for the log line of a cut (shared, not formatted per answer).
    what: Arc<dyn std::fmt::Display + Send + Sync>,
}

/// Where the body is: held here until it hands out a frame that is not its last (a small
/// answer never does: no allocation, lock or task for it), then shared with its watchdog.
enum State<B> {
    Inline(B),
    Watched(Arc<Shared<B>>),
    Done,
}

impl<B> StreamWatched<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Send + Unpin + 'static,
{
    /// `body` bounded by `timeout`; `what` names the answer's sender in the log line of a cut.
    pub(crate) fn new(
        body: B,
        timeout: Duration,
        what: Arc<dyn std::fmt::Display + Send + Sync>,
    ) -> Self {
        StreamWatched {
            state: State::Inline(Sliced { body, rest: None }),
            timeout,
            what,
        }
    }

    /// The body handed out a frame that is not its last: note when, and from now on a
    /// watchdog looks.
    fn handed(&mut self) {
        if let State::Inline(_) = self.state {
            if let State::Inline(body) = std::mem::replace(&mut self.state, State::Done) {
                let shared = Arc::new(Shared {
                    body: Mutex::new(Some(body)),
                    handed: AtomicU64::new(POLLED),
                    base: Instant::now(),
                    ended: AtomicBool::new(false),
                    end: Notify::new(),
                });
                tokio::spawn(watch(
                    Arc::clone(&shared),
                    self.timeout,
                    Arc::clone(&self.what),
                ));
                self.state = State::Watched(shared);
            }
        }
        if let State::Watched(shared) = &self.state {
            let ms = u64::try_from(shared.base.elapsed().as_millis()).unwrap_or(POLLED - 1);
            shared.handed.store(ms, Ordering::Relaxed);
        }
    }
}

impl<B> Body for StreamWatched<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Send + Unpin + 'static,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let (polled, last) = match &mut this.state {
            State::Done => return Poll::Ready(None),
            State::Inline(body) => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                (polled, body.is_end_stream())
            }
            State::Watched(shared) => {
                if shared.ended.load(Ordering::Relaxed) {
                    return Poll::Ready(None);
                }
                shared.handed.store(POLLED, Ordering::Relaxed);
                let mut slot = shared.body();
                let Some(body) = slot.as_mut() else {
                    drop(slot);
                    shared.end();
                    return Poll::Ready(Some(Err(format!(
                        "the client took none of the answer for {}",
                        humantime::format_duration(this.timeout)
                    )
                    .into())));
                };
                let polled = Pin::new(&mut *body).poll_frame(cx);
                let last = body.is_end_stream();
                (polled, last)
            }
        };
        match &polled {
            Poll::Ready(Some(Ok(_))) if !last => this.handed(),
            Poll::Pending => {}
            _ => this.finish(),
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Inline(body) => body.is_end_stream(),
            State::Watched(shared) => {
                shared.ended.load(Ordering::Relaxed)
                    || shared.body().as_ref().is_none_or(Sliced::is_end_stream)
            }
            State::Done => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Inline(body) => body.size_hint(),
            State::Watched(shared) => shared
                .body()
                .as_ref()
                .map_or_else(SizeHint::default, Sliced::size_hint),
            State::Done => SizeHint::with_exact(0),
        }
    }
}

impl<B> StreamWatched<B> {
    /// The body ended (its last frame or an error): its watchdog stops.
    fn finish(&mut self) {
        if let State::Watched(shared) = &self.state {
            shared.end();
        }
    }
}

impl<B> Drop for StreamWatched<B> {
    fn drop(&mut self) {
        self.finish();
    }
}

/// An answer the gateway made (composed, or from the cache) for an HTTP/2 stream of route
/// `route`, bounded by `timeout` (see the module docs). One of at most [`SLICE`] bytes is
/// returned as it is: it goes to hyper whole, with nothing left here to cut.
pub(crate) fn made_answer(
    resp: http::Response<crate::upstream::Body>,
    timeout: Duration,
    route: &str,
) -> http::Response<crate::upstream::Body> {
    let body = resp.body();
    if body.is_end_stream() || body.size_hint().exact().is_some_and(|n| n <= SLICE as u64) {
        return resp;
    }
    let what: Arc<dyn std::fmt::Display + Send + Sync> = Arc::new(format!("route `{route}`"));
    resp.map(|body| http_body_util::BodyExt::boxed(StreamWatched::new(body, timeout, what)))
}

/// A body whose data frames are handed on in slices of at most [`SLICE`] bytes (see the module
/// docs): what hyper has not taken yet stays here, where a cut drops it.
struct Sliced<B> {
    body: B,
    /// The part of the last data frame not handed on yet.
    rest: Option<Bytes>,
}

impl<B> Sliced<B> {
    /// The next slice of `data`; the rest stays.
    fn slice(&mut self, mut data: Bytes) -> Frame<Bytes> {
        if data.len() > SLICE {
            let head = data.split_to(SLICE);
            self.rest = Some(data);
            Frame::data(head)
        } else {
            Frame::data(data)
        }
    }
}

impl<B> Body for Sliced<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(rest) = this.rest.take() {
            return Poll::Ready(Some(Ok(this.slice(rest))));
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => Poll::Ready(Some(Ok(this.slice(data)))),
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_none() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let hint = self.body.size_hint();
        let Some(rest) = &self.rest else {
            return hint;
        };
        let n = rest.len() as u64;
        // Upper first: `set_lower` refuses a lower bound above the upper one.
        let mut out = SizeHint::new();
        if let Some(upper) = hint.upper() {
            out.set_upper(upper.saturating_add(n));
        }
        out.set_lower(hint.lower().saturating_add(n));
        out
    }
}

/// Cut the body once it has waited on hyper for `timeout` after handing it a frame.
async fn watch<B>(
    shared: Arc<Shared<B>>,
    timeout: Duration,
    what: Arc<dyn std::fmt::Display + Send + Sync>,
) {
    loop {
        if shared.ended.load(Ordering::Relaxed) {
            return;
        }
        let handed = shared.handed.load(Ordering::Relaxed);
        let due = if handed == POLLED {
            Instant::now() + timeout
        } else {
            shared.base + Duration::from_millis(handed) + timeout
        };
        tokio::select! {
            () = shared.end.notified() => return,
            () = tokio::time::sleep_until(due) => {}
        }
        if handed != POLLED && shared.handed.load(Ordering::Relaxed) == handed {
            let cut = shared.body().take();
            if cut.is_some() {
                tracing::debug!(
                    from = %what,
                    timeout = ?timeout,
                    "an HTTP/2 stream's client took none of its answer within send_timeout; \
                     the answer was cut and its upstream connection closed"
                );
            }
            // Dropped outside the lock: closing the upstream connection is the body's drop.
            drop(cut);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A body of `frames` non-empty chunks that notes its drop.
    struct Chunks {
        frames: VecDeque<Bytes>,
        dropped: Arc<AtomicBool>,
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.frames.pop_front().map(|b| Ok(Frame::data(b))))
        }
        fn is_end_stream(&self) -> bool {
            self.frames.is_empty()
        }
        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.frames.iter().map(|b| b.len() as u64).sum())
        }
    }

    impl Drop for Chunks {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::Relaxed);
        }
    }

    /// An answer of `n` two-byte frames.
    fn chunks(n: usize) -> (StreamWatched<Chunks>, Arc<AtomicBool>) {
        watched((0..n).map(|_| Bytes::from_static(b"xy")).collect())
    }

    /// An answer of `frames`.
    fn watched(frames: VecDeque<Bytes>) -> (StreamWatched<Chunks>, Arc<AtomicBool>) {
        let dropped = Arc::new(AtomicBool::new(false));
        let body = Chunks {
            frames,
            dropped: Arc::clone(&dropped),
        };
        let what = Arc::new(String::from("upstream `u`"));
        let b = StreamWatched::new(body, Duration::from_secs(60), what);
        (b, dropped)
    }

    async fn frame(b: &mut StreamWatched<Chunks>) -> Option<Result<Frame<Bytes>, BoxError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *b).poll_frame(cx)).await
    }

    /// Let the watchdog run up to `now + d`.
    async fn pass(d: Duration) {
        tokio::time::sleep(d).await;
        tokio::task::yield_now().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_not_polled_for_the_timeout_gives_its_upstream_back() {
        let (mut b, dropped) = chunks(3);
        assert!(frame(&mut b).await.is_some_and(|f| f.is_ok()));
        pass(Duration::from_secs(59)).await;
        assert!(!dropped.load(Ordering::Relaxed), "cut before the timeout");
        pass(Duration::from_secs(2)).await;
        assert!(dropped.load(Ordering::Relaxed), "the stalled body was kept");
        // The client reads again: the stream ends in an error (hyper resets it), then nothing.
        assert!(frame(&mut b).await.is_some_and(|f| f.is_err()));
        assert!(frame(&mut b).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_read_now_and_then_is_never_cut() {
        let (mut b, dropped) = chunks(5);
        for _ in 0..4 {
            assert!(frame(&mut b).await.is_some_and(|f| f.is_ok()));
            pass(Duration::from_secs(50)).await;
        }
        assert!(!dropped.load(Ordering::Relaxed));
        assert!(
            frame(&mut b).await.is_some_and(|f| f.is_ok()),
            "the last frame"
        );
        assert!(frame(&mut b).await.is_none());
        // Its watchdog ended with the body: only this handle holds the shared state.
        tokio::task::yield_now().await;
        let State::Watched(shared) = &b.state else {
            panic!("no watchdog for a streamed answer")
        };
        assert_eq!(Arc::strong_count(shared), 1);
    }

    /// A large answer the gateway made goes to hyper a slice at a time, and what a stalled
    /// client has not taken is dropped after the timeout.
    #[tokio::test(start_paused = true)]
    async fn a_large_made_answer_is_handed_in_slices_and_cut_when_unread() {
        let big = Bytes::from(vec![7u8; 3 * SLICE + 100]);
        let (mut b, dropped) = watched([big].into());
        assert_eq!(b.size_hint().exact(), Some(3 * SLICE as u64 + 100));
        let first = frame(&mut b).await.expect("a frame").expect("data");
        assert_eq!(first.data_ref().map(Bytes::len), Some(SLICE));
        assert_eq!(b.size_hint().exact(), Some(2 * SLICE as u64 + 100));
        assert!(!b.is_end_stream());
        pass(Duration::from_secs(61)).await;
        assert!(dropped.load(Ordering::Relaxed), "the unread rest was kept");
        assert!(frame(&mut b).await.is_some_and(|f| f.is_err()));

        // Read on, it comes whole: three slices and the tail.
        let big = Bytes::from(vec![7u8; 3 * SLICE + 100]);
        let (mut b, _) = watched([big].into());
        let mut sizes = Vec::new();
        while let Some(f) = frame(&mut b).await {
            sizes.push(f.expect("data").into_data().map(|d| d.len()).unwrap_or(0));
        }
        assert_eq!(sizes, [SLICE, SLICE, SLICE, 100]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_that_comes_whole_starts_no_watchdog() {
        let (mut b, dropped) = chunks(1);
        assert!(frame(&mut b).await.is_some_and(|f| f.is_ok()));
        assert!(matches!(b.state, State::Inline(_)));
        assert!(b.is_end_stream());
        pass(Duration::from_secs(120)).await;
        assert!(!dropped.load(Ordering::Relaxed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_stream_ends_its_watchdog_at_once() {
        let (mut b, dropped) = chunks(3);
        assert!(frame(&mut b).await.is_some_and(|f| f.is_ok()));
        let State::Watched(shared) = &b.state else {
            panic!("no watchdog for a streamed answer")
        };
        let shared = Arc::clone(shared);
        drop(b);
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert_eq!(Arc::strong_count(&shared), 1, "the watchdog still runs");
        drop(shared);
        assert!(dropped.load(Ordering::Relaxed));
    }
}
