//! Rendering compiled templates against one request: its path parameters, query, headers and
//! JSON body, and the results of the calls finished so far.
//!
//! JSON templates are serialized straight from the template and the borrowed values they
//! reference (see [`Rendered`]): a call result used whole in a body or the response is never
//! cloned into an intermediate tree.

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
            Source::Header { name } => self
                .req
                .headers
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
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
    ///
    /// In a path (while `out` holds no `?` or `#` yet), a value that would make a segment a dot
    /// segment is defused too (see [`defuse_dot_segments`]).
    pub fn render_url_part(&self, t: &StrTemplate, out: &mut String) {
        let in_path = !out.contains(['?', '#']);
        // The segment the first piece continues (e.g. the endpoint's base path).
        let first_segment = out.rfind('/').map_or(0, |i| i + 1);
        let mut values = Vec::new();
        let mut buf = String::new();
        for seg in &t.segments {
            match seg {
                Segment::Lit(l) => out.push_str(l),
                Segment::Expr(e) => {
                    buf.clear();
                    self.text(e, &mut buf);
                    let from = out.len();
                    encode_path_value(&buf, out);
                    if in_path && out.len() > from {
                        values.push(from..out.len());
                    }
                }
            }
        }
        if !values.is_empty() {
            defuse_dot_segments(out, first_segment, &values);
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

/// Rewrites every path segment of `out[from..]` (up to a `?` or `#` a literal wrote) that is a
/// dot segment and holds part of a value (`values`: byte ranges of rendered values).
///
/// Why: WHATWG URL parsers and path-normalizing servers (nginx, Envoy's `normalize_path`) read
/// `%2e` as `.`, so encoding a value's dots once does not stop `..` — or `{a}.{b}` with `a = "."`
/// and an empty `b` — from stepping up a level at the upstream and reaching what the template
/// never named. The dots of such a segment are encoded twice (`%252E`): the upstream sees a
/// segment named `%2E%2E`, never a step up. Dot segments the template itself writes are left as
/// written.
fn defuse_dot_segments(out: &mut String, from: usize, values: &[std::ops::Range<usize>]) {
    let end = out[from..].find(['?', '#']).map_or(out.len(), |i| from + i);
    let mut rewritten = String::new();
    let mut copied = from;
    let mut start = from;
    while start <= end {
        let stop = out[start..end].find('/').map_or(end, |i| start + i);
        let seg = &out[start..stop];
        let holds_value = values.iter().any(|v| v.start < stop && v.end > start);
        if holds_value {
            if let Some(dots) = dot_segment(seg) {
                rewritten.push_str(&out[copied..start]);
                for _ in 0..dots {
                    rewritten.push_str("%252E");
                }
                copied = stop;
            }
        }
        start = stop + 1;
    }
    if copied != from {
        rewritten.push_str(&out[copied..]);
        out.truncate(from);
        out.push_str(&rewritten);
    }
}

/// How many dots a dot segment has: `.` / `..`, each dot possibly spelled `%2e` (any case).
fn dot_segment(seg: &str) -> Option<usize> {
    let mut rest = seg.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3 && rest[0] == b'%' && rest[1] == b'2' && rest[2] | 0x20 == b'e' {
            rest = &rest[3..];
        } else {
            return None;
        }
        dots += 1;
    }
    (1..=2).contains(&dots).then_some(dots)
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

#[cfg(test)]
mod tests {
    use super::*;
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

    fn path_expr(index: usize) -> Segment {
        Segment::Expr(Expr {
            source: Source::Path {
                index,
                name: format!("p{index}"),
            },
            steps: vec![],
        })
    }

    /// Found by the `template` fuzz target: `..` rendered as `%2E%2E`, or a value's `.` beside
    /// a literal one, is still a dot segment to a WHATWG parser or a normalizing upstream.
    #[test]
    fn values_cannot_make_dot_segments() {
        let render = |params: &[&str], segments: Vec<Segment>| {
            let req = RequestCtx {
                params: params.iter().map(|p| p.to_string()).collect(),
                ..Default::default()
            };
            let scope = Scope {
                req: &req,
                results: &[],
            };
            let mut out = String::from("http://up/base");
            scope.render_url_part(&StrTemplate { segments }, &mut out);
            out
        };
        let lit = |s: &str| Segment::Lit(s.into());
        let one = |p: &str| render(&[p], vec![lit("/users/"), path_expr(0), lit("/orders")]);
        assert_eq!(one(".."), "http://up/base/users/%252E%252E/orders");
        assert_eq!(one("."), "http://up/base/users/%252E/orders");
        assert_eq!(one("..."), "http://up/base/users/%2E%2E%2E/orders");
        assert_eq!(one("%2e"), "http://up/base/users/%252e/orders");
        assert_eq!(one("a.b"), "http://up/base/users/a.b/orders");
        // Split over two values and a literal dot.
        let two = |a: &str, b: &str| {
            render(
                &[a, b],
                vec![lit("/f/"), path_expr(0), lit("."), path_expr(1), lit("/x")],
            )
        };
        assert_eq!(two(".", ""), "http://up/base/f/%252E%252E/x");
        assert_eq!(two("", "."), "http://up/base/f/%252E%252E/x");
        assert_eq!(
            two("", ""),
            "http://up/base/f/./x",
            "the template's own dot stays"
        );
        assert_eq!(two("a", "b"), "http://up/base/f/a.b/x");
        // A value continuing the base path's segment, and a query the path template writes.
        assert_eq!(
            render(&[".."], vec![path_expr(0), lit("?q=..")]),
            "http://up/base%2E%2E?q=.."
        );
        assert_eq!(
            render(
                &[".."],
                vec![lit("/"), path_expr(0), lit("?q="), path_expr(0)]
            ),
            "http://up/base/%252E%252E?q=%2E%2E"
        );
    }
}
