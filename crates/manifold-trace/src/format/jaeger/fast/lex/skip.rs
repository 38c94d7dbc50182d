//! Skipping values the reader does not keep, checked as serde_json's `IgnoredAny` checks them.

use serde::de::IgnoredAny;

use super::{Stop, MAX_SKIP_DEPTH, P, R};

impl<'de> P<'de> {
    /// Skip any value, checking it as serde_json's `IgnoredAny` does (strings are not checked
    /// as UTF-8 there either).
    pub(super) fn skip(&mut self, depth: u32) -> R<()> {
        if depth > MAX_SKIP_DEPTH {
            return Err(Stop::Bail);
        }
        match self.peek()? {
            b'"' => {
                // as `IgnoredAny` does: no UTF-8 check, escapes checked
                let at = self.i;
                match self.raw_str() {
                    Ok(_) => Ok(()),
                    Err(Stop::Eof) => Err(Stop::Eof),
                    Err(Stop::Bail) => {
                        self.i = at;
                        self.escaped::<IgnoredAny>().map(|_| ())
                    }
                }
            }
            b'{' => {
                if self.open(b'{', b'}')? {
                    loop {
                        self.key()?;
                        self.skip(depth + 1)?;
                        if !self.more(b'}')? {
                            break;
                        }
                    }
                }
                Ok(())
            }
            b'[' => {
                if self.open(b'[', b']')? {
                    loop {
                        self.skip(depth + 1)?;
                        if !self.more(b']')? {
                            break;
                        }
                    }
                }
                Ok(())
            }
            b't' => self.lit(b"true"),
            b'f' => self.lit(b"false"),
            b'n' => self.lit(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(Stop::Bail),
        }
    }

    /// Skip a number of any form, checking the grammar.
    pub(super) fn number(&mut self) -> R<()> {
        let b = self.b;
        let mut i = self.i;
        let digits = |i: &mut usize| -> R<usize> {
            let s = *i;
            while let Some(c) = b.get(*i) {
                if !c.is_ascii_digit() {
                    return Ok(*i - s);
                }
                *i += 1;
            }
            Err(Stop::Eof)
        };
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        let first = *b.get(i).ok_or(Stop::Eof)?;
        let n = digits(&mut i)?;
        if n == 0 || (first == b'0' && n > 1) {
            return Err(Stop::Bail);
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            if digits(&mut i)? == 0 {
                return Err(Stop::Bail);
            }
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if digits(&mut i)? == 0 {
                return Err(Stop::Bail);
            }
        }
        self.i = i;
        Ok(())
    }
}
