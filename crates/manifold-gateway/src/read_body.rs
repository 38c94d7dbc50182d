//! Reading a whole body into memory, bounded: a composed route's request body, and each
//! upstream answer the stack reads whole (composed calls, cache fills, queued deliveries).
//!
//! Both ends can be hostile: a client or an upstream may send its body as a chunked stream of
//! one-byte chunks. The bound counts data bytes, so what the reader holds while reading must be
//! the data, not one frame per chunk.

use crate::error::BoxError;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};

/// The whole body, at most `max` bytes (past it: [`http_body_util::LengthLimitError`]), copied
/// into one buffer as it arrives.
///
/// Why not `Limited::collect`: it keeps every frame until the end, and a chunked body of
/// one-byte chunks is a frame per byte: a 32-byte `Bytes` in a list for each, and the chunk's 6
/// bytes on the wire (`1\r\na\r\n`) kept in the read buffer the frame is a slice of, so a body
/// at `max_body_bytes` (1 MiB) held ~38 MiB until it was complete, for every such request in
/// flight (and an upstream answer at `max_response_bytes`, 16 MiB, ~600 MiB per call). Copied,
/// it holds its size (a body of one frame, the common case, is kept as it is), and what it
/// returns keeps no spare room beyond a quarter of its length.
pub(crate) async fn read_whole<B>(body: B, max: usize) -> Result<Bytes, BoxError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut body = std::pin::pin!(Limited::new(body, max));
    let mut first: Option<Bytes> = None;
    let mut rest = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if let Some(one) = first.take() {
            // Room for these two only, not for what a `Content-Length` promises: a peer
            // declaring the limit and sending a byte now and then would have it allocated at once.
            rest.reserve(one.len() + data.len());
            rest.extend_from_slice(&one);
            rest.extend_from_slice(&data);
        } else if rest.is_empty() {
            first = Some(data);
        } else {
            rest.extend_from_slice(&data);
        }
    }
    if let Some(one) = first {
        return Ok(one);
    }
    // The buffer grew by doubling: up to half of it spare room, which whoever keeps the body
    // (the cache keeps answers) would hold without counting it.
    if rest.capacity() - rest.len() > rest.len() / 4 {
        return Ok(Bytes::copy_from_slice(&rest));
    }
    Ok(rest.freeze())
}

#[cfg(test)]
pub(crate) mod tests;
