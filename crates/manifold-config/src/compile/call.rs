//! One call of a composing route: its upstream or event subject, its templates (path, query,
//! headers, body), cache policy, idempotence, hooks, and which other calls it waits for.

use super::cache::{compile_cache_policy, CacheOwner, RawCachePolicy};
use super::resolve::{Resolver, RouteCtx};
use super::values::{duration, method, timeout_duration};
use crate::error::{Diagnostics, ErrorKind};
use crate::model::*;
use crate::spanned::Spanned;
use crate::template::StrTemplate;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCall {
    pub(super) name: Spanned<String>,
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

/// One compiled call, with what its plan needs to order the calls and check their reads.
pub(super) struct CompiledCall {
    pub(super) call: Call,
    /// The calls it waits for: those its templates read and those its `after` names (sorted,
    /// each once).
    pub(super) deps: Vec<usize>,
    /// The calls its templates read (not `after`), as referenced: their results must be answers,
    /// not receipts.
    pub(super) reads_from: Vec<usize>,
    /// Whether a template of the call reads the request body.
    pub(super) reads_body: bool,
    /// The query parameters and headers its templates read (its hooks' and cache key's
    /// included).
    pub(super) reads: super::resolve::TextReads,
}

/// Compile call `c` of `route`; `index` names every call of the route (templates may read calls
/// declared later).
pub(super) fn compile_call(
    c: &RawCall,
    route: &str,
    params: &[String],
    index: &HashMap<String, usize>,
    ctx: &RouteCtx<'_>,
    diag: &mut Diagnostics<'_>,
) -> CompiledCall {
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
                format!("{owner}: mode {other:?} is not one of \"sync\", \"async\", \"publish\""),
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
    let mut res = Resolver::new(route, params, index);
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
            if mode == Mode::Publish {
                if let Err(msg) = crate::events::check_header_name(k) {
                    diag.push(ErrorKind::Value, v.span(), format!("{owner}: {msg}"));
                    continue;
                }
            } else if let Some(why) = crate::upstream::reserved_header(&lower) {
                diag.push(
                    ErrorKind::Value,
                    v.span(),
                    format!("{owner}: header `{k}` cannot be set: {why}"),
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
                if lower == "host" {
                    warn_client_host(&owner, &t, v.span(), diag);
                }
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
    if let (Mode::Async, Some(spec)) = (mode, &c.cache) {
        // Accepted, it did nothing: an async call's task is written for every request, and
        // its receipt is no answer to share.
        diag.push(
            ErrorKind::Value,
            spec.span(),
            format!("{owner}: `cache` does not apply to an async call (each request writes its own task, whose receipt is that request's alone); remove it"),
        );
    }
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
    let reads_from = my_deps.clone();
    let mut reads = my_deps.clone();
    reads.sort_unstable();
    reads.dedup();
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
        .and_then(|e| timeout_duration(e, &format!("{owner}: timeout"), diag));
    // Every name was checked above (an invalid one is not in `headers`).
    let header_names = headers
        .iter()
        .filter_map(|(n, _)| http::HeaderName::from_bytes(n.as_bytes()).ok())
        .collect();
    let call = Call {
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
    };
    CompiledCall {
        call,
        deps: my_deps,
        reads_from,
        reads_body: res.reads_body,
        reads: res.reads,
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

/// A call's `host` header rendered from the client's request lets any client pick which virtual
/// host of the upstream it reaches (an admin site on the same server, say): legal, sometimes
/// meant (a multi-tenant upstream keyed by the client's host), so a warning, not an error. So
/// for an upstream hook's `host` (see `crate::hooks`): its delivery keeps the `Host` it carries.
pub(crate) fn warn_client_host(
    owner: &str,
    t: &StrTemplate,
    span: Range<usize>,
    diag: &mut Diagnostics<'_>,
) {
    use crate::template::Source;
    let from_client = t.exprs().find_map(|e| match &e.source {
        Source::Path { name, .. } => Some(format!("path parameter `{name}`")),
        Source::Query { name } => Some(format!("query parameter `{name}`")),
        Source::Header { name } => Some(format!("request header `{name}`")),
        Source::RequestBody => Some("request body".to_owned()),
        Source::Call { .. } | Source::Task { .. } => None,
    });
    if let Some(what) = from_client {
        diag.warn(
            span,
            format!("{owner}: header `host` is rendered from the client's {what}: any client can pick which virtual host of the upstream it reaches"),
        );
    }
}
