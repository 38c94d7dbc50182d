//! A replica's own misbehaviour (errors, stragglers, turning slow mid-run) through the whole
//! stack, on paused time.

use std::time::Duration;

use manifold_sim::{Sim, SimConfig};

use crate::timed;

const BAD_REPLICAS: &str = r#"
seed = 5
[services.api]
replicas = [
  {},
  { error_rate = 0.5 },
  { straggler_rate = 0.1, straggler_scale = 20.0 },
  { slow_after = "5s", slow_scale = 20.0 },
]
endpoints = [{ path = "/item", latency = "10ms" }]
"#;

#[tokio::test(start_paused = true)]
async fn errors_stragglers_and_a_replica_turning_slow() {
    let sim = Sim::start(SimConfig::from_toml(BAD_REPLICAS).unwrap())
        .await
        .unwrap();
    let addrs = sim.addrs("api");
    const N: usize = 1000;

    // A plain replica: always 10 ms, always 200.
    for _ in 0..100 {
        assert_eq!(
            timed(addrs[0], "GET", "/item").await,
            (200, Duration::from_millis(10))
        );
    }

    // Half the requests answer 503, after the latency all the same.
    let mut errors = 0;
    for _ in 0..N {
        let (status, d) = timed(addrs[1], "GET", "/item").await;
        assert_eq!(d, Duration::from_millis(10));
        match status {
            503 => errors += 1,
            200 => {}
            other => panic!("status {other}"),
        }
    }
    // Binomial(1000, 0.5): sd ≈ 15.8; ±4 sd.
    assert!((437..=563).contains(&errors), "errors {errors}");

    // One request in ten takes 20× its latency.
    let mut stragglers = 0;
    for _ in 0..N {
        let (status, d) = timed(addrs[2], "GET", "/item").await;
        assert_eq!(status, 200);
        if d == Duration::from_millis(200) {
            stragglers += 1;
        } else {
            assert_eq!(d, Duration::from_millis(10));
        }
    }
    // Binomial(1000, 0.1): sd ≈ 9.5; ±4 sd.
    assert!((62..=138).contains(&stragglers), "stragglers {stragglers}");

    let stats = sim.stats();
    let api = &stats.services["api"];
    assert_eq!(
        api.replicas[1].endpoints["GET /item"].faults["status"],
        errors
    );
    assert_eq!(api.replicas[2].stragglers, stragglers);
    assert_eq!(api.replicas[0].stragglers, 0);

    // The last replica turns slow 5 s after the last reset: counted from the reset, not from
    // the start (more than 5 s of virtual time have passed already).
    sim.reset_stats();
    assert_eq!(
        timed(addrs[3], "GET", "/item").await,
        (200, Duration::from_millis(10))
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        timed(addrs[3], "GET", "/item").await,
        (200, Duration::from_millis(200))
    );
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn same_seed_same_errors_and_stragglers() {
    let mut runs = Vec::new();
    for _ in 0..2 {
        let sim = Sim::start(SimConfig::from_toml(BAD_REPLICAS).unwrap())
            .await
            .unwrap();
        let addrs = sim.addrs("api");
        let mut seen = Vec::new();
        for _ in 0..200 {
            seen.push(timed(addrs[1], "GET", "/item").await);
            seen.push(timed(addrs[2], "GET", "/item").await);
        }
        runs.push(seen);
        sim.shutdown().await;
    }
    assert_eq!(runs[0], runs[1]);
}

#[test]
fn replica_settings_are_validated_with_their_place() {
    for (replica, needle) in [
        (
            "{ error_rate = 2.0 }",
            "replicas[0].error_rate must be a probability",
        ),
        (
            "{ error_status = 200 }",
            "replicas[0].error_status must be an error status",
        ),
        ("{ straggler_rate = -1.0 }", "replicas[0].straggler_rate"),
        (
            "{ straggler_scale = 0.5 }",
            "replicas[0].straggler_scale must be between 1",
        ),
        ("{ slow_scale = 1e12 }", "replicas[0].slow_scale"),
        ("{ slow_after = \"soon\" }", "line 3"),
        ("{ stragglers = 0.1 }", "unknown field"),
    ] {
        let src =
            format!("[services.api]\nendpoints = [{{ path = \"/a\" }}]\nreplicas = [{replica}]\n");
        let err = SimConfig::from_toml(&src).unwrap_err().to_string();
        assert!(err.contains(needle), "{replica}\n=> {err}");
        if needle.starts_with("replicas") {
            assert!(err.contains("services.api: "), "{err}");
        }
    }
}
