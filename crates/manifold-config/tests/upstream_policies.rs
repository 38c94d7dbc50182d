//! The resilience keys of `[upstreams.NAME]` (issue 13 item 8): each key's good values land in
//! the model, absent keys keep the model's defaults, and each bad value is an error at the
//! value's own line and column naming the key and the accepted range.

use manifold_config::policy::{
    Balance, BreakerPolicy, HedgeAfter, HedgePolicy, RetryOn, RetryPolicy, UpstreamPolicies,
};
use manifold_config::{compile, Config, ErrorKind};
use std::time::Duration;

use crate::support::errors;

/// One upstream `u` with `keys` added, and a GET route calling it.
fn with_keys(keys: &str) -> String {
    format!(
        "[upstreams.u]\nendpoints = [\"http://127.0.0.1:7001\", \"http://127.0.0.1:7002\"]\n{keys}\n\n[routes.r]\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"x\"\n  upstream = \"u\"\n"
    )
}

fn ok(src: &str) -> Config {
    compile("t.toml".as_ref(), src).unwrap_or_else(|e| panic!("{e}\n--- for:\n{src}"))
}

fn policies(keys: &str) -> UpstreamPolicies {
    ok(&with_keys(keys)).upstreams[0].policies.clone()
}

/// `keys` must fail with exactly one error, of `kind`, starting where `at` starts in the source
/// (the offending value), whose message contains every part of `parts`.
fn bad(keys: &str, at: &str, kind: ErrorKind, parts: &[&str]) {
    let src = with_keys(keys);
    let (line, col) = src
        .lines()
        .enumerate()
        // Past the `[upstreams.u]` header and its endpoints.
        .skip(2)
        .find_map(|(i, l)| l.find(at).map(|c| (i + 1, l[..c].chars().count() + 1)))
        .unwrap_or_else(|| panic!("{at:?} not in the source"));
    let errs = errors(&src);
    assert_eq!(errs.len(), 1, "one error wanted for {keys}, got {errs:#?}");
    let (l, c, k, msg) = &errs[0];
    assert_eq!((*l, *c, *k), (line, col, kind), "where, for {keys}: {msg}");
    for p in parts {
        assert!(msg.contains(p), "{msg:?} should mention {p:?} (for {keys})");
    }
}

#[test]
fn without_policy_keys_an_upstream_gets_the_models_defaults() {
    assert_eq!(policies(""), UpstreamPolicies::default());
    assert_eq!(policies("").retry.on, vec![RetryOn::Connect]);
}

#[test]
fn balance_takes_p2c_or_round_robin() {
    assert_eq!(policies("balance = \"p2c\"").balance, Balance::P2c);
    assert_eq!(
        policies("balance = \"round_robin\"").balance,
        Balance::RoundRobin
    );
    bad(
        "balance = \"least_conn\"",
        "\"least_conn\"",
        ErrorKind::Value,
        &["upstreams.u.balance", "\"p2c\"", "\"round_robin\""],
    );
    bad(
        "balance = 2",
        "2",
        ErrorKind::Syntax,
        &["invalid type: integer"],
    );
}

#[test]
fn resolve_every_is_a_duration_of_at_least_a_second() {
    assert_eq!(
        policies("resolve_every = \"5s\"").resolve_every,
        Duration::from_secs(5)
    );
    assert_eq!(
        policies("resolve_every = \"1s\"").resolve_every,
        Duration::from_secs(1)
    );
    for v in ["\"999ms\"", "\"0s\"", "\"2days\""] {
        bad(
            &format!("resolve_every = {v}"),
            v,
            ErrorKind::Value,
            &["upstreams.u.resolve_every", "from 1s to 24h"],
        );
    }
    bad(
        "resolve_every = \"often\"",
        "\"often\"",
        ErrorKind::Value,
        &["upstreams.u.resolve_every", "is not a duration"],
    );
}

