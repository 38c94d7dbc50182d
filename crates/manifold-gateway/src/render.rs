//! Rendering compiled templates against one request: its path parameters, query, headers and
//! JSON body, and the results of the calls finished so far.
//!
//! JSON templates are serialized straight from the template and the borrowed values they
//! reference (see [`Rendered`]): a call result used whole in a body or the response is never
//! cloned into an intermediate tree.

use crate::error::{CallError, CallErrorKind};
use http::HeaderMap;
use manifold_config::template::{
    encode_path_value, value_text, Expr, JsonTemplate, Segment, Source, StrTemplate,
};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::Value;

/// What one request offers templates to read.
#[derive(Debug, Default)]
pub struct RequestCtx {
    /// Decoded path parameters, in pattern order.
    pub params: Vec<String>,
    /// Decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    /// The client's headers.
    pub headers: HeaderMap,
    /// The parsed JSON body (null when the route does not read it or it was empty).
    pub body: Value,
}

/// A value looked up for a reference.
#[derive(Debug, Clone, Copy)]
pub enum Val<'a> {
    /// A JSON value (from a body or a call result).
    Json(&'a Value),
    /// Text (a path parameter, query value or header).
    Str(&'a str),
    /// Nothing there: renders as null.
    Missing,
}

/// Everything a template can read at one moment of a request.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    /// The request.
    pub req: &'a RequestCtx,
    /// The results of the calls finished so far, by call index.
    pub results: &'a [Option<Value>],
}

impl<'a> Scope<'a> {
    /// The value a reference reads.
    pub fn lookup(&self, expr: &Expr) -> Val<'a> {
        match &expr.source {
            Source::Path { index, .. } => self
                .req
                .params
                .get(*index)
                .map(|s| Val::Str(s.as_str()))
                .unwrap_or(Val::Missing),
            Source::Query { name } => self
                .req
                .query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| Val::Str(v.as_str()))
                .unwrap_or(Val::Missing),
            // As UTF-8, not `to_str` (visible ASCII only): `x-user: José` is that text, as it
            // would be in the query or the body; read as missing, it sent the upstream a
            // `null` or an empty value the client never sent.
            Source::Header { name } => self
                .req
                .headers
                .get(name.as_str())
                .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
                .map(Val::Str)
                .unwrap_or(Val::Missing),
            Source::RequestBody => expr
                .walk(&self.req.body)
                .map(Val::Json)
                .unwrap_or(Val::Missing),
            Source::Call { index, .. } => self
                .results
                .get(*index)
                .and_then(Option::as_ref)
                .and_then(|v| expr.walk(v))
                .map(Val::Json)
                .unwrap_or(Val::Missing),
            // Only hook templates read the settled task, and the queue renders those parts
            // (see `crate::hooks`): nothing on the request path has a value for them.
            Source::Task { .. } => Val::Missing,
        }
    }

    fn text(&self, expr: &Expr, out: &mut String) {
        match self.lookup(expr) {
            Val::Json(v) => value_text(Some(v), out),
            Val::Str(s) => out.push_str(s),
            Val::Missing => {}
        }
    }

    /// Render a string template as plain text.
    pub fn render_text(&self, t: &StrTemplate, out: &mut String) {
        for seg in &t.segments {
            match seg {
                Segment::Lit(l) => out.push_str(l),
                Segment::Expr(e) => self.text(e, out),
            }
        }
    }

    /// Render a string template for a URL path or query: literal parts as written, values
    /// percent-encoded so they cannot change the URL's shape.
    /// Text values (a parameter, a query value, a JSON string: nearly every value in a URL)
    /// are encoded straight from where they are; only other JSON values are written out
    /// first, into a buffer allocated for the first of them.
    pub fn render_url_part(&self, t: &StrTemplate, out: &mut String) {
        let mut buf = String::new();
        for seg in &t.segments {
            match seg {
                Segment::Lit(l) => out.push_str(l),
                Segment::Expr(e) => match self.lookup(e) {
                    Val::Str(s) => encode_path_value(s, out),
                    Val::Json(Value::String(s)) => encode_path_value(s, out),
                    Val::Json(v) => {
                        buf.clear();
                        value_text(Some(v), &mut buf);
                        encode_path_value(&buf, out);
                    }
                    Val::Missing => {}
                },
            }
        }
    }

    /// A serializable view of `t` rendered in this scope.
    pub fn json<'t>(&'t self, t: &'t JsonTemplate) -> Rendered<'t, 'a> {
        Rendered {
            tpl: t,
            scope: self,
        }
    }
}

