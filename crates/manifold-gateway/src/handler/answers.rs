//! The answers the gateway makes up itself: small JSON bodies, and what a client is told of a
//! failed call (`server.error_detail`) or a refused body.

use super::Shared;
use crate::error::{BoxError, CallError, CallErrorKind};
use crate::upstream::Body;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use manifold_config::ErrorDetail;

/// Build a small JSON response.
pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// An empty body: a box of nothing, so no allocation.
pub(crate) fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub(crate) fn error_response(
    status: StatusCode,
    kind: &'static str,
    message: impl Into<String>,
) -> Response<Body> {
    let message = message.into();
    let mut resp = json_response(
        status,
        &serde_json::json!({"error": {"kind": kind, "message": &message}}),
    );
    crate::respond::ErrorCause::attach(&mut resp, kind, message);
    resp
}

/// A body the parse budget has no room for: 503 while the budget is spent (its share comes
/// back as the requests holding it end), 413 for a body that alone would take more than all.
pub(super) fn parse_refused(
    refused: crate::limit::ParseRefused,
    shared: &Shared,
) -> Response<Body> {
    let budget = shared.config.server.max_parsed_bytes;
    match refused {
        crate::limit::ParseRefused::Spent => crate::respond::shed_because(format!(
            "the request bodies being parsed take the gateway's budget for them ({budget} bytes, server.max_parsed_bytes); retry shortly"
        )),
        crate::limit::ParseRefused::TooLarge(estimate) => error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "parsed, the request body would take about {estimate} bytes, more than server.max_parsed_bytes ({budget})"
            ),
        ),
    }
}

pub(crate) fn failure_response(
    route: &str,
    calls: Vec<String>,
    error: CallError,
    detail: ErrorDetail,
) -> Response<Body> {
    let status = error.kind.client_status();
    // Logged once, with the request id, where the answer leaves (`respond::log_answer`).
    let cause = format!(
        "route `{route}`, calls {calls:?}: {}{}",
        error.message,
        crate::respond::trail_suffix(&error)
    );
    let mut body = serde_json::json!({
        "error": {
            "kind": error.kind.as_str(),
            "route": route,
            "call": calls.first(),
            "calls": calls,
            "message": crate::respond::client_message(&error, detail),
        }
    });
    if let CallErrorKind::Status(s) = error.kind {
        body["error"]["upstream_status"] = s.into();
    }
    crate::respond::add_trail(&mut body["error"], &error, detail);
    let mut resp = json_response(status, &body);
    crate::respond::ErrorCause::attach(&mut resp, error.kind.as_str(), cause);
    let retry_after = match error.kind {
        CallErrorKind::QueueFull(after) => Some(after),
        CallErrorKind::Shed => Some(crate::limit::RETRY_AFTER),
        _ => None,
    };
    if let Some(after) = retry_after {
        let secs = after.as_secs().max(1);
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// The JSON body of [`call_error_response`]: the kind, the message a client may see, and with
/// `error_detail = "full"` what the upstream stack did.
pub(crate) fn call_error_body(error: &CallError, detail: ErrorDetail) -> serde_json::Value {
    let message = crate::respond::client_message(error, detail);
    let mut body = serde_json::json!({"error": {"kind": error.kind.as_str(), "message": message}});
    crate::respond::add_trail(&mut body["error"], error, detail);
    body
}

/// Map an error from forwarding into an HTTP answer (used by the proxy).
pub(crate) fn call_error_response(error: CallError, detail: ErrorDetail) -> Response<Body> {
    let body = call_error_body(&error, detail);
    let mut resp = json_response(error.kind.client_status(), &body);
    let cause = format!("{}{}", error.message, crate::respond::trail_suffix(&error));
    crate::respond::ErrorCause::attach(&mut resp, error.kind.as_str(), cause);
    resp
}

/// An error converted for a boxed body.
pub(crate) fn box_err<E: Into<BoxError>>(e: E) -> BoxError {
    e.into()
}
