//! Tests of `manifold bench proxy`: targets that run, peers skipped, goal lines.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_and_in_process_manifold_answer_and_missing_proxies_are_skipped() {
    let spec = ProxySpec {
        rates: vec![200.0],
        duration: Duration::from_millis(300),
        rounds: 1,
        throughput_clients: 4,
        throughput_duration: Duration::from_millis(200),
        manifold_exe: None,
        peers_dir: Some(PathBuf::from("/nonexistent/manifold-bench-peers")),
        ..Default::default()
    };
    let report = run(&spec, |_| {}).await.unwrap();
    let names: Vec<&str> = report.rates[0]
        .targets
        .iter()
        .map(|t| t.latency.target.as_str())
        .collect();
    assert_eq!(names, ["direct", "manifold"]);
    for t in &report.rates[0].targets {
        assert_eq!(t.latency.errors, 0, "{t:?}");
        assert_eq!(t.latency.sent, 60, "{t:?}");
        // In-process: no CPU figure rather than a wrong one.
        assert!(t.cpu_us_per_request.is_none());
    }
    let skipped: Vec<&str> = report.skipped.iter().map(|s| s.peer.as_str()).collect();
    assert_eq!(skipped, ["nginx", "haproxy", "envoy"]);
    for s in &report.skipped {
        assert!(s.reason.contains(".template"), "{s}");
    }
    assert!(report.manifold_process.contains("in-process"));
    assert_eq!(report.throughput.len(), 2);
    assert!(report.throughput.iter().all(|t| t.rps.median > 0.0));
    let md = report.to_markdown();
    assert!(
        md.contains("| 200/s | manifold |")
            && md.contains("nginx: skipped: ")
            && md.contains("envoy: skipped: "),
        "{md}"
    );
}

#[tokio::test]
async fn a_manifold_binary_that_does_not_exist_is_a_setup_error() {
    let spec = ProxySpec {
        manifold_exe: Some(PathBuf::from("/nonexistent/manifold")),
        peers_dir: None,
        ..ProxySpec::quick()
    };
    let err = run(&spec, |_| {}).await.unwrap_err();
    assert!(err.to_string().contains("manifold serve"), "{err}");
}

/// Where nginx, HAProxy and Envoy are installed each must proxy every request (and its CPU
/// is read from /proc); where one is not, it must be skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_proxy_peer_either_proxies_every_request_or_is_skipped() {
    let spec = ProxySpec {
        rates: vec![100.0],
        duration: Duration::from_millis(300),
        rounds: 1,
        throughput_duration: Duration::ZERO,
        manifold_exe: None,
        peers_dir: Some(peers::default_dir()),
        ..Default::default()
    };
    let report = run(&spec, |_| {}).await.unwrap();
    for peer in ["nginx", "haproxy", "envoy"] {
        let ran = report.rates[0]
            .targets
            .iter()
            .find(|t| t.latency.target == peer);
        let skipped = report.skipped.iter().any(|s| s.peer == peer);
        assert!(ran.is_some() != skipped, "{peer}: {report:?}");
        if let Some(n) = ran {
            assert_eq!((n.latency.errors, n.latency.sent), (0, 30), "{n:?}");
            assert!(n.cpu_us_per_request.is_some(), "{n:?}");
        }
    }
}

fn target(name: &str, cpu: f64, added_p50: f64, errors: u64) -> ProxyMeasured {
    let one = |x| Spread {
        median: x,
        min: x,
        max: x,
    };
    let mut errors_by_kind = std::collections::BTreeMap::new();
    if errors > 0 {
        errors_by_kind.insert("timeout".to_owned(), errors);
    }
    ProxyMeasured {
        latency: Measured {
            target: name.into(),
            rate: 5000.0,
            p50_ms: one(0.2),
            p99_ms: one(0.5),
            p999_ms: one(0.9),
            max_ms: one(2.0),
            errors,
            sent: 75_000,
            errors_by_kind,
        },
        added_p50_over_direct_ms: added_p50,
        added_p99_over_direct_ms: 0.1,
        cpu_us_per_request: (name != "direct").then(|| one(cpu)),
    }
}

fn report(targets: Vec<ProxyMeasured>) -> ProxyReport {
    ProxyReport {
        scenario: "proxy",
        upstream_delay_ms: 0,
        duration_s: 5.0,
        rounds: 3,
        manifold_process: "child".into(),
        rates: vec![ProxyRate {
            rate: 5000.0,
            targets,
        }],
        throughput_clients: 0,
        throughput: Vec::new(),
        skipped: Vec::new(),
    }
}

#[test]
fn goal_lines_compare_with_the_cheapest_peer_and_nginx_and_refuse_a_verdict_over_failures() {
    let clean = report(vec![
        target("direct", 0.0, 0.0, 0),
        target("manifold", 48.0, 0.040, 0),
        target("nginx", 25.0, 0.020, 0),
        target("haproxy", 24.0, 0.025, 0),
    ]);
    let lines = clean.goal_lines();
    assert_eq!(
        lines,
        [
            "5000/s: Manifold CPU 48.0 µs/req against haproxy's 24.0 (2.00×); \
          added p50 +0.040 ms against nginx's +0.020 ms"
        ]
    );
    // Failures of a target outside the comparison (none here) or of a compared one.
    let failed = report(vec![
        target("direct", 0.0, 0.0, 0),
        target("manifold", 48.0, 0.040, 1650),
        target("nginx", 25.0, 0.020, 0),
        target("haproxy", 24.0, 0.025, 0),
    ]);
    let line = &failed.goal_lines()[0];
    assert!(
        line.ends_with("not decided: manifold had 1650 failed of 75000 sent (timeout 1650)"),
        "{line}"
    );
    let md = failed.to_markdown();
    assert!(md.contains("| 1650/75000 (timeout 1650) |"), "{md}");
}

/// The bare hyper proxy is the stack's floor, not a peer: it never becomes "the lowest peer",
/// and the line says how it compares with the cheapest peer and with Manifold.
#[test]
fn the_bare_hyper_proxy_is_reported_beside_the_peers_and_never_counted_as_one() {
    let r = report(vec![
        target("direct", 0.0, 0.0, 0),
        target("manifold", 48.0, 0.040, 0),
        target("hyper", 12.0, 0.010, 0),
        target("nginx", 25.0, 0.020, 0),
        target("haproxy", 24.0, 0.025, 0),
    ]);
    assert_eq!(
        r.goal_lines(),
        [
            "5000/s: Manifold CPU 48.0 µs/req against haproxy's 24.0 (2.00×); \
             the bare hyper proxy 12.0 µs/req, 0.50× haproxy's (Manifold 4.00× it); \
             added p50 +0.040 ms against nginx's +0.020 ms"
        ]
    );
}
