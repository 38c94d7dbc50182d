//! The send timeout (`[server] send_timeout`): a client that accepts no byte of an answer for
//! that long is disconnected, as nginx's `send_timeout` does.
//!
//! Why: once an answer's head is out, nothing else bounds a client that stops reading. hyper's
//! write to the socket waits, the streamed body is no longer polled (so its own idle bound and
//! the route's deadline never ring), and the connection held its slot and the upstream
//! connection streaming to it until `h2_idle_timeout` plus `header_read_timeout`. A client that
//! reads slowly but reads is not cut: the clock restarts whenever a write makes progress.
//!
//! How, without a clock read per write: the client socket's wrapper ([`SendWatched`], on every
//! listener's socket or TLS stream) counts writes that moved bytes and raises
//! a flag when a write has to wait; raising it wakes the connection's clock ([`crate::conn::run`])
//! once, which notes the count and looks again `send_timeout` later: a count unchanged with the
//! flag still up means no byte went out in all that time.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How the connection's writes to its client are going. Part of its `Activity`.
#[derive(Debug, Default)]
pub(crate) struct Sending {
    /// Writes (and flushes) that completed.
    writes: AtomicU64,
    /// The last write or flush had to wait for the client.
    blocked: AtomicBool,
    /// Rung when `blocked` goes up, and when the client cancels too many requests: the
    /// doorbell of the connection's clock ([`crate::conn::run`]), which then looks at both.
    pub(crate) wake: Notify,
}

impl Sending {
    /// Note a write's or a flush's outcome. A cheap path for the common case: a completed write
    /// is one relaxed increment and one relaxed load.
    #[inline]
    pub(crate) fn after<T>(&self, outcome: &Poll<io::Result<T>>) {
        match outcome {
            Poll::Ready(Ok(_)) => {
                self.writes.fetch_add(1, Ordering::Relaxed);
                if self.blocked.load(Ordering::Relaxed) {
                    self.blocked.store(false, Ordering::Relaxed);
                }
            }
            Poll::Pending => {
                if !self.blocked.swap(true, Ordering::Relaxed) {
                    self.wake.notify_one();
                }
            }
            Poll::Ready(Err(_)) => {}
        }
    }
}

/// What the connection's clock remembers of a blocked write: the write count when it saw the
/// block, and when.
#[derive(Debug, Default)]
pub(crate) struct Stall(Option<(u64, Instant)>);

impl Stall {
    /// Look at `sending` at `now`: `Err(())` when its writes have been blocked, with no write
    /// completing, for `timeout`; else when to look again (`None`: nothing is blocked).
    pub(crate) fn check(
        &mut self,
        sending: &Sending,
        now: Instant,
        timeout: Duration,
    ) -> Result<Option<Instant>, ()> {
        if !sending.blocked.load(Ordering::Relaxed) {
            self.0 = None;
            return Ok(None);
        }
        let writes = sending.writes.load(Ordering::Relaxed);
        match self.0 {
            Some((seen, since)) if seen == writes => {
                if now >= since + timeout {
                    Err(())
                } else {
                    Ok(Some(since + timeout))
                }
            }
            _ => {
                self.0 = Some((writes, now));
                Ok(Some(now + timeout))
            }
        }
    }
}

/// A client stream whose writes are reported to its connection's [`Sending`]: the TLS
/// listener's stream, and the plaintext listener's socket under `idle::watch::Prefixed`.
pub(crate) struct SendWatched<IO> {
    io: IO,
    activity: Arc<crate::conn::Activity>,
}

impl<IO> SendWatched<IO> {
    pub(crate) fn new(io: IO, activity: Arc<crate::conn::Activity>) -> Self {
        SendWatched { io, activity }
    }

    /// The connection whose writes are reported.
    pub(crate) fn activity(&self) -> &crate::conn::Activity {
        &self.activity
    }

    /// The stream, unwrapped (a plaintext connection handed to the parking lot).
    pub(crate) fn into_inner(self) -> IO {
        self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for SendWatched<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for SendWatched<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.activity.sending.after(&r);
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.activity.sending.after(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.activity.sending.after(&r);
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn a_write_blocked_with_no_progress_for_the_timeout_is_a_stall() {
        let s = Sending::default();
        let mut stall = Stall::default();
        let t0 = Instant::now();
        assert_eq!(stall.check(&s, t0, T), Ok(None), "nothing blocked");
        s.after::<usize>(&Poll::Ready(Ok(10)));
        s.after::<usize>(&Poll::Pending);
        assert_eq!(stall.check(&s, t0, T), Ok(Some(t0 + T)));
        // Still blocked, nothing written: the deadline holds, then it is a stall.
        assert_eq!(stall.check(&s, t0 + T / 2, T), Ok(Some(t0 + T)));
        assert_eq!(stall.check(&s, t0 + T, T), Err(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_takes_a_byte_now_and_then_is_not_cut() {
        let s = Sending::default();
        let mut stall = Stall::default();
        let t0 = Instant::now();
        s.after::<usize>(&Poll::Pending);
        assert_eq!(stall.check(&s, t0, T), Ok(Some(t0 + T)));
        // A write went through, and the next one waits again: the clock starts over.
        s.after::<usize>(&Poll::Ready(Ok(1)));
        s.after::<usize>(&Poll::Pending);
        let t1 = t0 + T - Duration::from_secs(1);
        assert_eq!(stall.check(&s, t1, T), Ok(Some(t1 + T)));
        assert_eq!(stall.check(&s, t0 + T, T), Ok(Some(t1 + T)));
        // Unblocked: nothing to watch.
        s.after::<()>(&Poll::Ready(Ok(())));
        assert_eq!(stall.check(&s, t1 + T, T), Ok(None));
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_first_block_rings_the_clock() {
        let s = Sending::default();
        s.after::<usize>(&Poll::Pending);
        s.after::<usize>(&Poll::Pending);
        // One stored permit: the first wait returns at once, a second would wait.
        s.wake.notified().await;
        let again = tokio::time::timeout(Duration::from_millis(20), s.wake.notified()).await;
        assert!(again.is_err(), "a second notification for the same block");
    }
}
