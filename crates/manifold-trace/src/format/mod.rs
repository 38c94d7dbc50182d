//! Parsers for one unit of each trace format (a trace object, a span array, a `resourceSpans`
//! element), from bytes already in memory. No I/O here: [`crate::read`] finds the units in a
//! file and hands them to these functions.
//!
//! Every parser maps its format onto [`Span`] with the same attribute rules ([`Attrs`]): span
//! kind, error, HTTP method and path, a host for clock-skew correction, whether the call writes,
//! and a fingerprint of the call's arguments for cache detection.

pub mod jaeger;
pub mod otlp;
pub mod zipkin;

use crate::model::Span;

mod attrs;
mod ids;
mod time;
mod value;

pub(crate) use attrs::service_sym;
pub use attrs::{path_of_url, Attrs};
#[cfg(test)]
use ids::{hex8, HEX};
pub use ids::{id_text, span_id, trace_id};
pub use time::{parse_duration, parse_rfc3339};
pub(crate) use value::text_or_empty;
pub use value::{BStr, Num, NumOrText, Value};

/// Spans of one trace id found in a unit.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTrace {
    /// Normalized trace id.
    pub trace_id: String,
    /// Spans, parents unresolved.
    pub spans: Vec<Span>,
}

/// Why a unit could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The bytes are not JSON or not the shape this parser reads.
    #[error("input: {0}")]
    Json(#[from] serde_json::Error),
    /// The JSON is valid but holds no trace data this parser recognizes.
    #[error("input: {0}")]
    Shape(String),
}

/// Add a span to the trace it belongs to (allocating a trace id only for a new trace).
pub(crate) fn push_span(out: &mut Vec<RawTrace>, tid: &str, span: Span) {
    push_span_sized(out, tid, span, 1);
}

/// [`push_span`], sizing a new trace's list for `expect` spans (a whole trace object says how
/// many it holds, which saves growing the list span by span).
pub(crate) fn push_span_sized(out: &mut Vec<RawTrace>, tid: &str, span: Span, expect: usize) {
    if let Some(t) = out.iter_mut().rev().find(|t| t.trace_id == tid) {
        t.spans.push(span);
    } else {
        let mut spans = Vec::with_capacity(expect.max(1));
        spans.push(span);
        out.push(RawTrace {
            trace_id: tid.to_string(),
            spans,
        });
    }
}

/// Normalizes trace ids, remembering the last one (spans of one trace repeat it).
#[derive(Default)]
pub(crate) struct TidCache {
    raw: String,
    norm: String,
    /// `raw` holds the id `norm` was made from.
    kept: bool,
}

impl TidCache {
    pub(crate) fn get(&mut self, raw: &str) -> &str {
        if !self.kept || raw != self.raw {
            self.raw.clear();
            // a long id is not remembered (it would be copied whole): it is normalized (cut)
            // each time instead, which costs no more than comparing it would
            self.kept = raw.len() <= crate::limits::MAX_NAME;
            if self.kept {
                self.raw.push_str(raw);
            }
            self.norm = trace_id(raw);
        }
        &self.norm
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Interner, SpanId};

    #[test]
    fn hex8_is_the_table_a_word_at_a_time() {
        let table = |b: &[u8]| -> Option<u32> {
            let mut v = 0u32;
            for &c in b {
                let d = HEX[usize::from(c)];
                if d > 15 {
                    return None;
                }
                v = v << 4 | u32::from(d);
            }
            Some(v)
        };
        // every byte value in every position, among valid digits of both cases
        let base = *b"09afAF5c";
        for pos in 0..8 {
            for c in 0..=255u8 {
                let mut w = base;
                w[pos] = c;
                assert_eq!(hex8(&w), table(&w), "{w:?}");
            }
        }
        let mut r = crate::synth::Rng::new(7);
        let alphabet = b"0123456789abcdefABCDEFgG/:@`\x7f\x80\xff ";
        for _ in 0..20_000 {
            let mut w = [0u8; 8];
            for c in &mut w {
                *c = alphabet[r.range(0, alphabet.len() as i64) as usize];
            }
            assert_eq!(hex8(&w), table(&w), "{w:?}");
        }
        let mut i = Interner::new();
        assert_eq!(span_id("00000000000000FF", &mut i), SpanId::Hex(255));
        assert_eq!(span_id("ffffffffffffffff", &mut i), SpanId::Hex(u64::MAX));
        assert_eq!(
            span_id("123456789abcdef0", &mut i),
            SpanId::Hex(0x1234_5678_9abc_def0)
        );
    }

    #[test]
    fn times_and_durations() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01Z"), Some(1_000_000_000));
        assert_eq!(
            parse_rfc3339("2017-01-26T16:46:31.639875139-05:00"),
            Some(1_485_467_191_639_875_139)
        );
        assert_eq!(
            parse_rfc3339("2017-01-26T21:46:31.639875Z"),
            Some(1_485_467_191_639_875_000)
        );
        assert_eq!(parse_rfc3339("garbage"), None);
        assert_eq!(parse_duration("0.000225s"), Some(225_000));
        assert_eq!(parse_duration("5000ns"), Some(5000));
        assert_eq!(parse_duration("1m2.5s"), Some(62_500_000_000));
        assert_eq!(parse_duration("1.5ms"), Some(1_500_000));
        assert_eq!(parse_duration("abc"), None);
    }

    #[test]
    fn ids_in_hex_or_base64() {
        assert_eq!(id_text("AAAAAAAAAAI="), "0000000000000002");
        assert_eq!(id_text("00ff"), "00ff");
        assert_eq!(trace_id("AAAAAAAAAAAAAAAAAAAAAQ=="), "0000000000000001");
        let mut i = Interner::new();
        assert_eq!(span_id("AAAAAAAAAAI=", &mut i), SpanId::Hex(2));
    }

    #[test]
    fn url_paths() {
        assert_eq!(path_of_url("http://h:1/a/b?x=1"), "/a/b");
        assert_eq!(path_of_url("/a?b"), "/a");
        for url in [
            "",
            ":",
            "://",
            "a:/b://c/d#e?f",
            "h:1/x",
            "http://h",
            "http://é/ü?x",
            "x://y://z/w",
            "/p#f",
            "http:/h/p",
        ] {
            let rest = match url.find("://") {
                Some(i) => &url[i + 3..],
                None => url,
            };
            let p = &rest[rest.find('/').unwrap_or(rest.len())..];
            assert_eq!(
                path_of_url(url),
                &p[..p.find(['?', '#']).unwrap_or(p.len())],
                "{url}"
            );
        }
    }
}
