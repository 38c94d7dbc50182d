use super::*;

fn sample_registry() -> Metrics {
    let m = Metrics::new();
    let route = m.route("checkout");
    let active = route.start();
    active.finish(
        200,
        Duration::from_millis(30),
        Some((TraceId([1; 16]), SpanId([2; 8]))),
    );
    // One request still running when the scrape happens.
    std::mem::forget(route.start());
    route.start().finish(503, Duration::from_millis(900), None);
    let call = m.call("checkout", "payment", "payment");
    call.observe(Duration::from_millis(12), None);
    call.outcome(CallResult::Ok);
    call.outcome(CallResult::Error {
        kind: "timeout",
        partial: true,
    });
    call.cache(CacheOutcome::L1);
    call.cache(CacheOutcome::Miss);
    call.cache(CacheOutcome::Coalesced);
    let q = m.queue("outbox");
    q.set_depth(3);
    q.set_oldest_age(Duration::from_millis(1500));
    q.delivery(true);
    q.dead_letter();
    let e = m.endpoint("payment", "http://127.0.0.1:7002");
    e.set_breaker(BreakerState::Open);
    e.set_cost(f64::NAN);
    m.attach_span_stats(Arc::new(SpanStats::default()));
    m
}

#[test]
fn the_text_format_has_every_family_once_with_help_and_type() {
    let text = sample_registry().render(Format::Prometheus);
    for name in [
        "manifold_http_server_request_duration_seconds",
        "manifold_http_server_active_requests",
        "manifold_call_duration_seconds",
        "manifold_calls_total",
        "manifold_call_errors_total",
        "manifold_cache_hits_total",
        "manifold_cache_misses_total",
        "manifold_cache_coalesced_waits_total",
        "manifold_queue_depth",
        "manifold_queue_oldest_task_age_seconds",
        "manifold_queue_dead_letters_total",
        "manifold_upstream_breaker_state",
        "manifold_upstream_balancer_cost",
        "manifold_telemetry_spans_dropped_total",
    ] {
        assert_eq!(
            text.matches(&format!("# TYPE {name} ")).count(),
            1,
            "{name} in\n{text}"
        );
    }
    assert!(text.contains("manifold_http_server_active_requests{route=\"checkout\"} 1\n"));
    assert!(text.contains(
        "manifold_http_server_request_duration_seconds_bucket{route=\"checkout\",status_class=\"5xx\",le=\"1.0\"} 1\n"
    ));
    assert!(text.contains("manifold_upstream_breaker_state{upstream=\"payment\",endpoint=\"http://127.0.0.1:7002\",state=\"open\"} 1\n"));
    assert!(text.contains("manifold_upstream_balancer_cost{upstream=\"payment\",endpoint=\"http://127.0.0.1:7002\"} NaN\n"));
    assert!(!text.contains(" # {"), "no exemplars in the text format");
    assert!(!text.contains("# EOF"));
}

#[test]
fn openmetrics_names_counter_families_without_total_and_carries_exemplars() {
    let text = sample_registry().render(Format::OpenMetrics);
    assert!(text.contains("# TYPE manifold_calls counter\n"));
    assert!(text.contains("manifold_calls_total{"));
    assert!(text.contains(
        "le=\"0.05\"} 1 # {trace_id=\"01010101010101010101010101010101\",span_id=\"0202020202020202\"} 0.03 "
    ), "{text}");
    assert!(text.ends_with("# EOF\n"));
}

