//! Reading the trace context and request id off an incoming request, and making new ids.
//!
//! The spec's rule for several `traceparent` fields (a proxy that merged two requests, or an
//! attacker) is to treat the header as invalid: we start a new trace and drop `tracestate` too.

use http::header::HeaderName;
use http::HeaderMap;
use rand::RngCore;

use crate::context::{sanitize_tracestate, SpanId, TraceId, TraceParent};
use crate::request_id::RequestId;

/// `traceparent`, lowercase (HTTP field names are case-insensitive; `http` stores them so).
pub const TRACEPARENT: &str = "traceparent";
/// `tracestate`.
pub const TRACESTATE: &str = "tracestate";
/// `x-request-id`: accepted from the client or generated, and passed on to every upstream.
pub const X_REQUEST_ID: &str = "x-request-id";

/// [`TRACEPARENT`] as a header name. Built once: `HeaderName::from_static` called per request
/// matches the name against every standard header before it finds it is not one, and a `&str`
/// key is parsed and lowercased at each lookup.
pub const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static(TRACEPARENT);
/// [`TRACESTATE`] as a header name.
pub const TRACESTATE_HEADER: HeaderName = HeaderName::from_static(TRACESTATE);
/// [`X_REQUEST_ID`] as a header name.
pub const X_REQUEST_ID_HEADER: HeaderName = HeaderName::from_static(X_REQUEST_ID);

/// The longest client-supplied request id we keep; longer ones are replaced (they end up in logs
/// and in every upstream request, so a client must not make them arbitrary large).
pub const REQUEST_ID_MAX: usize = 128;

/// What the client sent that telemetry cares about, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Incoming {
    /// The caller's span, when it sent exactly one valid `traceparent`.
    pub parent: Option<TraceParent>,
    /// The caller's `tracestate`, cleaned; `None` whenever `parent` is.
    pub tracestate: Option<String>,
    /// The caller's `X-Request-Id`, when it is 1..=[`REQUEST_ID_MAX`] visible ASCII characters.
    pub request_id: Option<RequestId>,
    /// Set when the caller is not trusted to decide sampling (the gateway's `parent_sampled`):
    /// the trace still joins the caller's, but the head decision is the ratio's on a fresh
    /// random id (not the caller's trace id, which it chose too), so a client cannot have every
    /// one of its requests exported by sending `-01`, nor by sending an id the ratio keeps.
    pub ignore_sampled: bool,
}

impl Incoming {
    /// Read the headers of one incoming request.
    pub fn from_headers(headers: &HeaderMap) -> Incoming {
        Incoming {
            request_id: headers
                .get(&X_REQUEST_ID_HEADER)
                .and_then(|v| RequestId::copied(v.as_bytes())),
            ..Incoming::trace_context(headers)
        }
    }

    /// Only the trace context (`traceparent`, `tracestate`) of one incoming request, for a
    /// caller that has read (and judged) the client's request id itself.
    pub fn trace_context(headers: &HeaderMap) -> Incoming {
        let mut values = headers.get_all(&TRACEPARENT_HEADER).iter();
        let parent = match (values.next(), values.next()) {
            (Some(one), None) => TraceParent::parse(one.as_bytes()).ok(),
            _ => None,
        };
        let tracestate = parent.and_then(|_| {
            sanitize_tracestate(
                headers
                    .get_all(&TRACESTATE_HEADER)
                    .iter()
                    .map(|v| v.as_bytes()),
            )
        });
        Incoming {
            parent,
            tracestate,
            request_id: None,
            ignore_sampled: false,
        }
    }
}

/// A new random, non-zero trace id (the spec asks for randomness in at least the right-most
/// 7 bytes; all 16 are random here).
pub fn new_trace_id() -> TraceId {
    let mut rng = rand::rng();
    loop {
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        let id = TraceId(id);
        if !id.is_zero() {
            return id;
        }
    }
}

/// A new random, non-zero span id.
pub fn new_span_id() -> SpanId {
    let mut rng = rand::rng();
    loop {
        let id = SpanId(rng.next_u64().to_ne_bytes());
        if !id.is_zero() {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn one_valid_traceparent_is_taken_with_its_tracestate() {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(VALID));
        h.insert(TRACESTATE, HeaderValue::from_static("rojo=1"));
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        let inc = Incoming::from_headers(&h);
        assert!(inc.parent.is_some());
        assert_eq!(inc.tracestate.as_deref(), Some("rojo=1"));
        assert_eq!(inc.request_id.as_deref(), Some("abc-123"));
    }

    #[test]
    fn two_traceparents_or_an_invalid_one_start_a_new_trace_without_tracestate() {
        let mut h = HeaderMap::new();
        h.append(TRACEPARENT, HeaderValue::from_static(VALID));
        h.append(TRACEPARENT, HeaderValue::from_static(VALID));
        h.insert(TRACESTATE, HeaderValue::from_static("rojo=1"));
        let inc = Incoming::from_headers(&h);
        assert_eq!((inc.parent, inc.tracestate), (None, None));

        let mut h = HeaderMap::new();
        h.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        );
        h.insert(TRACESTATE, HeaderValue::from_static("rojo=1"));
        let inc = Incoming::from_headers(&h);
        assert_eq!((inc.parent, inc.tracestate), (None, None));
    }

    #[test]
    fn the_header_name_constants_are_the_names() {
        assert_eq!(TRACEPARENT_HEADER.as_str(), TRACEPARENT);
        assert_eq!(TRACESTATE_HEADER.as_str(), TRACESTATE);
        assert_eq!(X_REQUEST_ID_HEADER.as_str(), X_REQUEST_ID);
    }

    #[test]
    fn request_ids_are_bounded_and_visible() {
        assert_eq!(RequestId::copied(b""), None);
        assert_eq!(RequestId::copied(b"a b"), None);
        assert_eq!(RequestId::copied(&[b'a'; REQUEST_ID_MAX + 1]), None);
        assert!(RequestId::copied(&[b'a'; REQUEST_ID_MAX]).is_some());
    }

    #[test]
    fn generated_ids_are_non_zero_and_distinct() {
        let a = new_trace_id();
        let b = new_trace_id();
        assert!(!a.is_zero() && a != b);
        assert!(!new_span_id().is_zero());
    }
}
