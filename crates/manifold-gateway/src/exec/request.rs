//! A call's upstream request, rendered from its templates.

use crate::error::{CallError, CallErrorKind};
use crate::render::Scope;
use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use http::uri::PathAndQuery;
use http::{Request, Uri};
use manifold_config::Call;

/// Headers a call's request gets beyond its configured ones: `content-type`, `x-request-id`,
/// `traceparent`, `tracestate`, `host`, `via` and the deadline. The map is made with room for them:
/// grown from empty, its entries vector was reallocated as they were added (~500 instructions
/// a growth; made with room, a checkout costs 1,000–1,300 instructions less, in every
/// telemetry mode).
const ADDED_HEADERS: usize = 7;

/// The buffers one request's calls are rendered with, kept for the whole request.
///
/// Text is rendered into `text` and every part (the path and query, each header value, the
/// body) is split off `parts` as a shared `Bytes`. One request's calls share both: five calls
/// cost one scratch string and one parts buffer (with its sharing counter), where a pair per
/// call cost three allocations a call. The buffer lives until the last part split off it is
/// dropped: the request's calls' copies, all gone when the request is.
pub(crate) struct Scratch {
    text: String,
    parts: BytesMut,
    /// Whether the client's request has a `Via` for the calls to carry, once the first call
    /// looked (a lookup per call was ~90 instructions, five a checkout, for a header most
    /// requests lack).
    client_via: Option<bool>,
}

impl Scratch {
    /// For a request's calls: the parts buffer is allocated when the first call renders.
    pub(crate) fn new() -> Scratch {
        Scratch {
            text: String::with_capacity(TEXT_CAPACITY),
            parts: BytesMut::new(),
            client_via: None,
        }
    }

    /// For one call alone.
    fn one_call() -> Scratch {
        Scratch {
            text: String::with_capacity(TEXT_CAPACITY),
            parts: BytesMut::with_capacity(PARTS_LOW),
            client_via: None,
        }
    }
}

/// Room for a call's path or header value before the scratch string grows.
const TEXT_CAPACITY: usize = 64;

/// Room for the parts of a request's calls at first: a typical path, a few header values and a
/// small JSON body each, for a few calls. A larger request grows it (the parts split off before
/// keep the old buffer).
const PARTS_CAPACITY: usize = 2048;

/// Room a call needs left in the parts buffer before it renders, or the buffer is renewed first
/// (one allocation, instead of growing it a few bytes at a time).
const PARTS_LOW: usize = 512;

/// Render `call` into an origin-form request (path and query, headers, JSON body): the upstream
/// stack picks the endpoint and adds `Manifold-Deadline-Ms`. Copies of the request (an attempt
/// that may be retried sends one) share the parts.
pub(crate) fn build_request(call: &Call, scope: Scope<'_>) -> Result<Request<Bytes>, CallError> {
    build_request_in(call, scope, &mut Scratch::one_call())
}

/// [`build_request`] with the request's [`Scratch`].
pub(crate) fn build_request_in(
    call: &Call,
    scope: Scope<'_>,
    scratch: &mut Scratch,
) -> Result<Request<Bytes>, CallError> {
    let Scratch {
        text,
        parts,
        client_via,
    } = scratch;
    text.clear();
    scope.render_url_part(&call.path, text);
    crate::render::refuse_reshaping(&call.path, text)?;

    for (n, (k, v)) in call.query.iter().enumerate() {
        text.push(if n == 0 && !text.contains('?') {
            '?'
        } else {
            '&'
        });
        manifold_config::template::encode_path_value(k, text);
        text.push('=');
        scope.render_url_part(v, text);
    }
    // Split-off parts are never written again: the buffer's spare room is all that is reused.
    parts.clear();
    if parts.capacity() < PARTS_LOW {
        *parts = BytesMut::with_capacity(PARTS_CAPACITY);
    }
    let uri = PathAndQuery::from_maybe_shared(split_off(parts, text))
        .map(Uri::from)
        .map_err(|e| {
            CallError::new(
                CallErrorKind::Input,
                format!("the rendered URL is not valid: {e}"),
            )
        })?;
    let mut request = Request::new(Bytes::new());
    *request.headers_mut() = HeaderMap::with_capacity(call.headers.len() + ADDED_HEADERS);
    *request.method_mut() = call.method.clone();
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    for (n, (name, tpl)) in call.headers.iter().enumerate() {
        text.clear();
        scope.render_text(tpl, text);
        let value = HeaderValue::from_maybe_shared(split_off(parts, text)).map_err(|_| {
            crate::render::unsendable(
                &scope.header_culprits(tpl),
                &format!("header `{name}` rendered to a value that is not a valid header value"),
            )
        })?;
        // Names were validated and parsed at load; cloning one shares its buffer.
        let parsed = match call.header_names.get(n) {
            Some(h) => Ok(h.clone()),
            None => HeaderName::from_bytes(name.as_bytes()),
        };
        if let Ok(name) = parsed {
            headers.insert(name, value);
        }
    }
    // The path the client's request took, which the upstream stack extends with this gateway:
    // a call is a new request, but a loop through a composed route must count every pass (see
    // `crate::via`), or each pass would start again at one.
    let client = &scope.req.headers;
    if *client_via.get_or_insert_with(|| client.contains_key(http::header::VIA)) {
        crate::via::carry(client, headers);
    }
    if let Some(tpl) = &call.body {
        serde_json::to_writer((&mut *parts).writer(), &scope.json(tpl)).map_err(|e| {
            CallError::new(CallErrorKind::Input, format!("cannot render the body: {e}"))
        })?;
        headers
            .entry(CONTENT_TYPE)
            .or_insert(HeaderValue::from_static("application/json"));
        *request.body_mut() = parts.split().freeze();
    }
    Ok(request)
}

