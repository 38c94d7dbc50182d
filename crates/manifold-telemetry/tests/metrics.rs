//! A scrape taken under concurrent load passes `promtool check metrics`; the OpenMetrics
//! rendering passes the official Python parser (with exemplars).

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use manifold_telemetry::metrics::{BreakerState, CallResult, Format, Metrics};
use manifold_telemetry::{CacheOutcome, SpanId, SpanStats, TraceId};

use crate::promtool;
use crate::support::{python, python_has, tool_available};

/// Render while four threads record into every family.
fn scrape_under_load(format: Format) -> String {
    let m = Metrics::new();
    m.attach_span_stats(Arc::new(SpanStats::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            let m = m.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let route =
                    m.route(["/checkout", "/orders/{id}", "weird \"route\"\\\n"][w as usize % 3]);
                let call = m.call("/checkout", "payment", "payment");
                let queue = m.queue("outbox");
                let ep = m.endpoint("payment", "http://127.0.0.1:7002");
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) && i < 1_000_000 {
                    let ex = i
                        .is_multiple_of(3)
                        .then_some((TraceId([w as u8 + 1; 16]), SpanId([1; 8])));
                    route.start().finish(
                        [200, 404, 503, 302][(i % 4) as usize],
                        Duration::from_micros(i % 3_000_000),
                        ex,
                    );
                    call.observe(Duration::from_micros(i % 90_000), ex);
                    call.outcome(if i.is_multiple_of(5) {
                        CallResult::Error {
                            kind: "timeout",
                            partial: i.is_multiple_of(10),
                        }
                    } else {
                        CallResult::Ok
                    });
                    call.cache(
                        [
                            CacheOutcome::L1,
                            CacheOutcome::L2,
                            CacheOutcome::Miss,
                            CacheOutcome::Coalesced,
                            CacheOutcome::Stale,
                        ][(i % 5) as usize],
                    );
                    queue.set_depth(i % 100);
                    queue.set_oldest_age(Duration::from_millis(i % 5_000));
                    queue.delivery(!i.is_multiple_of(7));
                    if i.is_multiple_of(50) {
                        queue.dead_letter();
                        queue.retry();
                    }
                    ep.set_breaker(BreakerState::ALL[(i % 3) as usize]);
                    ep.set_cost(i as f64 / 7.0);
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let text = m.render(format);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }
    text
}

#[test]
fn promtool_accepts_a_scrape_taken_under_load() {
    if !promtool::available() {
        return;
    }
    let text = scrape_under_load(Format::Prometheus);
    assert!(text.contains("manifold_call_duration_seconds_bucket"));
    promtool::assert_passes(&text);
}

#[test]
fn promtool_refuses_a_broken_exposition() {
    // The check can fail: a counter without `_total` and a histogram without +Inf are refused.
    if !promtool::available() {
        return;
    }
    let broken = "# HELP x_seconds a\n# TYPE x_seconds histogram\nx_seconds_bucket{le=\"1.0\"} 1\nx_seconds_sum 1\nx_seconds_count 1\n# HELP y a\n# TYPE y counter\ny 1\n";
    assert!(
        !promtool::check_metrics(broken).exit_ok,
        "promtool accepted a broken exposition"
    );
}

#[test]
fn the_python_openmetrics_parser_accepts_the_openmetrics_rendering_with_exemplars() {
    if !tool_available(
        "the Python package prometheus-client (pip)",
        python_has("prometheus_client.openmetrics.parser"),
    ) {
        return;
    }
    let text = scrape_under_load(Format::OpenMetrics);
    let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families = list(text_string_to_metric_families(sys.stdin.read()))
exemplars = sum(1 for f in families for s in f.samples if s.exemplar is not None)
print(len(families), exemplars)
"#;
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python ends");
    assert!(
        out.status.success(),
        "parser: {}\n---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    let mut it = said
        .split_whitespace()
        .map(|n| n.parse::<u64>().expect("number"));
    let (families, exemplars) = (it.next().expect("families"), it.next().expect("exemplars"));
    assert!(families >= 15, "{said}");
    assert!(exemplars > 0, "exemplars survive the parser: {said}");
}