/// A JSON template bound to a scope; serializing it renders the template.
pub struct Rendered<'t, 'a> {
    tpl: &'t JsonTemplate,
    scope: &'t Scope<'a>,
}

impl Serialize for Rendered<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.tpl {
            JsonTemplate::Literal(v) => v.serialize(s),
            JsonTemplate::Value(e) => match self.scope.lookup(e) {
                Val::Json(v) => v.serialize(s),
                Val::Str(t) => s.serialize_str(t),
                Val::Missing => s.serialize_unit(),
            },
            JsonTemplate::Text(t) => {
                let mut out = String::new();
                self.scope.render_text(t, &mut out);
                s.serialize_str(&out)
            }
            JsonTemplate::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(&self.scope.json(i))?;
                }
                seq.end()
            }
            JsonTemplate::Object(fields) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, &self.scope.json(v))?;
                }
                map.end()
            }
        }
    }
}

/// The references of each segment of path template `t` up to its query, and whether the
/// segment has literal text of its own.
///
/// Values are percent-encoded, so every `/` of a rendered path and its first `?` are the
/// template's own: the rendered path's segments are these, in order.
fn path_segments(t: &StrTemplate) -> Vec<(bool, Vec<&Expr>)> {
    let mut out = Vec::new();
    let (mut literal, mut values) = (false, Vec::new());
    'template: for seg in &t.segments {
        match seg {
            Segment::Expr(e) => values.push(e),
            Segment::Lit(l) => {
                for c in l.chars() {
                    match c {
                        '?' => break 'template,
                        '/' => {
                            out.push((literal, std::mem::take(&mut values)));
                            literal = false;
                        }
                        _ => literal = true,
                    }
                }
            }
        }
    }
    out.push((literal, values));
    out
}

/// The references of the first segment of `rendered` (the path template `t` rendered) that
/// the template makes of values alone, with no literal text of its own, and that rendered
/// empty; `None` when there is none.
///
/// Such a segment reshapes the path as a dot segment does: `/users/{query.id}/orders` without
/// an id is `/users//orders`, which nginx (`merge_slashes`, on by default) and most frameworks
/// serve as `/users/orders`; `DELETE /users/{query.id}` becomes `DELETE /users/`, the
/// collection; `/{header.x-tenant}/orders` becomes `//orders`, a network-path reference to URL
/// parsers. An empty segment the template writes itself (`/a//b`) is the operator's and kept.
/// Only a path with an empty segment (`//`, or a `/` at its end) is looked at further: the
/// common path costs one scan.
pub(crate) fn empty_value_segment<'t>(t: &'t StrTemplate, rendered: &str) -> Option<Vec<&'t Expr>> {
    let path = rendered.split_once('?').map_or(rendered, |(p, _)| p);
    if !path.contains("//") && !path.ends_with('/') {
        return None;
    }
    path.split('/')
        .zip(path_segments(t))
        .find(|(seg, (literal, values))| seg.is_empty() && !literal && !values.is_empty())
        .map(|(_, (_, values))| values)
}

/// Whether a rendered path could be one [`refuse_reshaping`] refuses: it has a `.` or a `%` (a
/// dot segment, plain or behind an escaped slash), or, before its query, an empty segment
/// (`//`, or a `/` at its end). One pass over its bytes: most paths have none of them, and the
/// checks' own searches cost ~900 instructions a call (callgrind).
fn may_reshape(rendered: &str) -> bool {
    let mut in_path = true;
    let mut prev = 0u8;
    for &b in rendered.as_bytes() {
        if b == b'.' || b == b'%' {
            return true;
        }
        if in_path {
            if b == b'?' {
                if prev == b'/' {
                    return true;
                }
                in_path = false;
            } else if b == b'/' && prev == b'/' {
                return true;
            }
            prev = b;
        }
    }
    in_path && prev == b'/'
}

