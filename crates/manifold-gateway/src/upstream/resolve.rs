//! Endpoints as addresses: the targets an upstream's configured endpoints stand for, and the
//! task that resolves their hostnames again every `resolve_every` (issue 13, item 2).
//!
//! Every address a hostname resolves to is an endpoint of its own, with its own load and
//! breaker, so that balancing and ejection see replicas behind one DNS name (a headless
//! Kubernetes service, a Consul name) rather than one opaque name. Each target has its own
//! pooled client whose connector dials its address ([`super::client::Pool::sender`]), so each
//! replica gets its own connections, while the request names the host as configured: its URI
//! authority (HTTP/2's `:authority`), its `Host` header (see [`Target::host`]) and, for
//! `https://`, SNI and the certificate check.
//!
//! Until the first resolution ends, and for a name that never resolves, the target is the name
//! itself, as before this module: hyper's connector resolves it per connection. A failed
//! resolution keeps the last good addresses of that name (a DNS hiccup must not empty an
//! upstream) and is logged once per change of error, not on every round.

use crate::error::{CallError, CallErrorKind};
use http::header::{HeaderMap, HeaderValue, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{OnceLock, Weak};
use std::time::Duration;
use tokio::sync::oneshot;

/// The shortest period between resolutions, whatever `resolve_every` says (0 would spin).
const MIN_EVERY: Duration = Duration::from_secs(1);
/// The most addresses one name stands for. Each is an endpoint with its own load, breaker,
/// connection pool and `/metrics` series; a name answering with thousands (a misconfigured or
/// hostile DNS zone) would otherwise make thousands of each, and again on every change.
pub(super) const MAX_ADDRESSES: usize = 256;
/// How long one lookup may take before it counts as failed.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Which configured endpoint a target comes from and the address it was resolved to (`None`
/// for the name as configured): a target that stays across resolutions keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Key {
    pub(super) index: usize,
    pub(super) addr: Option<SocketAddr>,
}

/// One endpoint's address, parsed once: the hot path only clones refcounted parts.
#[derive(Debug)]
pub(super) struct Target {
    pub(super) key: Key,
    /// `https` for an `https://` endpoint, else `http`.
    scheme: Scheme,
    /// `None` when the configured authority does not parse (the compiler should have refused it).
    authority: Option<Authority>,
    /// For a resolved address: the configured `host[:port]`, sent as `Host`.
    host: Option<HeaderValue>,
    /// The endpoint as shown in errors and logs (`name:port (address)` once resolved).
    pub(super) shown: String,
    /// A path prefix every request's path is appended to ("" for none).
    base_path: String,
    /// `server.address` / `server.port` of its attempts' spans: the configured name.
    span: manifold_telemetry::Endpoint,
    /// Its pooled client, built on its first attempt (and dropped with the target when a
    /// resolution no longer returns its address).
    client: OnceLock<super::client::Sender>,
}

impl Target {
    /// The endpoint as configured (an IP literal, or a name hyper resolves per connection).
    pub(super) fn configured(index: usize, ep: &manifold_config::Endpoint) -> Target {
        Target {
            key: Key { index, addr: None },
            scheme: scheme(ep),
            authority: Authority::try_from(ep.authority.as_str()).ok(),
            host: None,
            shown: ep.authority.clone(),
            base_path: ep.base_path.clone(),
            span: span_endpoint(ep),
            client: OnceLock::new(),
        }
    }

    /// The endpoint's name resolved to `addr`.
    pub(super) fn resolved(
        index: usize,
        ep: &manifold_config::Endpoint,
        addr: SocketAddr,
    ) -> Target {
        Target {
            key: Key {
                index,
                addr: Some(addr),
            },
            scheme: scheme(ep),
            // The configured name: the connection goes to `addr` (the client dials it).
            authority: Authority::try_from(ep.authority.as_str()).ok(),
            host: HeaderValue::from_str(&ep.authority).ok(),
            shown: format!("{} ({addr})", ep.authority),
            base_path: ep.base_path.clone(),
            span: span_endpoint(ep),
            client: OnceLock::new(),
        }
    }

    /// Its pooled client (built from `pool` on first use).
    pub(super) fn sender(&self, pool: &super::client::Pool) -> super::client::Sender {
        self.client.get_or_init(|| pool.sender(self.key)).clone()
    }

    /// Where its attempts' spans say they went.
    pub(super) fn span_endpoint(&self) -> manifold_telemetry::Endpoint {
        self.span.clone()
    }

