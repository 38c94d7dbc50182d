//! `[telemetry]`: what the gateway records about its own requests and where it sends it.
//!
//! Plain types only: the gateway converts them to `manifold-telemetry`'s options, so validating a
//! config never pulls in the exporter. The bounds here are the ones the exporter and the tracer
//! enforce at start, checked at `check` time instead, with the line and column.

use crate::error::{Diagnostics, ErrorKind};
use crate::spanned::Spanned;
use serde::{Deserialize, Serialize, Serializer};
use std::time::Duration;

/// The longest a setting that waits may be: beyond it, it is a typo, not a wish.
const TEN_MINUTES: Duration = Duration::from_secs(600);
/// The most traces the exporter's queue may hold (memory is this × the spans of a trace).
const MAX_QUEUE: u64 = 1_000_000;

/// `[telemetry]`, with its defaults when the section is absent: metrics and trace context on,
/// nothing exported, no access log.
#[derive(Debug, Clone, Serialize)]
pub struct TelemetrySettings {
    /// `service_name`: the OTLP resource's `service.name`.
    pub service_name: String,
    /// `sample_ratio`: the share of new traces sampled at the head (`0.0..=1.0`); a client's
    /// `traceparent` decides for its own traces.
    pub sample_ratio: f64,
    /// `parent_sampled`: whose `traceparent` sampled flag decides the head.
    pub parent_sampled: ParentSampled,
    /// `keep_slower_than`: requests at least this slow are exported whatever the head decided.
    #[serde(serialize_with = "ser_opt_duration")]
    pub keep_slower_than: Option<Duration>,
    /// `otlp = { endpoint, timeout, queue_capacity }`: where spans go (none: not exported).
    pub otlp: Option<OtlpSettings>,
    /// `access_log`: one line per request on stdout.
    pub access_log: AccessLog,
    /// `metrics = false` turns the Prometheus families off (`/metrics` answers 404).
    pub metrics: bool,
    /// `tracing = false` records no spans and sends no `traceparent` (`X-Request-Id` stays).
    pub tracing: bool,
    /// `traces`: the live trace store's bounds (`None`: off; always off with `tracing = false`).
    pub traces: Option<crate::TraceStoreSettings>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            service_name: "manifold".to_owned(),
            sample_ratio: 1.0,
            parent_sampled: ParentSampled::Follow,
            keep_slower_than: None,
            otlp: None,
            access_log: AccessLog::Off,
            metrics: true,
            tracing: true,
            traces: Some(crate::TraceStoreSettings::default()),
        }
    }
}

/// `otlp = { … }`.
#[derive(Debug, Clone, Serialize)]
pub struct OtlpSettings {
    /// `http://host:port[/base]`; `/v1/traces` is appended.
    pub endpoint: String,
    /// One export, connect included.
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// Finished traces waiting for export, at most; past it they are dropped and counted.
    pub queue_capacity: u64,
}

/// `parent_sampled`: whether a caller's `traceparent` sampled flag decides the head sample, or
/// `sample_ratio` does. A request always joins its caller's trace; this only says who decides
/// whether it is exported (and what `sampled` flag goes downstream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParentSampled {
    /// `"follow"` (the default): every caller's flag decides, as W3C parent-based sampling does.
    #[default]
    Follow,
    /// `"trusted_proxies"`: only a caller in `server.trusted_proxies` decides; for anyone else
    /// the ratio does (a public client cannot have all of its requests exported by sending
    /// `-01`, or hide them by sending `-00`).
    TrustedProxies,
    /// `"ignore"`: the ratio decides for every request.
    Ignore,
}

/// `access_log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLog {
    /// No line per request (the default: errors are still logged).
    #[default]
    Off,
    /// `"json"`: one JSON object per line.
    Json,
}

fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

