//! An HTTP/1 connection's answers, each run in a box the connection keeps between requests.
//!
//! hyper's HTTP/1 connection holds its service's future inline, in a box it makes with the
//! connection (`Box::pin(None)`, its `Server::new`), and moves each request's future in there
//! whole. The handler's future of a proxied request is several KiB, and both moves are
//! `memcpy`s of all of it: the one at the connection's making was half of what waking a parked
//! connection ([`super`]) cost in instructions (bench/woken-callgrind.sh). Here hyper gets a
//! future of a few pointers; the answer's own future is made in a box of the connection's
//! ([`AnswerSlot`]), reused by its next requests and dropped with the connection's service when
//! it parks. A busy connection allocates that box once, as hyper did its own.

use super::watch::Tracked;
use super::Plain;
use crate::conn::{self, Activity};
use crate::respond::ClientId;
use crate::upstream::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::{service_fn, Service};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// Where an HTTP/1 connection keeps its answer's future between requests (finished: it owns
/// nothing then).
type AnswerSlot<A> = Arc<Mutex<Option<Pin<Box<A>>>>>;

/// The service of one HTTP/1 hyper connection: [`conn::answer`], with the response body
/// tracked, its future run in the connection's [`AnswerSlot`].
pub(super) fn service_h1<H, F>(
    plain: &Plain<H>,
    activity: &Arc<Activity>,
    peer: SocketAddr,
) -> impl Service<
    Request<Incoming>,
    Response = Response<Tracked>,
    Error = Infallible,
    Future: Send + 'static,
> + Send
       + 'static
where
    H: Fn(Request<Incoming>, SocketAddr, ClientId) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let in_conn = Arc::clone(activity);
    let handler = plain.handler.clone();
    let passthrough = plain.ends.limits.passthrough;
    let spare: AnswerSlot<_> = Arc::default();
    service_fn(move |req: Request<Incoming>| {
        let activity = watch_body(&in_conn, &req);
        let handler = handler.clone();
        // Only the request and a few pointers go into hyper's connection.
        in_slot(Arc::clone(&spare), move || {
            tracked_answer(activity, req, peer, handler, passthrough)
        })
    })
}

/// The connection's activity for one more request, told to keep the connection's buffers
/// (not to park) while the request has a body still to read.
pub(super) fn watch_body(activity: &Arc<Activity>, req: &Request<Incoming>) -> Arc<Activity> {
    if !http_body::Body::is_end_stream(req.body()) {
        activity.idle.keep.store(true, Ordering::Relaxed);
    }
    Arc::clone(activity)
}

/// One request's answer on a plain connection, HTTP/1 or HTTP/2: [`conn::answer`] with the
/// response body tracked. An `async fn`, so that [`conn::answer`]'s future is made where this
/// one already is (in the slot's box for HTTP/1), not made and then moved there.
pub(super) async fn tracked_answer<H, F>(
    activity: Arc<Activity>,
    req: Request<Incoming>,
    peer: SocketAddr,
    handler: H,
    passthrough: bool,
) -> Result<Response<Tracked>, Infallible>
where
    H: Fn(Request<Incoming>, SocketAddr, ClientId) -> F,
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    let Ok(resp) = conn::answer(Arc::clone(&activity), req, peer, handler, passthrough).await;
    Ok(resp.map(|body| Tracked::new(body, activity)))
}

/// Run the future `make` makes in the slot's box (a new box when the slot is empty, as for a
/// connection's first request), and put the box back when it is done. What the caller holds
/// meanwhile is a few pointers, whatever the size of `make`'s future.
async fn in_slot<A: Future>(spare: AnswerSlot<A>, make: impl FnOnce() -> A) -> A::Output {
    let mut slot = boxed(&spare, make);
    let out = slot.as_mut().await;
    if let Ok(mut s) = spare.lock() {
        s.get_or_insert(slot);
    }
    out
}

/// The answer `make` makes, in the slot's box, or in a new one when the slot is empty.
/// Inlined, and the answer made only where it is stored: handed down by value instead, the
/// answer's future was copied on the way (callgrind: ~470 instructions of `memcpy` per proxied
/// request more).
#[inline(always)]
fn boxed<A>(spare: &Mutex<Option<Pin<Box<A>>>>, make: impl FnOnce() -> A) -> Pin<Box<A>> {
    match spare.lock().ok().and_then(|mut s| s.take()) {
        Some(mut slot) => {
            slot.as_mut().set(make());
            slot
        }
        None => Box::pin(make()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the slot's box is, if it holds one.
    fn held<A>(spare: &AnswerSlot<A>) -> Option<usize> {
        let s = spare.lock().unwrap();
        s.as_deref().map(|a| std::ptr::from_ref(a) as usize)
    }

    #[tokio::test]
    async fn an_answer_runs_in_the_slot_s_box_and_the_next_one_reuses_it() {
        // A future as large as a proxied request's, holding its bytes across a wait.
        let big = |n: u8| {
            move || async move {
                let buf = [n; 8192];
                tokio::task::yield_now().await;
                buf[100]
            }
        };
        let spare: AnswerSlot<_> = Arc::default();
        let first = in_slot(Arc::clone(&spare), big(7));
        // What hyper would hold: a few pointers, not the answer's 8 KiB.
        assert!(
            std::mem::size_of_val(&first) < 256,
            "{}",
            std::mem::size_of_val(&first)
        );
        assert_eq!(held(&spare), None);
        assert_eq!(first.await, 7);
        let boxed_at = held(&spare);
        assert!(boxed_at.is_some());
        // The next answer runs in the same box (and takes it while it runs).
        let mut second = std::pin::pin!(in_slot(Arc::clone(&spare), big(9)));
        assert!(futures_poll_once(second.as_mut()).await.is_none());
        assert_eq!(held(&spare), None);
        assert_eq!(second.await, 9);
        assert_eq!(held(&spare), boxed_at);
    }

    #[tokio::test]
    async fn an_answer_dropped_unfinished_takes_its_box_with_it() {
        let spare: AnswerSlot<_> = Arc::default();
        let pending = || std::future::pending::<()>();
        let mut answer = Box::pin(in_slot(Arc::clone(&spare), pending));
        assert!(futures_poll_once(answer.as_mut()).await.is_none());
        drop(answer);
        // The next answer makes a box of its own.
        assert_eq!(held(&spare), None);
    }

    /// Poll once: `Some` output when ready.
    async fn futures_poll_once<F: Future>(mut f: Pin<&mut F>) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match f.as_mut().poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
