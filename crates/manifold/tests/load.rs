//! `manifold load` against a `manifold sim` process: the `--json` contract, the achieved rate,
//! and a one-second stall that must show in p99.

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::sim::{http, SimProcess};

fn manifold() -> Command {
    Command::new(env!("CARGO_BIN_EXE_manifold"))
}

fn sim_config() -> (std::path::PathBuf, SimProcess) {
    let dir = std::env::temp_dir().join(format!("manifold-load-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file =
        dir.join(format!("sim-{:?}.toml", std::thread::current().id()).replace(['(', ')'], ""));
    std::fs::write(
        &file,
        r#"
[services.svc]
endpoints = [
  { path = "/fast", latency = "2ms" },
  { method = "POST", path = "/orders", latency = "1ms", response = { status = 201, body = { n = "{body.n}" } } },
]
"#,
    )
    .unwrap();
    let sim = SimProcess::start(&["-c", file.to_str().unwrap()]);
    (file, sim)
}

fn json_report(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "one JSON line: {stdout}");
    serde_json::from_str(&stdout).unwrap()
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn json_contract_and_achieved_rate() {
    let _exclusive = crate::exclusive();
    let (file, sim) = sim_config();
    let url = format!("http://{}/fast", sim.addr("svc"));
    let out = manifold()
        .args(["load", &url, "--rate", "200", "--duration", "2s", "--json"])
        .output()
        .unwrap();
    let r = json_report(&out);
    assert_eq!(
        keys(&r),
        ["duration_s", "errors", "latency_ms", "ok", "rate", "sent"]
    );
    assert_eq!(keys(&r["latency_ms"]), ["max", "p50", "p90", "p99", "p999"]);
    assert_eq!(
        (r["sent"].as_u64(), r["ok"].as_u64(), r["errors"].as_u64()),
        (Some(400), Some(400), Some(0))
    );
    let rate = r["rate"].as_f64().unwrap();
    assert!((150.0..=210.0).contains(&rate), "achieved rate {rate}");
    let (_, stats) = http(&sim.addr("svc"), "GET", "/__stats", "");
    assert_eq!(
        stats["services"]["svc"]["endpoints"]["GET /fast"]["calls"],
        400
    );
    drop(sim);
    std::fs::remove_file(file).ok();
}

#[test]
fn a_one_second_stall_shows_in_p99() {
    let _exclusive = crate::exclusive();
    let (file, sim) = sim_config();
    let addr = sim.addr("svc");
    let url = format!("http://{addr}/fast");
    let load = manifold()
        .args(["load", &url, "--rate", "100", "--duration", "3s", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let (st, _) = http(&addr, "POST", "/__stall?for=1s", "");
    assert_eq!(st, 200);
    let r = json_report(&load.wait_with_output().unwrap());
    assert_eq!(r["ok"], 300, "{r}");
    let p99 = r["latency_ms"]["p99"].as_f64().unwrap();
    assert!(p99 > 500.0, "p99 {p99} ms must show the 1 s stall: {r}");
    let p50 = r["latency_ms"]["p50"].as_f64().unwrap();
    assert!(p50 < p99, "{r}");
    drop(sim);
    std::fs::remove_file(file).ok();
}

#[test]
fn post_bodies_headers_and_human_output() {
    let (file, sim) = sim_config();
    let url = format!("http://{}/orders", sim.addr("svc"));
    let out = manifold()
        .args([
            "load",
            &url,
            "-X",
            "post",
            "-b",
            r#"{"n": {seq}}"#,
            "-H",
            "x-test: 1",
            "--rate",
            "200",
            "--requests",
            "20",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("20 sent, 20 ok, 0 errors"), "{stdout}");
    assert!(stdout.contains("p99.9"), "{stdout}");
    let (_, stats) = http(&sim.addr("svc"), "GET", "/__stats", "");
    assert_eq!(
        stats["services"]["svc"]["endpoints"]["POST /orders"]["ok"],
        20
    );
    drop(sim);
    std::fs::remove_file(file).ok();
}

#[test]
fn input_errors() {
    // Unbounded: clap demands --duration or --requests.
    let out = manifold()
        .args(["load", "http://127.0.0.1:9/", "--rate", "10"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    for args in [
        vec!["load", "http://127.0.0.1:9/", "--rate", "0", "-n", "1"],
        vec!["load", "https://127.0.0.1:9/", "--rate", "1", "-n", "1"],
        vec![
            "load",
            "http://127.0.0.1:9/",
            "--rate",
            "1",
            "-n",
            "1",
            "-H",
            "nocolon",
        ],
    ] {
        let out = manifold().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("input error"), "{args:?}: {stderr}");
    }
    let help = manifold().args(["load", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--rate 100 --duration 10s") && help.contains("{seq}"),
        "{help}"
    );
}
