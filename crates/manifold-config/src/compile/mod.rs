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
    // Read as a table of TOML values, then as `QueueConfig` (its own span-less errors, placed by
    // [`section`] at the key they name): its schema is that one.
    #[schemars(with = "Option<crate::queue::QueueConfig>")]
    queue: Option<Spanned<RawSection>>,
    #[schemars(with = "Option<crate::events::EventsConfig>")]
    events: Option<Spanned<RawSection>>,
    telemetry: Option<Spanned<crate::telemetry::RawTelemetry>>,
}

/// A section deserialized by its own type rather than a raw struct with spans: its keys keep
/// where they were written, its values are plain TOML.
type RawSection = BTreeMap<Spanned<String>, toml::Value>;

/// Read section `[name]` as `T` and `validate` it. Its errors carry no span of their own, so each
/// is placed at the first key of the section it names (`status_path "/a b" may hold only…` at
/// `status_path`), else at the section: the user is sent to the line to change.
fn section<T: serde::de::DeserializeOwned>(
    raw: &Spanned<RawSection>,
    name: &str,
    diag: &mut Diagnostics<'_>,
    validate: impl FnOnce(&T) -> Result<(), String>,
) -> Option<T> {
    let table: toml::Table = raw
        .get_ref()
        .iter()
        .map(|(k, v)| (k.get_ref().clone(), v.clone()))
        .collect();
    let msg = match toml::Value::Table(table).try_into::<T>() {
        Ok(value) => match validate(&value) {
            Ok(()) => return Some(value),
            Err(msg) => msg,
        },
        Err(e) => e.message().trim().to_owned(),
    };
    let prefix = format!("[{name}] ");
    let msg = msg.strip_prefix(&prefix).unwrap_or(&msg);
    let span = named_key(raw.get_ref(), msg).unwrap_or_else(|| raw.span());
    diag.push(ErrorKind::Value, span, format!("[{name}]: {msg}"));
    None
}

/// Where the key of `keys` that `msg` names first (as a whole word) was written.
fn named_key(keys: &RawSection, msg: &str) -> Option<std::ops::Range<usize>> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    keys.keys()
        .filter_map(|k| {
            let name = k.get_ref().as_str();
            msg.match_indices(name)
                .find(|(at, _)| {
                    let before = msg[..*at].chars().next_back();
                    let after = msg[at + name.len()..].chars().next();
                    !before.is_some_and(word) && !after.is_some_and(word)
                })
                .map(|(at, _)| (at, k.span()))
        })
        .min_by_key(|(at, _)| *at)
        .map(|(_, span)| span)
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
    let queue = raw
        .queue
        .as_ref()
        .and_then(|v| {
            section(v, "queue", &mut diag, |q: &crate::queue::QueueConfig| {
                q.validate()
            })
        })
        .unwrap_or_default();
    let events = raw.events.as_ref().and_then(|v| {
        section(
            v,
            "events",
            &mut diag,
            |ev: &crate::events::EventsConfig| ev.validate(),
        )
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
