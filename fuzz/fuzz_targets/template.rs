//! Arbitrary request values and call results rendered into a fixed set of compiled templates
//! (call paths, query values, headers and JSON bodies), asserting the injection properties the
//! gateway promises (docs/configuration.md, "In a path or query it is percent-encoded"):
//!
//! - a value in a path cannot add `/`, `?`, `#`, a space or a control character, so the path
//!   keeps the number of segments its template has; a segment a value makes a dot segment
//!   (`.`, `..`, or those spelled with `%2e`, which WHATWG URL parsers and path-normalizing
//!   upstreams treat the same) that the template did not write is one the executor refuses;
//! - a value in a query cannot add `&`/`=` pairs, a fragment or a line;
//! - a header value that the gateway accepts holds no CR, LF or NUL;
//! - a JSON body is valid JSON with each value at the place its template puts it.
//!
//! The rendering is the gateway's own (`manifold_gateway::render`, which the executor uses),
//! over templates compiled by `manifold_config::compile` from a fixed config.
#![no_main]

use arbitrary::{Result, Unstructured};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

// The executor's dot-segment check, std-only: included as it is (as the `path` target does).
#[allow(dead_code)]
#[path = "../../crates/manifold-gateway/src/path.rs"]
mod path;
use manifold_config::template::{value_text, Segment, StrTemplate};
use manifold_config::{Call, RouteKind};
use manifold_gateway::render::{RequestCtx, Scope};
use serde_json::{json, Value};
use std::sync::OnceLock;

const CONFIG: &str = r#"
[upstreams.u]
endpoints = ["http://127.0.0.1:9/base"]

[routes.r]
method = "POST"
path = "/r/{a}/{b}"

  [[routes.r.calls]]
  name = "first"
  upstream = "u"
  method = "POST"
  path = "/x/{path.a}/y/{request.body.v}/{query.q}.{header.x-h}/.{path.b}/{path.a}{query.q}/z"
  query = { k = "{path.b}", m = "pre-{request.body.v}-post", n = "{query.q}" }
  headers = { x-one = "{request.body.v}", x-two = "tok {header.x-h}", x-three = "{path.a}" }
  body = { whole = "{request.body.v}", text = "id-{request.body.v}", nested = ["{path.a}", { k = "{query.q}" }], lit = 1 }

  [[routes.r.calls]]
  name = "second"
  upstream = "u"
  method = "PUT"
  path = "/s/{first.v}/{first}/{first.a.0}/"
  query = { p = "{first.v}" }
  headers = { x-four = "{first.v}", x-five = "{first}" }
  body = "{first}"
"#;

fn calls() -> &'static [Call] {
    static CALLS: OnceLock<Vec<Call>> = OnceLock::new();
    CALLS.get_or_init(|| {
        let config = manifold_config::compile(std::path::Path::new("fuzz.toml"), CONFIG)
            .unwrap_or_else(|e| panic!("the fuzz config does not compile: {e:?}"));
        match &config.routes[0].kind {
            RouteKind::Compose(plan) => plan.calls.clone(),
            RouteKind::Proxy { .. } => panic!("the fuzz route is not a composed route"),
        }
    })
}

/// An arbitrary JSON value, at most `depth` levels deep.
fn value(u: &mut Unstructured<'_>, depth: u32) -> Result<Value> {
    let pick = if depth == 0 {
        u.int_in_range(0..=5)?
    } else {
        u.int_in_range(0..=7)?
    };
    Ok(match pick {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => json!(u.arbitrary::<i64>()?),
        3 => json!(u.arbitrary::<u64>()?),
        4 => serde_json::Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
        5 => Value::String(text(u)?),
        6 => {
            let n = u.int_in_range(0..=4)?;
            Value::Array((0..n).map(|_| value(u, depth - 1)).collect::<Result<_>>()?)
        }
        _ => {
            let n = u.int_in_range(0..=4)?;
            let mut map = serde_json::Map::new();
            for _ in 0..n {
                // Keys the templates read, often.
                let key = match u.int_in_range(0..=3)? {
                    0 => "v".to_owned(),
                    1 => "a".to_owned(),
                    2 => "0".to_owned(),
                    _ => text(u)?,
                };
                map.insert(key, value(u, depth - 1)?);
            }
            Value::Object(map)
        }
    })
}

/// Text biased toward what reshapes URLs and header lines.
fn text(u: &mut Unstructured<'_>) -> Result<String> {
    const NASTY: &[&str] = &[
        ".", "..", "/", "\\", "?", "#", "&", "=", "%", "%2e", "%2E", "%2f", ";", " ", "\r", "\n",
        "\0", "\t", "+", "é", "\u{2028}", "{", "}",
    ];
    let n = u.int_in_range(0..=6)?;
    let mut out = String::new();
    for _ in 0..n {
        if u.ratio(1, 2)? {
            out.push_str(u.choose(NASTY)?);
        } else {
            out.push_str(u.arbitrary::<&str>()?);
        }
    }
    Ok(out)
}

/// The literal text of a template with every value left out.
fn literal(t: &StrTemplate) -> String {
    t.segments
        .iter()
        .map(|s| match s {
            Segment::Lit(l) => l.as_str(),
            Segment::Expr(_) => "",
        })
        .collect()
}

/// `.`, `..` and their spellings with `%2e` (WHATWG URL, "single-dot" / "double-dot" segment).
fn is_dot_segment(seg: &str) -> bool {
    let s = seg.to_ascii_lowercase();
    matches!(s.as_str(), "." | "%2e" | ".." | ".%2e" | "%2e." | "%2e%2e")
}

