//! One client request: route it, then compose (run the plan and render the response) or proxy.

use crate::client::{Body, UpstreamClient};
use crate::error::{BoxError, CallError, CallErrorKind};
use crate::exec::{self, DEADLINE_HEADER};
use crate::proxy;
use crate::render::{RequestCtx, Scope};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use manifold_config::{Config, Route, RouteKind};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The header naming optional calls that failed (their results are `null`).
pub const PARTIAL_HEADER: &str = "manifold-partial";

/// Routes compiled for matching: path pattern → the routes (one per method) sharing it.
#[derive(Debug)]
pub(crate) struct Router {
    paths: matchit::Router<Vec<usize>>,
}

impl Router {
    pub(crate) fn new(config: &Config) -> Self {
        let mut paths = matchit::Router::new();
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, r) in config.routes.iter().enumerate() {
            match groups.iter_mut().find(|(p, _)| *p == r.path) {
                Some((_, v)) => v.push(i),
                None => groups.push((r.path.clone(), vec![i])),
            }
        }
        for (path, idx) in groups {
            // Conflicts were rejected when the config was compiled.
            if let Err(e) = paths.insert(path.clone(), idx) {
                tracing::error!(%path, error = %e, "route skipped");
            }
        }
        Router { paths }
    }
}

/// Everything a request needs, shared by all connections.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) router: Router,
    pub(crate) clients: Vec<Arc<UpstreamClient>>,
}

/// Build a small JSON response.
pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn error_response(status: StatusCode, kind: &str, message: impl Into<String>) -> Response<Body> {
    json_response(
        status,
        &serde_json::json!({"error": {"kind": kind, "message": message.into()}}),
    )
}

/// Handle one request. Never fails: every problem becomes an HTTP answer.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    Ok(route(&shared, req).await)
}

async fn route(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let matched = match shared.router.paths.at(&path) {
        Ok(m) => m,
        Err(_) => {
            return error_response(
                StatusCode::NOT_FOUND,
                "no_route",
                format!("no route matches {path}"),
            )
        }
    };
    let Some(&ri) = matched
        .value
        .iter()
        .find(|&&i| shared.config.routes[i].method == req.method())
    else {
        let allow: Vec<&str> = matched
            .value
            .iter()
            .map(|&i| shared.config.routes[i].method.as_str())
            .collect();
        let mut resp = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!(
                "{} is not allowed on {path}; allowed: {}",
                req.method(),
                allow.join(", ")
            ),
        );
        if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
            resp.headers_mut().insert(ALLOW, v);
        }
        return resp;
    };
    let route = &shared.config.routes[ri];
    let params: Vec<String> = route
        .params
        .iter()
        .map(|name| {
            matched
                .params
                .get(name)
                .map(|raw| {
                    percent_encoding::percent_decode_str(raw)
                        .decode_utf8_lossy()
                        .into_owned()
                })
                .unwrap_or_default()
        })
        .collect();
    let deadline = effective_deadline(route, req.headers());

    // Refuse an oversized body before reading any of it.
    let max_body = shared.config.server.max_body_bytes;
    if let Some(len) = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > max_body {
            let mut resp = error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is {len} bytes; the limit is {max_body}"),
            );
            resp.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
    }

    match &route.kind {
        RouteKind::Proxy { upstream, .. } => {
            proxy::forward(&shared.clients[*upstream], req, deadline, max_body).await
        }
        RouteKind::Compose(plan) => compose(shared, route, plan, params, req, deadline).await,
    }
}

/// The route's deadline, tightened by a deadline the caller sent us (another gateway upstream).
fn effective_deadline(route: &Route, headers: &http::HeaderMap) -> Option<Instant> {
    let now = Instant::now();
    let ours = route.deadline.map(|d| now + d);
    let theirs = headers
        .get(DEADLINE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|ms| now + Duration::from_millis(ms));
    match (ours, theirs) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn compose(
    shared: &Shared,
    route: &Route,
    plan: &manifold_config::Plan,
    params: Vec<String>,
    req: Request<Incoming>,
    deadline: Option<Instant>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let query = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let mut ctx = RequestCtx {
        params,
        query,
        headers: parts.headers,
        body: serde_json::Value::Null,
    };
    if plan.reads_request_body {
        let max = shared.config.server.max_body_bytes;
        let bytes = match Limited::new(body, max as usize).collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("the request body is larger than the limit of {max} bytes"),
                )
            }
            Err(e) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("could not read the request body: {e}"),
                )
            }
        };
        if !bytes.iter().all(u8::is_ascii_whitespace) {
            match serde_json::from_slice(&bytes) {
                Ok(v) => ctx.body = v,
                Err(e) => {
                    return error_response(
                        StatusCode::BAD_REQUEST,
                        "bad_json",
                        format!(
                            "route `{}` reads the request body as JSON, and it is not: {e}",
                            route.name
                        ),
                    )
                }
            }
        }
    } else {
        drop(body);
    }

    let outcome = match exec::execute(
        plan,
        &shared.clients,
        &ctx,
        deadline,
        shared.config.server.max_response_bytes,
    )
    .await
    {
        Ok(o) => o,
        Err(f) => return failure_response(&route.name, f.calls, f.error),
    };

    let scope = Scope {
        req: &ctx,
        results: &outcome.results,
    };
    let bytes = match serde_json::to_vec(&scope.json(&plan.response.body)) {
        Ok(b) => b,
        Err(e) => {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "render",
                format!("cannot render the response: {e}"),
            )
        }
    };
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = StatusCode::from_u16(plan.response.status).unwrap_or(StatusCode::OK);
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut text = String::new();
    for (name, tpl) in &plan.response.headers {
        text.clear();
        scope.render_text(tpl, &mut text);
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&text),
        ) {
            headers.insert(n, v);
        }
    }
    if !outcome.partial.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&outcome.partial.join(", ")) {
            headers.insert(HeaderName::from_static(PARTIAL_HEADER), v);
        }
    }
    resp
}

fn failure_response(route: &str, calls: Vec<String>, error: CallError) -> Response<Body> {
    let status = error.kind.client_status();
    tracing::warn!(route, calls = ?calls, kind = error.kind.as_str(), error = %error.message, "request failed");
    let mut body = serde_json::json!({
        "error": {
            "kind": error.kind.as_str(),
            "route": route,
            "call": calls.first(),
            "calls": calls,
            "message": error.message,
        }
    });
    if let CallErrorKind::Status(s) = error.kind {
        body["error"]["upstream_status"] = s.into();
    }
    json_response(status, &body)
}

/// Map an error from forwarding into an HTTP answer (used by the proxy).
pub(crate) fn call_error_response(error: CallError) -> Response<Body> {
    json_response(
        error.kind.client_status(),
        &serde_json::json!({"error": {"kind": error.kind.as_str(), "message": error.message}}),
    )
}

/// An error converted for a boxed body.
pub(crate) fn box_err<E: Into<BoxError>>(e: E) -> BoxError {
    e.into()
}
