//! Injected faults: error statuses, dropped connections, hangs, slow bodies, and their rates.

use std::time::Duration;

use manifold_sim::{Sim, SimConfig};
use tokio::time::Instant;

use crate::{send, send_raw};

fn one_endpoint(faults: &str) -> SimConfig {
    SimConfig::from_toml(&format!(
        r#"
seed = 3
[services.svc]
endpoints = [{{ method = "POST", path = "/x", latency = "20ms", faults = [{faults}],
               response = {{ status = 201, body = {{ id = "{{uuid}}", n = "{{seq}}" }} }} }}]
"#
    ))
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn status_fault_after_the_latency() {
    let sim = Sim::start(one_endpoint(
        r#"{ kind = "status", status = 503, rate = 1.0 }"#,
    ))
    .await
    .unwrap();
    let t = Instant::now();
    let (st, v) = send(sim.addr("svc").unwrap(), "POST", "/x", "")
        .await
        .unwrap();
    assert_eq!(t.elapsed(), Duration::from_millis(20));
    assert_eq!(st, 503);
    assert_eq!(v["error"], "injected fault");
    let e = &sim.stats().services["svc"].endpoints["POST /x"];
    assert_eq!((e.calls, e.ok, e.faults["status"]), (1, 0, 1));
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn reset_drops_the_connection_without_an_answer() {
    let sim = Sim::start(one_endpoint(r#"{ kind = "reset", rate = 1.0 }"#))
        .await
        .unwrap();
    let err = send(sim.addr("svc").unwrap(), "POST", "/x", "")
        .await
        .unwrap_err();
    assert!(
        err.is_incomplete_message() || err.is_canceled() || err.to_string().contains("closed"),
        "{err}"
    );
    let e = &sim.stats_with_calls().services["svc"].replicas[0].endpoints["POST /x"];
    assert_eq!(e.faults["reset"], 1);
    assert_eq!(e.recent.as_ref().unwrap()[0].outcome, "reset");
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn hang_never_answers_until_shutdown() {
    let sim = Sim::start(one_endpoint(r#"{ kind = "hang", rate = 1.0 }"#))
        .await
        .unwrap();
    let addr = sim.addr("svc").unwrap();
    let pending = tokio::spawn(async move { send(addr, "POST", "/x", "").await });
    // An hour of (virtual) waiting: still nothing.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(!pending.is_finished());
    let e = &sim.stats().services["svc"].endpoints["POST /x"];
    assert_eq!((e.calls, e.in_flight, e.faults["hang"]), (1, 1, 1));
    // Shutdown ends it: the client sees its connection closed.
    sim.shutdown().await;
    let res = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("shutdown must release hanging requests")
        .unwrap();
    assert!(res.is_err());
}

#[tokio::test(start_paused = true)]
async fn slow_body_arrives_over_its_duration() {
    let sim = Sim::start(one_endpoint(
        r#"{ kind = "slow_body", over = "2s", rate = 1.0 }"#,
    ))
    .await
    .unwrap();
    let t = Instant::now();
    let (st, body) = send_raw(sim.addr("svc").unwrap(), "POST", "/x", "")
        .await
        .unwrap();
    assert_eq!(st, 201);
    assert_eq!(t.elapsed(), Duration::from_millis(2020));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["n"], 1, "the whole body arrives, intact");
    assert_eq!(
        sim.stats().services["svc"].endpoints["POST /x"].faults["slow_body"],
        1
    );
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn fault_rates_over_many_requests() {
    let sim = Sim::start(one_endpoint(
        r#"{ kind = "status", status = 500, rate = 0.2 }, { kind = "status", status = 502, rate = 0.05 }"#,
    ))
    .await
    .unwrap();
    let addr = sim.addr("svc").unwrap();
    const N: u64 = 2000;
    let (mut s500, mut s502, mut ok) = (0u64, 0u64, 0u64);
    for _ in 0..N {
        match send(addr, "POST", "/x", "").await.unwrap().0 {
            500 => s500 += 1,
            502 => s502 += 1,
            201 => ok += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    // Binomial sds: 500s ≈ 17.9 around 400; 502s ≈ 9.7 around 100. ±4.5 sd.
    assert!((320..=480).contains(&s500), "500s: {s500}");
    assert!((56..=144).contains(&s502), "502s: {s502}");
    let e = &sim.stats().services["svc"].endpoints["POST /x"];
    assert_eq!(e.calls, N);
    assert_eq!(e.ok, ok);
    assert_eq!(e.faults["status"], s500 + s502);
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn oversized_bodies_are_refused() {
    let sim = Sim::start(one_endpoint("")).await.unwrap();
    let big = "x".repeat(manifold_sim::MAX_BODY_BYTES + 1);
    let (st, _) = send(sim.addr("svc").unwrap(), "POST", "/x", &big)
        .await
        .unwrap();
    assert_eq!(st, 413);
    sim.shutdown().await;
}
