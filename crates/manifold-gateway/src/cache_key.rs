//! Cache keys built from what decides the answer, so a cached answer only ever reaches a request
//! that would have sent the upstream the same request.
//!
//! A call's key is `READABLE req=HASH`. `READABLE` is `{upstream} {METHOD} {path?query}` (or the
//! rendered `key` template): what purges match on. `HASH` (SHA-256, 128 bits, never the values
//! themselves) covers the call's whole rendered request (upstream, method, path and query, every
//! header the call sends with its rendered value, the rendered body) and every request value its
//! templates read, each with its presence (see [`manifold_config::cache_key`]): so results of
//! other calls count through the request they render into, and an absent header never shares
//! an entry with an empty one. The ` req=` part is left out only when the readable part already
//! is the whole request (no headers, no body, no value read but path parameters and call
//! results).
//!
//! A route's key is `route:NAME {METHOD} {path?query}` (or its `key`) plus ` req=HASH` over its
//! `vary` headers and the request values its calls and response read; a proxy route's also over
//! the host and scheme it forwards (`X-Forwarded-Host`, `-Proto`). A proxy route forwards
//! every header, which no inferred list covers: requests carrying `Authorization` or `Cookie`
//! skip its cache ([`route_bypass`]) unless `vary` names them or the route is `shared`, and an
//! answer whose `Vary` names a header the key does not cover is not stored ([`vary_covered`]).

use crate::render::{RequestCtx, Scope};
use http::{HeaderMap, Request};
use manifold_config::cache_key::{KeyInput, CREDENTIAL_HEADERS};
use manifold_config::{CachePolicySpec, Call, Route, RouteKind};
use std::borrow::Cow;

/// The key of a cached call whose request `request` was rendered in `scope`. `pq` is the
/// path and query after the endpoint's base path.
pub(crate) fn call_key<B>(
    call: &Call,
    spec: &CachePolicySpec,
    upstream: &str,
    request: &Request<B>,
    pq: &str,
    scope: Scope<'_>,
) -> String {
    let mut key = match &spec.key {
        Some(tpl) => {
            let mut k = String::with_capacity(32);
            scope.render_text(tpl, &mut k);
            k
        }
        None => manifold_cache::default_key(upstream, call.method.as_str(), pq, &[]),
    };
    let reads_values = spec
        .key_inputs
        .iter()
        .any(|i| !matches!(i, KeyInput::Path { .. }));
    if spec.key.is_none() && call.headers.is_empty() && call.body.is_none() && !reads_values {
        return key;
    }
    let mut parts: Vec<Option<Cow<'_, [u8]>>> = Vec::with_capacity(8 + call.headers.len());
    parts.push(Some(Cow::Borrowed(upstream.as_bytes())));
    parts.push(Some(Cow::Borrowed(call.method.as_str().as_bytes())));
    parts.push(Some(Cow::Borrowed(pq.as_bytes())));
    let headers = request.headers();
    for (name, _) in &call.headers {
        parts.push(all_values(headers, name));
    }
    parts.push(all_values(headers, http::header::CONTENT_TYPE.as_str()));
    // The body as sent: rendered again here rather than read back from the request, whose body
    // is a stream by now. Rendering is deterministic for one scope.
    parts.push(
        call.body
            .as_ref()
            .map(|tpl| Cow::Owned(serde_json::to_vec(&scope.json(tpl)).unwrap_or_default())),
    );
    let req = scope.req;
    let view = View {
        params: &req.params,
        query: &req.query,
        headers: &req.headers,
        body: &req.body,
    };
    push_inputs(&mut parts, &spec.key_inputs, &view);
    finish(&mut key, &parts);
    key
}

