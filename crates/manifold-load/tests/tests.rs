//! The load generator against the real simulated upstream (manifold-sim) on loopback, in real
//! time. Every run is bounded by a request count or a duration of a few seconds.

use std::time::Duration;

use manifold_load::{run, ErrorKind, KeyDist, LoadSpec};
use manifold_sim::{Sim, SimConfig};

fn sim_config(extra: &str) -> SimConfig {
    SimConfig::from_toml(&format!(
        r#"
[services.svc]
endpoints = [
  {{ path = "/fast", latency = "2ms" }},
  {{ path = "/slow", latency = "50ms" }},
  {{ path = "/items/{{id}}", latency = "1ms", response = {{ body = {{ id = "{{path.id}}" }} }} }},
  {{ method = "POST", path = "/echo", latency = "1ms", response = {{ body = "{{body}}" }} }},
  {extra}
]
"#
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn achieves_the_scheduled_rate() {
    let sim = Sim::start(sim_config("")).await.unwrap();
    let mut spec = LoadSpec::new(format!("{}/fast", sim.url("svc").unwrap()), 200.0);
    spec.duration = Some(Duration::from_secs(2));
    let r = run(spec).await.unwrap();
    assert_eq!((r.sent, r.ok, r.errors), (400, 400, 0), "{r}");
    // Every scheduled request reached the server, once.
    assert_eq!(sim.stats().calls("svc", "GET /fast"), 400);
    // 400 requests over the 2 s schedule plus the last answer: ~200/s. Generous bounds for a
    // shared 2-core machine; the count above is the exact part.
    assert!((150.0..=210.0).contains(&r.rate), "rate {}", r.rate);
    assert!(r.duration_s >= 1.99, "duration {}", r.duration_s);
    assert!(
        r.latency_ms.p50 >= 2.0,
        "a 2 ms service cannot answer faster: {r}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_second_stall_raises_p99_above_500ms() {
    let sim = Sim::start(sim_config("")).await.unwrap();
    let mut spec = LoadSpec::new(format!("{}/fast", sim.url("svc").unwrap()), 100.0);
    spec.duration = Some(Duration::from_secs(3));
    let load = tokio::spawn(run(spec));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    sim.stall(Duration::from_secs(1));
    let r = load.await.unwrap().unwrap();
    assert_eq!((r.sent, r.ok), (300, 300), "{r}");
    // ~100 of 300 requests were due during the stall and waited up to a second for it to end.
    // Measured from their scheduled send times, the stall fills the top third of the histogram.
    assert!(r.latency_ms.p99 > 500.0, "p99 {} ms: {r}", r.latency_ms.p99);
    assert!(r.latency_ms.max > 900.0, "max {} ms: {r}", r.latency_ms.max);
    // The stall is in the tail, not the median.
    assert!(r.latency_ms.p50 < 500.0, "p50 {} ms: {r}", r.latency_ms.p50);
    sim.shutdown().await;
}

/// The coordinated-omission case proper: one connection, so requests due during the stall queue
/// behind the stalled one. A client timing from when each request actually went out would see
/// one slow request in 300 (p99 of a few ms); timing from the schedule sees the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_behind_one_connection_is_not_omitted() {
    let sim = Sim::start(sim_config("")).await.unwrap();
    let mut spec = LoadSpec::new(format!("{}/fast", sim.url("svc").unwrap()), 100.0);
    spec.duration = Some(Duration::from_secs(3));
    spec.connections = Some(1);
    let load = tokio::spawn(run(spec));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    sim.stall(Duration::from_secs(1));
    let r = load.await.unwrap().unwrap();
    assert_eq!(r.ok, 300, "{r}");
    assert_eq!(
        sim.stats().services["svc"].endpoints["GET /fast"].max_in_flight,
        1
    );
    assert!(r.latency_ms.p99 > 500.0, "p99 {} ms: {r}", r.latency_ms.p99);
    assert!(r.latency_ms.p90 > 100.0, "the queue behind the stall: {r}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_bounds_server_concurrency() {
    let sim = Sim::start(sim_config("")).await.unwrap();
    let mut spec = LoadSpec::new(format!("{}/slow", sim.url("svc").unwrap()), 100.0);
    spec.requests = Some(40);
    spec.connections = Some(2);
    let r = run(spec).await.unwrap();
    assert_eq!(r.ok, 40, "{r}");
    let e = &sim.stats().services["svc"].endpoints["GET /slow"];
    assert_eq!(e.calls, 40);
    assert!(e.max_in_flight <= 2, "max in flight {}", e.max_in_flight);
    // 2 connections × 20/s each cannot keep up with 100/s: the queue shows in the latency.
    // The last request was due at 390 ms and could not finish before 20 × 50 ms = 1 s.
    assert!(r.latency_ms.max >= 600.0, "{r}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_methods_bodies_and_several_urls() {
    let sim = Sim::start(sim_config("")).await.unwrap();
    let base = sim.url("svc").unwrap();
    let mut spec = LoadSpec::new(format!("{base}/items/{{key}}"), 500.0);
    spec.urls.push(format!("{base}/items/s{{seq}}"));
    spec.requests = Some(100);
    spec.keys = KeyDist::Zipf { n: 20, s: 1.0 };
    let r = run(spec).await.unwrap();
    assert_eq!(r.ok, 100, "{r}");
    let stats = sim.stats_with_calls();
    assert_eq!(stats.calls("svc", "GET /items/{id}"), 100);

    let mut post = LoadSpec::new(format!("{base}/echo"), 500.0);
    post.method = http::Method::POST;
    post.body = Some(r#"{"n": {seq}}"#.into());
    post.headers = vec![("x-test".into(), "1".into())];
    post.requests = Some(20);
    let r = run(post).await.unwrap();
    assert_eq!(r.ok, 20, "{r}");
    assert_eq!(sim.stats().calls("svc", "POST /echo"), 20);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_counted_by_kind() {
    let sim = Sim::start(sim_config(
        r#"{ path = "/flaky", faults = [{ kind = "status", status = 503, rate = 1.0 }] },
           { path = "/reset", faults = [{ kind = "reset", rate = 1.0 }] },
           { path = "/hang", faults = [{ kind = "hang", rate = 1.0 }] }"#,
    ))
    .await
    .unwrap();
    let base = sim.url("svc").unwrap();
    let go = |path: &str| {
        let mut s = LoadSpec::new(format!("{base}{path}"), 100.0);
        s.requests = Some(10);
        s.timeout = Duration::from_millis(500);
        run(s)
    };
    let r = go("/flaky").await.unwrap();
    assert_eq!(r.errors_by_kind.get(&ErrorKind::Http5xx), Some(&10), "{r}");
    assert_eq!(
        r.histogram.len(),
        10,
        "error responses still have latencies"
    );
    let r = go("/reset").await.unwrap();
    assert_eq!(r.errors_by_kind.get(&ErrorKind::Closed), Some(&10), "{r}");
    let r = go("/hang").await.unwrap();
    assert_eq!(r.errors_by_kind.get(&ErrorKind::Timeout), Some(&10), "{r}");
    assert_eq!(r.ok, 0);
    let r = go("/nothing-here").await.unwrap();
    assert_eq!(r.errors_by_kind.get(&ErrorKind::Http4xx), Some(&10), "{r}");

    // Nothing listening: connection errors.
    let addr = sim.addr("svc").unwrap();
    sim.shutdown().await;
    let mut s = LoadSpec::new(format!("http://{addr}/fast"), 100.0);
    s.requests = Some(5);
    let r = run(s).await.unwrap();
    assert_eq!(r.errors_by_kind.get(&ErrorKind::Connect), Some(&5), "{r}");
}

#[tokio::test]
async fn unbounded_or_invalid_specs_are_refused() {
    let spec = LoadSpec::new("http://127.0.0.1:9/", 10.0);
    let err = run(spec.clone()).await.unwrap_err().to_string();
    assert!(
        err.starts_with("input error") && err.contains("unbounded"),
        "{err}"
    );
    let mut s = spec.clone();
    s.requests = Some(1);
    s.rate = 0.0;
    assert!(run(s).await.is_err());
    let mut s = spec;
    s.duration = Some(Duration::from_millis(1));
    s.rate = 0.5; // would schedule ceil(0.0005) = 1 request
    assert_eq!(s.total_requests().unwrap(), 1);
    // An absurd connection cap or timeout is refused before the run: `--connections 0` was
    // taken as 1 without a word, a cap above tokio's semaphore limit panicked, and
    // `--timeout 0s` measured nothing it said.
    for (connections, timeout, what) in [
        (
            Some(0),
            Duration::from_secs(1),
            "connections must be 1 to 1000000",
        ),
        (
            Some(usize::MAX),
            Duration::from_secs(1),
            "connections must be",
        ),
        (None, Duration::ZERO, "timeout must be above 0"),
        (
            None,
            Duration::from_secs(u64::MAX),
            "timeout must be above 0 and at most 1h",
        ),
    ] {
        let mut bad = s.clone();
        bad.connections = connections;
        bad.timeout = timeout;
        let err = run(bad).await.unwrap_err().to_string();
        assert!(
            err.starts_with("input error") && err.contains(what),
            "{err}"
        );
    }
    // Found by rev-cli: `--rate 1e-300 -n 2` panicked computing the second send time
    // (1e300 s); `--rate 0.000001 -n 2` scheduled it 11 days out.
    for (rate, requests, duration) in [
        (1e-300, Some(2), None),
        (1e-6, Some(2), None),
        (1e-9, None, Some(Duration::from_secs(100_000_000_000_000))),
    ] {
        let mut bad = s.clone();
        bad.rate = rate;
        bad.requests = requests;
        bad.duration = duration;
        let err = run(bad).await.unwrap_err().to_string();
        assert!(err.contains("above the 7days limit"), "{rate}: {err}");
    }
    // One request is due at once, whatever the rate.
    let mut one = s.clone();
    one.rate = 1e-300;
    one.requests = Some(1);
    one.duration = None;
    assert_eq!(one.total_requests().unwrap(), 1);
}
