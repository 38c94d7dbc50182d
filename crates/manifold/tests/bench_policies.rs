//! `manifold bench retry-storm --quick --json` as a user runs it: the real binary, each
//! variant's gateway a `manifold serve` child of it, upstream requests counted at the sim.

use std::process::Command;

use serde_json::Value;

#[test]
fn retry_storm_quick_json_counts_the_retries_at_the_upstream() {
    let out = Command::new(env!("CARGO_BIN_EXE_manifold"))
        .args([
            "bench",
            "retry-storm",
            "--quick",
            "--json",
            "--rates",
            "100",
            "--timer",
            "tokio",
        ])
        .env_remove("RUST_LOG")
        .output()
        .expect("run manifold");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    let v: Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(v["scenario"], "retry-storm", "{v}");
    let variants = v["variants"].as_array().expect("variants");
    let names: Vec<&str> = variants.iter().filter_map(|x| x["name"].as_str()).collect();
    assert_eq!(names, ["plain", "budgeted"], "{v}");
    let ratio = |i: usize| {
        variants[i]["upstream_per_offered"]["median"]
            .as_f64()
            .unwrap()
    };
    for x in variants {
        // 2 rounds of 2 s at 100 req/s.
        assert_eq!(x["offered"], 400, "{x}");
        assert!(x["upstream_requests"].as_u64().unwrap() >= 400, "{x}");
    }
    // Unbudgeted: 1 + p + p² = 1.75 at p = 0.5 (binomial noise over 200 requests a round).
    assert!((1.55..=1.95).contains(&ratio(0)), "{v}");
    // The budget can only take retries away.
    assert!(ratio(1) <= ratio(0) + 0.05, "{v}");
    assert!(
        v["goal"]["what"].as_str().unwrap().contains("1 + p + p²"),
        "{v}"
    );
}

#[test]
fn connections_and_factor_are_for_bench_overload_only_and_bounded() {
    for (args, said) in [
        (
            &["bench", "hedge", "--connections", "10"][..],
            "--connections is for `bench overload`",
        ),
        (
            &["bench", "overload", "--connections", "0"][..],
            "--connections must be between 1 and 20000",
        ),
        (
            &["bench", "hedge", "--factor", "1.5"][..],
            "--factor is for `bench overload`",
        ),
        (
            &["bench", "overload", "--factor", "0.5"][..],
            "--factor must be between 1 and 10",
        ),
        (
            &["bench", "overload", "--factor", "NaN"][..],
            "--factor must be between 1 and 10",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_manifold"))
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .expect("run manifold");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(said), "{args:?}: {stderr}");
    }
}

/// `manifold bench compose --telemetry`: each mode a `manifold serve` child of the real binary,
/// its whole-process CPU read, the full one's spans decoded by the bench's OTLP sink.
#[test]
fn telemetry_bench_runs_three_children_and_the_sink_decodes_every_exported_span() {
    let _x = crate::exclusive();
    let out = Command::new(env!("CARGO_BIN_EXE_manifold"))
        .args([
            "bench",
            "compose",
            "--telemetry",
            "--quick",
            "--json",
            "--rates",
            "200",
            "--duration",
            "1s",
            "--rounds",
            "1",
        ])
        .env_remove("RUST_LOG")
        .output()
        .expect("run manifold");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    let v: Value = serde_json::from_str(&stdout).expect("one JSON document");
    let modes = v["modes"].as_array().expect("modes");
    let names: Vec<&str> = modes.iter().filter_map(|m| m["mode"].as_str()).collect();
    assert_eq!(names, ["off", "metrics", "full tracing"], "{v}");
    for m in modes {
        assert!(m["ok"].as_u64().unwrap() >= 150, "{m}");
        assert_eq!(m["errors"], 0, "{m}");
        // Read from the child's /proc, so present and positive on Linux.
        assert!(
            m["cpu_us_per_request"]["median"].as_f64().unwrap() > 0.0,
            "{m}"
        );
    }
    // The sink decoded what the gateway says it exported: a root and five calls per request.
    let spans = v["sink_spans"].as_u64().unwrap();
    assert!(spans >= 6 * 150, "{v}");
    assert_eq!(v["spans_exported"].as_f64(), Some(spans as f64), "{v}");
    assert_eq!(v["sink_undecodable"], 0, "{v}");
    // Decoded between rounds, never inside a measured window.
    assert_eq!(v["sink_decoded_on_arrival"], 0, "{v}");
}
