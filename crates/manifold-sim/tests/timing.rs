//! Latency distributions through the whole stack (sockets, hyper, handler), on paused time.

use std::time::Duration;

use manifold_sim::{Sim, SimConfig};

use crate::{send, timed};

const TAIL: &str = r#"
seed = 11
[services.search]
replicas = [{}, { latency_scale = 3.0 }]
endpoints = [
  { path = "/search", latency = "99% 10ms, 1% 1s" },
  { path = "/normal", latency = { dist = "normal", mean = "50ms", stddev = "5ms" } },
]
"#;

#[tokio::test(start_paused = true)]
async fn tail_mix_over_many_requests() {
    let sim = Sim::start(SimConfig::from_toml(TAIL).unwrap())
        .await
        .unwrap();
    let addr = sim.addr("search").unwrap();
    const N: usize = 3000;
    let mut slow = 0;
    for _ in 0..N {
        let (st, d) = timed(addr, "GET", "/search").await;
        assert_eq!(st, 200);
        if d == Duration::from_secs(1) {
            slow += 1;
        } else {
            assert_eq!(d, Duration::from_millis(10));
        }
    }
    // Binomial(3000, 0.01): mean 30, sd ≈ 5.45. ±4 sd.
    assert!((8..=52).contains(&slow), "slow calls: {slow}");
    assert_eq!(sim.stats().calls("search", "GET /search"), N as u64);
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn normal_over_many_requests_and_replica_scale() {
    let sim = Sim::start(SimConfig::from_toml(TAIL).unwrap())
        .await
        .unwrap();
    let addrs = sim.addrs("search");
    assert_eq!(addrs.len(), 2);
    const N: usize = 2000;
    for (replica, scale) in [(0, 1.0), (1, 3.0)] {
        let mut xs = Vec::with_capacity(N);
        for _ in 0..N {
            let (_, d) = timed(addrs[replica], "GET", "/normal").await;
            xs.push(d.as_secs_f64() * 1000.0);
        }
        let n = N as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        // Standard error of the mean: 5·scale/√2000 ≈ 0.11·scale ms. ±5 standard errors.
        assert!(
            (mean - 50.0 * scale).abs() < 0.6 * scale,
            "replica {replica}: mean {mean}"
        );
        assert!(
            (sd - 5.0 * scale).abs() < 0.5 * scale,
            "replica {replica}: sd {sd}"
        );
    }
    let s = sim.stats();
    assert_eq!(s.services["search"].replicas[0].calls, N as u64);
    assert_eq!(s.services["search"].replicas[1].calls, N as u64);
    assert_eq!(s.services["search"].replicas[1].latency_scale, 3.0);
    assert_eq!(s.calls("search", "GET /normal"), 2 * N as u64);
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_run_repeats_with_its_seed() {
    let mut runs = Vec::new();
    for _ in 0..2 {
        let sim = Sim::start(SimConfig::from_toml(TAIL).unwrap())
            .await
            .unwrap();
        let addr = sim.addr("search").unwrap();
        let mut ds = Vec::new();
        for _ in 0..50 {
            ds.push(timed(addr, "GET", "/normal").await.1);
        }
        runs.push(ds);
        sim.shutdown().await;
    }
    assert_eq!(runs[0], runs[1]);
}

#[tokio::test(start_paused = true)]
async fn stall_holds_answers_until_it_ends() {
    let sim = Sim::start(SimConfig::shop()).await.unwrap();
    let users = sim.addr("users").unwrap();
    // In process: a request arriving in a 1 s stall answers when it ends.
    sim.stall(Duration::from_secs(1));
    let (st, d) = timed(users, "GET", "/users/1").await;
    assert_eq!(st, 200);
    assert_eq!(d, Duration::from_secs(1));
    // After the stall: back to 100 ms.
    assert_eq!(
        timed(users, "GET", "/users/1").await.1,
        Duration::from_millis(100)
    );
    // Over HTTP.
    let (st, v) = send(users, "POST", "/__stall?for=500ms", "").await.unwrap();
    assert_eq!((st, v["stalled_ms"].as_f64()), (200, Some(500.0)));
    assert_eq!(
        timed(users, "GET", "/users/1").await.1,
        Duration::from_millis(500)
    );
    let (st, v) = send(users, "POST", "/__stall?for=soon", "").await.unwrap();
    assert_eq!(st, 400);
    assert!(v["error"].as_str().unwrap().starts_with("input error"));
    let (st, _) = send(users, "POST", "/__stall?for=1h", "").await.unwrap();
    assert_eq!(st, 400);
    sim.shutdown().await;
}
