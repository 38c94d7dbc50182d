//! Templates: `{path.id}`, `{query.q}`, `{header.x-user}`, `{request.body.a.b}`, `{CALL}`,
//! `{CALL.a.0.b}`.
//!
//! A template is parsed and every reference resolved (call names to call indexes, path
//! parameters to their position in the route pattern) once, at config load. Per request the
//! executor only walks the compiled segments: no string lookups of names, no re-parsing.
//!
//! Three renderings exist because a value means different things in different places:
//! - as a whole JSON value (`body = "{order}"`): the referenced value keeps its JSON type;
//! - as text inside a string (`"id-{order.id}"`): strings as they are, other values as JSON text;
//! - inside a URL path or query: the text, percent-encoded so that no value can add a path
//!   segment, a query key, a fragment or a line break (see [`encode_path_value`]).

use serde::Serialize;
use std::fmt;

/// Where a template reference reads its value from, resolved at load time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Source {
    /// A `{name}` segment of the route's path pattern, by its position among the parameters.
    Path {
        /// Index into the request's captured path parameters.
        index: usize,
        /// The parameter's name, for display.
        name: String,
    },
    /// A query-string parameter of the client request (first value wins).
    Query {
        /// Parameter name.
        name: String,
    },
    /// A header of the client request.
    Header {
        /// Header name, lower-cased.
        name: String,
    },
    /// The client request's JSON body.
    RequestBody,
    /// The JSON result of another call of the same route.
    Call {
        /// Index of the call in the plan.
        index: usize,
        /// The call's name, for display.
        name: String,
    },
    /// `{task.id}`, `{task.result}`, `{task.error}`, `{task.attempts}`: the settled task, in an
    /// `on_done` / `on_dead` hook only. Rendered by the queue when the task settles, never by
    /// the request path.
    Task {
        /// Which value.
        var: crate::queue::TaskVar,
    },
}

/// One step into a JSON value: an object key, or (when it is all digits) also an array index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The key as written.
    pub key: String,
    /// The key read as an array index, when it is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

/// A resolved reference: a source and a path into its JSON value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expr {
    /// Where the value comes from.
    #[serde(flatten)]
    pub source: Source,
    /// Steps into the value (empty: the whole value).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
}

impl Expr {
    /// Walk `steps` into `root`. A missing key or index reads as `None` (rendered as null).
    pub fn walk<'v>(&self, root: &'v serde_json::Value) -> Option<&'v serde_json::Value> {
        let mut cur = root;
        for step in &self.steps {
            cur = match cur {
                serde_json::Value::Object(map) => map.get(&step.key)?,
                serde_json::Value::Array(items) => items.get(step.index?)?,
                _ => return None,
            };
        }
        Some(cur)
    }
}

/// A piece of a string template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Segment {
    /// Literal text.
    Lit(String),
    /// A reference, rendered as text.
    Expr(Expr),
}

/// A compiled string template: literal text interleaved with references.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(transparent)]
pub struct StrTemplate {
    /// The segments, in order.
    pub segments: Vec<Segment>,
}

impl StrTemplate {
    /// A template with no references.
    pub fn literal(s: &str) -> Self {
        StrTemplate {
            segments: if s.is_empty() {
                Vec::new()
            } else {
                vec![Segment::Lit(s.to_owned())]
            },
        }
    }

    /// The references this template reads.
    pub fn exprs(&self) -> impl Iterator<Item = &Expr> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Expr(e) => Some(e),
            Segment::Lit(_) => None,
        })
    }

    /// When the template is exactly one reference and nothing else, that reference.
    pub fn as_single_expr(&self) -> Option<&Expr> {
        match self.segments.as_slice() {
            [Segment::Expr(e)] => Some(e),
            _ => None,
        }
    }

    /// The template's literal text when it has no references.
    pub fn as_literal(&self) -> Option<String> {
        let mut out = String::new();
        for s in &self.segments {
            match s {
                Segment::Lit(l) => out.push_str(l),
                Segment::Expr(_) => return None,
            }
        }
        Some(out)
    }
}

/// A compiled JSON template: a JSON tree whose string leaves may hold references.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum JsonTemplate {
    /// A JSON value with no references.
    Literal(serde_json::Value),
    /// A string that is exactly one reference: renders the referenced value with its JSON type.
    Value(Expr),
    /// A string with references mixed into text: renders a JSON string.
    Text(StrTemplate),
    /// An array of templates.
    Array(Vec<JsonTemplate>),
    /// An object of templates, keys in the order written.
    Object(Vec<(String, JsonTemplate)>),
}

impl JsonTemplate {
    /// Every reference this template reads, depth first.
    pub fn exprs(&self) -> Vec<&Expr> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a Expr>) {
        match self {
            JsonTemplate::Literal(_) => {}
            JsonTemplate::Value(e) => out.push(e),
            JsonTemplate::Text(t) => out.extend(t.exprs()),
            JsonTemplate::Array(items) => items.iter().for_each(|i| i.collect(out)),
            JsonTemplate::Object(fields) => fields.iter().for_each(|(_, v)| v.collect(out)),
        }
    }
}

/// A reference as written, before names are resolved: `root` is the first dotted part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRef {
    /// Everything between the braces, trimmed.
    pub text: String,
    /// The dotted parts.
    pub parts: Vec<String>,
}

