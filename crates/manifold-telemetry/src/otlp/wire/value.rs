//! Attribute values: `KeyValue` and `AnyValue` messages, with a fast path for the short
//! attributes most spans carry.

use super::protobuf::{framed, put_len_prefixed, put_str, put_tag, put_varint};
use super::protobuf::{varint_len, FIXED64, LEN, VARINT};

/// An attribute value, borrowed from the finished trace.
pub(super) enum Val<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    Double(f64),
    Strs(&'a [std::sync::Arc<str>]),
}

/// Span { attributes = 9 }: one `KeyValue` with a pre-framed key (see [`key`](super::key)).
///
/// Most attributes are a short string, a small integer, a double or a bool, whose `KeyValue` is
/// under 128 bytes: every length then takes one byte, and the tags and lengths are written as
/// fixed-size arrays (stores the compiler inlines) instead of a varint loop and a push each.
/// Inlined into the span writers (a span has ~12 attributes: the call's prologue and epilogue
/// and the reload of the buffer's length were ~20 instructions of the ~90 each took); the
/// general path stays out of line.
///
/// Each is built in a stack array (its tags, lengths, key and value) and goes into `b` with
/// one capacity check and one copy, where it was four of each (a string's value is a second).
#[inline(always)]
pub(super) fn put_attr<const N: usize>(b: &mut Vec<u8>, key: &[u8; N], v: &Val<'_>) {
    match v {
        Val::Str(s) if N + s.len() + 4 < 0x80 => {
            put_short_str_head(b, key, s.len());
            b.extend_from_slice(s.as_bytes());
        }
        // AnyValue { int_value = 3 }: a tag and a varint, written into the array.
        Val::Int(i) if N + 15 <= SMALL => {
            let mut a = framed_key(key, 0);
            a[N + 2] = VALUE_TAG;
            a[N + 4] = 3 << 3 | VARINT as u8;
            let mut at = N + 5;
            let mut x = *i as u64;
            while x >= 0x80 {
                a[at] = (x as u8) | 0x80;
                x >>= 7;
                at += 1;
            }
            a[at] = x as u8;
            at += 1;
            // KeyValue's length: the key (N), the value's tag and length (2), the value.
            a[1] = (at - 2) as u8;
            a[N + 3] = (at - (N + 4)) as u8;
            b.extend_from_slice(&a[..at]);
        }
        // AnyValue { double_value = 4 }: a tag and eight bytes.
        Val::Double(d) if N + 13 <= SMALL => {
            let mut a = framed_key(key, N + 2 + 9);
            a[N + 2..N + 5].copy_from_slice(&[VALUE_TAG, 9, 4 << 3 | FIXED64 as u8]);
            a[N + 5..N + 13].copy_from_slice(&d.to_bits().to_le_bytes());
            b.extend_from_slice(&a[..N + 13]);
        }
        // AnyValue { bool_value = 2 }: a tag and one byte.
        Val::Bool(x) if N + 6 <= SMALL => {
            let mut a = framed_key(key, N + 2 + 2);
            a[N + 2..N + 6].copy_from_slice(&[VALUE_TAG, 2, 2 << 3 | VARINT as u8, u8::from(*x)]);
            b.extend_from_slice(&a[..N + 6]);
        }
        _ => put_attr_general(b, key, v),
    }
}

/// The stack array the short attributes are built in: room for the longest key's
/// (`http.response.status_code`, 27 bytes framed) attribute head and an integer's varint.
const SMALL: usize = 48;

/// `KeyValue`'s tag and (one-byte) length `kv_len`, then the framed key.
#[inline(always)]
fn framed_key<const N: usize>(key: &[u8; N], kv_len: usize) -> [u8; SMALL] {
    let mut a = [0u8; SMALL];
    a[0] = ATTR_TAG;
    a[1] = kv_len as u8;
    a[2..N + 2].copy_from_slice(key);
    a
}

/// Span { attributes = 9 }: a string attribute whose value is `parts` joined (each part
/// UTF-8, or ASCII digits), written without joining them first when it is short (`url.full`,
/// from the endpoint and the path: building it in a `String` to copy it again cost ~150
/// instructions a CLIENT span). A long one is joined in `scratch` and written by [`put_attr`].
pub(super) fn put_joined_attr<const N: usize>(
    b: &mut Vec<u8>,
    key: &[u8; N],
    parts: &[&[u8]],
    scratch: &mut Vec<u8>,
) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if N + len + 4 < 0x80 {
        put_short_str_head(b, key, len);
        for p in parts {
            b.extend_from_slice(p);
        }
    } else {
        scratch.clear();
        for p in parts {
            scratch.extend_from_slice(p);
        }
        // Valid UTF-8 when the parts are, as they are; lossy (not a panic) if one were not.
        put_attr(b, key, &Val::Str(&String::from_utf8_lossy(scratch)));
    }
}

const ATTR_TAG: u8 = 9 << 3 | LEN as u8;
const VALUE_TAG: u8 = 2 << 3 | LEN as u8;

/// A short string attribute's tags, one-byte lengths and key, before its `len` bytes of value.
#[inline(always)]
fn put_short_str_head<const N: usize>(b: &mut Vec<u8>, key: &[u8; N], len: usize) {
    let any_len = 2 + len;
    if N + 6 <= SMALL {
        let mut a = framed_key(key, N + 2 + any_len);
        a[N + 2..N + 6].copy_from_slice(&[VALUE_TAG, any_len as u8, 1 << 3 | LEN as u8, len as u8]);
        b.extend_from_slice(&a[..N + 6]);
    } else {
        b.extend_from_slice(&[ATTR_TAG, (N + 2 + any_len) as u8]);
        b.extend_from_slice(key);
        b.extend_from_slice(&[VALUE_TAG, any_len as u8, 1 << 3 | LEN as u8, len as u8]);
    }
}

/// [`put_attr`] for any size: varint lengths.
#[inline(never)]
fn put_attr_general<const N: usize>(b: &mut Vec<u8>, key: &[u8; N], v: &Val<'_>) {
    let any_len = any_value_len(v);
    put_tag(b, 9, LEN);
    put_varint(b, (N + framed(any_len)) as u64);
    b.extend_from_slice(key);
    put_tag(b, 2, LEN);
    put_varint(b, any_len as u64);
    put_any_value_body(b, v);
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
pub(super) fn put_kv(b: &mut Vec<u8>, field: u32, key: &str, v: &Val<'_>) {
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