#[test]
fn the_issues_retry_table_lands_whole() {
    let p = policies(
        "retry = { attempts = 3, budget = 0.2, min_per_second = 10, backoff = \"25ms\", on = [\"connect\", \"reset\", \"503\", \"timeout\"] }",
    );
    assert_eq!(
        p.retry,
        RetryPolicy {
            attempts: 3,
            budget: 0.2,
            min_per_second: 10,
            backoff: Duration::from_millis(25),
            on: vec![
                RetryOn::Connect,
                RetryOn::Reset,
                RetryOn::Status(503),
                RetryOn::Timeout
            ],
        }
    );
}

#[test]
fn a_partial_retry_table_keeps_the_defaults_of_what_it_leaves_out() {
    let p = policies("retry = { attempts = 5 }");
    assert_eq!(
        p.retry,
        RetryPolicy {
            attempts: 5,
            ..RetryPolicy::default()
        }
    );
    // Bounds are inclusive; a bare status number means its string; duplicates collapse.
    let p = policies(
        "retry = { attempts = 10, budget = 1, min_per_second = 0, backoff = \"0s\", on = [502, \"502\", \"599\", \"500\"] }",
    );
    assert_eq!(p.retry.attempts, 10);
    assert_eq!(p.retry.budget, 1.0);
    assert_eq!(p.retry.min_per_second, 0);
    assert_eq!(p.retry.backoff, Duration::ZERO);
    assert_eq!(
        p.retry.on,
        vec![
            RetryOn::Status(502),
            RetryOn::Status(599),
            RetryOn::Status(500)
        ]
    );
    assert_eq!(policies("retry = { on = [] }").retry.on, vec![]);
    assert_eq!(policies("retry = { budget = 0 }").retry.budget, 0.0);
}

#[test]
fn bad_retry_values_are_refused_at_the_value() {
    let cases: [(&str, &str, &[&str]); 12] = [
        (
            "attempts = 0",
            "0 }",
            &["retry.attempts", "from 1 to 10", "got 0"],
        ),
        ("attempts = 11", "11", &["retry.attempts", "got 11"]),
        ("attempts = -3", "-3", &["retry.attempts", "got -3"]),
        (
            "attempts = 9999999999999",
            "9999999999999",
            &["retry.attempts"],
        ),
        (
            "budget = nan",
            "nan",
            &["retry.budget", "from 0 to 1", "NaN"],
        ),
        ("budget = inf", "inf", &["retry.budget", "inf"]),
        ("budget = -0.1", "-0.1", &["retry.budget"]),
        ("budget = 1.5", "1.5", &["retry.budget"]),
        ("min_per_second = 10001", "10001", &["retry.min_per_second"]),
        ("min_per_second = -1", "-1", &["retry.min_per_second"]),
        ("backoff = \"11s\"", "\"11s\"", &["retry.backoff", "10s"]),
        (
            "backoff = \"soon\"",
            "\"soon\"",
            &["retry.backoff", "duration"],
        ),
    ];
    for (kv, at, parts) in cases {
        bad(&format!("retry = {{ {kv} }}"), at, ErrorKind::Value, parts);
    }
    for on in [
        "\"404\"",
        "\"499\"",
        "\"600\"",
        "\"5xx\"",
        "\"Connect\"",
        "503.0",
        "true",
        "\"\"",
    ] {
        bad(
            &format!("retry = {{ on = [\"connect\", {on}] }}"),
            on,
            ErrorKind::Value,
            &[
                "retry.on",
                "\"connect\", \"reset\", \"timeout\"",
                "\"500\" to \"599\"",
            ],
        );
    }
}

