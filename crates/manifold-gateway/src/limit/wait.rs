//! The time a request spends waiting on its client's body: kept out of the latency the adaptive
//! limit measures, and out of the concurrency limit itself.
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
//! Nor does a request waiting on its client hold a concurrency slot: it does no work, and a
//! client that opened many streams and sent each a byte at a time held every slot (the limit
//! starts at 1,000, so five HTTP/2 connections were enough), and every other request was shed.
//! While the reader waits, the request's slot is lent back to the limiter ([`Slot`]); when the
//! body's next frame comes, the request takes it again, even past the limit (a request already
//! admitted is never shed halfway). So lent slots are bounded by the limit itself (and by the
//! adaptive ceiling, 4 × `max_connections`): past that, a waiting request keeps its slot, as
//! before. Requests at work are then never more than twice the limit, however many of them
//! send their bodies' last bytes at the same instant: without the bound, 32,768 requests each
//! sent one byte of body and then the rest at once were 32,768 compositions at work under
//! `concurrency = 2`.
//!
//! The meter costs nothing on the common path: a request without a body has none, and a body
//! that is already there when it is read (one that came with the head) never waits, so no clock
//! is read and no lock taken for it.

use super::Limiter;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

impl Limiter {
    /// A request starts waiting on its client: take its slot out of the count in flight,
    /// unless as many slots as the limit (or `lent_max`) are lent already (false: it keeps it).
    fn lend_slot(&self) -> bool {
        let bound = self.lent_max.min(self.limit.load(Ordering::Relaxed));
        if self.lent.fetch_add(1, Ordering::AcqRel) >= bound {
            self.lent.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        true
    }

    /// A request's body came: it counts in flight again, past the limit if need be (it was
    /// admitted; shedding it now would waste what its client sent).
    fn reclaim_slot(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.lent.fetch_sub(1, Ordering::AcqRel);
        if self.probe_idle.load(Ordering::SeqCst) {
            self.wake_probe();
        }
    }
}

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
    /// The request's concurrency slot, when it came from a [`super::Permit`].
    slot: Option<(Arc<Limiter>, Slot)>,
}

/// Where a request's concurrency slot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// With the request: it counts in flight.
    Held,
    /// Lent back while the request waits on its client.
    Lent,
    /// The permit ended: the slot is the limiter's for good.
    Returned,
}

impl Waited {
    fn lend(&mut self) {
        if let Some((limiter, slot @ Slot::Held)) = &mut self.slot {
            if limiter.lend_slot() {
                *slot = Slot::Lent;
            }
        }
    }

    fn reclaim(&mut self) {
        if let Some((limiter, slot @ Slot::Lent)) = &mut self.slot {
            limiter.reclaim_slot();
            *slot = Slot::Held;
        }
    }
}

impl ClientWait {
    /// The wait of a request holding a slot of `limiter`: lent back while it waits.
    pub(super) fn lending(limiter: &Arc<Limiter>) -> ClientWait {
        ClientWait(Arc::new(Mutex::new(Waited {
            slot: Some((Arc::clone(limiter), Slot::Held)),
            ..Waited::default()
        })))
    }

