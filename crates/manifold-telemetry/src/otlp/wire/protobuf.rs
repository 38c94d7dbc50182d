//! The protobuf wire format's primitives: tags, varints, fixed-width and length-prefixed fields,
//! and messages whose length is written once their body is.

pub(super) const VARINT: u32 = 0;
pub(super) const FIXED64: u32 = 1;
pub(super) const LEN: u32 = 2;
pub(super) const FIXED32: u32 = 5;

pub(super) fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

pub(super) fn put_varint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push((v as u8) | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

pub(super) fn put_tag(b: &mut Vec<u8>, field: u32, wire: u32) {
    put_varint(b, u64::from(field << 3 | wire));
}

pub(super) fn put_bytes(b: &mut Vec<u8>, field: u32, v: &[u8]) {
    if !v.is_empty() {
        put_len_prefixed(b, field, v);
    }
}

pub(super) fn put_str(b: &mut Vec<u8>, field: u32, v: &str) {
    put_bytes(b, field, v.as_bytes());
}

/// Start a LEN field whose length is known only once its body is written: the tag, and two
/// bytes held for the length (a span's length needs two: 128 to 16,383 bytes). Returns where
/// the body starts, for [`end_message`]. Writing the body in place saves copying each span
/// from a scratch buffer into the batch. (The span writer writes these three bytes in the
/// array of its span's fixed-size fields; this is what its tests compare with.)
#[cfg(test)]
pub(super) fn begin_message(b: &mut Vec<u8>, field: u32) -> usize {
    put_tag(b, field, LEN);
    b.extend_from_slice(&[0, 0]);
    b.len()
}

/// Write the length of the message begun at `body` (see [`begin_message`]) into the bytes held
/// for it: in place when it takes two bytes, else by moving the body (a shorter or longer
/// length, as prost writes it: the shortest varint).
pub(super) fn end_message(b: &mut Vec<u8>, body: usize) {
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

pub(super) fn put_len_prefixed(b: &mut Vec<u8>, field: u32, v: &[u8]) {
    put_tag(b, field, LEN);
    put_varint(b, v.len() as u64);
    b.extend_from_slice(v);
}

/// Length of a LEN field's body with its tag and length prefix (field numbers below 16).
pub(super) fn framed(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}
