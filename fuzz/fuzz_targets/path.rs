//! Fuzz the proxy path normalizer: whatever the raw path, an accepted one has no dot segment
//! (also not percent-encoded), no empty segment, matches the route's pattern (so it starts with
//! its literal prefix, and a base path in front is never left) and is its own normal form.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The normalizer is std-only: included as it is rather than linking the whole gateway (tokio,
// hyper, the brokers' clients) into the instrumented build.
#[allow(dead_code)]
#[path = "../../crates/manifold-gateway/src/path.rs"]
mod path;

use path::{has_dot_segment, literal_prefix, normalize, EscapedSlashes};

const PATTERNS: [&str; 6] = [
    "/public/{*rest}",
    "/{*rest}",
    "/u/{id}/x",
    "/public",
    "/",
    "/a/{b}/{*rest}",
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(raw) = std::str::from_utf8(rest) else {
        return;
    };
    let pattern = PATTERNS[usize::from(sel % 6)];
    let escaped = if sel & 0x80 == 0 {
        EscapedSlashes::Reject
    } else {
        EscapedSlashes::Keep
    };
    if let Ok(out) = normalize(raw, pattern, escaped) {
        assert!(
            out.starts_with(literal_prefix(pattern)),
            "{raw:?} -> {out:?}"
        );
        assert!(!has_dot_segment(&out), "{raw:?} -> {out:?}");
        assert!(
            !out.contains("//") && !out.contains('\\'),
            "{raw:?} -> {out:?}"
        );
        if escaped == EscapedSlashes::Reject {
            assert!(
                !out.contains("%2F") && !out.contains("%5C"),
                "{raw:?} -> {out:?}"
            );
        }
        assert_eq!(
            normalize(&out, pattern, escaped).as_deref(),
            Ok(out.as_str())
        );
        assert!(format!("/base{out}").starts_with("/base/"));
    }
});
