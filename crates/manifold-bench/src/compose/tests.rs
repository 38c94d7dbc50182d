use super::recorded::quantile;
use super::*;
use crate::Measured;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_target_answers_every_request_and_the_report_is_complete() {
    let spec = ComposeSpec {
        rates: vec![100.0],
        duration: Duration::from_millis(400),
        rounds: 2,
        throughput_clients: 4,
        throughput_duration: Duration::from_millis(300),
        peers_dir: None,
        ..Default::default()
    };
    let mut steps = Vec::new();
    let report = run(&spec, |s| steps.push(s.to_owned())).await.unwrap();
    assert_eq!(report.ideal_ms, 8.0);
    let r = &report.rates[0];
    assert_eq!(r.floor.target, "floor");
    for m in [&r.floor, &r.hop, &r.manifold, &r.hand_written] {
        assert_eq!(m.errors, 0, "{m:?}");
        assert_eq!(m.sent, 80, "{m:?}");
    }
    for m in [&r.floor, &r.manifold, &r.hand_written] {
        // Nothing can beat the critical path of the service times, the floor included.
        assert!(m.p50_ms.median >= report.ideal_ms, "{m:?}");
    }
    // One round trip with no service time is quicker than the floor's checkout, which is one
    // round trip plus the critical path's waits (compared with the floor measured in the same
    // rounds rather than with the 8 ms ideal: on a loaded machine one hop alone can take 8 ms).
    assert_eq!(r.hop.target, "one hop");
    assert!(
        r.hop.p50_ms.median < r.floor.p50_ms.median,
        "{:?} {:?}",
        r.hop,
        r.floor
    );
    assert_eq!(
        r.added_p50_over_floor_ms,
        r.manifold.p50_ms.median - r.floor.p50_ms.median
    );
    assert_eq!(
        r.hand_written_p99_over_floor_ms,
        r.hand_written.p99_ms.median - r.floor.p99_ms.median
    );
    let t = report.throughput.as_ref().unwrap();
    assert!(t.manifold_rps.median > 0.0 && t.hand_written_rps.median > 0.0);
    // One for the start-up, four targets (floor, one hop, Manifold, hand-written) × two
    // rounds, two throughput rounds.
    assert_eq!(steps.len(), 1 + 4 * 2 + 2, "{steps:?}");
    assert_eq!(steps.iter().filter(|s| s.ends_with(": floor")).count(), 2);
    assert!(report.skipped.is_empty() && r.peers.is_empty());
    let goal = report.goal.as_ref().unwrap();
    assert_eq!(goal.rate, 100.0);
    assert_eq!(goal.p50_over_floor_ms, r.added_p50_over_floor_ms);
    assert_eq!(goal.throughput_ratio, Some(t.ratio));
    let md = report.to_markdown();
    for want in [
        "| 100/s | floor |",
        "| 100/s | one hop |",
        "One loopback round trip costs ",
        "| 100/s | manifold |",
        "| 100/s | hand-written |",
        "Manifold over floor, p50 / p99 ms",
        "over the configured ideal ",
        "over the measured floor ",
    ] {
        assert!(md.contains(want), "{want:?} missing from\n{md}");
    }
    let json = serde_json::to_value(&report).unwrap();
    let j = &json["rates"][0];
    assert_eq!(j["floor"]["target"], "floor");
    for key in [
        "added_p50_over_floor_ms",
        "added_p99_over_floor_ms",
        "hand_written_p50_over_floor_ms",
        "hand_written_p99_over_floor_ms",
        "floor_p50_over_ideal_ms",
        "added_p50_over_ideal_ms",
    ] {
        assert!(j[key].is_number(), "{key} missing from {j}");
    }
    assert!(json["goal"]["p50_over_floor_ms"].is_number(), "{json}");
    // Every request's five calls were joined by X-Request-Id in every round (40 each), for
    // both aggregators, and no request's recorded critical path beat the configured one.
    for o in [&r.manifold_over_recorded, &r.hand_written_over_recorded] {
        let o = o.as_ref().expect("recorded ideal");
        assert_eq!(o.requests, 40, "{o:?}");
        assert!(o.ideal_p50_ms.min >= report.ideal_ms, "{o:?}");
    }
    assert!(md.contains("recorded ideal p50 / p99 ms"), "{md}");
    // Each aggregator's runtime threads were found and did work for every answered request
    // (reading, parsing, five upstream calls, answering: never zero).
    for c in [
        &r.manifold_cpu_us_per_request,
        &r.hand_written_cpu_us_per_request,
        &t.manifold_cpu_us_per_request,
        &t.hand_written_cpu_us_per_request,
    ] {
        let c = c.as_ref().expect("CPU per request measured");
        assert!(c.min > 0.0, "{c:?}");
    }
    // Both measured the same way, so their ratio is there too, paired by round.
    for c in [&r.against_hand_written.cpu_ratio, &t.cpu_ratio] {
        let c = c.as_ref().expect("CPU ratio measured");
        assert!(c.min > 0.0, "{c:?}");
    }
    assert!(json["goal"]["cpu_ratio"].is_number(), "{json}");
    assert!(
        md.contains("Goal against the hand-written aggregator"),
        "{md}"
    );
    assert!(md.contains("| closed loop | "), "{md}");
    assert!(md.contains("| max ms |"), "{md}");
    // The SLO defaults to twice the ideal, and every built-in target is placed against it.
    assert_eq!(report.slo_p99_ms, 16.0);
    assert_eq!(report.within_slo.len(), 3, "{:?}", report.within_slo);
    assert!(
        md.contains("highest rate with p99 within the 16.0 ms SLO"),
        "{md}"
    );
    assert!(
        json["goal"]["p50_over_recorded_ideal_ms"].is_number(),
        "{json}"
    );
}

