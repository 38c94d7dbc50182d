//! From TOML text to a validated [`Config`]: deserialize with spans, then check and resolve
//! everything, collecting every error with its location.

use crate::error::{ConfigErrors, Diagnostics, ErrorKind};
use crate::model::*;
use crate::spanned::Spanned;
use crate::template::{self, Expr, JsonTemplate, RawSegment, Segment, Source, StrTemplate};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    server: Option<Spanned<RawServer>>,
    #[serde(default)]
    upstreams: BTreeMap<Spanned<String>, Spanned<crate::upstream::RawUpstream>>,
    #[serde(default)]
    routes: BTreeMap<Spanned<String>, Spanned<RawRoute>>,
    cache: Option<Spanned<RawCacheSection>>,
    // Read as a TOML value, then as `QueueConfig` (its own span-less errors): its schema is that one.
    #[schemars(with = "Option<crate::queue::QueueConfig>")]
    queue: Option<Spanned<toml::Value>>,
    #[schemars(with = "Option<crate::events::EventsConfig>")]
    events: Option<Spanned<toml::Value>>,
    telemetry: Option<Spanned<crate::telemetry::RawTelemetry>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawCacheSection {
    max_bytes: Option<Spanned<u64>>,
    max_entry_bytes: Option<Spanned<u64>>,
    redis: Option<Spanned<String>>,
    prefix: Option<Spanned<String>>,
    #[schemars(extend("pattern" = crate::schema::DURATION_PATTERN))]
    redis_timeout: Option<Spanned<String>>,
    #[schemars(extend("pattern" = crate::schema::DURATION_PATTERN))]
    redis_retry_after: Option<Spanned<String>>,
    memcached: Option<Spanned<Vec<Spanned<String>>>>,
    memcached_timeout: Option<Spanned<String>>,
    memcached_retry_after: Option<Spanned<String>>,
    memcached_max_item_bytes: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawCachePolicy {
    #[schemars(extend("pattern" = crate::schema::DURATION_PATTERN))]
    ttl: Spanned<String>,
    #[schemars(extend("pattern" = crate::schema::DURATION_PATTERN))]
    stale: Option<Spanned<String>>,
    #[schemars(extend("pattern" = crate::schema::DURATION_PATTERN))]
    errors: Option<Spanned<String>>,
    respect_cache_control: Option<bool>,
    key: Option<Spanned<String>>,
    vary: Option<Spanned<Vec<Spanned<String>>>>,
    methods: Option<Spanned<Vec<Spanned<String>>>>,
    early_refresh: Option<Spanned<f64>>,
    #[schemars(extend("pattern" = crate::schema::DURATION_PATTERN))]
    lock: Option<Spanned<String>>,
    shared: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Spanned<String>>,
    admin: Option<Spanned<String>>,
    max_body_bytes: Option<Spanned<u64>>,
    max_response_bytes: Option<Spanned<u64>>,
    #[schemars(extend("pattern" = crate::schema::DURATION_PATTERN))]
    header_read_timeout: Option<Spanned<String>>,
    #[schemars(extend("pattern" = crate::schema::DURATION_PATTERN))]
    body_read_timeout: Option<Spanned<String>>,
    #[schemars(extend("pattern" = crate::schema::DURATION_PATTERN))]
    drain_timeout: Option<Spanned<String>>,
    max_connections: Option<Spanned<u64>>,
    #[schemars(extend("pattern" = crate::schema::DURATION_PATTERN))]
    drain_delay: Option<Spanned<String>>,
    #[schemars(extend("pattern" = crate::schema::DURATION_PATTERN))]
    h2_idle_timeout: Option<Spanned<String>>,
    escaped_slashes: Option<Spanned<String>>,
    trusted_proxies: Option<Spanned<Vec<Spanned<String>>>>,
    ready_requires: Option<Spanned<Vec<Spanned<String>>>>,
    admin_token: Option<Spanned<String>>,
    admin_token_file: Option<Spanned<String>>,
    tls: Option<Spanned<crate::tls::RawServerTls>>,
    // `"adaptive"` or a number: a string or an integer, so read as a TOML value.
    #[schemars(with = "Option<crate::schema::ConcurrencyValue>")]
    concurrency: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    method: Option<Spanned<String>>,
    path: Spanned<String>,
    #[schemars(extend("pattern" = crate::schema::DURATION_PATTERN))]
    deadline: Option<Spanned<String>>,
    calls: Option<Spanned<Vec<Spanned<RawCall>>>>,
    response: Option<Spanned<RawResponse>>,
    proxy: Option<Spanned<String>>,
    cache: Option<Spanned<RawCachePolicy>>,
    enqueue: Option<Spanned<String>>,
    escaped_slashes: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawCall {
    name: Spanned<String>,
    upstream: Option<Spanned<String>>,
    subject: Option<Spanned<String>>,
    method: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    query: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    headers: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    /// Any JSON value; strings in it are templates.
    #[schemars(with = "Option<serde_json::Value>")]
    body: Option<Spanned<toml::Value>>,
    after: Option<Spanned<Vec<Spanned<String>>>>,
    optional: Option<bool>,
    idempotent: Option<Spanned<bool>>,
    mode: Option<Spanned<String>>,
    #[schemars(extend("pattern" = crate::schema::DURATION_PATTERN))]
    expect: Option<Spanned<String>>,
    #[schemars(extend("pattern" = crate::schema::DURATION_PATTERN))]
    timeout: Option<Spanned<String>>,
    cache: Option<Spanned<RawCachePolicy>>,
    /// Enqueued when this async / publish call is delivered (see docs/offload.md, hooks).
    on_done: Option<Spanned<crate::hooks::RawHook>>,
    /// Enqueued when this async / publish call is dead-lettered: the compensation.
    on_dead: Option<Spanned<crate::hooks::RawHook>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawResponse {
    status: Option<Spanned<u16>>,
    headers: Option<BTreeMap<String, Spanned<String>>>,
    /// Any JSON value; strings in it are templates.
    #[schemars(with = "Option<serde_json::Value>")]
    body: Option<Spanned<toml::Value>>,
}

/// Names a template cannot use for a call: they are the request's own sources.
const RESERVED: [&str; 4] = ["path", "query", "header", "request"];

/// Parse and validate `source` (the text of `file`).
pub fn compile(file: &Path, source: &str) -> Result<Config, ConfigErrors> {
    let mut diag = Diagnostics::new(file, source);
    let raw: RawConfig = match toml::from_str(source) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            diag.push(ErrorKind::Syntax, span, e.message().trim().to_owned());
            return Err(diag.finish());
        }
    };

    let mut server = compile_server(raw.server.as_ref(), &mut diag);
    if let Some(rs) = &raw.server {
        let r = rs.get_ref();
        if let Some(t) = &r.tls {
            server.tls = crate::tls::server_tls(t, file, &mut diag);
            // Port 0 (a free port each) never clashes.
            let clash = server.tls.as_ref().filter(|t| {
                t.listen.port() != 0
                    && (Some(t.listen) == server.listen || t.listen == server.admin)
            });
            if clash.is_some() {
                diag.push(
                    ErrorKind::Value,
                    t.span(),
                    "`server.tls.listen` must differ from `server.listen` and `server.admin`",
                );
            }
        }
        let (token, token_file) = (r.admin_token.as_ref(), r.admin_token_file.as_ref());
        server.admin_token = crate::secret::admin_token(token, token_file, file, &mut diag);
        // A token that failed its checks was reported already; the exposure rule then waits.
        if token.is_none() && token_file.is_none() {
            if let Err(msg) = crate::check_admin_exposure(&server) {
                let span = r.admin.as_ref().map_or(rs.span(), |a| a.span());
                diag.push(ErrorKind::Value, span, format!("`server.admin`: {msg}"));
            }
        }
    }
    let cache = compile_cache_section(raw.cache.as_ref(), &mut diag);
    let telemetry = crate::telemetry::compile(raw.telemetry.as_ref(), &mut diag);
    let queue = match &raw.queue {
        None => crate::queue::QueueConfig::default(),
        Some(v) => match v
            .get_ref()
            .clone()
            .try_into::<crate::queue::QueueConfig>()
            .map_err(|e| e.message().trim().to_owned())
            .and_then(|q| q.validate().map(|()| q))
        {
            Ok(q) => q,
            Err(msg) => {
                let msg = msg.strip_prefix("[queue] ").unwrap_or(&msg);
                diag.push(ErrorKind::Value, v.span(), format!("[queue]: {msg}"));
                crate::queue::QueueConfig::default()
            }
        },
    };

    let events = raw.events.as_ref().and_then(|v| {
        match v
            .get_ref()
            .clone()
            .try_into::<crate::events::EventsConfig>()
            .map_err(|e| e.message().trim().to_owned())
            .and_then(|ev| ev.validate().map(|()| ev))
        {
            Ok(ev) => Some(ev),
            Err(msg) => {
                let msg = msg.strip_prefix("[events] ").unwrap_or(&msg);
                diag.push(ErrorKind::Value, v.span(), format!("[events]: {msg}"));
                None
            }
        }
    });

    let mut upstreams = Vec::new();
    for (name, up) in &raw.upstreams {
        if let Some(u) = crate::upstream::compile_upstream(name, up, file, &mut diag) {
            upstreams.push(u);
        }
    }
    let upstream_index: HashMap<&str, usize> = upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| (u.name.as_str(), i))
        .collect();
    // Names of upstreams that exist but failed to compile: don't report them again as unknown.
    let declared: Vec<&str> = raw.upstreams.keys().map(|k| k.get_ref().as_str()).collect();

    // Routes in file order, so errors and `check` output follow the file.
    let mut raw_routes: Vec<_> = raw.routes.iter().collect();
    raw_routes.sort_by_key(|(k, _)| k.span().start);
    let mut routes = Vec::new();
    for (name, route) in raw_routes {
        let ctx = RouteCtx {
            upstreams: &upstreams,
            upstream_index: &upstream_index,
            declared: &declared,
            redis: cache.redis.is_some() || !cache.memcached.is_empty(),
            events: raw.events.is_some(),
            escaped_slashes: server.escaped_slashes,
        };
        if let Some(r) = compile_route(name, route, &ctx, &mut diag) {
            routes.push((r, route.get_ref().path.span()));
        }
    }
    let mut router = check_route_conflicts(&routes, &mut diag);
    if crate::offloads(routes.iter().map(|(r, _)| r)) {
        let span = raw.queue.as_ref().map_or(0..0, |q| q.span());
        match crate::add_status_route(&mut router, &queue.status_path, usize::MAX) {
            Ok(()) => {}
            Err(crate::StatusRouteError::Shadows(i)) => {
                let (r, _) = &routes[i];
                diag.push(
                    ErrorKind::RouteConflict,
                    span,
                    format!(
                        "[queue] status_path = {:?}: task statuses (GET {}/{{task_id}}) would shadow route `{}` ({} {}); set status_path to a free prefix, or \"\" to turn statuses off",
                        queue.status_path, queue.status_path, r.name, r.method, r.path
                    ),
                );
            }
            Err(crate::StatusRouteError::Conflicts(why)) => diag.push(
                ErrorKind::RouteConflict,
                span,
                format!(
                    "[queue] status_path = {:?}: GET {}/{{task_id}} conflicts with a route: {why}; set status_path to a free prefix, or \"\" to turn statuses off",
                    queue.status_path, queue.status_path
                ),
            ),
        }
    }

    if !diag.is_empty() {
        return Err(diag.finish());
    }
    let warnings = diag.take_warnings();
    let mut routes: Vec<Route> = routes.into_iter().map(|(r, _)| r).collect();
    crate::cache_key::infer(&mut routes);
    Ok(Config {
        source: file.to_path_buf(),
        server,
        upstreams,
        routes,
        cache,
        queue,
        events,
        telemetry,
        warnings,
    })
}

