//! `[cache]` (the shared Redis / Memcached tiers and the local cache's bounds) and the `cache`
//! policy of a route or a call.

use super::resolve::Resolver;
use super::values::{diag_len, duration, list_or_none, positive_duration};
use crate::error::{Diagnostics, ErrorKind};
use crate::model::*;
use crate::spanned::Spanned;
use serde::Deserialize;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCacheSection {
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
pub(super) struct RawCachePolicy {
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
    pub(super) shared: Option<Spanned<bool>>,
}

pub(super) fn compile_cache_section(
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
        if let Some(d) = value
            .as_ref()
            .and_then(|v| positive_duration(v, &format!("cache.{field}"), diag))
        {
            *slot = d;
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
pub(super) struct CacheOwner<'a> {
    pub(super) owner: &'a str,
    /// The method of the call or route.
    pub(super) method: &'a http::Method,
    /// For a call: the (lower-case) headers it sends, which `vary` must name. For a route:
    /// `None` (`vary` names the client's request headers).
    pub(super) sent_headers: Option<&'a [String]>,
    pub(super) redis: bool,
}

pub(super) fn compile_cache_policy(
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
