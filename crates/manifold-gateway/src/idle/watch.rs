//! What hyper's HTTP/1 connection does, as [`IdleState`](super::IdleState) sees it: the socket's writes and
//! flushes ([`Prefixed`], which also serves bytes read before hyper's connection existed) and the
//! response bodies hyper has not finished with ([`Tracked`]).

use crate::conn::Activity;
use crate::error::BoxError;
use crate::send::SendWatched;
use crate::upstream::Body;
use bytes::{Buf, Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// `first` then `then`, without copying when either is empty.
pub(super) fn join(first: Bytes, then: Bytes) -> Bytes {
    if then.is_empty() {
        return first;
    }
    if first.is_empty() {
        return then;
    }
    let mut all = BytesMut::with_capacity(first.len() + then.len());
    all.extend_from_slice(&first);
    all.extend_from_slice(&then);
    all.freeze()
}

/// The socket, with bytes already read from it served first, and its writes and flushes
/// reported to the connection's [`IdleState`](super::IdleState) (and, through
/// [`SendWatched`], to its send timeout: one place counts write progress for every listener).
pub(super) struct Prefixed {
    pub(super) pre: Bytes,
    io: SendWatched<TcpStream>,
}

impl Prefixed {
    pub(super) fn new(pre: Bytes, io: TcpStream, activity: Arc<Activity>) -> Self {
        Prefixed {
            pre,
            io: SendWatched::new(io, activity),
        }
    }

    /// The socket and the bytes read ahead but not yet served.
    pub(super) fn into_parts(self) -> (TcpStream, Bytes) {
        (self.io.into_inner(), self.pre)
    }

    fn activity(&self) -> &Activity {
        self.io.activity()
    }

    fn wrote(&self) {
        self.activity()
            .idle
            .unflushed
            .store(true, Ordering::Relaxed);
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pre.is_empty() {
            let n = this.pre.len().min(buf.remaining());
            buf.put_slice(&this.pre[..n]);
            this.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.wrote();
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.wrote();
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.io).poll_flush(cx);
        if matches!(flushed, Poll::Ready(Ok(()))) {
            this.activity()
                .idle
                .unflushed
                .store(false, Ordering::Relaxed);
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.activity().idle.keep.store(true, Ordering::Relaxed);
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// A response body that counts as open until hyper drops it (hyper drops it once it has
/// taken its last frame, or abandons it).
pub(super) struct Tracked {
    body: Body,
    activity: Arc<Activity>,
}

impl Tracked {
    pub(super) fn new(body: Body, activity: Arc<Activity>) -> Self {
        activity.idle.bodies.fetch_add(1, Ordering::Relaxed);
        Tracked { body, activity }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.activity.idle.bodies.fetch_sub(1, Ordering::Relaxed);
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