fn compile_cache_section(
    raw: Option<&Spanned<RawCacheSection>>,
    diag: &mut Diagnostics<'_>,
) -> CacheSettings {
    let mut s = CacheSettings::default();
    let Some(raw) = raw else { return s };
    let raw = raw.get_ref();
    for (field, value, slot) in [
        ("max_bytes", &raw.max_bytes, &mut s.max_bytes),
        (
            "max_entry_bytes",
            &raw.max_entry_bytes,
            &mut s.max_entry_bytes,
        ),
    ] {
        if let Some(v) = value {
            if *v.get_ref() == 0 {
                diag.push(
                    ErrorKind::Value,
                    v.span(),
                    format!("`cache.{field}` must be more than 0"),
                );
            } else {
                *slot = *v.get_ref();
            }
        }
    }
    if let Some(url) = &raw.redis {
        match check_redis_url(url.get_ref()) {
            Ok(()) => s.redis = Some(url.get_ref().trim().to_owned()),
            Err(msg) => diag.push(
                ErrorKind::Value,
                url.span(),
                format!(
                    "`cache.redis`: {:?} {msg}; write e.g. \"redis://127.0.0.1:6379\"",
                    crate::model::redact_url(url.get_ref())
                ),
            ),
        }
    }
    if let Some(p) = &raw.prefix {
        if p.get_ref().is_empty()
            || p.get_ref()
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            diag.push(
                ErrorKind::Value,
                p.span(),
                format!(
                    "`cache.prefix` {:?} must be non-empty, without spaces (a purge only touches keys under it)",
                    p.get_ref()
                ),
            );
        } else {
            s.prefix = p.get_ref().clone();
        }
    }
    for (field, value, slot) in [
        ("redis_timeout", &raw.redis_timeout, &mut s.redis_timeout),
        (
            "redis_retry_after",
            &raw.redis_retry_after,
            &mut s.redis_retry_after,
        ),
    ] {
        if let Some(v) = value {
            match duration(v, &format!("cache.{field}"), diag) {
                Some(d) if d.is_zero() => diag.push(
                    ErrorKind::Value,
                    v.span(),
                    format!("`cache.{field}` must be more than 0"),
                ),
                Some(d) => *slot = d,
                None => {}
            }
        }
    }
    for (field, value) in [
        ("redis_timeout", &raw.redis_timeout),
        ("prefix", &raw.prefix),
    ] {
        if let (Some(v), None) = (value, &raw.redis) {
            if field == "prefix" && raw.memcached.is_some() {
                continue; // the Memcached tier uses it too
            }
            diag.push(
                ErrorKind::Value,
                v.span(),
                format!("`cache.{field}` only applies to the Redis tier; set `cache.redis` too or remove it"),
            );
        }
    }
    let memcached = crate::cache_tier::RawMemcached {
        servers: raw.memcached.as_ref(),
        timeout: raw.memcached_timeout.as_ref(),
        retry_after: raw.memcached_retry_after.as_ref(),
        max_item_bytes: raw.memcached_max_item_bytes.as_ref(),
        redis: raw.redis.as_ref(),
        prefix: raw.prefix.as_ref(),
    };
    crate::cache_tier::compile_memcached(&memcached, &mut s, diag);
    s
}

