//! The exporter's encoder: the same `ExportTraceServiceRequest` bytes as
//! [`encode_batch`](super::encode_batch) + `prost::Message::encode_to_vec`, written field by field
//! into one buffer, without building the owned messages (two small strings per attribute and a
//! vector per span). The prost-typed encoder stays the reference: a property test decodes this
//! one's output with the prost types and compares it with the reference, field for field.
//!
//! Field numbers are those of `opentelemetry/proto/{collector/trace,trace,common,resource}/v1`.

use std::fmt::Write;

use bytes::Bytes;

use super::encode::{ResourceInfo, SCOPE_NAME};
use crate::span::{CallRecord, FinishedTrace, RootKind};

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

const KIND_INTERNAL: u64 = 1;
const KIND_SERVER: u64 = 2;
const KIND_CLIENT: u64 = 3;
const KIND_PRODUCER: u64 = 4;
const KIND_CONSUMER: u64 = 5;
const STATUS_ERROR: u64 = 2;
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

/// An attribute value, borrowed from the finished trace.
enum Val<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    Double(f64),
    Strs(&'a [std::sync::Arc<str>]),
}

/// Encode one export request for these traces.
pub fn encode_request<'a, I>(resource: &ResourceInfo, traces: I) -> Bytes
where
    I: IntoIterator<Item = &'a FinishedTrace>,
{
    encode_request_sized(resource, traces, 0)
}

/// Bytes a span takes, about (a composed call's CLIENT span is ~450): what the buffer is sized
/// by, so that a batch is written without growing (each growth copied all of it).
const SPAN_BYTES: usize = 512;

/// [`encode_request`] for traces holding `spans` spans in all (a hint: the buffer is sized for
/// them, so it does not grow and copy itself while the batch is written).
///
/// The spans are written once, into the buffer the request goes out in: room is left in front
/// of them for the enclosing messages' tags and lengths (known only once the spans are
/// written), which then fill the end of that room; the bytes before them are skipped by
/// slicing, not copied away. Before, the spans went into a buffer of their own and were copied
/// after the head, one more copy of the whole batch (and its growth's copies) per export.
pub fn encode_request_sized<'a, I>(resource: &ResourceInfo, traces: I, spans: usize) -> Bytes
where
    I: IntoIterator<Item = &'a FinishedTrace>,
{
    // ScopeSpans { scope = 1, spans = 2 }
    let mut scope = Vec::with_capacity(64);
    put_str(&mut scope, 1, SCOPE_NAME);
    put_str(&mut scope, 2, env!("CARGO_PKG_VERSION"));
    // Resource { attributes = 1 }
    let mut res = Vec::with_capacity(128);
    for (k, v) in [
        ("service.name", resource.service_name.as_str()),
        ("telemetry.sdk.name", SCOPE_NAME),
        ("telemetry.sdk.language", "rust"),
    ] {
        put_kv(&mut res, 1, k, &Val::Str(v));
    }
    // The head is both messages plus two tags and two lengths (at most 10 bytes each).
    let room = framed(res.len()) + framed(scope.len()) + 2 * 11;
    let mut b = Vec::with_capacity(room + spans.saturating_mul(SPAN_BYTES).max(4096));
    b.resize(room, 0);
    let mut e = Encoder::default();
    for t in traces {
        e.root_span(t, &mut b);
        for c in &t.calls {
            e.call_span(t, c, &mut b);
        }
    }
    let scope_spans_len = framed(scope.len()) + (b.len() - room);
    // ResourceSpans { resource = 1, scope_spans = 2 }
    let rs_len = framed(res.len()) + framed(scope_spans_len);
    // ExportTraceServiceRequest { resource_spans = 1 }
    let mut head = Vec::with_capacity(room);
    put_tag(&mut head, 1, LEN);
    put_varint(&mut head, rs_len as u64);
    put_len_prefixed(&mut head, 1, &res);
    put_tag(&mut head, 2, LEN);
    put_varint(&mut head, scope_spans_len as u64);
    put_len_prefixed(&mut head, 1, &scope);
    let start = room - head.len();
    b[start..room].copy_from_slice(&head);
    Bytes::from(b).slice(start..)
}