fn check_url_chars(what: &str, rendered: &str) {
    for c in rendered.chars() {
        assert!(
            c.is_ascii_graphic() && c != '#',
            "{what}: rendered {rendered:?} holds {c:?}"
        );
    }
}

fn check_path(call: &Call, scope: &Scope<'_>) {
    // As the executor builds it: the endpoint's base path, then the rendered path.
    let mut out = String::from("http://127.0.0.1:9/base");
    let start = out.len();
    scope.render_url_part(&call.path, &mut out);
    let rendered = &out[start..];
    let lit = literal(&call.path);
    check_url_chars("path", rendered);
    assert!(!rendered.contains('?'), "path {rendered:?} gained a query");
    let segs: Vec<&str> = rendered.split('/').collect();
    let lit_segs: Vec<&str> = lit.split('/').collect();
    assert_eq!(
        segs.len(),
        lit_segs.len(),
        "path {rendered:?} has another segment count than its template {lit:?}"
    );
    // A value may render as a dot segment (`..` is `%2E%2E`, which URL parsers read as `..`):
    // then the executor must refuse the call before sending it (`path::has_dot_segment`, the
    // check `exec::build_request` runs on every rendered path).
    for (seg, lit_seg) in segs.iter().zip(&lit_segs) {
        assert!(
            !is_dot_segment(seg)
                || is_dot_segment(lit_seg) && seg == lit_seg
                || path::has_dot_segment(rendered),
            "path {rendered:?}: a value made segment {seg:?} a dot segment the executor would send"
        );
    }
    assert!(
        out.parse::<http::Uri>().is_ok(),
        "rendered URL {out:?} does not parse"
    );
}

fn check_query(call: &Call, scope: &Scope<'_>) {
    // As the executor builds it: `?k=v&k=v`, keys encoded, values rendered.
    let mut out = String::from("http://127.0.0.1:9/base/x");
    for (n, (k, v)) in call.query.iter().enumerate() {
        out.push(if n == 0 { '?' } else { '&' });
        manifold_config::template::encode_path_value(k, &mut out);
        out.push('=');
        let start = out.len();
        scope.render_url_part(v, &mut out);
        let rendered = &out[start..];
        check_url_chars("query", rendered);
        let lit = literal(v);
        for c in ['&', '=', '?', '/'] {
            assert_eq!(
                rendered.matches(c).count(),
                lit.matches(c).count(),
                "query value {rendered:?} (template {lit:?}) gained a {c:?}"
            );
        }
    }
    let uri: http::Uri = out.parse().unwrap_or_else(|e| panic!("{out:?}: {e}"));
    let pairs = uri.query().map_or(0, |q| q.split('&').count());
    assert_eq!(pairs, call.query.len(), "{out:?}: pairs added or lost");
}

fn check_headers(call: &Call, scope: &Scope<'_>) {
    for (name, tpl) in &call.headers {
        let mut text = String::new();
        scope.render_text(tpl, &mut text);
        // The executor's gate: a value that is not a header value fails the call.
        if HeaderValue::from_str(&text).is_ok() {
            assert!(
                !text.contains(['\r', '\n', '\0']),
                "header {name}: {text:?} accepted with a line break or NUL"
            );
        }
    }
}

fn check_body(call: &Call, scope: &Scope<'_>, expect: impl Fn(&Value)) {
    let Some(tpl) = &call.body else { return };
    let bytes = serde_json::to_vec(&scope.json(tpl)).expect("a rendered body serializes");
    let parsed: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "body {:?} is not JSON: {e}",
            String::from_utf8_lossy(&bytes)
        )
    });
    expect(&parsed);
}

/// `v` after a trip through JSON text, as the upstream would read it (floats may move by an ulp
/// in serde_json's fast parser, the same way for the expectation and the body).
fn reparsed(v: &Value) -> Value {
    serde_json::from_slice(&serde_json::to_vec(v).expect("serializes")).expect("parses")
}

/// Two path parameters, a query value, a header value, the body's `v` and `first`'s result.
fn inputs(u: &mut Unstructured<'_>) -> Result<(String, String, String, String, Value, Value)> {
    Ok((
        text(u)?,
        text(u)?,
        text(u)?,
        text(u)?,
        value(u, 3)?,
        value(u, 3)?,
    ))
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok((a, b, q, h, body, first)) = inputs(&mut u) else {
        return;
    };
    let mut headers = HeaderMap::new();
    // A client can only send what is a header value.
    if let Ok(v) = HeaderValue::from_str(&h) {
        headers.insert("x-h", v);
    }
    let req = RequestCtx {
        params: vec![a.clone(), b],
        query: vec![("q".into(), q.clone())],
        headers,
        body: json!({ "v": body }),
    };
    let results = vec![Some(first.clone()), None];
    let scope = Scope {
        req: &req,
        results: &results,
    };
    let calls = calls();
    for call in calls {
        check_path(call, &scope);
        check_query(call, &scope);
        check_headers(call, &scope);
    }
    let mut v_text = String::new();
    value_text(Some(&body), &mut v_text);
    check_body(&calls[0], &scope, |got| {
        assert_eq!(
            got["whole"],
            reparsed(&body),
            "whole value moved or changed"
        );
        assert_eq!(got["text"], json!(format!("id-{v_text}")), "text value");
        assert_eq!(got["nested"], json!([a, { "k": q }]), "nested values");
        assert_eq!(got["lit"], json!(1), "literal");
        assert_eq!(got.as_object().map(|o| o.len()), Some(4), "fields added");
    });
    check_body(&calls[1], &scope, |got| {
        assert_eq!(*got, reparsed(&first), "a whole-value body is the value");
    });
});
