//! What each cache key is made of, inferred when the config compiles, the way dependencies are.
//!
//! A cached answer may only be given to a request that would have sent the upstream the same
//! request. So the key of a cached call covers its whole rendered request (see the gateway's
//! `cache_key` module), and, to keep an absent value apart from an empty one (both render as
//! nothing), every request value its templates read, with its presence. Those reads are listed
//! here once, from the compiled templates: no one has to remember to add a header to `vary`,
//! and `manifold check` shows what each key is made of.
//!
//! A route-level cache on a composing route reads the union of what its calls' and its
//! response's templates read. A proxy route forwards the whole request, which no list of reads
//! covers: it is keyed on path, query and `vary`, and requests carrying credentials
//! (`Authorization`, `Cookie`) bypass it unless `vary` names them or `shared = true`.

use crate::model::{CachePolicySpec, Call, Route, RouteKind};
use crate::template::{Expr, JsonTemplate, Source, Step, StrTemplate};
use serde::Serialize;

/// Request headers that identify a user: a proxy route's cache neither serves nor stores a
/// request carrying one, unless the route's `vary` names it or it is `shared = true`.
pub const CREDENTIAL_HEADERS: [&str; 2] = ["authorization", "cookie"];

/// One request value a cache key covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum KeyInput {
    /// A path parameter of the route, by position.
    Path {
        /// Index into the captured path parameters.
        index: usize,
        /// Its name, for display.
        name: String,
    },
    /// Every value of a query parameter (absent is told apart from empty).
    Query {
        /// Parameter name.
        name: String,
    },
    /// Every value of a request header, as bytes (absent is told apart from empty).
    Header {
        /// Lower-case header name.
        name: String,
    },
    /// A value inside the request's JSON body (absent is told apart from `null` and `""`).
    Body {
        /// Steps into the body (empty: the whole body).
        steps: Vec<Step>,
    },
}

impl KeyInput {
    fn from_expr(e: &Expr) -> Option<KeyInput> {
        Some(match &e.source {
            Source::Path { index, name } => KeyInput::Path {
                index: *index,
                name: name.clone(),
            },
            Source::Query { name } => KeyInput::Query { name: name.clone() },
            Source::Header { name } => KeyInput::Header { name: name.clone() },
            Source::RequestBody => KeyInput::Body {
                steps: e.steps.clone(),
            },
            // A call result is already part of the rendered request the key covers.
            Source::Call { .. } => return None,
            // Only hooks read the settled task, and hooks are never cached.
            Source::Task { .. } => return None,
        })
    }

    /// `header authorization`, `query q`, `path id`, `body user.id`.
    pub fn describe(&self) -> String {
        match self {
            KeyInput::Path { name, .. } => format!("path {name}"),
            KeyInput::Query { name } => format!("query {name}"),
            KeyInput::Header { name } => format!("header {name}"),
            KeyInput::Body { steps } if steps.is_empty() => "body".to_owned(),
            KeyInput::Body { steps } => format!(
                "body {}",
                steps
                    .iter()
                    .map(|s| s.key.as_str())
                    .collect::<Vec<_>>()
                    .join(".")
            ),
        }
    }
}

/// Collects reads, deduplicated, in first-read order (stable across replicas of one config).
#[derive(Default)]
struct Reads {
    inputs: Vec<KeyInput>,
    calls: Vec<String>,
}

impl Reads {
    fn expr(&mut self, e: &Expr) {
        match KeyInput::from_expr(e) {
            Some(i) => {
                if !self.inputs.contains(&i) {
                    self.inputs.push(i);
                }
            }
            None => {
                if let Source::Call { name, .. } = &e.source {
                    if !self.calls.contains(name) {
                        self.calls.push(name.clone());
                    }
                }
            }
        }
    }

    fn str_tpl(&mut self, t: &StrTemplate) {
        t.exprs().for_each(|e| self.expr(e));
    }

    fn json_tpl(&mut self, t: &JsonTemplate) {
        t.exprs().into_iter().for_each(|e| self.expr(e));
    }

    fn call(&mut self, c: &Call) {
        self.str_tpl(&c.path);
        c.query.iter().for_each(|(_, t)| self.str_tpl(t));
        c.headers.iter().for_each(|(_, t)| self.str_tpl(t));
        if let Some(b) = &c.body {
            self.json_tpl(b);
        }
        if let Some(k) = c.cache.as_ref().and_then(|s| s.key.as_ref()) {
            self.str_tpl(k);
        }
    }
}

/// Fill every cache policy's [`CachePolicySpec::key_inputs`] and
/// [`CachePolicySpec::key_calls`] from the compiled templates.
pub(crate) fn infer(routes: &mut [Route]) {
    for route in routes {
        if let RouteKind::Compose(plan) = &mut route.kind {
            for call in &mut plan.calls {
                if call.cache.is_none() {
                    continue;
                }
                let mut reads = Reads::default();
                reads.call(call);
                if let Some(spec) = call.cache.as_mut() {
                    spec.key_inputs = reads.inputs;
                    spec.key_calls = reads.calls;
                }
            }
        }
        let Some(spec) = route.cache.as_mut() else {
            continue;
        };
        let mut reads = Reads::default();
        if let Some(k) = &spec.key {
            reads.str_tpl(k);
        }
        if let RouteKind::Compose(plan) = &route.kind {
            plan.calls.iter().for_each(|c| reads.call(c));
            plan.response
                .headers
                .iter()
                .for_each(|(_, t)| reads.str_tpl(t));
            reads.json_tpl(&plan.response.body);
        }
        spec.key_inputs = reads.inputs;
        // A route's key is computed before any call runs; its calls' results follow from the
        // request values above.
        spec.key_calls = Vec::new();
    }
}