fn check_redis_url(url: &str) -> Result<(), String> {
    let url = url.trim();
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
        .ok_or_else(|| "is not a redis:// or rediss:// URL".to_owned())?;
    let host = rest.rsplit('@').next().unwrap_or("");
    let host = host.split('/').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err("has no host".into());
    }
    Ok(())
}

/// What a cache policy is attached to, for its checks.
struct CacheOwner<'a> {
    owner: &'a str,
    /// The method of the call or route.
    method: &'a http::Method,
    /// For a call: the (lower-case) headers it sends, which `vary` must name. For a route:
    /// `None` (`vary` names the client's request headers).
    sent_headers: Option<&'a [String]>,
    redis: bool,
}

fn compile_cache_policy(
    raw: &Spanned<RawCachePolicy>,
    at: &CacheOwner<'_>,
    res: &mut Resolver<'_>,
    diag: &mut Diagnostics<'_>,
) -> Option<CachePolicySpec> {
    let before = diag_len(diag);
    let owner = at.owner;
    let c = raw.get_ref();
    let ttl = duration(&c.ttl, &format!("{owner}: cache.ttl"), diag);
    let stale = c
        .stale
        .as_ref()
        .and_then(|d| duration(d, &format!("{owner}: cache.stale"), diag))
        .unwrap_or_default();
    let errors = c
        .errors
        .as_ref()
        .and_then(|d| duration(d, &format!("{owner}: cache.errors"), diag));
    let lock = match &c.lock {
        Some(l) => {
            let d = duration(l, &format!("{owner}: cache.lock"), diag);
            if !at.redis {
                diag.push(
                    ErrorKind::Value,
                    l.span(),
                    format!("{owner}: cache.lock coordinates replicas through the shared tier; set `[cache] redis` or `memcached`, or remove `lock`"),
                );
            } else if d.is_some_and(|d| d.is_zero()) {
                diag.push(
                    ErrorKind::Value,
                    l.span(),
                    format!(
                        "{owner}: cache.lock must be more than 0 (about the upstream's timeout)"
                    ),
                );
            }
            d
        }
        None => None,
    };
    let early_refresh = match &c.early_refresh {
        Some(b) => {
            let beta = *b.get_ref();
            if !(beta.is_finite() && beta > 0.0 && beta <= 100.0) {
                diag.push(
                    ErrorKind::Value,
                    b.span(),
                    format!("{owner}: cache.early_refresh is XFetch's beta, a number in (0, 100] (1.0 is usual); got {beta}"),
                );
            }
            Some(beta)
        }
        None => None,
    };
    let mut methods = vec![http::Method::GET];
    if let Some(ms) = &c.methods {
        methods.clear();
        for m in ms.get_ref() {
            let upper = m.get_ref().trim().to_ascii_uppercase();
            match http::Method::from_bytes(upper.as_bytes()) {
                Ok(parsed) if !upper.is_empty() => methods.push(parsed),
                _ => diag.push(
                    ErrorKind::Value,
                    m.span(),
                    format!(
                        "{owner}: cache.methods: {:?} is not an HTTP method",
                        m.get_ref()
                    ),
                ),
            }
        }
    }
    if !methods.contains(at.method) && diag_len(diag) == before {
        let span = c.methods.as_ref().map(|m| m.span()).unwrap_or(raw.span());
        diag.push(
            ErrorKind::Value,
            span,
            format!(
                "{owner}: {} answers are only cached when listed in the policy's `methods` (it is {}); add methods = [\"{}\"] if repeating this call is safe",
                at.method,
                if c.methods.is_some() { "a different list" } else { "GET only by default" },
                at.method
            ),
        );
    }
    let mut vary = Vec::new();
    if let Some(v) = &c.vary {
        for name in v.get_ref() {
            let lower = name.get_ref().trim().to_ascii_lowercase();
            if http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
                diag.push(
                    ErrorKind::Value,
                    name.span(),
                    format!(
                        "{owner}: cache.vary: `{}` is not a header name",
                        name.get_ref()
                    ),
                );
                continue;
            }
            if let Some(sent) = at.sent_headers {
                if !sent.contains(&lower) {
                    diag.push(
                        ErrorKind::UnknownName,
                        name.span(),
                        format!(
                            "{owner}: cache.vary names `{lower}`, which the call does not send (it sends: {}); vary lists headers of the call's own request",
                            list_or_none(&sent.iter().map(String::as_str).collect::<Vec<_>>())
                        ),
                    );
                    continue;
                }
            }
            if !vary.contains(&lower) {
                vary.push(lower);
            }
        }
    }
    let key = match &c.key {
        Some(k) if k.get_ref().trim().is_empty() => {
            diag.push(
                ErrorKind::Value,
                k.span(),
                format!("{owner}: cache.key is empty; remove it to use the default key"),
            );
            None
        }
        Some(k) => match res.str_template(k.get_ref()) {
            Ok(t) => Some(t),
            Err(msg) => {
                diag.push(
                    ErrorKind::UnknownName,
                    k.span(),
                    format!("{owner}, cache.key: {msg}"),
                );
                None
            }
        },
        None => None,
    };
    if let (Some(sh), Some(_)) = (&c.shared, at.sent_headers) {
        diag.push(
            ErrorKind::Value,
            sh.span(),
            format!("{owner}: cache.shared applies to a proxy route's cache; a call's key already covers every request value it sends"),
        );
    }
    if diag_len(diag) > before {
        return None;
    }
    Some(CachePolicySpec {
        ttl: ttl?,
        stale,
        errors,
        respect_cache_control: c.respect_cache_control.unwrap_or(false),
        key,
        vary,
        methods,
        early_refresh,
        lock,
        shared: c.shared.as_ref().is_some_and(|s| *s.get_ref()),
        key_inputs: Vec::new(),
        key_calls: Vec::new(),
    })
}

