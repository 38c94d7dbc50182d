//! A hand-written reader for the plainest Jaeger trace object, ahead of the serde one.
//!
//! Why: going through serde's visitors costs about three times a bare parse of the same bytes
//! (every key decoded and checked as text, a call per token). This reader walks the bytes once and
//! builds the same [`FTrace`] as the serde fast path, but it only accepts what it can judge
//! exactly like serde_json would: strings without escapes, integers that fit an `i64`, no unusual
//! shapes. For anything else it stops with [`Stop::Bail`] and the serde readers take the unit; it
//! never reports an error of its own. [`Stop::Eof`] means the unit runs past the bytes given.

use std::borrow::Cow;

use serde::Deserialize;

use super::FTrace;
use crate::format::{Num, NumOrText, Value};

mod shape;
mod skip;

/// Why the reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The bytes end inside the unit: read more and try again.
    Eof,
    /// Something this reader does not judge itself (escapes, floats, other shapes, errors).
    Bail,
}

type R<T> = Result<T, Stop>;

/// Nesting allowed inside skipped values (serde_json's own limit is 128; deeper ones bail).
const MAX_SKIP_DEPTH: u32 = 64;

/// Parse one trace object at the start of `b` (after optional whitespace); on success, the
/// trace and the number of bytes it used.
/// `expect` is how many spans to make room for (the previous trace's count is a good guess).
pub(crate) fn trace(b: &[u8], expect: usize) -> R<(FTrace<'_>, usize)> {
    let mut p = P {
        b,
        i: 0,
        seen: [""; SEEN],
        same: [""; SAME],
        block: "",
        block_at: 0,
    };
    let t = p.trace(expect)?;
    Ok((t, p.i))
}

