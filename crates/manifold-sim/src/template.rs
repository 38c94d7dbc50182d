//! Response templates: a JSON value whose strings may hold placeholders.
//!
//! | placeholder | value |
//! |---|---|
//! | `{path.NAME}` | a `{NAME}` segment of the endpoint's path pattern |
//! | `{query.NAME}` | a query parameter (`null` if absent) |
//! | `{body}` / `{body.a.b}` / `{body.items.0}` | the JSON request body, or a field of it (`null` if absent) |
//! | `{uuid}` | a fresh version-4 UUID drawn from the seeded generator |
//! | `{seq}` | this endpoint's call number on this replica, from 1 |
//! | `{service}`, `{replica}`, `{method}`, `{path}` | who answered and what was asked |
//!
//! A string that is exactly one placeholder keeps the JSON type of the value (`"{body.items}"`
//! renders an array); a placeholder inside a longer string is converted to text. `{{` and `}}`
//! write literal braces. Templates are compiled once at load, so an unknown placeholder is a config
//! error, not a surprise at request time.

use serde_json::{Map, Value};

/// A compiled response template.
#[derive(Debug, Clone)]
pub(crate) enum Template {
    /// A JSON value with no placeholders.
    Literal(Value),
    /// A string that is exactly one placeholder: keeps the value's JSON type.
    Whole(Placeholder),
    /// A string mixing text and placeholders: rendered as a string.
    Text(Vec<Segment>),
    Array(Vec<Template>),
    Object(Vec<(String, Template)>),
}

#[derive(Debug, Clone)]
pub(crate) enum Segment {
    Lit(String),
    Ph(Placeholder),
}

/// One placeholder.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Placeholder {
    PathParam(String),
    Query(String),
    Body(Vec<String>),
    Uuid,
    Seq,
    Service,
    Replica,
    Method,
    Path,
}

/// What a placeholder can read at request time.
pub(crate) struct Ctx<'a> {
    pub(crate) path_params: &'a [(String, String)],
    pub(crate) query: &'a [(String, String)],
    pub(crate) body: &'a Value,
    pub(crate) seq: u64,
    pub(crate) service: &'a str,
    pub(crate) replica: usize,
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    /// Supplies fresh UUIDs (from the endpoint's seeded generator).
    pub(crate) uuid: &'a mut dyn FnMut() -> String,
}

