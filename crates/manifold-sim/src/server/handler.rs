//! One request to a simulated endpoint: routing, latency, faults, templated bodies, and the
//! per-replica admin endpoints.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore};
use serde_json::{json, Value};

use super::{Body, InjectedReset, ReplicaState, Shared, MAX_BODY_BYTES, MAX_STALL};
use crate::config::FaultKind;
use crate::stats::{self};
use crate::template::Ctx;

#[derive(Clone)]
pub(super) struct Handler {
    pub(super) shared: Arc<Shared>,
    pub(super) svc: usize,
    pub(super) rep: usize,
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// Percent-decode a path segment or query component.
pub(crate) fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(&k.replace('+', " ")), decode(&v.replace('+', " ")))
        })
        .collect()
}

/// A v4 UUID from 16 random bytes.
fn uuid_from(rng: &mut SmallRng) -> String {
    let mut b = [0u8; 16];
    rng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl Handler {
    fn replica(&self) -> &ReplicaState {
        &self.shared.services[self.svc].replicas[self.rep]
    }

    pub(super) async fn handle(
        self,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, InjectedReset> {
        let path = req.uri().path().to_owned();
        if let Some(r) = self.admin(&req, &path) {
            return Ok(r);
        }
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let replica = self.replica();
        let mut path_matched = false;
        let mut found = None;
        for (i, e) in replica.endpoints.iter().enumerate() {
            if let Some(params) = e.ep.matches(&parts) {
                path_matched = true;
                if e.ep.method == req.method() {
                    found = Some((i, params));
                    break;
                }
            }
        }
        let Some((ei, params)) = found else {
            replica.not_found.fetch_add(1, Ordering::Relaxed);
            let (status, msg) = if path_matched {
                (StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            } else {
                (StatusCode::NOT_FOUND, "no such endpoint")
            };
            return Ok(json_response(
                status,
                &json!({"error": msg, "method": req.method().as_str(), "path": path}),
            ));
        };
        let method = req.method().clone();
        let query = parse_query(req.uri().query());
        let shared = self.shared.clone();
        let replica = &shared.services[self.svc].replicas[self.rep];
        let es = &replica.endpoints[ei];
        let seq = es.seq.fetch_add(1, Ordering::Relaxed) + 1;
        // Read straight from the request's headers: `begin` keeps only a hash of the key and a
        // capped copy of the id, so nothing is copied twice on every call.
        let headers = req.headers();
        let guard = es.counters.begin(
            seq,
            headers.get("idempotency-key").map(|v| v.as_bytes()),
            headers.get("x-request-id").and_then(|v| v.to_str().ok()),
        );

        let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(err) => {
                let too_big = err.is::<http_body_util::LengthLimitError>();
                let (status, msg) = if too_big {
                    (StatusCode::PAYLOAD_TOO_LARGE, "request body above 1 MiB")
                } else {
                    (StatusCode::BAD_REQUEST, "could not read the request body")
                };
                guard.finish("ok", Some(status.as_u16()));
                return Ok(json_response(status, &json!({"error": msg})));
            }
        };
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or(Value::Null)
        };

        let (mut fault, latency) = {
            let mut rng = stats::lock(&es.rng);
            let u: f64 = rng.random();
            let lat = es.ep.latency.sample(&mut *rng);
            (es.ep.fault_for(u).cloned(), lat)
        };
        let since = if replica.behaviour.turns_slow() {
            stats::lock(&shared.epoch).elapsed()
        } else {
            Duration::ZERO
        };
        let dealt = replica
            .behaviour
            .draw(&mut *stats::lock(&replica.rng), since);
        let latency = crate::replica::scaled(latency, dealt.scale);
        if dealt.straggler {
            replica.stragglers.fetch_add(1, Ordering::Relaxed);
        }
        // An endpoint's own fault comes first; the replica's error otherwise.
        if let (None, Some(status)) = (&fault, dealt.error) {
            fault = Some(FaultKind::Status { status });
        }
        if let Some(f) = &fault {
            es.counters.count_fault(f.name());
        }
        if fault == Some(FaultKind::Hang) {
            // Held until the client leaves or the sim stops (both drop this future; the guard
            // then records the call as cancelled).
            let never = std::future::pending::<Infallible>().await;
            match never {}
        }
        shared.timer.sleep(latency).await;
        shared.wait_out_stall().await;

        match fault {
            // (A hang never gets here: it is parked above.)
            Some(FaultKind::Reset | FaultKind::Hang) => {
                guard.finish("reset", None);
                Err(InjectedReset)
            }
            Some(FaultKind::Status { status }) => {
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                guard.finish("status", Some(status.as_u16()));
                Ok(json_response(
                    status,
                    &json!({"error": "injected fault", "status": status.as_u16()}),
                ))
            }
            other => {
                let rendered = {
                    let mut rng = stats::lock(&es.rng);
                    let mut uuid = || uuid_from(&mut rng);
                    let name = &shared.services[self.svc].name;
                    let mut ctx = Ctx {
                        path_params: &params,
                        query: &query,
                        body: &body,
                        seq,
                        service: name,
                        replica: self.rep,
                        method: method.as_str(),
                        path: &path,
                        uuid: &mut uuid,
                    };
                    es.ep.body.render(&mut ctx).to_string()
                };
                let bytes = Bytes::from(rendered);
                let body = match other {
                    Some(FaultKind::SlowBody { over }) => slow_body(bytes, over),
                    _ => Full::new(bytes).boxed_unsync(),
                };
                let mut resp = Response::new(body);
                *resp.status_mut() = es.ep.status;
                let h = resp.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                for (k, v) in &es.ep.headers {
                    h.insert(k.clone(), v.clone());
                }
                let outcome = if other.is_some() { "slow_body" } else { "ok" };
                guard.finish(outcome, Some(es.ep.status.as_u16()));
                Ok(resp)
            }
        }
    }

    /// The sim's own endpoints: `GET /__stats`, `POST /__reset`, `POST /__stall?for=1s`.
    fn admin(&self, req: &Request<Incoming>, path: &str) -> Option<Response<Body>> {
        let query = parse_query(req.uri().query());
        let q = |name: &str| {
            query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        match (req.method(), path) {
            (&Method::GET, "/__stats") => {
                let with_calls = matches!(q("calls"), Some("1" | "true" | "yes"));
                let stats = self.shared.stats(with_calls);
                let v = serde_json::to_value(&stats).unwrap_or(Value::Null);
                Some(json_response(StatusCode::OK, &v))
            }
            (&Method::POST, "/__reset") => {
                self.shared.reset();
                Some(json_response(StatusCode::OK, &json!({"reset": true})))
            }
            (&Method::POST, "/__stall") => {
                let d = q("for").map(crate::latency::parse_duration);
                Some(match d {
                    Some(Ok(d)) if d <= MAX_STALL => {
                        self.shared.stall(d);
                        json_response(
                            StatusCode::OK,
                            &json!({"stalled_ms": d.as_secs_f64() * 1000.0}),
                        )
                    }
                    Some(Ok(_)) => json_response(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": "input error: `for` is above the 10 minute limit"}),
                    ),
                    Some(Err(m)) => json_response(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": format!("input error: {m}")}),
                    ),
                    None => json_response(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": "input error: give the stall length, e.g. /__stall?for=1s"}),
                    ),
                })
            }
            _ => None,
        }
    }
}

/// A body sent in up to ten pieces spread evenly over `over`.
fn slow_body(bytes: Bytes, over: Duration) -> Body {
    const PIECES: usize = 10;
    let n = bytes.len().clamp(1, PIECES);
    let step = over / n as u32;
    let chunk = bytes.len().div_ceil(n).max(1);
    let stream = futures::stream::unfold((bytes, 0usize), move |(rest, i)| async move {
        if i >= n {
            return None;
        }
        tokio::time::sleep(step).await;
        let mut rest = rest;
        let piece = if i + 1 == n {
            std::mem::take(&mut rest)
        } else {
            rest.split_to(chunk.min(rest.len()))
        };
        Some((Ok::<_, Infallible>(Frame::data(piece)), (rest, i + 1)))
    });
    StreamBody::new(stream).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn uuids_are_v4_and_seeded() {
        let mut a = SmallRng::seed_from_u64(5);
        let mut b = SmallRng::seed_from_u64(5);
        let u = uuid_from(&mut a);
        assert_eq!(u, uuid_from(&mut b));
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(u, uuid_from(&mut a));
    }

    #[test]
    fn query_parsing() {
        assert_eq!(
            parse_query(Some("a=1&b=x%20y&c&d=e+f")),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "".into()),
                ("d".into(), "e f".into())
            ]
        );
    }
}
