//! The parking lot: where a plaintext listener's idle HTTP/1 connections wait for their next
//! request, outside tokio.
//!
//! A connection parked inside its own tokio task still cost a task cell and tokio's
//! `ScheduledIo` (both padded to 128 bytes), its `Activity` and a timer entry: ~1.5 KB of live
//! heap per idle connection, interleaved with the buffers every connection frees when it parks,
//! which then stayed resident (`manifold bench memory`, docs/benchmarks.md). nginx holds an idle
//! connection as a file descriptor in epoll and a small struct; so does this. The connection's
//! task hands its socket to the lot ([`Lot::park`]) and ends: the socket leaves tokio's reactor
//! (`into_std`, which frees its `ScheduledIo`) and is registered with the lot's own epoll (a
//! `mio::Poll`), and what is kept is one slab entry (the socket, the peer's address, the
//! connection-slot permit) and one deadline.
//!
//! The lot's epoll file descriptor is itself registered with tokio ([`AsyncFd`]): it is readable
//! when any parked socket is, so one task per listener ([`tend`]) drives the lot on tokio's own
//! threads — no thread of its own, no hop between threads. On readiness (data, a half-close, a
//! reset) the entry leaves the lot and the connection gets a new task ([`super::woken`]), which
//! reads what came. A parked connection is closed when no byte of a new request arrives within
//! its deadline (`header_read_timeout` after its last answer, as before), and every parked
//! connection is closed at once when the drain begins. Each entry holds its connection's slot
//! permit, so the lot never holds more than `max_connections` entries.

use super::Plain;
use crate::respond::ClientId;
use crate::upstream::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Readiness events taken from the lot's epoll per `epoll_wait`.
const EVENTS: usize = 256;

/// One listener's parked connections, shared by its connection tasks (which park) and the lot's
/// task (which wakes, times out and drains them).
pub(crate) struct Lot {
    parked: Mutex<Parked>,
    /// The lot's epoll, for registering a parked socket from the connection's own task.
    registry: Registry,
    /// Tells the lot's task that its timer must ring earlier (a first or earlier deadline).
    sooner: Notify,
}

/// A parked connection: all that is kept of it.
struct Entry {
    io: std::net::TcpStream,
    peer: SocketAddr,
    _slot: crate::server::Slot,
}

/// A place in the slab. `generation` tells a deadline still meant for this place's entry from one
/// left over by an earlier entry (deadlines are removed lazily).
struct Place {
    generation: u32,
    /// The next free place when this one is free.
    next_free: u32,
    entry: Option<Entry>,
}

/// No free place.
const NONE: u32 = u32::MAX;

/// The parked connections and their deadlines.
struct Parked {
    places: Vec<Place>,
    free: u32,
    live: usize,
    /// (deadline, place, generation), soonest first; entries that left the lot stay until their
    /// deadline comes or the heap is compacted.
    due: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    /// When the lot's task's timer rings (none: not armed).
    armed: Option<Instant>,
    /// The drain began (or the lot's task ended): nothing parks any more.
    closed: bool,
}

impl Parked {
    fn insert(&mut self, entry: Entry) -> Option<(u32, u32)> {
        let key = if self.free == NONE {
            let key = u32::try_from(self.places.len())
                .ok()
                .filter(|&k| k != NONE)?;
            self.places.push(Place {
                generation: 0,
                next_free: NONE,
                entry: None,
            });
            key
        } else {
            self.free
        };
        let place = &mut self.places[key as usize];
        self.free = place.next_free;
        place.generation = place.generation.wrapping_add(1);
        place.entry = Some(entry);
        self.live += 1;
        Some((key, place.generation))
    }

    /// Take the entry at `key` (of `generation`, if given) out of the lot.
    fn remove(&mut self, key: u32, generation: Option<u32>) -> Option<Entry> {
        let place = self.places.get_mut(key as usize)?;
        if generation.is_some_and(|g| g != place.generation) {
            return None;
        }
        let entry = place.entry.take()?;
        place.next_free = self.free;
        self.free = key;
        self.live -= 1;
        Some(entry)
    }

    /// Deadlines of entries that left the lot are dropped once they outnumber the live ones, so
    /// the heap stays within twice the lot (connections that park and wake again and again
    /// within one `header_read_timeout` would otherwise pile them up).
    fn compact(&mut self) {
        if self.due.len() <= 2 * self.live + 64 {
            return;
        }
        let places = &self.places;
        self.due.retain(|Reverse((_, key, generation))| {
            let place = &places[*key as usize];
            place.generation == *generation && place.entry.is_some()
        });
    }