/// Scratch buffers reused from span to span.
#[derive(Default)]
struct Encoder {
    text: String,
    error_type: String,
}

impl Encoder {
    /// ScopeSpans { spans = 2 }: the SERVER (or CONSUMER) span, appended to `b`.
    fn root_span(&mut self, t: &FinishedTrace, b: &mut Vec<u8>) {
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
    fn call_span(&mut self, t: &FinishedTrace, c: &CallRecord, b: &mut Vec<u8>) {
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
fn push_decimal(t: &mut String, n: u16) {
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

/// The span attributes' keys, each with its `KeyValue.key` tag and length before it: written
/// with one fixed-size copy instead of a tag, a length and a `memcpy` per attribute.
mod key {
    use super::super::encode::attr;

    /// `key` as the bytes of `KeyValue { key = 1 }`: tag, one-byte length, the key.
    const fn framed<const N: usize>(key: &str) -> [u8; N] {
        let k = key.as_bytes();
        assert!(
            k.len() + 2 == N && k.len() < 0x80,
            "a key of under 128 bytes"
        );
        let mut out = [0u8; N];
        out[0] = 1 << 3 | super::LEN as u8;
        out[1] = k.len() as u8;
        let mut i = 0;
        while i < k.len() {
            out[i + 2] = k[i];
            i += 1;
        }
        out
    }

    macro_rules! framed {
        ($name:ident, $key:expr) => {
            pub(super) const $name: [u8; $key.len() + 2] = framed($key);
        };
    }

    framed!(ATTEMPT, attr::ATTEMPT);
    framed!(ATTEMPT_KIND, attr::ATTEMPT_KIND);
    framed!(CACHE_OUTCOME, attr::CACHE_OUTCOME);
    framed!(CALL, attr::CALL);
    framed!(CANCELLED, attr::CANCELLED);
    framed!(ERROR_TYPE, attr::ERROR_TYPE);
    framed!(FIRST_BYTE_MS, attr::FIRST_BYTE_MS);
    framed!(HTTP_REQUEST_METHOD, attr::HTTP_REQUEST_METHOD);
    framed!(HTTP_REQUEST_RESEND_COUNT, attr::HTTP_REQUEST_RESEND_COUNT);
    framed!(HTTP_RESPONSE_BODY_SIZE, attr::HTTP_RESPONSE_BODY_SIZE);
    framed!(HTTP_RESPONSE_STATUS_CODE, attr::HTTP_RESPONSE_STATUS_CODE);
    framed!(HTTP_ROUTE, attr::HTTP_ROUTE);
    framed!(PARTIAL_CALLS, attr::PARTIAL_CALLS);
    framed!(QUEUE_ENQUEUE, attr::QUEUE_ENQUEUE);
    framed!(REQUEST_ID, attr::REQUEST_ID);
    framed!(SERVER_ADDRESS, attr::SERVER_ADDRESS);
    framed!(SERVER_PORT, attr::SERVER_PORT);
    framed!(UPSTREAM, attr::UPSTREAM);
    framed!(URL_FULL, attr::URL_FULL);
    framed!(URL_PATH, attr::URL_PATH);
}

/// Span { attributes = 9 }: one `KeyValue` with a pre-framed key (see [`key`]).
///
/// Most attributes are a short string or a small integer, whose `KeyValue` is under 128 bytes:
/// every length then takes one byte, and the tags and lengths are written as fixed-size arrays
/// (stores the compiler inlines) instead of a varint loop and a push each (~200 instructions
/// an attribute, half of a span's encoding).
fn put_attr<const N: usize>(b: &mut Vec<u8>, key: &[u8; N], v: &Val<'_>) {
    const ATTR_TAG: u8 = 9 << 3 | LEN as u8;
    const VALUE_TAG: u8 = 2 << 3 | LEN as u8;
    match v {
        Val::Str(s) if N + s.len() + 4 < 0x80 => {
            let any_len = 2 + s.len();
            b.extend_from_slice(&[ATTR_TAG, (N + 2 + any_len) as u8]);
            b.extend_from_slice(key);
            b.extend_from_slice(&[VALUE_TAG, any_len as u8, 1 << 3 | LEN as u8, s.len() as u8]);
            b.extend_from_slice(s.as_bytes());
            return;
        }
        Val::Int(i) if N + 13 < 0x80 => {
            let mut digits = [0u8; 10];
            let n = varint_into(&mut digits, *i as u64);
            let any_len = 1 + n;
            b.extend_from_slice(&[ATTR_TAG, (N + 2 + any_len) as u8]);
            b.extend_from_slice(key);
            b.extend_from_slice(&[VALUE_TAG, any_len as u8, 3 << 3 | VARINT as u8]);
            b.extend_from_slice(&digits[..n]);
            return;
        }
        _ => {}
    }
    let any_len = any_value_len(v);
    put_tag(b, 9, LEN);
    put_varint(b, (N + framed(any_len)) as u64);
    b.extend_from_slice(key);
    put_tag(b, 2, LEN);
    put_varint(b, any_len as u64);
    put_any_value_body(b, v);
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

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// `v` as a varint into `out`; the bytes written.
fn varint_into(out: &mut [u8; 10], mut v: u64) -> usize {
    let mut n = 0;
    while v >= 0x80 {
        out[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    out[n] = v as u8;
    n + 1
}

fn put_varint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push((v as u8) | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

fn put_tag(b: &mut Vec<u8>, field: u32, wire: u32) {
    put_varint(b, u64::from(field << 3 | wire));
}

fn put_varint_field(b: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        put_tag(b, field, VARINT);
        put_varint(b, v);
    }
}

fn put_fixed64(b: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        put_tag(b, field, FIXED64);
        b.extend_from_slice(&v.to_le_bytes());
    }
}

fn put_bytes(b: &mut Vec<u8>, field: u32, v: &[u8]) {
    if !v.is_empty() {
        put_len_prefixed(b, field, v);
    }
}

fn put_str(b: &mut Vec<u8>, field: u32, v: &str) {
    put_bytes(b, field, v.as_bytes());
}

/// Start a LEN field whose length is known only once its body is written: the tag, and two
/// bytes held for the length (a span's length needs two: 128 to 16,383 bytes). Returns where
/// the body starts, for [`end_message`]. Writing the body in place saves copying each span
/// from a scratch buffer into the batch.
fn begin_message(b: &mut Vec<u8>, field: u32) -> usize {
    put_tag(b, field, LEN);
    b.extend_from_slice(&[0, 0]);
    b.len()
}

/// Write the length of the message begun at `body` (see [`begin_message`]) into the bytes held
/// for it: in place when it takes two bytes, else by moving the body (a shorter or longer
/// length, as prost writes it: the shortest varint).
fn end_message(b: &mut Vec<u8>, body: usize) {
    let len = b.len() - body;
    if (0x80..0x4000).contains(&len) {
        b[body - 2] = (len as u8) | 0x80;
        b[body - 1] = (len >> 7) as u8;
    } else {
        let mut prefix = Vec::with_capacity(10);
        put_varint(&mut prefix, len as u64);
        b.splice(body - 2..body, prefix);
    }
}

fn put_len_prefixed(b: &mut Vec<u8>, field: u32, v: &[u8]) {
    put_tag(b, field, LEN);
    put_varint(b, v.len() as u64);
    b.extend_from_slice(v);
}

/// Length of a LEN field's body with its tag and length prefix (field numbers below 16).
fn framed(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// The encoded size of an AnyValue's body (a oneof member is written even when it holds its
/// type's default, as prost does).
fn any_value_len(v: &Val<'_>) -> usize {
    match v {
        Val::Str(s) => framed(s.len()),
        Val::Int(i) => 1 + varint_len(*i as u64),
        Val::Bool(_) => 2,
        Val::Double(_) => 9,
        Val::Strs(list) => framed(array_len(list)),
    }
}

/// The encoded size of an ArrayValue of strings.
fn array_len(list: &[std::sync::Arc<str>]) -> usize {
    list.iter()
        .map(|s| framed(any_value_len(&Val::Str(s))))
        .sum()
}

/// KeyValue { key = 1, value = 2: AnyValue { string 1 | bool 2 | int 3 | double 4 | array 5 } }
fn put_kv(b: &mut Vec<u8>, field: u32, key: &str, v: &Val<'_>) {
    let any_len = any_value_len(v);
    let kv_len = framed(key.len()) + framed(any_len);
    put_tag(b, field, LEN);
    put_varint(b, kv_len as u64);
    put_str(b, 1, key);
    put_tag(b, 2, LEN);
    put_varint(b, any_len as u64);
    put_any_value_body(b, v);
}

fn put_any_value_body(b: &mut Vec<u8>, v: &Val<'_>) {
    match v {
        Val::Str(s) => put_len_prefixed(b, 1, s.as_bytes()),
        Val::Bool(x) => {
            put_tag(b, 2, VARINT);
            put_varint(b, u64::from(*x));
        }
        Val::Int(i) => {
            put_tag(b, 3, VARINT);
            put_varint(b, *i as u64);
        }
        Val::Double(d) => {
            put_tag(b, 4, FIXED64);
            b.extend_from_slice(&d.to_bits().to_le_bytes());
        }
        Val::Strs(list) => {
            put_tag(b, 5, LEN);
            put_varint(b, array_len(list) as u64);
            for s in list.iter() {
                let inner = any_value_len(&Val::Str(s));
                put_tag(b, 1, LEN);
                put_varint(b, inner as u64);
                put_any_value_body(b, &Val::Str(s));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::encode::attr;
    use super::*;

    #[test]
    fn decimals_are_written_as_format_writes_them() {
        for n in [0u16, 7, 10, 99, 443, 8080, 10000, u16::MAX] {
            let mut t = String::from("x");
            push_decimal(&mut t, n);
            assert_eq!(t, format!("x{n}"));
        }
    }

    #[test]
    fn messages_written_in_place_get_the_shortest_length_prefix() {
        for len in [0usize, 1, 127, 128, 300, 16_383, 16_384, 100_000] {
            let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut want = vec![0xAA];
            put_len_prefixed(&mut want, 2, &body);
            let mut got = vec![0xAA];
            let at = begin_message(&mut got, 2);
            got.extend_from_slice(&body);
            end_message(&mut got, at);
            assert_eq!(got, want, "{len}");
        }
    }

    /// The short-attribute paths write what the general one writes, at every length and
    /// integer size around their bounds.
    #[test]
    fn short_attributes_are_written_as_the_general_path_writes_them() {
        fn general<const N: usize>(key: &[u8; N], name: &str, v: &Val<'_>) -> Vec<u8> {
            let mut want = Vec::new();
            put_kv(&mut want, 9, name, v);
            let mut got = Vec::new();
            put_attr(&mut got, key, v);
            assert_eq!(got, want);
            got
        }
        for len in 0..200 {
            let text = "x".repeat(len);
            general(&key::URL_PATH, attr::URL_PATH, &Val::Str(&text));
            general(
                &key::HTTP_REQUEST_RESEND_COUNT,
                attr::HTTP_REQUEST_RESEND_COUNT,
                &Val::Str(&text),
            );
        }
        for i in [
            0i64,
            1,
            127,
            128,
            200,
            16_383,
            16_384,
            65_535,
            i64::MAX,
            -1,
            i64::MIN,
        ] {
            general(&key::SERVER_PORT, attr::SERVER_PORT, &Val::Int(i));
            general(
                &key::HTTP_RESPONSE_STATUS_CODE,
                attr::HTTP_RESPONSE_STATUS_CODE,
                &Val::Int(i),
            );
        }
    }

    #[test]
    fn framed_keys_are_the_key_field_as_prost_writes_it() {
        let mut want = Vec::new();
        put_str(&mut want, 1, attr::HTTP_RESPONSE_STATUS_CODE);
        assert_eq!(&key::HTTP_RESPONSE_STATUS_CODE[..], &want[..]);
        let mut a = Vec::new();
        put_attr(&mut a, &key::URL_PATH, &Val::Str("/x"));
        let mut b = Vec::new();
        put_kv(&mut b, 9, attr::URL_PATH, &Val::Str("/x"));
        assert_eq!(a, b);
    }
}