    /// `origin` (path and query) made absolute against this endpoint.
    ///
    /// Its error is the client's (`bad_input`: its value made the URL too long, say), whose
    /// message a client is told even with `error_detail = "brief"`: it names no upstream (the
    /// error's trail does, for the log and `"full"`).
    pub(super) fn absolute(&self, origin: Uri) -> Result<Uri, CallError> {
        let bad = |e: &dyn std::fmt::Display| {
            CallError::new(
                CallErrorKind::Input,
                format!("cannot build the upstream URL: {e}"),
            )
        };
        let authority = self
            .authority
            .clone()
            .ok_or_else(|| bad(&"its endpoint's host is not valid"))?;
        let origin = origin.into_parts().path_and_query;
        let path_and_query = if self.base_path.is_empty() {
            origin.unwrap_or_else(|| PathAndQuery::from_static("/"))
        } else {
            let tail = origin.as_ref().map_or("/", PathAndQuery::as_str);
            let mut joined = String::with_capacity(self.base_path.len() + tail.len());
            joined.push_str(&self.base_path);
            joined.push_str(tail);
            PathAndQuery::try_from(joined).map_err(|e| bad(&e))?
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(authority);
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts).map_err(|e| bad(&e))
    }

    /// Give a request to a resolved address the `Host` of the configured name (hyper would
    /// otherwise derive it from the URI: the bare address, which virtual hosts, TLS-terminating
    /// sidecars and access logs do not expect). A `Host` the caller set is kept.
    pub(super) fn host(&self, headers: &mut HeaderMap) {
        if let Some(host) = &self.host {
            headers.entry(HOST).or_insert_with(|| host.clone());
        }
    }
}

fn scheme(ep: &manifold_config::Endpoint) -> Scheme {
    if ep.scheme == "https" {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    }
}

/// The configured endpoints whose host is a name, not an IP literal: what the task resolves.
pub(super) fn names(up: &manifold_config::Upstream) -> Vec<(usize, String, u16)> {
    up.endpoints
        .iter()
        .enumerate()
        .filter_map(|(i, ep)| {
            let authority = Authority::try_from(ep.authority.as_str()).ok()?;
            let host = authority.host();
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            if bare.parse::<IpAddr>().is_ok() {
                return None;
            }
            let default_port = if ep.scheme == "https" { 443 } else { 80 };
            Some((
                i,
                host.to_owned(),
                authority.port_u16().unwrap_or(default_port),
            ))
        })
        .collect()
}

/// Where a round's addresses go: the upstream's endpoint set, while it lives.
pub(super) trait Apply: Send + Sync + 'static {
    /// Replace the targets of configured endpoint `index` by these addresses (sorted, no
    /// duplicates, never empty).
    fn apply(&self, resolved: &[(usize, Vec<SocketAddr>)]);
}

/// Resolve `names` now and every `every` until `stop`'s sender is dropped (with the upstream)
/// or `owner` is gone, applying each round's successes to `owner`.
pub(super) fn spawn<A: Apply>(
    upstream: String,
    names: Vec<(usize, String, u16)>,
    every: Duration,
    owner: Weak<A>,
    mut stop: oneshot::Receiver<()>,
) {
    let every = every.max(MIN_EVERY);
    let task = async move {
        let mut seen: HashMap<usize, Result<Vec<SocketAddr>, String>> = HashMap::new();
        let mut pending: Vec<Pending> = names.iter().map(|_| Pending::default()).collect();
        loop {
            let round = tokio::select! {
                r = resolve_all(&names, &mut pending, system) => r,
                _ = &mut stop => return,
            };
            let Some(owner) = owner.upgrade() else { return };
            let mut good = Vec::new();
            for ((index, name, port), result) in names.iter().zip(round) {
                let changed = seen.get(index) != Some(&result);
                match &result {
                    Ok(addrs) => {
                        if changed {
                            tracing::info!(upstream = %upstream, endpoint = %format!("{name}:{port}"),
                                addresses = ?addrs, "endpoint resolved");
                            if addrs.len() == MAX_ADDRESSES {
                                tracing::warn!(upstream = %upstream, endpoint = %format!("{name}:{port}"),
                                    max = MAX_ADDRESSES, "the name resolves to more addresses than are used: the lowest are kept");
                            }
                        }
                        good.push((*index, addrs.clone()));
                    }
                    Err(e) if changed => {
                        tracing::warn!(upstream = %upstream, endpoint = %format!("{name}:{port}"),
                            error = %e, "cannot resolve the endpoint: keeping its last addresses");
                    }
                    Err(_) => {}
                }
                seen.insert(*index, result);
            }
            if !good.is_empty() {
                owner.apply(&good);
            }
            drop(owner);
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = &mut stop => return,
            }
        }
    };
    tokio::spawn(task);
}

async fn resolve_all(
    names: &[(usize, String, u16)],
    pending: &mut [Pending],
    resolver: Resolver,
) -> Vec<Result<Vec<SocketAddr>, String>> {
    let lookups = names
        .iter()
        .zip(pending.iter_mut())
        .map(|((_, name, port), p)| lookup_with(resolver, LOOKUP_TIMEOUT, name, *port, p));
    futures::future::join_all(lookups).await
}

