//! `read_whole`: a body of many small chunks is copied as it comes, not held frame by frame.
//! [`Drip`] is also what the upstream stack's tests read an answer of one-byte chunks with.

use super::*;
use http_body::Frame;
use http_body_util::Full;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Frames of one body alive now and at most.
#[derive(Debug, Default)]
pub(crate) struct Frames {
    live: AtomicUsize,
    peak: AtomicUsize,
}

impl Frames {
    /// The most frames that were alive at once.
    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Frames alive now.
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }
}

/// One byte of a frame that counts itself while alive.
struct Counted(u8, Arc<Frames>);

impl Counted {
    fn frame(b: u8, frames: &Arc<Frames>) -> Bytes {
        let live = frames.live.fetch_add(1, Ordering::SeqCst) + 1;
        frames.peak.fetch_max(live, Ordering::SeqCst);
        Bytes::from_owner(Counted(b, Arc::clone(frames)))
    }
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        std::slice::from_ref(&self.0)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.1.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A chunked body of one-byte chunks, as a client or an upstream may send it.
pub(crate) struct Drip(usize, Arc<Frames>);

impl Drip {
    /// A body of `n` one-byte frames, and the count of its frames alive.
    pub(crate) fn new(n: usize) -> (Drip, Arc<Frames>) {
        let frames = Arc::new(Frames::default());
        (Drip(n, Arc::clone(&frames)), frames)
    }
}

impl http_body::Body for Drip {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.0 == 0 {
            return Poll::Ready(None);
        }
        self.0 -= 1;
        let b = b'a' + (self.0 % 26) as u8;
        Poll::Ready(Some(Ok(Frame::data(Counted::frame(b, &self.1)))))
    }
}

#[tokio::test]
async fn a_body_of_many_small_chunks_is_not_held_frame_by_frame() {
    let n = 10_000;
    let (drip, frames) = Drip::new(n);
    let body = read_whole(drip, n).await.expect("under the limit");
    assert_eq!(body.len(), n);
    assert_eq!(&body[..3], b"pon");
    // The frames were copied as they came, not kept until the end.
    assert!(frames.peak() <= 2, "{} frames held at once", frames.peak());
    assert_eq!(frames.live(), 0);
    // Past the limit: the limit's error.
    let e = read_whole(Drip::new(11).0, 10)
        .await
        .expect_err("over the limit");
    assert!(e.is::<http_body_util::LengthLimitError>(), "{e}");
    // One frame is kept as it is.
    let one = read_whole(Full::new(Bytes::from_static(b"{}")), 10).await;
    assert_eq!(one.expect("small"), Bytes::from_static(b"{}"));
}

/// A body read in many frames is kept in a buffer of its size: an answer a cache keeps holds
/// no spare room the cache does not count (the frames' copies grew the buffer by doubling).
#[tokio::test]
async fn a_body_read_in_many_frames_keeps_no_spare_room() {
    for n in [3, 1000, 10_000, 70_000] {
        let body = read_whole(Drip::new(n).0, n)
            .await
            .expect("under the limit");
        assert_eq!(body.len(), n);
        let buf = body.try_into_mut().expect("the only reference");
        assert!(
            buf.capacity() <= (n + n / 4).max(64),
            "{n} bytes in a buffer of {}",
            buf.capacity()
        );
    }
}