/// The key of a cached route for a request: its method, path and query as the client sent
/// them, its path parameters, query string and headers. (The query is parsed and the headers
/// copied only when the key reads them.)
///
/// `forwarded`: for a proxy route, what the upstream is told of the request's host and scheme
/// ([`crate::forwarded::host_and_proto`]), always part of its key.
#[allow(clippy::too_many_arguments)]
pub(crate) fn route_key(
    route: &Route,
    spec: &CachePolicySpec,
    method: &str,
    pq: &str,
    params: &[String],
    query: Option<&str>,
    headers: &HeaderMap,
    forwarded: Option<&[u8]>,
) -> String {
    let reads_query = spec.key.is_some()
        || spec
            .key_inputs
            .iter()
            .any(|i| matches!(i, KeyInput::Query { .. }));
    let query: Vec<(String, String)> = match query {
        Some(q) if reads_query => form_urlencoded::parse(q.as_bytes()).into_owned().collect(),
        _ => Vec::new(),
    };
    let mut key = match &spec.key {
        Some(tpl) => {
            let req = RequestCtx {
                params: params.to_vec(),
                query: query.clone(),
                headers: headers.clone(),
                body: serde_json::Value::Null,
            };
            let scope = Scope {
                req: &req,
                results: &[],
            };
            let mut k = String::new();
            scope.render_text(tpl, &mut k);
            k
        }
        None => manifold_cache::default_key(&format!("route:{}", route.name), method, pq, &[]),
    };
    let reads_values = spec
        .key_inputs
        .iter()
        .any(|i| !matches!(i, KeyInput::Path { .. }));
    if spec.key.is_none() && spec.vary.is_empty() && !reads_values && forwarded.is_none() {
        return key;
    }
    let mut parts: Vec<Option<Cow<'_, [u8]>>> = Vec::with_capacity(5 + spec.vary.len());
    parts.push(Some(Cow::Borrowed(method.as_bytes())));
    parts.push(Some(Cow::Borrowed(pq.as_bytes())));
    parts.push(forwarded.map(Cow::Borrowed));
    for name in &spec.vary {
        parts.push(all_values(headers, name));
    }
    let view = View {
        params,
        query: &query,
        headers,
        body: &serde_json::Value::Null,
    };
    push_inputs(&mut parts, &spec.key_inputs, &view);
    finish(&mut key, &parts);
    key
}

/// Whether a request must skip a route's cache: a proxy route forwards every header, so a
/// request carrying credentials (`Authorization`, `Cookie`) is answered for that user alone,
/// unless the route keys on them (`vary`) or says its answers are the same for all (`shared`).
pub(crate) fn route_bypass(route: &Route, spec: &CachePolicySpec, headers: &HeaderMap) -> bool {
    if spec.shared || !matches!(route.kind, RouteKind::Proxy { .. }) {
        return false;
    }
    CREDENTIAL_HEADERS
        .iter()
        .any(|h| headers.contains_key(*h) && !spec.vary.iter().any(|v| v == h))
}

/// Whether a proxy route may store an answer with these headers: its `Vary` (RFC 9111 §4.1)
/// names only headers the key covers (the route's `vary`, and `Host`, which the key reads
/// through what is forwarded). `Vary: *`, or any other name, means the upstream chose between
/// answers on something the key does not hold; stored, one client's answer would be served to
/// clients who sent otherwise (a gzip'd body to one that cannot read it).
pub(crate) fn vary_covered(spec: &CachePolicySpec, answer: &HeaderMap) -> bool {
    answer
        .get_all(http::header::VARY)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|name| !name.is_empty())
        .all(|name| {
            name.eq_ignore_ascii_case(b"host")
                || spec
                    .vary
                    .iter()
                    .any(|v| v.as_bytes().eq_ignore_ascii_case(name))
        })
}

fn finish(key: &mut String, parts: &[Option<Cow<'_, [u8]>>]) {
    let borrowed: Vec<manifold_cache::KeyPart<'_>> = parts.iter().map(|p| p.as_deref()).collect();
    manifold_cache::append_hash(key, "req", &borrowed);
}

/// Every value of a header, length-prefixed (so `a, b` as one value differs from two values),
/// or `None` when the header is absent.
fn all_values<'a>(headers: &'a HeaderMap, name: &str) -> Option<Cow<'a, [u8]>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(Cow::Borrowed(first.as_bytes()));
    };
    let mut out = Vec::new();
    for v in [first, second].into_iter().chain(values) {
        out.extend_from_slice(&(v.len() as u64).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    // One value and several never collide: a lone value is its bytes, several carry a marker
    // byte no header value contains.
    out.push(0);
    Some(Cow::Owned(out))
}

/// The request values a key may read.
struct View<'a> {
    params: &'a [String],
    query: &'a [(String, String)],
    headers: &'a HeaderMap,
    body: &'a serde_json::Value,
}

