//! One span's `Span` message, written in place into the batch: the SERVER (or CONSUMER) span of
//! a request and one span per upstream attempt, with the attributes the prost-typed encoder
//! gives them.

use std::fmt::Write;

use super::key;
use super::protobuf::{
    begin_message, end_message, put_bytes, put_fixed64, put_str, put_tag, put_varint,
    put_varint_field, FIXED32, LEN,
};
use super::value::{put_attr, Val};
use crate::span::{CallRecord, FinishedTrace, RootKind};

const KIND_INTERNAL: u64 = 1;
const KIND_SERVER: u64 = 2;
const KIND_CLIENT: u64 = 3;
const KIND_PRODUCER: u64 = 4;
const KIND_CONSUMER: u64 = 5;
const STATUS_ERROR: u64 = 2;
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

/// Scratch buffers reused from span to span.
#[derive(Default)]
pub(super) struct Encoder {
    text: String,
    error_type: String,
}

impl Encoder {
    /// ScopeSpans { spans = 2 }: the SERVER (or CONSUMER) span, appended to `b`.
    pub(super) fn root_span(&mut self, t: &FinishedTrace, b: &mut Vec<u8>) {
        let r = &t.root;
        let o = &t.outcome;
        self.text.clear();
        let kind = match r.kind {
            // A request no route matched has no `http.route`; its span is named by the
            // method alone (the semantic conventions' rule, so names stay low-cardinality).
            RootKind::Server if r.route.is_empty() => {
                self.text.push_str(r.method.as_str());
                KIND_SERVER
            }
            RootKind::Server => {
                self.text.push_str(r.method.as_str());
                self.text.push(' ');
                self.text.push_str(&r.route);
                KIND_SERVER
            }
            RootKind::Consumer => {
                self.text.push_str("process ");
                self.text.push_str(&r.route);
                KIND_CONSUMER
            }
        };
        let mut flags = u32::from(t.sampled) | FLAG_HAS_IS_REMOTE;
        if t.parent.is_some() {
            flags |= FLAG_IS_REMOTE;
        }
        let body = begin_message(b, 2);
        span_head(
            b,
            t,
            &t.span_id.0,
            t.parent.as_ref().map(|p| &p.0[..]),
            &self.text,
            kind,
            flags,
        );
        put_fixed64(b, 7, t.epoch_ns);
        put_fixed64(b, 8, t.epoch_ns.saturating_add(nanos(t.duration)));
        put_attr(b, &key::HTTP_REQUEST_METHOD, &Val::Str(r.method.as_str()));
        if !r.route.is_empty() {
            put_attr(b, &key::HTTP_ROUTE, &Val::Str(&r.route));
        }
        put_attr(b, &key::URL_PATH, &Val::Str(&r.path));
        put_attr(
            b,
            &key::HTTP_RESPONSE_STATUS_CODE,
            &Val::Int(i64::from(o.status)),
        );
        put_attr(
            b,
            &key::HTTP_RESPONSE_BODY_SIZE,
            &Val::Int(i64::try_from(o.response_bytes).unwrap_or(i64::MAX)),
        );
        put_attr(b, &key::REQUEST_ID, &Val::Str(&t.request_id));
        if !o.partial.is_empty() {
            put_attr(b, &key::PARTIAL_CALLS, &Val::Strs(&o.partial));
        }
        let error = o.is_error();
        if error {
            self.error_type.clear();
            match &o.error_type {
                Some(k) => self.error_type.push_str(k),
                None => {
                    let _ = write!(self.error_type, "{}", o.status);
                }
            }
            put_attr(b, &key::ERROR_TYPE, &Val::Str(&self.error_type));
        }
        put_status(b, error);
        end_message(b, body);
    }

