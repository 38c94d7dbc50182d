//! Name resolution for a route's templates: upstreams by name ([`RouteCtx`]), and the request's
//! sources and the route's calls ([`Resolver`]), which also records what each template reads.

use super::values::list_or_none;
use crate::error::{Diagnostics, ErrorKind};
use crate::model::*;
use crate::spanned::Spanned;
use crate::template::{self, Expr, JsonTemplate, RawSegment, Segment, Source, StrTemplate};
use std::collections::HashMap;

pub(crate) struct RouteCtx<'a> {
    pub(super) upstreams: &'a [Upstream],
    pub(super) upstream_index: &'a HashMap<&'a str, usize>,
    pub(super) declared: &'a [&'a str],
    /// Whether `[cache] redis` is set (a policy's `lock` needs it).
    pub(super) redis: bool,
    /// Whether there is an `[events]` section (publish calls need it).
    pub(crate) events: bool,
    /// `server.escaped_slashes`: proxy routes' default.
    pub(super) escaped_slashes: EscapedSlashes,
}

impl RouteCtx<'_> {
    pub(crate) fn resolve_upstream(
        &self,
        name: &Spanned<String>,
        owner: &str,
        diag: &mut Diagnostics<'_>,
    ) -> Option<usize> {
        match self.upstream_index.get(name.get_ref().as_str()) {
            Some(&i) => Some(i),
            None => {
                if !self.declared.contains(&name.get_ref().as_str()) {
                    let known: Vec<&str> = self.upstreams.iter().map(|u| u.name.as_str()).collect();
                    diag.push(
                        ErrorKind::UnknownName,
                        name.span(),
                        format!(
                            "{owner}: unknown upstream `{}` (declared: {})",
                            name.get_ref(),
                            list_or_none(&known)
                        ),
                    );
                }
                None
            }
        }
    }
}

/// What a route's templates read of the request as text: `{query.NAME}` parameters and
/// `{header.NAME}` headers (lower case). The gateway judges the encoding of these values only
/// (text that is not UTF-8 is the client's 400), so a value no template reads refuses nothing.
#[derive(Debug, Default)]
pub(crate) struct TextReads {
    pub(crate) query: Vec<String>,
    pub(crate) headers: Vec<String>,
}

impl TextReads {
    pub(crate) fn extend(&mut self, other: TextReads) {
        self.query.extend(other.query);
        self.headers.extend(other.headers);
    }

    /// Sorted and without repeats, as the gateway searches them.
    pub(crate) fn finish(mut self) -> Self {
        for list in [&mut self.query, &mut self.headers] {
            list.sort_unstable();
            list.dedup();
        }
        self
    }
}

/// Resolves references in one route: request sources and call names.
pub(crate) struct Resolver<'a> {
    pub(super) route: &'a str,
    pub(super) params: &'a [String],
    pub(super) calls: &'a HashMap<String, usize>,
    /// Calls referenced by the template being compiled.
    pub(super) refs: Vec<usize>,
    pub(super) reads_body: bool,
    /// The query parameters and headers the templates compiled so far read.
    pub(super) reads: TextReads,
    /// Inside an `on_done` / `on_dead` hook: `{task.*}` reads the settled task (see
    /// `crate::hooks`); elsewhere `task` is an ordinary call name.
    pub(crate) task: Option<crate::queue::HookKind>,
}

impl<'a> Resolver<'a> {
    /// A resolver for `route`'s templates: `params` are its path's parameters, `calls` its calls
    /// by name (empty where only the request may be read).
    pub(super) fn new(
        route: &'a str,
        params: &'a [String],
        calls: &'a HashMap<String, usize>,
    ) -> Self {
        Resolver {
            route,
            params,
            calls,
            refs: Vec::new(),
            reads_body: false,
            reads: TextReads::default(),
            task: None,
        }
    }

