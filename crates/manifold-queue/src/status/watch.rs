//! In-process wake-ups per task id, so a long poll (`?wait=`) sleeps until its task's status
//! changes instead of polling the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Task id → the [`Notify`] its waiters sleep on. An entry lives while someone waits: the last
/// waiter to leave removes it, so the map is bounded by the number of concurrent long polls
/// (which the gateway's concurrency limit bounds), not by the number of tasks.
#[derive(Debug, Default)]
pub struct Watchers {
    map: Mutex<HashMap<String, Arc<Notify>>>,
}

/// A registered interest in one id; dropping it unregisters.
#[derive(Debug)]
pub struct Watch<'a> {
    watchers: &'a Watchers,
    id: String,
    notify: Arc<Notify>,
}

impl Watchers {
    /// Registers interest in `id`. Register *before* reading the status, then wait on
    /// [`Watch::changed`]: a change between the read and the wait is not lost.
    pub fn watch(&self, id: &str) -> Watch<'_> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let notify = Arc::clone(map.entry(id.to_owned()).or_default());
        Watch {
            watchers: self,
            id: id.to_owned(),
            notify,
        }
    }

    /// Wakes every waiter of `id` (a status write committed). Cheap when nobody waits.
    pub fn notify(&self, id: &str) {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get(id) {
            // `notify_waiters` wakes those waiting now; a permit-less design on purpose: a
            // waiter re-reads the store after every wake-up.
            n.notify_waiters();
        }
    }

    /// Ids with waiters (tests).
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// No one waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Watch<'_> {
    /// A future that completes at the next [`Watchers::notify`] for this id. Create it (and
    /// `enable` it) before reading the status it guards.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut map = self.watchers.map.lock().unwrap_or_else(|p| p.into_inner());
        // The map's copy plus ours: we are the last waiter.
        if Arc::strong_count(&self.notify) <= 2 {
            map.remove(&self.id);
        }
    }
}
