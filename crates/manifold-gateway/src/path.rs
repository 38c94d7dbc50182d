//! The one path normalizer: what a pass-through route forwards, and the test a composed call's
//! rendered path must pass.
//!
//! A proxy route exposes part of an upstream's path space (`/public/{*rest}` exposes
//! `/public/…`). If the raw request path were forwarded, an upstream that normalizes paths
//! itself would serve `/public/../admin` as `/admin`: the gateway would have checked one path and
//! forwarded another. So the path is normalized here, as Envoy's `normalize_path`,
//! `merge_slashes` and `path_with_escaped_slashes_action` do, and the result must still match the
//! route's pattern — else the request is refused, never forwarded:
//!
//! - percent-encoded unreserved characters are decoded (RFC 3986 §6.2.2.2, so `%2e` is `.`),
//!   other escapes kept with upper-case hex, a malformed escape refused;
//! - `%2F` and `%5C` are refused (or kept as they are, never as separators, with
//!   [`EscapedSlashes::Keep`]); a raw `\` is always refused (some servers treat it as `/`);
//! - repeated slashes are merged; dot segments are removed (RFC 3986 §5.2.4), and one that would
//!   climb above the root is refused;
//! - `..;x` or `.;x` (a dot segment with path parameters, which Tomcat and others treat as the
//!   dot segment) is refused.
//!
//! This file uses `std` only, so the fuzz target can include it as it is.

use std::borrow::Cow;
use std::fmt;

/// What to do with `%2F` (`/`) or `%5C` (`\`) in a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EscapedSlashes {
    /// Refuse the request.
    Reject,
    /// Forward them escaped, as part of their segment.
    Keep,
}

/// Why a path is refused (the client gets 400 with this text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathError {
    /// Not an absolute path.
    NotAbsolute,
    /// A raw backslash.
    Backslash,
    /// `%2F` or `%5C` while they are refused.
    EscapedSlash,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// `..;x` or `.;x`.
    DotSegmentWithParams,
    /// A `..` above the root.
    AboveRoot,
    /// Normalized, the path no longer matches the route's pattern.
    OutsideRoute,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotAbsolute => "the path must start with `/`",
            PathError::Backslash => "the path contains a backslash",
            PathError::EscapedSlash => "the path contains an escaped slash or backslash (%2F, %5C)",
            PathError::BadEscape => {
                "the path contains a `%` that is not followed by two hex digits"
            }
            PathError::DotSegmentWithParams => {
                "the path contains a dot segment with parameters (`..;`)"
            }
            PathError::AboveRoot => "the path climbs above the root with `..`",
            PathError::OutsideRoute => "the path leaves the route once `.` and `..` are resolved",
        })
    }
}

/// Normalize the raw (still percent-encoded) path `raw` of a request routed by `pattern` (a
/// route path such as `/public/{*rest}`), or say why it must not be forwarded.
///
/// When accepted, the result starts with `/`, has no empty, `.` or `..` segment (also not when
/// decoded), matches `pattern` segment by segment (so it starts with its literal prefix), and
/// normalizing it again changes nothing.
// The gateway forwards [`normalized`]'s answer; this one is for the tests and the fuzz target.
#[allow(dead_code)]
pub(crate) fn normalize(
    raw: &str,
    pattern: &str,
    escaped: EscapedSlashes,
) -> Result<String, PathError> {
    normalized(raw, pattern, escaped).map(Cow::into_owned)
}

/// [`normalize`], borrowing `raw` when it is already in normal form (the common case: no
/// escape, backslash, empty or dot segment), so that the caller can forward the path it has
/// instead of a copy. The answer is the same as [`normalize`]'s.
pub(crate) fn normalized<'a>(
    raw: &'a str,
    pattern: &str,
    escaped: EscapedSlashes,
) -> Result<Cow<'a, str>, PathError> {
    if is_normal(raw) {
        return if matches_pattern(raw, pattern) {
            Ok(Cow::Borrowed(raw))
        } else {
            Err(PathError::OutsideRoute)
        };
    }
    normalize_slow(raw, pattern, escaped).map(Cow::Owned)
}

