//! The admin listener: health, readiness and the running plans. It listens on its own address,
//! loopback by default, so operational data never shares the public port.

use crate::client::Body;
use crate::handler::{full, json_response, Shared};
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
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
}

pub(crate) async fn handle(
    state: Arc<AdminState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    Ok(match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if state.ready.load(Ordering::Relaxed) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            }
        }
        "/config" => match serde_json::to_value(&state.shared.config) {
            Ok(v) => json_response(StatusCode::OK, &v),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
        },
        "/" => text(StatusCode::OK, "manifold admin: /healthz /readyz /config\n"),
        other => text(
            StatusCode::NOT_FOUND,
            &format!("no admin endpoint {other}\n"),
        ),
    })
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(full(body.to_owned()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