fn ser_opt_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_duration(d, s),
        None => s.serialize_none(),
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTelemetry {
    service_name: Option<Spanned<String>>,
    sample_ratio: Option<Spanned<f64>>,
    parent_sampled: Option<Spanned<String>>,
    #[schemars(extend("pattern" = crate::schema::DURATION_PATTERN))]
    keep_slower_than: Option<Spanned<String>>,
    otlp: Option<Spanned<RawOtlp>>,
    access_log: Option<Spanned<String>>,
    metrics: Option<bool>,
    tracing: Option<bool>,
    #[schemars(with = "Option<crate::schema::TracesValue>")]
    traces: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawOtlp {
    endpoint: Spanned<String>,
    #[schemars(extend("pattern" = crate::schema::DURATION_PATTERN))]
    timeout: Option<Spanned<String>>,
    queue_capacity: Option<Spanned<u64>>,
}

/// Check `[telemetry]` and fill in the defaults.
pub(crate) fn compile(
    raw: Option<&Spanned<RawTelemetry>>,
    diag: &mut Diagnostics<'_>,
) -> TelemetrySettings {
    let mut t = TelemetrySettings::default();
    let Some(raw) = raw else {
        return t;
    };
    let r = raw.get_ref();
    if let Some(name) = &r.service_name {
        let v = name.get_ref().trim();
        if v.is_empty() || v.len() > 256 || v.chars().any(char::is_control) {
            diag.push(
                ErrorKind::Value,
                name.span(),
                "`telemetry.service_name` must be 1 to 256 printable characters",
            );
        } else {
            v.clone_into(&mut t.service_name);
        }
    }
    if let Some(ratio) = &r.sample_ratio {
        let v = *ratio.get_ref();
        // NaN fails both comparisons.
        if (0.0..=1.0).contains(&v) {
            t.sample_ratio = v;
        } else {
            diag.push(
                ErrorKind::Value,
                ratio.span(),
                format!("`telemetry.sample_ratio` must be from 0.0 to 1.0, not {v}"),
            );
        }
    }
    if let Some(p) = &r.parent_sampled {
        match p.get_ref().as_str() {
            "follow" => t.parent_sampled = ParentSampled::Follow,
            "trusted_proxies" => t.parent_sampled = ParentSampled::TrustedProxies,
            "ignore" => t.parent_sampled = ParentSampled::Ignore,
            other => diag.push(
                ErrorKind::Value,
                p.span(),
                format!(
                    "`telemetry.parent_sampled` is \"follow\", \"trusted_proxies\" or \"ignore\", not {other:?}"
                ),
            ),
        }
    }
    if let Some(k) = &r.keep_slower_than {
        if let Some(d) = crate::compile::duration(k, "telemetry.keep_slower_than", diag) {
            if d.is_zero() {
                diag.push(
                    ErrorKind::Value,
                    k.span(),
                    "`telemetry.keep_slower_than` must be more than 0 (leave it out to keep only sampled and failed requests)",
                );
            } else {
                t.keep_slower_than = Some(d);
            }
        }
    }
    if let Some(o) = &r.otlp {
        t.otlp = compile_otlp(o.get_ref(), diag);
    }
    if let Some(a) = &r.access_log {
        match a.get_ref().as_str() {
            "json" => t.access_log = AccessLog::Json,
            "off" | "none" => t.access_log = AccessLog::Off,
            other => diag.push(
                ErrorKind::Value,
                a.span(),
                format!("`telemetry.access_log` is \"json\" or \"off\", not {other:?}"),
            ),
        }
    }
    t.metrics = r.metrics.unwrap_or(true);
    t.tracing = r.tracing.unwrap_or(true);
    if !t.tracing && t.otlp.is_some() {
        diag.push(
            ErrorKind::Value,
            raw.span(),
            "`telemetry.otlp` is set but `tracing = false`: no span would be exported",
        );
    }
    if let Some(traces) = &r.traces {
        t.traces = crate::trace_store::compile(traces, diag);
        if !t.tracing && t.traces.is_some() {
            diag.push(
                ErrorKind::Value,
                traces.span(),
                "`telemetry.traces` keeps requests but `tracing = false` records none (write `traces = false`, or drop `tracing = false`)",
            );
        }
    }
    if !t.tracing {
        t.traces = None;
    }
    t
}

fn compile_otlp(o: &RawOtlp, diag: &mut Diagnostics<'_>) -> Option<OtlpSettings> {
    let ep = o.endpoint.get_ref().trim();
    let mut ok = true;
    if let Err(why) = check_endpoint(ep) {
        diag.push(
            ErrorKind::Value,
            o.endpoint.span(),
            format!("`telemetry.otlp.endpoint` {ep:?}: {why}"),
        );
        ok = false;
    }
    let mut timeout = Duration::from_secs(5);
    if let Some(t) = &o.timeout {
        match crate::compile::duration(t, "telemetry.otlp.timeout", diag) {
            Some(d) if !d.is_zero() && d <= TEN_MINUTES => timeout = d,
            Some(_) => {
                diag.push(
                    ErrorKind::Value,
                    t.span(),
                    "`telemetry.otlp.timeout` must be more than 0 and at most 10m",
                );
                ok = false;
            }
            None => ok = false,
        }
    }
    let mut queue_capacity = 4096;
    if let Some(q) = &o.queue_capacity {
        let v = *q.get_ref();
        if (1..=MAX_QUEUE).contains(&v) {
            queue_capacity = v;
        } else {
            diag.push(
                ErrorKind::Value,
                q.span(),
                format!("`telemetry.otlp.queue_capacity` must be from 1 to {MAX_QUEUE}, not {v}"),
            );
            ok = false;
        }
    }
    ok.then(|| OtlpSettings {
        endpoint: ep.to_owned(),
        timeout,
        queue_capacity,
    })
}

/// The exporter's rule: `http(s)://host[:port][/base]`, no query, no user info.
fn check_endpoint(ep: &str) -> Result<(), &'static str> {
    let uri: http::Uri = ep.parse().map_err(|_| "not a URL")?;
    match uri.scheme_str() {
        // https: checked against the system's trust store.
        Some("http" | "https") => {}
        _ => return Err("the scheme must be http or https, e.g. \"http://127.0.0.1:4318\""),
    }
    let authority = uri.authority().ok_or("no host")?;
    if authority.as_str().contains('@') {
        return Err("user info is not allowed");
    }
    if authority.host().is_empty() {
        return Err("no host");
    }
    if uri.query().is_some() {
        return Err("a query is not allowed");
    }
    Ok(())
}
