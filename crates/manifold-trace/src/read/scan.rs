//! The byte scanner: a buffer over the reader that cuts out one complete JSON value at a time,
//! so memory holds the largest unit rather than the file.

use std::io::{self, Read};

pub(super) const CHUNK: usize = 256 * 1024;
/// Consumed bytes are dropped from the buffer once this many have accumulated: moving the tail
/// (at most one read) that rarely costs ~3% of a copy, and memory stays at one unit plus this.
pub(super) const COMPACT_AT: usize = 8 * 1024 * 1024;

/// A byte buffer over a reader that can cut out complete JSON values.
///
/// It keeps memory bounded on hostile input as it reads (see [`crate::limits`]): a string longer
/// than `max_string` keeps its first bytes and drops the rest before it is buffered, and a value
/// longer than `max_unit` is scanned to its end without being kept. Both are counted for the
/// driver's warnings.
pub(super) struct Scanner {
    pub(super) r: Box<dyn Read>,
    pub(super) buf: Vec<u8>,
    pub(super) pos: usize,
    pub(super) eof: bool,
    /// Bytes read but no longer in the buffer (consumed, or cut and skipped by the limits).
    pub(super) dropped: u64,
    max_string: usize,
    max_unit: usize,
    /// Strings cut to `max_string` so far.
    pub(super) cut_strings: u64,
    /// The length of the last value skipped for being over `max_unit`, until taken.
    oversize: Option<u64>,
}

impl Scanner {
    pub(super) fn new(r: Box<dyn Read>, limits: crate::limits::Limits) -> Scanner {
        Scanner {
            r,
            buf: Vec::with_capacity(CHUNK),
            pos: 0,
            eof: false,
            dropped: 0,
            max_string: limits.string,
            max_unit: limits.unit,
            cut_strings: 0,
            oversize: None,
        }
    }

    /// The length of the value [`Scanner::value`] last skipped for being over the unit limit
    /// (it returned an empty range for it), once.
    pub(super) fn take_oversize(&mut self) -> Option<u64> {
        self.oversize.take()
    }

    pub(super) fn consumed_total(&self) -> u64 {
        self.dropped + self.pos as u64
    }

    /// Drop consumed bytes once they are worth moving.
    pub(super) fn compact(&mut self) {
        if self.pos >= COMPACT_AT || (self.pos > 0 && self.pos == self.buf.len()) {
            self.buf.drain(..self.pos);
            self.dropped += self.pos as u64;
            self.pos = 0;
        }
    }

