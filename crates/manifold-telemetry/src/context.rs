//! W3C Trace Context: the `traceparent` and `tracestate` headers, parsed and formatted.
//!
//! Std-only on purpose: the fuzz target includes this file by `#[path]`, so the instrumented build
//! does not compile the OTLP types or the HTTP client.
//!
//! The rules are the Trace Context recommendation's (level 1, with level 2's note on versions):
//!
//! * `version-traceid-parentid-flags`, lowercase hex only (`32HEXDIGLC`), ASCII whitespace around
//!   the value is the HTTP field's, not the value's, and is trimmed;
//! * version `ff` is invalid; version `00` must be exactly 55 characters;
//! * a *future* version (`01`–`fe`) is parsed leniently: the first 55 characters are read as a
//!   version-00 value, and what follows (if anything) must start with `-`;
//! * an all-zero trace id or parent id is invalid;
//! * flags: only the `sampled` bit (`0x01`) means anything to us; what we send carries only it,
//!   as the spec asks of a vendor that does not know the other bits.
//!
//! An invalid `traceparent` is ignored (the caller starts a new trace) and so is the `tracestate`
//! that came with it, as the spec says.

use std::fmt;

/// A 16-byte trace id; never all zero once parsed or generated.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id; never all zero once parsed or generated.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// Whether every byte is zero (the spec's invalid value).
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }

    /// The 32 lowercase hex characters the header and OTLP/JSON use.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl SpanId {
    /// Whether every byte is zero (the spec's invalid value).
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 8]
    }

    /// The 16 lowercase hex characters the header and OTLP/JSON use.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// The `sampled` bit of `trace-flags`.
pub const FLAG_SAMPLED: u8 = 0x01;

/// The length of a version-00 `traceparent` value.
pub const TRACEPARENT_LEN: usize = 55;

/// A parsed `traceparent`: the caller's trace and its span, which becomes our SERVER span's parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    /// The version the sender used (`0x00`, or a future one read leniently).
    pub version: u8,
    /// The trace this request belongs to.
    pub trace_id: TraceId,
    /// The sender's span (the parent of ours).
    pub parent_id: SpanId,
    /// The flags as sent; [`TraceParent::sampled`] reads the one bit we honour.
    pub flags: u8,
}

/// Why a `traceparent` was refused (for tests, the fuzz target and debug logs; the gateway only
/// needs to know it was).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not the right number of characters for its version.
    Length,
    /// A `-` missing where one must be.
    Delimiter,
    /// A character that is not lowercase hex.
    Hex,
    /// Version `ff`, which the spec forbids.
    VersionFf,
    /// The trace id is all zeros.
    ZeroTraceId,
    /// The parent id is all zeros.
    ZeroParentId,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::Length => "wrong length",
            ParseError::Delimiter => "missing '-'",
            ParseError::Hex => "not lowercase hex",
            ParseError::VersionFf => "version ff is invalid",
            ParseError::ZeroTraceId => "all-zero trace id",
            ParseError::ZeroParentId => "all-zero parent id",
        })
    }
}

impl std::error::Error for ParseError {}

impl TraceParent {
    /// Parse one `traceparent` field value (see the module docs for the rules).
    pub fn parse(value: &[u8]) -> Result<TraceParent, ParseError> {
        let v = trim_ows(value);
        if v.len() < TRACEPARENT_LEN {
            return Err(ParseError::Length);
        }
        let version = hex_byte(&v[0..2]).ok_or(ParseError::Hex)?;
        if version == 0xff {
            return Err(ParseError::VersionFf);
        }
        if version == 0 && v.len() != TRACEPARENT_LEN {
            return Err(ParseError::Length);
        }
        if version != 0 && v.len() > TRACEPARENT_LEN && v[TRACEPARENT_LEN] != b'-' {
            return Err(ParseError::Delimiter);
        }
        if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return Err(ParseError::Delimiter);
        }
        let mut trace = [0u8; 16];
        decode_hex(&v[3..35], &mut trace).ok_or(ParseError::Hex)?;
        let mut parent = [0u8; 8];
        decode_hex(&v[36..52], &mut parent).ok_or(ParseError::Hex)?;
        let flags = hex_byte(&v[53..55]).ok_or(ParseError::Hex)?;
        let trace_id = TraceId(trace);
        let parent_id = SpanId(parent);
        if trace_id.is_zero() {
            return Err(ParseError::ZeroTraceId);
        }
        if parent_id.is_zero() {
            return Err(ParseError::ZeroParentId);
        }
        Ok(TraceParent {
            version,
            trace_id,
            parent_id,
            flags,
        })
    }

    /// Whether the sender sampled this trace (the parent-based sampler follows it).
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }
}