#[test]
fn quantiles_are_nearest_rank() {
    let mut v = vec![5.0, 1.0, 4.0, 2.0, 3.0];
    assert_eq!(quantile(&mut v, 0.5), Some(3.0));
    assert_eq!(quantile(&mut v, 0.99), Some(5.0));
    assert_eq!(quantile(&mut v, 0.0), Some(1.0));
    assert_eq!(quantile(&mut [], 0.5), None);
}

/// The floor waits the critical path, not the sum: order, then the three in parallel, then
/// confirm. Paused time: the waits are exact.
#[tokio::test(start_paused = true)]
async fn the_floor_waits_the_critical_path_and_answers_json() {
    let stop = CancellationToken::new();
    let addr = start_floor([2, 4, 3, 5, 1], Timer::Tokio, stop.clone())
        .await
        .unwrap();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::post(format!("http://{addr}/checkout"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(CHECKOUT_BODY.as_bytes())))
        .unwrap();
    let start = Instant::now();
    let resp = client.request(req).await.unwrap();
    let waited = start.elapsed();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["order"]["status"], "confirmed");
    assert_eq!(v["shipping"]["label"], "L-1");
    // 2 + max(4, 3, 5) + 1 = 8 ms; the sum of all five (15 ms) would mean no parallelism.
    assert!(waited >= Duration::from_millis(8), "{waited:?}");
    assert!(waited < Duration::from_millis(15), "{waited:?}");
    stop.cancel();
}

fn figures(target: &str, rate: f64, p50: f64, p99: f64) -> Measured {
    let one = |x| Spread {
        median: x,
        min: x,
        max: x,
    };
    Measured {
        target: target.into(),
        rate,
        p50_ms: one(p50),
        p99_ms: one(p99),
        p999_ms: one(p99),
        max_ms: one(p99),
        errors: 0,
        sent: 1,
        errors_by_kind: Default::default(),
    }
}

fn rate_result(rate: f64, floor: (f64, f64), manifold: (f64, f64)) -> RateResult {
    let ideal = 8.0;
    RateResult {
        rate,
        floor: figures("floor", rate, floor.0, floor.1),
        hop: figures("one hop", rate, 0.1, 0.3),
        manifold: figures("manifold", rate, manifold.0, manifold.1),
        hand_written: figures("hand-written", rate, manifold.0, manifold.1),
        added_p50_over_ideal_ms: manifold.0 - ideal,
        added_p99_over_ideal_ms: manifold.1 - ideal,
        added_p50_over_floor_ms: manifold.0 - floor.0,
        added_p99_over_floor_ms: manifold.1 - floor.1,
        hand_written_p50_over_floor_ms: manifold.0 - floor.0,
        hand_written_p99_over_floor_ms: manifold.1 - floor.1,
        floor_p50_over_ideal_ms: floor.0 - ideal,
        floor_p99_over_ideal_ms: floor.1 - ideal,
        added_p50_over_hand_written_ms: 0.0,
        added_p99_over_hand_written_ms: 0.0,
        manifold_over_recorded: None,
        hand_written_over_recorded: None,
        manifold_cpu_us_per_request: None,
        hand_written_cpu_us_per_request: None,
        against_hand_written: AgainstHandWritten {
            p50_ms: figures("", rate, 0.0, 0.0).p50_ms,
            p99_ms: figures("", rate, 0.0, 0.0).p99_ms,
            cpu_ratio: None,
        },
        peers: Vec::new(),
    }
}