    /// The request's permit ends: its slot goes back to the limiter for good. Whether the slot
    /// was lent (then it is no longer counted in flight, and the permit must not count it out
    /// again).
    pub(super) fn settle(&self) -> bool {
        let mut w = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut w.slot {
            Some((limiter, slot)) => {
                let lent = *slot == Slot::Lent;
                if lent {
                    limiter.lent.fetch_sub(1, Ordering::AcqRel);
                }
                *slot = Slot::Returned;
                lent
            }
            None => false,
        }
    }

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
            if w.since.is_none() {
                w.since = Some(now);
                w.lend();
            }
        } else if let Some(since) = w.since.take() {
            w.total = w.total.saturating_add(now.saturating_duration_since(since));
            w.reclaim();
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
    use manifold_config::policy::Concurrency;
    use std::sync::atomic::Ordering;

    fn counts(l: &Limiter) -> (usize, usize) {
        (l.in_flight(), l.lent.load(Ordering::Relaxed))
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waiting_on_its_client_lends_its_slot_back() {
        let l = Limiter::new(Concurrency::Fixed(2), 8192, Arc::default());
        let mut a = l.try_acquire().expect("first");
        let mut meter = a.client_wait().meter();
        // Its body has not come: its slot is lent, so two more are admitted, not one.
        meter.polled(true);
        assert_eq!(counts(&l), (0, 1));
        let b = l.try_acquire().expect("second");
        let c = l.try_acquire().expect("third");
        assert!(
            l.try_acquire().is_none(),
            "the limit holds for working requests"
        );
        // Polled again while still waiting: nothing changes.
        meter.polled(true);
        assert_eq!(counts(&l), (2, 1));
        // The body came: the request takes its slot again, past the limit (it was admitted).
        meter.polled(false);
        assert_eq!(counts(&l), (3, 0));
        assert!(l.try_acquire().is_none());
        // Waiting again, then finished while waiting (its client's body given up): the slot
        // is counted out once, whichever of the permit and the meter goes first.
        meter.polled(true);
        assert_eq!(counts(&l), (2, 1));
        a.finish(None);
        assert_eq!(counts(&l), (2, 0));
        drop(meter);
        assert_eq!(counts(&l), (2, 0));
        drop((b, c));
        assert_eq!(counts(&l), (0, 0));

        // The meter first: its drop ends the wait and takes the slot back; the permit then
        // gives it up.
        let mut d = l.try_acquire().expect("free again");
        let mut meter = d.client_wait().meter();
        meter.polled(true);
        assert_eq!(counts(&l), (0, 1));
        drop(meter);
        assert_eq!(counts(&l), (1, 0));
        drop(d);
        assert_eq!(counts(&l), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn lent_slots_are_bounded_past_which_a_waiting_request_keeps_its_own() {
        // At most as many slots lent as the limit (four).
        let l = Limiter::new(Concurrency::Fixed(4), 8192, Arc::default());
        let mut held = Vec::new();
        for _ in 0..6 {
            let mut p = l.try_acquire().expect("admitted");
            let mut m = p.client_wait().meter();
            m.polled(true);
            held.push((p, m));
        }
        assert_eq!(counts(&l), (2, 4));
        // The two that kept their slots end first; the lent ones after.
        for (p, m) in held.drain(..).rev() {
            drop(p);
            drop(m);
        }
        assert_eq!(counts(&l), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn every_other_end_while_lent_counts_the_slot_out_once() {
        let l = Limiter::new(Concurrency::Fixed(2), 8192, Arc::default());
        // Cancelled (an HTTP/2 reset, a client gone) while lent; the body reader, still alive
        // (a proxied body in the upstream connection), waits and is woken again after.
        let mut p = l.try_acquire().expect("admitted");
        let mut meter = p.client_wait().meter();
        meter.polled(true);
        drop(p);
        assert_eq!(counts(&l), (0, 0));
        meter.polled(false);
        meter.polled(true);
        drop(meter);
        assert_eq!(counts(&l), (0, 0));

        // Released while lent, then its reader ends.
        let mut p = l.try_acquire().expect("admitted");
        let mut meter = p.client_wait().meter();
        meter.polled(true);
        p.release();
        assert_eq!(counts(&l), (0, 0));
        meter.polled(false);
        assert_eq!(counts(&l), (0, 0));

        // An early answer (the upstream answered before the body ended): finished while the
        // body was flowing, then the reader waits and ends.
        let mut p = l.try_acquire().expect("admitted");
        let mut meter = p.client_wait().meter();
        meter.polled(false);
        p.finish(None);
        assert_eq!(counts(&l), (0, 0));
        meter.polled(true);
        assert_eq!(counts(&l), (0, 0));
        drop(meter);

        // Two readers of one request's body (a cache fill and its own): one slot, lent once.
        let mut p = l.try_acquire().expect("admitted");
        let (mut a, mut b) = (p.client_wait().meter(), p.client_wait().meter());
        a.polled(true);
        b.polled(true);
        assert_eq!(counts(&l), (0, 1));
        a.polled(false);
        assert_eq!(counts(&l), (1, 0));
        drop(b);
        drop(p);
        drop(a);
        assert_eq!(counts(&l), (0, 0));
    }

    /// Requests that lent their slots and then all get their bodies at once are at most the
    /// limit more than the limit: never the thousands a client could line up otherwise.
    #[tokio::test(start_paused = true)]
    async fn a_burst_of_bodies_arriving_at_once_is_at_most_twice_the_limit_at_work() {
        let l = Limiter::new(Concurrency::Fixed(2), 8192, Arc::default());
        let mut waiting = Vec::new();
        // Admit as many as will be admitted, each sending one byte of body and stalling.
        while let Some(mut p) = l.try_acquire() {
            let mut m = p.client_wait().meter();
            m.polled(true);
            waiting.push((p, m));
            assert!(waiting.len() <= 4, "admitted past twice the limit");
        }
        assert_eq!(waiting.len(), 4);
        // Every body's rest arrives at the same instant.
        for (_, m) in &mut waiting {
            m.polled(false);
        }
        assert_eq!(counts(&l), (4, 0));
        assert!(l.try_acquire().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_kept_its_slot_at_the_bound_gives_it_back_once() {
        // A limit of four: four slots may be lent; the fifth waiting request keeps its own.
        let l = Limiter::new(Concurrency::Fixed(4), 8192, Arc::default());
        let mut lent = Vec::new();
        for _ in 0..4 {
            let mut p = l.try_acquire().expect("admitted");
            let mut m = p.client_wait().meter();
            m.polled(true);
            lent.push((p, m));
        }
        let mut kept = l.try_acquire().expect("admitted");
        let mut m = kept.client_wait().meter();
        m.polled(true);
        assert_eq!(counts(&l), (1, 4));
        // A lent slot comes back meanwhile: the one still waiting does not lend late.
        drop(lent.pop());
        m.polled(true);
        assert_eq!(counts(&l), (1, 3));
        // Its permit ends while it waits, then its reader.
        drop(kept);
        drop(m);
        assert_eq!(counts(&l), (0, 3));
        drop(lent);
        assert_eq!(counts(&l), (0, 0));
    }

    /// Permits and their readers on different threads, ending in either order while the reader
    /// flips between waiting and not: the counts end at zero, never having wrapped below it.
    #[test]
    fn permits_and_readers_racing_on_threads_leave_nothing_counted() {
        let l = Limiter::new(Concurrency::Fixed(1_000_000), 8192, Arc::default());
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let l = &l;
                s.spawn(move || {
                    for i in 0..2_000u32 {
                        let mut p = l.try_acquire().expect("admitted");
                        let mut m = p.client_wait().meter();
                        let reader = std::thread::spawn(move || {
                            for k in 0..(i % 7) {
                                m.polled(k % 2 == 0);
                            }
                            m
                        });
                        if (i + t) % 3 == 0 {
                            p.finish(None);
                        } else if (i + t) % 3 == 1 {
                            p.release();
                        } else {
                            drop(p);
                        }
                        let m = reader.join().expect("reader");
                        assert!(l.in_flight() < 1 << 20, "wrapped: {}", l.in_flight());
                        drop(m);
                    }
                });
            }
        });
        assert_eq!(counts(&l), (0, 0));
    }

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
