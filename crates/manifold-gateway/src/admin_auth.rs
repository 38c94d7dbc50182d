//! Who may use the admin listener. With `server.admin_token` set, every request that changes
//! something (any method but GET and HEAD: cache purge, replay, dead-letter purge, reload,
//! and any later endpoint), every dead-letter listing (which holds request payloads), every
//! task status (`GET /queue/status/{id}`, which holds the upstream's answer) and the trace
//! store (`GET /traces[/{id}]`, which holds clients' paths and request ids and the upstreams'
//! addresses, and costs a worker ~0.1-2 s to export whole) must carry
//! `Authorization: Bearer <token>`. Health, readiness, the redacted `/config` and
//! the counters stay open for probes. Without a token the listener is loopback only (the
//! gateway refuses to bind it elsewhere), and trusts this host.

use crate::handler::json_response;
use crate::upstream::Body;
use http::header::{HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use manifold_config::Secret;
use subtle::ConstantTimeEq;

/// Whether this request needs the token (when one is configured).
fn needs_token<B>(req: &Request<B>) -> bool {
    let path = req.uri().path();
    !matches!(*req.method(), Method::GET | Method::HEAD)
        || path == "/queue/dead"
        || path.starts_with("/queue/dead/")
        // A task's result, which the main listener's `status_requires = "authorization"`
        // keeps from anyone without the creating request's credentials: here, knowing the
        // task id must not be enough either.
        || path.starts_with("/queue/status/")
        // Who asked for what, and where the upstreams are: not a probe's business; and a
        // whole Jaeger export of the store is seconds of a worker's time.
        || path == "/traces"
        || path.starts_with("/traces/")
}

/// The 401 to answer, or `None` when the request may proceed.
pub(crate) fn refusal<B>(token: Option<&Secret>, req: &Request<B>) -> Option<Response<Body>> {
    let token = token?;
    if !needs_token(req) {
        return None;
    }
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    let (challenge, message) = match given {
        None => (
            "Bearer realm=\"manifold-admin\"",
            "this admin endpoint needs `Authorization: Bearer <server.admin_token>`",
        ),
        // Constant time: a byte-by-byte compare would tell an attacker, by its timing, how
        // much of a guess is right. (The length can still show; the token's is not a secret
        // worth a hash here.)
        Some(g) if bool::from(g.as_bytes().ct_eq(token.expose().as_bytes())) => return None,
        Some(_) => (
            "Bearer realm=\"manifold-admin\", error=\"invalid_token\"",
            "the admin token is wrong",
        ),
    };
    let mut resp = json_response(
        StatusCode::UNAUTHORIZED,
        &serde_json::json!({"error": {"kind": "unauthorized", "message": message}}),
    );
    resp.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, auth: Option<&str>) -> Request<()> {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(a) = auth {
            b = b.header(AUTHORIZATION, a);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn mutations_and_dead_letters_need_the_token() {
        let t = Secret::new("0123456789abcdef");
        let t = Some(&t);
        assert!(refusal(t, &req("GET", "/healthz", None)).is_none());
        assert!(refusal(t, &req("GET", "/config", None)).is_none());
        assert!(refusal(t, &req("GET", "/queue", None)).is_none());
        for (m, p) in [
            ("DELETE", "/cache?prefix="),
            ("POST", "/queue/replay?all=1"),
            ("DELETE", "/queue/dead?all=1"),
            ("GET", "/queue/dead"),
            ("GET", "/queue/dead/abc"),
            ("GET", "/queue/status/abc"),
            ("POST", "/reload"),
        ] {
            let r = refusal(t, &req(m, p, None)).unwrap();
            assert_eq!(r.status(), 401, "{m} {p}");
            assert!(r.headers().contains_key(WWW_AUTHENTICATE));
            let r = refusal(t, &req(m, p, Some("Bearer 0123456789abcdeX"))).unwrap();
            assert_eq!(r.status(), 401);
            assert!(refusal(t, &req(m, p, Some("Bearer 0123456789abcdef"))).is_none());
            assert!(refusal(t, &req(m, p, Some("bearer  0123456789abcdef"))).is_none());
            assert!(refusal(t, &req(m, p, Some("Basic 0123456789abcdef"))).is_some());
            assert!(refusal(t, &req(m, p, Some("Bearer 0123456789abcde"))).is_some());
        }
        // No token configured (loopback only): open.
        assert!(refusal(None, &req("DELETE", "/cache?prefix=", None)).is_none());
    }
}