pub(crate) fn duration(
    s: &Spanned<String>,
    what: &str,
    diag: &mut Diagnostics<'_>,
) -> Option<Duration> {
    match humantime::parse_duration(s.get_ref().trim()) {
        Ok(d) => Some(d),
        Err(e) => {
            diag.push(
                ErrorKind::Value,
                s.span(),
                format!(
                    "`{what}`: {:?} is not a duration ({e}); write e.g. \"250ms\" or \"2s\"",
                    s.get_ref()
                ),
            );
            None
        }
    }
}

fn compile_server(raw: Option<&Spanned<RawServer>>, diag: &mut Diagnostics<'_>) -> ServerSettings {
    let mut s = ServerSettings::default();
    let Some(raw) = raw else { return s };
    let raw = raw.get_ref();
    // A TLS-only deployment leaves `listen` out: with `tls` set, no plaintext listener unless
    // `listen` is written.
    if raw.tls.is_some() && raw.listen.is_none() {
        s.listen = None;
    }
    let mut listen = s.listen.unwrap_or(s.admin);
    for (field, value, slot) in [
        ("listen", &raw.listen, &mut listen),
        ("admin", &raw.admin, &mut s.admin),
    ] {
        if let Some(v) = value {
            match v.get_ref().parse() {
                Ok(addr) => *slot = addr,
                Err(_) => diag.push(
                    ErrorKind::Value,
                    v.span(),
                    format!(
                        "`server.{field}`: {:?} is not an address; write IP:PORT, e.g. \"127.0.0.1:8080\"",
                        v.get_ref()
                    ),
                ),
            }
        }
    }
    if raw.listen.is_some() {
        s.listen = Some(listen);
    }
    for (field, value, slot) in [
        ("max_body_bytes", &raw.max_body_bytes, &mut s.max_body_bytes),
        (
            "max_response_bytes",
            &raw.max_response_bytes,
            &mut s.max_response_bytes,
        ),
        (
            "max_connections",
            &raw.max_connections,
            &mut s.max_connections,
        ),
    ] {
        if let Some(v) = value {
            if *v.get_ref() == 0 {
                diag.push(
                    ErrorKind::Value,
                    v.span(),
                    format!("`server.{field}` must be more than 0"),
                );
            } else {
                *slot = *v.get_ref();
            }
        }
    }
    for (field, value, slot) in [
        (
            "header_read_timeout",
            &raw.header_read_timeout,
            &mut s.header_read_timeout,
        ),
        (
            "body_read_timeout",
            &raw.body_read_timeout,
            &mut s.body_read_timeout,
        ),
        ("drain_timeout", &raw.drain_timeout, &mut s.drain_timeout),
        ("drain_delay", &raw.drain_delay, &mut s.drain_delay),
        (
            "h2_idle_timeout",
            &raw.h2_idle_timeout,
            &mut s.h2_idle_timeout,
        ),
    ] {
        if let Some(v) = value {
            if let Some(d) = duration(v, &format!("server.{field}"), diag) {
                // No drain (or no drain delay) is a choice; a zero read or idle timeout would
                // refuse every request.
                if d.is_zero() && !field.starts_with("drain_") {
                    diag.push(
                        ErrorKind::Value,
                        v.span(),
                        format!("`server.{field}` must be more than 0"),
                    );
                } else {
                    *slot = d;
                }
            }
        }
    }
    if let Some(v) = &raw.escaped_slashes {
        if let Some(e) = crate::proxy::escaped_slashes(v, "server.escaped_slashes", diag) {
            s.escaped_slashes = e;
        }
    }
    if let Some(v) = &raw.trusted_proxies {
        s.trusted_proxies = crate::proxy::trusted_proxies(v, diag);
    }
    if let Some(v) = &raw.ready_requires {
        s.ready_requires = crate::ready::ready_requires(v, diag);
    }
    if let Some(v) = &raw.concurrency {
        if let Some(c) = concurrency(v, diag) {
            s.concurrency = c;
        }
    }
    s
}

/// Most requests a fixed `server.concurrency` may name: far beyond what one process serves, and
/// small enough that the limit's arithmetic never overflows.
const MAX_CONCURRENCY: i64 = 1_000_000;

/// `server.concurrency = "adaptive" | N` (1 ≤ N ≤ 1,000,000).
fn concurrency(
    v: &Spanned<toml::Value>,
    diag: &mut Diagnostics<'_>,
) -> Option<crate::policy::Concurrency> {
    use crate::policy::Concurrency;
    let msg = match v.get_ref() {
        toml::Value::String(s) if s == "adaptive" => return Some(Concurrency::Adaptive),
        toml::Value::Integer(n) if (1..=MAX_CONCURRENCY).contains(n) => {
            return u32::try_from(*n).ok().map(Concurrency::Fixed)
        }
        toml::Value::Integer(n) => {
            format!("`server.concurrency` = {n} is out of range: write 1 to {MAX_CONCURRENCY}, or \"adaptive\"")
        }
        other => format!(
            "`server.concurrency`: {other} is not allowed; write \"adaptive\" (the default) or a \
             number of requests from 1 to {MAX_CONCURRENCY}"
        ),
    };
    diag.push(ErrorKind::Value, v.span(), msg);
    None
}

fn diag_len(diag: &Diagnostics<'_>) -> usize {
    diag.len()
}

pub(crate) struct RouteCtx<'a> {
    upstreams: &'a [Upstream],
    upstream_index: &'a HashMap<&'a str, usize>,
    declared: &'a [&'a str],
    /// Whether `[cache] redis` is set (a policy's `lock` needs it).
    redis: bool,
    /// Whether there is an `[events]` section (publish calls need it).
    pub(crate) events: bool,
    /// `server.escaped_slashes`: proxy routes' default.
    escaped_slashes: EscapedSlashes,
}

impl RouteCtx<'_> {
    pub(crate) fn resolve_upstream(
        &self,
        name: &Spanned<String>,
        owner: &str,
        diag: &mut Diagnostics<'_>,
    ) -> Option<usize> {
        match self.upstream_index.get(name.get_ref().as_str()) {
            Some(&i) => Some(i),
            None => {
                if !self.declared.contains(&name.get_ref().as_str()) {
                    let known: Vec<&str> = self.upstreams.iter().map(|u| u.name.as_str()).collect();
                    diag.push(
                        ErrorKind::UnknownName,
                        name.span(),
                        format!(
                            "{owner}: unknown upstream `{}` (declared: {})",
                            name.get_ref(),
                            list_or_none(&known)
                        ),
                    );
                }
                None
            }
        }
    }
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Parse a route pattern: `/a/{id}/b`, with an optional final `{*rest}`.
fn route_params(path: &str) -> Result<Vec<String>, String> {
    if !path.starts_with('/') {
        return Err("must start with `/`".into());
    }
    let mut params: Vec<String> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, seg) in segments.iter().enumerate() {
        if seg.contains('{') || seg.contains('}') {
            let inner = seg
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .ok_or_else(|| {
                    format!("segment `{seg}`: a parameter must be a whole segment, like `{{id}}`")
                })?;
            let (name, catch_all) = match inner.strip_prefix('*') {
                Some(n) => (n, true),
                None => (inner, false),
            };
            if catch_all && i + 1 != segments.len() {
                return Err(format!("`{{*{name}}}` must be the last segment"));
            }
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!(
                    "parameter name `{name}` must be letters, digits, `_` or `-`"
                ));
            }
            if params.iter().any(|p| p == name) {
                return Err(format!("parameter `{name}` appears twice"));
            }
            params.push(name.to_owned());
        }
    }
    Ok(params)
}

