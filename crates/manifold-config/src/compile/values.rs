//! Value readers every part of the config shares (durations, HTTP methods), and the helpers
//! its error messages use.

use crate::error::{Diagnostics, ErrorKind};
use crate::spanned::Spanned;
use std::time::Duration;

/// The longest duration any key takes. Durations are added to the clock (`Instant::now() + d`
/// panics past the clock's range) and summed (a route's `expect` hints, `Duration + Duration`
/// panics on overflow), so a value such as `"18446744073709551615s"` that parses must still be
/// refused here, where the error can name its line, rather than panic on every request. No
/// timeout, interval or TTL means anything near a year.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 60 * 60);

pub(crate) fn duration(
    s: &Spanned<String>,
    what: &str,
    diag: &mut Diagnostics<'_>,
) -> Option<Duration> {
    let d = unbounded_duration(s, what, diag)?;
    if d > MAX_DURATION {
        diag.push(
            ErrorKind::Value,
            s.span(),
            format!(
                "`{what}`: {:?} is longer than a year (366 days), the most any duration here may be",
                s.get_ref()
            ),
        );
        return None;
    }
    Some(d)
}

/// [`duration`] without its ceiling, for a caller that checks a tighter one itself (and names
/// it in its own error).
pub(crate) fn unbounded_duration(
    s: &Spanned<String>,
    what: &str,
    diag: &mut Diagnostics<'_>,
) -> Option<Duration> {
    match humantime::parse_duration(s.get_ref().trim()) {
        Ok(d) => Some(d),
        Err(e) => {
            diag.push(
                ErrorKind::Value,
                s.span(),
                format!(
                    "`{what}`: {:?} is not a duration ({e}); write e.g. \"250ms\" or \"2s\"",
                    s.get_ref()
                ),
            );
            None
        }
    }
}

/// The longest timeout or deadline: longer ones are as good as none, and one more than the
/// clock can add panics on every request.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// [`duration`] for a request's timeout or deadline: more than 0 (zero would fail every
/// request before anything is sent) and at most [`MAX_TIMEOUT`]; otherwise an error naming
/// `what`.
pub(crate) fn timeout_duration(
    s: &Spanned<String>,
    what: &str,
    diag: &mut Diagnostics<'_>,
) -> Option<Duration> {
    let d = unbounded_duration(s, what, diag)?;
    if d.is_zero() || d > MAX_TIMEOUT {
        diag.push(
            ErrorKind::Value,
            s.span(),
            format!(
                "`{what}` must be more than 0 and at most 24h; got {:?}",
                s.get_ref()
            ),
        );
        return None;
    }
    Some(d)
}

/// [`duration`] for a timeout or interval, which 0 would make mean "never wait" or "always":
/// zero is refused with an error naming `what`.
pub(crate) fn positive_duration(
    s: &Spanned<String>,
    what: &str,
    diag: &mut Diagnostics<'_>,
) -> Option<Duration> {
    let d = duration(s, what, diag)?;
    if d.is_zero() {
        diag.push(
            ErrorKind::Value,
            s.span(),
            format!("`{what}` must be more than 0"),
        );
        return None;
    }
    Some(d)
}

pub(crate) fn method(
    raw: Option<&Spanned<String>>,
    default: http::Method,
    owner: &str,
    diag: &mut Diagnostics<'_>,
) -> http::Method {
    let Some(m) = raw else { return default };
    let upper = m.get_ref().trim().to_ascii_uppercase();
    match http::Method::from_bytes(upper.as_bytes()) {
        Ok(m) if !upper.is_empty() => m,
        _ => {
            diag.push(
                ErrorKind::Value,
                m.span(),
                format!("{owner}: {:?} is not an HTTP method", m.get_ref()),
            );
            default
        }
    }
}

pub(super) fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub(super) fn diag_len(diag: &Diagnostics<'_>) -> usize {
    diag.len()
}
