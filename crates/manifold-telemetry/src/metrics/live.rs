//! The routes and calls of the running config, so that the series of a route or call a reload
//! removed (or renamed) end instead of showing their last values for ever.
//!
//! Why at reload *and* at each scrape: a request of a removed route still running when the
//! reload lands records its end afterwards, and a handle that resolves its series lazily (a
//! status class, a cache tier it had not seen) puts that series back. Dropping the retired
//! series again before each render keeps the exposition and the memory to the running config
//! whatever finishes late.

use std::collections::HashSet;
use std::sync::Arc;

use super::Registry;

/// Names of the running config's routes and of their calls (with each call's upstream).
#[derive(Debug, Default)]
pub struct LiveRoutes {
    routes: HashSet<Arc<str>>,
    calls: HashSet<(Arc<str>, Arc<str>)>,
    call_upstreams: HashSet<(Arc<str>, Arc<str>, Arc<str>)>,
}

impl LiveRoutes {
    /// An empty set (no route is live).
    pub fn new() -> LiveRoutes {
        LiveRoutes::default()
    }

    /// A route of the config (a route's name, or the status route's).
    pub fn route(&mut self, route: &str) {
        self.routes.insert(Arc::from(route));
    }

    /// A call of a route, and the upstream it goes to.
    pub fn call(&mut self, route: &str, call: &str, upstream: &str) {
        let (route, call) = (Arc::<str>::from(route), Arc::<str>::from(call));
        self.routes.insert(Arc::clone(&route));
        self.calls.insert((Arc::clone(&route), Arc::clone(&call)));
        self.call_upstreams
            .insert((route, call, Arc::from(upstream)));
    }

    fn has_route(&self, route: &Arc<str>) -> bool {
        self.routes.contains(route)
    }

    fn has_call(&self, route: &Arc<str>, call: &Arc<str>) -> bool {
        self.calls.contains(&(Arc::clone(route), Arc::clone(call)))
    }

    fn has_call_to(&self, route: &Arc<str>, call: &Arc<str>, upstream: &Arc<str>) -> bool {
        self.call_upstreams
            .contains(&(Arc::clone(route), Arc::clone(call), Arc::clone(upstream)))
    }
}

/// Drop every route- or call-labelled series `live` does not name.
pub(super) fn retain(r: &Registry, live: &LiveRoutes) {
    r.request_duration.retain(|k| live.has_route(&k[0]));
    r.active_requests.retain(|k| live.has_route(&k[0]));
    r.call_duration
        .retain(|k| live.has_call_to(&k[0], &k[1], &k[2]));
    r.calls.retain(|k| live.has_call_to(&k[0], &k[1], &k[2]));
    r.call_errors
        .retain(|k| live.has_call_to(&k[0], &k[1], &k[2]));
    r.cache_hits.retain(|k| live.has_call(&k[0], &k[1]));
    r.cache_misses.retain(|k| live.has_call(&k[0], &k[1]));
    r.cache_coalesced.retain(|k| live.has_call(&k[0], &k[1]));
}