#[test]
fn an_unknown_key_in_a_policy_table_names_it_and_the_allowed_ones() {
    bad(
        "retry = { attempt = 3 }",
        "attempt =",
        ErrorKind::Syntax,
        &[
            "`attempt`",
            "`attempts`",
            "`budget`",
            "`min_per_second`",
            "`backoff`",
            "`on`",
        ],
    );
    bad(
        "hedge = { delay = \"20ms\" }",
        "delay",
        ErrorKind::Syntax,
        &["`delay`", "`after`", "`max`", "`budget`"],
    );
    bad(
        "circuit_breaker = { threshold = 0.5 }",
        "threshold",
        ErrorKind::Syntax,
        &[
            "`threshold`",
            "`failure_rate`",
            "`min_requests`",
            "`max_ejected`",
        ],
    );
    bad(
        "retry = { attempts = \"3\" }",
        "\"3\"",
        ErrorKind::Syntax,
        &["invalid type: string"],
    );
    bad(
        "retry = 3",
        "3",
        ErrorKind::Syntax,
        &["invalid type: integer"],
    );
}

#[test]
fn hedge_after_is_a_percentile_or_a_delay_and_the_rest_defaults() {
    let default = HedgePolicy {
        after: HedgeAfter::Percentile(95.0),
        max: 1,
        budget: 0.05,
    };
    assert_eq!(policies("hedge = {}").hedge, Some(default.clone()));
    assert_eq!(policies("").hedge, None);
    assert_eq!(
        policies("hedge = { after = \"p95\", max = 1, budget = 0.05 }").hedge,
        Some(default.clone())
    );
    for (v, want) in [
        ("p50", 50.0),
        ("p99.9", 99.9),
        ("p99", 99.0),
        ("p75.5", 75.5),
    ] {
        assert_eq!(
            policies(&format!("hedge = {{ after = \"{v}\" }}")).hedge,
            Some(HedgePolicy {
                after: HedgeAfter::Percentile(want),
                ..default.clone()
            }),
            "{v}"
        );
    }
    assert_eq!(
        policies("hedge = { after = \"20ms\", max = 3, budget = 1 }").hedge,
        Some(HedgePolicy {
            after: HedgeAfter::Fixed(Duration::from_millis(20)),
            max: 3,
            budget: 1.0
        })
    );
    assert_eq!(
        policies("hedge = { after = \"1ms\" }")
            .hedge
            .map(|h| h.after),
        Some(HedgeAfter::Fixed(Duration::from_millis(1)))
    );
}

#[test]
fn bad_hedge_values_are_refused_at_the_value() {
    for p in [
        "\"p49\"",
        "\"p100\"",
        "\"p99.99\"",
        "\"p\"",
        "\"pnan\"",
        "\"p-5\"",
        "\"p1e2\"",
    ] {
        bad(
            &format!("hedge = {{ after = {p} }}"),
            p,
            ErrorKind::Value,
            &["hedge.after", "\"p50\" to \"p99.9\""],
        );
    }
    bad(
        "hedge = { after = \"0ms\" }",
        "\"0ms\"",
        ErrorKind::Value,
        &["hedge.after", "from 1ms"],
    );
    bad(
        "hedge = { after = \"2h\" }",
        "\"2h\"",
        ErrorKind::Value,
        &["hedge.after", "1h"],
    );
    bad(
        "hedge = { after = \"soon\" }",
        "\"soon\"",
        ErrorKind::Value,
        &["hedge.after", "neither a percentile", "nor a delay"],
    );
    for (kv, at, part) in [
        ("max = 0", "0 }", "hedge.max"),
        ("max = 4", "4", "hedge.max"),
        ("budget = 0", "0 }", "hedge.budget"),
        ("budget = 0.0", "0.0", "hedge.budget"),
        ("budget = 1.01", "1.01", "hedge.budget"),
        ("budget = nan", "nan", "hedge.budget"),
        ("budget = -inf", "-inf", "hedge.budget"),
    ] {
        bad(
            &format!("hedge = {{ {kv} }}"),
            at,
            ErrorKind::Value,
            &[part],
        );
    }
}