/// Format a version-00 `traceparent` value: what every upstream request carries, naming the call's
/// span as its parent. Only the sampled bit is sent.
pub fn format_traceparent(trace_id: &TraceId, span_id: &SpanId, sampled: bool) -> String {
    let mut out = String::with_capacity(TRACEPARENT_LEN);
    write_traceparent(&mut out, trace_id, span_id, sampled);
    out
}

/// [`format_traceparent`] into a fixed buffer (no allocation: the header value is built from it).
pub fn traceparent_bytes(
    trace_id: &TraceId,
    span_id: &SpanId,
    sampled: bool,
) -> [u8; TRACEPARENT_LEN] {
    let mut out = [0u8; TRACEPARENT_LEN];
    out[..3].copy_from_slice(b"00-");
    // Fixed offsets into a fixed array: the loops unroll without bounds checks.
    for (i, &b) in trace_id.0.iter().enumerate() {
        [out[3 + 2 * i], out[4 + 2 * i]] = HEX_PAIRS[usize::from(b)];
    }
    out[35] = b'-';
    for (i, &b) in span_id.0.iter().enumerate() {
        [out[36 + 2 * i], out[37 + 2 * i]] = HEX_PAIRS[usize::from(b)];
    }
    out[52..].copy_from_slice(if sampled { b"-01" } else { b"-00" });
    out
}

/// Each byte's two lowercase hex digits. Every attempt of every call writes a `traceparent`
/// (24 bytes as hex): one load a byte, where a nibble at a time cost ~9 instructions a byte.
const HEX_PAIRS: [[u8; 2]; 256] = {
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 0x0f]];
        i += 1;
    }
    t
};

/// [`format_traceparent`] into a buffer the caller owns (no allocation when it has room).
pub fn write_traceparent(out: &mut String, trace_id: &TraceId, span_id: &SpanId, sampled: bool) {
    out.push_str("00-");
    push_hex(out, &trace_id.0);
    out.push('-');
    push_hex(out, &span_id.0);
    out.push_str(if sampled { "-01" } else { "-00" });
}

/// The most of a `tracestate` we pass on: the spec asks vendors to propagate at least 512
/// characters and lets them cut whole entries past that.
pub const TRACESTATE_MAX: usize = 512;

/// The most list members a `tracestate` may have (the spec's limit).
pub const TRACESTATE_MAX_MEMBERS: usize = 32;

/// Clean a received `tracestate` (its field values, in order) for passing on unchanged otherwise.
///
/// We are not a tracestate vendor, so we neither add nor reorder entries. Values are joined with
/// `,` (the field is a list); empty members are dropped; a value with a byte outside printable
/// ASCII makes the whole header unusable (`None`, as for any invalid list); past
/// [`TRACESTATE_MAX_MEMBERS`] members or [`TRACESTATE_MAX`] characters, whole members are cut
/// from the end (the spec's "right-most" rule).
pub fn sanitize_tracestate<'a, I>(values: I) -> Option<String>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut out = String::new();
    let mut members = 0usize;
    for value in values {
        if value
            .iter()
            .any(|b| !(0x20..=0x7e).contains(b) && *b != b'\t')
        {
            return None;
        }
        for member in value.split(|b| *b == b',') {
            let member = trim_ows(member);
            if member.is_empty() {
                continue;
            }
            // Only printable ASCII remains, so this is valid UTF-8.
            let Ok(member) = std::str::from_utf8(member) else {
                return None;
            };
            if !member.contains('=') {
                return None;
            }
            let extra = member.len() + usize::from(!out.is_empty());
            if members == TRACESTATE_MAX_MEMBERS || out.len() + extra > TRACESTATE_MAX {
                return non_empty(out);
            }
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(member);
            members += 1;
        }
    }
    non_empty(out)
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

/// Trim HTTP optional whitespace (space and tab) from both ends.
fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(two: &[u8]) -> Option<u8> {
    match two {
        [h, l] => Some(nibble(*h)? << 4 | nibble(*l)?),
        _ => None,
    }
}

