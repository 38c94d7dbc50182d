//! Fuzz the W3C `traceparent` parser and the `tracestate` cleaner: never a panic; an accepted
//! `traceparent` has non-zero ids, is not version ff, and is what we would write for those ids
//! (its first 53 characters, trimmed, are our own formatting's); a cleaned `tracestate` is within
//! the spec's bounds (512 characters, 32 members, printable ASCII, every member `key=value`).
#![no_main]

use libfuzzer_sys::fuzz_target;

// The parser is std-only: included as it is rather than linking the OTLP types and the HTTP
// client into the instrumented build.
#[allow(dead_code)]
#[path = "../../crates/manifold-telemetry/src/context.rs"]
mod context;

use context::{
    format_traceparent, sanitize_tracestate, traceparent_bytes, TraceParent, TRACESTATE_MAX,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = TraceParent::parse(data) {
        assert!(!p.trace_id.is_zero() && !p.parent_id.is_zero());
        assert_ne!(p.version, 0xff);
        let ours = format_traceparent(&p.trace_id, &p.parent_id, p.sampled());
        let header = traceparent_bytes(&p.trace_id, &p.parent_id, p.sampled());
        assert_eq!(&header[..], ours.as_bytes(), "both writers agree");
        let trimmed = data
            .iter()
            .position(|b| *b != b' ' && *b != b'\t')
            .map_or(&data[..0], |i| &data[i..]);
        assert_eq!(
            &trimmed[3..53],
            &ours.as_bytes()[3..53],
            "ids as we write them"
        );
        let again = TraceParent::parse(ours.as_bytes()).expect("our own output parses");
        assert_eq!((again.trace_id, again.parent_id), (p.trace_id, p.parent_id));
        if p.version == 0 {
            assert_eq!(trimmed.len() - trailing_ows(trimmed), 55);
        }
    }
    // The same bytes as a tracestate of several field values (split at NUL).
    if let Some(ts) = sanitize_tracestate(data.split(|b| *b == 0)) {
        assert!(ts.len() <= TRACESTATE_MAX);
        assert!(ts.bytes().all(|b| (0x20..=0x7e).contains(&b) || b == b'\t'));
        let members: Vec<&str> = ts.split(',').collect();
        assert!(members.len() <= 32);
        assert!(members.iter().all(|m| !m.is_empty() && m.contains('=')));
    }
});

fn trailing_ows(v: &[u8]) -> usize {
    v.iter()
        .rev()
        .take_while(|b| **b == b' ' || **b == b'\t')
        .count()
}
