//! A request's `X-Request-Id`, made once per request and shared by everything that carries it.
//!
//! The id goes on the answer, on every upstream request, in the access log and in the trace
//! (the store and the exporter). Held as a `String` in the trace and copied into a header value
//! for the rest, it cost two allocations per request (three with the client's own id, which was
//! first copied out of the request); held as a header value over a buffer of its own
//! ([`shared_value`]), it is one, and every clone is a reference count.

use std::fmt;
use std::ops::Deref;

use http::HeaderValue;

use crate::context::TraceId;
use crate::propagate::REQUEST_ID_MAX;

/// A request id's bytes, inline: one allocation when it becomes a header value
/// ([`shared_value`]).
#[derive(Clone, Copy)]
pub struct IdBuf {
    len: u8,
    buf: [u8; REQUEST_ID_MAX],
}

impl Default for IdBuf {
    fn default() -> Self {
        IdBuf {
            len: 0,
            buf: [0; REQUEST_ID_MAX],
        }
    }
}

impl IdBuf {
    /// `bytes`, when they fit.
    pub fn from_slice(bytes: &[u8]) -> Option<IdBuf> {
        let mut id = IdBuf::default();
        id.buf.get_mut(..bytes.len())?.copy_from_slice(bytes);
        id.len = u8::try_from(bytes.len()).ok()?;
        Some(id)
    }

    /// Append `b` (dropped when full).
    pub fn push(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(usize::from(self.len)) {
            *slot = b;
            self.len += 1;
        }
    }

    /// Append `v` in lowercase hex, at least `min_digits` digits (leading zeros), as `{:0N$x}`
    /// would.
    pub fn push_hex(&mut self, v: u64, min_digits: u32) {
        let digits = (64 - v.leading_zeros()).div_ceil(4).max(min_digits);
        for i in (0..digits).rev() {
            let nibble = (v >> (i * 4)) & 0xf;
            self.push(b"0123456789abcdef"[nibble as usize]);
        }
    }
}

impl AsRef<[u8]> for IdBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

/// A header value whose clones share one buffer without allocating. `HeaderValue::from_str`
/// copies into a `Bytes` that allocates again on its first clone (to share the copy), and a
/// request's id is cloned for the answer, its upstream requests and its trace;
/// `Bytes::from_owner` is one allocation, and clones are a reference count. `None` when `id`
/// is not a valid header value.
pub fn shared_value(id: IdBuf) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(id)).ok()
}

/// A request's `X-Request-Id`: 1..=[`REQUEST_ID_MAX`] visible ASCII characters, in a buffer of
/// its own (never a slice of the request it came in, which a trace kept by the store would
/// keep alive). Clones share it. Reads as a `str`.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// A client's id, copied, when it is 1..=[`REQUEST_ID_MAX`] visible ASCII characters.
    pub fn copied(id: &[u8]) -> Option<RequestId> {
        let visible = !id.is_empty() && id.iter().all(u8::is_ascii_graphic);
        visible
            .then(|| IdBuf::from_slice(id))
            .flatten()
            .and_then(shared_value)
            .map(RequestId)
    }

    /// The id of a request that came without one: its trace id in hex (32 characters), written
    /// into the id's own buffer (no `String` on the way).
    pub fn of_trace(trace_id: &TraceId) -> RequestId {
        let mut hex = [0u8; 32];
        for (pair, b) in hex.chunks_exact_mut(2).zip(trace_id.0) {
            pair[0] = HEX[usize::from(b >> 4)];
            pair[1] = HEX[usize::from(b & 0x0f)];
        }
        // Always valid: lowercase hex.
        let value = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(hex))
            .unwrap_or(HeaderValue::from_static("0"));
        RequestId(value)
    }

    /// The id as a header value (a clone is a reference count).
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        // Visible ASCII by construction.
        self.0.to_str().unwrap_or_default()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl Deref for RequestId {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq<str> for RequestId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for RequestId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for RequestId {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_s_id_is_its_hex_and_clones_share_the_buffer() {
        let t = TraceId([
            0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
            0x47, 0x36,
        ]);
        let id = RequestId::of_trace(&t);
        assert_eq!(id, t.to_hex());
        assert_eq!(id.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let copy = id.header_value().clone();
        assert_eq!(
            copy.as_bytes().as_ptr(),
            id.header_value().as_bytes().as_ptr()
        );
    }

    #[test]
    fn a_client_s_id_is_copied_when_visible_ascii_and_short() {
        let given = b"abc-123";
        let id = RequestId::copied(given).expect("valid");
        assert_eq!(id, "abc-123");
        assert_ne!(id.as_str().as_ptr(), given.as_ptr());
        assert!(RequestId::copied(b"").is_none());
        assert!(RequestId::copied(b"a b").is_none());
        assert!(RequestId::copied(&[b'a'; REQUEST_ID_MAX + 1]).is_none());
        assert!(RequestId::copied(&[b'a'; REQUEST_ID_MAX]).is_some());
        assert!(RequestId::copied("é".as_bytes()).is_none());
    }

    #[test]
    fn hex_is_written_as_format_writes_it() {
        for v in [0u64, 1, 0xf, 0x10, 0xabc, u64::MAX, 1 << 63] {
            for min in [1, 16] {
                let mut id = IdBuf::default();
                id.push_hex(v, min);
                let want = format!("{v:0w$x}", w = min as usize);
                assert_eq!(id.as_ref(), want.as_bytes());
            }
        }
    }
}
