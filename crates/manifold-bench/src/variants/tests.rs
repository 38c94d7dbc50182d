use super::*;

/// Parse a generated gateway config as plain TOML (the contract keys are checked by the
/// scenarios' own tests; this only proves the text is well-formed and the shape is right).
pub(crate) fn parsed(toml_src: &str) -> toml::Value {
    toml::Value::Table(toml::from_str::<toml::Table>(toml_src).expect("generated TOML parses"))
}

/// A variant's result with the given figures (every round the same), for goal tests.
pub(crate) fn result(name: &str, p99: f64, p999: f64, extra_pct: f64) -> VariantResult {
    let s = |x| Spread {
        median: x,
        min: x,
        max: x,
    };
    VariantResult {
        name: name.into(),
        policy: String::new(),
        latency: Measured {
            target: name.into(),
            rate: 1.0,
            p50_ms: s(1.0),
            p99_ms: s(p99),
            p999_ms: s(p999),
            max_ms: s(p999),
            errors: 0,
            sent: 100,
            errors_by_kind: Default::default(),
        },
        pooled_ms: Pooled {
            p50: 1.0,
            p99,
            p999,
            max: p999,
        },
        offered: 100,
        upstream_requests: (100.0 * (1.0 + extra_pct / 100.0)) as u64,
        upstream_per_offered: s(1.0 + extra_pct / 100.0),
        extra_pct: s(extra_pct),
        success_pct: s(100.0),
    }
}

#[test]
fn the_gateway_config_lists_every_replica_and_the_variants_keys() {
    let v = Variant {
        name: "with".into(),
        policy: "balance = \"round_robin\"\nhedge = { after = \"p95\", max = 1 }\n".into(),
    };
    let eps = vec![
        "http://127.0.0.1:1".to_owned(),
        "http://127.0.0.1:2".to_owned(),
    ];
    let t = parsed(&gateway_toml(&eps, &v));
    let u = &t["upstreams"]["u"];
    assert_eq!(u["endpoints"].as_array().unwrap().len(), 2, "{u:?}");
    assert_eq!(u["balance"].as_str(), Some("round_robin"));
    assert_eq!(u["hedge"]["after"].as_str(), Some("p95"));
    let call = &t["routes"]["item"]["calls"][0];
    assert_eq!(call["method"].as_str(), Some("GET"));
    assert_eq!(call["upstream"].as_str(), Some("u"));
    assert_eq!(t["routes"]["item"]["path"].as_str(), Some(PATH));
}

/// The harness end to end: a replica that always fails beside one that never does. Without
/// retries on 503 (the default retries connects only) the sim sees each request once; round
/// robin sends half to the failing replica, p2c (a failure costs the timeout) hardly any.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn side_by_side_counts_the_upstream_requests_of_each_measurement() {
    let sim = SimConfig::from_toml(
        "[services.item]\nreplicas = [{}, { error_rate = 1.0 }]\nendpoints = [{ path = \"/item\", latency = \"1ms\" }]\n",
    )
    .expect("sim config");
    let variants = vec![
        Variant {
            name: "a".into(),
            policy: "balance = \"round_robin\"".into(),
        },
        Variant {
            name: "b".into(),
            policy: String::new(),
        },
    ];
    let load = Load {
        rate: 50.0,
        duration: Duration::from_millis(400),
        rounds: 2,
        warmup: Duration::from_millis(100),
        timer: manifold_timer::Timer::Tokio,
        gateway_exe: None,
    };
    let mut steps = Vec::new();
    let report = run(
        "test",
        "setup".into(),
        sim,
        variants,
        &load,
        |r| Goal {
            what: format!("{} variants", r.len()),
            met: true,
        },
        &mut |s: &str| steps.push(s.to_owned()),
    )
    .await
    .expect("the harness runs");
    assert_eq!(report.variants.len(), 2);
    assert_eq!(report.goal.what, "2 variants");
    for v in &report.variants {
        assert_eq!(v.offered, 40, "{v:?}");
        assert_eq!(v.upstream_requests, v.offered, "{v:?}");
        assert_eq!(v.extra_pct.median, 0.0, "{v:?}");
        // Pooled over both rounds: ordered, and the max is a round's max.
        let p = v.pooled_ms;
        assert!(
            p.p50 >= 1.0 && p.p50 <= p.p99 && p.p99 <= p.p999 && p.p999 <= p.max,
            "{p:?}"
        );
        assert_eq!(p.max, v.latency.max_ms.max, "{v:?}");
    }
    let [a, b] = &report.variants[..] else {
        panic!("two variants")
    };
    assert!((25.0..=75.0).contains(&a.success_pct.median), "{a:?}");
    assert!(b.success_pct.median > a.success_pct.median, "{b:?}");
    // Interleaved: round 2 starts with the other variant.
    let order: Vec<&str> = steps
        .iter()
        .filter(|s| s.starts_with("round"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        order,
        [
            "round 1/2: a",
            "round 1/2: b",
            "round 2/2: b",
            "round 2/2: a"
        ]
    );
    let md = report.to_markdown();
    assert!(md.contains("| a | `balance = \"round_robin\"` |"), "{md}");
    assert!(md.contains("| b | `(defaults)` |"), "{md}");
    assert!(md.contains("goal: 2 variants — met"), "{md}");
}

