//! `on_done` / `on_dead` on an async or publish call: the completion hooks (and the saga's
//! compensation), compiled and checked.
//!
//! A hook goes only to a configured `[upstreams.NAME]` or an `[events]` subject, both named in
//! the config: no template can choose where a hook goes. Its templates read what the call itself
//! can read (the request, earlier calls' results: those reads become the call's dependencies,
//! so the values exist when the call's task is rendered) plus the settled task:
//! `{task.id}`, `{task.attempts}`, and `{task.result}` in `on_done` or `{task.error}` in
//! `on_dead`. A hook's path may use only `{task.id}` and `{task.attempts}` of those (their
//! alphabets cannot change a URL's shape), its headers none. Hooks of hooks are refused.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::queue::HookKind;
use crate::queue::TaskVar;
use serde::{Deserialize, Serialize};

use crate::compile::{Resolver, RouteCtx};
use crate::error::{Diagnostics, ErrorKind};
use crate::spanned::Spanned;
use crate::template::{Expr, JsonTemplate, RawRef, Source, StrTemplate};
use crate::Mode;

/// `on_done = { … }` / `on_dead = { … }` as written.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHook {
    /// The `[upstreams.NAME]` the hook calls (or `publish`).
    upstream: Option<Spanned<String>>,
    /// The `[events]` subject the hook publishes to (or `upstream`).
    publish: Option<Spanned<String>>,
    /// HTTP method of an upstream hook (default POST).
    method: Option<Spanned<String>>,
    /// Path of an upstream hook; may use `{task.id}` and `{task.attempts}`.
    path: Option<Spanned<String>>,
    headers: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    /// Any JSON value; strings in it are templates.
    #[schemars(with = "Option<serde_json::Value>")]
    body: Option<Spanned<toml::Value>>,
    // Read only to refuse them with a clear message: a hook has no hooks.
    #[schemars(skip)]
    on_done: Option<Spanned<toml::Value>>,
    #[schemars(skip)]
    on_dead: Option<Spanned<toml::Value>>,
}

/// A call's hooks.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct CallHooks {
    /// Enqueued when the call's task is delivered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_done: Option<HookSpec>,
    /// Enqueued when the call's task is dead-lettered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_dead: Option<HookSpec>,
}

impl CallHooks {
    /// Whether the call has no hook.
    pub fn is_empty(&self) -> bool {
        self.on_done.is_none() && self.on_dead.is_none()
    }
}

/// One compiled hook.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HookSpec {
    /// Where it goes.
    pub target: HookTarget,
    /// Headers (no `{task.*}`).
    pub headers: Vec<(String, StrTemplate)>,
    /// The body; a publish hook without one sends the task's id, status and result or error.
    pub body: Option<JsonTemplate>,
}

/// Where a hook goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HookTarget {
    /// A configured upstream.
    Upstream {
        /// Its name.
        name: String,
        /// HTTP method.
        #[serde(with = "http_serde_method")]
        method: http::Method,
        /// Path template.
        path: StrTemplate,
    },
    /// An `[events]` subject.
    Publish {
        /// The subject / routing key.
        subject: String,
    },
}

mod http_serde_method {
    pub(super) fn serialize<S: serde::Serializer>(
        m: &http::Method,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(m.as_str())
    }
}

/// `{task.…}` inside a `kind` hook.
pub(crate) fn task_ref(kind: HookKind, r: &RawRef) -> Result<Expr, String> {
    let field = r.parts.get(1).map(String::as_str).unwrap_or("");
    let var = match (field, kind) {
        ("id", _) => TaskVar::Id,
        ("attempts", _) => TaskVar::Attempts,
        ("result", HookKind::OnDone) => TaskVar::Result,
        ("error", HookKind::OnDead) => TaskVar::Error,
        ("result", HookKind::OnDead) => {
            return Err(format!("`{{{}}}`: a dead task has no result; on_dead can read task.id, task.error and task.attempts", r.text))
        }
        ("error", HookKind::OnDone) => {
            return Err(format!("`{{{}}}`: a done task has no error; on_done can read task.id, task.result and task.attempts", r.text))
        }
        _ => {
            return Err(format!(
                "`{{{}}}`: the settled task offers task.id, task.attempts and task.result (on_done) or task.error (on_dead)",
                r.text
            ))
        }
    };
    if var != TaskVar::Result && r.parts.len() > 2 {
        return Err(format!("`{{{}}}`: task.{field} has no fields", r.text));
    }
    Ok(Expr {
        source: Source::Task { var },
        steps: crate::template::steps(&r.parts[2..]),
    })
}

