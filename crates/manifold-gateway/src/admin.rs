//! The admin listener: health, readiness, the running plans and the cache (`GET /cache` for its
//! counters, `DELETE /cache?prefix=…` to purge both tiers). It listens on its own address,
//! loopback by default, so operational data never shares the public port. Who may use which
//! endpoint: [`crate::admin_auth`].

use crate::handler::{full, json_response, Shared};
use crate::upstream::Body;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// State the admin endpoints report on.
#[derive(Debug)]
pub(crate) struct AdminState {
    pub(crate) shared: Arc<Shared>,
    /// False once shutdown has begun: `/readyz` then tells load balancers to stop sending.
    pub(crate) ready: AtomicBool,
    /// This replica's own dependencies, checked for `/readyz` ([`crate::readiness`]).
    pub(crate) readiness: crate::readiness::Readiness,
}

pub(crate) async fn handle(
    state: Arc<AdminState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if let Some(denied) =
        crate::admin_auth::refusal(state.shared.config.server.admin_token.as_ref(), &req)
    {
        return Ok(denied);
    }
    Ok(match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if state.ready.load(Ordering::Relaxed) {
                state.readiness.respond(&state.shared).await
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            }
        }
        "/config" => match serde_json::to_value(&state.shared.config) {
            Ok(v) => json_response(StatusCode::OK, &v),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
        },
        "/cache" => cache(&state, &req).await,
        "/metrics" => {
            if let Some(q) = &state.shared.queue {
                state.shared.telemetry.refresh_queue(q).await;
            }
            state
                .shared
                .telemetry
                .refresh_endpoints(&state.shared.clients);
            let limit = &state.shared.limit;
            state
                .shared
                .telemetry
                .refresh_concurrency(limit.limit(), limit.in_flight());
            metrics(&state, &req)
        }
        p if p == "/queue" || p.starts_with("/queue/") => match &state.shared.queue {
            Some(q) => crate::offload::admin(q, &req).await,
            None => text(
                StatusCode::NOT_FOUND,
                "no route has async calls, so no queue is open\n",
            ),
        },
        "/" => text(
            StatusCode::OK,
            "manifold admin: /healthz /readyz /config /metrics /cache (GET; DELETE ?prefix=…)\n",
        ),
        other => text(
            StatusCode::NOT_FOUND,
            &format!("no admin endpoint {other}\n"),
        ),
    })
}

async fn cache(state: &AdminState, req: &Request<Incoming>) -> Response<Body> {
    let cache = &state.shared.caching.cache;
    match *req.method() {
        Method::GET => match serde_json::to_value(cache.stats()) {
            Ok(v) => json_response(StatusCode::OK, &v),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
        },
        Method::DELETE => {
            // The prefix must be given, even empty (`?prefix=` empties the cache): a bare
            // DELETE is more likely a mistake than a wish to drop everything.
            let prefix = req.uri().query().and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "prefix")
                    .map(|(_, v)| v.into_owned())
            });
            let Some(prefix) = prefix else {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"error": {"kind": "input", "message": "give the keys to remove: DELETE /cache?prefix=PREFIX (an empty prefix empties the cache)"}}),
                );
            };
            match cache.purge_prefix(&prefix).await {
                Ok(removed) => json_response(
                    StatusCode::OK,
                    &serde_json::json!({"prefix": prefix, "removed": removed}),
                ),
                Err(e) => json_response(
                    StatusCode::BAD_GATEWAY,
                    &serde_json::json!({"error": {"kind": "redis", "message": format!("this gateway's memory tier was purged; the Redis purge failed: {e}")}}),
                ),
            }
        }
        _ => {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "/cache answers GET (counters) and DELETE ?prefix=… (purge)\n",
            );
            r.headers_mut()
                .insert(http::header::ALLOW, HeaderValue::from_static("GET, DELETE"));
            r
        }
    }
}

/// `GET /metrics`: the Prometheus text format, or OpenMetrics (with exemplars) when the
/// scraper's `Accept` asks for it.
fn metrics(state: &AdminState, req: &Request<Incoming>) -> Response<Body> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "/metrics answers GET\n");
        r.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let Some(registry) = state.shared.telemetry.metrics() else {
        return text(
            StatusCode::NOT_FOUND,
            "metrics are off (`[telemetry] metrics = false`)\n",
        );
    };
    let accept = req
        .headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = manifold_telemetry::metrics::Format::negotiate(accept);
    let mut r = Response::new(full(registry.render(format)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    r
}

pub(crate) fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(full(body.to_owned()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