/// Refuse a call's or a hook's path (`t` rendered as `rendered`) that a value would reshape: a
/// dot segment, plain or hidden behind an escaped slash ([`crate::path::hides_dot_segment`]),
/// or a value that is a whole segment rendered empty ([`empty_value_segment`]). Whose fault it
/// is follows [`unsendable`]. The one rule for calls and hooks.
pub(crate) fn refuse_reshaping(t: &StrTemplate, rendered: &str) -> Result<(), CallError> {
    use crate::path::{has_dot_segment, has_hidden_dot_segment, hides_dot_segment, is_dot_segment};
    if !may_reshape(rendered) {
        return Ok(());
    }
    // A value of only dots is sent as `%2E%2E`, which RFC 3986 makes equal to `..`: an upstream
    // that normalizes paths would resolve it and serve another path. No encoding survives that.
    if has_dot_segment(rendered) {
        return Err(unsendable(
            &segment_values(t, rendered, is_dot_segment),
            "a path value is `.` or `..`, which would change the upstream path",
        ));
    }
    if has_hidden_dot_segment(rendered) {
        return Err(unsendable(
            &segment_values(t, rendered, hides_dot_segment),
            "a path value holds `/` with `.` or `..` between its slashes, which an upstream \
             decoding `%2F` before resolving dot segments would climb out of the path with",
        ));
    }
    if let Some(values) = empty_value_segment(t, rendered) {
        return Err(unsendable(
            &values,
            "a path value that is a whole segment is empty (missing, null or \"\"), which would \
             leave an empty segment (`//` or a trailing `/`) that upstreams merge or strip",
        ));
    }
    Ok(())
}

/// The references of the segments of `rendered` (the path template `t` rendered) that `bad`
/// says cannot be sent ([`crate::path::is_dot_segment`], [`crate::path::hides_dot_segment`]):
/// whose values made them so.
pub(crate) fn segment_values<'t>(
    t: &'t StrTemplate,
    rendered: &str,
    bad: fn(&str) -> bool,
) -> Vec<&'t Expr> {
    let path = rendered.split_once('?').map_or(rendered, |(p, _)| p);
    path.split('/')
        .zip(path_segments(t))
        .filter(|(seg, _)| bad(seg))
        .flat_map(|(_, (_, values))| values)
        .collect()
}

/// The error of a call whose request cannot be sent as `culprits` (the references whose values
/// made it so) rendered it: `what` is why.
///
/// When a value of the client's request is among them, it is the client's (`bad_input`, 400).
/// When they are all other calls' answers, it is the upstream's that gave them (an answer
/// without the id the path needs, with a line break in a name bound for a header):
/// `input_unavailable`, 502, naming those calls, as for an input that failed outright.
pub(crate) fn unsendable(culprits: &[&Expr], what: &str) -> CallError {
    let mut calls: Vec<&str> = Vec::new();
    for e in culprits {
        match &e.source {
            Source::Call { name, .. } => {
                if !calls.contains(&name.as_str()) {
                    calls.push(name);
                }
            }
            _ => return CallError::new(CallErrorKind::Input, what),
        }
    }
    if calls.is_empty() {
        return CallError::new(CallErrorKind::Input, what);
    }
    let calls: Vec<String> = calls.iter().map(|c| format!("`{c}`")).collect();
    CallError::new(
        CallErrorKind::InputUnavailable,
        format!(
            "{what}; the value is from the answer of call {}",
            calls.join(", ")
        ),
    )
}