fn push_inputs<'a>(parts: &mut Vec<Option<Cow<'a, [u8]>>>, inputs: &[KeyInput], req: &View<'a>) {
    for input in inputs {
        parts.push(match input {
            KeyInput::Path { index, .. } => {
                req.params.get(*index).map(|p| Cow::Borrowed(p.as_bytes()))
            }
            KeyInput::Query { name } => {
                let mut out = Vec::new();
                let mut any = false;
                for (_, v) in req.query.iter().filter(|(k, _)| k == name) {
                    any = true;
                    out.extend_from_slice(&(v.len() as u64).to_be_bytes());
                    out.extend_from_slice(v.as_bytes());
                }
                any.then_some(Cow::Owned(out))
            }
            KeyInput::Header { name } => all_values(req.headers, name),
            KeyInput::Body { steps } => {
                walk(req.body, steps).map(|v| Cow::Owned(serde_json::to_vec(v).unwrap_or_default()))
            }
        });
    }
}

/// The value at `steps` inside `root`, as templates read it (`None`: absent).
fn walk<'v>(
    root: &'v serde_json::Value,
    steps: &[manifold_config::template::Step],
) -> Option<&'v serde_json::Value> {
    let mut cur = root;
    for step in steps {
        cur = match cur {
            serde_json::Value::Object(map) => map.get(&step.key)?,
            serde_json::Value::Array(items) => items.get(step.index?)?,
            _ => return None,
        };
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// A proxy route's policy with `vary = ["accept-language"]`.
    fn varying_spec() -> CachePolicySpec {
        let toml =
            "[upstreams.u]\nendpoints = [\"http://127.0.0.1:1\"]\n[routes.r]\npath = \"/r\"\n\
                    proxy = \"u\"\ncache = { ttl = \"60s\", vary = [\"accept-language\"] }\n";
        let config =
            manifold_config::compile(std::path::Path::new("t.toml"), toml).expect("config");
        config.routes[0].cache.clone().expect("a cached route")
    }

    /// The upstream's `Vary` is its input: odd spellings, empty items, `*`, bytes that are not
    /// text. Only names the key holds (in any case) let an answer be stored.
    #[test]
    fn vary_is_covered_only_by_names_the_key_holds() {
        let spec = varying_spec();
        let covered = |values: &[&[u8]]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(
                    http::header::VARY,
                    HeaderValue::from_bytes(v).expect("value"),
                );
            }
            vary_covered(&spec, &h)
        };
        assert!(covered(&[]));
        assert!(covered(&[b"Accept-Language"]));
        assert!(covered(&[b" ACCEPT-LANGUAGE , host ,, "]));
        assert!(covered(&[b",", b""]));
        assert!(!covered(&[b"*"]));
        assert!(!covered(&[b"accept-language, accept-encoding"]));
        assert!(!covered(&[b"accept-language", b"cookie"]));
        assert!(!covered(&[b"accept-language\xe9"]));
        assert!(!covered(&[&[b'x'; 8192]]));
    }

    #[test]
    fn header_values_keep_absent_empty_one_and_several_apart() {
        let mut one = HeaderMap::new();
        one.insert("cookie", HeaderValue::from_static("a=1; b=2"));
        let mut split = HeaderMap::new();
        // HTTP/2 clients split cookies into several fields.
        split.append("cookie", HeaderValue::from_static("a=1"));
        split.append("cookie", HeaderValue::from_static("b=2"));
        let mut other = HeaderMap::new();
        other.append("cookie", HeaderValue::from_static("a=1"));
        other.append("cookie", HeaderValue::from_static("b=3"));
        let mut empty = HeaderMap::new();
        empty.insert("cookie", HeaderValue::from_static(""));
        let none = HeaderMap::new();
        let got: Vec<_> = [&one, &split, &other, &empty, &none]
            .iter()
            .map(|h| all_values(h, "cookie"))
            .collect();
        for (i, a) in got.iter().enumerate() {
            for b in &got[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(got[4], None);
        assert_eq!(got[3].as_deref(), Some(&b""[..]));
    }

    #[test]
    fn body_fields_are_read_as_templates_read_them() {
        let body = serde_json::json!({"user": {"id": 7}, "items": [1, 2]});
        let step = |k: &str| manifold_config::template::Step {
            key: k.into(),
            index: k.parse().ok(),
        };
        assert_eq!(
            walk(&body, &[step("user"), step("id")]),
            Some(&serde_json::json!(7))
        );
        assert_eq!(
            walk(&body, &[step("items"), step("1")]),
            Some(&serde_json::json!(2))
        );
        assert_eq!(walk(&body, &[step("user"), step("name")]), None);
    }
}
