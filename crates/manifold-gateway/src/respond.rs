//! The one place where the gateway's own error answers are accounted for: every answer the
//! gateway makes up (as opposed to one an upstream sent) carries an [`ErrorCause`], and the
//! connection's service wrapper logs each such 5xx exactly once, with the request's id and its
//! cause. Upstream 5xx passed through on a proxy route carry no cause and are not the gateway's
//! fault, so they are only logged at debug level.
//!
//! Also here: the `Host` rule of RFC 9112 §3.2 (checked before any route runs) and the counters
//! of faults that do not fail a request ([`Stats`]).

use crate::error::CallError;
use crate::upstream::Body;
use http::header::{HeaderName, HeaderValue, HOST};
use http::{Request, Response, StatusCode, Version};
use manifold_config::ErrorDetail;
use manifold_telemetry as tm;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use tm::request_id::{shared_value, IdBuf};

/// The request id header: taken from the client when it is a plain token, otherwise made up.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-sent request id that is trusted (a longer one is replaced): telemetry's.
const MAX_REQUEST_ID: usize = tm::propagate::REQUEST_ID_MAX;

/// Why the gateway made up an error answer: a response extension set where the answer is built
/// (`handler::error_response`, `failure_response`, `call_error_response`), read where it is
/// logged. It never reaches the client.
#[derive(Debug, Clone)]
pub(crate) struct ErrorCause {
    /// The stable kind, as in the error body (`upstream_status`, `deadline`, `connect`, …).
    pub(crate) kind: &'static str,
    /// What went wrong, with the route and calls where known.
    pub(crate) message: String,
}

impl ErrorCause {
    /// Attach a cause to an answer the gateway made up.
    pub(crate) fn attach(resp: &mut Response<Body>, kind: &'static str, message: String) {
        resp.extensions_mut().insert(ErrorCause { kind, message });
    }

    /// A 5xx of a composed route that comes back without its cause (answers shared through the
    /// cache are stored without extensions) is still the gateway's: say so, naming the route.
    pub(crate) fn or_default(resp: &mut Response<Body>, route: &str) {
        if resp.status().is_server_error() && resp.extensions().get::<ErrorCause>().is_none() {
            let message = format!(
                "route `{route}`: a failed composition, answered through the route's cache (its \
                 cause is not kept with answers shared through the cache)"
            );
            Self::attach(resp, "cached_failure", message);
        }
    }
}

/// Counters of faults that do not fail a request but that an operator must be able to see.
/// Read them with [`crate::Gateway::stats`].
#[derive(Debug, Default)]
pub struct Stats {
    response_header_render_failures: AtomicU64,
    shed_requests: AtomicU64,
}

impl Stats {
    /// Requests answered 503 at the concurrency limit (`[server] concurrency`).
    pub fn shed_requests(&self) -> u64 {
        self.shed_requests.load(Ordering::Relaxed)
    }

    /// Count one shed request; the count so far.
    pub(crate) fn count_shed(&self) -> u64 {
        self.shed_requests.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Response headers of composed routes dropped because their rendered value is not a valid
    /// header value (e.g. a control character from a request value).
    pub fn response_header_render_failures(&self) -> u64 {
        self.response_header_render_failures.load(Ordering::Relaxed)
    }

    /// Count and log one response header that could not be rendered. The value is not logged:
    /// it comes from request or upstream data and may hold a secret.
    pub(crate) fn header_render_failed(&self, route: &str, header: &str) {
        self.response_header_render_failures
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            route,
            header,
            "response header dropped: its rendered value is not a valid header value"
        );
    }
}

/// The answer to a request shed at the concurrency limit: 503 with `Retry-After` and the
/// gateway's JSON error body (kind `shed`). Its cause is recorded like any made-up 5xx, but
/// [`log_answer`] does not log it per request: the limiter logs shedding at most every few
/// seconds, since a line per shed request would add to the overload it sheds.
pub(crate) fn shed(limit: usize) -> Response<Body> {
    shed_because(format!(
        "the gateway is at its concurrency limit ({limit} requests in flight); retry shortly"
    ))
}

