//! The admin listener: health, readiness, the running plans, the trace store
//! ([`crate::admin_traces`]), the cache (`GET /cache` for its counters, `DELETE /cache?prefix=…`
//! to purge both tiers), the queue, and `POST /reload` (re-read the config file,
//! [`crate::reload`]). It listens on its own address,
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
    /// The running plans (each admin request loads them, like a client request).
    pub(crate) live: Arc<crate::reload::Live>,
    /// False once shutdown has begun: `/readyz` then tells load balancers to stop sending.
    pub(crate) ready: AtomicBool,
    /// This replica's own dependencies, checked for `/readyz` ([`crate::readiness`]).
    pub(crate) readiness: crate::readiness::Readiness,
}

pub(crate) async fn handle(
    state: Arc<AdminState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let shared = state.live.current.load_full();
    if let Some(denied) =
        crate::admin_auth::refusal(shared.config.server.admin_token.as_ref(), &req)
    {
        return Ok(denied);
    }
    Ok(match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if state.ready.load(Ordering::Relaxed) {
                state.readiness.respond(&shared).await
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            }
        }
        "/config" => match serde_json::to_value(&shared.config) {
            Ok(v) => json_response(StatusCode::OK, &v),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
        },
        "/cache" => cache(&shared, &req).await,
        p if p == "/traces" || p.starts_with("/traces/") => {
            crate::admin_traces::handle(Arc::clone(&shared), &req).await
        }
        "/metrics" => {
            if let Some(q) = &shared.queue {
                shared.telemetry.refresh_queue(q).await;
            }
            shared.telemetry.refresh_endpoints(&shared.clients);
            shared
                .telemetry
                .refresh_concurrency(shared.limit.limit(), shared.limit.in_flight());
            metrics(&shared, &req)
        }
        "/reload" => reload(&state, &req).await,
        p if p == "/queue" || p.starts_with("/queue/") => match &shared.queue {
            Some(q) => crate::offload::admin(q, &req).await,
            None => text(
                StatusCode::NOT_FOUND,
                "no route has async calls, so no queue is open\n",
            ),
        },
        "/" => text(
            StatusCode::OK,
            "manifold admin: /healthz /readyz /config /metrics /traces /traces/{trace_id} /cache (GET; DELETE ?prefix=…) /queue /reload (POST)\n",
        ),
        other => text(
            StatusCode::NOT_FOUND,
            &format!("no admin endpoint {other}\n"),
        ),
    })
}

/// `POST /reload`: re-read the config file the gateway runs (never a path from the request)
/// and swap it in. 200 with what changed and what needs a restart; 422 with every error
/// (file:line:col) when the file does not compile or cannot replace the running config, which
/// then stays. The admin token guards it like every mutating endpoint.
async fn reload(state: &AdminState, req: &Request<Incoming>) -> Response<Body> {
    if *req.method() != Method::POST {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "/reload answers POST (re-read and apply the config file)\n",
        );
        r.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    match state.live.reload_file().await {
        Ok(report) => match serde_json::to_value(&report) {
            Ok(mut v) => {
                v["reloaded"] = true.into();
                json_response(StatusCode::OK, &v)
            }
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
        },
        Err(e) => json_response(StatusCode::UNPROCESSABLE_ENTITY, &e.to_json()),
    }
}

async fn cache(shared: &Shared, req: &Request<Incoming>) -> Response<Body> {
    let cache = &shared.caching.cache;
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
                    &serde_json::json!({"error": {"kind": cache.stats().l2.map_or("cache", |l2| l2.backend), "message": format!("this gateway's memory tier was purged; the shared tier's purge failed: {e}")}}),
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
fn metrics(shared: &Shared, req: &Request<Incoming>) -> Response<Body> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "/metrics answers GET\n");
        r.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let Some(registry) = shared.telemetry.metrics() else {
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