pub(crate) fn method(
    raw: Option<&Spanned<String>>,
    default: http::Method,
    owner: &str,
    diag: &mut Diagnostics<'_>,
) -> http::Method {
    let Some(m) = raw else { return default };
    let upper = m.get_ref().trim().to_ascii_uppercase();
    match http::Method::from_bytes(upper.as_bytes()) {
        Ok(m) if !upper.is_empty() => m,
        _ => {
            diag.push(
                ErrorKind::Value,
                m.span(),
                format!("{owner}: {:?} is not an HTTP method", m.get_ref()),
            );
            default
        }
    }
}

/// Resolves references in one route: request sources and call names.
pub(crate) struct Resolver<'a> {
    route: &'a str,
    params: &'a [String],
    calls: &'a HashMap<String, usize>,
    /// Calls referenced by the template being compiled.
    refs: Vec<usize>,
    reads_body: bool,
    /// Inside an `on_done` / `on_dead` hook: `{task.*}` reads the settled task (see
    /// `crate::hooks`); elsewhere `task` is an ordinary call name.
    pub(crate) task: Option<crate::queue::HookKind>,
}

impl Resolver<'_> {
    fn resolve(&mut self, r: &template::RawRef) -> Result<Expr, String> {
        let root = r.parts[0].as_str();
        let rest = &r.parts[1..];
        if root == "task" {
            if let Some(kind) = self.task {
                return crate::hooks::task_ref(kind, r);
            }
        }
        let single = |kind: &str| -> Result<String, String> {
            match rest {
                [name] => Ok(name.clone()),
                [] => Err(format!(
                    "`{{{}}}` needs a name, like `{{{kind}.NAME}}`",
                    r.text
                )),
                _ => Err(format!(
                    "`{{{}}}`: {kind} values are text and have no fields",
                    r.text
                )),
            }
        };
        let source = match root {
            "path" => {
                let name = single("path")?;
                let index = self.params.iter().position(|p| *p == name).ok_or_else(|| {
                    format!(
                        "`{{{}}}`: the route's path has no parameter `{name}` (it has: {})",
                        r.text,
                        list_or_none(&self.params.iter().map(String::as_str).collect::<Vec<_>>())
                    )
                })?;
                return Ok(Expr {
                    source: Source::Path { index, name },
                    steps: Vec::new(),
                });
            }
            "query" => {
                let name = single("query")?;
                return Ok(Expr {
                    source: Source::Query { name },
                    steps: Vec::new(),
                });
            }
            "header" => {
                let name = single("header")?.to_ascii_lowercase();
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(format!("`{{{}}}`: `{name}` is not a header name", r.text));
                }
                return Ok(Expr {
                    source: Source::Header { name },
                    steps: Vec::new(),
                });
            }
            "request" => {
                if rest.first().map(String::as_str) != Some("body") {
                    return Err(format!(
                        "`{{{}}}`: the request's sources are `request.body`, `path.NAME`, `query.NAME` and `header.NAME`",
                        r.text
                    ));
                }
                self.reads_body = true;
                return Ok(Expr {
                    source: Source::RequestBody,
                    steps: template::steps(&rest[1..]),
                });
            }
            call => call,
        };
        match self.calls.get(source) {
            Some(&index) => {
                self.refs.push(index);
                Ok(Expr {
                    source: Source::Call {
                        index,
                        name: source.to_owned(),
                    },
                    steps: template::steps(rest),
                })
            }
            None => {
                let mut names: Vec<&str> = self.calls.keys().map(String::as_str).collect();
                names.sort_unstable();
                Err(format!(
                    "route `{}`: `{{{}}}` refers to an unknown call `{source}` (calls: {}; request sources: path, query, header, request.body)",
                    self.route,
                    r.text,
                    list_or_none(&names)
                ))
            }
        }
    }

    pub(crate) fn str_template(&mut self, text: &str) -> Result<StrTemplate, String> {
        let raw = template::parse(text).map_err(|e| e.message)?;
        let mut segments = Vec::with_capacity(raw.len());
        for seg in raw {
            segments.push(match seg {
                RawSegment::Lit(l) => Segment::Lit(l),
                RawSegment::Ref(r) => Segment::Expr(self.resolve(&r)?),
            });
        }
        Ok(StrTemplate { segments })
    }

    pub(crate) fn json_template(&mut self, value: &toml::Value) -> Result<JsonTemplate, String> {
        Ok(match value {
            toml::Value::String(s) => {
                let t = self.str_template(s)?;
                if let Some(e) = t.as_single_expr() {
                    JsonTemplate::Value(e.clone())
                } else if let Some(lit) = t.as_literal() {
                    JsonTemplate::Literal(serde_json::Value::String(lit))
                } else {
                    JsonTemplate::Text(t)
                }
            }
            toml::Value::Integer(i) => JsonTemplate::Literal((*i).into()),
            toml::Value::Float(f) => JsonTemplate::Literal(
                serde_json::Number::from_f64(*f)
                    .map(serde_json::Value::Number)
                    .ok_or_else(|| format!("{f} is not a JSON number"))?,
            ),
            toml::Value::Boolean(b) => JsonTemplate::Literal((*b).into()),
            toml::Value::Datetime(d) => JsonTemplate::Literal(d.to_string().into()),
            toml::Value::Array(items) => {
                let items = items
                    .iter()
                    .map(|i| self.json_template(i))
                    .collect::<Result<Vec<_>, _>>()?;
                if items.iter().all(|i| matches!(i, JsonTemplate::Literal(_))) {
                    JsonTemplate::Literal(serde_json::Value::Array(
                        items
                            .into_iter()
                            .filter_map(|i| match i {
                                JsonTemplate::Literal(v) => Some(v),
                                _ => None,
                            })
                            .collect(),
                    ))
                } else {
                    JsonTemplate::Array(items)
                }
            }
            toml::Value::Table(t) => {
                let fields = t
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), self.json_template(v)?)))
                    .collect::<Result<Vec<_>, String>>()?;
                JsonTemplate::Object(fields)
            }
        })
    }
}