#[test]
fn a_fixed_hedge_delay_past_the_timeout_is_a_warning() {
    let cfg = ok(&with_keys(
        "timeout = \"100ms\"\nhedge = { after = \"100ms\" }",
    ));
    assert_eq!(cfg.warnings.len(), 1, "{:?}", cfg.warnings);
    assert!(cfg.warnings[0]
        .message
        .contains("no hedge would ever be sent"));
    assert_eq!(cfg.warnings[0].line, 4);
    let cfg = ok(&with_keys(
        "timeout = \"100ms\"\nhedge = { after = \"99ms\" }",
    ));
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
}

#[test]
fn circuit_breaker_takes_the_issues_table_and_defaults_the_rest() {
    let p = policies(
        "circuit_breaker = { failure_rate = 0.5, min_requests = 20, window = \"10s\", open_for = \"5s\" }",
    );
    assert_eq!(p.circuit_breaker, Some(BreakerPolicy::default()));
    assert_eq!(policies("").circuit_breaker, None);
    assert_eq!(
        policies("circuit_breaker = {}").circuit_breaker,
        Some(BreakerPolicy::default())
    );
    let p = policies(
        "circuit_breaker = { failure_rate = 1, min_requests = 1, window = \"100ms\", open_for = \"1s\", max_open_for = \"1s\", max_ejected = 0 }",
    );
    assert_eq!(
        p.circuit_breaker,
        Some(BreakerPolicy {
            failure_rate: 1.0,
            min_requests: 1,
            window: Duration::from_millis(100),
            open_for: Duration::from_secs(1),
            max_open_for: Duration::from_secs(1),
            max_ejected: 0.0,
        })
    );
    // An `open_for` longer than the default cap raises the cap rather than contradicting it.
    let b = policies("circuit_breaker = { open_for = \"10m\" }")
        .circuit_breaker
        .expect("configured");
    assert_eq!(b.max_open_for, Duration::from_secs(600));
}

#[test]
fn bad_breaker_values_are_refused_at_the_value() {
    let cases: [(&str, &str, &[&str]); 13] = [
        (
            "failure_rate = 0",
            "0 }",
            &["circuit_breaker.failure_rate", "more than 0"],
        ),
        (
            "failure_rate = 1.1",
            "1.1",
            &["circuit_breaker.failure_rate"],
        ),
        (
            "failure_rate = nan",
            "nan",
            &["circuit_breaker.failure_rate", "NaN"],
        ),
        (
            "min_requests = 0",
            "0 }",
            &["circuit_breaker.min_requests", "from 1"],
        ),
        (
            "min_requests = 1000001",
            "1000001",
            &["circuit_breaker.min_requests"],
        ),
        (
            "window = \"10ms\"",
            "\"10ms\"",
            &["circuit_breaker.window", "100ms"],
        ),
        (
            "window = \"2h\"",
            "\"2h\"",
            &["circuit_breaker.window", "1h"],
        ),
        ("open_for = \"0s\"", "\"0s\"", &["circuit_breaker.open_for"]),
        (
            "open_for = \"61m\"",
            "\"61m\"",
            &["circuit_breaker.open_for", "1h"],
        ),
        (
            "open_for = \"10s\", max_open_for = \"5s\"",
            "\"5s\"",
            &["circuit_breaker.max_open_for", "shorter than `open_for`"],
        ),
        (
            "max_open_for = \"2h\"",
            "\"2h\"",
            &["circuit_breaker.max_open_for"],
        ),
        (
            "max_ejected = -0.5",
            "-0.5",
            &["circuit_breaker.max_ejected", "from 0 to 1"],
        ),
        ("max_ejected = inf", "inf", &["circuit_breaker.max_ejected"]),
    ];
    for (kv, at, parts) in cases {
        bad(
            &format!("circuit_breaker = {{ {kv} }}"),
            at,
            ErrorKind::Value,
            parts,
        );
    }
}

