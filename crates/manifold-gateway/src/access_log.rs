//! `[telemetry] access_log = "json"`: one JSON line per request on stdout (time, route — empty
//! for a request no route took —, method, status, duration, trace id, request id, the optional
//! calls that failed).

use http::header::HeaderValue;
use http::HeaderMap;
use manifold_telemetry as tm;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

/// The names in `Manifold-Partial` (`name` or `"name"`, then `;params`).
pub(crate) fn partial_calls(headers: &HeaderMap) -> Vec<Arc<str>> {
    let Some(v) = headers
        .get(crate::handler::PARTIAL_HEADER)
        .and_then(|v| v.to_str().ok())
    else {
        return Vec::new();
    };
    v.split(',')
        .filter_map(|item| {
            let name = item.split(';').next()?.trim().trim_matches('"');
            (!name.is_empty()).then(|| Arc::from(name))
        })
        .collect()
}

/// The access log's writer: stdout through a bounded queue and a thread of its own
/// ([`tm::log_out`]: a stalled reader drops lines, counted, and never holds a request), made
/// at the first line. Process-wide, as stdout is; its guard is kept apart so [`flush`] can end
/// it.
static OUT: OnceLock<tracing_appender::non_blocking::NonBlocking> = OnceLock::new();
static GUARD: Mutex<Option<tracing_appender::non_blocking::WorkerGuard>> = Mutex::new(None);

fn out() -> tracing_appender::non_blocking::NonBlocking {
    OUT.get_or_init(|| {
        let (w, guard) =
            tm::log_out::writer("access", tm::log_out::ACCESS_LINES, std::io::stdout());
        *GUARD.lock().unwrap_or_else(PoisonError::into_inner) = Some(guard);
        w
    })
    .clone()
}

/// Write out the access log's queued lines (waiting at most a second) before the process
/// exits; lines logged after this are dropped. For the end of `manifold serve`.
pub fn flush() {
    drop(GUARD.lock().unwrap_or_else(PoisonError::into_inner).take());
}

/// One JSON line on stdout, handed to the access log's writer whole (one message: lines never
/// interleave).
pub(crate) fn line(
    route: &str,
    method: &http::Method,
    status: u16,
    duration: Duration,
    trace_id: Option<tm::TraceId>,
    request_id: &HeaderValue,
    partial: &[Arc<str>],
) {
    use std::io::Write;
    let line = access_json(
        std::time::SystemTime::now(),
        route,
        method,
        status,
        duration,
        trace_id,
        request_id,
        partial,
    );
    let mut line = line;
    line.push('\n');
    let _ = out().write_all(line.as_bytes());
}

/// The access log's JSON object (a string of one line: serde_json escapes every control
/// character, so a client's request id or a call's name cannot break the line).
#[allow(clippy::too_many_arguments)]
fn access_json(
    now: std::time::SystemTime,
    route: &str,
    method: &http::Method,
    status: u16,
    duration: Duration,
    trace_id: Option<tm::TraceId>,
    request_id: &HeaderValue,
    partial: &[Arc<str>],
) -> String {
    serde_json::json!({
        "time": humantime::format_rfc3339_micros(now).to_string(),
        "route": route,
        // A request no route took (or a task status read) may carry any method.
        "method": tm::recorded_method(method).as_str(),
        "status": status,
        "duration_ms": duration.as_secs_f64() * 1000.0,
        "trace_id": trace_id.map(|t| t.to_hex()),
        "request_id": String::from_utf8_lossy(request_id.as_bytes()),
        "partial": partial.iter().map(|p| &**p).collect::<Vec<_>>(),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_names_are_read_back_from_the_header() {
        let mut h = HeaderMap::new();
        assert!(partial_calls(&h).is_empty());
        h.insert(
            crate::handler::PARTIAL_HEADER,
            HeaderValue::from_static("recs;kind=timeout;upstream=\"r\", \"odd name\";kind=x"),
        );
        let names: Vec<String> = partial_calls(&h).iter().map(|s| s.to_string()).collect();
        assert_eq!(names, ["recs", "odd name"]);
    }

    #[test]
    fn an_access_line_is_one_json_object_with_the_request_facts() {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let id = HeaderValue::from_static("req-1");
        let trace = tm::TraceId([0xab; 16]);
        let partial = [Arc::from("recs"), Arc::from("odd\nname")];
        let line = access_json(
            at,
            "checkout",
            &http::Method::POST,
            200,
            Duration::from_micros(12_500),
            Some(trace),
            &id,
            &partial,
        );
        assert!(!line.contains('\n'), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(v["time"], "2023-11-14T22:13:20.000000Z");
        assert_eq!(v["route"], "checkout");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"], 12.5);
        assert_eq!(v["trace_id"], "ab".repeat(16));
        assert_eq!(v["request_id"], "req-1");
        assert_eq!(v["partial"], serde_json::json!(["recs", "odd\nname"]));
    }

    #[test]
    fn a_method_longer_than_any_real_one_is_logged_as_other() {
        let at = std::time::UNIX_EPOCH;
        let id = HeaderValue::from_static("req-1");
        let line_of = |m: &http::Method| {
            let line = access_json(at, "", m, 404, Duration::ZERO, None, &id, &[]);
            let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
            v["method"].as_str().expect("a method").to_owned()
        };
        let long = http::Method::from_bytes(&[b'M'; 200_000]).expect("a token");
        assert_eq!(line_of(&long), "_OTHER");
        let purge = http::Method::from_bytes(b"PURGE").expect("a token");
        assert_eq!(line_of(&purge), "PURGE");
        assert_eq!(line_of(&http::Method::GET), "GET");
    }
}
