//! Attribute values: `KeyValue` and `AnyValue` messages, with a fast path for the short
//! attributes most spans carry.

use super::protobuf::{framed, put_len_prefixed, put_str, put_tag, put_varint, varint_into};
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
/// Most attributes are a short string or a small integer, whose `KeyValue` is under 128 bytes:
/// every length then takes one byte, and the tags and lengths are written as fixed-size arrays
/// (stores the compiler inlines) instead of a varint loop and a push each (~200 instructions
/// an attribute, half of a span's encoding).
pub(super) fn put_attr<const N: usize>(b: &mut Vec<u8>, key: &[u8; N], v: &Val<'_>) {
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