impl Scope<'_> {
    /// The references of header template `t` whose text alone is no valid header value (a line
    /// break, a control character): what made its rendering fail.
    pub(crate) fn header_culprits<'t>(&self, t: &'t StrTemplate) -> Vec<&'t Expr> {
        t.exprs()
            .filter(|e| {
                let mut text = String::new();
                self.text(e, &mut text);
                http::HeaderValue::from_str(&text).is_err()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The one-pass gate never lets by a path the checks behind it would refuse: a path
        /// it passes has no dot segment, plain or hidden, and no empty segment before `?`.
        #[test]
        fn the_gate_lets_no_reshaping_path_by(text in "[/a.%?2fF5cC]{0,24}") {
            if !may_reshape(&text) {
                prop_assert!(!crate::path::has_dot_segment(&text));
                prop_assert!(!crate::path::has_hidden_dot_segment(&text));
                let path = text.split_once('?').map_or(text.as_str(), |(p, _)| p);
                prop_assert!(!path.contains("//") && !path.ends_with('/'));
            }
        }
    }

    #[test]
    fn the_gate_looks_at_paths_that_may_reshape() {
        for text in ["/a/b", "/orders", "/a?x=/y", "/a?x=y/"] {
            assert!(!may_reshape(text), "{text}");
        }
        for text in [
            "/a/", "/a//b", "//a", "/a/?x", "/a/..", "/a%2Fb", "/a?x=.", "/",
        ] {
            assert!(may_reshape(text), "{text}");
        }
    }

    use manifold_config::template::steps;

    fn call_expr(index: usize, path: &[&str]) -> Expr {
        Expr {
            source: Source::Call {
                index,
                name: format!("c{index}"),
            },
            steps: steps(&path.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
        }
    }

    #[test]
    fn whole_values_keep_their_json_type() {
        let req = RequestCtx::default();
        let results = vec![Some(
            serde_json::json!({"id": 7, "tags": ["a", "b"], "ok": true}),
        )];
        let scope = Scope {
            req: &req,
            results: &results,
        };
        let tpl = JsonTemplate::Object(vec![
            ("id".into(), JsonTemplate::Value(call_expr(0, &["id"]))),
            ("tags".into(), JsonTemplate::Value(call_expr(0, &["tags"]))),
            (
                "second".into(),
                JsonTemplate::Value(call_expr(0, &["tags", "1"])),
            ),
            (
                "missing".into(),
                JsonTemplate::Value(call_expr(0, &["nope"])),
            ),
            (
                "text".into(),
                JsonTemplate::Text(StrTemplate {
                    segments: vec![
                        Segment::Lit("order-".into()),
                        Segment::Expr(call_expr(0, &["id"])),
                    ],
                }),
            ),
        ]);
        let out = serde_json::to_value(scope.json(&tpl)).unwrap();
        assert_eq!(
            out,
            serde_json::json!({"id": 7, "tags": ["a", "b"], "second": "b", "missing": null, "text": "order-7"})
        );
    }

    #[test]
    fn url_parts_encode_values_but_not_literals() {
        let req = RequestCtx {
            params: vec!["../x?y#z".into()],
            ..Default::default()
        };
        let results = vec![];
        let scope = Scope {
            req: &req,
            results: &results,
        };
        let t = StrTemplate {
            segments: vec![
                Segment::Lit("/users/".into()),
                Segment::Expr(Expr {
                    source: Source::Path {
                        index: 0,
                        name: "id".into(),
                    },
                    steps: vec![],
                }),
                Segment::Lit("/orders".into()),
            ],
        };
        let mut out = String::new();
        scope.render_url_part(&t, &mut out);
        assert_eq!(out, "/users/..%2Fx%3Fy%23z/orders");
    }

    #[test]
    fn url_parts_encode_json_values_whatever_their_type() {
        let req = RequestCtx::default();
        let results = vec![Some(
            serde_json::json!({"id": "a/b c", "n": 7, "dots": "..", "obj": {"k": "v/w"}}),
        )];
        let scope = Scope {
            req: &req,
            results: &results,
        };
        let expr = |path: &str| Segment::Expr(call_expr(0, &[path]));
        let t = StrTemplate {
            segments: vec![
                Segment::Lit("/x/".into()),
                expr("id"),
                Segment::Lit("/".into()),
                expr("n"),
                Segment::Lit("/".into()),
                expr("dots"),
                Segment::Lit("/".into()),
                expr("missing"),
                Segment::Lit("/".into()),
                expr("obj"),
            ],
        };
        let mut out = String::new();
        scope.render_url_part(&t, &mut out);
        assert_eq!(out, "/x/a%2Fb%20c/7/%2E%2E//%7B%22k%22%3A%22v%2Fw%22%7D");
    }

    #[test]
    fn only_segments_of_values_alone_may_not_render_empty() {
        let tpl = |s: &str| {
            let mut segments = Vec::new();
            for (n, part) in s.split('*').enumerate() {
                if n > 0 {
                    segments.push(Segment::Expr(call_expr(0, &[])));
                }
                if !part.is_empty() {
                    segments.push(Segment::Lit(part.into()));
                }
            }
            StrTemplate { segments }
        };
        // (template, `*` a value; rendered; refused)
        for (t, rendered, refused) in [
            ("/users/*/orders", "/users//orders", true),
            ("/users/*", "/users/", true),
            ("/*/orders", "//orders", true),
            ("/users/**", "/users/", true),
            ("/users/*?view=full", "/users/?view=full", true),
            ("/users/*", "/users/7", false),
            ("/users/u-*/orders", "/users/u-/orders", false),
            ("/users/**", "/users/a", false),
            ("/a//b/*", "/a//b/7", false),
            ("/a/", "/a/", false),
            ("/x?a=*", "/x?a=", false),
            ("/x?next=/*", "/x?next=/", false),
        ] {
            assert_eq!(
                empty_value_segment(&tpl(t), rendered).is_some(),
                refused,
                "{t} rendered {rendered}"
            );
        }
    }
}
