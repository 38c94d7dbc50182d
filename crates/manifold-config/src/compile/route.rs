//! A route: its method, path pattern, deadline, cache policy and kind (proxy or compose), and
//! the check that no two routes match the same requests.

use super::cache::{compile_cache_policy, CacheOwner, RawCachePolicy};
use super::call::RawCall;
use super::plan::compile_plan;
use super::resolve::{Resolver, RouteCtx};
use super::response::RawResponse;
use super::values::{diag_len, method, timeout_duration};
use crate::error::{Diagnostics, ErrorKind};
use crate::model::*;
use crate::spanned::Spanned;
use serde::Deserialize;
use std::collections::HashMap;
use std::ops::Range;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    method: Option<Spanned<String>>,
    pub(super) path: Spanned<String>,
    #[schemars(extend("pattern" = crate::schema::DURATION_PATTERN))]
    deadline: Option<Spanned<String>>,
    calls: Option<Spanned<Vec<Spanned<RawCall>>>>,
    response: Option<Spanned<RawResponse>>,
    proxy: Option<Spanned<String>>,
    cache: Option<Spanned<RawCachePolicy>>,
    enqueue: Option<Spanned<String>>,
    escaped_slashes: Option<Spanned<String>>,
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

pub(super) fn compile_route(
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
        .and_then(|d| timeout_duration(d, &format!("routes.{rname}.deadline"), diag));
    let cache = r.cache.as_ref().and_then(|c| {
        // A route's key is rendered before any call runs: it reads the request only.
        let no_calls = HashMap::new();
        let mut res = Resolver::new(&rname, &params, &no_calls);
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

/// Reports routes that match the same requests; returns the router it built (one pattern per
/// shape, valued by route index), which the status route is checked against.
pub(super) fn check_route_conflicts(
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
