//! The self-contained HTML page, with SVG waterfalls of the sampled traces.

use std::fmt::Write as _;

use super::JsonReport;
use crate::analysis::{Analyzer, Snapshot};
use crate::model::Interner;

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

fn waterfall(o: &mut String, title: &str, s: &Snapshot, names: &Interner) {
    let total = s.duration.max(1) as f64;
    let row_h = 18.0;
    let label_w = 360.0;
    let bar_w = 640.0;
    let h = row_h * s.rows.len() as f64 + 24.0;
    let _ = writeln!(
        o,
        "<h2>{} — trace {} ({:.2} ms)</h2>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" class=\"wf\">",
        esc(title),
        esc(&s.trace_id),
        s.duration as f64 / 1e6,
        label_w + bar_w + 10.0,
        h
    );
    for (i, r) in s.rows.iter().enumerate() {
        let (service, operation) = (names.name(r.service), names.name(r.operation));
        let y = 20.0 + row_h * i as f64;
        let x = label_w + bar_w * (r.offset.max(0) as f64 / total);
        let w = (bar_w * (r.duration as f64 / total)).max(1.0);
        let label = format!(
            "{}{}:{}",
            "  ".repeat(r.depth.min(20) as usize),
            service,
            operation
        );
        let _ = writeln!(
            o,
            "<text x=\"4\" y=\"{:.1}\" class=\"lbl\">{}</text><rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"12\" class=\"{}\"><title>{} {:.3} ms</title></rect>",
            y + 10.0,
            esc(&label),
            y,
            if r.error { "span err" } else { "span" },
            esc(&format!("{service}:{operation}")),
            r.duration as f64 / 1e6
        );
    }
    for (a, b, row) in &s.sections {
        let y = 20.0 + row_h * *row as f64;
        let x = label_w + bar_w * (*a as f64 / total);
        // Saturating: offsets from an untrusted file can sit at opposite ends of i64.
        let w = (bar_w * (b.saturating_sub(*a) as f64 / total)).max(1.0);
        let _ = writeln!(
            o,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"4\" class=\"cp\"/>",
            y + 12.0
        );
    }
    let _ = writeln!(o, "</svg>");
}

/// One self-contained HTML page: hotspot table, recommendations, waterfalls of the median and
/// slowest trace with the critical path highlighted.
pub fn render_html(an: &Analyzer, r: &JsonReport) -> String {
    let mut o = String::new();
    o.push_str("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>manifold analyze</title><style>\n");
    o.push_str("body{font:14px system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left}td.n{text-align:right}");
    o.push_str(".wf .lbl{font:11px monospace;fill:#333}.wf .span{fill:#9ab}.wf .err{fill:#d88}.wf .cp{fill:#c00}.legend span{display:inline-block;width:12px;height:4px;background:#c00;margin-right:4px}\n");
    o.push_str("</style></head><body>\n<h1>Where the time went</h1>\n");
    let _ = writeln!(
        o,
        "<p>{} traces, {} spans, {} services. End-to-end p50 {:.2} ms, p99 {:.2} ms. {} warnings.</p>",
        r.traces, r.spans, r.services, r.latency.p50_ms, r.latency.p99_ms, r.warnings
    );
    o.push_str("<h2>Hotspots</h2>\n<table><tr><th>service</th><th>operation</th><th>share of critical path</th><th>p50 ms</th><th>p99 ms</th></tr>\n");
    for h in r.hotspots.iter().take(30) {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{:.1}%</td><td class=\"n\">{:.3}</td><td class=\"n\">{:.3}</td></tr>",
            esc(&h.service),
            esc(&h.operation),
            h.share * 100.0,
            h.critical_ms_p50,
            h.critical_ms_p99
        );
    }
    o.push_str("</table>\n<h2>Recommendations</h2>\n<table><tr><th>kind</th><th>service:operation</th><th>saving p50 ms</th><th>share</th><th>evidence</th></tr>\n");
    for rec in r.recommendations.iter().take(50) {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}:{}</td><td class=\"n\">{:.2}</td><td class=\"n\">{:.1}%</td><td>{} ({} traces; e.g. {})</td></tr>",
            esc(&rec.kind),
            esc(&rec.service),
            esc(&rec.operation),
            rec.saving_ms,
            rec.saving_share * 100.0,
            esc(&rec.evidence.detail),
            rec.evidence.traces,
            esc(&rec.evidence.example_trace_ids.join(", "))
        );
    }
    o.push_str("</table>\n");
    if r.recommendations.len() > 50 {
        let _ = writeln!(
            o,
            "<p>… and {} more recommendations (all of them in <code>--json</code>).</p>",
            r.recommendations.len() - 50
        );
    }
    o.push_str("<p class=\"legend\"><span></span>critical path</p>\n");
    if let Some(m) = an.median_snapshot() {
        waterfall(&mut o, "Median trace", m, &an.interner);
    }
    if let Some(s) = &an.slowest {
        waterfall(&mut o, "Slowest trace", s, &an.interner);
    }
    o.push_str("</body></html>\n");
    o
}