#[tokio::test]
async fn a_gateway_binary_that_does_not_exist_is_a_setup_error() {
    let sim = SimConfig::from_toml(
        "[services.item]\nreplicas = [{}]\nendpoints = [{ path = \"/item\" }]\n",
    )
    .expect("sim config");
    let load = Load {
        rate: 10.0,
        duration: Duration::from_millis(100),
        rounds: 1,
        warmup: Duration::ZERO,
        timer: manifold_timer::Timer::Tokio,
        gateway_exe: Some("/nonexistent/manifold".into()),
    };
    let variants = vec![Variant {
        name: "a".into(),
        policy: String::new(),
    }];
    let goal = |_: &[VariantResult]| Goal {
        what: String::new(),
        met: false,
    };
    let err = run(
        "t",
        String::new(),
        sim,
        variants,
        &load,
        goal,
        &mut |_: &str| {},
    )
    .await
    .expect_err("no such binary");
    assert!(
        matches!(&err, BenchError::Setup(m) if m.contains("gateway of variant `a`")),
        "{err}"
    );
}

/// Every scenario's gateway configs compile (they use `balance`, `retry` and `hedge`).
#[test]
fn every_scenarios_configs_compile() {
    let eps: Vec<String> = (1..=3).map(|p| format!("http://127.0.0.1:{p}")).collect();
    let all = crate::hedge::HedgeSpec::variants()
        .into_iter()
        .chain(crate::balance::BalanceSpec::variants())
        .chain(crate::retry_storm::RetryStormSpec::variants());
    for v in all {
        let toml = gateway_toml(&eps, &v);
        if let Err(e) = manifold_config::compile("bench.toml".as_ref(), &toml) {
            panic!("variant {}: {e}\n{toml}", v.name);
        }
    }
}

#[test]
fn absurd_loads_are_refused() {
    let ok = Load {
        rate: 100.0,
        duration: Duration::from_secs(1),
        rounds: 1,
        warmup: Duration::ZERO,
        timer: manifold_timer::Timer::Tokio,
        gateway_exe: None,
    };
    assert!(ok.check().is_ok());
    for bad in [
        Load {
            rate: f64::NAN,
            ..ok.clone()
        },
        Load {
            rate: 0.0,
            ..ok.clone()
        },
        Load {
            rate: 1e9,
            ..ok.clone()
        },
        Load {
            rounds: 0,
            ..ok.clone()
        },
        Load {
            duration: Duration::ZERO,
            ..ok.clone()
        },
        Load {
            warmup: Duration::from_secs(1e6 as u64),
            ..ok.clone()
        },
    ] {
        assert!(matches!(bad.check(), Err(BenchError::Spec(_))), "{bad:?}");
    }
}

#[test]
fn ratios_against_nothing_are_unbounded() {
    assert_eq!(ratio(10.0, 2.0), 5.0);
    assert_eq!(ratio(1.0, 0.0), f64::INFINITY);
}