fn compile_route(
    name: &Spanned<String>,
    raw: &Spanned<RawRoute>,
    ctx: &RouteCtx<'_>,
    diag: &mut Diagnostics<'_>,
) -> Option<Route> {
    let rname = name.get_ref().clone();
    let r = raw.get_ref();
    let before = diag_len(diag);
    let owner = format!("route `{rname}`");
    let method = method(r.method.as_ref(), http::Method::GET, &owner, diag);
    let params = match route_params(r.path.get_ref()) {
        Ok(p) => p,
        Err(msg) => {
            diag.push(
                ErrorKind::Value,
                r.path.span(),
                format!("{owner}: path {:?} {msg}", r.path.get_ref()),
            );
            Vec::new()
        }
    };
    let deadline = r
        .deadline
        .as_ref()
        .and_then(|d| duration(d, &format!("routes.{rname}.deadline"), diag));
    let cache = r.cache.as_ref().and_then(|c| {
        // A route's key is rendered before any call runs: it reads the request only.
        let no_calls = HashMap::new();
        let mut res = Resolver {
            route: &rname,
            params: &params,
            calls: &no_calls,
            refs: Vec::new(),
            reads_body: false,
            task: None,
        };
        let at = CacheOwner {
            owner: &owner,
            method: &method,
            sent_headers: None,
            redis: ctx.redis,
        };
        let spec = compile_cache_policy(c, &at, &mut res, diag);
        if res.reads_body {
            diag.push(
                ErrorKind::Value,
                c.span(),
                format!("{owner}: cache.key cannot read the request body"),
            );
        }
        spec
    });

    if let (Some(v), None) = (&r.escaped_slashes, &r.proxy) {
        diag.push(
            ErrorKind::Value,
            v.span(),
            format!("{owner}: `escaped_slashes` applies to proxy routes only (a composing route encodes every value it puts in a path)"),
        );
    }
    let kind = match (&r.proxy, &r.calls) {
        (Some(p), Some(_)) => {
            diag.push(
                ErrorKind::Value,
                p.span(),
                format!(
                    "{owner}: a route either proxies (`proxy`) or composes (`calls`), not both"
                ),
            );
            None
        }
        (Some(p), None) => {
            if let Some(resp) = &r.response {
                diag.push(
                    ErrorKind::Value,
                    resp.span(),
                    format!("{owner}: a proxy route forwards the upstream's response; remove `response`"),
                );
            }
            if let Err(msg) = crate::proxy::check_proxy_pattern(r.path.get_ref()) {
                diag.push(
                    ErrorKind::Value,
                    r.path.span(),
                    format!("{owner}: path {:?} {msg}", r.path.get_ref()),
                );
            }
            let escaped_slashes = r
                .escaped_slashes
                .as_ref()
                .and_then(|v| {
                    crate::proxy::escaped_slashes(
                        v,
                        &format!("routes.{rname}.escaped_slashes"),
                        diag,
                    )
                })
                .unwrap_or(ctx.escaped_slashes);
            ctx.resolve_upstream(p, &owner, diag)
                .map(|upstream| RouteKind::Proxy {
                    upstream,
                    upstream_name: p.get_ref().clone(),
                    escaped_slashes,
                })
        }
        (None, Some(calls)) => compile_plan(&rname, &params, calls, r.response.as_ref(), ctx, diag)
            .map(RouteKind::Compose),
        (None, None) => {
            diag.push(
                ErrorKind::Value,
                name.span(),
                format!("{owner} has neither `calls` nor `proxy`: say what it should do"),
            );
            None
        }
    };
    let kind = crate::dataflow::with_enqueue(kind, r.enqueue.as_ref(), &owner, diag);
    if let (Some(raw), Some(kind)) = (&r.cache, &kind) {
        crate::cache_key::check_route(
            raw.get_ref().shared.as_ref(),
            raw.span(),
            kind,
            &owner,
            diag,
        );
    }
    if diag_len(diag) > before {
        return None;
    }
    Some(Route {
        name: rname,
        method,
        path: r.path.get_ref().clone(),
        params,
        deadline,
        cache,
        kind: kind?,
    })
}

