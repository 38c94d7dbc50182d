use http::Method;

use super::*;

#[test]
fn example_file_parses() {
    let src = include_str!("../../../../examples/sim.toml");
    let cfg = SimConfig::from_toml(src).unwrap();
    assert!(cfg.services.len() >= 2);
}

#[test]
fn shop_has_the_seed_latencies() {
    let shop = SimConfig::shop();
    shop.validate().unwrap();
    let want = [
        ("order", "POST", "/orders", 150),
        ("order", "POST", "/orders/{id}/confirm", 50),
        ("payment", "POST", "/payments", 200),
        ("inventory", "POST", "/inventory/reserve", 100),
        ("shipping", "POST", "/shipping/labels", 250),
        ("shipping", "GET", "/shipping/rates/{zip}", 250),
        ("users", "GET", "/users/{id}", 100),
        ("orders", "GET", "/users/{id}/orders", 200),
    ];
    let mut n = 0;
    for (svc, m, p, ms) in want {
        let ep = shop.services[svc]
            .endpoints
            .iter()
            .find(|e| e.method == m && e.path == p)
            .unwrap_or_else(|| panic!("{svc} {m} {p}"));
        assert_eq!(ep.latency, Latency::fixed_ms(ms), "{svc} {m} {p}");
        n += 1;
    }
    let total: usize = shop.services.values().map(|s| s.endpoints.len()).sum();
    assert_eq!(total, n, "no endpoints beyond the seed documents'");
}

#[test]
fn base_port_assignment() {
    // Generic: by name order.
    let cfg = SimConfig::shop().with_base_port(7001).unwrap();
    let ports: Vec<(&str, u16)> = cfg
        .services
        .iter()
        .map(|(n, s)| (n.as_str(), s.replicas[0].port.unwrap()))
        .collect();
    assert_eq!(ports[0], ("inventory", 7001));
    assert_eq!(ports[5], ("users", 7006));
    assert!(SimConfig::shop().with_base_port(65534).is_err());
    // The shop: in the seed documents' order.
    let shop = SimConfig::shop_at(7001).unwrap();
    let port = |n: &str| shop.services[n].port.unwrap();
    let got: Vec<u16> = SHOP_SERVICES.iter().map(|n| port(n)).collect();
    assert_eq!(got, vec![7001, 7002, 7003, 7004, 7005, 7006]);
    assert_eq!(port("payment"), 7002);
    let eph = SimConfig::shop_at(0).unwrap();
    assert!(eph.services.values().all(|s| s.port.is_none()));
}

#[test]
fn config_errors_are_located() {
    for (src, needle) in [
            ("[services.a]\nendpoints = []\n", "services.a: no endpoints"),
            (
                "[services.a]\nendpoints = [{ path = \"x\" }]\n",
                "must start with `/`",
            ),
            (
                "[services.a]\nendpoints = [{ path = \"/a\" }, { path = \"/a\", method = \"get\" }]\n",
                "declared twice",
            ),
            (
                "[services.a]\nendpoints = [{ path = \"/a/{x}\", response = { body = \"{path.y}\" } }]\n",
                "no {y} segment",
            ),
            (
                "[services.a]\nendpoints = [{ path = \"/a\", faults = [{ kind = \"reset\", rate = 0.7 }, { kind = \"hang\", rate = 0.4 }] }]\n",
                "above 1",
            ),
            (
                "[services.a]\nport = 1\nreplicas = [{}]\nendpoints = [{ path = \"/a\" }]\n",
                "not both",
            ),
            (
                "[services.a]\nendpoints = [{ path = \"/a\", latency = \"soon\" }]\n",
                "line 2",
            ),
            (
                "[services.a]\nendpoints = [{ path = \"/a\", faults = [{ kind = \"explode\", rate = 0.1 }] }]\n",
                "explode",
            ),
            ("seed = 1\n", "missing field `services`"),
        ] {
            let err = SimConfig::from_toml(src).unwrap_err().to_string();
            assert!(err.contains(needle), "{src}\n=> {err}");
            assert!(err.starts_with("config error"), "{err}");
        }
}

#[test]
fn configs_built_in_code_are_validated_too() {
    let mut cfg = SimConfig::shop();
    cfg.services.get_mut("users").unwrap().endpoints[0].latency = Latency::Uniform {
        min: Duration::from_millis(20),
        max: Duration::from_millis(10),
    };
    let err = cfg.validate().unwrap_err().to_string();
    assert!(
        err.contains("services.users") && err.contains("above max"),
        "{err}"
    );
    let mut cfg = SimConfig::shop();
    cfg.services.get_mut("users").unwrap().endpoints[0].latency = Latency::Mix(vec![]);
    assert!(cfg.validate().is_err());
}

#[test]
fn path_matching_and_faults() {
    let ep = CompiledEndpoint::compile(&EndpointConfig {
        method: "post".into(),
        path: "/orders/{id}/confirm".into(),
        latency: Latency::fixed_ms(1),
        faults: vec![
            FaultConfig {
                rate: 0.1,
                kind: FaultKind::Reset,
            },
            FaultConfig {
                rate: 0.2,
                kind: FaultKind::Status { status: 503 },
            },
        ],
        response: ResponseConfig::default(),
    })
    .unwrap();
    assert_eq!(ep.method, Method::POST);
    assert_eq!(
        ep.matches(&["orders", "a%20b", "confirm"]),
        Some(vec![("id".into(), "a b".into())])
    );
    assert_eq!(ep.matches(&["orders", "1"]), None);
    assert_eq!(ep.matches(&["orders", "1", "cancel"]), None);
    assert_eq!(ep.fault_for(0.05), Some(&FaultKind::Reset));
    assert_eq!(ep.fault_for(0.25), Some(&FaultKind::Status { status: 503 }));
    assert_eq!(ep.fault_for(0.31), None);
}

/// Found by rev-cli: `manifold sim -c /dev/zero` read until memory ran out.
#[test]
fn a_config_file_that_never_ends_is_refused() {
    let err = SimConfig::from_file(std::path::Path::new("/dev/zero")).unwrap_err();
    assert!(err.to_string().contains("larger than 16 MiB"), "{err}");
}