/// A syntax error in a template string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A template split into literal text and raw references. `{{` and `}}` are literal braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawSegment {
    /// Literal text.
    Lit(String),
    /// A `{…}` reference.
    Ref(RawRef),
}

/// Split a template string into literal text and references, checking its syntax.
pub fn parse(input: &str) -> Result<Vec<RawSegment>, SyntaxError> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut chars = input.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' if matches!(chars.peek(), Some((_, '{'))) => {
                chars.next();
                lit.push('{');
            }
            '}' if matches!(chars.peek(), Some((_, '}'))) => {
                chars.next();
                lit.push('}');
            }
            '{' => {
                let start = i + 1;
                let mut end = None;
                for (j, d) in chars.by_ref() {
                    if d == '}' {
                        end = Some(j);
                        break;
                    }
                    if d == '{' {
                        return Err(SyntaxError {
                            message: format!(
                                "`{{` inside a reference at byte {j} of {input:?} (write `{{{{` for a literal brace)"
                            ),
                        });
                    }
                }
                let Some(end) = end else {
                    return Err(SyntaxError {
                        message: format!("unclosed `{{` at byte {i} of {input:?}"),
                    });
                };
                let text = input[start..end].trim().to_owned();
                if text.is_empty() {
                    return Err(SyntaxError {
                        message: format!("empty reference `{{}}` in {input:?}"),
                    });
                }
                let parts: Vec<String> = text.split('.').map(|p| p.trim().to_owned()).collect();
                if parts.iter().any(|p| p.is_empty()) {
                    return Err(SyntaxError {
                        message: format!(
                            "empty part in reference `{{{text}}}` (two dots, or a dot at an end)"
                        ),
                    });
                }
                if !lit.is_empty() {
                    out.push(RawSegment::Lit(std::mem::take(&mut lit)));
                }
                out.push(RawSegment::Ref(RawRef { text, parts }));
            }
            '}' => {
                return Err(SyntaxError {
                    message: format!(
                        "unmatched `}}` at byte {i} of {input:?} (write `}}}}` for a literal brace)"
                    ),
                });
            }
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        out.push(RawSegment::Lit(lit));
    }
    Ok(out)
}

/// Turn dotted parts into steps.
pub fn steps(parts: &[String]) -> Vec<Step> {
    parts
        .iter()
        .map(|p| Step {
            key: p.clone(),
            index: if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
                p.parse().ok()
            } else {
                None
            },
        })
        .collect()
}

/// Characters a value may keep in a path segment: RFC 3986 unreserved only. Everything else —
/// `/`, `?`, `#`, `%`, `;`, spaces, control characters — is percent-encoded, so a value can never
/// add a segment, start a query or fragment, or inject a line.
const PATH_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encode a value for use inside a path or a query component.
///
/// A value made only of dots (`.` or `..`) has its dots encoded too: otherwise it would be a dot
/// segment that servers collapse, reshaping the path.
pub fn encode_path_value(value: &str, out: &mut String) {
    if !value.is_empty() && value.bytes().all(|b| b == b'.') {
        for _ in 0..value.len() {
            out.push_str("%2E");
        }
        return;
    }
    out.extend(percent_encoding::utf8_percent_encode(value, PATH_VALUE));
}

/// Write a JSON value as text: strings as they are, null as nothing, everything else as JSON.
pub fn value_text(value: Option<&serde_json::Value>, out: &mut String) {
    use std::fmt::Write;
    match value {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(s)) => out.push_str(s),
        Some(serde_json::Value::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(serde_json::Value::Number(n)) => {
            let _ = write!(out, "{n}");
        }
        Some(other) => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_literals_references_and_escapes() {
        let segs = parse("/orders/{order.id}/confirm?x={{y}}").unwrap();
        assert_eq!(segs.len(), 3);
        assert_eq!(segs[0], RawSegment::Lit("/orders/".into()));
        match &segs[1] {
            RawSegment::Ref(r) => assert_eq!(r.parts, vec!["order", "id"]),
            other => panic!("{other:?}"),
        }
        assert_eq!(segs[2], RawSegment::Lit("/confirm?x={y}".into()));
    }

    #[test]
    fn rejects_bad_syntax() {
        for bad in ["{", "a}", "{}", "{a..b}", "{a.}", "{a{b}}"] {
            assert!(parse(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn encodes_everything_that_could_reshape_a_url() {
        let mut s = String::new();
        encode_path_value("../a/b?c=d#e\r\n%2F", &mut s);
        assert_eq!(s, "..%2Fa%2Fb%3Fc%3Dd%23e%0D%0A%252F");
        let mut s = String::new();
        encode_path_value("..", &mut s);
        assert_eq!(s, "%2E%2E");
    }

    #[test]
    fn walks_objects_and_arrays() {
        let v = serde_json::json!({"a": [{"b": 1}, {"b": 2}], "0": "zero"});
        let e = Expr {
            source: Source::RequestBody,
            steps: steps(&["a".into(), "1".into(), "b".into()]),
        };
        assert_eq!(e.walk(&v), Some(&serde_json::json!(2)));
        let e = Expr {
            source: Source::RequestBody,
            steps: steps(&["0".into()]),
        };
        assert_eq!(e.walk(&v), Some(&serde_json::json!("zero")));
    }
}