    pub(super) fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        // `read_to_end` on a bounded reader appends without zeroing the new space first
        let len = self.buf.len();
        self.buf.reserve(CHUNK);
        match (&mut self.r).take(CHUNK as u64).read_to_end(&mut self.buf) {
            Ok(0) => {
                self.eof = true;
                Ok(false)
            }
            Ok(_) => Ok(true),
            Err(e) => {
                self.buf.truncate(len);
                Err(e)
            }
        }
    }

    pub(super) fn bump(&mut self) {
        self.pos += 1;
    }

    /// Skip whitespace (and a UTF-8 BOM) and peek at the next byte.
    pub(super) fn peek_nonws(&mut self) -> io::Result<Option<u8>> {
        loop {
            while self.pos < self.buf.len() {
                let b = self.buf[self.pos];
                if b == b' ' || b == b'\n' || b == b'\r' || b == b'\t' {
                    self.pos += 1;
                } else if b == 0xEF
                    && self.buf.get(self.pos + 1) == Some(&0xBB)
                    && self.buf.get(self.pos + 2) == Some(&0xBF)
                {
                    self.pos += 3;
                } else {
                    return Ok(Some(b));
                }
            }
            if self.pos >= COMPACT_AT {
                self.compact();
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// Read a JSON string at `pos` and decode it.
    pub(super) fn string_value(&mut self) -> io::Result<Option<String>> {
        let Some(r) = self.value(false)? else {
            return Ok(None);
        };
        Ok(serde_json::from_slice::<String>(&self.buf[r]).ok())
    }

    /// Scan the complete JSON value starting at `pos` (after whitespace); returns its range.
    /// `None` on a syntax error or early end of input. The range stays valid until the next
    /// `compact`. A string in it longer than `max_string` is cut (its tail never stays in the
    /// buffer); a value longer than `max_unit` is read to its end and dropped: its range is
    /// empty and [`Scanner::take_oversize`] says how long it was.
    pub(super) fn value(&mut self, _unit: bool) -> io::Result<Option<std::ops::Range<usize>>> {
        let start = self.pos;
        let mut i = self.pos;
        let mut depth: usize = 0;
        let mut in_str = false;
        let mut esc = false;
        // where the current string's text starts (after its quote)
        let mut str_start = 0;
        // bytes of this value already dropped for being over the unit limit
        let mut skipped: u64 = 0;
        let first = match self.byte_at(i)? {
            Some(b) => b,
            None => return Ok(None),
        };
        if !(first == b'{' || first == b'[' || first == b'"') {
            // scalar: up to a delimiter (no number or literal is anywhere near this long)
            loop {
                match self.byte_at(i)? {
                    Some(b',' | b']' | b'}' | b' ' | b'\n' | b'\r' | b'\t') | None => break,
                    Some(_) if i - start > self.max_string => return Ok(None),
                    Some(_) => i += 1,
                }
            }
            self.pos = i;
            return Ok(if i > start { Some(start..i) } else { None });
        }
        loop {
            if i >= self.buf.len() {
                if i - start > self.max_unit {
                    // too large to keep: drop what is buffered of it and read on to its end
                    skipped += (i - start) as u64;
                    self.dropped += (i - start) as u64;
                    self.buf.truncate(start);
                    i = start;
                }
                if !self.fill()? {
                    return Ok(None);
                }
            }
            let mut long_string = false;
            let buf = &self.buf;
            let end = buf.len();
            while i < end {
                if in_str {
                    if esc {
                        esc = false;
                        i += 1;
                        continue;
                    }
                    // jump to the next quote or backslash
                    match memchr::memchr2(b'"', b'\\', &buf[i..end]) {
                        None => {
                            i = end;
                            if skipped == 0 && i - str_start > self.max_string {
                                long_string = true;
                                break;
                            }
                            continue;
                        }
                        Some(k) => {
                            i += k;
                            if skipped == 0 && i - str_start > self.max_string {
                                long_string = true;
                                break;
                            }
                            let b = buf[i];
                            i += 1;
                            if b == b'\\' {
                                esc = true;
                            } else {
                                in_str = false;
                                if depth == 0 {
                                    return Ok(Some(self.end_value(start, i, skipped)));
                                }
                            }
                            continue;
                        }
                    }
                }
                let b = buf[i];
                i += 1;
                match b {
                    b'"' => {
                        in_str = true;
                        str_start = i;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        if depth == 0 {
                            return Ok(None);
                        }
                        depth -= 1;
                        if depth == 0 {
                            return Ok(Some(self.end_value(start, i, skipped)));
                        }
                    }
                    _ => {}
                }
            }
            if long_string {
                // the string's closing quote is at the returned position once its tail is gone
                match self.cut_string(str_start)? {
                    Some(q) => i = q,
                    None => return Ok(None),
                }
            }
        }
    }

    /// The value at `start..i` is complete: its range, or, if it was over the unit limit, an
    /// empty range with its length kept for [`Scanner::take_oversize`].
    fn end_value(&mut self, start: usize, i: usize, skipped: u64) -> std::ops::Range<usize> {
        if skipped == 0 && i - start <= self.max_unit {
            self.pos = i;
            return start..i;
        }
        self.oversize = Some(skipped + (i - start) as u64);
        self.buf.drain(start..i);
        self.dropped += (i - start) as u64;
        self.pos = start;
        start..start
    }

    /// Cut the string whose text starts at `s` (and runs past `max_string` bytes) at most
    /// `max_string` bytes in, where no escape or character is split, and drop the rest of it up
    /// to its closing quote, reading on as needed. Returns the quote's position, `None` if the
    /// input ends first.
    fn cut_string(&mut self, s: usize) -> io::Result<Option<usize>> {
        let limit = s + self.max_string;
        let mut c = limit;
        let mut j = s;
        while let Some(k) = memchr::memchr(b'\\', &self.buf[j..limit]) {
            let e = j + k;
            let len = match self.buf.get(e + 1) {
                Some(b'u') => match self.buf.get(e + 2..e + 4) {
                    // a high surrogate keeps its low half: one alone is not valid JSON text
                    Some([b'd' | b'D', b'8' | b'9' | b'a' | b'b' | b'A' | b'B']) => 12,
                    _ => 6,
                },
                _ => 2,
            };
            if e + len > limit {
                c = e;
                break;
            }
            j = e + len;
        }
        while c > s && self.buf[c] & 0xC0 == 0x80 {
            c -= 1; // inside a character
        }
        self.cut_strings += 1;
        let mut esc = false;
        loop {
            let buf = &self.buf;
            let mut p = c;
            let mut quote = None;
            while p < buf.len() {
                if esc {
                    esc = false;
                    p += 1;
                    continue;
                }
                match memchr::memchr2(b'"', b'\\', &buf[p..]) {
                    None => p = buf.len(),
                    Some(k) => {
                        p += k;
                        if buf[p] == b'"' {
                            quote = Some(p);
                            break;
                        }
                        esc = true;
                        p += 1;
                    }
                }
            }
            match quote {
                Some(q) => {
                    self.buf.drain(c..q);
                    self.dropped += (q - c) as u64;
                    return Ok(Some(c));
                }
                None => {
                    self.dropped += (self.buf.len() - c) as u64;
                    self.buf.truncate(c);
                    if !self.fill()? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    pub(super) fn byte_at(&mut self, i: usize) -> io::Result<Option<u8>> {
        while i >= self.buf.len() {
            if !self.fill()? {
                return Ok(None);
            }
        }
        Ok(Some(self.buf[i]))
    }
}

#[cfg(test)]
mod tests;
