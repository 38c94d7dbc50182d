//! What to cache and for how long: the per-call policy the executor builds from config, and the
//! upstream `Cache-Control` header that may override it.
//!
//! Kept pure (no clock, no I/O) so every rule is a unit test.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::CachedResponse;

/// How one call's results are cached. Built once per call at config load and passed to every
/// [`Cache::get_or_fetch`](crate::Cache::get_or_fetch) for that call.
#[derive(Clone, Debug, PartialEq)]
pub struct CachePolicy {
    /// The call's name, the label its counters are kept under (e.g. `"user"` or
    /// `"profile.user"`). Cheap to clone.
    pub name: Arc<str>,
    /// How long a 2xx answer is fresh (served as a hit without asking the upstream).
    pub ttl: Duration,
    /// How long after `ttl` an entry may still be answered at once while it is refreshed in the
    /// background (stale-while-revalidate), or when a refresh fails (stale-if-error).
    pub stale: Duration,
    /// Negative caching: non-2xx answers are kept this long (no stale window). `None`: never.
    pub errors: Option<Duration>,
    /// When true, the upstream's `Cache-Control` wins over `ttl`/`stale` (see [`CacheControl`]).
    pub respect_cache_control: bool,
    /// Probabilistic early refresh (XFetch, Vattani et al. VLDB 2015) with this `beta` (1.0 is the
    /// paper's default; larger refreshes earlier): a hit close to expiry triggers one background
    /// refresh with a probability that grows as expiry nears and with how long the fetch took, so
    /// a hot key never expires under load. `None`: off.
    pub early_refresh: Option<f64>,
    /// Cross-replica lock: with a Redis tier, only the replica holding a short Redis lock (this
    /// lease) fetches or refreshes a key; the others wait for its entry in Redis (misses) or keep
    /// answering stale (refreshes). `None`: off (each replica fetches on its own).
    pub lock: Option<Duration>,
}

impl CachePolicy {
    /// A policy keeping 2xx answers `ttl`, with no stale window and nothing else enabled.
    pub fn new(name: impl Into<Arc<str>>, ttl: Duration) -> Self {
        Self {
            name: name.into(),
            ttl,
            stale: Duration::ZERO,
            errors: None,
            respect_cache_control: false,
            early_refresh: None,
            lock: None,
        }
    }

    /// Sets the stale window.
    pub fn with_stale(mut self, stale: Duration) -> Self {
        self.stale = stale;
        self
    }

    /// Enables negative caching for `errors`.
    pub fn with_errors(mut self, errors: Duration) -> Self {
        self.errors = Some(errors);
        self
    }

    /// Lets upstream `Cache-Control` override the configured lifetimes.
    pub fn with_respect_cache_control(mut self, respect: bool) -> Self {
        self.respect_cache_control = respect;
        self
    }

    /// Enables XFetch early refresh with `beta`.
    pub fn with_early_refresh(mut self, beta: f64) -> Self {
        self.early_refresh = Some(beta);
        self
    }

    /// Enables the cross-replica Redis lock with `lease`.
    pub fn with_lock(mut self, lease: Duration) -> Self {
        self.lock = Some(lease);
        self
    }

    /// True when nothing could ever be stored: the cache steps aside ([`Outcome::Bypass`](crate::Outcome::Bypass)).
    pub fn is_bypass(&self) -> bool {
        self.ttl.is_zero()
            && self.stale.is_zero()
            && self.errors.is_none_or(|e| e.is_zero())
            && !self.respect_cache_control
    }

    /// How long `response` may be kept, or `None` when it must not be stored.
    ///
    /// Rules, in order:
    /// 0. Always, whatever `respect_cache_control` says: an answer with `Cache-Control:
    ///    private` or `no-store`, or one that sets a cookie, is for one client: not stored (a
    ///    shared cache keeping it would hand one user's answer to the next).
    /// 1. 2xx: `ttl` and `stale`. Other statuses: `errors` (and no stale window) when negative
    ///    caching is on, else not stored.
    /// 2. With `respect_cache_control`: `no-cache` → not stored (a shared cache that does not
    ///    revalidate must not keep it); `s-maxage`, else `max-age`, replaces
    ///    the fresh time, minus the upstream's `Age`; `stale-while-revalidate` replaces the stale
    ///    window of a 2xx answer.
    /// 3. A zero fresh time and a zero stale window → not stored.
    pub fn lifetimes(&self, response: &CachedResponse) -> Option<Lifetimes> {
        if for_one_client(response) {
            return None;
        }
        let cc = response.cache_control();
        let success = response.status.is_success();
        let (mut ttl, mut stale) = if success {
            (self.ttl, self.stale)
        } else {
            (self.errors?, Duration::ZERO)
        };
        if self.respect_cache_control {
            if cc.no_cache {
                return None;
            }
            if let Some(max_age) = cc.s_maxage.or(cc.max_age) {
                ttl = max_age.saturating_sub(response.age().unwrap_or_default());
                if ttl.is_zero() {
                    return None;
                }
            }
            if success {
                if let Some(swr) = cc.stale_while_revalidate {
                    stale = swr;
                }
            }
        }
        if ttl.is_zero() && stale.is_zero() {
            return None;
        }
        Some(Lifetimes { ttl, stale })
    }
}