impl Template {
    /// Compile `v`; `params` are the path pattern's parameter names.
    pub(crate) fn compile(v: &Value, params: &[String]) -> Result<Self, String> {
        Ok(match v {
            Value::String(s) => {
                let segs = parse_segments(s, params)?;
                match segs.as_slice() {
                    [] => Template::Literal(Value::String(String::new())),
                    [Segment::Lit(l)] => Template::Literal(Value::String(l.clone())),
                    [Segment::Ph(p)] => Template::Whole(p.clone()),
                    _ => Template::Text(segs),
                }
            }
            Value::Array(items) => Template::Array(
                items
                    .iter()
                    .map(|i| Template::compile(i, params))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(m) => Template::Object(
                m.iter()
                    .map(|(k, v)| Ok((k.clone(), Template::compile(v, params)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => Template::Literal(other.clone()),
        })
    }

    /// Render into a JSON value.
    pub(crate) fn render(&self, ctx: &mut Ctx<'_>) -> Value {
        match self {
            Template::Literal(v) => v.clone(),
            Template::Whole(p) => p.value(ctx),
            Template::Text(segs) => {
                let mut out = String::new();
                for s in segs {
                    match s {
                        Segment::Lit(l) => out.push_str(l),
                        Segment::Ph(p) => match p.value(ctx) {
                            Value::String(s) => out.push_str(&s),
                            Value::Null => {}
                            other => out.push_str(&other.to_string()),
                        },
                    }
                }
                Value::String(out)
            }
            Template::Array(items) => Value::Array(items.iter().map(|t| t.render(ctx)).collect()),
            Template::Object(fields) => {
                let mut m = Map::with_capacity(fields.len());
                for (k, t) in fields {
                    m.insert(k.clone(), t.render(ctx));
                }
                Value::Object(m)
            }
        }
    }
}

impl Placeholder {
    fn parse(name: &str, params: &[String]) -> Result<Self, String> {
        let name = name.trim();
        let ph = match name {
            "uuid" => Placeholder::Uuid,
            "seq" => Placeholder::Seq,
            "service" => Placeholder::Service,
            "replica" => Placeholder::Replica,
            "method" => Placeholder::Method,
            "path" => Placeholder::Path,
            "body" => Placeholder::Body(Vec::new()),
            _ => {
                if let Some(p) = name.strip_prefix("path.") {
                    if !params.iter().any(|x| x == p) {
                        return Err(format!(
                            "template {{{name}}}: the path pattern has no {{{p}}} segment"
                        ));
                    }
                    Placeholder::PathParam(p.to_owned())
                } else if let Some(q) = name.strip_prefix("query.") {
                    if q.is_empty() {
                        return Err(format!("template {{{name}}}: empty query name"));
                    }
                    Placeholder::Query(q.to_owned())
                } else if let Some(b) = name.strip_prefix("body.") {
                    let parts: Vec<String> = b.split('.').map(str::to_owned).collect();
                    if parts.iter().any(String::is_empty) {
                        return Err(format!("template {{{name}}}: empty field name"));
                    }
                    Placeholder::Body(parts)
                } else {
                    return Err(format!(
                        "unknown template placeholder {{{name}}} (known: path.NAME, query.NAME, \
                         body, body.a.b, uuid, seq, service, replica, method, path)"
                    ));
                }
            }
        };
        Ok(ph)
    }

    fn value(&self, ctx: &mut Ctx<'_>) -> Value {
        match self {
            Placeholder::PathParam(n) => lookup(ctx.path_params, n),
            Placeholder::Query(n) => lookup(ctx.query, n),
            Placeholder::Body(path) => {
                let mut cur = ctx.body;
                for p in path {
                    let next = match cur {
                        Value::Object(m) => m.get(p),
                        Value::Array(a) => p.parse::<usize>().ok().and_then(|i| a.get(i)),
                        _ => None,
                    };
                    match next {
                        Some(v) => cur = v,
                        None => return Value::Null,
                    }
                }
                cur.clone()
            }
            Placeholder::Uuid => Value::String((ctx.uuid)()),
            Placeholder::Seq => Value::from(ctx.seq),
            Placeholder::Service => Value::String(ctx.service.to_owned()),
            Placeholder::Replica => Value::from(ctx.replica),
            Placeholder::Method => Value::String(ctx.method.to_owned()),
            Placeholder::Path => Value::String(ctx.path.to_owned()),
        }
    }
}

fn lookup(pairs: &[(String, String)], name: &str) -> Value {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map_or(Value::Null, |(_, v)| Value::String(v.clone()))
}

fn parse_segments(s: &str, params: &[String]) -> Result<Vec<Segment>, String> {
    let mut segs = Vec::new();
    let mut lit = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|(_, c)| *c) == Some('{') => {
                chars.next();
                lit.push('{');
            }
            '}' if chars.peek().map(|(_, c)| *c) == Some('}') => {
                chars.next();
                lit.push('}');
            }
            '{' => {
                let rest = &s[i + 1..];
                let end = rest
                    .find('}')
                    .ok_or_else(|| format!("unclosed `{{` in template {s:?}"))?;
                let ph = Placeholder::parse(&rest[..end], params)?;
                if !lit.is_empty() {
                    segs.push(Segment::Lit(std::mem::take(&mut lit)));
                }
                segs.push(Segment::Ph(ph));
                // Skip the placeholder's characters and the closing brace.
                for _ in 0..=rest[..end].chars().count() {
                    chars.next();
                }
            }
            '}' => return Err(format!("stray `}}` in template {s:?} (write `}}}}`)")),
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        segs.push(Segment::Lit(lit));
    }
    Ok(segs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(t: &Value, params: &[&str], body: Value) -> Value {
        let params: Vec<String> = params.iter().map(|s| s.to_string()).collect();
        let tpl = Template::compile(t, &params).unwrap();
        let pp = vec![("id".to_string(), "42".to_string())];
        let q = vec![("page".to_string(), "3".to_string())];
        let mut n = 0;
        let mut uuid = || {
            n += 1;
            format!("u{n}")
        };
        let mut ctx = Ctx {
            path_params: &pp,
            query: &q,
            body: &body,
            seq: 7,
            service: "order",
            replica: 1,
            method: "POST",
            path: "/orders/42",
            uuid: &mut uuid,
        };
        tpl.render(&mut ctx)
    }

    #[test]
    fn echoes_and_mints() {
        let out = render(
            &json!({
                "id": "{uuid}",
                "other": "{uuid}",
                "order": "{path.id}",
                "label": "order-{path.id}-{seq}",
                "items": "{body.items}",
                "first": "{body.items.0.sku}",
                "missing": "{body.nope.deeper}",
                "page": "{query.page}",
                "absent": "{query.x}",
                "who": "{service}#{replica} {method} {path}",
                "n": 5,
                "braces": "{{literal}}",
            }),
            &["id"],
            json!({"items": [{"sku": "A1"}, {"sku": "B2"}]}),
        );
        assert_eq!(
            out,
            json!({
                "id": "u1",
                "other": "u2",
                "order": "42",
                "label": "order-42-7",
                "items": [{"sku": "A1"}, {"sku": "B2"}],
                "first": "A1",
                "missing": null,
                "page": "3",
                "absent": null,
                "who": "order#1 POST /orders/42",
                "n": 5,
                "braces": "{literal}",
            })
        );
    }

    #[test]
    fn whole_placeholder_keeps_json_type() {
        let out = render(
            &json!({"t": "{body.total}", "s": "sum {body.total}"}),
            &[],
            json!({"total": 12.5}),
        );
        assert_eq!(out, json!({"t": 12.5, "s": "sum 12.5"}));
    }

    proptest::proptest! {
        /// Arbitrary template text compiles or is refused; what compiles renders without panic,
        /// and text without braces renders as itself.
        #[test]
        fn any_text_is_safe(s in "\\PC{0,40}") {
            if Template::compile(&json!(s), &["id".to_string()]).is_ok() {
                let out = render(&json!(s), &["id"], json!({"a": 1}));
                if !s.contains(['{', '}']) {
                    proptest::prop_assert_eq!(out, json!(s));
                }
            }
        }
    }

    #[test]
    fn compile_errors() {
        for (t, needle) in [
            (json!("{nope}"), "unknown template placeholder"),
            (json!("{path.zip}"), "no {zip} segment"),
            (json!("{uuid"), "unclosed"),
            (json!("a } b"), "stray"),
            (json!("{body.a..b}"), "empty field"),
        ] {
            let err = Template::compile(&t, &["id".to_string()]).unwrap_err();
            assert!(err.contains(needle), "{t}: {err}");
        }
    }
}
