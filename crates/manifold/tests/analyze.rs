//! `manifold analyze` end to end: the real binary on real and synthetic trace files.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_manifold"))
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifold-trace/testdata")
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("manifold-analyze-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str]) -> Output {
    bin()
        .arg("analyze")
        .args(args)
        .output()
        .expect("run manifold")
}

fn json(args: &[&str]) -> Value {
    let out = run(args);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn synthetic(dir: &TempDir, n: u64) -> PathBuf {
    let p = dir.0.join("checkout.json");
    std::fs::write(&p, manifold_trace::synth::checkout_file(n, 3)).expect("write");
    p
}

#[test]
fn json_contract_and_recommendations_on_synthetic_checkout() {
    let dir = TempDir::new("synth");
    let f = synthetic(&dir, 120);
    let v = json(&[f.to_str().expect("path"), "--json"]);
    for key in [
        "traces",
        "spans",
        "services",
        "warnings",
        "hotspots",
        "recommendations",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["traces"], 120);
    assert_eq!(v["services"], 8);
    let shares: f64 = v["hotspots"]
        .as_array()
        .expect("hotspots")
        .iter()
        .map(|h| h["share"].as_f64().expect("share"))
        .sum();
    assert!((shares - 1.0).abs() < 1e-9, "shares sum to {shares}");
    for h in v["hotspots"].as_array().expect("hotspots") {
        for k in [
            "service",
            "operation",
            "share",
            "critical_ms_p50",
            "critical_ms_p99",
        ] {
            assert!(h.get(k).is_some(), "hotspot without {k}");
        }
    }
    let recs = v["recommendations"].as_array().expect("recs");
    let find = |kind: &str, svc: &str, op: &str| -> &Value {
        recs.iter()
            .find(|r| r["kind"] == kind && r["service"] == svc && r["operation"] == op)
            .unwrap_or_else(|| panic!("no {kind} {svc}:{op} in {recs:#?}"))
    };
    let par = find("parallelize", "frontend", "POST /checkout");
    let asy = find("async", "events", "publish order-created");
    find("batch", "catalog", "GET /products/{id}");
    find("cache", "catalog", "GET /products/{id}");
    find("retry", "pricing", "GET /price");
    find("limited-concurrency", "stock", "GET /stock");
    find("slow-dependency", "payments", "handle");
    // the publish lasts 40..60 ms and nothing waits for it: that is what async saves
    let s = asy["saving_ms"].as_f64().expect("saving");
    assert!((40.0..=61.0).contains(&s), "async saving {s}");
    // the retried attempts happen in every 4th trace
    assert_eq!(
        find("retry", "pricing", "GET /price")["evidence"]["traces"],
        30
    );
    for r in recs {
        for k in [
            "kind",
            "service",
            "operation",
            "saving_ms",
            "saving_share",
            "evidence",
        ] {
            assert!(r.get(k).is_some(), "recommendation without {k}");
        }
        assert!(r["saving_ms"].as_f64().expect("ms") > 0.0);
        assert!(!r["evidence"]["example_trace_ids"]
            .as_array()
            .expect("ids")
            .is_empty());
    }
    // sorted by saving
    let order: Vec<f64> = recs
        .iter()
        .map(|r| r["saving_share"].as_f64().expect("share"))
        .collect();
    assert!(order.windows(2).all(|w| w[0] >= w[1]));
    assert!(par["saving_share"].as_f64().expect("share") >= order[order.len() - 1]);
}

#[test]
fn what_if_prints_the_new_distribution() {
    let dir = TempDir::new("whatif");
    let f = synthetic(&dir, 40);
    let path = f.to_str().expect("path");
    let same = json(&[path, "--json", "--what-if", "speedup:payments:handle=0%"]);
    assert_eq!(same["what_if"]["before"], same["what_if"]["after"]);
    assert_eq!(same["what_if"]["matched_spans"], 40);
    let v = json(&[
        path,
        "--json",
        "--what-if",
        "async:events:publish order-created",
        "--what-if",
        "cache:catalog:GET /products/{id}=1.0",
    ]);
    let before = v["what_if"]["before"]["p50_ms"].as_f64().expect("before");
    let after = v["what_if"]["after"]["p50_ms"].as_f64().expect("after");
    assert!(after < before - 60.0, "{before} -> {after}");
    let text = run(&[path, "--what-if", "parallelize:frontend:POST /checkout"]);
    assert!(text.status.success());
    let s = String::from_utf8_lossy(&text.stdout);
    assert!(
        s.contains("What if parallelize:frontend:POST /checkout"),
        "{s}"
    );
    assert!(s.contains("Hotspots") && s.contains("Recommendations"));
    let bad = run(&[path, "--what-if", "speedup:a:b=300%"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("what-if"));
}

#[test]
fn crisp_cases_with_skew_tolerance() {
    let f = testdata().join("crisp-test-cases/test_cases/10.json");
    let v = json(&[
        f.to_str().expect("path"),
        "--json",
        "--skew-tolerance",
        "0.01",
    ]);
    let hs = v["hotspots"].as_array().expect("hotspots");
    let share = |op: &str| {
        hs.iter()
            .find(|h| h["operation"] == op)
            .map(|h| h["share"].as_f64().expect("share"))
    };
    assert_eq!(share("O1"), Some(0.4));
    assert_eq!(share("O3"), Some(0.1));
    // strict Jaeger ordering leaves O3 off the path
    let strict = json(&[f.to_str().expect("path"), "--json"]);
    assert!(strict["hotspots"]
        .as_array()
        .expect("hotspots")
        .iter()
        .all(|h| h["operation"] != "O3"));
    // the whole directory of CRISP cases
    let dir = testdata().join("crisp-test-cases");
    let all = json(&[
        dir.to_str().expect("path"),
        "--json",
        "--skew-tolerance",
        "0.01",
    ]);
    assert_eq!(all["traces"], 33);
}

#[test]
fn html_page_is_self_contained() {
    let dir = TempDir::new("html");
    let f = synthetic(&dir, 30);
    let out = dir.0.join("report.html");
    let r = run(&[
        f.to_str().expect("path"),
        "--html",
        out.to_str().expect("path"),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let html = std::fs::read_to_string(&out).expect("html");
    assert!(
        html.contains("<table") && html.contains("Median trace") && html.contains("Slowest trace")
    );
    assert!(html.matches("<svg").count() == 2);
    assert!(html.contains("class=\"cp\""), "critical path highlighted");
    assert!(
        !html.contains("<script") && !html.contains("src=\"http") && !html.contains("href=\"http")
    );
}

#[test]
fn files_directories_gzip_and_errors() {
    // the shared testdata directory: every trace file reads; the DERIVED test-case file is not a
    // trace and is skipped with a note naming it
    let r = run(&[testdata().to_str().expect("path"), "--json"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let v: Value = serde_json::from_slice(&r.stdout).expect("json");
    assert!(v["traces"].as_u64().expect("traces") >= 40);
    assert!(v["warnings"].as_u64().expect("warnings") > 0);
    assert!(String::from_utf8_lossy(&r.stderr).contains("DERIVED"));
    // named explicitly, a non-trace file is an error naming it
    let derived = testdata()
        .join("jaeger-ui__criticalpath-testcases__DERIVED-jaeger-json-with-expected.json");
    let r = run(&[derived.to_str().expect("path")]);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("DERIVED-jaeger-json-with-expected.json"));
    let dir = TempDir::new("files");
    let junk = dir.0.join("notes.json");
    std::fs::write(&junk, b"this is not json").expect("write");
    let r = run(&[junk.to_str().expect("path")]);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("notes.json"));
    // gzip
    let gz = dir.0.join("skew.json.gz");
    let src = std::fs::read(testdata().join("zipkin__lens-testdata-skew__zipkin-v2-json.json"))
        .expect("read");
    let mut enc = flate2_encoder(&gz);
    enc.write_all(&src).expect("write");
    drop(enc);
    let v = json(&[gz.to_str().expect("path"), "--json"]);
    assert_eq!(v["traces"], 1);
    assert_eq!(v["warning_kinds"]["clock_skew_adjusted"], 1);
}

/// A gzip file written with the system `gzip` (no extra dependency for the binary's tests).
fn flate2_encoder(path: &Path) -> GzFile {
    GzFile {
        path: path.to_path_buf(),
        buf: Vec::new(),
    }
}

struct GzFile {
    path: PathBuf,
    buf: Vec<u8>,
}

impl std::io::Write for GzFile {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for GzFile {
    fn drop(&mut self) {
        let plain = self.path.with_extension("");
        std::fs::write(&plain, &self.buf).expect("write");
        let st = Command::new("gzip")
            .arg("-f")
            .arg(&plain)
            .status()
            .expect("gzip");
        assert!(st.success());
    }
}

#[test]
fn emit_plan_writes_a_route_manifold_accepts() {
    let dir = TempDir::new("plan");
    let f = synthetic(&dir, 20);
    let r = run(&[f.to_str().expect("path"), "--emit-plan", "checkout"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let toml = String::from_utf8(r.stdout).expect("utf8");
    assert!(toml.contains("[routes.checkout]"));
    assert!(toml.contains("[[routes.checkout.calls]]"));
    assert!(toml.contains("this DAG would reach p50"));
    let cfg = dir.0.join("plan.toml");
    std::fs::write(
        &cfg,
        format!("[server]\nlisten = \"127.0.0.1:0\"\n\n{toml}"),
    )
    .expect("write");
    let check = bin()
        .args(["check", "-c", cfg.to_str().expect("path")])
        .output()
        .expect("check");
    assert!(
        check.status.success(),
        "manifold check rejected the plan:\n{}\n{}\n{toml}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let none = run(&[f.to_str().expect("path"), "--emit-plan", "no-such-endpoint"]);
    assert!(!none.status.success());
}
