//! `[upstreams.NAME]`: endpoints, timeouts and the resilience policies (parsed in
//! [`crate::upstream_policy`]), and the rule that ties a call's method to what its upstream may
//! repeat. Apart from `compile.rs` so everything about one upstream reads in one place.

use crate::compile::unbounded_duration;
use crate::error::{Diagnostics, ErrorKind};
use crate::model::{Endpoint, Mode, ServerSettings, Upstream};
use crate::policy::{RetryOn, UpstreamPolicies};
use crate::spanned::Spanned;
use crate::upstream_policy::{self, RawBreaker, RawHedge, RawRetry};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

/// The longest `timeout` or `connect_timeout`: past it a value is a typo, and a deadline that far
/// ahead is close to overflowing the clock it is added to.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    endpoints: Spanned<Vec<Spanned<String>>>,
    #[schemars(extend("pattern" = crate::schema::DURATION_PATTERN))]
    timeout: Option<Spanned<String>>,
    #[schemars(extend("pattern" = crate::schema::DURATION_PATTERN))]
    connect_timeout: Option<Spanned<String>>,
    http2: Option<bool>,
    balance: Option<Spanned<String>>,
    #[schemars(extend("pattern" = crate::schema::DURATION_PATTERN))]
    resolve_every: Option<Spanned<String>>,
    retry: Option<Spanned<RawRetry>>,
    hedge: Option<Spanned<RawHedge>>,
    circuit_breaker: Option<Spanned<RawBreaker>>,
    ca: Option<Spanned<String>>,
    client_cert: Option<Spanned<String>>,
    client_key: Option<Spanned<String>>,
}

pub(crate) fn compile_upstream(
    name: &Spanned<String>,
    raw: &Spanned<RawUpstream>,
    config_file: &std::path::Path,
    diag: &mut Diagnostics<'_>,
) -> Option<Upstream> {
    let n = name.get_ref();
    let up = raw.get_ref();
    let before = diag.len();
    if up.endpoints.get_ref().is_empty() {
        diag.push(
            ErrorKind::Value,
            up.endpoints.span(),
            format!("upstream `{n}` has no endpoints"),
        );
    }
    let mut endpoints = Vec::new();
    for ep in up.endpoints.get_ref() {
        match parse_endpoint(ep.get_ref()) {
            Ok(e) => endpoints.push(e),
            Err(msg) => diag.push(
                ErrorKind::Value,
                ep.span(),
                format!(
                    "upstream `{n}`: endpoint {:?} {msg}",
                    crate::model::redact_url(ep.get_ref())
                ),
            ),
        }
    }
    let [timeout, connect_timeout] = [
        ("timeout", &up.timeout, Duration::from_secs(30)),
        (
            "connect_timeout",
            &up.connect_timeout,
            Duration::from_secs(2),
        ),
    ]
    .map(|(key, value, default)| {
        let Some(v) = value else { return default };
        let what = format!("upstreams.{n}.{key}");
        match unbounded_duration(v, &what, diag) {
            // A zero bound would fail every call before it is sent.
            Some(d) if d.is_zero() || d > MAX_TIMEOUT => {
                diag.push(
                    ErrorKind::Value,
                    v.span(),
                    format!(
                        "`{what}` must be more than 0 and at most 24h; got {:?}",
                        v.get_ref()
                    ),
                );
                default
            }
            Some(d) => d,
            None => default,
        }
    });
    let policies = compile_policies(n, up, timeout, diag);
    let raw_tls = crate::tls::RawUpstreamTls {
        ca: up.ca.as_ref(),
        client_cert: up.client_cert.as_ref(),
        client_key: up.client_key.as_ref(),
    };
    let any_https = endpoints.iter().any(|e: &Endpoint| e.scheme == "https");
    let tls = crate::tls::upstream_tls(n, &raw_tls, any_https, config_file, diag);
    if diag.len() > before {
        return None;
    }
    Some(Upstream {
        name: n.clone(),
        endpoints,
        timeout,
        connect_timeout,
        http2: up.http2.unwrap_or(false),
        tls,
        policies,
    })
}