    fn resolve(&mut self, r: &template::RawRef) -> Result<Expr, String> {
        let root = r.parts[0].as_str();
        let rest = &r.parts[1..];
        if root == "task" {
            if let Some(kind) = self.task {
                return crate::hooks::task_ref(kind, r);
            }
        }
        let single = |kind: &str| -> Result<String, String> {
            match rest {
                [name] => Ok(name.clone()),
                [] => Err(format!(
                    "`{{{}}}` needs a name, like `{{{kind}.NAME}}`",
                    r.text
                )),
                _ => Err(format!(
                    "`{{{}}}`: {kind} values are text and have no fields",
                    r.text
                )),
            }
        };
        let source = match root {
            "path" => {
                let name = single("path")?;
                let index = self.params.iter().position(|p| *p == name).ok_or_else(|| {
                    format!(
                        "`{{{}}}`: the route's path has no parameter `{name}` (it has: {})",
                        r.text,
                        list_or_none(&self.params.iter().map(String::as_str).collect::<Vec<_>>())
                    )
                })?;
                return Ok(Expr {
                    source: Source::Path { index, name },
                    steps: Vec::new(),
                });
            }
            "query" => {
                let name = single("query")?;
                if !self.reads.query.contains(&name) {
                    self.reads.query.push(name.clone());
                }
                return Ok(Expr {
                    source: Source::Query { name },
                    steps: Vec::new(),
                });
            }
            "header" => {
                let name = single("header")?.to_ascii_lowercase();
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(format!("`{{{}}}`: `{name}` is not a header name", r.text));
                }
                if !self.reads.headers.contains(&name) {
                    self.reads.headers.push(name.clone());
                }
                return Ok(Expr {
                    source: Source::Header { name },
                    steps: Vec::new(),
                });
            }
            "request" => {
                if rest.first().map(String::as_str) != Some("body") {
                    return Err(format!(
                        "`{{{}}}`: the request's sources are `request.body`, `path.NAME`, `query.NAME` and `header.NAME`",
                        r.text
                    ));
                }
                self.reads_body = true;
                return Ok(Expr {
                    source: Source::RequestBody,
                    steps: template::steps(&rest[1..]),
                });
            }
            call => call,
        };
        match self.calls.get(source) {
            Some(&index) => {
                self.refs.push(index);
                Ok(Expr {
                    source: Source::Call {
                        index,
                        name: source.to_owned(),
                    },
                    steps: template::steps(rest),
                })
            }
            None => {
                let mut names: Vec<&str> = self.calls.keys().map(String::as_str).collect();
                names.sort_unstable();
                Err(format!(
                    "route `{}`: `{{{}}}` refers to an unknown call `{source}` (calls: {}; request sources: path, query, header, request.body)",
                    self.route,
                    r.text,
                    list_or_none(&names)
                ))
            }
        }
    }

    pub(crate) fn str_template(&mut self, text: &str) -> Result<StrTemplate, String> {
        let raw = template::parse(text).map_err(|e| e.message)?;
        let mut segments = Vec::with_capacity(raw.len());
        for seg in raw {
            segments.push(match seg {
                RawSegment::Lit(l) => Segment::Lit(l),
                RawSegment::Ref(r) => Segment::Expr(self.resolve(&r)?),
            });
        }
        Ok(StrTemplate { segments })
    }

    pub(crate) fn json_template(&mut self, value: &toml::Value) -> Result<JsonTemplate, String> {
        Ok(match value {
            toml::Value::String(s) => {
                let t = self.str_template(s)?;
                if let Some(e) = t.as_single_expr() {
                    JsonTemplate::Value(e.clone())
                } else if let Some(lit) = t.as_literal() {
                    JsonTemplate::Literal(serde_json::Value::String(lit))
                } else {
                    JsonTemplate::Text(t)
                }
            }
            toml::Value::Integer(i) => JsonTemplate::Literal((*i).into()),
            toml::Value::Float(f) => JsonTemplate::Literal(
                serde_json::Number::from_f64(*f)
                    .map(serde_json::Value::Number)
                    .ok_or_else(|| format!("{f} is not a JSON number"))?,
            ),
            toml::Value::Boolean(b) => JsonTemplate::Literal((*b).into()),
            toml::Value::Datetime(d) => JsonTemplate::Literal(d.to_string().into()),
            toml::Value::Array(items) => {
                let items = items
                    .iter()
                    .map(|i| self.json_template(i))
                    .collect::<Result<Vec<_>, _>>()?;
                if items.iter().all(|i| matches!(i, JsonTemplate::Literal(_))) {
                    JsonTemplate::Literal(serde_json::Value::Array(
                        items
                            .into_iter()
                            .filter_map(|i| match i {
                                JsonTemplate::Literal(v) => Some(v),
                                _ => None,
                            })
                            .collect(),
                    ))
                } else {
                    JsonTemplate::Array(items)
                }
            }
            toml::Value::Table(t) => {
                let fields = t
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), self.json_template(v)?)))
                    .collect::<Result<Vec<_>, String>>()?;
                JsonTemplate::Object(fields)
            }
        })
    }
}
