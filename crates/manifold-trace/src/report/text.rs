//! The terminal report.

use std::fmt::Write as _;

use super::JsonReport;

/// The terminal report: hotspots, then recommendations by saving.
pub fn render_text(r: &JsonReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} traces, {} spans, {} services; end-to-end p50 {:.2} ms, p99 {:.2} ms",
        r.traces, r.spans, r.services, r.latency.p50_ms, r.latency.p99_ms
    );
    if !r.warning_kinds.is_empty() {
        let parts: Vec<String> = r
            .warning_kinds
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(o, "warnings: {}", parts.join(", "));
        // what the reader's limits cut or skipped, and where: said here, not only in --json
        for e in &r.warning_examples {
            if crate::model::WarningKind::ALL
                .iter()
                .any(|k| k.is_limit() && e.starts_with(&format!("{}:", k.as_str())))
            {
                let _ = writeln!(o, "  {e}");
            }
        }
    }
    let _ = writeln!(o, "\nHotspots (share of critical-path time)");
    let _ = writeln!(
        o,
        "  {:>6}  {:>10}  {:>10}  service:operation",
        "share", "p50 ms", "p99 ms"
    );
    for h in r.hotspots.iter().take(15) {
        let _ = writeln!(
            o,
            "  {:>5.1}%  {:>10.3}  {:>10.3}  {}:{}",
            h.share * 100.0,
            h.critical_ms_p50,
            h.critical_ms_p99,
            h.service,
            h.operation
        );
    }
    let _ = writeln!(o, "\nRecommendations (saving by re-simulating the traces)");
    if r.recommendations.is_empty() {
        let _ = writeln!(
            o,
            "  none: no pattern found whose removal shortens the critical path"
        );
    }
    for (i, rec) in r.recommendations.iter().take(15).enumerate() {
        let _ = writeln!(
            o,
            "  {}. {:<19} {}:{}  saves p50 {:.2} ms ({:.1}% of all end-to-end time) in {} traces",
            i + 1,
            rec.kind,
            rec.service,
            rec.operation,
            rec.saving_ms,
            rec.saving_share * 100.0,
            rec.evidence.traces
        );
        let _ = writeln!(
            o,
            "     {}; e.g. trace {}",
            rec.evidence.detail,
            rec.evidence.example_trace_ids.join(", ")
        );
    }
    if let Some(w) = &r.what_if {
        let _ = writeln!(
            o,
            "\nWhat if {} ({} spans matched)",
            w.changes.join(" + "),
            w.matched_spans
        );
        let _ = writeln!(
            o,
            "  {:<40} {:>10} {:>10} {:>10} {:>10}",
            "endpoint", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        // one row pair per endpoint: a file of a million distinct root operations would print
        // two million lines
        for e in w.endpoints.iter().take(15) {
            let name = format!("{}:{}", e.service, e.operation);
            let _ = writeln!(
                o,
                "  {:<40} {:>10.2} {:>10.2} {:>10.2} {:>10.2}  before",
                name, e.before.p50_ms, e.before.p90_ms, e.before.p99_ms, e.before.max_ms
            );
            let _ = writeln!(
                o,
                "  {:<40} {:>10.2} {:>10.2} {:>10.2} {:>10.2}  after",
                "", e.after.p50_ms, e.after.p90_ms, e.after.p99_ms, e.after.max_ms
            );
        }
        if w.endpoints.len() > 15 {
            let _ = writeln!(
                o,
                "  … and {} more endpoints (all of them in --json)",
                w.endpoints.len() - 15
            );
        }
    }
    o
}