fn compile_policies(
    n: &str,
    up: &RawUpstream,
    timeout: Duration,
    diag: &mut Diagnostics<'_>,
) -> UpstreamPolicies {
    let mut p = UpstreamPolicies::default();
    let key = |k: &str| format!("upstreams.{n}.{k}");
    if let Some(b) = &up.balance {
        if let Some(b) = upstream_policy::balance(b, &key("balance"), diag) {
            p.balance = b;
        }
    }
    if let Some(r) = &up.resolve_every {
        if let Some(d) = upstream_policy::resolve_every(r, &key("resolve_every"), diag) {
            p.resolve_every = d;
        }
    }
    if let Some(r) = &up.retry {
        if let Some(r) = upstream_policy::retry(r.get_ref(), &key("retry"), diag) {
            p.retry = r;
        }
    }
    if let Some(h) = &up.hedge {
        p.hedge = upstream_policy::hedge(h.get_ref(), &key("hedge"), timeout, diag);
    }
    if let Some(b) = &up.circuit_breaker {
        p.circuit_breaker = upstream_policy::breaker(b.get_ref(), &key("circuit_breaker"), diag);
    }
    p
}

/// Parse `http://host:port[/base]` or `https://…`.
/// Warns of an endpoint that is one of this gateway's own listeners.
///
/// Why: calls to the gateway's client listener come back through the gateway, and a route that
/// reaches itself again loops, each turn holding a connection and a concurrency slot, until the
/// limit sheds it; a route to the admin listener publishes the admin API (`/config`, `/metrics`,
/// `/traces`, `POST /reload`) to that route's clients. Either is almost always a wrong port.
/// A warning, not an error: composing the gateway's own routes through loopback can be meant.
/// Only what the file says is compared (literal addresses, `localhost`); a name that resolves
/// to this host is not looked up.
pub(crate) fn warn_own_listeners<'a>(
    server: &ServerSettings,
    upstreams: impl Iterator<Item = (&'a Spanned<String>, &'a Spanned<RawUpstream>)>,
    diag: &mut Diagnostics<'_>,
) {
    let mut own: Vec<(SocketAddr, &str)> = Vec::new();
    own.extend(server.listen.map(|a| (a, "server.listen")));
    own.extend(server.tls.as_ref().map(|t| (t.listen, "server.tls.listen")));
    own.push((server.admin, "server.admin"));
    for (name, up) in upstreams {
        for ep in up.get_ref().endpoints.get_ref() {
            let Some((host, port)) = endpoint_host_port(ep.get_ref()) else {
                continue;
            };
            let Some(&(addr, key)) = own.iter().find(|(a, _)| reaches(a, host, port)) else {
                continue;
            };
            let why = if key == "server.admin" {
                "a route to it publishes the admin API (/config, /metrics, /traces, POST /reload) to that route's clients"
            } else {
                "its calls come back through the gateway, and a route that reaches itself again loops until the concurrency limit sheds it"
            };
            diag.warn(
                ep.span(),
                format!(
                    "upstream `{}`: endpoint {:?} is this gateway's own listener ({key} = {addr}): {why}; point it at the service",
                    name.get_ref(),
                    crate::model::redact_url(ep.get_ref())
                ),
            );
        }
    }
}

/// An endpoint's host (`None` for `localhost`) and port, the scheme's default when not written.
fn endpoint_host_port(url: &str) -> Option<(Option<IpAddr>, u16)> {
    let uri: http::Uri = url.parse().ok()?;
    let port = uri.port_u16().or_else(|| match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    })?;
    let host = uri.host()?;
    if host.eq_ignore_ascii_case("localhost") {
        return Some((None, port));
    }
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    // `[::ffff:127.0.0.1]` connects to 127.0.0.1.
    Some((Some(ip.to_canonical()), port))
}

/// Whether connecting to `host:port` (`None`: `localhost`) reaches a socket listening on
/// `listener`: the same port, and the same address, or a local one where the listener takes
/// every address (`0.0.0.0`, `[::]`), or loopback and `localhost` for a loopback listener.
fn reaches(listener: &SocketAddr, host: Option<IpAddr>, port: u16) -> bool {
    if listener.port() != port || port == 0 {
        return false;
    }
    let l = listener.ip().to_canonical();
    let local = host.is_none_or(|ip| ip.is_loopback() || ip.is_unspecified());
    match host {
        Some(ip) if ip == l => true,
        _ if l.is_unspecified() => local,
        None => l.is_loopback(),
        Some(ip) => ip.is_unspecified() && l.is_loopback(),
    }
}

fn parse_endpoint(url: &str) -> Result<Endpoint, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("is not a URL ({e}); write e.g. \"http://127.0.0.1:7001\""))?;
    let scheme = match uri.scheme_str() {
        Some(s @ ("http" | "https")) => s.to_owned(),
        Some(other) => return Err(format!("has scheme `{other}`; write http or https")),
        None => return Err("has no scheme; write e.g. \"http://127.0.0.1:7001\"".into()),
    };
    let Some(authority) = uri.authority() else {
        return Err("has no host".into());
    };
    if authority.as_str().contains('@') {
        return Err("must not carry credentials".into());
    }
    if uri.query().is_some() {
        return Err("must not have a query string".into());
    }
    let base_path = uri.path().trim_end_matches('/').to_owned();
    Ok(Endpoint {
        url: url.to_owned(),
        scheme,
        authority: authority.as_str().to_owned(),
        base_path,
    })
}