/// A 503 that refuses work the gateway has no room for now (`kind: shed`, `Retry-After`).
pub(crate) fn shed_because(message: String) -> Response<Body> {
    let mut resp = crate::handler::json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &serde_json::json!({"error": {"kind": SHED, "message": &message}}),
    );
    let secs = crate::limit::RETRY_AFTER.as_secs().max(1);
    resp.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    ErrorCause::attach(&mut resp, SHED, message);
    resp
}

/// The error kind of a shed request.
pub(crate) const SHED: &str = "shed";

/// The client's request id ([`client_request_id`]), read once per request where the request
/// arrives ([`crate::conn::answer`]) and handed to the handler with the request, which gives it
/// to telemetry (a header lookup is ~170 instructions).
pub(crate) type ClientId = Option<HeaderValue>;

/// The request's id: the client's `X-Request-Id` when it is a short token of letters, digits
/// and `-_.:`; `None` otherwise (one is made up when it is needed). Anything else is refused
/// because the id is written to logs as it is: spaces or `=` could forge log fields.
pub(crate) fn client_request_id(headers: &http::HeaderMap) -> Option<HeaderValue> {
    let v = headers.get(REQUEST_ID)?;
    let b = v.as_bytes();
    let plain = !b.is_empty()
        && b.len() <= MAX_REQUEST_ID
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'));
    plain.then(|| v.clone())
}

/// A request id unique in this process and unlikely to repeat across processes: a random
/// per-process prefix and a counter. Made for every answer when tracing is off (metrics or the
/// access log on), so it is written into a stack buffer, not through `format!`, and held in a
/// buffer that clones without allocating (see [`tm::request_id::shared_value`]).
///
/// The prefix is written out once, with its `-`: its sixteen hex digits were ~190 instructions
/// an answer (callgrind, metrics only).
pub(crate) fn new_request_id() -> HeaderValue {
    static PREFIX: OnceLock<IdBuf> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = PREFIX.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let mut id = IdBuf::default();
        id.push_hex(h.finish(), 16);
        id.push(b'-');
        id
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut id = *prefix;
    id.push_hex(n, 1);
    shared_value(id).unwrap_or(HeaderValue::from_static("-"))
}

/// RFC 9112 §3.2: an HTTP/1.1 request without `Host`, or any request with more than one, or one
/// whose `Host` is not a valid `host[:port]`, gets 400. HTTP/1.0 may omit it; HTTP/2 carries
/// `:authority` instead. The message names the fault.
pub(crate) fn host_fault<B>(req: &Request<B>) -> Option<&'static str> {
    let mut hosts = req.headers().get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if req.version() == Version::HTTP_11 => {
            Some("an HTTP/1.1 request must carry a Host header")
        }
        (None, _) => None,
        (Some(_), Some(_)) => Some("a request must carry one Host header, not several"),
        (Some(h), None) => {
            let valid = plain_host(h.as_bytes())
                || h.to_str()
                    .ok()
                    .filter(|h| !h.contains('@'))
                    .is_some_and(|h| h.parse::<http::uri::Authority>().is_ok());
            (!valid).then_some("the Host header is not a valid host[:port]")
        }
    }
}

/// Whether `host` is a name or IPv4 address with an optional port, spelled with letters,
/// digits, `.`, `-` and at most one `:`: always a valid authority, so the common `Host` is
/// judged without `Authority`'s parse, which copies the value into a new buffer (an
/// allocation per request). Anything else (IPv6 literals, odd characters) takes the parse.
fn plain_host(host: &[u8]) -> bool {
    let mut colons = 0;
    !host.is_empty()
        && host.iter().all(|&c| match c {
            b':' => {
                colons += 1;
                colons == 1
            }
            _ => c.is_ascii_alphanumeric() || c == b'.' || c == b'-',
        })
}