#[test]
fn the_highest_rate_within_the_slo_stops_at_the_first_rate_over_it() {
    let mut low = rate_result(500.0, (9.0, 10.0), (9.5, 12.0));
    low.peers.push(PeerLatency {
        target: "node".into(),
        latency: Some(figures("node", 500.0, 10.0, 14.0)),
        saturated: false,
        note: None,
        p50_over_manifold: None,
        p99_over_manifold: None,
    });
    let mut mid = rate_result(1000.0, (9.0, 11.0), (9.5, 13.0));
    mid.peers.push(PeerLatency {
        target: "node".into(),
        latency: None,
        saturated: true,
        note: Some("not driven: saturated at 500 req/s".into()),
        p50_over_manifold: None,
        p99_over_manifold: None,
    });
    let high = rate_result(2000.0, (9.0, 15.0), (9.5, 40.0));
    // Given out of order: the rates are taken ascending. A lower p99 at a higher rate after
    // one over the SLO does not count: the rate must *stay* within.
    let rates = [high, low, mid];
    let w = within_slo(&rates, 16.0);
    let by = |t: &str| w.iter().find(|x| x.target == t).unwrap().clone();
    let floor = by("floor");
    assert_eq!((floor.highest_rate, floor.first_over), (Some(2000.0), None));
    let m = by("manifold");
    assert_eq!((m.highest_rate, m.first_over), (Some(1000.0), Some(2000.0)));
    let node = by("node");
    assert_eq!(
        (node.highest_rate, node.first_over),
        (Some(500.0), Some(1000.0))
    );
    let none = within_slo(&rates, 5.0);
    assert!(none
        .iter()
        .all(|x| x.highest_rate.is_none() && x.first_over == Some(500.0)));
}

