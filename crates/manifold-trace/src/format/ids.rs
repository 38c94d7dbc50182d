//! Span and trace ids as the formats write them (hex or base64), decoded to one spelling.

use std::borrow::Cow;

use base64::Engine as _;

use crate::model::{normalize_trace_id, Interner, SpanId};

/// Decode an id written as hex or as base64 (protobuf JSON) to lower-case hex; other text as is.
pub fn id_text(s: &str) -> Cow<'_, str> {
    // 24 characters of base64 hold the longest id (16 bytes): anything longer is not one, and
    // decoding a hostile megabyte four ways would only cost memory
    if s.len() > 32 || (!s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())) {
        return Cow::Borrowed(s);
    }
    let engine = base64::engine::general_purpose::STANDARD;
    let decoded = engine
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(s))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(s))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s));
    match decoded {
        Ok(bytes) if bytes.len() == 8 || bytes.len() == 16 => {
            let mut hex = String::with_capacity(bytes.len() * 2);
            for b in bytes {
                hex.push_str(&format!("{b:02x}"));
            }
            Cow::Owned(hex)
        }
        _ => Cow::Borrowed(s),
    }
}

/// Hex digit values by byte; `0xFF` for anything else.
pub(super) static HEX: [u8; 256] = {
    let mut t = [0xFFu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// A span id from its text form.
pub fn span_id(s: &str, interner: &mut Interner) -> SpanId {
    // the common case, 1 to 16 hex digits, in one branch-free pass (what the general rules
    // below make of it)
    if s.len() == 16 {
        // the usual width: two words of eight digits at once
        let b = s.as_bytes();
        if let (Some(hi), Some(lo)) = (hex8(&b[..8]), hex8(&b[8..])) {
            return SpanId::Hex(u64::from(hi) << 32 | u64::from(lo));
        }
    }
    if !s.is_empty() && s.len() <= 16 {
        let (mut v, mut bad) = (0u64, 0u8);
        for b in s.bytes() {
            let d = HEX[usize::from(b)];
            bad |= d;
            v = (v << 4) | u64::from(d & 0x0F);
        }
        if bad & 0xF0 == 0 {
            return SpanId::Hex(v);
        }
    }
    let t = id_text(s);
    // 128-bit span ids do not exist; a 32-digit hex value with a zero high half is a 64-bit id
    let t: &str = if t.len() == 32 && t.starts_with("0000000000000000") {
        &t[16..]
    } else {
        &t
    };
    SpanId::parse(t, interner)
}

/// Eight hex digits (either case) as a number, `None` if any byte is not one: the same as
/// the table in [`span_id`], a word at a time (the per-byte loop was most of the cost of
/// reading a span id).
pub(super) fn hex8(b: &[u8]) -> Option<u32> {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES * 0x80;
    let mut w = [0u8; 8];
    w.copy_from_slice(b.get(..8)?);
    // the first digit in the top byte
    let x = u64::from_be_bytes(w);
    if x & HIGH != 0 {
        return None; // not ASCII; byte-wise sums below stay within their byte from here on
    }
    // a byte with its top bit set after adding `0x80 - lo` is `>= lo`
    let at_least = |v: u64, lo: u8| v.wrapping_add(ONES * u64::from(0x80 - lo)) & HIGH;
    let digit = at_least(x, b'0') & !at_least(x, b'9' + 1);
    let l = x | (ONES * 0x20);
    let alpha = at_least(l, b'a') & !at_least(l, b'f' + 1);
    if (digit | alpha) != HIGH {
        return None;
    }
    // a digit's value is its low nibble; a letter's is its low nibble + 9
    let v = (x & (ONES * 0x0F)) + (alpha >> 7) * 9;
    // pack the eight nibbles (one per byte) into 32 bits
    let v = (v | v >> 4) & 0x00FF_00FF_00FF_00FF;
    let v = (v | v >> 8) & 0x0000_FFFF_0000_FFFF;
    let v = (v | v >> 16) & 0x0000_0000_FFFF_FFFF;
    u32::try_from(v).ok()
}

/// A trace id from its text form.
pub fn trace_id(s: &str) -> String {
    normalize_trace_id(&id_text(s))
}
