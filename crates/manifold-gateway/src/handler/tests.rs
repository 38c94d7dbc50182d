//! `read_whole`: a body of many small chunks is copied as it comes, not held frame by frame.

use super::*;
use http_body::Frame;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

/// Frames alive now and at most, across the test's bodies.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// One byte of a frame that counts itself while alive.
struct Counted(u8);

impl Counted {
    fn frame(b: u8) -> Bytes {
        let live = LIVE.fetch_add(1, Ordering::SeqCst) + 1;
        PEAK.fetch_max(live, Ordering::SeqCst);
        Bytes::from_owner(Counted(b))
    }
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        std::slice::from_ref(&self.0)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A chunked body of one-byte chunks, as a client may send it.
struct Drip(usize);

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
        Poll::Ready(Some(Ok(Frame::data(Counted::frame(
            b'a' + (self.0 % 26) as u8,
        )))))
    }
}

#[tokio::test]
async fn a_body_of_many_small_chunks_is_not_held_frame_by_frame() {
    let n = 10_000;
    let body = read_whole(Drip(n), n).await.expect("under the limit");
    assert_eq!(body.len(), n);
    assert_eq!(&body[..3], b"pon");
    // The frames were copied as they came, not kept until the end.
    assert!(
        PEAK.load(Ordering::SeqCst) <= 2,
        "{PEAK:?} frames held at once"
    );
    assert_eq!(LIVE.load(Ordering::SeqCst), 0);
    // Past the limit: the limit's error.
    let e = read_whole(Drip(11), 10).await.expect_err("over the limit");
    assert!(e.is::<http_body_util::LengthLimitError>(), "{e}");
    // One frame is kept as it is.
    let one = read_whole(Full::new(Bytes::from_static(b"{}")), 10).await;
    assert_eq!(one.expect("small"), Bytes::from_static(b"{}"));
}
