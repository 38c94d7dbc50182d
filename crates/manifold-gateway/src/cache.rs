//! The cache policy, applied in one place: the gateway owns one [`Cache`] (in-process tier,
//! plus Redis when `[cache] redis` is set, or Memcached when `[cache] memcached` is) and one [`CachePolicy`] per cached call or route,
//! built when the gateway starts so the request path only renders a key and looks it up.
//!
//! The executor wraps each cached call in [`Cache::get_or_fetch`]; the handler does the same for
//! a cached route. Every HTTP answer (4xx and 5xx included) is handed to the cache as an answer,
//! so negative caching and stale-if-error work; only transport failures are errors.

use bytes::Bytes;
use http::header::HeaderValue;
use http::{HeaderMap, StatusCode};
use manifold_cache::{
    Cache, CacheError, CachePolicy, CacheSettings, MemcachedSettings, RedisSettings,
};
use manifold_config::{CachePolicySpec, Config};
use std::sync::Arc;

pub(crate) use manifold_cache::Outcome as CacheOutcome;

/// The response header naming each cached call's outcome: `user=hit, orders=miss`.
pub const CACHE_HEADER: &str = "manifold-cache";

/// The gateway's cache and the policies compiled from the config.
#[derive(Debug)]
pub(crate) struct Caching {
    pub(crate) cache: Cache,
    /// Per route (config order): the whole route's policy.
    pub(crate) routes: Vec<Option<Arc<CachePolicy>>>,
    /// Per route, per call (plan order): the call's policy.
    pub(crate) calls: Vec<Vec<Option<Arc<CachePolicy>>>>,
    /// Per route: a proxy route's upstream answered with a `Vary` its key does not cover, so
    /// its requests skip the cache (`bypass`) until the config is loaded again. As Varnish's
    /// hit-for-pass: requests that wait for one shared fetch would otherwise all get the answer
    /// the upstream chose for the first (a gzip'd body for a client that cannot read it).
    pub(crate) vary_pass: Vec<std::sync::atomic::AtomicBool>,
}

impl Caching {
    /// Build the tiers and policies. Inside a Tokio runtime; the shared tier is not contacted
    /// yet (the gateway starts while Redis or memcached is down).
    pub(crate) fn new(config: &Config) -> Result<Self, CacheError> {
        let c = &config.cache;
        let cache = Cache::new(CacheSettings {
            max_bytes: c.max_bytes,
            max_entry_bytes: c.max_entry_bytes,
            redis: c.redis.as_ref().map(|url| RedisSettings {
                url: url.clone(),
                prefix: c.prefix.clone(),
                timeout: c.redis_timeout,
                retry_after: c.redis_retry_after,
            }),
            memcached: (!c.memcached.is_empty()).then(|| MemcachedSettings {
                servers: c.memcached.clone(),
                prefix: c.prefix.clone(),
                timeout: c.memcached_timeout,
                retry_after: c.memcached_retry_after,
                max_item_bytes: c.memcached_max_item_bytes,
            }),
        })?;
        Ok(Self::with_cache(cache, config))
    }

    /// The policies of `config` over an existing cache: what a reload builds, so the entries
    /// (keyed by what a call sends, not by the config that sent it) stay valid for every call
    /// that still sends the same request.
    pub(crate) fn with_cache(cache: Cache, config: &Config) -> Self {
        let routes = config
            .routes
            .iter()
            .map(|r| r.cache.as_ref().map(|s| Arc::new(policy(&r.name, s))))
            .collect();
        let calls = config
            .routes
            .iter()
            .map(|r| match &r.kind {
                manifold_config::RouteKind::Compose(plan) => plan
                    .calls
                    .iter()
                    .map(|call| {
                        call.cache
                            .as_ref()
                            .map(|s| Arc::new(policy(&format!("{}.{}", r.name, call.name), s)))
                    })
                    .collect(),
                manifold_config::RouteKind::Proxy { .. } => Vec::new(),
            })
            .collect();
        Caching {
            cache,
            routes,
            calls,
            vary_pass: config
                .routes
                .iter()
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
        }
    }
}

/// A config policy as the cache library's. `name` is what its counters are filed under on
/// `GET /cache`: `route.call` for a call, `route` for a whole route.
fn policy(name: &str, spec: &CachePolicySpec) -> CachePolicy {
    let mut p = CachePolicy::new(name, spec.ttl)
        .with_stale(spec.stale)
        .with_respect_cache_control(spec.respect_cache_control);
    if let Some(e) = spec.errors {
        p = p.with_errors(e);
    }
    if let Some(beta) = spec.early_refresh {
        p = p.with_early_refresh(beta);
    }
    if let Some(lease) = spec.lock {
        p = p.with_lock(lease);
    }
    p
}

/// `user=hit, orders=miss`, or `None` when no cached call ran.
pub(crate) fn header_value<'a>(
    outcomes: impl IntoIterator<Item = (&'a str, CacheOutcome)>,
) -> Option<HeaderValue> {
    let mut text = String::new();
    for (name, outcome) in outcomes {
        if !text.is_empty() {
            text.push_str(", ");
        }
        text.push_str(name);
        text.push('=');
        text.push_str(outcome.as_str());
    }
    if text.is_empty() {
        return None;
    }
    HeaderValue::from_str(&text).ok()
}

