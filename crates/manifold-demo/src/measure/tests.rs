use std::time::Duration;

use manifold_config::RouteKind;

use super::*;
use crate::report::Waterfall;

fn calls_of(s: &Strategy, route: &str) -> Vec<(String, String, Option<Duration>)> {
    let config = compile(s, crate::SCENARIOS).unwrap();
    match &config.route(route).unwrap().kind {
        RouteKind::Compose(p) => p
            .calls
            .iter()
            .map(|c| (c.name.clone(), c.upstream_name.clone(), c.expect))
            .collect(),
        _ => Vec::new(),
    }
}

#[test]
fn every_strategy_compiles_with_the_seed_critical_paths() {
    let want = [
        ("sequential", "checkout", Some(750.0)),
        ("sequential", "profile", Some(300.0)),
        ("concurrent", "checkout", Some(450.0)),
        ("concurrent", "profile", Some(200.0)),
        // A miss costs what the concurrent plan costs; a hit no upstream call at all.
        ("cached", "profile", Some(200.0)),
        ("cached", "checkout", None),
        // The label leaves the critical path: order → payment → confirm.
        ("offloaded", "checkout", Some(400.0)),
        ("offloaded", "profile", None),
    ];
    for (strategy, route, ms) in want {
        let s = crate::STRATEGIES
            .iter()
            .find(|s| s.name == strategy)
            .unwrap();
        let config = compile(s, crate::SCENARIOS).unwrap();
        assert_eq!(plan_ms(&config, route), ms, "{strategy} {route}");
    }
}

#[test]
fn every_strategy_makes_the_same_calls_as_the_baseline() {
    for s in crate::STRATEGIES {
        for route in ["checkout", "profile"] {
            let config = compile(s, crate::SCENARIOS).unwrap();
            if config.route(route).is_some() {
                assert_eq!(
                    calls_of(s, route),
                    calls_of(&crate::SEQUENTIAL, route),
                    "{} {route}",
                    s.name
                );
            }
        }
    }
}

#[test]
fn the_cached_and_offloaded_files_change_what_their_names_say() {
    let cached = compile(&crate::CACHED, crate::SCENARIOS).unwrap();
    let shape = Shape::of(&cached, "profile");
    assert_eq!(
        shape.cached,
        [("users".to_owned(), 1), ("orders".to_owned(), 1)]
    );
    assert!(shape.offloaded.is_empty());
    let offloaded = compile(&crate::OFFLOADED, crate::SCENARIOS).unwrap();
    let shape = Shape::of(&offloaded, "checkout");
    assert_eq!(
        shape.offloaded,
        [("shipping".to_owned(), "shipping".to_owned())]
    );
    assert!(shape.cached.is_empty());
}

#[test]
fn a_strategy_with_none_of_the_routes_is_a_config_error() {
    let err = compile(
        &crate::CONCURRENT,
        &[Scenario {
            name: "nope",
            ..crate::CHECKOUT
        }],
    )
    .unwrap_err();
    assert!(matches!(err, DemoError::Config(_)), "{err}");
    assert!(
        err.to_string().contains("none of the routes [\"nope\"]"),
        "{err}"
    );
}

#[test]
fn the_contrasts_change_one_service_of_the_shop() {
    let orders = (crate::HEDGED_ROWS.replicas)(Duration::from_secs(9));
    assert_eq!(orders.len(), 2);
    assert_eq!(orders[0].straggler_rate, 0.0);
    assert_eq!(
        (orders[1].straggler_rate, orders[1].straggler_scale),
        (0.1, 4.0)
    );
    let payment = (crate::BALANCED_ROWS.replicas)(Duration::from_secs(9));
    assert_eq!(payment.len(), 3);
    assert!(payment[..2].iter().all(|r| r.slow_after.is_none()));
    assert_eq!(payment[2].slow_after, Some(Duration::from_secs(3)));
    assert_eq!(payment[2].slow_scale, 5.0);
    for c in crate::CONTRASTS {
        assert!(
            SimConfig::shop().services.contains_key(c.service),
            "{}",
            c.name
        );
    }
}

/// The contrast files compile, declare their scenario's route and make the same calls as
/// the concurrent plan; each changes only the keys its name says.
#[test]
fn the_contrast_files_make_the_concurrent_calls_with_their_policy() {
    use manifold_config::policy::Balance;
    for c in crate::CONTRASTS {
        for s in [c.without, c.with] {
            assert_eq!(
                calls_of(&s, c.scenario.name),
                calls_of(&crate::CONCURRENT, c.scenario.name),
                "{} {}",
                c.name,
                s.name
            );
        }
    }
    let policies = |s: &Strategy, up: &str| {
        let config = compile(s, crate::SCENARIOS).unwrap();
        config
            .upstreams
            .iter()
            .find(|u| u.name == up)
            .map(|u| u.policies.clone())
            .unwrap()
    };
    assert!(policies(&crate::CONCURRENT, "orders").hedge.is_none());
    assert!(policies(&crate::HEDGED, "orders").hedge.is_some());
    assert_eq!(
        policies(&crate::ROUND_ROBIN, "payment").balance,
        Balance::RoundRobin
    );
    assert_eq!(policies(&crate::P2C, "payment").balance, Balance::P2c);
}