struct P<'de> {
    b: &'de [u8],
    i: usize,
    /// Strings decoded recently, by length and last byte (see [`P::opt_str_seen`]).
    seen: [&'de str; SEEN],
    /// The last value of a few fields that usually repeat it (see [`P::opt_str_same`]).
    same: [&'de str; SAME],
    /// Input checked as UTF-8, starting at `block_at` (see [`P::text`]).
    block: &'de str,
    block_at: usize,
}

/// How much input [`P::text`] checks at once: a few strings' worth, so that little is checked
/// past the end of the trace object.
const BLOCK: usize = 2048;

const SEEN: usize = 16;

/// Fields whose last value [`P::opt_str_same`] keeps: trace ids (of spans and references alike),
/// reference types.
const SAME: usize = 2;
const SAME_TRACE_ID: usize = 0;
const SAME_REF_TYPE: usize = 1;

/// A key of an object the reader knows, as an id, found by [`P::known_key`].
type KeyId = u8;
/// Not in the object's table: checked and skipped as an unknown key.
const UNKNOWN: KeyId = u8::MAX;

/// The keys of a span: first in the order Jaeger writes them (the order [`P::known_key`]
/// guesses), then other spellings.
const SPAN_KEYS: &[(&[u8], KeyId)] = &[
    (b"traceID", 0),
    (b"spanID", 1),
    (b"operationName", 3),
    (b"references", 4),
    (b"startTime", 5),
    (b"duration", 6),
    (b"tags", 7),
    (b"logs", 8),
    (b"processID", 9),
    (b"traceId", 0),
    (b"spanId", 1),
    (b"parentSpanID", 2),
    (b"parentSpanId", 2),
    (b"processId", 9),
    (b"process", 10),
];
const SPAN_ORDER: usize = 9;

const REF_KEYS: &[(&[u8], KeyId)] = &[
    (b"refType", 0),
    (b"traceID", 1),
    (b"spanID", 2),
    (b"ref_type", 0),
    (b"traceId", 1),
    (b"spanId", 2),
];
const REF_ORDER: usize = 3;

/// `type` is not read, but it is known to be text: skipped without the unknown key's check.
const TAG_KEYS: &[(&[u8], KeyId)] = &[
    (b"key", 0),
    (b"type", 3),
    (b"value", 1),
    (b"vStr", 2),
    (b"vInt64", 2),
    (b"vBool", 2),
    (b"vFloat64", 2),
];
const TAG_ORDER: usize = 3;

impl<'de> P<'de> {
    /// The next byte after whitespace, not consumed.
    #[inline]
    fn peek(&mut self) -> R<u8> {
        // no whitespace between tokens is the usual case: one test
        if let Some(&c) = self.b.get(self.i) {
            if c > b' ' {
                return Ok(c);
            }
        }
        while let Some(&c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                self.i += 1;
            } else {
                return Ok(c);
            }
        }
        Err(Stop::Eof)
    }

    #[inline]
    fn eat(&mut self, c: u8) -> R<()> {
        if self.peek()? == c {
            self.i += 1;
            Ok(())
        } else {
            Err(Stop::Bail)
        }
    }

    /// The raw bytes of a string whose opening quote is next; escapes and control characters
    /// bail.
    #[inline(always)]
    fn raw_str(&mut self) -> R<&'de [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        let b = self.b;
        let mut i = start;
        // eight bytes at a time: stop at a quote, a backslash or a control character
        const ONES: u64 = u64::MAX / 255;
        while let Some(chunk) = b.get(i..i + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            let x = u64::from_le_bytes(w);
            let ctrl = x.wrapping_sub(ONES * 0x20) & !x;
            let q = x ^ (ONES * u64::from(b'"'));
            let q = q.wrapping_sub(ONES) & !q;
            let bs = x ^ (ONES * u64::from(b'\\'));
            let bs = bs.wrapping_sub(ONES) & !bs;
            let m = (ctrl | q | bs) & (ONES << 7);
            if m != 0 {
                i += m.trailing_zeros() as usize / 8;
                break;
            }
            i += 8;
        }
        loop {
            match b.get(i) {
                None => return Err(Stop::Eof),
                Some(b'"') => {
                    self.i = i + 1;
                    return Ok(&b[start..i]);
                }
                Some(&c) if c == b'\\' || c < 0x20 => return Err(Stop::Bail),
                Some(_) => i += 1,
            }
        }
    }

    /// A string as text (serde_json checks UTF-8 for every string it decodes).
    #[inline]
    fn str(&mut self) -> R<&'de str> {
        let r = self.raw_str()?;
        self.text(r)
    }

    /// The bytes of a string just read (`r`, ending right before the byte at `self.i - 1`) as
    /// text. Rather than one UTF-8 check per string — a large share of the time for short
    /// strings — the input is checked a block at a time, each block starting at a string, and a
    /// string inside the checked block is cut out of it (string ends are quotes, so always
    /// character boundaries). Where a block holds invalid UTF-8 it stops there, and a string past
    /// that point is refused just as a check of its own would refuse it.
    #[inline(always)]
    fn text(&mut self, r: &'de [u8]) -> R<&'de str> {
        let end = self.i - 1;
        let start = end - r.len();
        let from = self.block_at;
        if start >= from && end <= from + self.block.len() {
            return self.block.get(start - from..end - from).ok_or(Stop::Bail);
        }
        let stop = (start + BLOCK).max(end).min(self.b.len());
        let bytes = &self.b[start..stop];
        self.block = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
        };
        self.block_at = start;
        self.block.get(..r.len()).ok_or(Stop::Bail)
    }

    /// A string value that may hold escapes: without any it is borrowed as is; with some, its end
    /// is found here and its bytes are handed to serde_json with the serde readers' own type, so
    /// escapes (surrogate pairs, invalid ones) mean exactly what they make of them.
    fn text_or_escaped<T: Deserialize<'de> + FromText<'de>>(&mut self) -> R<T> {
        let at = self.i;
        match self.str() {
            Ok(t) => return Ok(T::from_text(t)),
            Err(Stop::Eof) => return Err(Stop::Eof),
            Err(Stop::Bail) => self.i = at,
        }
        self.escaped()
    }

    /// The string at the position, escapes and all, read by serde_json as `T`.
    fn escaped<T: Deserialize<'de>>(&mut self) -> R<T> {
        self.peek()?;
        let start = self.i;
        let b = self.b;
        let mut i = start + 1;
        loop {
            match b.get(i) {
                None => return Err(Stop::Eof),
                Some(b'"') => break,
                Some(b'\\') => i += 2,
                Some(_) => i += 1,
            }
        }
        let v = serde_json::from_slice::<T>(&b[start..=i]).map_err(|_| Stop::Bail)?;
        self.i = i + 1;
        Ok(v)
    }

    /// The next key, with its colon, as its id in `keys` (the raw key too, for an unknown one).
    /// Keys come in a fixed order nearly always, so `keys[*next]` (while `*next < order`) is
    /// tried first by comparing the bytes in place, which costs less than finding the string's
    /// end and matching it against every key; otherwise the key is read and looked up, and the
    /// guess moves on past it. A key equal to a table entry byte for byte has no escapes, so it
    /// is that key whichever way it was found.
    #[inline(always)]
    fn known_key(
        &mut self,
        keys: &[(&'static [u8], KeyId)],
        order: usize,
        next: &mut usize,
    ) -> R<(KeyId, &'de [u8])> {
        if self.peek()? == b'"' && *next < order {
            let (k, id) = keys[*next];
            let at = self.i + 1;
            let end = at + k.len();
            if self.b.get(end) == Some(&b'"') && same_bytes(&self.b[at..end], k) {
                if self.b.get(end + 1) == Some(&b':') {
                    self.i = end + 2;
                } else {
                    self.i = end + 1;
                    self.eat(b':')?;
                }
                *next += 1;
                return Ok((id, k));
            }
        }
        let raw = self.key()?;
        match keys.iter().position(|(k, _)| same_bytes(k, raw)) {
            Some(pos) => {
                if pos < order {
                    *next = pos + 1;
                }
                Ok((keys[pos].1, raw))
            }
            None => Ok((UNKNOWN, raw)),
        }
    }

    /// [`Self::opt_str_seen`] for a field that usually repeats its last value exactly (`slot`
    /// names the field): that value is compared in place first, closing quote and all, which
    /// skips finding the string's end. Equal bytes ending in a quote are the same string, with
    /// no escape in it, already checked as text.
    #[inline]
    fn opt_str_same(&mut self, slot: usize) -> R<Option<&'de str>> {
        if self.peek()? == b'"' {
            let last = self.same[slot];
            let at = self.i + 1;
            let end = at + last.len();
            if self.b.get(end) == Some(&b'"') && same_bytes(&self.b[at..end], last.as_bytes()) {
                self.i = end + 1;
                return Ok(Some(last));
            }
        }
        let v = self.opt_str_seen()?;
        if let Some(t) = v {
            self.same[slot] = t;
        }
        Ok(v)
    }

    /// A key (raw) and its colon.
    #[inline]
    fn key(&mut self) -> R<&'de [u8]> {
        let k = self.raw_str()?;
        self.eat(b':')?;
        Ok(k)
    }

    /// After a member or element: `true` if another follows (`,` consumed), `false` at the
    /// closing byte (consumed).
    #[inline]
    fn more(&mut self, close: u8) -> R<bool> {
        let c = self.peek()?;
        self.i += 1;
        if c == b',' {
            // serde_json refuses a trailing comma; so does the caller, which expects a value
            Ok(true)
        } else if c == close {
            Ok(false)
        } else {
            Err(Stop::Bail)
        }
    }

    /// Open an object or array: `false` if it is empty (closed at once).
    #[inline]
    fn open(&mut self, open: u8, close: u8) -> R<bool> {
        self.eat(open)?;
        if self.peek()? == close {
            self.i += 1;
            return Ok(false);
        }
        Ok(true)
    }

    /// `null` if it is next (consumed).
    #[inline]
    fn null(&mut self) -> R<bool> {
        if self.peek()? != b'n' {
            return Ok(false);
        }
        self.lit(b"null")?;
        Ok(true)
    }

    fn lit(&mut self, word: &[u8]) -> R<()> {
        let end = self.i + word.len();
        match self.b.get(self.i..end) {
            Some(w) if w == word => {
                self.i = end;
                Ok(())
            }
            Some(_) => Err(Stop::Bail),
            None => {
                if word.starts_with(&self.b[self.i..]) {
                    Err(Stop::Eof)
                } else {
                    Err(Stop::Bail)
                }
            }
        }
    }

    /// [`Self::opt_str`] for text that repeats (trace ids, operation and tag names): a string
    /// equal to one decoded recently is taken from the small cache instead of being checked as
    /// UTF-8 again.
    #[inline]
    fn opt_str_seen(&mut self) -> R<Option<&'de str>> {
        if self.null()? {
            return Ok(None);
        }
        let r = self.raw_str()?;
        let slot = (r.len() ^ usize::from(r.last().copied().unwrap_or(0))) & (SEEN - 1);
        let hit = self.seen[slot];
        if same_bytes(hit.as_bytes(), r) {
            return Ok(Some(hit));
        }
        let t = self.text(r)?;
        self.seen[slot] = t;
        Ok(Some(t))
    }

    /// An optional string (`null` is none); any other type bails.
    #[inline]
    fn opt_str(&mut self) -> R<Option<&'de str>> {
        if self.null()? {
            return Ok(None);
        }
        self.str().map(Some)
    }

    /// A JSON integer that fits an `i64`; fractions, exponents, `-0` and anything larger bail.
    fn int(&mut self) -> R<i64> {
        self.peek()?;
        let b = self.b;
        let mut i = self.i;
        let neg = b.get(i) == Some(&b'-');
        if neg {
            i += 1;
        }
        let first = *b.get(i).ok_or(Stop::Eof)?;
        if !first.is_ascii_digit() {
            return Err(Stop::Bail);
        }
        let mut v: u64 = 0;
        let start = i;
        while let Some(&c) = b.get(i) {
            if !c.is_ascii_digit() {
                break;
            }
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(c - b'0')))
                .ok_or(Stop::Bail)?;
            i += 1;
        }
        match b.get(i) {
            None => return Err(Stop::Eof),
            Some(b'.' | b'e' | b'E') => return Err(Stop::Bail),
            Some(_) => {}
        }
        if (first == b'0' && i - start > 1) || (neg && v == 0) {
            return Err(Stop::Bail);
        }
        let v = i64::try_from(v).map_err(|_| Stop::Bail)?;
        self.i = i;
        Ok(if neg { -v } else { v })
    }

    /// A number or text (`startTime`, `duration`), `null` for none.
    fn num_or_text(&mut self) -> R<Option<NumOrText<'de>>> {
        match self.peek()? {
            b'n' => self.lit(b"null").map(|_| None),
            b'"' => self.text_or_escaped::<NumOrText<'de>>().map(Some),
            _ => match self.int() {
                Ok(v) => Ok(Some(NumOrText::Num(Num::Int(v)))),
                Err(Stop::Bail) => self.other_number().map(Some),
                Err(e) => Err(e),
            },
        }
    }

    /// A number that is not a plain `i64` (a fraction, an exponent, `-0`, a huge integer): its
    /// bytes are handed to serde_json with the serde readers' own type, so it means exactly what
    /// they make of it (rounding, range errors and all).
    fn other_number<T: serde::Deserialize<'de>>(&mut self) -> R<T> {
        let start = self.i;
        self.number()?;
        serde_json::from_slice::<T>(&self.b[start..self.i]).map_err(|_| Stop::Bail)
    }

    /// A tag value as [`Value`] reads it, `null` for none.
    fn value(&mut self) -> R<Option<Value<'de>>> {
        Ok(Some(match self.peek()? {
            b'n' => return self.lit(b"null").map(|_| None),
            b'"' => self.text_or_escaped::<Value<'de>>()?,
            b't' => self.lit(b"true").map(|_| Value::Bool(true))?,
            b'f' => self.lit(b"false").map(|_| Value::Bool(false))?,
            b'[' | b'{' => {
                self.skip(0)?;
                Value::Other
            }
            _ => match self.int() {
                Ok(v) => Value::Int(v),
                Err(Stop::Bail) => self.other_number()?,
                Err(e) => return Err(e),
            },
        }))
    }
}

