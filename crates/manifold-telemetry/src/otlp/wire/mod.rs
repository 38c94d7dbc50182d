//! The exporter's encoder: the same `ExportTraceServiceRequest` bytes as
//! [`encode_batch`](super::encode_batch) + `prost::Message::encode_to_vec`, written field by field
//! into one buffer, without building the owned messages (two small strings per attribute and a
//! vector per span). The prost-typed encoder stays the reference: a property test decodes this
//! one's output with the prost types and compares it with the reference, field for field.
//!
//! Field numbers are those of `opentelemetry/proto/{collector/trace,trace,common,resource}/v1`.
//!
//! [`span`] writes each span, [`value`] its attributes (with [`key`]'s pre-framed keys),
//! [`blocks`] caches the parts of a span that are the same for every span of one call or
//! route, [`protobuf`] the wire format's tags, varints and length prefixes.

mod blocks;
mod key;
mod protobuf;
mod span;
#[cfg(test)]
mod tests;
mod value;

use bytes::Bytes;

use super::encode::{ResourceInfo, SCOPE_NAME};
use crate::span::FinishedTrace;
use protobuf::{framed, put_len_prefixed, put_str, put_tag, put_varint, LEN};
use span::Encoder;
use value::{put_kv, Val};

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
pub fn encode_request_sized<'a, I>(resource: &ResourceInfo, traces: I, spans: usize) -> Bytes
where
    I: IntoIterator<Item = &'a FinishedTrace>,
{
    RequestEncoder::default().encode(resource, traces, spans)
}

/// An encoder kept from export to export (the exporter's): its cache of the spans' unchanging
/// parts (see [`blocks`]) then outlives a batch, so a call's parts are encoded once for the
/// exporter's life rather than once a batch (with the cache's slots allocated once too). The
/// cache is bounded and holds what its keys were encoded from, so keeping it is safe.
#[derive(Default)]
pub struct RequestEncoder {
    spans: Encoder,
}

impl std::fmt::Debug for RequestEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestEncoder").finish_non_exhaustive()
    }
}

impl RequestEncoder {
    /// [`encode_request_sized`], with this encoder's cache.
    ///
    /// The spans are written once, into the buffer the request goes out in: room is left in
    /// front of them for the enclosing messages' tags and lengths (known only once the spans
    /// are written), which then fill the end of that room; the bytes before them are skipped
    /// by slicing, not copied away. Before, the spans went into a buffer of their own and were
    /// copied after the head, one more copy of the whole batch (and its growth's copies) per
    /// export.
    pub fn encode<'a, I>(&mut self, resource: &ResourceInfo, traces: I, spans: usize) -> Bytes
    where
        I: IntoIterator<Item = &'a FinishedTrace>,
    {
        encode_with(&mut self.spans, resource, traces, spans)
    }
}

fn encode_with<'a, I>(e: &mut Encoder, resource: &ResourceInfo, traces: I, spans: usize) -> Bytes
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
