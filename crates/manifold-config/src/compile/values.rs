//! Value readers every part of the config shares (durations, HTTP methods), and the helpers
//! its error messages use.

use crate::error::{Diagnostics, ErrorKind};
use crate::spanned::Spanned;
use std::time::Duration;

pub(crate) fn duration(
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