    /// Close every parked connection (their permits come back).
    fn close(&mut self) {
        self.closed = true;
        self.places = Vec::new();
        self.due = BinaryHeap::new();
        self.free = NONE;
        self.live = 0;
    }
}

impl Lot {
    /// A lot and the epoll its task drives ([`tend`]).
    pub(crate) fn new() -> io::Result<(Lot, Poll)> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let lot = Lot {
            parked: Mutex::new(Parked {
                places: Vec::new(),
                free: NONE,
                live: 0,
                due: BinaryHeap::new(),
                armed: None,
                closed: false,
            }),
            registry,
            sooner: Notify::new(),
        };
        Ok((lot, poll))
    }

    fn lock(&self) -> MutexGuard<'_, Parked> {
        self.parked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connections parked now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().live
    }

    /// Park `io` until its next request's first bytes arrive, or `due`. The caller's task ends
    /// after this: the lot holds the socket and the slot. A socket that cannot be parked (the
    /// drain began, the lot is full of places, the kernel refused) is closed.
    pub(crate) fn park(
        &self,
        io: TcpStream,
        peer: SocketAddr,
        slot: crate::server::Slot,
        due: Instant,
    ) {
        // Leaves tokio's reactor: its registration (`ScheduledIo`) is freed.
        let Ok(io) = io.into_std() else {
            return;
        };
        let fd = io.as_raw_fd();
        let mut parked = self.lock();
        if parked.closed {
            return;
        }
        let Some((key, generation)) = parked.insert(Entry {
            io,
            peer,
            _slot: slot,
        }) else {
            return;
        };
        // Registered under the lock: nothing can close the socket meanwhile (a closed and
        // reused descriptor number would register someone else's socket).
        let token = Token(key as usize);
        if let Err(e) = self
            .registry
            .register(&mut SourceFd(&fd), token, Interest::READABLE)
        {
            tracing::debug!(%peer, error = %e, "could not park an idle connection; closed");
            parked.remove(key, None);
            return;
        }
        parked.due.push(Reverse((due, key, generation)));
        parked.compact();
        let sooner = parked.armed.is_none_or(|at| due < at);
        if sooner {
            parked.armed = Some(due);
        }
        drop(parked);
        if sooner {
            self.sooner.notify_one();
        }
    }

    /// Close the parked connections whose deadline passed; the next deadline, if any (the
    /// timer is armed for it).
    fn expire(&self, now: Instant, timeout: Duration) -> Option<Instant> {
        let mut parked = self.lock();
        while let Some(&Reverse((due, key, generation))) = parked.due.peek() {
            if due > now {
                break;
            }
            parked.due.pop();
            if let Some(entry) = parked.remove(key, Some(generation)) {
                tracing::debug!(
                    peer = %entry.peer,
                    ?timeout,
                    "no new request within header_read_timeout; keep-alive connection closed"
                );
            }
        }
        let next = parked.due.peek().map(|Reverse((due, _, _))| *due);
        parked.armed = next;
        next
    }
}