    /// ScopeSpans { spans = 2 }: one attempt's span, appended to `b`.
    pub(super) fn call_span(&mut self, t: &FinishedTrace, c: &CallRecord, b: &mut Vec<u8>) {
        let i = &c.info;
        let o = &c.outcome;
        let kind = if i.enqueue {
            KIND_PRODUCER
        } else if i.endpoint.is_some() {
            KIND_CLIENT
        } else {
            KIND_INTERNAL
        };
        let body = begin_message(b, 2);
        span_head(
            b,
            t,
            &c.span_id.0,
            Some(&t.span_id.0),
            &i.call,
            kind,
            u32::from(t.sampled) | FLAG_HAS_IS_REMOTE,
        );
        put_fixed64(b, 7, t.epoch_ns.saturating_add(nanos(c.start)));
        put_fixed64(b, 8, t.epoch_ns.saturating_add(nanos(c.end)));
        put_attr(b, &key::HTTP_REQUEST_METHOD, &Val::Str(i.method.as_str()));
        put_attr(b, &key::URL_PATH, &Val::Str(&i.path));
        put_attr(b, &key::CALL, &Val::Str(&i.call));
        put_attr(b, &key::UPSTREAM, &Val::Str(&i.upstream));
        put_attr(b, &key::ATTEMPT, &Val::Int(i64::from(i.attempt)));
        put_attr(b, &key::ATTEMPT_KIND, &Val::Str(i.attempt_kind.as_str()));
        if i.attempt > 1 {
            put_attr(
                b,
                &key::HTTP_REQUEST_RESEND_COUNT,
                &Val::Int(i64::from(i.attempt - 1)),
            );
        }
        if let Some(e) = &i.endpoint {
            put_attr(b, &key::SERVER_ADDRESS, &Val::Str(&e.address));
            put_attr(b, &key::SERVER_PORT, &Val::Int(i64::from(e.port)));
            // `{scheme}://{address}:{port}{path}`, the address in brackets when it is an IPv6
            // literal; pushed piece by piece, not through `write!`'s formatting machinery.
            let t = &mut self.text;
            t.clear();
            t.push_str(if e.https { "https://" } else { "http://" });
            if e.address.contains(':') {
                t.push('[');
                t.push_str(&e.address);
                t.push(']');
            } else {
                t.push_str(&e.address);
            }
            t.push(':');
            push_decimal(t, e.port);
            t.push_str(&i.path);
            put_attr(b, &key::URL_FULL, &Val::Str(&self.text));
        }
        if let Some(s) = o.status {
            put_attr(b, &key::HTTP_RESPONSE_STATUS_CODE, &Val::Int(i64::from(s)));
        }
        if let Some(n) = o.response_bytes {
            put_attr(
                b,
                &key::HTTP_RESPONSE_BODY_SIZE,
                &Val::Int(i64::try_from(n).unwrap_or(i64::MAX)),
            );
        }
        if let Some(cache) = o.cache {
            put_attr(b, &key::CACHE_OUTCOME, &Val::Str(cache.as_str()));
        }
        if i.enqueue {
            put_attr(b, &key::QUEUE_ENQUEUE, &Val::Bool(true));
        }
        if o.cancelled {
            put_attr(b, &key::CANCELLED, &Val::Bool(true));
        }
        if let Some(fb) = c.first_byte {
            let ms = fb.saturating_sub(c.start).as_secs_f64() * 1e3;
            put_attr(b, &key::FIRST_BYTE_MS, &Val::Double(ms));
        }
        let error = o.is_error();
        if error {
            self.error_type.clear();
            match (&o.error_type, o.status) {
                (Some(k), _) => self.error_type.push_str(k),
                (None, Some(s)) => {
                    let _ = write!(self.error_type, "{s}");
                }
                (None, None) => self.error_type.push_str("_OTHER"),
            }
            put_attr(b, &key::ERROR_TYPE, &Val::Str(&self.error_type));
        }
        put_status(b, error);
        end_message(b, body);
    }
}

/// `n` in decimal, as `write!(t, "{n}")` would.
pub(super) fn push_decimal(t: &mut String, n: u16) {
    let mut digits = [0u8; 5];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        t.push(char::from(d));
    }
}

/// Span fields 1–6 and 16: ids, trace state, name, kind, flags.
fn span_head(
    b: &mut Vec<u8>,
    t: &FinishedTrace,
    span_id: &[u8],
    parent: Option<&[u8]>,
    name: &str,
    kind: u64,
    flags: u32,
) {
    put_bytes(b, 1, &t.trace_id.0);
    put_bytes(b, 2, span_id);
    if let Some(ts) = &t.tracestate {
        put_str(b, 3, ts);
    }
    if let Some(p) = parent {
        put_bytes(b, 4, p);
    }
    put_str(b, 5, name);
    put_varint_field(b, 6, kind);
    put_tag(b, 16, FIXED32);
    b.extend_from_slice(&flags.to_le_bytes());
}

/// Status { code = 3 } (unset: an empty message, as prost writes it).
fn put_status(b: &mut Vec<u8>, error: bool) {
    put_tag(b, 15, LEN);
    if error {
        put_varint(b, 2);
        put_varint_field(b, 3, STATUS_ERROR);
    } else {
        put_varint(b, 0);
    }
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
