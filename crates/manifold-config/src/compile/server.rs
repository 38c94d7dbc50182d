//! `[server]`: listeners, request limits and timeouts, TLS, the admin token, and the
//! concurrency limit.

use super::values::{duration, positive_duration};
use crate::error::{Diagnostics, ErrorKind};
use crate::model::*;
use crate::spanned::Spanned;
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    listen: Option<Spanned<String>>,
    admin: Option<Spanned<String>>,
    max_body_bytes: Option<Spanned<u64>>,
    max_response_bytes: Option<Spanned<u64>>,
    max_parsed_bytes: Option<Spanned<u64>>,
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
    #[schemars(extend("pattern" = crate::schema::DURATION_PATTERN))]
    send_timeout: Option<Spanned<String>>,
    escaped_slashes: Option<Spanned<String>>,
    error_detail: Option<Spanned<String>>,
    trusted_proxies: Option<Spanned<Vec<Spanned<String>>>>,
    ready_requires: Option<Spanned<Vec<Spanned<String>>>>,
    admin_token: Option<Spanned<String>>,
    admin_token_file: Option<Spanned<String>>,
    tls: Option<Spanned<crate::tls::RawServerTls>>,
    // `"adaptive"` or a number: a string or an integer, so read as a TOML value.
    #[schemars(with = "Option<crate::schema::ConcurrencyValue>")]
    concurrency: Option<Spanned<toml::Value>>,
    loop_limit: Option<Spanned<i64>>,
}

/// The `[server]` section, then its TLS listener and admin token (which read files named
/// relative to `file`) and the rule that an exposed admin listener needs a token.
pub(super) fn compile_server(
    raw: Option<&Spanned<RawServer>>,
    file: &Path,
    diag: &mut Diagnostics<'_>,
) -> ServerSettings {
    let mut server = settings(raw, diag);
    if let Some(rs) = raw {
        let r = rs.get_ref();
        if let Some(t) = &r.tls {
            server.tls = crate::tls::server_tls(t, file, diag);
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
        server.admin_token = crate::secret::admin_token(token, token_file, file, diag);
        // A token that failed its checks was reported already; the exposure rule then waits.
        if token.is_none() && token_file.is_none() {
            if let Err(msg) = crate::check_admin_exposure(&server) {
                let span = r.admin.as_ref().map_or(rs.span(), |a| a.span());
                diag.push(ErrorKind::Value, span, format!("`server.admin`: {msg}"));
            }
        }
    }
    server
}

fn settings(raw: Option<&Spanned<RawServer>>, diag: &mut Diagnostics<'_>) -> ServerSettings {
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
            "max_parsed_bytes",
            &raw.max_parsed_bytes,
            &mut s.max_parsed_bytes,
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
        ("send_timeout", &raw.send_timeout, &mut s.send_timeout),
    ] {
        if let Some(v) = value {
            let what = format!("server.{field}");
            // No drain (or no drain delay) is a choice; a zero read or idle timeout would
            // refuse every request.
            let read = if field.starts_with("drain_") {
                duration(v, &what, diag)
            } else {
                positive_duration(v, &what, diag)
            };
            if let Some(d) = read {
                *slot = d;
            }
        }
    }
    if let Some(v) = &raw.escaped_slashes {
        if let Some(e) = crate::proxy::escaped_slashes(v, "server.escaped_slashes", diag) {
            s.escaped_slashes = e;
        }
    }
    if let Some(v) = &raw.error_detail {
        match v.get_ref().as_str() {
            "full" => s.error_detail = crate::model::ErrorDetail::Full,
            "brief" => s.error_detail = crate::model::ErrorDetail::Brief,
            other => diag.push(
                ErrorKind::Value,
                v.span(),
                format!("`server.error_detail` is {other:?}; write \"full\" (the upstream, endpoints and attempts of a failed call) or \"brief\" (the call and the kind of failure only)"),
            ),
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
    if let Some(v) = &raw.loop_limit {
        match u32::try_from(*v.get_ref()) {
            Ok(n) if (1..=MAX_LOOP_LIMIT).contains(&n) => s.loop_limit = n,
            _ => diag.push(
                ErrorKind::Value,
                v.span(),
                format!(
                    "`server.loop_limit` = {} is out of range: write 1 to {MAX_LOOP_LIMIT}, the \
                     times a request may already have passed through Manifold gateways",
                    v.get_ref()
                ),
            ),
        }
    }
    s
}

/// Most passes `server.loop_limit` may allow: a deliberate chain of gateways is a handful long,
/// and a composed route that fans out to N calls multiplies a loop's requests by N a pass.
const MAX_LOOP_LIMIT: u32 = 32;

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