/// Parse `name{labels} value` lines of the text format into (series, value).
fn series(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

#[test]
fn under_concurrent_load_counters_grow_and_buckets_are_cumulative() {
    let m = Metrics::new();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let m = m.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let route = m.route(["a", "b"][w % 2]);
                let call = m.call("a", "c", "u");
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 2_000_000 {
                    route.start().finish(
                        200 + (i % 4) as u16 * 100,
                        Duration::from_micros(i % 50_000),
                        None,
                    );
                    call.observe(Duration::from_micros(i % 7_000), None);
                    call.outcome(CallResult::Ok);
                    i += 1;
                }
            })
        })
        .collect();
    let mut last: std::collections::HashMap<String, f64> = Default::default();
    for _ in 0..50 {
        let text = m.render(Format::Prometheus);
        let now = series(&text);
        // Cumulative: each histogram's buckets never decrease along `le`, and +Inf is _count.
        let mut prev: Option<(String, f64)> = None;
        for (k, v) in &now {
            if let Some((base, _)) = k.split_once(",le=") {
                if let Some((pbase, pv)) = &prev {
                    if pbase == base {
                        assert!(v >= pv, "bucket {k} = {v} < {pv}");
                    }
                }
                prev = Some((base.to_owned(), *v));
            }
            if k.ends_with("_total")
                || k.contains("_total{")
                || k.contains("_bucket{")
                || k.contains("_count{")
            {
                if let Some(old) = last.get(k) {
                    assert!(v >= old, "{k} went from {old} to {v}");
                }
            }
        }
        last = now.into_iter().collect();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }
}

#[test]
fn endpoints_that_are_gone_end_their_series() {
    let m = Metrics::new();
    for ep in ["10.0.0.1:80", "10.0.0.2:80"] {
        let e = m.endpoint("svc", ep);
        e.set_breaker(BreakerState::Open);
        e.set_cost(0.01);
    }
    m.endpoint("gone", "10.0.0.9:80").set_cost(0.02);
    let current: std::collections::HashSet<(&str, &str)> =
        [("svc", "10.0.0.2:80")].into_iter().collect();
    m.retain_endpoints(&current);
    let text = m.render(Format::Prometheus);
    assert!(text.contains("endpoint=\"10.0.0.2:80\""), "{text}");
    assert!(!text.contains("10.0.0.1:80"), "{text}");
    assert!(!text.contains("upstream=\"gone\""), "{text}");
}

#[test]
fn routes_and_calls_a_reload_removed_end_their_series_even_when_they_finish_late() {
    let m = Metrics::new();
    let kept = m.route("kept");
    let gone = m.route("gone");
    kept.start().finish(200, Duration::from_millis(3), None);
    gone.start().finish(200, Duration::from_millis(3), None);
    let kept_call = m.call("kept", "a", "up");
    let gone_call = m.call("gone", "b", "up");
    let moved_call = m.call("kept", "c", "old-up");
    for c in [&kept_call, &gone_call, &moved_call] {
        c.outcome(CallResult::Ok);
        c.cache(CacheOutcome::L1);
    }
    // A request of the removed route still running when the reload lands.
    let late = gone.start();
    let mut live = LiveRoutes::new();
    live.route("kept");
    live.call("kept", "a", "up");
    live.call("kept", "c", "new-up");
    m.set_live_routes(live);
    let text = m.render(Format::Prometheus);
    assert!(text.contains("route=\"kept\""), "{text}");
    assert!(!text.contains("route=\"gone\""), "{text}");
    assert!(!text.contains("old-up"), "{text}");
    // The cache series are per route and call: `kept`/`c` still runs (to another upstream).
    assert!(
        text.contains("manifold_cache_hits_total{route=\"kept\",call=\"c\""),
        "{text}"
    );
    // It ends with a status class and a cache tier its handles had not resolved yet: those
    // series come back in the registry, and the next render drops them again.
    late.finish(503, Duration::from_millis(9), None);
    gone_call.cache(CacheOutcome::Miss);
    let text = m.render(Format::Prometheus);
    assert!(!text.contains("route=\"gone\""), "{text}");
    // The kept route's counters went on where they were.
    kept.start().finish(200, Duration::from_millis(3), None);
    let text = m.render(Format::Prometheus);
    assert!(
        text.contains(
            "manifold_http_server_request_duration_seconds_count{route=\"kept\",status_class=\"2xx\"} 2"
        ),
        "{text}"
    );
}