/// What a call's `idempotent` is decided from.
pub(crate) struct CallIdempotence<'a> {
    /// `route `R`, call `C``, for the message.
    pub(crate) owner: &'a str,
    /// The call's `idempotent` as written.
    pub(crate) explicit: Option<&'a Spanned<bool>>,
    pub(crate) method: &'a http::Method,
    pub(crate) mode: Mode,
    /// The (lower-case) names of the headers the call sends.
    pub(crate) headers: &'a [String],
    /// Where the error points when there is no `idempotent`: the call's method, else its name.
    pub(crate) span: Range<usize>,
}

/// Why a call, a hook or a composed response may not set header `lower` (a lower-cased name),
/// if it may not: the framing and hop-by-hop headers (RFC 9112 §6, RFC 9110 §7.6.1), which
/// HTTP derives from the message itself.
///
/// Set from a template, they are the client's to choose: `content-length = "{request.body.n}"`
/// made hyper send the rendered body cut to the client's length (`{"note":"x",` without the
/// `"role":"user"` the template adds after it), and `transfer-encoding` or `connection` would
/// reframe the message or its connection. Even written literally, a length can only be wrong
/// for some rendered body.
pub(crate) fn reserved_header(lower: &str) -> Option<&'static str> {
    match lower {
        "content-length" | "transfer-encoding" | "te" | "trailer" => Some(
            "the gateway frames the message from the body it sends (a length set here cuts the body short)",
        ),
        "connection" | "keep-alive" | "proxy-connection" | "upgrade" => {
            Some("it is hop-by-hop: the gateway manages its own connections")
        }
        _ => None,
    }
}

/// Whether a call may be sent more than once, and the rule of issue 13 item 8: a call the
/// upstream would repeat (a hedge, or a retry on anything but `connect`) whose method is not
/// idempotent must say `idempotent = true | false`, because the gateway cannot know whether the
/// upstream tolerates a duplicate POST. Without the rule, adding `retry.on = ["503"]` to an
/// upstream would silently stop retrying (or silently start duplicating) its POSTs.
///
/// Idempotent without being told (RFC 9110 §9.2.2, and the list): GET, HEAD, OPTIONS,
/// PUT, DELETE; a call sending `Idempotency-Key`; and an async call, which the dispatcher
/// delivers at least once with the same `Idempotency-Key` on every attempt anyway.
pub(crate) fn call_idempotent(
    c: &CallIdempotence<'_>,
    upstream: Option<&Upstream>,
    diag: &mut Diagnostics<'_>,
) -> bool {
    if let Some(e) = c.explicit {
        return *e.get_ref();
    }
    if implicitly_idempotent(c.method, c.mode, c.headers) {
        return true;
    }
    if c.mode == Mode::Sync {
        if let Some((up, repeats)) =
            upstream.and_then(|u| repeats_beyond_connect(u).map(|r| (u, r)))
        {
            diag.push(
                ErrorKind::Value,
                c.span.clone(),
                format!(
                    "{}: {} is not idempotent and upstream `{}` {repeats}; set `idempotent = true` if repeating it is safe, or `idempotent = false` to send it once (connect failures are still retried since nothing was sent)",
                    c.owner, c.method, up.name
                ),
            );
        }
    }
    false
}

fn implicitly_idempotent(method: &http::Method, mode: Mode, headers: &[String]) -> bool {
    use http::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(method)
        || mode == Mode::Async
        || headers.iter().any(|h| h == "idempotency-key")
}

/// What an upstream's policies would send a second time after bytes went out, if anything.
fn repeats_beyond_connect(up: &Upstream) -> Option<String> {
    let p = &up.policies;
    let mut what = Vec::new();
    if p.retry.attempts > 1 {
        let on: Vec<String> = p
            .retry
            .on
            .iter()
            .filter(|o| **o != RetryOn::Connect)
            .map(|o| upstream_policy::retry_on_name(*o))
            .collect();
        if !on.is_empty() {
            what.push(format!("retries on {}", on.join(", ")));
        }
    }
    if p.hedge.is_some() {
        what.push("hedges".to_owned());
    }
    (!what.is_empty()).then(|| what.join(" and "))
}