/// What a string without escapes is, for each type [`P::text_or_escaped`] reads (the same as
/// its `Deserialize` makes of a borrowed string).
trait FromText<'de> {
    fn from_text(t: &'de str) -> Self;
}

impl<'de> FromText<'de> for NumOrText<'de> {
    fn from_text(t: &'de str) -> NumOrText<'de> {
        NumOrText::Text(Cow::Borrowed(t))
    }
}

impl<'de> FromText<'de> for Value<'de> {
    fn from_text(t: &'de str) -> Value<'de> {
        Value::Str(Cow::Borrowed(t))
    }
}

/// `a == b` for the short strings of keys and ids, without a call to `memcmp` (which cost more
/// than the comparison itself here): eight bytes at a time, the last word overlapping.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        if n >= 4 {
            let word = |s: &[u8], i: usize| {
                let mut w = [0u8; 4];
                w.copy_from_slice(&s[i..i + 4]);
                u32::from_le_bytes(w)
            };
            return word(a, 0) == word(b, 0) && word(a, n - 4) == word(b, n - 4);
        }
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    let word = |s: &[u8], i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[i..i + 8]);
        u64::from_le_bytes(w)
    };
    let mut i = 0;
    while i + 8 < n {
        if word(a, i) != word(b, i) {
            return false;
        }
        i += 8;
    }
    word(a, n - 8) == word(b, n - 8)
}

/// Marks a field as seen; a repeated field bails (the derived parsers refuse it).
#[inline]
fn once(seen: &mut u32, bit: u32) -> R<()> {
    if *seen & bit != 0 {
        return Err(Stop::Bail);
    }
    *seen |= bit;
    Ok(())
}

#[cfg(test)]
mod tests;