/// Whether an answer is meant for the client whose request fetched it alone (rule 0 of
/// [`CachePolicy::lifetimes`]): `Cache-Control: private` or `no-store`, or a cookie set. Such an
/// answer is neither stored nor handed to the callers that joined its fetch.
pub(crate) fn for_one_client(response: &CachedResponse) -> bool {
    if response.sets_cookie {
        return true;
    }
    let cc = response.cache_control();
    cc.private || cc.no_store
}

/// Whether an answer counts as a failure for stale-if-error: a server error means the upstream
/// could not answer, so a stale entry is the better reply. 4xx answers are the upstream's
/// considered answer and are passed on.
pub(crate) fn is_failure(status: StatusCode) -> bool {
    status.is_server_error()
}

/// How long one stored entry lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetimes {
    /// Fresh for this long after it was stored.
    pub ttl: Duration,
    /// Then stale (answerable while refreshing, or on errors) for this long.
    pub stale: Duration,
}

/// The parts of an HTTP `Cache-Control` header (RFC 9111 §5.2.2, RFC 5861) a shared cache acts on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// `no-store`: never store.
    pub no_store: bool,
    /// `no-cache`: must revalidate before each use; this cache does not revalidate, so: not stored.
    pub no_cache: bool,
    /// `private`: for the end user's own cache only, not a shared one like this.
    pub private: bool,
    /// `max-age=N`.
    pub max_age: Option<Duration>,
    /// `s-maxage=N` (shared caches; wins over `max-age`).
    pub s_maxage: Option<Duration>,
    /// `stale-while-revalidate=N`.
    pub stale_while_revalidate: Option<Duration>,
    /// `stale-if-error=N` (parsed for completeness; the policy's `stale` window governs).
    pub stale_if_error: Option<Duration>,
}

impl CacheControl {
    /// Parses one `Cache-Control` header value. Unknown directives are ignored; a delta-seconds
    /// value that is not a number counts as 0 (RFC 9111 §4.2.1: treat as stale); repeated
    /// directives keep the smallest value; values saturate at about 136 years.
    pub fn parse(value: &str) -> Self {
        let mut cc = Self::default();
        cc.merge(value);
        cc
    }

    /// Adds the directives of another `Cache-Control` header line (a response may carry several).
    pub fn merge(&mut self, value: &str) {
        for directive in split_directives(value) {
            let (name, arg) = match directive.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            let seconds = || {
                let secs = arg.and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
                Duration::from_secs(secs.min(u64::from(u32::MAX)))
            };
            let min = |slot: &mut Option<Duration>, v: Duration| {
                *slot = Some(slot.map_or(v, |old| old.min(v)));
            };
            if name.eq_ignore_ascii_case("no-store") {
                self.no_store = true;
            } else if name.eq_ignore_ascii_case("no-cache") {
                self.no_cache = true;
            } else if name.eq_ignore_ascii_case("private") {
                self.private = true;
            } else if name.eq_ignore_ascii_case("max-age") {
                min(&mut self.max_age, seconds());
            } else if name.eq_ignore_ascii_case("s-maxage") {
                min(&mut self.s_maxage, seconds());
            } else if name.eq_ignore_ascii_case("stale-while-revalidate") {
                min(&mut self.stale_while_revalidate, seconds());
            } else if name.eq_ignore_ascii_case("stale-if-error") {
                min(&mut self.stale_if_error, seconds());
            }
        }
    }
}