fn decode_hex(src: &[u8], dst: &mut [u8]) -> Option<()> {
    if src.len() != dst.len() * 2 {
        return None;
    }
    for (pair, out) in src.chunks_exact(2).zip(dst.iter_mut()) {
        *out = hex_byte(pair)?;
    }
    Some(())
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

/// Parse 32 lowercase hex characters as a trace id (the admin API's `/traces/{trace_id}`);
/// all zeros is refused.
pub fn parse_trace_id(s: &str) -> Option<TraceId> {
    let mut id = [0u8; 16];
    decode_hex(s.as_bytes(), &mut id)?;
    let id = TraceId(id);
    (!id.is_zero()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_spec_example() {
        let tp = TraceParent::parse(VALID.as_bytes()).expect("valid");
        assert_eq!(tp.version, 0);
        assert_eq!(tp.trace_id.to_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.parent_id.to_hex(), "00f067aa0ba902b7");
        assert!(tp.sampled());
        assert_eq!(
            format_traceparent(&tp.trace_id, &tp.parent_id, tp.sampled()),
            VALID
        );
        assert_eq!(
            &traceparent_bytes(&tp.trace_id, &tp.parent_id, tp.sampled())[..],
            VALID.as_bytes()
        );
    }

    #[test]
    fn traceparent_bytes_write_every_byte_value_as_format_does() {
        for b in 0..=255u8 {
            let trace = TraceId([b, b ^ 0x5a, 0, 255, b, b, b, b, b, b, b, b, b, b, b, 1]);
            let span = SpanId([b, 0x0f, 0xf0, b, b, b, b, b.wrapping_add(1)]);
            for sampled in [true, false] {
                assert_eq!(
                    &traceparent_bytes(&trace, &span, sampled)[..],
                    format_traceparent(&trace, &span, sampled).as_bytes()
                );
            }
        }
    }

    #[test]
    fn refuses_what_the_spec_refuses() {
        let cases: &[(&str, ParseError)] = &[
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ParseError::VersionFf,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                ParseError::ZeroTraceId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                ParseError::ZeroParentId,
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                ParseError::Hex,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
                ParseError::Length,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                ParseError::Length,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e47366-0f067aa0ba902b7-01",
                ParseError::Delimiter,
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ParseError::Delimiter,
            ),
            (
                "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ParseError::Hex,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
                ParseError::Hex,
            ),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
                ParseError::Delimiter,
            ),
            ("", ParseError::Length),
        ];
        for (value, want) in cases {
            assert_eq!(
                TraceParent::parse(value.as_bytes()),
                Err(*want),
                "{value:?}"
            );
        }
    }

    #[test]
    fn future_versions_are_read_leniently() {
        let tp = TraceParent::parse(
            b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds",
        )
        .expect("a future version with more fields is accepted");
        assert_eq!(tp.version, 0xcc);
        assert!(tp.sampled());
        let tp = TraceParent::parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
            .expect("a future version of exactly 55 characters is accepted");
        assert!(!tp.sampled());
    }

    #[test]
    fn surrounding_whitespace_is_the_fields_not_the_values() {
        let padded = format!(" \t{VALID}\t ");
        assert!(TraceParent::parse(padded.as_bytes()).is_ok());
    }

    #[test]
    fn tracestate_is_passed_through_joined_and_bounded() {
        assert_eq!(
            sanitize_tracestate([&b"rojo=00f067aa0ba902b7"[..], b" congo=t61rcWkgMzE ,"]),
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE".to_owned())
        );
        assert_eq!(sanitize_tracestate([&b"a=1\n"[..]]), None);
        assert_eq!(sanitize_tracestate([&b"novalue"[..]]), None);
        assert_eq!(sanitize_tracestate(Vec::<&[u8]>::new()), None);
        let many: Vec<String> = (0..40).map(|i| format!("k{i}=v")).collect();
        let joined = many.join(",");
        let kept = sanitize_tracestate([joined.as_bytes()]).expect("kept");
        assert_eq!(kept.split(',').count(), TRACESTATE_MAX_MEMBERS);
        let long: Vec<String> = (0..20)
            .map(|i| format!("k{i}={}", "x".repeat(40)))
            .collect();
        let joined = long.join(",");
        let kept = sanitize_tracestate([joined.as_bytes()]).expect("kept");
        assert!(kept.len() <= TRACESTATE_MAX);
        assert!(joined.starts_with(&kept), "whole members cut from the end");
    }

    #[test]
    fn trace_ids_parse_for_the_admin_api() {
        let id = parse_trace_id("4bf92f3577b34da6a3ce929d0e0e4736").expect("valid");
        assert_eq!(id.to_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(parse_trace_id("00000000000000000000000000000000").is_none());
        assert!(parse_trace_id("4bf9").is_none());
    }
}
