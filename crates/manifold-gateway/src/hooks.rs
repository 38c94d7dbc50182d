//! The accept-time half of a completion hook: when an async or publish call is rendered into
//! its task, its `on_done` / `on_dead` are rendered too, against the same request and call
//! results, and stored inside the task. What only the settlement knows (`{task.id}`,
//! `{task.result}`, `{task.error}`, `{task.attempts}`) stays a structured placeholder the queue
//! fills in when the task settles (see `manifold_queue::hooks`).
//!
//! Why render now rather than store the inputs: the hook then needs nothing from the request
//! after the answer (the request's body and the earlier calls' results are gone by then), it
//! is exactly what the client's request implied, and it is bounded by the task's own size
//! limit. No request value is kept as a template, so none can be interpreted later.

use crate::error::{CallError, CallErrorKind};
use crate::render::Scope;
use manifold_config::template::{Expr, JsonTemplate, Segment, Source, StrTemplate};
use manifold_config::{CallHooks, HookSpec, HookTarget};
use manifold_queue::hooks::{BodyTpl, Hook, Hooks, Piece, Target, TaskRef};

/// The task's hooks, rendered in `scope`; `None` when the call declares none.
pub(crate) fn render(hooks: &CallHooks, scope: Scope<'_>) -> Result<Option<Box<Hooks>>, CallError> {
    if hooks.is_empty() {
        return Ok(None);
    }
    let one = |spec: &Option<HookSpec>, kind: &str| {
        spec.as_ref()
            .map(|s| {
                render_one(s, scope).map_err(|mut e| {
                    e.message = format!("{kind}: {}", e.message);
                    e
                })
            })
            .transpose()
    };
    Ok(Some(Box::new(Hooks {
        on_done: one(&hooks.on_done, "on_done")?,
        on_dead: one(&hooks.on_dead, "on_dead")?,
    })))
}

fn input(message: String) -> CallError {
    CallError::new(CallErrorKind::Input, message)
}

/// Why a hook cannot be rendered: the client's fault, or another call's answer's (see
/// [`crate::render::unsendable`]).
fn render_one(spec: &HookSpec, scope: Scope<'_>) -> Result<Hook, CallError> {
    let target = match &spec.target {
        HookTarget::Publish { subject } => Target::Publish {
            subject: subject.clone(),
        },
        HookTarget::Upstream { name, method, path } => Target::Upstream {
            upstream: name.clone(),
            method: method.as_str().to_owned(),
            path: url_pieces(path, scope)?,
        },
    };
    let mut headers = Vec::with_capacity(spec.headers.len());
    for (name, tpl) in &spec.headers {
        let mut text = String::new();
        scope.render_text(tpl, &mut text);
        if http::HeaderValue::from_str(&text).is_err() {
            return Err(crate::render::unsendable(
                &scope.header_culprits(tpl),
                &format!("header `{name}` rendered to a value that is not a valid header value"),
            ));
        }
        headers.push((name.clone(), text));
    }
    let body = spec
        .body
        .as_ref()
        .map(|t| body(t, scope))
        .transpose()
        .map_err(input)?;
    Ok(Hook {
        id: manifold_queue::hooks::new_id(),
        target,
        headers,
        body,
    })
}

fn task_ref(e: &Expr) -> Option<TaskRef> {
    match &e.source {
        Source::Task { var } => Some(TaskRef {
            var: *var,
            steps: e.steps.iter().map(|s| s.key.clone()).collect(),
        }),
        _ => None,
    }
}

/// A path: request values percent-encoded now (as for any call), task values left for the
/// queue (the config allows only `{task.id}` and `{task.attempts}` there).
fn url_pieces(t: &StrTemplate, scope: Scope<'_>) -> Result<Vec<Piece>, CallError> {
    let mut pieces = Vec::new();
    let mut probe = String::new();
    for seg in &t.segments {
        match seg {
            Segment::Expr(e) if task_ref(e).is_some() => {
                probe.push('0');
                pieces.extend(task_ref(e).map(Piece::Task));
            }
            other => {
                let mut out = String::new();
                scope.render_url_part(
                    &StrTemplate {
                        segments: vec![other.clone()],
                    },
                    &mut out,
                );
                probe.push_str(&out);
                pieces.push(Piece::Lit(out));
            }
        }
    }
    // Task values stand as `0` in the probe: never empty, never a dot segment, as the queue
    // renders them.
    crate::render::refuse_reshaping(t, &probe)?;
    if http::uri::PathAndQuery::try_from(probe.as_str()).is_err() {
        return Err(input("the rendered path is not valid".into()));
    }
    Ok(pieces)
}