#[test]
fn every_bad_policy_value_of_a_file_is_reported_at_once() {
    let src = with_keys(
        "balance = \"x\"\nretry = { attempts = 0, budget = 2 }\nhedge = { max = 9 }\ncircuit_breaker = { window = \"1ms\" }",
    );
    let errs = errors(&src);
    assert_eq!(errs.len(), 5, "{errs:#?}");
    let lines: Vec<usize> = errs.iter().map(|e| e.0).collect();
    assert_eq!(lines, vec![3, 4, 4, 5, 6]);
}

#[test]
fn a_zero_or_absurd_upstream_timeout_is_refused() {
    for (kv, at) in [
        ("timeout = \"0s\"", "\"0s\""),
        ("connect_timeout = \"0ms\"", "\"0ms\""),
        ("timeout = \"100years\"", "\"100years\""),
    ] {
        bad(kv, at, ErrorKind::Value, &["more than 0 and at most 24h"]);
    }
}

#[test]
fn the_policies_show_in_the_compiled_plans_json() {
    let cfg = ok(&with_keys(
        "retry = { on = [\"503\"] }\nhedge = { after = \"20ms\" }",
    ));
    let json = serde_json::to_value(&cfg).expect("serializes");
    let p = &json["upstreams"][0]["policies"];
    assert_eq!(p["retry"]["on"], serde_json::json!([{ "status": 503 }]));
    assert_eq!(p["hedge"]["after"], serde_json::json!({ "fixed": "20ms" }));
    assert_eq!(p["balance"], "p2c");
}

#[test]
fn check_prints_each_upstreams_policies_in_two_lines() {
    let cfg = ok(&with_keys(
        "balance = \"round_robin\"\ntimeout = \"400ms\"\nretry = { budget = 0.125, on = [\"connect\", \"503\"] }\nhedge = { after = \"p99.9\" }\ncircuit_breaker = { open_for = \"1s\" }",
    ));
    let out = manifold_config::describe(&cfg);
    let lines: Vec<&str> = out.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("upstream u:"))
        .unwrap_or_else(|| panic!("no upstream line in:\n{out}"));
    assert_eq!(
        lines[at],
        "upstream u: 2 endpoints, round_robin, timeout 400ms (connect 2s), resolve every 30s"
    );
    assert_eq!(
        lines[at + 1],
        "  retry 3 attempts on connect, 503 (budget 12.5% + 10/s, backoff 25ms); hedge after p99.9, max 1 (budget 5%); breaker at 50% failures of ≥ 20 in 10s, open 1s (up to 5m), eject ≤ 50%"
    );
    let plain = manifold_config::describe(&ok(&with_keys("retry = { attempts = 1 }")));
    assert!(
        plain.contains("\n  retry off; hedge off; breaker off\n"),
        "{plain}"
    );
}

/// docs/configuration.md's upstream example compiles, and what the doc says `check` prints for
/// it is what `check` prints.
#[test]
fn the_documented_upstream_example_compiles_and_prints_as_documented() {
    let doc = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/configuration.md"
    ));
    let blocks: Vec<&str> = doc
        .split("```")
        .skip(1)
        .step_by(2)
        .filter_map(|b| b.strip_prefix("toml\n"))
        .filter(|b| b.starts_with("[upstreams."))
        .collect();
    assert_eq!(blocks.len(), 1, "one upstream example in the doc");
    let cfg = ok(blocks[0]);
    let up = &cfg.upstreams[0];
    assert_eq!(up.policies.retry.on.len(), 4);
    assert!(up.policies.hedge.is_some() && up.policies.circuit_breaker.is_some());
    let printed = doc
        .split("in two lines:\n\n```\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the doc shows check's upstream lines");
    let out = manifold_config::describe(&cfg);
    for line in printed.lines() {
        assert!(out.lines().any(|l| l == line), "{line:?} not in:\n{out}");
    }
}