fn compile_plan(
    route: &str,
    params: &[String],
    raw_calls: &Spanned<Vec<Spanned<RawCall>>>,
    raw_response: Option<&Spanned<RawResponse>>,
    ctx: &RouteCtx<'_>,
    diag: &mut Diagnostics<'_>,
) -> Option<Plan> {
    let before = diag_len(diag);
    if raw_calls.get_ref().is_empty() {
        diag.push(
            ErrorKind::Value,
            raw_calls.span(),
            format!("route `{route}` has an empty `calls` list"),
        );
        return None;
    }
    // Names first: templates may refer to calls declared later.
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, c) in raw_calls.get_ref().iter().enumerate() {
        let name = c.get_ref().name.get_ref();
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-');
        if !valid {
            diag.push(
                ErrorKind::Value,
                c.get_ref().name.span(),
                format!("route `{route}`: call name {name:?} must be letters, digits, `_` or `-`"),
            );
        } else if RESERVED.contains(&name.as_str()) {
            diag.push(
                ErrorKind::Value,
                c.get_ref().name.span(),
                format!(
                    "route `{route}`: `{name}` is reserved for the request's own values; name the call otherwise"
                ),
            );
        } else if index.insert(name.clone(), i).is_some() {
            diag.push(
                ErrorKind::Duplicate,
                c.get_ref().name.span(),
                format!("route `{route}`: two calls are named `{name}`"),
            );
        }
    }

    let mut calls = Vec::new();
    let mut deps: Vec<Vec<usize>> = Vec::new();
    // The calls whose results each call's templates read (not `after`), with where it is named.
    let mut read_deps: Vec<(Vec<usize>, Range<usize>)> = Vec::new();
    let mut reads_body = false;
    for c in raw_calls.get_ref() {
        let c = c.get_ref();
        let cname = c.name.get_ref().clone();
        let owner = format!("route `{route}`, call `{cname}`");
        let mode = match c.mode.as_ref().map(|m| (m, m.get_ref().as_str())) {
            None | Some((_, "sync")) => Mode::Sync,
            Some((_, "async")) => Mode::Async,
            Some((_, "publish")) => Mode::Publish,
            Some((m, other)) => {
                diag.push(
                    ErrorKind::Value,
                    m.span(),
                    format!(
                        "{owner}: mode {other:?} is not one of \"sync\", \"async\", \"publish\""
                    ),
                );
                Mode::Sync
            }
        };
        let subject = compile_subject(c, mode, &owner, ctx, diag);
        let upstream = match (&c.upstream, mode) {
            (Some(u), Mode::Publish) => {
                diag.push(
                    ErrorKind::Value,
                    u.span(),
                    format!("{owner}: a publish call sends its body to `[events]` under its `subject`, not to an upstream; remove `upstream`"),
                );
                None
            }
            (None, Mode::Publish) => None,
            (Some(u), _) => ctx.resolve_upstream(u, &owner, diag),
            (None, _) => {
                diag.push(
                    ErrorKind::Value,
                    c.name.span(),
                    format!("{owner} has no `upstream`: name the `[upstreams.NAME]` it calls (or write mode = \"publish\" with a `subject` to publish an event)"),
                );
                None
            }
        };
        let method = method(c.method.as_ref(), http::Method::GET, &owner, diag);
        let mut res = Resolver {
            route,
            params,
            calls: &index,
            refs: Vec::new(),
            reads_body: false,
            task: None,
        };
        let tpl = |res: &mut Resolver<'_>,
                   diag: &mut Diagnostics<'_>,
                   text: &str,
                   span: Range<usize>,
                   what: &str| match res.str_template(text) {
            Ok(t) => Some(t),
            Err(msg) => {
                diag.push(
                    ErrorKind::UnknownName,
                    span,
                    format!("{owner}, {what}: {msg}"),
                );
                None
            }
        };
        let path = match &c.path {
            Some(p) if !p.get_ref().starts_with('/') => {
                diag.push(
                    ErrorKind::Value,
                    p.span(),
                    format!("{owner}: path {:?} must start with `/`", p.get_ref()),
                );
                None
            }
            Some(p) => tpl(&mut res, diag, p.get_ref(), p.span(), "path"),
            None => Some(StrTemplate::literal("/")),
        };
        let mut query = Vec::new();
        if let Some(q) = &c.query {
            for (k, v) in q.get_ref() {
                if let Some(t) = tpl(
                    &mut res,
                    diag,
                    v.get_ref(),
                    v.span(),
                    &format!("query `{k}`"),
                ) {
                    query.push((k.clone(), t));
                }
            }
        }
        let mut headers = Vec::new();
        if let Some(h) = &c.headers {
            for (k, v) in h.get_ref() {
                let lower = k.to_ascii_lowercase();
                if http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
                    diag.push(
                        ErrorKind::Value,
                        v.span(),
                        format!("{owner}: `{k}` is not a header name"),
                    );
                    continue;
                }
                if let Some(t) = tpl(
                    &mut res,
                    diag,
                    v.get_ref(),
                    v.span(),
                    &format!("header `{k}`"),
                ) {
                    headers.push((lower, t));
                }
            }
        }
        let body = match &c.body {
            Some(b) => match res.json_template(b.get_ref()) {
                Ok(t) => Some(t),
                Err(msg) => {
                    diag.push(
                        ErrorKind::UnknownName,
                        b.span(),
                        format!("{owner}, body: {msg}"),
                    );
                    None
                }
            },
            None => None,
        };
        let cache = c.cache.as_ref().and_then(|spec| {
            let sent: Vec<String> = headers.iter().map(|(n, _)| n.clone()).collect();
            let at = CacheOwner {
                owner: &owner,
                method: &method,
                sent_headers: Some(&sent),
                redis: ctx.redis,
            };
            compile_cache_policy(spec, &at, &mut res, diag)
        });
        let idempotent = crate::upstream::call_idempotent(
            &crate::upstream::CallIdempotence {
                owner: &owner,
                explicit: c.idempotent.as_ref(),
                method: &method,
                mode,
                headers: &headers.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
                span: c.method.as_ref().map_or(c.name.span(), |m| m.span()),
            },
            upstream.and_then(|i| ctx.upstreams.get(i)),
            diag,
        );
        let hooks = crate::hooks::compile_hooks(
            c.on_done.as_ref(),
            c.on_dead.as_ref(),
            mode,
            &owner,
            ctx,
            &mut res,
            diag,
        );
        let mut my_deps = std::mem::take(&mut res.refs);
        read_deps.push((my_deps.clone(), c.name.span()));
        let mut reads = my_deps.clone();
        reads.sort_unstable();
        reads.dedup();
        reads_body |= res.reads_body;
        if let Some(after) = &c.after {
            for a in after.get_ref() {
                match index.get(a.get_ref()) {
                    Some(&i) => my_deps.push(i),
                    None => diag.push(
                        ErrorKind::UnknownName,
                        a.span(),
                        format!(
                            "{owner}: `after` names `{}`, which is not a call of this route",
                            a.get_ref()
                        ),
                    ),
                }
            }
        }
        my_deps.sort_unstable();
        my_deps.dedup();
        let expect = c
            .expect
            .as_ref()
            .and_then(|e| duration(e, &format!("{owner}: expect"), diag));
        let timeout = c
            .timeout
            .as_ref()
            .and_then(|e| duration(e, &format!("{owner}: timeout"), diag));
        deps.push(my_deps);
        // Every name was checked above (an invalid one is not in `headers`).
        let header_names = headers
            .iter()
            .filter_map(|(n, _)| http::HeaderName::from_bytes(n.as_bytes()).ok())
            .collect();
        calls.push(Call {
            name: cname,
            upstream: upstream.unwrap_or(usize::MAX),
            upstream_name: c
                .upstream
                .as_ref()
                .map(|u| u.get_ref().clone())
                .unwrap_or_default(),
            subject,
            method,
            path: path.unwrap_or_default(),
            query,
            headers,
            header_names,
            body,
            optional: c.optional.unwrap_or(false),
            idempotent,
            mode,
            expect,
            timeout,
            cache,
            reads,
            hooks,
        });
    }

    // An async or publish call's result is a receipt (`task_id`), not an answer: no other call
    // may read it (the response may, to hand the client `{CALL.task_id}`).
    for (i, (reads, span)) in read_deps.iter().enumerate() {
        for &r in reads {
            let what = match calls[r].mode {
                Mode::Sync => continue,
                Mode::Async => "which is async (queued and delivered later)",
                Mode::Publish => "which publishes an event (queued and published later)",
            };
            diag.push(
                ErrorKind::Value,
                span.clone(),
                format!(
                    "route `{route}`: call `{}` reads the result of `{}`, {what}; only the response may read it (`{{{}.task_id}}`); use `after` for ordering",
                    calls[i].name, calls[r].name, calls[r].name
                ),
            );
        }
    }

    crate::dataflow::warn_required_reads_optional(route, &calls, &read_deps, diag);

    // Response.
    let mut res = Resolver {
        route,
        params,
        calls: &index,
        refs: Vec::new(),
        reads_body: false,
        task: None,
    };
    let mut response = ResponsePlan {
        status: 200,
        headers: Vec::new(),
        body: JsonTemplate::Object(
            calls
                .iter()
                .enumerate()
                .filter(|(_, c)| c.mode == Mode::Sync)
                .map(|(i, c)| {
                    (
                        c.name.clone(),
                        JsonTemplate::Value(Expr {
                            source: Source::Call {
                                index: i,
                                name: c.name.clone(),
                            },
                            steps: Vec::new(),
                        }),
                    )
                })
                .collect(),
        ),
    };
    if let Some(raw) = raw_response {
        let raw = raw.get_ref();
        if let Some(s) = &raw.status {
            if !(100..=599).contains(s.get_ref()) {
                diag.push(
                    ErrorKind::Value,
                    s.span(),
                    format!(
                        "route `{route}`: response status {} is not an HTTP status",
                        s.get_ref()
                    ),
                );
            } else {
                response.status = *s.get_ref();
            }
        }
        if let Some(h) = &raw.headers {
            for (k, v) in h {
                let lower = k.to_ascii_lowercase();
                if http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
                    diag.push(
                        ErrorKind::Value,
                        v.span(),
                        format!("route `{route}`: `{k}` is not a header name"),
                    );
                    continue;
                }
                match res.str_template(v.get_ref()) {
                    Ok(t) => response.headers.push((lower, t)),
                    Err(msg) => diag.push(
                        ErrorKind::UnknownName,
                        v.span(),
                        format!("route `{route}`, response header `{k}`: {msg}"),
                    ),
                }
            }
        }
        if let Some(b) = &raw.body {
            match res.json_template(b.get_ref()) {
                Ok(t) => response.body = t,
                Err(msg) => diag.push(
                    ErrorKind::UnknownName,
                    b.span(),
                    format!("route `{route}`, response body: {msg}"),
                ),
            }
        }
    }
    reads_body |= res.reads_body;

    if diag_len(diag) > before {
        return None;
    }

    // Cycles: Kahn's algorithm; whatever cannot be ordered is on or behind a cycle.
    let n = calls.len();
    let mut dependents = vec![Vec::new(); n];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let mut indeg: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut level_of = vec![0usize; n];
    let mut queue: Vec<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
    let roots = queue.clone();
    let mut ordered = 0;
    while let Some(i) = queue.pop() {
        ordered += 1;
        for &j in &dependents[i] {
            level_of[j] = level_of[j].max(level_of[i] + 1);
            indeg[j] -= 1;
            if indeg[j] == 0 {
                queue.push(j);
            }
        }
    }
    if ordered < n {
        let cycle = find_cycle(&deps, &indeg);
        let names: Vec<&str> = cycle.iter().map(|&i| calls[i].name.as_str()).collect();
        let first = cycle.first().copied().unwrap_or(0);
        diag.push(
            ErrorKind::Cycle,
            raw_calls.get_ref()[first].get_ref().name.span(),
            format!(
                "route `{route}`: calls depend on each other in a cycle: {} → {}",
                names.join(" → "),
                names.first().copied().unwrap_or("?")
            ),
        );
        return None;
    }
    let depth = level_of.iter().copied().max().unwrap_or(0) + 1;
    let mut levels = vec![Vec::new(); depth];
    for (i, &l) in level_of.iter().enumerate() {
        levels[l].push(i);
    }
    Some(Plan {
        calls,
        deps,
        dependents,
        roots,
        levels,
        response,
        reads_request_body: reads_body,
        enqueue: Enqueue::default(),
    })
}