/// Whether `raw` is a path [`normalize_slow`] gives back unchanged, told in one pass: absolute,
/// with no `%`, no `\\`, no empty segment (`//`) and no segment starting with `.` (so no dot
/// segment, with or without parameters). A trailing `/` is kept by normalizing too.
fn is_normal(raw: &str) -> bool {
    let b = raw.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    b.iter().enumerate().all(|(i, &c)| match c {
        b'%' | b'\\' => false,
        b'/' => !matches!(b.get(i + 1), Some(b'/' | b'.')),
        _ => true,
    })
}

/// The normalizer proper (see [`normalize`]).
fn normalize_slow(raw: &str, pattern: &str, escaped: EscapedSlashes) -> Result<String, PathError> {
    let rest = raw.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    // `/seg/seg…`: kept segments never hold a raw `/` (a kept `%2F` stays escaped), so the last
    // one starts at the last `/`, and `..` needs no stack of its own.
    let mut out = String::with_capacity(raw.len());
    let mut trailing = false;
    for seg in rest.split('/') {
        let start = out.len();
        out.push('/');
        normalize_segment(seg, escaped, &mut out)?;
        let s = &out[start + 1..];
        trailing = s.is_empty() || s == "." || s == "..";
        if trailing {
            let up = s == "..";
            out.truncate(start);
            if up {
                let prev = out.rfind('/').ok_or(PathError::AboveRoot)?;
                out.truncate(prev);
            }
            continue;
        }
        if is_dot_with_params(s) {
            return Err(PathError::DotSegmentWithParams);
        }
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    if !matches_pattern(&out, pattern) {
        return Err(PathError::OutsideRoute);
    }
    Ok(out)
}

/// Whether a path has a segment that is `.` or `..` once decoded, or such a segment with
/// parameters: one an upstream normalizing paths would resolve, changing the path's shape.
///
/// A query, if any, is not looked at, and does not hide the last segment: a call's path template
/// may carry one (`/users/{path.id}?view=full`), and its last segment then ends at the `?`
/// (rendered values are percent-encoded, so a `?` is the template's own). Read with the query,
/// that segment was `%2E%2E?view=full`, no dot segment, and `..` reached the upstream.
pub(crate) fn has_dot_segment(path: &str) -> bool {
    let path = path.split_once('?').map_or(path, |(path, _)| path);
    // A dot segment is spelled with `.` or an escape (`%2E`): without either, none can be
    // there, and the common path is answered without decoding (or allocating) anything.
    if !path.contains(['.', '%']) {
        return false;
    }
    path.split('/').any(is_dot_segment)
}

/// Whether a path has a segment that holds an escaped slash (`%2F`, or `%5C`, which some
/// servers treat as one) with a dot segment between the slashes ([`hides_dot_segment`]). A query,
/// if any, is not looked at.
// The fuzz targets include this file without calling it.
#[allow(dead_code)]
pub(crate) fn has_hidden_dot_segment(path: &str) -> bool {
    let path = path.split_once('?').map_or(path, |(path, _)| path);
    path.contains('%') && path.split('/').any(hides_dot_segment)
}

/// Whether one segment holds an escaped slash with a `.` or `..` between the slashes once they
/// are decoded: `..%2Fadmin` is one segment, but `../admin` to an upstream that decodes `%2F`
/// before resolving dot segments (nginx does, and forwards what it resolved), which then serves
/// `/admin`. What a proxy route refuses by default (`escaped_slashes`), for a value that a
/// composed call would send.
pub(crate) fn hides_dot_segment(seg: &str) -> bool {
    // Told without allocating: most segments with an escape have no escaped slash.
    let escaped_slash = seg
        .as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && matches!((w[1], w[2] | 0x20), (b'2', b'f') | (b'5', b'c')));
    if !escaped_slash {
        return false;
    }
    let upper = seg.to_ascii_uppercase();
    upper.replace("%5C", "%2F").split("%2F").any(is_dot_segment)
}