/// A blocking lookup of a name and port; run on the blocking pool.
type Resolver = fn(&str, u16) -> std::io::Result<Vec<SocketAddr>>;

/// The system resolver (`getaddrinfo`), as `tokio::net::lookup_host` uses it.
fn system(name: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    use std::net::ToSocketAddrs;
    Ok((name, port).to_socket_addrs()?.collect())
}

/// One name's lookup that outlived its timeout, kept for the next round.
///
/// Why: a blocking `getaddrinfo` cannot be cancelled. Giving up on it after
/// [`LOOKUP_TIMEOUT`] and starting another every round left one more thread of tokio's blocking
/// pool stuck per name per round while the resolver hung; the pool (512 threads) is shared with
/// every other blocking task — file I/O, hyper's own resolution of names not yet resolved — and
/// once it was full those waited too. Now a name has at most one lookup running: while it has
/// not returned, the round reports the name unresolved (its last addresses stay).
#[derive(Debug, Default)]
pub(super) struct Pending(Option<tokio::task::JoinHandle<std::io::Result<Vec<SocketAddr>>>>);

async fn lookup_with(
    resolver: Resolver,
    timeout: Duration,
    name: &str,
    port: u16,
    pending: &mut Pending,
) -> Result<Vec<SocketAddr>, String> {
    let mut handle = match pending.0.take() {
        Some(h) if !h.is_finished() => {
            pending.0 = Some(h);
            return Err("the previous lookup has not returned (a hung resolver?): \
                        no new one is started until it does"
                .to_owned());
        }
        // None, or one that returned after its timeout (an old answer): a fresh lookup.
        _ => {
            let name = name.to_owned();
            tokio::task::spawn_blocking(move || resolver(&name, port))
        }
    };
    match tokio::time::timeout(timeout, &mut handle).await {
        Err(_) => {
            pending.0 = Some(handle);
            Err(format!(
                "no answer within {}",
                humantime::format_duration(timeout)
            ))
        }
        Ok(Err(e)) => Err(format!("the lookup task failed: {e}")),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Ok(Ok(found))) => usable(found.into_iter()),
    }
}

#[cfg(test)]
async fn lookup(name: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    lookup_with(system, LOOKUP_TIMEOUT, name, port, &mut Pending::default()).await
}

/// A lookup's addresses as the endpoint set takes them: sorted, without duplicates, at most
/// [`MAX_ADDRESSES`]; none is an error (the last good set stays).
fn usable(found: impl Iterator<Item = SocketAddr>) -> Result<Vec<SocketAddr>, String> {
    let mut addrs: Vec<SocketAddr> = found.collect();
    addrs.sort_unstable();
    addrs.dedup();
    if addrs.is_empty() {
        return Err("it resolves to no address".to_owned());
    }
    // The lowest ones: the same answer keeps the same endpoints (and their state) every round.
    addrs.truncate(MAX_ADDRESSES);
    Ok(addrs)
}

