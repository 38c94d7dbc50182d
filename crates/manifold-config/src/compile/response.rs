//! A composing route's response: its status, headers and body templates, by default an object
//! of every sync call's answer.

use super::resolve::Resolver;
use crate::error::{Diagnostics, ErrorKind};
use crate::model::*;
use crate::spanned::Spanned;
use crate::template::{Expr, JsonTemplate, Source};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResponse {
    status: Option<Spanned<u16>>,
    headers: Option<BTreeMap<String, Spanned<String>>>,
    /// Any JSON value; strings in it are templates.
    #[schemars(with = "Option<serde_json::Value>")]
    body: Option<Spanned<toml::Value>>,
}

/// Compile a route's response over its compiled `calls`; also says whether it reads the request
/// body, and which query parameters and headers it reads.
pub(super) fn compile_response(
    route: &str,
    params: &[String],
    index: &HashMap<String, usize>,
    calls: &[Call],
    raw_response: Option<&Spanned<RawResponse>>,
    diag: &mut Diagnostics<'_>,
) -> (ResponsePlan, bool, super::resolve::TextReads) {
    let mut res = Resolver::new(route, params, index);
    let mut response = ResponsePlan {
        status: 200,
        headers: Vec::new(),
        body: JsonTemplate::Object(
            calls
                .iter()
                .enumerate()
                .filter(|(_, c)| c.mode == Mode::Sync)
                .map(|(i, c)| {
                    (
                        c.name.clone(),
                        JsonTemplate::Value(Expr {
                            source: Source::Call {
                                index: i,
                                name: c.name.clone(),
                            },
                            steps: Vec::new(),
                        }),
                    )
                })
                .collect(),
        ),
    };
    if let Some(raw) = raw_response {
        let raw = raw.get_ref();
        if let Some(s) = &raw.status {
            if !(100..=599).contains(s.get_ref()) {
                diag.push(
                    ErrorKind::Value,
                    s.span(),
                    format!(
                        "route `{route}`: response status {} is not an HTTP status",
                        s.get_ref()
                    ),
                );
            } else {
                response.status = *s.get_ref();
            }
        }
        if let Some(h) = &raw.headers {
            for (k, v) in h {
                let lower = k.to_ascii_lowercase();
                if http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
                    diag.push(
                        ErrorKind::Value,
                        v.span(),
                        format!("route `{route}`: `{k}` is not a header name"),
                    );
                    continue;
                }
                if let Some(why) = crate::upstream::reserved_header(&lower) {
                    diag.push(
                        ErrorKind::Value,
                        v.span(),
                        format!("route `{route}`: response header `{k}` cannot be set: {why}"),
                    );
                    continue;
                }
                match res.str_template(v.get_ref()) {
                    Ok(t) => response.headers.push((lower, t)),
                    Err(msg) => diag.push(
                        ErrorKind::UnknownName,
                        v.span(),
                        format!("route `{route}`, response header `{k}`: {msg}"),
                    ),
                }
            }
        }
        if let Some(b) = &raw.body {
            match res.json_template(b.get_ref()) {
                Ok(t) => response.body = t,
                Err(msg) => diag.push(
                    ErrorKind::UnknownName,
                    b.span(),
                    format!("route `{route}`, response body: {msg}"),
                ),
            }
        }
    }
    (response, res.reads_body, res.reads)
}
