//! Property tests of the `traceparent` parser against the spec's grammar.

use manifold_telemetry::context::{format_traceparent, TraceParent};
use manifold_telemetry::{SpanId, TraceId};
use proptest::prelude::*;

proptest! {
    /// Whatever we format, we parse back the same (ids non-zero).
    #[test]
    fn format_then_parse_is_identity(
        t in any::<[u8; 16]>().prop_filter("non-zero", |t| *t != [0; 16]),
        s in any::<[u8; 8]>().prop_filter("non-zero", |s| *s != [0; 8]),
        sampled in any::<bool>(),
    ) {
        let text = format_traceparent(&TraceId(t), &SpanId(s), sampled);
        prop_assert_eq!(text.len(), 55);
        let p = TraceParent::parse(text.as_bytes()).expect("our own output parses");
        prop_assert_eq!((p.trace_id.0, p.parent_id.0, p.sampled(), p.version), (t, s, sampled, 0));
    }

    /// Anything accepted is well-formed: its first 55 bytes are the spec's shape in lowercase hex,
    /// with non-zero ids and a version other than ff.
    #[test]
    fn whatever_is_accepted_is_well_formed(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        if let Ok(p) = TraceParent::parse(&bytes) {
            prop_assert!(!p.trace_id.is_zero() && !p.parent_id.is_zero() && p.version != 0xff);
        }
    }

    /// Changing any one character of a valid version-00 value to a non-hex one is refused
    /// (except the dashes, which are refused when changed at all).
    #[test]
    fn one_bad_character_is_refused(pos in 0usize..55, c in any::<char>()) {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let is_dash = matches!(pos, 2 | 35 | 52);
        let same_class = if is_dash { c == '-' } else { c.is_ascii_digit() || ('a'..='f').contains(&c) };
        prop_assume!(!same_class);
        let mut s: Vec<char> = valid.chars().collect();
        s[pos] = c;
        let s: String = s.into_iter().collect();
        // A space at either end is optional whitespace, trimmed: still the wrong length.
        prop_assert!(TraceParent::parse(s.as_bytes()).is_err(), "{:?}", s);
    }
}