/// Where a hook sits, for messages.
struct At<'a> {
    owner: &'a str,
    kind: HookKind,
}

impl At<'_> {
    fn say(&self, msg: impl std::fmt::Display) -> String {
        format!("{}, {}: {msg}", self.owner, self.kind.as_str())
    }
}

/// Compiles the call's `on_done` / `on_dead`. Their request and call reads land in `res` (the
/// call's own resolver), so they count as the call's dependencies.
pub(crate) fn compile_hooks(
    on_done: Option<&Spanned<RawHook>>,
    on_dead: Option<&Spanned<RawHook>>,
    mode: Mode,
    owner: &str,
    ctx: &RouteCtx<'_>,
    res: &mut Resolver<'_>,
    diag: &mut Diagnostics<'_>,
) -> CallHooks {
    let mut hooks = CallHooks::default();
    for (raw, kind) in [(on_done, HookKind::OnDone), (on_dead, HookKind::OnDead)] {
        let Some(raw) = raw else { continue };
        let at = At { owner, kind };
        if mode == Mode::Sync {
            diag.push(
                ErrorKind::Value,
                raw.span(),
                at.say("hooks follow an offloaded call's task; only mode = \"async\" or \"publish\" calls have them"),
            );
            continue;
        }
        res.task = Some(kind);
        let spec = compile_hook(raw, &at, ctx, res, diag);
        res.task = None;
        match kind {
            HookKind::OnDone => hooks.on_done = spec,
            HookKind::OnDead => hooks.on_dead = spec,
        }
    }
    hooks
}

fn compile_hook(
    raw: &Spanned<RawHook>,
    at: &At<'_>,
    ctx: &RouteCtx<'_>,
    res: &mut Resolver<'_>,
    diag: &mut Diagnostics<'_>,
) -> Option<HookSpec> {
    let h = raw.get_ref();
    let before = diag.len();
    for nested in [&h.on_done, &h.on_dead].into_iter().flatten() {
        diag.push(
            ErrorKind::Value,
            nested.span(),
            at.say("a hook cannot have hooks of its own (hooks of hooks are not allowed)"),
        );
    }
    let target = match (&h.upstream, &h.publish) {
        (Some(_), Some(p)) => {
            diag.push(
                ErrorKind::Value,
                p.span(),
                at.say("give `upstream` or `publish`, not both"),
            );
            None
        }
        (None, None) => {
            diag.push(
                ErrorKind::Value,
                raw.span(),
                at.say("say where the hook goes: `upstream = \"NAME\"` (a configured upstream) or `publish = \"SUBJECT\"` (through [events])"),
            );
            None
        }
        (None, Some(p)) => publish_target(p, h, at, ctx, diag),
        (Some(u), None) => upstream_target(u, h, raw.span(), at, ctx, res, diag),
    };
    let mut headers = Vec::new();
    if let Some(hs) = &h.headers {
        for (k, v) in hs.get_ref() {
            let lower = k.to_ascii_lowercase();
            if http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
                diag.push(
                    ErrorKind::Value,
                    v.span(),
                    at.say(format!("`{k}` is not a header name")),
                );
                continue;
            }
            if h.publish.is_some() {
                if let Err(msg) = crate::events::check_header_name(k) {
                    diag.push(ErrorKind::Value, v.span(), at.say(msg));
                    continue;
                }
            } else if let Some(why) = crate::upstream::reserved_header(&lower) {
                diag.push(
                    ErrorKind::Value,
                    v.span(),
                    at.say(format!("header `{k}` cannot be set: {why}")),
                );
                continue;
            }
            match res.str_template(v.get_ref()) {
                Ok(t) if t.exprs().any(|e| matches!(e.source, Source::Task { .. })) => diag.push(
                    ErrorKind::Value,
                    v.span(),
                    at.say(format!(
                        "header `{k}` cannot read `{{task.*}}`: put settle-time values in the body"
                    )),
                ),
                Ok(t) => {
                    if lower == "host" && h.publish.is_none() {
                        let owner = format!("{}, {}", at.owner, at.kind.as_str());
                        crate::compile::warn_client_host(&owner, &t, v.span(), diag);
                    }
                    headers.push((lower, t));
                }
                Err(msg) => diag.push(
                    ErrorKind::UnknownName,
                    v.span(),
                    at.say(format!("header `{k}`: {msg}")),
                ),
            }
        }
    }
    let body = match &h.body {
        Some(b) => match res.json_template(b.get_ref()) {
            Ok(t) => Some(t),
            Err(msg) => {
                diag.push(
                    ErrorKind::UnknownName,
                    b.span(),
                    at.say(format!("body: {msg}")),
                );
                None
            }
        },
        None => match &target {
            Some(HookTarget::Publish { .. }) => Some(default_event(at.kind)),
            _ => None,
        },
    };
    if diag.len() > before {
        return None;
    }
    Some(HookSpec {
        target: target?,
        headers,
        body,
    })
}