/// An answer held in memory: what a cached fetch hands the cache, and what a cached route
/// answers the client with when its answer must not be stored (a partial composition, an
/// answer setting a cookie).
#[derive(Debug, Clone)]
pub(crate) struct HeldResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// The answer's `Set-Cookie` values, for one client only: every request waiting for the
    /// same fetch gets a clone of this answer, and a cookie handed to several clients would
    /// share one session between them. The first to take the answer gets them; a request that
    /// waited on another's fetch never takes them ([`Self::into_waiter_response`]).
    for_one: Option<Arc<std::sync::Mutex<Option<Vec<HeaderValue>>>>>,
    /// The upstream chose it for the fetching request on something the key does not hold
    /// (its `Vary`): no other request may be answered with it.
    chosen_for_one: bool,
}

impl HeldResponse {
    pub(crate) fn new(status: StatusCode, mut headers: HeaderMap, body: Bytes) -> Self {
        let cookies: Vec<HeaderValue> = headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .cloned()
            .collect();
        headers.remove(http::header::SET_COOKIE);
        HeldResponse {
            status,
            headers,
            body,
            for_one: (!cookies.is_empty()).then(|| Arc::new(std::sync::Mutex::new(Some(cookies)))),
            chosen_for_one: false,
        }
    }

    /// Marks it as chosen for the fetching request alone (see [`Self::for_one_request`]).
    pub(crate) fn chosen_for_one(mut self) -> Self {
        self.chosen_for_one = true;
        self
    }

    /// Whether it answers the request that fetched it and no other: it sets a cookie (a
    /// session, whose page may hold that session's data too) or the upstream chose it on a
    /// header the key does not hold. A proxy request that waited on that fetch sends its own.
    pub(crate) fn for_one_request(&self) -> bool {
        self.chosen_for_one || self.for_one.is_some()
    }

    /// The answer for a request that waited on another's fetch: never with its cookies, which
    /// belong to the client whose request fetched it.
    pub(crate) fn into_waiter_response(mut self) -> http::Response<crate::upstream::Body> {
        self.for_one = None;
        self.into_response()
    }

    /// The answer for one waiting request: with the cookies if no other request took them.
    pub(crate) fn into_response(self) -> http::Response<crate::upstream::Body> {
        let mut resp = http::Response::new(crate::handler::full(self.body));
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers;
        let cookies = self
            .for_one
            .and_then(|c| c.lock().ok().and_then(|mut taken| taken.take()));
        for cookie in cookies.into_iter().flatten() {
            resp.headers_mut().append(http::header::SET_COOKIE, cookie);
        }
        resp
    }
}

/// A proxy route's request that must skip the route's cache (it carries credentials the key
/// does not cover, see [`crate::cache_key::route_bypass`]): forwarded as if the route were not
/// cached, answered with `Manifold-Cache: ROUTE=bypass`, and nothing is stored.
pub(crate) async fn bypassed(
    shared: &crate::handler::Shared,
    ri: usize,
    req: http::Request<hyper::body::Incoming>,
    peer: std::net::SocketAddr,
    deadline: Option<tokio::time::Instant>,
) -> http::Response<crate::upstream::Body> {
    let route = &shared.config.routes[ri];
    let manifold_config::RouteKind::Proxy { upstream, .. } = &route.kind else {
        return crate::handler::json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({"error": {"kind": "internal", "message": "only a proxy route's cache is bypassed"}}),
        );
    };
    let mut resp = crate::proxy::forward(
        &shared.clients[*upstream],
        route,
        &shared.config.server,
        req,
        peer,
        deadline,
    )
    .await;
    if let Some(v) = header_value([(route.name.as_str(), CacheOutcome::Bypass)]) {
        resp.headers_mut()
            .insert(http::header::HeaderName::from_static(CACHE_HEADER), v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_answers_cookies_go_to_one_client_only() {
        let mut h = HeaderMap::new();
        h.append(http::header::SET_COOKIE, HeaderValue::from_static("a=1"));
        h.append(http::header::SET_COOKIE, HeaderValue::from_static("b=2"));
        h.insert("x-other", HeaderValue::from_static("kept"));
        let held = HeldResponse::new(StatusCode::OK, h, Bytes::from_static(b"{}"));
        let (first, second) = (held.clone().into_response(), held.into_response());
        let cookies: Vec<_> = first.headers().get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert!(second.headers().get("set-cookie").is_none());
        assert_eq!(second.headers()["x-other"], "kept");
    }

    #[test]
    fn header_lists_outcomes_in_order() {
        let v = header_value([("user", CacheOutcome::Hit), ("orders", CacheOutcome::Miss)]);
        assert_eq!(v.unwrap(), "user=hit, orders=miss");
        assert!(header_value(std::iter::empty()).is_none());
    }
}