#[test]
fn the_goal_is_checked_at_2000_per_second_against_both_references() {
    let rates = [
        rate_result(500.0, (9.0, 10.0), (20.0, 30.0)),
        rate_result(2000.0, (13.4, 19.5), (13.5, 20.0)),
        rate_result(4000.0, (9.0, 10.0), (20.0, 30.0)),
    ];
    let g = goal_check(&rates, None).unwrap();
    assert_eq!(g.rate, 2000.0);
    assert!(!g.met_over_ideal && g.met_over_floor, "{g:?}");
    assert_eq!(g.throughput_met, None);
    let line = g.line();
    assert!(
        line.contains("over the configured ideal +5.50 ms p50 / +12.00 ms p99: not met"),
        "{line}"
    );
    assert!(
        line.contains("over the measured floor +0.10 ms p50 / +0.50 ms p99: met"),
        "{line}"
    );
    // Without 2,000 req/s, the highest rate stands in, and says so.
    let g = goal_check(&rates[..1], None).unwrap();
    assert_eq!(g.rate, 500.0);
    assert!(
        g.line().contains("the highest rate measured"),
        "{}",
        g.line()
    );
    assert!(goal_check(&[], None).is_none());
    // With the recorded ideal, the verdict over it leads the line.
    let mut r = rate_result(2000.0, (9.0, 10.0), (9.1, 10.4));
    let one = |x| Spread {
        median: x,
        min: x,
        max: x,
    };
    r.manifold_over_recorded = Some(OverRecorded {
        ideal_p50_ms: one(8.9),
        ideal_p99_ms: one(9.9),
        added_p50_ms: one(0.2),
        added_p99_ms: one(0.5),
        requests: 100,
    });
    let g = goal_check(&[r], None).unwrap();
    assert_eq!(g.met_over_recorded_ideal, Some(true));
    assert!(
        g.line()
            .contains("over the recorded ideal +0.20 ms p50 / +0.50 ms p99: met"),
        "{}",
        g.line()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_are_not_installed_are_reported_as_skipped_never_measured() {
    let spec = ComposeSpec {
        rates: vec![50.0],
        duration: Duration::from_millis(200),
        rounds: 1,
        throughput_duration: Duration::ZERO,
        peers_dir: Some(PathBuf::from("/nonexistent/manifold-bench-peers")),
        ..Default::default()
    };
    let report = run(&spec, |_| {}).await.unwrap();
    let names: Vec<&str> = report.skipped.iter().map(|s| s.peer.as_str()).collect();
    assert_eq!(names, ["flask", "node"], "{:?}", report.skipped);
    for s in &report.skipped {
        // Either the program itself or the peer's files under the missing directory.
        assert!(
            s.reason.contains("not found") || s.reason.contains("is missing"),
            "{s}"
        );
        assert!(s.reason.contains("install.sh"), "{s}");
    }
    // No figure for a peer that did not run; Manifold and the baseline still measured.
    assert!(report.rates[0].peers.is_empty());
    assert_eq!(report.rates[0].manifold.errors, 0);
    let md = report.to_markdown();
    assert!(
        md.contains("flask: skipped: ") && md.contains("node: skipped: "),
        "{md}"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["skipped"][0]["peer"], "flask");
}

#[test]
fn rotation_starts_each_round_with_another_target() {
    assert_eq!(rotated(&[1, 2, 3], 0), [1, 2, 3]);
    assert_eq!(rotated(&[1, 2, 3], 1), [2, 3, 1]);
    assert_eq!(rotated(&[1, 2, 3], 5), [3, 1, 2]);
    assert!(rotated::<u8>(&[], 3).is_empty());
}

/// Where the peers are installed (CI may not have them), each must answer every checkout;
/// where they are not, each must be skipped: nothing in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_peer_either_answers_every_checkout_or_is_skipped() {
    let spec = ComposeSpec {
        rates: vec![20.0],
        duration: Duration::from_millis(500),
        rounds: 1,
        throughput_duration: Duration::ZERO,
        peers_dir: Some(peers::default_dir()),
        ..Default::default()
    };
    let report = run(&spec, |_| {}).await.unwrap();
    let r = &report.rates[0];
    let ran: Vec<&str> = r.peers.iter().map(|p| p.target.as_str()).collect();
    let skipped: Vec<&str> = report.skipped.iter().map(|s| s.peer.as_str()).collect();
    let flask = ran.contains(&"flask-sequential") && ran.contains(&"flask-threadpool");
    assert!(flask != skipped.contains(&"flask"), "{ran:?} {skipped:?}");
    assert!(
        ran.contains(&"node") != skipped.contains(&"node"),
        "{ran:?} {skipped:?}"
    );
    for p in &r.peers {
        let l = p.latency.as_ref().unwrap();
        assert_eq!((l.errors, l.sent), (0, 10), "{p:?}");
        // A peer cannot beat the critical path either.
        assert!(l.p50_ms.median >= report.ideal_ms, "{p:?}");
        assert!(!p.saturated && p.p50_over_manifold.is_some(), "{p:?}");
    }
}

#[test]
fn the_goal_against_the_hand_written_aggregator_needs_latency_and_cpu() {
    let one = |x| Spread {
        median: x,
        min: x,
        max: x,
    };
    let mut r = rate_result(2000.0, (9.0, 10.0), (9.1, 10.4));
    r.against_hand_written = AgainstHandWritten {
        p50_ms: one(0.08),
        p99_ms: one(0.4),
        cpu_ratio: None,
    };
    let g = goal_check(std::slice::from_ref(&r), None).unwrap();
    assert_eq!(g.met_against_hand_written, None);
    assert!(
        g.hand_written_line().contains("not decided"),
        "{}",
        g.hand_written_line()
    );
    // Paired by round: 230/230, 200/250, 210/200 → 1.00, 0.80, 1.05; the median is 1.00.
    r.against_hand_written.cpu_ratio = report::cpu_ratio(
        &[Some(230.0), Some(200.0), Some(210.0)],
        &[Some(230.0), Some(250.0), Some(200.0)],
    );
    let c = r.against_hand_written.cpu_ratio.unwrap();
    assert_eq!((c.median, c.min, c.max), (1.0, 0.8, 1.05));
    let g = goal_check(std::slice::from_ref(&r), None).unwrap();
    assert_eq!(g.met_against_hand_written, Some(true));
    let line = g.hand_written_line();
    assert!(
        line.contains(
            "p50 +0.080 ms (goal ≤ +0.1 ms), p99 +0.400 ms (goal ≤ +0.5 ms), \
             CPU per request 1.00× (goal ≤ 1.00×): met"
        ),
        "{line}"
    );
    r.against_hand_written.p99_ms = one(0.6);
    let g = goal_check(std::slice::from_ref(&r), None).unwrap();
    assert_eq!(g.met_against_hand_written, Some(false));
    r.against_hand_written.p99_ms = one(0.4);
    r.against_hand_written.cpu_ratio = Some(one(1.02));
    let g = goal_check(std::slice::from_ref(&r), None).unwrap();
    assert_eq!(g.met_against_hand_written, Some(false));
    // A round without a CPU reading leaves no ratio rather than a median of fewer rounds.
    assert!(report::cpu_ratio(&[Some(1.0), None], &[Some(1.0), Some(1.0)]).is_none());
    // Failed requests leave the latency figures of the survivors only: no verdict on them.
    r.against_hand_written.cpu_ratio = Some(one(1.0));
    r.manifold.errors = 4;
    r.manifold.errors_by_kind.insert("timeout".into(), 4);
    let g = goal_check(std::slice::from_ref(&r), None).unwrap();
    let line = g.hand_written_line();
    assert!(
        line.ends_with(": not decided: manifold had 4 failed of 1 sent (timeout 4)."),
        "{line}"
    );
    assert!(
        g.line().contains("not decided: manifold had 4 failed"),
        "{}",
        g.line()
    );
}
