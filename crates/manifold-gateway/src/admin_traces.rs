//! Admin `/traces`: the live trace store (see `manifold_telemetry::store`).
//!
//! - `GET /traces?route=&min_ms=&errors=&limit=` — summaries, newest first;
//! - `GET /traces?format=jaeger` (same filters) — Jaeger JSON (`{"data": [...]}`) for
//!   `manifold analyze -`;
//! - `GET /traces/{trace_id}` — one request with its waterfall (`?format=jaeger` too).
//!
//! Read-only, so open like `/config` and `/metrics` under the admin rule
//! ([`crate::admin_auth`]): the store holds timings, paths (never a query string), statuses and
//! upstream addresses, no header or body. Every parameter is checked: an unknown or repeated
//! one, a malformed value or a negative number is a 400 naming it; `limit` above
//! [`MAX_LIMIT`] is cut to it.

use crate::handler::json_response;
use crate::handler::Shared;
use crate::upstream::Body;
use http::header::{HeaderValue, ALLOW};
use http::{Method, Request, Response, StatusCode};
use manifold_telemetry::context::{parse_trace_id, TraceId};
use manifold_telemetry::store::{json, Query, TraceStore};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The most requests one answer lists.
pub(crate) const MAX_LIMIT: usize = 1000;
/// Without `limit`.
const DEFAULT_LIMIT: usize = 50;
/// The largest `min_ms` (a day): beyond it, a typo.
const MAX_MIN_MS: f64 = 86_400_000.0;

fn bad(param: &str, message: String) -> Response<Body> {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"error": {"kind": "input", "parameter": param, "message": message}}),
    )
}

/// One answer computed at a time: a list of up to [`MAX_LIMIT`] requests, each analysed for its
/// critical path and written out, is milliseconds to seconds of CPU. It runs on the blocking
/// pool, so it never holds a request worker (the client listener shares them), and one at a
/// time, so a script polling `/traces` in a loop costs one core at most.
static TURN: Semaphore = Semaphore::const_new(1);

/// `GET /traces…`.
pub(crate) async fn handle<B>(shared: Arc<Shared>, req: &Request<B>) -> Response<Body> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut r = json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": {"kind": "method", "message": "/traces answers GET"}}),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let Some(store) = shared.telemetry.store() else {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": {"kind": "off", "message": "the trace store is off (`[telemetry] traces = false` or `tracing = false`)"}}),
        );
    };
    let params = match Params::parse(store, req.uri().query().unwrap_or("")) {
        Ok(p) => p,
        Err((param, message)) => return bad(param, message),
    };
    let Some(rest) = req.uri().path().strip_prefix("/traces") else {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": {"kind": "not_found", "message": "no such admin endpoint"}}),
        );
    };
    let id = match rest {
        "" => None,
        rest => {
            if params.filtered {
                return bad(
                    "route",
                    "`route`, `min_ms`, `errors` and `limit` select from the list: GET /traces?…"
                        .to_owned(),
                );
            }
            // Checked before decoding, so an absurd path is named without being echoed whole.
            let id = rest.strip_prefix('/').unwrap_or(rest);
            let well_formed = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
            let Some(trace_id) = well_formed
                .then(|| parse_trace_id(&id.to_ascii_lowercase()))
                .flatten()
            else {
                return bad(
                    "trace_id",
                    format!(
                        "a trace id is 32 hex digits, not all zero (got {} characters)",
                        id.len()
                    ),
                );
            };
            Some(trace_id)
        }
    };
    let built = on_turn(&TURN, move || {
        let telemetry = &shared.telemetry;
        let (Some(store), service) = (telemetry.store(), telemetry.service_name()) else {
            return None;
        };
        Some(match id {
            None => list(store, service, &params),
            Some(id) => one(store, service, &id, params.jaeger),
        })
    })
    .await;
    match built {
        Ok(Some(resp)) => resp,
        Err(Turn::Busy) => {
            let mut r = json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"error": {"kind": "busy", "message": "another /traces answer is being built (one at a time); retry shortly"}}),
            );
            r.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        // Not reachable (the store was there above and `shared` holds it), but an answer.
        Ok(None) | Err(Turn::Panicked) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": {"kind": "internal", "message": "the trace store could not be read"}}),
        ),
    }
}

/// How long a `/traces` request waits for the turn before it is answered 503: waiting requests
/// hold admin connections (256 at most), which `/healthz` and `/readyz` need too.
const TURN_WAIT: Duration = Duration::from_secs(5);

/// Why [`on_turn`] built nothing.
#[derive(Debug, PartialEq, Eq)]
enum Turn {
    /// No turn came within [`TURN_WAIT`].
    Busy,
    /// The build panicked.
    Panicked,
}

/// `build` run on the blocking pool on a turn of `turn`, waited for at most [`TURN_WAIT`]. The turn goes
/// with the build, not with the request: a blocking task runs to its end even when the client
/// that asked went away (its request's future dropped), so a turn given back with the request
/// would let a script asking and hanging up in a loop run as many builds at once as it liked.
async fn on_turn<T: Send + 'static>(
    turn: &'static Semaphore,
    build: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Turn> {
    // The semaphore is never closed: only the wait can fail.
    let Ok(held) = tokio::time::timeout(TURN_WAIT, turn.acquire()).await else {
        return Err(Turn::Busy);
    };
    tokio::task::spawn_blocking(move || {
        let _turn = held;
        build()
    })
    .await
    .map_err(|_| Turn::Panicked)
}

