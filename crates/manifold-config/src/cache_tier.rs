//! `[cache] memcached = ["host:port", …]` and its keys: the Memcached alternative to the Redis
//! shared tier. Kept apart from `compile.rs` (which checks the rest of `[cache]`) because every
//! rule here is about one tier.

use crate::compile::positive_duration;
use crate::error::{Diagnostics, ErrorKind};
use crate::model::CacheSettings;
use crate::spanned::Spanned;

/// Most servers in one tier (the cache crate's bound, repeated so a config is refused at check
/// time rather than at start).
pub const MAX_MEMCACHED_SERVERS: usize = 64;
/// Longest `cache.prefix` with memcached: keys must stay within memcached's 250 bytes.
pub const MAX_MEMCACHED_PREFIX: usize = 150;
/// `memcached_max_item_bytes` bounds: memcached's own `-I` range.
pub const MEMCACHED_ITEM_BYTES: std::ops::RangeInclusive<u64> = 1024..=(1 << 30);

/// The memcached keys of `[cache]`, as written.
pub(crate) struct RawMemcached<'a> {
    pub(crate) servers: Option<&'a Spanned<Vec<Spanned<String>>>>,
    pub(crate) timeout: Option<&'a Spanned<String>>,
    pub(crate) retry_after: Option<&'a Spanned<String>>,
    pub(crate) max_item_bytes: Option<&'a Spanned<u64>>,
    /// `cache.redis`, to refuse both tiers at once.
    pub(crate) redis: Option<&'a Spanned<String>>,
    pub(crate) prefix: Option<&'a Spanned<String>>,
}

pub(crate) fn compile_memcached(
    raw: &RawMemcached<'_>,
    s: &mut CacheSettings,
    diag: &mut Diagnostics<'_>,
) {
    let Some(servers) = raw.servers else {
        for (field, span) in [
            ("memcached_timeout", raw.timeout.map(|s| s.span())),
            ("memcached_retry_after", raw.retry_after.map(|s| s.span())),
            (
                "memcached_max_item_bytes",
                raw.max_item_bytes.map(|s| s.span()),
            ),
        ] {
            if let Some(span) = span {
                diag.push(
                    ErrorKind::Value,
                    span,
                    format!("`cache.{field}` only applies to the Memcached tier; set `cache.memcached` too or remove it"),
                );
            }
        }
        return;
    };
    if raw.redis.is_some() {
        diag.push(
            ErrorKind::Value,
            servers.span(),
            "`cache.redis` and `cache.memcached` are both set; choose one shared tier (two would each hold part of the cache)".to_owned(),
        );
        return;
    }
    let list = servers.get_ref();
    if list.is_empty() {
        diag.push(
            ErrorKind::Value,
            servers.span(),
            "`cache.memcached` lists no server; write e.g. [\"127.0.0.1:11211\"]".to_owned(),
        );
    }
    if list.len() > MAX_MEMCACHED_SERVERS {
        diag.push(
            ErrorKind::Value,
            servers.span(),
            format!(
                "`cache.memcached` lists {} servers; at most {MAX_MEMCACHED_SERVERS}",
                list.len()
            ),
        );
    }
    let mut ok = Vec::with_capacity(list.len());
    for server in list {
        let addr = server.get_ref().trim();
        if let Err(e) = check_server_addr(addr) {
            diag.push(
                ErrorKind::Value,
                server.span(),
                format!("`cache.memcached`: {addr:?} {e}"),
            );
        } else if ok.iter().any(|a: &String| a == addr) {
            diag.push(
                ErrorKind::Value,
                server.span(),
                format!("`cache.memcached` lists {addr:?} twice"),
            );
        } else {
            ok.push(addr.to_owned());
        }
    }
    s.memcached = ok;
    if let Some(p) = raw.prefix {
        let p_ok = p.get_ref().len() <= MAX_MEMCACHED_PREFIX
            && p.get_ref().bytes().all(|b| b.is_ascii_graphic());
        if !p_ok {
            diag.push(
                ErrorKind::Value,
                p.span(),
                format!(
                    "`cache.prefix` {:?}: with memcached, at most {MAX_MEMCACHED_PREFIX} printable ASCII characters (memcached keys are ASCII, at most 250 bytes)",
                    p.get_ref()
                ),
            );
        }
    }
    for (field, value, slot) in [
        ("memcached_timeout", raw.timeout, &mut s.memcached_timeout),
        (
            "memcached_retry_after",
            raw.retry_after,
            &mut s.memcached_retry_after,
        ),
    ] {
        if let Some(d) = value.and_then(|v| positive_duration(v, &format!("cache.{field}"), diag)) {
            *slot = d;
        }
    }
    if let Some(v) = raw.max_item_bytes {
        if MEMCACHED_ITEM_BYTES.contains(v.get_ref()) {
            s.memcached_max_item_bytes = *v.get_ref();
        } else {
            diag.push(
                ErrorKind::Value,
                v.span(),
                format!(
                    "`cache.memcached_max_item_bytes` {} is outside {}..={} (memcached's -I; 1 MiB = 1048576 by default)",
                    v.get_ref(),
                    MEMCACHED_ITEM_BYTES.start(),
                    MEMCACHED_ITEM_BYTES.end()
                ),
            );
        }
    }
}

/// `host:port` (IPv6 in brackets), the port a number above 0.
fn check_server_addr(addr: &str) -> Result<(), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| "is not host:port; write e.g. \"127.0.0.1:11211\"".to_owned())?;
    if host.is_empty() || host.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err("has no host, or one with spaces".into());
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err("is IPv6 without brackets; write e.g. \"[::1]:11211\"".into());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("has port {port:?}, not a number from 1 to 65535")),
    }
}

/// The `manifold check` line for the cache tiers: which shared tier, where, with what bounds.
pub(crate) fn describe(c: &CacheSettings) -> String {
    let l1 = format!("in-process {} bytes", c.max_bytes);
    let d = |d: std::time::Duration| humantime::format_duration(d).to_string();
    if let Some(url) = &c.redis {
        format!(
            "cache: {l1} + redis {} (prefix {:?}, timeout {}, retry after {})",
            crate::model::redact_url(url),
            c.prefix,
            d(c.redis_timeout),
            d(c.redis_retry_after)
        )
    } else if !c.memcached.is_empty() {
        format!(
            "cache: {l1} + memcached {} (consistent hashing over {} server(s), prefix {:?}, timeout {}, retry after {}, items up to {} bytes)",
            c.memcached.join(", "),
            c.memcached.len(),
            c.prefix,
            d(c.memcached_timeout),
            d(c.memcached_retry_after),
            c.memcached_max_item_bytes
        )
    } else {
        format!("cache: {l1} only (no shared tier)")
    }
}
