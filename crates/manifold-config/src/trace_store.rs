//! `[telemetry] traces`: the bounds of the live trace store behind the admin `/traces`.
//!
//! `traces = false` (or `recent = 0`) turns the store off; `traces = true` or a table with some
//! of the keys keeps the defaults for the rest. Every bound is checked here, with its place, so a
//! typo never becomes a store that holds a million requests per route.

use crate::error::{Diagnostics, ErrorKind};
use crate::spanned::Spanned;
use serde::{Serialize, Serializer};
use std::time::Duration;

/// The most requests of one kind a route may keep: the store's memory is routes ×
/// (`recent` + `slowest` + `max_errors`) × the spans of a request.
const MAX_KEPT: i64 = 10_000;
/// The longest `errors_for`: failed requests older than a day are a log's job.
const MAX_ERRORS_FOR: Duration = Duration::from_secs(24 * 3600);

/// `traces = { recent, slowest, errors_for, max_errors }`: what the trace store keeps per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TraceStoreSettings {
    /// `recent`: the last N requests (a ring).
    pub recent: u32,
    /// `slowest`: the N slowest requests seen since start.
    pub slowest: u32,
    /// `errors_for`: failed requests are kept this long …
    #[serde(serialize_with = "ser_duration")]
    pub errors_for: Duration,
    /// `max_errors`: … and at most this many of them (the oldest leave first).
    pub max_errors: u32,
}

impl Default for TraceStoreSettings {
    fn default() -> Self {
        TraceStoreSettings {
            recent: 100,
            slowest: 20,
            errors_for: Duration::from_secs(300),
            max_errors: 100,
        }
    }
}

fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

/// Check `traces`; `None` is the store turned off.
pub(crate) fn compile(
    raw: &Spanned<toml::Value>,
    diag: &mut Diagnostics<'_>,
) -> Option<TraceStoreSettings> {
    let span = raw.span();
    let mut s = TraceStoreSettings::default();
    let table = match raw.get_ref() {
        toml::Value::Boolean(true) => return Some(s),
        toml::Value::Boolean(false) => return None,
        toml::Value::Table(t) => t,
        other => {
            diag.push(
                ErrorKind::Value,
                span.clone(),
                format!(
                    "`telemetry.traces` is true, false or a table such as {{ recent = 100, slowest = 20, errors_for = \"5m\", max_errors = 100 }}, not a {}",
                    other.type_str()
                ),
            );
            return None;
        }
    };
    let mut ok = true;
    for (key, value) in table {
        let mut count = |slot: &mut u32| match value.as_integer() {
            Some(v) if (0..=MAX_KEPT).contains(&v) => *slot = v as u32,
            _ => {
                diag.push(
                    ErrorKind::Value,
                    span.clone(),
                    format!("`telemetry.traces.{key}` must be a whole number from 0 to {MAX_KEPT}, not {value}"),
                );
                ok = false;
            }
        };
        match key.as_str() {
            "recent" => count(&mut s.recent),
            "slowest" => count(&mut s.slowest),
            "max_errors" => count(&mut s.max_errors),
            "errors_for" => {
                let parsed = value
                    .as_str()
                    .and_then(|v| humantime::parse_duration(v.trim()).ok());
                match parsed {
                    Some(d) if !d.is_zero() && d <= MAX_ERRORS_FOR => s.errors_for = d,
                    _ => {
                        diag.push(
                            ErrorKind::Value,
                            span.clone(),
                            format!("`telemetry.traces.errors_for` must be a duration more than 0 and at most 24h, such as \"5m\", not {value}"),
                        );
                        ok = false;
                    }
                }
            }
            other => {
                diag.push(
                    ErrorKind::Value,
                    span.clone(),
                    format!("`telemetry.traces`: unknown key `{other}` (expected recent, slowest, errors_for, max_errors)"),
                );
                ok = false;
            }
        }
    }
    // `recent = 0` is the documented way to turn the store off while keeping the table.
    (ok && s.recent > 0).then_some(s)
}