fn text_pieces(t: &StrTemplate, scope: Scope<'_>) -> Vec<Piece> {
    t.segments
        .iter()
        .map(|seg| match seg {
            Segment::Expr(e) => match task_ref(e) {
                Some(r) => Piece::Task(r),
                None => {
                    let mut out = String::new();
                    scope.render_text(
                        &StrTemplate {
                            segments: vec![seg.clone()],
                        },
                        &mut out,
                    );
                    Piece::Lit(out)
                }
            },
            Segment::Lit(l) => Piece::Lit(l.clone()),
        })
        .collect()
}

fn reads_task(t: &JsonTemplate) -> bool {
    t.exprs().iter().any(|e| task_ref(e).is_some())
}

/// A body: every subtree that does not read the task is rendered to JSON now.
fn body(t: &JsonTemplate, scope: Scope<'_>) -> Result<BodyTpl, String> {
    if !reads_task(t) {
        return serde_json::to_value(scope.json(t))
            .map(BodyTpl::Json)
            .map_err(|e| format!("cannot render the body: {e}"));
    }
    Ok(match t {
        JsonTemplate::Value(e) => {
            task_ref(e).map_or(BodyTpl::Json(serde_json::Value::Null), BodyTpl::Task)
        }
        JsonTemplate::Text(t) => BodyTpl::Text(text_pieces(t, scope)),
        JsonTemplate::Array(items) => BodyTpl::Array(
            items
                .iter()
                .map(|i| body(i, scope))
                .collect::<Result<_, _>>()?,
        ),
        JsonTemplate::Object(fields) => BodyTpl::Object(
            fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), body(v, scope)?)))
                .collect::<Result<_, String>>()?,
        ),
        JsonTemplate::Literal(v) => BodyTpl::Json(v.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::RequestCtx;

    /// The hooks of the last call of the one route of a config whose `[[routes.r.calls]]`
    /// are `calls` (with an embedded queue and an upstream `u`).
    fn hooks_of(calls: &str) -> CallHooks {
        let toml = format!(
            "[queue]\nbackend = \"embedded\"\npath = \"/nonexistent/hooks-test\"\n\
             [upstreams.u]\nendpoints = [\"http://127.0.0.1:1\"]\n\
             [routes.r]\npath = \"/r\"\n{calls}"
        );
        let cfg = manifold_config::compile(std::path::Path::new("hooks-test.toml"), &toml)
            .unwrap_or_else(|e| panic!("{e}"));
        match cfg.routes.into_iter().next().map(|r| r.kind) {
            Some(manifold_config::RouteKind::Compose(mut plan)) => {
                plan.calls.pop().expect("a call").hooks
            }
            other => panic!("not a composed route: {other:?}"),
        }
    }

    /// The hooks of an async call whose `on_dead` path puts `{query.id}` alone in a segment.
    fn hooks() -> CallHooks {
        hooks_of(
            r#"
  [[routes.r.calls]]
  name = "c"
  upstream = "u"
  mode = "async"
  on_dead = { upstream = "u", path = "/payments/{query.id}/refund" }
"#,
        )
    }

    /// `/payments//refund` is `/payments/refund` to an upstream that merges slashes: a hook
    /// whose path value is missing fails the call as `bad_input`, as the call's own path does.
    #[test]
    fn a_hook_path_value_that_renders_an_empty_segment_is_refused() {
        let hooks = hooks();
        let render_with = |query: Vec<(String, String)>| {
            let req = RequestCtx {
                query,
                ..Default::default()
            };
            render(
                &hooks,
                Scope {
                    req: &req,
                    results: &[],
                },
            )
            .map(|_| ())
        };
        for query in [vec![], vec![("id".into(), String::new())]] {
            let e = render_with(query).expect_err("an empty segment");
            assert_eq!(e.kind, CallErrorKind::Input, "{e}");
        }
        render_with(vec![("id".into(), "p-9".into())]).expect("rendered");
    }

    /// A hook path value from a sync call's answer that renders an empty segment is that
    /// upstream's fault: 502 `input_unavailable`, naming the call, not the client's 400.
    #[test]
    fn a_hook_path_value_from_an_answer_is_the_upstreams_fault() {
        let hooks = hooks_of(
            r#"
  [[routes.r.calls]]
  name = "pay"
  upstream = "u"
  [[routes.r.calls]]
  name = "c"
  upstream = "u"
  mode = "async"
  on_dead = { upstream = "u", path = "/payments/{pay.id}/refund" }
"#,
        );
        let req = RequestCtx::default();
        for answer in [serde_json::json!({}), serde_json::json!({"id": ""})] {
            let results = vec![Some(answer), None];
            let scope = Scope {
                req: &req,
                results: &results,
            };
            let e = render(&hooks, scope).expect_err("an empty segment");
            assert_eq!(e.kind, CallErrorKind::InputUnavailable, "{e}");
            assert!(e.message.contains("call `pay`"), "{e}");
        }
    }
}