/// The 400 answer to a request that breaks the `Host` rule. An HTTP/1 connection is closed
/// after it: a client that gets framing this wrong is not one to keep talking to (HTTP/2 has no
/// `Connection` header; its other streams are unaffected).
pub(crate) fn bad_host(message: &'static str, version: Version) -> Response<Body> {
    let mut resp = crate::handler::json_response(
        StatusCode::BAD_REQUEST,
        &serde_json::json!({"error": {"kind": "bad_host", "message": message}}),
    );
    if version < Version::HTTP_2 {
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Log the answer once if it is an error: a 5xx the gateway made up at warn, with its cause
/// (and the request id, also given to the client so it can quote it); an upstream's 5xx passed
/// through at debug; a 4xx the gateway made up at debug (the client's fault, not the
/// operator's). `passthrough`: whether this listener can pass upstream answers on (the client
/// listener); on the admin listener every 5xx is the gateway's, cause recorded or not.
pub(crate) fn log_answer(
    resp: &mut Response<Body>,
    id: Option<HeaderValue>,
    method: &http::Method,
    path: &str,
    passthrough: bool,
) {
    let status = resp.status().as_u16();
    if status < 400 {
        return;
    }
    // The client's path, up to 64 KiB: recorded as telemetry records it.
    let path = manifold_telemetry::recorded_path(path);
    // The id telemetry gave the answer (the client's, or the trace id) is the one to log.
    let id = resp.headers().get(REQUEST_ID).cloned().or(id);
    let cause = resp.extensions().get::<ErrorCause>();
    if status < 500 {
        if let Some(cause) = cause {
            tracing::debug!(
                request_id = id.as_ref().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
                status,
                %method,
                path,
                kind = cause.kind,
                cause = %cause.message,
                "request refused"
            );
        }
        return;
    }
    let (kind, message) = match cause {
        // Counted and logged by the limiter, a few times a minute at most.
        Some(c) if c.kind == SHED => return,
        Some(c) => (c.kind, c.message.as_str()),
        None if passthrough => {
            tracing::debug!(
                request_id = id.as_ref().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
                status,
                %method,
                path,
                "upstream 5xx passed through"
            );
            return;
        }
        None => ("internal", "an admin endpoint failed (see its answer)"),
    };
    let id = id.unwrap_or_else(new_request_id);
    tracing::warn!(
        request_id = %String::from_utf8_lossy(id.as_bytes()),
        status,
        %method,
        path,
        kind,
        cause = %message,
        "gateway error"
    );
    resp.headers_mut().insert(REQUEST_ID, id);
}

/// The message a client is told for `error`: its own text with `error_detail = "full"`, words
/// naming nothing behind the gateway with `"brief"` ([`CallErrorKind::brief_message`]).
///
/// [`CallErrorKind::brief_message`]: crate::error::CallErrorKind::brief_message
pub(crate) fn client_message(error: &CallError, detail: ErrorDetail) -> &str {
    match (detail, error.kind.brief_message()) {
        (ErrorDetail::Brief, Some(m)) => m,
        _ => &error.message,
    }
}

/// Add what the upstream stack did to a JSON error object: the upstream, the endpoint of the
/// last attempt, the number of attempts, each one's endpoint and end (at most
/// [`crate::upstream::error`]'s record limit), and why no further attempt was made.
/// Nothing with `error_detail = "brief"`.
pub(crate) fn add_trail(obj: &mut serde_json::Value, error: &CallError, detail: ErrorDetail) {
    if detail == ErrorDetail::Brief {
        return;
    }
    let (Some(t), Some(map)) = (error.trail.as_deref(), obj.as_object_mut()) else {
        return;
    };
    map.insert("upstream".into(), t.upstream.clone().into());
    map.insert("endpoint".into(), t.endpoint().into());
    map.insert("attempts".into(), t.attempts.into());
    let outcomes: Vec<serde_json::Value> = t
        .records
        .iter()
        .map(|r| serde_json::json!({"endpoint": r.endpoint, "ended": r.ended.label()}))
        .collect();
    map.insert("outcomes".into(), outcomes.into());
    if let Some(stop) = t.stopped {
        map.insert("retry_stopped".into(), stop.as_str().into());
    }
}

/// The trail for a log line's cause: ` (upstream `u`, 2 attempts: …)`, or nothing.
pub(crate) fn trail_suffix(error: &CallError) -> String {
    error
        .trail
        .as_deref()
        .map(|t| format!(" ({t})"))
        .unwrap_or_default()
}

/// One item of `Manifold-Partial`: the call's name, then (as structured-field parameters, so a
/// reader splitting on `, ` and `;` still finds the names first) why it failed, its upstream,
/// the endpoint of its last attempt, the number of attempts and how each ended, e.g.
/// `orders;kind=timeout;upstream="orders";endpoint="10.0.0.7:80";attempts=2;ended="connect
/// timeout"`. Every part is header-safe (see [`sf_string`]) and bounded (the trail keeps a few
/// records). With `error_detail = "brief"`, only the name and the kind.
pub(crate) fn partial_item(call: &str, error: Option<&CallError>, detail: ErrorDetail) -> String {
    let mut s = String::with_capacity(call.len() + 16);
    sf_token(call, &mut s);
    let Some(e) = error else {
        return s;
    };
    s.push_str(";kind=");
    s.push_str(e.kind.as_str());
    if detail == ErrorDetail::Brief {
        return s;
    }
    if let Some(t) = e.trail.as_deref() {
        s.push_str(";upstream=");
        sf_string(&t.upstream, &mut s);
        if let Some(ep) = t.endpoint() {
            s.push_str(";endpoint=");
            sf_string(ep, &mut s);
        }
        s.push_str(&format!(";attempts={}", t.attempts));
        let ended: Vec<_> = t.records.iter().map(|r| r.ended.label()).collect();
        s.push_str(";ended=");
        sf_string(&ended.join(" "), &mut s);
        if let Some(stop) = t.stopped {
            s.push_str(";stopped=");
            s.push_str(stop.as_str());
        }
    }
    s
}

/// A call name as it is (names are identifiers), any byte outside a token's set dropped.
fn sf_token(v: &str, out: &mut String) {
    out.extend(v.chars().filter(|c| {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/' | '*' | '!')
    }));
}

/// A structured-field string (RFC 8941 §3.3.3): quoted, `"` and `\` escaped, anything but
/// printable ASCII dropped.
fn sf_string(v: &str, out: &mut String) {
    out.push('"');
    for c in v.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::error::{AttemptRecord, Ended, Stop, Trail};

    #[test]
    fn partial_items_name_the_call_then_the_attempts_header_safely() {
        assert_eq!(partial_item("recs", None, ErrorDetail::Full), "recs");
        let mut trail = Trail {
            upstream: "orders".into(),
            ..Trail::default()
        };
        trail.push(AttemptRecord {
            endpoint: Some("10.0.0.7:80".into()),
            ended: Ended::Failed(crate::error::CallErrorKind::Connect),
        });
        trail.push(AttemptRecord {
            endpoint: Some("h\"x\u{7}:1".into()),
            ended: Ended::Answered(503),
        });
        trail.stopped = Some(Stop::BudgetExhausted);
        let e = CallError::new(crate::error::CallErrorKind::Status(503), "x")
            .with_trail(Some(Box::new(trail)));
        let item = partial_item("orders", Some(&e), ErrorDetail::Full);
        assert_eq!(
            item,
            "orders;kind=upstream_status;upstream=\"orders\";endpoint=\"h\\\"x:1\";attempts=2;\
             ended=\"connect 503\";stopped=budget_exhausted"
        );
        assert!(HeaderValue::from_str(&item).is_ok());
        let mut body = serde_json::json!({"kind": "upstream_status"});
        add_trail(&mut body, &e, ErrorDetail::Full);
        assert_eq!(body["attempts"], 2);
        assert_eq!(body["endpoint"], "h\"x\u{7}:1");
        assert_eq!(body["outcomes"][0]["ended"], "connect");
        assert_eq!(body["outcomes"][1]["ended"], "503");
        assert_eq!(body["retry_stopped"], "budget_exhausted");

        // Brief: the name and the kind, nothing from behind the gateway.
        assert_eq!(
            partial_item("orders", Some(&e), ErrorDetail::Brief),
            "orders;kind=upstream_status"
        );
        let mut body = serde_json::json!({"kind": "upstream_status"});
        add_trail(&mut body, &e, ErrorDetail::Brief);
        assert_eq!(body, serde_json::json!({"kind": "upstream_status"}));
        assert_eq!(client_message(&e, ErrorDetail::Full), "x");
        assert_eq!(
            client_message(&e, ErrorDetail::Brief),
            "the call's service answered with an error"
        );
        // A client's own bad input keeps its message in either mode.
        let input = CallError::new(crate::error::CallErrorKind::Input, "header `a`: bad value");
        assert_eq!(
            client_message(&input, ErrorDetail::Brief),
            "header `a`: bad value"
        );
    }

    fn req(version: Version, hosts: &[&str]) -> Request<()> {
        let mut b = Request::get("/").version(version);
        for h in hosts {
            b = b.header(HOST, *h);
        }
        b.body(()).expect("a request")
    }

    #[test]
    fn the_host_rule() {
        assert!(host_fault(&req(Version::HTTP_11, &[])).is_some());
        assert!(host_fault(&req(Version::HTTP_11, &["a", "b"])).is_some());
        assert!(host_fault(&req(Version::HTTP_10, &["a", "a"])).is_some());
        assert!(host_fault(&req(Version::HTTP_11, &["user@evil"])).is_some());
        assert!(host_fault(&req(Version::HTTP_11, &["a b"])).is_some());
        assert!(host_fault(&req(Version::HTTP_10, &[])).is_none());
        assert!(host_fault(&req(Version::HTTP_2, &[])).is_none());
        assert!(host_fault(&req(Version::HTTP_11, &["example.com:8080"])).is_none());
        assert!(host_fault(&req(Version::HTTP_11, &["[::1]:80"])).is_none());
    }

    proptest::proptest! {
        /// The shortcut never accepts a `Host` that `Authority`'s parse refuses.
        #[test]
        fn a_plain_host_is_a_valid_authority(host in "[a-zA-Z0-9.:@%/ \\[\\]-]{0,12}") {
            if plain_host(host.as_bytes()) {
                proptest::prop_assert!(host.parse::<http::uri::Authority>().is_ok(), "{host:?}");
            }
        }
    }

    #[test]
    fn common_hosts_take_the_shortcut() {
        for h in [
            "example.com",
            "example.com:8080",
            "127.0.0.1:80",
            "a-b.c",
            "localhost",
        ] {
            assert!(plain_host(h.as_bytes()), "{h}");
            assert!(host_fault(&req(Version::HTTP_11, &[h])).is_none(), "{h}");
        }
        for h in ["", "a:1:2", "[::1]:80", "user@evil", "a b", "a/b"] {
            assert!(!plain_host(h.as_bytes()), "{h}");
        }
    }

    #[test]
    fn client_request_ids_are_plain_tokens_or_nothing() {
        let mut h = http::HeaderMap::new();
        assert!(client_request_id(&h).is_none());
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123_x.y:z"));
        assert!(client_request_id(&h).is_some());
        h.insert(REQUEST_ID, HeaderValue::from_static("abc cause=forged"));
        assert!(client_request_id(&h).is_none());
        h.insert(
            REQUEST_ID,
            HeaderValue::from_str(&"a".repeat(129)).expect("ascii"),
        );
        assert!(client_request_id(&h).is_none());
        assert_ne!(new_request_id(), new_request_id());
    }

    #[test]
    fn made_up_ids_are_a_16_digit_prefix_and_a_counter_in_hex() {
        let a = new_request_id();
        let b = new_request_id();
        let parse = |v: &HeaderValue| {
            let s = v.to_str().expect("ascii").to_owned();
            let (prefix, n) = s.split_once('-').expect("a dash");
            assert_eq!(prefix.len(), 16, "{s}");
            assert!(s.bytes().all(|c| c == b'-' || c.is_ascii_hexdigit()));
            assert!(!s.bytes().any(|c| c.is_ascii_uppercase()));
            (prefix.to_owned(), u64::from_str_radix(n, 16).expect("hex"))
        };
        let (pa, na) = parse(&a);
        let (pb, nb) = parse(&b);
        assert_eq!(pa, pb);
        assert!(nb > na, "{na} then {nb}");
    }
}