/// Find one cycle among the calls Kahn's algorithm could not order (`indeg > 0`).
fn find_cycle(deps: &[Vec<usize>], indeg: &[usize]) -> Vec<usize> {
    let Some(start) = (0..deps.len()).find(|&i| indeg[i] > 0) else {
        return Vec::new();
    };
    // Walk backwards along unresolved dependencies until a node repeats.
    let mut seen: Vec<Option<usize>> = vec![None; deps.len()];
    let mut path = Vec::new();
    let mut cur = start;
    loop {
        if let Some(pos) = seen[cur] {
            let mut cycle: Vec<usize> = path[pos..].to_vec();
            // `path` follows dependencies backwards; present it in execution order.
            cycle.reverse();
            return cycle;
        }
        seen[cur] = Some(path.len());
        path.push(cur);
        match deps[cur].iter().find(|&&d| indeg[d] > 0) {
            Some(&next) => cur = next,
            None => return path,
        }
    }
}

/// A call's `subject`: required (and checked) for `mode = "publish"`, refused otherwise; a
/// publish call must also have a `body` and an `[events]` section to publish to, and none of
/// the HTTP-only keys (which it would silently ignore).
fn compile_subject(
    c: &RawCall,
    mode: Mode,
    owner: &str,
    ctx: &RouteCtx<'_>,
    diag: &mut Diagnostics<'_>,
) -> Option<String> {
    if mode != Mode::Publish {
        if let Some(s) = &c.subject {
            diag.push(
                ErrorKind::Value,
                s.span(),
                format!("{owner}: `subject` only applies to mode = \"publish\" (events); remove it or set the mode"),
            );
        }
        return None;
    }
    // `mode` is set when it is "publish".
    let at = c.mode.as_ref().map(|m| m.span()).unwrap_or(c.name.span());
    if !ctx.events {
        diag.push(
            ErrorKind::Value,
            at.clone(),
            format!("{owner} publishes an event but there is no `[events]` section saying where to; add e.g. [events] backend = \"nats\" (or \"rabbitmq\")"),
        );
    }
    if c.body.is_none() {
        diag.push(
            ErrorKind::Value,
            at.clone(),
            format!("{owner}: a publish call needs a `body`: the event it publishes, e.g. body = \"{{request.body}}\""),
        );
    }
    let ignored: [(&str, Option<Range<usize>>); 6] = [
        ("method", c.method.as_ref().map(|v| v.span())),
        ("idempotent", c.idempotent.as_ref().map(|v| v.span())),
        ("path", c.path.as_ref().map(|v| v.span())),
        ("query", c.query.as_ref().map(|v| v.span())),
        ("timeout", c.timeout.as_ref().map(|v| v.span())),
        ("cache", c.cache.as_ref().map(|v| v.span())),
    ];
    for (key, span) in ignored {
        if let Some(span) = span {
            diag.push(
                ErrorKind::Value,
                span,
                format!("{owner}: `{key}` does not apply to a publish call (it publishes its `body` to `[events]`); remove it"),
            );
        }
    }
    let Some(s) = &c.subject else {
        diag.push(
            ErrorKind::Value,
            at,
            format!("{owner}: a publish call needs a `subject`: the NATS subject / RabbitMQ routing key, e.g. subject = \"orders.created\""),
        );
        return None;
    };
    match crate::events::check_subject(s.get_ref()) {
        Ok(()) => Some(s.get_ref().clone()),
        Err(msg) => {
            diag.push(ErrorKind::Value, s.span(), format!("{owner}: {msg}"));
            None
        }
    }
}

/// Reports routes that match the same requests; returns the router it built (one pattern per
/// shape, valued by route index), which the status route is checked against.
fn check_route_conflicts(
    routes: &[(Route, Range<usize>)],
    diag: &mut Diagnostics<'_>,
) -> matchit::Router<usize> {
    let mut router: matchit::Router<usize> = matchit::Router::new();
    let mut by_pattern: HashMap<String, usize> = HashMap::new();
    for (i, (route, span)) in routes.iter().enumerate() {
        let key = crate::route_shape(&route.path);
        if let Some(&first) = by_pattern.get(&key) {
            // Same shape: fine when the methods differ.
            if routes
                .iter()
                .enumerate()
                .filter(|(j, (r, _))| *j < i && crate::route_shape(&r.path) == key)
                .any(|(_, (r, _))| r.method == route.method)
            {
                diag.push(
                    ErrorKind::RouteConflict,
                    span.clone(),
                    format!(
                        "routes `{}` and `{}` both match {} {}",
                        routes[first].0.name, route.name, route.method, route.path
                    ),
                );
            }
            continue;
        }
        if let Err(e) = router.insert(route.path.as_str(), i) {
            let other = match &e {
                matchit::InsertError::Conflict { with } => routes
                    .iter()
                    .find(|(r, _)| r.path == *with)
                    .map(|(r, _)| format!("route `{}` ({with})", r.name))
                    .unwrap_or_else(|| with.clone()),
                other => other.to_string(),
            };
            diag.push(
                ErrorKind::RouteConflict,
                span.clone(),
                format!(
                    "route `{}`: path {} conflicts with {other}: both would match the same requests",
                    route.name, route.path
                ),
            );
            continue;
        }
        by_pattern.insert(key, i);
    }
    router
}