/// Headers an attempt adds to its copy of a call's request: `x-request-id`, `traceparent`,
/// `tracestate`, `host`, `via`, the deadline, and hyper's `content-length`.
const ATTEMPT_HEADERS: usize = 7;

/// A copy of `req` for one attempt (the retry policy keeps the original for a later one), with
/// room in its header map for the headers the attempt adds.
///
/// Why not `Request::clone`: a cloned `HeaderMap` keeps its index table's size, but its
/// entries vector is cloned to exactly its length, so the attempt's first added header
/// (`traceparent`, or the deadline without tracing) and then `host` or hyper's
/// `content-length` each reallocated it: two reallocations an attempt (callgrind: ~1,100
/// instructions), in every telemetry mode. Re-inserting the few configured headers costs less.
pub(crate) fn copy_for_attempt(req: &Request<Bytes>) -> Request<Bytes> {
    let mut headers = HeaderMap::with_capacity(req.headers().len() + ATTEMPT_HEADERS);
    // In the map's order, each name's values in theirs: the copy writes the same head.
    for (name, value) in req.headers() {
        headers.append(name.clone(), value.clone());
    }
    let mut copy = Request::new(req.body().clone());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = headers;
    *copy.extensions_mut() = req.extensions().clone();
    copy
}

/// `text` as the next part split off `parts`.
fn split_off(parts: &mut BytesMut, text: &str) -> Bytes {
    parts.extend_from_slice(text.as_bytes());
    parts.split().freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::RequestCtx;

    fn call(path: &str, header: Option<&str>, body: Option<&str>) -> Call {
        let toml = format!(
            r#"
            [upstreams.u]
            endpoints = ["http://127.0.0.1:1"]
            [routes.r]
            path = "/r"
              [[routes.r.calls]]
              name = "c"
              upstream = "u"
              method = "POST"
              path = "{path}"
              {}
              {}
            "#,
            header.map_or(String::new(), |h| format!(
                r#"headers = {{ "x-a" = "{h}" }}"#
            )),
            body.map_or(String::new(), |b| format!("body = {b}")),
        );
        let cfg = manifold_config::compile(std::path::Path::new("request-test.toml"), &toml)
            .unwrap_or_else(|e| panic!("{e}\n---\n{toml}"));
        match cfg.routes.into_iter().next().map(|r| r.kind) {
            Some(manifold_config::RouteKind::Compose(mut plan)) => plan.calls.remove(0),
            other => panic!("not a composed route: {other:?}"),
        }
    }

    /// An attempt's copy is the request, header for header and in order, with room for what
    /// the attempt adds.
    #[test]
    fn an_attempts_copy_is_the_request_with_room_for_its_headers() {
        let mut req = Request::new(Bytes::from_static(b"{}"));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = Uri::from_static("/a?b=c");
        let h = req.headers_mut();
        h.append("x-a", HeaderValue::from_static("1"));
        h.append(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.append("x-a", HeaderValue::from_static("2"));
        let copy = copy_for_attempt(&req);
        assert_eq!(copy.method(), req.method());
        assert_eq!(copy.uri(), req.uri());
        assert_eq!(copy.version(), req.version());
        assert_eq!(copy.body(), req.body());
        let pairs = |r: &Request<Bytes>| -> Vec<(String, Vec<u8>)> {
            r.headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect()
        };
        assert_eq!(pairs(&copy), pairs(&req));
        assert!(copy.headers().capacity() >= req.headers().len() + ATTEMPT_HEADERS);
    }

    #[test]
    fn calls_rendered_with_one_scratch_keep_their_own_parts() {
        let req = RequestCtx {
            query: vec![("q".into(), "v w".into())],
            ..Default::default()
        };
        let scope = Scope {
            req: &req,
            results: &[],
        };
        let first = call(
            "/a/{query.q}",
            Some("h-{query.q}"),
            Some(r#"{ k = "{query.q}" }"#),
        );
        let second = call("/b", None, None);
        let big_body = format!(r#"{{ k = "{}" }}"#, "x".repeat(3000));
        let big = call("/c", None, Some(&big_body));
        let mut scratch = Scratch::new();
        let a = build_request_in(&first, scope, &mut scratch).unwrap();
        let b = build_request_in(&second, scope, &mut scratch).unwrap();
        let c = build_request_in(&big, scope, &mut scratch).unwrap();
        let d = build_request_in(&first, scope, &mut scratch).unwrap();
        for r in [&a, &d] {
            assert_eq!(r.uri().path(), "/a/v%20w");
            assert_eq!(r.headers()["x-a"], "h-v w");
            assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
            assert_eq!(&r.body()[..], br#"{"k":"v w"}"#);
        }
        assert_eq!(b.uri().path(), "/b");
        assert!(b.body().is_empty() && !b.headers().contains_key(CONTENT_TYPE));
        assert_eq!(c.body().len(), 3000 + r#"{"k":""}"#.len());
        assert_eq!(build_request(&first, scope).unwrap().body(), a.body());
    }
}