fn publish_target(
    p: &Spanned<String>,
    h: &RawHook,
    at: &At<'_>,
    ctx: &RouteCtx<'_>,
    diag: &mut Diagnostics<'_>,
) -> Option<HookTarget> {
    if !ctx.events {
        diag.push(
            ErrorKind::Value,
            p.span(),
            at.say("publishes an event but there is no `[events]` section saying where to; add e.g. [events] backend = \"nats\""),
        );
    }
    for (key, span) in [
        ("method", h.method.as_ref().map(|v| v.span())),
        ("path", h.path.as_ref().map(|v| v.span())),
    ] {
        if let Some(span) = span {
            diag.push(
                ErrorKind::Value,
                span,
                at.say(format!(
                    "`{key}` does not apply to a publish hook; remove it"
                )),
            );
        }
    }
    match crate::events::check_subject(p.get_ref()) {
        Ok(()) => Some(HookTarget::Publish {
            subject: p.get_ref().clone(),
        }),
        Err(msg) => {
            diag.push(ErrorKind::Value, p.span(), at.say(msg));
            None
        }
    }
}

fn upstream_target(
    u: &Spanned<String>,
    h: &RawHook,
    span: Range<usize>,
    at: &At<'_>,
    ctx: &RouteCtx<'_>,
    res: &mut Resolver<'_>,
    diag: &mut Diagnostics<'_>,
) -> Option<HookTarget> {
    let owner = at.say("");
    let owner = owner.trim_end_matches(": ");
    let upstream = ctx.resolve_upstream(u, owner, diag);
    let method = crate::compile::method(h.method.as_ref(), http::Method::POST, owner, diag);
    let Some(p) = &h.path else {
        diag.push(
            ErrorKind::Value,
            span,
            at.say("an upstream hook needs a `path`, e.g. path = \"/hooks/{task.id}\""),
        );
        return None;
    };
    if !p.get_ref().starts_with('/') {
        diag.push(
            ErrorKind::Value,
            p.span(),
            at.say(format!("path {:?} must start with `/` (a hook goes to its configured upstream, never to a URL)", p.get_ref())),
        );
        return None;
    }
    let path = match res.str_template(p.get_ref()) {
        Ok(t) => t,
        Err(msg) => {
            diag.push(
                ErrorKind::UnknownName,
                p.span(),
                at.say(format!("path: {msg}")),
            );
            return None;
        }
    };
    let unsafe_in_path = path.exprs().any(|e| {
        matches!(
            e.source,
            Source::Task {
                var: TaskVar::Result | TaskVar::Error
            }
        )
    });
    if unsafe_in_path {
        diag.push(
            ErrorKind::Value,
            p.span(),
            at.say("a path may read only {task.id} and {task.attempts} of the task; put the result or error in the body"),
        );
        return None;
    }
    upstream?;
    Some(HookTarget::Upstream {
        name: u.get_ref().clone(),
        method,
        path,
    })
}

/// The event a publish hook without a `body` sends.
fn default_event(kind: HookKind) -> JsonTemplate {
    let var = |var| {
        JsonTemplate::Value(Expr {
            source: Source::Task { var },
            steps: Vec::new(),
        })
    };
    let status = match kind {
        HookKind::OnDone => "done",
        HookKind::OnDead => "dead",
    };
    let mut fields = vec![
        ("task_id".to_owned(), var(TaskVar::Id)),
        ("status".to_owned(), JsonTemplate::Literal(status.into())),
        ("attempts".to_owned(), var(TaskVar::Attempts)),
    ];
    match kind {
        HookKind::OnDone => fields.push(("result".to_owned(), var(TaskVar::Result))),
        HookKind::OnDead => fields.push(("error".to_owned(), var(TaskVar::Error))),
    }
    JsonTemplate::Object(fields)
}