/// What a call's cache key is made of, for `manifold check`:
/// `upstream users, GET /users/{path.id}, header authorization`.
pub fn describe_call_key(call: &Call, spec: &CachePolicySpec, path: &str) -> String {
    let mut parts = Vec::new();
    if let Some(k) = &spec.key {
        parts.push(format!("key \"{}\"", template_display(k)));
    }
    parts.push(format!("upstream {}", call.upstream_name));
    let mut target = format!("{} {path}", call.method);
    for (n, (name, t)) in call.query.iter().enumerate() {
        target.push(if n == 0 && !path.contains('?') {
            '?'
        } else {
            '&'
        });
        target.push_str(name);
        target.push('=');
        target.push_str(&template_display(t));
    }
    parts.push(target);
    if !call.headers.is_empty() {
        let names: Vec<&str> = call.headers.iter().map(|(n, _)| n.as_str()).collect();
        parts.push(format!("sent headers {}", names.join(" ")));
    }
    if call.body.is_some() {
        parts.push("sent body".to_owned());
    }
    parts.extend(spec.key_inputs.iter().map(KeyInput::describe));
    parts.extend(spec.key_calls.iter().map(|c| format!("result of {c}")));
    parts.join(", ")
}

/// What a route's cache key is made of, for `manifold check`.
pub fn describe_route_key(route: &Route, spec: &CachePolicySpec) -> String {
    let mut parts = Vec::new();
    match &spec.key {
        Some(k) => parts.push(format!("key \"{}\"", template_display(k))),
        None => parts.push(format!(
            "route {}, {} path and query",
            route.name, route.method
        )),
    }
    parts.extend(spec.key_inputs.iter().map(KeyInput::describe));
    parts.extend(spec.vary.iter().map(|h| format!("vary {h}")));
    let mut s = parts.join(", ");
    if matches!(route.kind, RouteKind::Proxy { .. }) {
        let unkeyed: Vec<&str> = CREDENTIAL_HEADERS
            .iter()
            .copied()
            .filter(|h| !spec.vary.iter().any(|v| v == h))
            .collect();
        if spec.shared {
            s.push_str("; shared: answers are given to every client, credentials or not");
        } else if !unkeyed.is_empty() {
            s.push_str(&format!(
                "; requests carrying {} are not cached",
                unkeyed.join(" or ")
            ));
        }
    }
    s
}

/// A template as written: `/users/{path.id}`.
pub fn template_display(t: &StrTemplate) -> String {
    use crate::template::Segment;
    let mut s = String::new();
    for seg in &t.segments {
        match seg {
            Segment::Lit(l) => s.push_str(l),
            Segment::Expr(e) => {
                s.push('{');
                match &e.source {
                    Source::Path { name, .. } => {
                        s.push_str("path.");
                        s.push_str(name);
                    }
                    Source::Query { name } => {
                        s.push_str("query.");
                        s.push_str(name);
                    }
                    Source::Header { name } => {
                        s.push_str("header.");
                        s.push_str(name);
                    }
                    Source::RequestBody => s.push_str("request.body"),
                    Source::Call { name, .. } => s.push_str(name),
                    Source::Task { var } => {
                        s.push_str("task.");
                        s.push_str(
                            &serde_json::to_value(var)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_owned))
                                .unwrap_or_default(),
                        );
                    }
                }
                for step in &e.steps {
                    s.push('.');
                    s.push_str(&step.key);
                }
                s.push('}');
            }
        }
    }
    s
}

/// The route-level checks that need the route's kind: `shared` only means something on a
/// proxy route, and a composing route's cache cannot be keyed on a request body (the key is
/// computed before the body is read).
pub(crate) fn check_route(
    shared: Option<&crate::spanned::Spanned<bool>>,
    span: std::ops::Range<usize>,
    kind: &RouteKind,
    owner: &str,
    diag: &mut crate::error::Diagnostics<'_>,
) {
    use crate::error::ErrorKind;
    let RouteKind::Compose(plan) = kind else {
        return;
    };
    if let Some(sh) = shared {
        diag.push(
            ErrorKind::Value,
            sh.span(),
            format!("{owner}: cache.shared applies to a proxy route; a composing route's key already covers every request value its calls read"),
        );
    }
    if plan.reads_request_body {
        diag.push(
            ErrorKind::Value,
            span.clone(),
            format!("{owner}: a route-level cache cannot be keyed on the request body its calls read; cache the calls instead"),
        );
    }
    // A cached answer is served without running the calls: every later client would get the
    // first one's receipt (its task id and `status_url`, a capability to read that client's
    // result) and no task of its own would be written.
    let writers: Vec<String> = plan
        .calls
        .iter()
        .filter(|c| c.mode != crate::model::Mode::Sync)
        .map(|c| format!("`{}`", c.name))
        .collect();
    if !writers.is_empty() {
        diag.push(
            ErrorKind::Value,
            span,
            format!("{owner}: a route whose calls write tasks ({}, async or publish) cannot be cached: a cached answer would hand one client's receipt (task id, status_url) to every later client and write none of theirs; cache its sync calls instead", writers.join(", ")),
        );
    }
}
