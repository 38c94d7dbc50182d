//! One span's `Span` message, written in place into the batch: the SERVER (or CONSUMER) span of
//! a request and one span per upstream attempt, with the attributes the prost-typed encoder
//! gives them.

use std::fmt::Write;

use super::blocks::{put_call_attempt, put_call_name_method, put_root_head, Blocks};
use super::key;
use super::protobuf::{end_message, put_str, FIXED32, FIXED64, LEN, VARINT};
use super::value::{put_attr, put_joined_attr, Val};
use crate::span::{CallRecord, FinishedTrace, RootKind};

const KIND_INTERNAL: u8 = 1;
const KIND_SERVER: u8 = 2;
const KIND_CLIENT: u8 = 3;
const KIND_PRODUCER: u8 = 4;
const KIND_CONSUMER: u8 = 5;
const STATUS_ERROR: u8 = 2;
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

/// Scratch buffers and the blocks' cache, reused from span to span.
#[derive(Default)]
pub(super) struct Encoder {
    blocks: Blocks,
    text: String,
    /// A long `url.full`, joined (see [`put_joined_attr`]).
    joined: Vec<u8>,
    error_type: String,
}

impl Encoder {
    /// ScopeSpans { spans = 2 }: the SERVER (or CONSUMER) span, appended to `b`.
    pub(super) fn root_span(&mut self, t: &FinishedTrace, b: &mut Vec<u8>) {
        let r = &t.root;
        let o = &t.outcome;
        let kind = match r.kind {
            RootKind::Server => KIND_SERVER,
            RootKind::Consumer => KIND_CONSUMER,
        };
        let mut flags = u32::from(t.sampled) | FLAG_HAS_IS_REMOTE;
        if t.parent.is_some() {
            flags |= FLAG_IS_REMOTE;
        }
        let body = span_head(
            b,
            t,
            &t.span_id.0,
            t.parent.as_ref().map(|p| &p.0),
            kind,
            flags,
            [t.epoch_ns, t.epoch_ns.saturating_add(nanos(t.duration))],
        );
        // The name, method and route: copied for a matched route, written for the others.
        if r.kind == RootKind::Server && !r.route.is_empty() {
            b.extend_from_slice(self.blocks.root(r));
        } else {
            put_root_head(b, r, &mut self.text);
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
        let body = span_head(
            b,
            t,
            &c.span_id.0,
            Some(&t.span_id.0),
            kind,
            u32::from(t.sampled) | FLAG_HAS_IS_REMOTE,
            [
                t.epoch_ns.saturating_add(nanos(c.start)),
                t.epoch_ns.saturating_add(nanos(c.end)),
            ],
        );
        match &i.endpoint {
            // An attempt that went out: its call's and endpoint's parts copied (see
            // [`blocks`](super::blocks)), `url.path` and `url.full`'s path between them.
            Some(e) => {
                let blocks = self.blocks.call(i, e);
                b.extend_from_slice(blocks.name_method);
                put_attr(b, &key::URL_PATH, &Val::Str(&i.path));
                b.extend_from_slice(blocks.attempt);
                b.extend_from_slice(blocks.endpoint);
                put_joined_attr(
                    b,
                    &key::URL_FULL,
                    &[blocks.url_prefix, i.path.as_bytes()],
                    &mut self.joined,
                );
            }
            // A cache answer or an enqueue: their `Arc`s are made per span, so they are
            // written, not cached.
            None => {
                put_call_name_method(b, i);
                put_attr(b, &key::URL_PATH, &Val::Str(&i.path));
                put_call_attempt(b, i);
            }
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

/// `n` in decimal, as `write!(t, "{n}")` would, in `digits` (ASCII digits: no UTF-8 check,
/// which cost ~60 instructions a span).
pub(super) fn decimal(n: u16, digits: &mut [u8; 5]) -> &[u8] {
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
    &digits[i..]
}

/// ScopeSpans { spans = 2 }: a span's tag and the two bytes held for its length (see
/// [`begin_message`](super::protobuf::begin_message)), then its fields 1–4, 6–8 and 16: ids,
/// trace state, kind, start and end times, flags (the name is in the blocks). Returns where
/// the span's body starts, for `end_message`.
///
/// The fixed-size fields go in as one array (one capacity check and one copy, where the
/// message's start, the ids, the kind and flags and each time were a check and a copy each).
/// The fields are not in field-number order, which protobuf allows (a decoder takes them in
/// any order; the property test decodes and compares).
#[inline(always)]
fn span_head(
    b: &mut Vec<u8>,
    t: &FinishedTrace,
    span_id: &[u8; 8],
    parent: Option<&[u8; 8]>,
    kind: u8,
    flags: u32,
    times: [u64; 2],
) -> usize {
    // The span's tag and held length (3), trace_id = 1 (2 + 16), span_id = 2 (2 + 8),
    // parent_span_id = 4 (2 + 8), kind and flags (8), the times (2 × 9).
    let mut head = [0u8; 67];
    head[..5].copy_from_slice(&[2 << 3 | LEN as u8, 0, 0, 1 << 3 | LEN as u8, 16]);
    head[5..21].copy_from_slice(&t.trace_id.0);
    head[21..23].copy_from_slice(&[2 << 3 | LEN as u8, 8]);
    head[23..31].copy_from_slice(span_id);
    let mut n = match parent {
        Some(p) => {
            head[31..33].copy_from_slice(&[4 << 3 | LEN as u8, 8]);
            head[33..41].copy_from_slice(p);
            41
        }
        None => 31,
    };
    // kind = 6 (a one-byte varint, never 0 here: prost would leave 0 out), flags = 16
    // (fixed32; its tag, 133, is a two-byte varint).
    const FLAGS_TAG: u32 = 16 << 3 | FIXED32;
    debug_assert!(kind != 0 && kind < 0x80);
    let f = flags.to_le_bytes();
    head[n..n + 8].copy_from_slice(&[
        6 << 3 | VARINT as u8,
        kind,
        (FLAGS_TAG as u8) | 0x80,
        (FLAGS_TAG >> 7) as u8,
        f[0],
        f[1],
        f[2],
        f[3],
    ]);
    n += 8;
    // start_time_unix_nano = 7, end_time_unix_nano = 8 (fixed64; a zero is left out, as
    // prost leaves out a default field).
    for (field, v) in [(7u8, times[0]), (8, times[1])] {
        if v != 0 {
            head[n] = field << 3 | FIXED64 as u8;
            head[n + 1..n + 9].copy_from_slice(&v.to_le_bytes());
            n += 9;
        }
    }
    b.extend_from_slice(&head[..n]);
    let body = b.len() - (n - 3);
    if let Some(ts) = &t.tracestate {
        put_str(b, 3, ts);
    }
    body
}

/// Status { code = 3 } (unset: an empty message, as prost writes it), as one array.
fn put_status(b: &mut Vec<u8>, error: bool) {
    const TAG: u8 = 15 << 3 | LEN as u8;
    if error {
        b.extend_from_slice(&[TAG, 2, 3 << 3 | VARINT as u8, STATUS_ERROR]);
    } else {
        b.extend_from_slice(&[TAG, 0]);
    }
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