/// The configured host and port (80 when none is written: endpoints are http only).
fn span_endpoint(ep: &manifold_config::Endpoint) -> manifold_telemetry::Endpoint {
    let https = ep.scheme == "https";
    let default_port = if https { 443 } else { 80 };
    let (host, port) = match Authority::try_from(ep.authority.as_str()) {
        Ok(a) => (a.host().to_owned(), a.port_u16().unwrap_or(default_port)),
        Err(_) => (ep.authority.clone(), default_port),
    };
    manifold_telemetry::Endpoint {
        address: std::sync::Arc::from(host.trim_start_matches('[').trim_end_matches(']')),
        port,
        https,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(endpoints: &[&str]) -> manifold_config::Upstream {
        let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
        let src = format!(
            "[upstreams.u]\nendpoints = [{}]\n[routes.p]\npath = \"/p\"\nproxy = \"u\"\n",
            list.join(", ")
        );
        let mut config = manifold_config::compile(std::path::Path::new("test.toml"), &src)
            .expect("the test config compiles");
        config.upstreams.remove(0)
    }

    #[test]
    fn only_names_are_resolved_with_their_port_or_80() {
        let up = upstream(&[
            "http://10.0.0.1:81",
            "http://[::1]:82",
            "http://orders.internal:8080/v1",
            "http://localhost",
        ]);
        assert_eq!(
            names(&up),
            [
                (2, "orders.internal".to_owned(), 8080),
                (3, "localhost".to_owned(), 80)
            ]
        );
    }

    #[test]
    fn https_endpoints_default_to_port_443_and_keep_their_scheme() {
        let up = upstream(&["https://pay.internal", "https://10.0.0.5:7012/v1"]);
        assert_eq!(names(&up), [(0, "pay.internal".to_owned(), 443)]);
        let addr: SocketAddr = "10.1.2.3:443".parse().expect("addr");
        let t = Target::resolved(0, &up.endpoints[0], addr);
        let uri = t.absolute(Uri::from_static("/x")).expect("a uri");
        assert_eq!(uri, "https://pay.internal/x");
        let span = t.span_endpoint();
        assert_eq!((span.port, span.https), (443, true));
        let t = Target::configured(1, &up.endpoints[1]);
        let uri = t.absolute(Uri::from_static("/x")).expect("a uri");
        assert_eq!(uri, "https://10.0.0.5:7012/v1/x");
    }

    #[test]
    fn a_resolved_target_aims_at_the_address_and_names_the_host() {
        let up = upstream(&["http://orders.internal:8080/v1"]);
        let ep = &up.endpoints[0];
        let addr: SocketAddr = "[::1]:8080".parse().expect("addr");
        let t = Target::resolved(0, ep, addr);
        // The URI names the host (HTTP/2's `:authority`); the target's client dials `addr`.
        let uri = t.absolute(Uri::from_static("/x?q=1")).expect("a uri");
        assert_eq!(uri, "http://orders.internal:8080/v1/x?q=1");
        assert_eq!(t.key.addr, Some(addr));
        let mut headers = HeaderMap::new();
        t.host(&mut headers);
        assert_eq!(headers[HOST], "orders.internal:8080");
        assert_eq!(t.shown, "orders.internal:8080 ([::1]:8080)");
        // A Host the caller set stays; an unresolved target sets none (hyper derives it).
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("mine"));
        t.host(&mut headers);
        assert_eq!(headers[HOST], "mine");
        let mut headers = HeaderMap::new();
        Target::configured(0, ep).host(&mut headers);
        assert!(headers.is_empty());
    }

    #[test]
    fn a_name_with_ten_thousand_addresses_stands_for_a_bounded_set() {
        // 10,000 distinct addresses, in reverse order and twice over.
        let many = (0..10_000u32).rev().map(|i| {
            let [_, b, c, d] = i.to_be_bytes();
            SocketAddr::from(([10, b, c, d], 80))
        });
        let addrs = usable(many.clone().chain(many)).expect("addresses");
        assert_eq!(addrs.len(), MAX_ADDRESSES);
        // The lowest, sorted: the same answer gives the same set every round.
        assert_eq!(addrs[0], SocketAddr::from(([10, 0, 0, 0], 80)));
        assert!(addrs.windows(2).all(|w| w[0] < w[1]));
        assert!(usable(std::iter::empty()).is_err());
    }

    /// A resolver that hangs until [`release`]: the calls it took.
    static HUNG_CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static RELEASED: (std::sync::Mutex<bool>, std::sync::Condvar) =
        (std::sync::Mutex::new(false), std::sync::Condvar::new());

    fn release() {
        let (lock, cvar) = &RELEASED;
        *lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        cvar.notify_all();
    }

    /// Releases the hung resolver however the test ends (the runtime waits for its threads).
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            release();
        }
    }

    fn hung(_: &str, _: u16) -> std::io::Result<Vec<SocketAddr>> {
        HUNG_CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (lock, cvar) = &RELEASED;
        let mut released = lock.lock().expect("lock");
        while !*released {
            released = cvar.wait(released).expect("wait");
        }
        Err(std::io::Error::other("released"))
    }

    /// Real time: tokio's paused clock does not advance while a blocking task runs.
    #[tokio::test]
    async fn a_hung_resolver_holds_one_blocking_thread_per_name_not_one_per_round() {
        let _release = Release;
        let mut pending = Pending::default();
        let timeout = Duration::from_millis(20);
        // Five rounds while the resolver hangs: each gives up at the timeout, and only the
        // first started a lookup.
        for round in 0..5 {
            let r = lookup_with(hung, timeout, "hung.example", 80, &mut pending).await;
            assert!(r.is_err(), "round {round}: {r:?}");
        }
        assert_eq!(HUNG_CALLS.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Once it returns, the next round starts a fresh lookup.
        release();
        for _ in 0..500 {
            if pending
                .0
                .as_ref()
                .is_none_or(tokio::task::JoinHandle::is_finished)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let r = lookup_with(hung, timeout, "hung.example", 80, &mut pending).await;
        assert_eq!(r, Err("released".to_owned()));
        assert_eq!(HUNG_CALLS.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn lookups_sort_and_fail_without_panicking() {
        let found = lookup("localhost", 8080).await.expect("localhost resolves");
        assert!(
            found.contains(&"127.0.0.1:8080".parse().expect("addr")),
            "{found:?}"
        );
        assert!(found.windows(2).all(|w| w[0] < w[1]));
        // `.invalid` never resolves (RFC 6761).
        assert!(lookup("no-such-host.invalid", 80).await.is_err());
    }
}
