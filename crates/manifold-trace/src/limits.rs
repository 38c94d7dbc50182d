//! The limits that keep reading bounded when a trace file is hostile.
//!
//! Span names, tags, service names and ids are written by whoever sent the traffic, and a gzip
//! file of a few megabytes can hold a gigabyte of them. Without limits one 600 MB operation name
//! was kept about a dozen times over (interned twice, then copied into every report row that
//! names it) and `manifold analyze` used 8.7 GB. Every limit here sits far above anything a
//! tracer writes, so real traces never meet them; what is cut or skipped is counted as a
//! warning that names the file (see docs/analyze.md, "Limits").

use std::borrow::Cow;

/// Longest name, id or path kept from a trace, in bytes: longer ones are cut at a character
/// boundary and end in `…`, and counted (`long_text_cut`). Span names, service names, routes
/// and ids are tens of bytes; a name only has to tell operations apart in a report.
pub const MAX_NAME: usize = 1024;

/// Longest string the reader keeps in memory while it cuts a trace file into units, in bytes:
/// the rest of a longer string is dropped as it is read, so even a gzip bomb of one string costs
/// this much. Far above [`MAX_NAME`], so that a long SQL statement or URL is still whole for the
/// argument fingerprint that detects repeated calls.
pub const MAX_STRING: usize = 1 << 20;

/// Largest unit (one trace object, one `resourceSpans` element, one NDJSON line) read into
/// memory, in bytes, once strings are cut to [`MAX_STRING`]: a larger one is skipped as it is
/// read, with a warning. Jaeger's UI stops drawing long before a trace reaches this.
pub const MAX_UNIT: usize = 512 << 20;

/// Most spans kept in one trace: the spans after these are dropped, with a warning. Memory and
/// the work per trace grow with its spans, and a trace this large can no longer be looked at as
/// one in any trace viewer.
pub const MAX_TRACE_SPANS: usize = 1_000_000;

/// The reader's limits together, so that tests can make them small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// [`MAX_STRING`].
    pub(crate) string: usize,
    /// [`MAX_UNIT`].
    pub(crate) unit: usize,
    /// [`MAX_TRACE_SPANS`].
    pub(crate) trace_spans: usize,
    /// How much of an incomplete Jaeger trace object the fast readers buffer before handing it
    /// to the scanner, which cuts long strings and skips huge units as it reads (the fast
    /// readers read straight from the buffer and would hold both whole).
    pub(crate) fast: usize,
}

impl Limits {
    /// The limits `manifold analyze` reads with.
    pub(crate) const DEFAULT: Limits = Limits {
        string: MAX_STRING,
        unit: MAX_UNIT,
        trace_spans: MAX_TRACE_SPANS,
        fast: 64 << 20,
    };
}

/// `s` if it fits in [`MAX_NAME`], else its first bytes (cut at a character boundary) and `…`.
#[inline]
pub fn clip(s: &str) -> Cow<'_, str> {
    if s.len() <= MAX_NAME {
        return Cow::Borrowed(s);
    }
    clip_long(s)
}

/// [`clip`] of a string known to be too long (out of line: the usual short string costs one
/// comparison, on every span).
#[cold]
fn clip_long(s: &str) -> Cow<'_, str> {
    let keep = floor_char_boundary(s, MAX_NAME - '…'.len_utf8());
    let mut out = String::with_capacity(keep + '…'.len_utf8());
    out.push_str(&s[..keep]);
    out.push('…');
    Cow::Owned(out)
}

/// The start of `s` that [`clip`] would keep, with a few bytes to spare so that it is still
/// recognised as too long: for values held before they are interned (a path, a host), so the
/// interner cuts them and counts the cut once, without a copy of the whole value on the way.
#[inline]
pub(crate) fn head(s: &str) -> &str {
    &s[..floor_char_boundary(s, MAX_NAME + 4)]
}

/// The largest character boundary of `s` at or below `at`.
#[inline]
fn floor_char_boundary(s: &str, at: usize) -> usize {
    if at >= s.len() {
        return s.len();
    }
    let mut i = at;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_short_text_and_cuts_long_text_at_a_character() {
        assert!(matches!(clip("GET /x"), Cow::Borrowed("GET /x")));
        let exact = "a".repeat(MAX_NAME);
        assert_eq!(clip(&exact), exact.as_str());
        let long = "é".repeat(MAX_NAME);
        let c = clip(&long);
        assert!(c.len() <= MAX_NAME, "{}", c.len());
        assert!(c.ends_with('…'));
        assert!(c.trim_end_matches('…').chars().all(|ch| ch == 'é'));
        assert!(head(&long).len() > MAX_NAME && head(&long).len() <= MAX_NAME + 4);
        assert_eq!(head("short"), "short");
    }
}