/// The contrast machinery with two files today's compiler accepts: the shop's orders
/// service gets its straggling replicas, both are endpoints, the gain is read on p99 and the
/// sim counts the orders requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contrast_runs_on_its_own_shop_and_counts_the_changed_service() {
    let contrast = Contrast {
        name: "same",
        summary: "orders straggles",
        without: crate::CONCURRENT,
        with: crate::CACHED,
        ..crate::HEDGED_ROWS
    };
    let spec = DemoSpec {
        strategies: Vec::new(),
        scenarios: Vec::new(),
        contrasts: vec![contrast],
        rate: 10.0,
        duration: Duration::from_millis(500),
        warmup_requests: 1,
        waterfall: false,
        ..DemoSpec::quick()
    };
    let report = run(&spec, |_| {}).await.unwrap();
    assert!(report.all_ok(), "{}", report.table());
    assert_eq!(report.scenarios.len(), 1);
    let s = &report.scenarios[0];
    assert_eq!((s.name.as_str(), s.gain_on), ("same", Gain::P99));
    assert_eq!(s.summary.as_deref(), Some("orders straggles"));
    let names: Vec<&str> = s.strategies.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["concurrent", "cached"]);
    let u = s.strategies[0].upstream.as_ref().unwrap();
    // No hedge, no retry on success: one orders request per profile request.
    assert_eq!((u.service.as_str(), u.calls, u.planned), ("orders", 5, 5));
    assert_eq!(u.by_replica.len(), 2, "{u:?}");
    assert_eq!(u.by_replica.iter().sum::<u64>(), 5, "{u:?}");
    assert_eq!(s.strategies[0].gain, 1.0);
    let want = s.strategies[0].p99_ms / s.strategies[1].p99_ms;
    assert!((s.strategies[1].gain - want).abs() < 1e-9);
    assert!(report.table().contains("on p99"), "{}", report.table());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_answers_every_request_and_draws_each_waterfall() {
    let spec = DemoSpec {
        rate: 10.0,
        duration: Duration::from_millis(500),
        warmup_requests: 1,
        contrasts: Vec::new(),
        ..DemoSpec::quick()
    };
    let mut steps = Vec::new();
    let report = run(&spec, |s| steps.push(s.to_owned())).await.unwrap();
    assert!(report.all_ok(), "{}", report.table());
    assert_eq!(report.scenarios.len(), 2);
    let checkout = &report.scenarios[0];
    let names: Vec<&str> = checkout
        .strategies
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["sequential", "concurrent", "offloaded"]);
    assert_eq!(checkout.ideal_ms, Some(400.0));
    for r in &checkout.strategies {
        assert_eq!(r.sent, 5);
        // Nothing beats the sum of the service times on the critical path.
        assert!(r.p50_ms >= r.plan_ms.unwrap(), "{r:?}");
        assert!(!r.cdf.is_empty());
        assert_eq!(r.cdf.last().unwrap().fraction, 1.0);
        let w = r.waterfall.as_ref().unwrap();
        // order, payment, inventory, shipping, confirm: five upstream calls, one each (the
        // offloaded label too, after the answer).
        assert_eq!(w.calls.len(), 5, "{w:?}");
    }
    // Sequential: no two calls overlap. Concurrent: payment, inventory and shipping do.
    let overlaps = |w: &Waterfall| {
        w.calls
            .windows(2)
            .filter(|p| p[1].start_ms < p[0].end_ms)
            .count()
    };
    let seq = checkout.strategies[0].waterfall.as_ref().unwrap();
    let conc = checkout.strategies[1].waterfall.as_ref().unwrap();
    assert_eq!(overlaps(seq), 0, "{seq:?}");
    assert!(overlaps(conc) >= 2, "{conc:?}");
    // Offloaded: every accepted label was created, once per idempotency key, from the queue
    // (so after the order it reads, like any call).
    let off = &checkout.strategies[2];
    let o = off.offloaded.as_ref().unwrap();
    assert_eq!((o.accepted, o.delivered), (5, 5), "{o:?}");
    // A client following the receipts' status_url saw every label done, after the answer.
    let ready = o.ready_p50_ms.expect("followed with status_url?wait");
    assert!(ready > 0.0, "{o:?}");
    let w = off.waterfall.as_ref().unwrap();
    let call = |p: &str| w.calls.iter().find(|c| c.label.starts_with(p)).unwrap();
    assert!(
        call("shipping").start_ms >= call("order · POST /orders").end_ms,
        "{w:?}"
    );
    assert!(checkout.strategies[..2]
        .iter()
        .all(|r| r.offloaded.is_none()));

    let profile = &report.scenarios[1];
    let names: Vec<&str> = profile.strategies.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["sequential", "concurrent", "cached"]);
    let cached = &profile.strategies[2];
    let h = cached.cache_hit_ratio.unwrap();
    assert!((0.0..=1.0).contains(&h), "{h}");
    assert!(profile.strategies[..2]
        .iter()
        .all(|r| r.cache_hit_ratio.is_none()));
    assert!(steps.iter().any(|s| s.contains("checkout · offloaded")));
}
