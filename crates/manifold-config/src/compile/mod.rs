//! From TOML text to a validated [`Config`]: deserialize with spans, then check and resolve
//! everything, collecting every error with its location.
//!
//! One file per part of the config: `server`, `cache` (the tiers and the policies), `route` (and
//! route conflicts), `plan` (a composing route's calls in order), `call`, `response`, and
//! `resolve` (what templates may name). Upstreams, TLS, telemetry, queue and events live in their
//! own modules beside this one.

mod cache;
mod call;
mod plan;
mod resolve;
mod response;
mod route;
mod server;
mod values;

pub(crate) use call::warn_client_host;
pub(crate) use resolve::{Resolver, RouteCtx};
pub(crate) use values::{duration, method, positive_duration, unbounded_duration, MAX_DURATION};

use crate::error::{ConfigErrors, Diagnostics, ErrorKind};
use crate::model::*;
use crate::spanned::Spanned;
use cache::{compile_cache_section, RawCacheSection};
use route::{check_route_conflicts, compile_route, RawRoute};
use serde::Deserialize;
use server::{compile_server, RawServer};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

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

    let server = compile_server(raw.server.as_ref(), file, &mut diag);
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
    crate::upstream::warn_own_listeners(&server, raw.upstreams.iter(), &mut diag);
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
