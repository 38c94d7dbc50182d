//! The byte scanner: a buffer over the reader that cuts out one complete JSON value at a time,
//! so memory holds the largest unit rather than the file.

use std::io::{self, Read};

pub(super) const CHUNK: usize = 256 * 1024;
/// Consumed bytes are dropped from the buffer once this many have accumulated: moving the tail
/// (at most one read) that rarely costs ~3% of a copy, and memory stays at one unit plus this.
pub(super) const COMPACT_AT: usize = 8 * 1024 * 1024;

/// A byte buffer over a reader that can cut out complete JSON values.
pub(super) struct Scanner {
    pub(super) r: Box<dyn Read>,
    pub(super) buf: Vec<u8>,
    pub(super) pos: usize,
    pub(super) eof: bool,
    pub(super) dropped: u64,
}

impl Scanner {
    pub(super) fn new(r: Box<dyn Read>) -> Scanner {
        Scanner {
            r,
            buf: Vec::with_capacity(CHUNK),
            pos: 0,
            eof: false,
            dropped: 0,
        }
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
    /// `compact`.
    pub(super) fn value(&mut self, _unit: bool) -> io::Result<Option<std::ops::Range<usize>>> {
        let start = self.pos;
        let mut i = self.pos;
        let mut depth: usize = 0;
        let mut in_str = false;
        let mut esc = false;
        let first = match self.byte_at(i)? {
            Some(b) => b,
            None => return Ok(None),
        };
        if !(first == b'{' || first == b'[' || first == b'"') {
            // scalar: up to a delimiter
            loop {
                match self.byte_at(i)? {
                    Some(b',' | b']' | b'}' | b' ' | b'\n' | b'\r' | b'\t') | None => break,
                    Some(_) => i += 1,
                }
            }
            self.pos = i;
            return Ok(if i > start { Some(start..i) } else { None });
        }
        loop {
            if i >= self.buf.len() && !self.fill()? {
                return Ok(None);
            }
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
                            continue;
                        }
                        Some(k) => {
                            i += k;
                            let b = buf[i];
                            i += 1;
                            if b == b'\\' {
                                esc = true;
                            } else {
                                in_str = false;
                                if depth == 0 {
                                    self.pos = i;
                                    return Ok(Some(start..i));
                                }
                            }
                            continue;
                        }
                    }
                }
                let b = buf[i];
                i += 1;
                match b {
                    b'"' => in_str = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        if depth == 0 {
                            return Ok(None);
                        }
                        depth -= 1;
                        if depth == 0 {
                            self.pos = i;
                            return Ok(Some(start..i));
                        }
                    }
                    _ => {}
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
