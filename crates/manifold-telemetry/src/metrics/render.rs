//! The two exposition formats: Prometheus text 0.0.4 and OpenMetrics 1.0 (with exemplars).
//!
//! Differences handled here: OpenMetrics names a counter family without `_total` (its sample
//! keeps it), carries exemplars after `#`, and ends with `# EOF`. Numbers use one spelling valid in
//! both (`1.0`, `0.0005`, `+Inf`, `NaN`), as the `le` label of OpenMetrics requires.

use std::fmt::Write;
use std::sync::Arc;

use super::family::BreakerState;
use super::family::{Counter, Exemplar, Family, Gauge, GaugeF64, Histogram, StateGauge};

/// Which exposition format to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4` (what `promtool check metrics` reads).
    Prometheus,
    /// `application/openmetrics-text; version=1.0.0` (exemplars).
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the `Accept` header asks for it, else the Prometheus text format.
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    /// The response's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Writes families into one buffer.
pub(crate) struct Writer {
    pub(crate) out: String,
    pub(crate) format: Format,
}

impl Writer {
    pub(crate) fn new(format: Format) -> Writer {
        Writer {
            out: String::with_capacity(16 * 1024),
            format,
        }
    }

    pub(crate) fn finish(mut self) -> String {
        if self.format == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }

    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let family = match (self.format, kind) {
            (Format::OpenMetrics, "counter") => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        let _ = writeln!(self.out, "# HELP {family} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {family} {kind}");
    }

    fn sample(&mut self, name: &str, suffix: &str, labels: &[(&str, &str)], value: &str) {
        self.out.push_str(name);
        self.out.push_str(suffix);
        write_labels(&mut self.out, labels);
        self.out.push(' ');
        self.out.push_str(value);
    }

    pub(crate) fn counters<const N: usize>(&mut self, f: &Family<Counter, N>) {
        let children = f.children();
        if children.is_empty() {
            return;
        }
        self.header(f.name, f.help, "counter");
        for (values, c) in children {
            let labels = pairs(&f.labels, &values);
            self.sample(f.name, "", &labels, &c.get().to_string());
            self.out.push('\n');
        }
    }

    /// One series without labels, its value read at the scrape (the process's own figures):
    /// `kind` is `counter` or `gauge`.
    pub(crate) fn single(&mut self, name: &str, help: &str, kind: &str, value: f64) {
        self.header(name, help, kind);
        self.sample(name, "", &[], &number(value));
        self.out.push('\n');
    }

    /// A counter without labels whose value comes from elsewhere (span statistics).
    pub(crate) fn counter_values(
        &mut self,
        name: &str,
        help: &str,
        rows: &[(&[(&str, &str)], u64)],
    ) {
        self.header(name, help, "counter");
        for (labels, v) in rows {
            self.sample(name, "", labels, &v.to_string());
            self.out.push('\n');
        }
    }

    pub(crate) fn gauges<const N: usize>(&mut self, f: &Family<Gauge, N>) {
        let children = f.children();
        if children.is_empty() {
            return;
        }
        self.header(f.name, f.help, "gauge");
        for (values, g) in children {
            let labels = pairs(&f.labels, &values);
            self.sample(f.name, "", &labels, &g.get().to_string());
            self.out.push('\n');
        }
    }

    pub(crate) fn gauges_f64<const N: usize>(&mut self, f: &Family<GaugeF64, N>) {
        let children = f.children();
        if children.is_empty() {
            return;
        }
        self.header(f.name, f.help, "gauge");
        for (values, g) in children {
            let labels = pairs(&f.labels, &values);
            self.sample(f.name, "", &labels, &number(g.get()));
            self.out.push('\n');
        }
    }

    /// One 0/1 series per state, the `state` label last.
    pub(crate) fn states<const N: usize>(&mut self, f: &Family<StateGauge, N>) {
        let children = f.children();
        if children.is_empty() {
            return;
        }
        self.header(f.name, f.help, "gauge");
        for (values, g) in children {
            let current = g.get();
            for s in BreakerState::ALL {
                let mut labels = pairs(&f.labels, &values);
                labels.push(("state", s.as_str()));
                let v = if s == current { "1" } else { "0" };
                self.sample(f.name, "", &labels, v);
                self.out.push('\n');
            }
        }
    }

    pub(crate) fn histograms<const N: usize>(&mut self, f: &Family<Histogram, N>) {
        let children = f.children();
        if children.is_empty() {
            return;
        }
        self.header(f.name, f.help, "histogram");
        for (values, h) in children {
            let snap = h.snapshot();
            let base = pairs(&f.labels, &values);
            for (bound, count, exemplar) in &snap.buckets {
                let le = number(*bound);
                let mut labels = base.clone();
                labels.push(("le", &le));
                self.sample(f.name, "_bucket", &labels, &count.to_string());
                if let (Format::OpenMetrics, Some(e)) = (self.format, exemplar) {
                    write_exemplar(&mut self.out, e);
                }
                self.out.push('\n');
            }
            self.sample(f.name, "_sum", &base, &number(snap.sum_seconds));
            self.out.push('\n');
            self.sample(f.name, "_count", &base, &snap.count.to_string());
            self.out.push('\n');
        }
    }
}

fn pairs<'a, const N: usize>(
    names: &'a [&'static str; N],
    values: &'a [Arc<str>; N],
) -> Vec<(&'a str, &'a str)> {
    names
        .iter()
        .zip(values.iter())
        .map(|(n, v)| (*n, &**v))
        .collect()
}

fn write_labels(out: &mut String, labels: &[(&str, &str)]) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        escape_label(out, value);
        out.push('"');
    }
    out.push('}');
}

fn write_exemplar(out: &mut String, e: &Exemplar) {
    let _ = write!(
        out,
        " # {{trace_id=\"{}\",span_id=\"{}\"}} {} {}.{:03}",
        e.trace_id,
        e.span_id,
        number(e.value_ns as f64 / 1e9),
        e.at_ms / 1000,
        e.at_ms % 1000
    );
}

/// Label values escape `\`, `"` and newline (both formats).
fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Help text escapes `\` and newline (and `"` is harmless there).
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A float both formats read the same: integers keep `.0`, non-finite values are spelled out.
pub(crate) fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_spelled_for_both_formats() {
        assert_eq!(number(1.0), "1.0");
        assert_eq!(number(0.0005), "0.0005");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(-2.5), "-2.5");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        write_labels(&mut s, &[("route", "a\"b\\c\nd")]);
        assert_eq!(s, r#"{route="a\"b\\c\nd"}"#);
    }

    #[test]
    fn accept_picks_the_format() {
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Prometheus);
    }
}