/// Splits on commas outside double quotes (`private="a, b"` is one directive).
fn split_directives(value: &str) -> impl Iterator<Item = &str> {
    let mut start = 0;
    let mut quoted = false;
    let mut parts = Vec::new();
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts.into_iter().map(str::trim).filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn resp(status: u16, cache_control: Option<&str>) -> CachedResponse {
        let mut r = CachedResponse::new(StatusCode::from_u16(status).unwrap(), Bytes::from("{}"));
        if let Some(cc) = cache_control {
            r = r.with_header(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_str(cc).unwrap(),
            );
        }
        r
    }

    #[test]
    fn parses_the_directives_a_shared_cache_uses() {
        let cc = CacheControl::parse(
            "public, Max-Age=60, s-maxage=\"30\", private=\"set-cookie, x\", stale-while-revalidate=5",
        );
        assert_eq!(cc.max_age, Some(s(60)));
        assert_eq!(cc.s_maxage, Some(s(30)));
        assert!(cc.private);
        assert!(!cc.no_store);
        assert_eq!(cc.stale_while_revalidate, Some(s(5)));
        assert!(CacheControl::parse("no-store").no_store);
        assert!(CacheControl::parse(" NO-CACHE ,").no_cache);
        assert_eq!(CacheControl::parse(""), CacheControl::default());
        assert_eq!(
            CacheControl::parse("max-age=abc").max_age,
            Some(Duration::ZERO)
        );
        assert_eq!(
            CacheControl::parse("max-age=10, max-age=3").max_age,
            Some(s(3))
        );
        assert_eq!(
            CacheControl::parse("max-age=99999999999999999999").max_age,
            Some(Duration::ZERO),
            "overflowing numbers are not numbers"
        );
        assert_eq!(
            CacheControl::parse(&format!("max-age={}", u64::MAX)).max_age,
            Some(s(u64::from(u32::MAX)))
        );
    }

    #[test]
    fn config_lifetimes_apply_to_2xx_and_negative_caching_is_opt_in() {
        let p = CachePolicy::new("user", s(30)).with_stale(s(300));
        assert_eq!(
            p.lifetimes(&resp(200, None)),
            Some(Lifetimes {
                ttl: s(30),
                stale: s(300)
            })
        );
        assert_eq!(p.lifetimes(&resp(404, None)), None);
        assert_eq!(p.lifetimes(&resp(503, None)), None);
        let p = p.with_errors(s(5));
        assert_eq!(
            p.lifetimes(&resp(404, None)),
            Some(Lifetimes {
                ttl: s(5),
                stale: Duration::ZERO
            })
        );
        // Cache-Control's lifetimes are ignored unless asked for...
        assert!(p
            .lifetimes(&resp(200, Some("no-cache, max-age=0")))
            .is_some());
        // ...but answers meant for one client are never stored.
        assert_eq!(p.lifetimes(&resp(200, Some("no-store"))), None);
        assert_eq!(p.lifetimes(&resp(200, Some("Private, max-age=60"))), None);
        let mut cookie = http::HeaderMap::new();
        cookie.insert(
            http::header::SET_COOKIE,
            http::HeaderValue::from_static("sid=1"),
        );
        let r = CachedResponse::from_parts(StatusCode::OK, &cookie, Bytes::from("{}"));
        assert!(r.header(&http::header::SET_COOKIE).is_none());
        assert_eq!(p.lifetimes(&r), None);
    }

    #[test]
    fn upstream_cache_control_wins_when_respected() {
        let p = CachePolicy::new("user", s(30))
            .with_stale(s(300))
            .with_respect_cache_control(true);
        assert_eq!(p.lifetimes(&resp(200, Some("no-store"))), None);
        assert_eq!(p.lifetimes(&resp(200, Some("private, max-age=60"))), None);
        assert_eq!(p.lifetimes(&resp(200, Some("no-cache"))), None);
        assert_eq!(p.lifetimes(&resp(200, Some("max-age=0"))), None);
        assert_eq!(
            p.lifetimes(&resp(200, Some("max-age=60"))),
            Some(Lifetimes {
                ttl: s(60),
                stale: s(300)
            })
        );
        assert_eq!(
            p.lifetimes(&resp(
                200,
                Some("max-age=60, s-maxage=10, stale-while-revalidate=2")
            )),
            Some(Lifetimes {
                ttl: s(10),
                stale: s(2)
            })
        );
        let aged = resp(200, Some("max-age=60"))
            .with_header(http::header::AGE, http::HeaderValue::from_static("45"));
        assert_eq!(aged.age(), Some(s(45)));
        assert_eq!(
            p.lifetimes(&aged),
            Some(Lifetimes {
                ttl: s(15),
                stale: s(300)
            })
        );
        // No directive about lifetimes: the config stands.
        assert_eq!(
            p.lifetimes(&resp(200, Some("public"))),
            Some(Lifetimes {
                ttl: s(30),
                stale: s(300)
            })
        );
    }

    #[test]
    fn bypass_only_when_nothing_could_be_stored() {
        assert!(CachePolicy::new("x", Duration::ZERO).is_bypass());
        assert!(!CachePolicy::new("x", s(1)).is_bypass());
        assert!(!CachePolicy::new("x", Duration::ZERO)
            .with_errors(s(1))
            .is_bypass());
        assert!(!CachePolicy::new("x", Duration::ZERO)
            .with_stale(s(1))
            .is_bypass());
        assert!(is_failure(StatusCode::BAD_GATEWAY));
        assert!(!is_failure(StatusCode::NOT_FOUND));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parse_never_panics(value in "\\PC{0,200}") {
                let _ = CacheControl::parse(&value);
            }

            #[test]
            fn max_age_is_read_among_other_directives(
                n in 0u64..10_000_000,
                before in proptest::sample::select(vec!["", "public, ", "must-revalidate,", "x=\"a,b\", "]),
            ) {
                let cc = CacheControl::parse(&format!("{before}max-age={n}, no-transform"));
                prop_assert_eq!(cc.max_age, Some(Duration::from_secs(n)));
                prop_assert!(!cc.no_store && !cc.private);
            }
        }
    }
}