/// Whether one segment of a path is `.` or `..` once decoded, or such a segment with
/// parameters (see [`has_dot_segment`]).
pub(crate) fn is_dot_segment(seg: &str) -> bool {
    if !seg.contains(['.', '%']) {
        return false;
    }
    let mut buf = String::new();
    // A malformed escape is not a dot segment (and not ours to judge here).
    normalize_segment(seg, EscapedSlashes::Keep, &mut buf).is_ok()
        && (buf == "." || buf == ".." || is_dot_with_params(&buf))
}

/// The literal part of a route pattern before its first parameter (`/public/` for
/// `/public/{*rest}`; the whole pattern when it has none). For the property test and the fuzz
/// target: what an accepted path must start with.
#[allow(dead_code)]
pub(crate) fn literal_prefix(pattern: &str) -> &str {
    match pattern.find('{') {
        Some(i) => &pattern[..i],
        None => pattern,
    }
}

/// Append `seg` to `out` with unreserved escapes decoded and the others upper-cased.
fn normalize_segment(
    seg: &str,
    escaped: EscapedSlashes,
    out: &mut String,
) -> Result<(), PathError> {
    let bytes = seg.as_bytes();
    let mut run = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err(PathError::Backslash),
            b'%' => {
                // `%` and `\` are ASCII, so slicing around them keeps UTF-8 whole.
                out.push_str(&seg[run..i]);
                let (hi, lo) = match (bytes.get(i + 1), bytes.get(i + 2)) {
                    (Some(&h), Some(&l)) => (hex(h)?, hex(l)?),
                    _ => return Err(PathError::BadEscape),
                };
                let byte = (hi << 4) | lo;
                if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                    out.push(char::from(byte));
                } else if (byte == b'/' || byte == b'\\') && escaped == EscapedSlashes::Reject {
                    return Err(PathError::EscapedSlash);
                } else {
                    const HEX: &[u8; 16] = b"0123456789ABCDEF";
                    out.push('%');
                    out.push(char::from(HEX[usize::from(hi)]));
                    out.push(char::from(HEX[usize::from(lo)]));
                }
                i += 3;
                run = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&seg[run..]);
    Ok(())
}

fn hex(b: u8) -> Result<u8, PathError> {
    match b {
        b'0'..=b'9' => Ok(b - b'0'),
        b'a'..=b'f' => Ok(b - b'a' + 10),
        b'A'..=b'F' => Ok(b - b'A' + 10),
        _ => Err(PathError::BadEscape),
    }
}

/// `..;x`, `.;x`, `..%3Bx` (a normalized segment: `;` may be escaped, with upper-case hex).
fn is_dot_with_params(seg: &str) -> bool {
    let head = match (seg.find(';'), seg.find("%3B")) {
        (Some(a), Some(b)) => &seg[..a.min(b)],
        (Some(a), None) | (None, Some(a)) => &seg[..a],
        (None, None) => return false,
    };
    head == "." || head == ".."
}

/// Whether the normalized `path` matches `pattern`: literal segments equal (compared
/// normalized), `{name}` one non-empty segment, `{*name}` the rest after its slash.
fn matches_pattern(path: &str, pattern: &str) -> bool {
    let (Some(path), Some(pattern)) = (path.strip_prefix('/'), pattern.strip_prefix('/')) else {
        return false;
    };
    let mut segs = path.split('/');
    let mut lit = String::new();
    for p in pattern.split('/') {
        if p.starts_with("{*") {
            return segs.next().is_some();
        }
        let Some(s) = segs.next() else { return false };
        if p.starts_with('{') {
            if s.is_empty() {
                return false;
            }
        } else if p != s {
            lit.clear();
            if normalize_segment(p, EscapedSlashes::Keep, &mut lit).is_err() || lit != s {
                return false;
            }
        }
    }
    segs.next().is_none()
}

// Named by path so the module resolves the same when the fuzz target includes this file.
#[cfg(test)]
#[path = "path/tests.rs"]
mod tests;
