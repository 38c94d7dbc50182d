//! `manifold demo --quick --json` as CI runs it: the real binary, the simulated shop, one gateway
//! per strategy, and the seed documents' figures (checkout 750 → 450 → 400 ms with the label
//! offloaded, profile 300 → 200 ms) within 10%. Medians only: a busy 2-core runner moves the
//! tail, not the middle.

use std::process::Command;

use serde_json::Value;

/// The seed documents' figures: (scenario, strategy, p50 in ms).
const SEED: [(&str, &str, f64); 5] = [
    ("checkout", "sequential", 750.0),
    ("checkout", "concurrent", 450.0),
    ("checkout", "offloaded", 400.0),
    ("profile", "sequential", 300.0),
    ("profile", "concurrent", 200.0),
];

#[test]
fn quick_json_matches_the_seed_figures_within_ten_percent() {
    let _exclusive = crate::exclusive();
    let out = Command::new(env!("CARGO_BIN_EXE_manifold"))
        .args(["demo", "--quick", "--json"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    // Not a terminal: no progress on stderr, and stdout is exactly one JSON line.
    assert!(stderr.trim().is_empty(), "stderr: {stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        v.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["scenarios"],
        "{v}"
    );

    let scenario = |name: &str| {
        v["scenarios"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no scenario {name} in {v}"))
    };
    assert_eq!(scenario("checkout")["ideal_ms"], 400.0, "{v}");
    assert_eq!(scenario("profile")["ideal_ms"], 200.0, "{v}");
    let row = |name: &str, strategy: &str| {
        scenario(name)["strategies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == strategy)
            .unwrap_or_else(|| panic!("no strategy {strategy} in {name}: {v}"))
            .clone()
    };
    for (name, strategy, want) in SEED {
        let s = row(name, strategy);
        let p50 = s["p50_ms"].as_f64().unwrap();
        let p99 = s["p99_ms"].as_f64().unwrap();
        assert!(
            (p50 - want).abs() <= want * 0.10,
            "{name} {strategy}: p50 {p50} ms, seed figure {want} ms ± 10%: {v}"
        );
        assert!(p99 >= p50, "{name} {strategy}: {s}");
        assert_eq!(s["errors"], 0, "{name} {strategy}: {s}");
    }
    // Every label of the offloaded checkout was still created, once per idempotency key.
    let off = row("checkout", "offloaded");
    let sent = off["sent"].as_u64().unwrap();
    assert_eq!(off["offloaded"]["accepted"], sent, "{off}");
    assert_eq!(off["offloaded"]["delivered"], sent, "{off}");
    // The cache answered part of the profile's calls (Zipf keys: some repeat, most do not), and
    // its median is no worse than the uncached plan's.
    let cached = row("profile", "cached");
    let hit = cached["cache_hit_ratio"].as_f64().unwrap();
    assert!((0.2..1.0).contains(&hit), "hit ratio {hit}: {cached}");
    let concurrent = row("profile", "concurrent");
    assert!(
        cached["p50_ms"].as_f64().unwrap() <= concurrent["p50_ms"].as_f64().unwrap() * 1.1,
        "{cached} vs {concurrent}"
    );
    assert_eq!(cached["errors"], 0, "{cached}");
}

#[test]
fn report_is_one_self_contained_html_page() {
    let dir = std::env::temp_dir().join(format!("manifold-demo-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("demo.html");
    // The smallest run that still exercises every scenario, strategy and waterfall.
    let out = Command::new(env!("CARGO_BIN_EXE_manifold"))
        .args(["demo", "--rate", "10", "--duration", "500ms", "--report"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The table: a header, one row per scenario and strategy that declares its route, and two
    // per contrast (hedged, balanced).
    assert_eq!(stdout.lines().count(), 11, "{stdout}");
    assert!(
        stdout
            .lines()
            .next()
            .unwrap()
            .contains("gain over sequential"),
        "{stdout}"
    );
    let page = std::fs::read_to_string(&file).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    for banned in ["<script", "src=", "href=", "@import", "url("] {
        assert!(!page.contains(banned), "{banned} in the page");
    }
    // Per scenario and contrast: a latency chart and a waterfall.
    assert_eq!(page.matches("<svg").count(), 8);
    assert!(page.contains("order · POST /orders/{id}/confirm"));
    assert!(page.contains("orders · GET /users/{id}/orders"));
}
