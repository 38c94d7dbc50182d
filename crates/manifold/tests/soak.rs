//! `manifold bench soak` as the lead runs it, only seconds long and slow: the report's shape, the
//! gateway child sampled over time, the fault windows opened, every request answered.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// Run `manifold ARGS`, killing it if it has not finished within `limit`.
fn run_bounded(args: &[&str], limit: Duration) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_manifold"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let step = Duration::from_millis(50);
    let mut waited = Duration::ZERO;
    while child.try_wait().unwrap().is_none() {
        if waited >= limit {
            child.kill().unwrap();
            panic!(
                "`manifold {}` still running after {limit:?}",
                args.join(" ")
            );
        }
        std::thread::sleep(step);
        waited += step;
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn gateway_exe_must_exist() {
    let (ok, _, stderr) = run_bounded(
        &["bench", "soak", "--gateway-exe", "/nonexistent/manifold"],
        Duration::from_secs(20),
    );
    assert!(!ok);
    assert!(
        stderr.contains("--gateway-exe /nonexistent/manifold: no such file"),
        "{stderr}"
    );
}

#[test]
fn a_short_soak_samples_the_gateway_over_time_and_answers_every_request() {
    let _exclusive = crate::exclusive();
    // The gateway through `--gateway-exe`: a script that `exec`s this binary, as one that runs it
    // under a heap profiler would, so the sampled process is still the gateway.
    let dir = std::env::temp_dir().join(format!("manifold-soak-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wrapper = dir.join("gateway.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec '{}' \"$@\"\n",
            env!("CARGO_BIN_EXE_manifold")
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (ok, stdout, stderr) = run_bounded(
        &[
            "bench",
            "soak",
            "--duration",
            "4s",
            "--rate",
            "150",
            "--json",
            "--gateway-exe",
            wrapper.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ok, "stdout: {stdout}\nstderr: {stderr}");
    let r: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(r["scenario"], "soak");
    assert_eq!(r["duration_s"], 4.0);
    assert_eq!(r["rate"], 150.0);
    let gateway = r["gateway"].as_str().unwrap();
    assert!(gateway.contains("serve` child process"), "{gateway}");
    assert!(gateway.contains("gateway.sh"), "{gateway}");

    // Every route got its third of the load, and every request an answer.
    let routes = r["routes"].as_array().unwrap();
    let kinds: Vec<&str> = routes.iter().map(|x| x["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["composed", "cached", "proxy"]);
    for route in routes {
        assert_eq!(route["sent"], 200, "{route}");
        assert_eq!(route["unanswered"], serde_json::json!({}), "{route}");
        assert_eq!(route["wrong"], serde_json::json!({}), "{route}");
        assert!(
            route["latency_ms"]["p50"].as_f64().unwrap() > 0.0,
            "{route}"
        );
    }
    let a = &r["answers"];
    assert_eq!(a["sent"], 600, "{a}");
    assert_eq!(
        a["ok"].as_u64().unwrap() + a["right_errors"].as_u64().unwrap(),
        600,
        "{a}"
    );
    assert_eq!(a["met"], true, "{a}");

    // The child was sampled: the idle baseline, every quarter second under load, then after.
    let samples = r["samples"].as_array().unwrap();
    let phases: Vec<&str> = samples
        .iter()
        .map(|s| s["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases.first(), Some(&"baseline"), "{phases:?}");
    assert_eq!(
        &phases[phases.len() - 2..],
        ["after", "settled"],
        "{phases:?}"
    );
    let under_load = phases.iter().filter(|p| **p == "load").count();
    assert!(under_load >= 8, "{phases:?}");
    assert!(phases.contains(&"warmup"), "{phases:?}");
    let mut last_t = 0.0;
    for s in &samples[1..] {
        // A Rust gateway's RSS is megabytes; listener, admin listener and epoll at least.
        assert!(s["rss_kib"].as_u64().unwrap() > 1024, "{s}");
        assert!(s["fds"].as_u64().unwrap() >= 3, "{s}");
        assert!(s["threads"].as_u64().unwrap() >= 1, "{s}");
        let t = s["t_s"].as_f64().unwrap();
        assert!(t >= last_t, "samples out of order: {samples:?}");
        last_t = t;
    }
    assert!(
        samples.iter().any(|s| s["fault"].is_string()),
        "no sample fell in a fault window: {samples:?}"
    );

    // Fault windows of both kinds, every upstream restarted after going down.
    let faults = r["faults"].as_array().unwrap();
    let fault_kinds: Vec<&str> = faults.iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert!(
        fault_kinds.contains(&"stall") && fault_kinds.contains(&"down"),
        "{faults:?}"
    );
    assert!(
        faults.iter().all(|f| f.get("error").is_none()),
        "{faults:?}"
    );

    // The goals are judged from the samples.
    let rss = &r["rss"];
    assert!(rss["warmup_end_kib"].as_u64().unwrap() > 1024, "{rss}");
    assert!(rss["drift_pct"].is_number(), "{rss}");
    assert_eq!(rss["goal_pct"], 5.0);
    let fds = &r["fds"];
    assert!(
        fds["max"].as_u64().unwrap() > fds["baseline"].as_u64().unwrap(),
        "load opened no connection? {fds}"
    );
    assert_eq!(fds["met"], true, "file descriptors left open: {fds}");
}