/// Drive `plain`'s lot (`poll` is its epoll) until the drain begins or `gone` is cancelled (the
/// listener's `serve` ended without a drain): wake parked connections whose socket became
/// readable, close those past their deadline, then close all that are left.
pub(crate) async fn tend<H, F>(poll: Poll, plain: Arc<Plain<H>>, gone: CancellationToken)
where
    H: Fn(Request<Incoming>, SocketAddr, ClientId) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let Some(lot) = plain.lot.as_ref() else {
        return;
    };
    // `with_interest` is deprecated because a type's `as_raw_fd` might name a descriptor it
    // does not own; a `Poll` owns its epoll's, and keeps it open as long as the `AsyncFd` owns
    // the `Poll`. (The replacement is `unsafe`, which the workspace forbids.)
    #[allow(deprecated)]
    let epoll = AsyncFd::with_interest(poll, tokio::io::Interest::READABLE);
    match epoll {
        Ok(mut epoll) => {
            let mut events = Events::with_capacity(EVENTS);
            let mut woken = Vec::new();
            let timeout = plain.ends.limits.header_read_timeout;
            let mut timer = pin!(tokio::time::sleep_until(Instant::now()));
            let mut next = lot.expire(Instant::now(), timeout);
            loop {
                if let Some(at) = next {
                    timer.as_mut().reset(at);
                }
                tokio::select! {
                    biased;
                    () = plain.ends.drain.cancelled() => break,
                    () = gone.cancelled() => break,
                    ready = epoll.readable_mut() => {
                        let Ok(mut ready) = ready else { break };
                        if !wake(ready.get_inner_mut(), &mut events, lot, &mut woken, &plain) {
                            ready.clear_ready();
                        }
                    }
                    () = &mut timer, if next.is_some() => {
                        next = lot.expire(Instant::now(), timeout);
                    }
                    () = lot.sooner.notified() => {
                        next = lot.expire(Instant::now(), timeout);
                    }
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "idle connections cannot be parked; they are closed"),
    }
    lot.lock().close();
}

/// Take the ready events from the lot's epoll and give each connection a new task. `false`:
/// the epoll has no more ready (the caller clears its readiness: an event that comes after this
/// wait is a new edge, which tokio reports again, so none is lost). Fewer events than room for
/// them means the epoll was emptied: no second, empty wait is needed to tell.
fn wake<H, F>(
    poll: &mut Poll,
    events: &mut Events,
    lot: &Lot,
    woken: &mut Vec<Entry>,
    plain: &Arc<Plain<H>>,
) -> bool
where
    H: Fn(Request<Incoming>, SocketAddr, ClientId) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    if poll.poll(events, Some(Duration::ZERO)).is_err() || events.is_empty() {
        return false;
    }
    let more = events.iter().count() == EVENTS;
    {
        let mut parked = lot.lock();
        for event in events.iter() {
            // Only this task removes entries once they are registered, and an epoll reports a
            // registration once per wait: the place still holds the entry the event is for.
            let Ok(key) = u32::try_from(event.token().0) else {
                continue;
            };
            if let Some(entry) = parked.remove(key, None) {
                woken.push(entry);
            }
        }
    }
    for entry in woken.drain(..) {
        let _ = poll
            .registry()
            .deregister(&mut SourceFd(&entry.io.as_raw_fd()));
        let Entry { io, peer, _slot } = entry;
        tokio::spawn(super::woken(io, peer, Arc::clone(plain), _slot));
    }
    more
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;
    use tokio::sync::Semaphore;

    fn empty() -> Parked {
        Parked {
            places: Vec::new(),
            free: NONE,
            live: 0,
            due: BinaryHeap::new(),
            armed: None,
            closed: false,
        }
    }

    #[tokio::test]
    async fn places_are_reused_and_left_over_deadlines_stay_bounded() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let slots = Arc::new(Semaphore::new(2));
        let mut parked = empty();
        let peer: SocketAddr = ([127, 0, 0, 1], 1).into();
        let socket = std::net::TcpStream::connect(addr).unwrap();
        let entry = |slot: tokio::sync::OwnedSemaphorePermit| Entry {
            io: socket.try_clone().unwrap(),
            peer,
            _slot: slot.into(),
        };
        let now = Instant::now();
        // One connection that stays, one that parks and wakes again and again: each park
        // leaves a deadline behind.
        let stays = entry(Arc::clone(&slots).try_acquire_owned().unwrap());
        let (kept, _) = parked.insert(stays).unwrap();
        for i in 0..10_000u32 {
            let slot = Arc::clone(&slots).try_acquire_owned().unwrap();
            let (key, generation) = parked.insert(entry(slot)).unwrap();
            assert_ne!(key, kept);
            parked
                .due
                .push(Reverse((now + Duration::from_secs(60), key, generation)));
            parked.compact();
            assert!(parked.due.len() <= 2 * parked.live + 64, "{i}");
            // Woken: the place is free again, its deadline left for lazy removal.
            assert!(parked.remove(key, Some(generation)).is_some());
            assert!(parked.remove(key, Some(generation)).is_none());
        }
        assert_eq!(parked.places.len(), 2, "places are reused");
        assert_eq!(parked.live, 1);
        // A left-over deadline of an earlier generation closes nothing.
        assert!(parked.remove(kept, Some(0)).is_none());
        parked.close();
        assert_eq!(slots.available_permits(), 2, "every slot came back");
    }
}