fn list(store: &TraceStore, service: &str, params: &Params) -> Response<Body> {
    let entries = store.query(&params.query);
    let body = if params.jaeger {
        let data: Vec<Value> = entries
            .iter()
            .map(|e| json::jaeger_trace(service, e, &store.analyze(e)))
            .collect();
        json!({ "data": data })
    } else {
        let traces: Vec<Value> = entries
            .iter()
            .map(|e| json::summary(store, e, &store.analyze(e)))
            .collect();
        json!({ "count": traces.len(), "traces": traces })
    };
    json_response(StatusCode::OK, &body)
}

fn one(store: &TraceStore, service: &str, trace_id: &TraceId, jaeger: bool) -> Response<Body> {
    let Some(entry) = store.get(trace_id) else {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": {"kind": "not_found", "message": format!("trace {} is not in the store (it keeps the last, the slowest and the recently failed requests of each route)", trace_id.to_hex())}}),
        );
    };
    let a = store.analyze(&entry);
    let body = if jaeger {
        json!({ "data": [json::jaeger_trace(service, &entry, &a)] })
    } else {
        json::detail(store, &entry, &a)
    };
    json_response(StatusCode::OK, &body)
}

/// The query string, checked.
#[derive(Debug)]
struct Params {
    query: Query,
    jaeger: bool,
    /// Some list filter was given.
    filtered: bool,
}

impl Params {
    fn parse(store: &TraceStore, raw: &str) -> Result<Params, (&'static str, String)> {
        let mut p = Params {
            query: Query {
                limit: DEFAULT_LIMIT,
                ..Query::default()
            },
            jaeger: false,
            filtered: false,
        };
        let mut seen: Vec<&'static str> = Vec::new();
        for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
            let name: &'static str = match &*k {
                "route" => "route",
                "min_ms" => "min_ms",
                "errors" => "errors",
                "limit" => "limit",
                "format" => "format",
                other => {
                    let shown: String = other.chars().take(40).collect();
                    return Err((
                        "query",
                        format!(
                            "unknown parameter {shown:?} (route, min_ms, errors, limit, format)"
                        ),
                    ));
                }
            };
            if seen.contains(&name) {
                return Err((name, format!("`{name}` is given twice")));
            }
            seen.push(name);
            p.filtered |= name != "format";
            let v = v.trim();
            match name {
                "route" => match store.route_index(v) {
                    Some(i) => p.query.route = Some(i),
                    None => {
                        let routes: Vec<&str> = store.route_names().collect();
                        let shown: String = v.chars().take(80).collect();
                        return Err((
                            name,
                            format!("no route named {shown:?}; the routes are {routes:?}"),
                        ));
                    }
                },
                "min_ms" => match v.parse::<f64>() {
                    Ok(x) if x.is_finite() && (0.0..=MAX_MIN_MS).contains(&x) => {
                        p.query.min_duration = Some(Duration::from_secs_f64(x / 1000.0));
                    }
                    _ => {
                        return Err((
                            name,
                            "`min_ms` is a number of milliseconds from 0 to 86400000".to_owned(),
                        ))
                    }
                },
                "errors" => {
                    p.query.errors = Some(match v {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err((
                            name,
                            "`errors` is true (only failed requests) or false (only the others)"
                                .to_owned(),
                        )),
                    })
                }
                "limit" => {
                    // A number past the maximum is cut to it; anything else that is not a
                    // positive whole number is refused.
                    let digits = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
                    let n = if digits {
                        v.parse::<usize>().unwrap_or(usize::MAX)
                    } else {
                        0
                    };
                    if n == 0 {
                        return Err((
                            name,
                            format!("`limit` is a whole number from 1 to {MAX_LIMIT}"),
                        ));
                    }
                    p.query.limit = n.min(MAX_LIMIT);
                }
                _ => match v {
                    "json" => p.jaeger = false,
                    "jaeger" => p.jaeger = true,
                    _ => return Err((name, "`format` is json (the default) or jaeger".to_owned())),
                },
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that goes away while its answer is being built does not stop the build (a
    /// blocking task runs to its end): the turn must stay taken until it ends, or a script
    /// that asks and hangs up in a loop has as many builds running as it likes.
    #[tokio::test]
    async fn the_turn_is_held_until_the_build_ends_even_when_its_client_went_away() {
        static ONE: Semaphore = Semaphore::const_new(1);
        let (started, building) = tokio::sync::oneshot::channel();
        let (finish, finished) = std::sync::mpsc::channel::<()>();
        let asked = tokio::spawn(on_turn(&ONE, move || {
            let _ = started.send(());
            let _ = finished.recv();
        }));
        building.await.expect("the build started");
        // The client goes away: its request's future is dropped mid-build.
        asked.abort();
        assert!(asked.await.is_err_and(|e| e.is_cancelled()));
        assert_eq!(
            ONE.available_permits(),
            0,
            "the build still runs on the turn"
        );
        finish.send(()).expect("the build waits");
        // The turn comes back once the build ends.
        drop(ONE.acquire().await.expect("never closed"));
    }

    /// A request waits for the turn at most `TURN_WAIT`, then is answered busy: waiting
    /// requests hold admin connections that the health checks need too.
    #[tokio::test(start_paused = true)]
    async fn a_request_waits_for_the_turn_a_bounded_time() {
        static ONE: Semaphore = Semaphore::const_new(1);
        let busy = ONE.acquire().await.expect("never closed");
        let started = tokio::time::Instant::now();
        assert_eq!(on_turn(&ONE, || 7).await, Err(Turn::Busy));
        assert_eq!(started.elapsed(), TURN_WAIT);
        drop(busy);
        assert_eq!(on_turn(&ONE, || 7).await, Ok(7));
    }
}
