//! The whole report — JSON, text, HTML and route plan — is the same as the analyzer wrote
//! before it was made faster (issue 15): digests of every output, over every test file and a
//! synthetic checkout under each option, against `expected/report-digests.txt`.
//!
//! That file was written by the analyzer as it was before the speed work (commit ff0d5bf),
//! running this same file there. A change that alters any report on purpose replaces it with
//! the lines the failing test prints (this build's digests, in the file's format), and says so.

use std::path::{Path, PathBuf};

use manifold_trace::analysis::{Analyzer, Options, WhatIf};
use manifold_trace::model::fingerprint;
use manifold_trace::read::analyze_file;
use manifold_trace::{report, Semantics};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).expect("dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Everything `manifold analyze` can print for `path` under `opts`.
fn outputs(path: &Path, opts: Options) -> String {
    let route = opts.emit_plan.clone();
    let mut an = Analyzer::new(opts);
    if let Err(e) = analyze_file(&mut an, path) {
        // the message names the file: without the checkout's directory
        let dir = testdata().display().to_string();
        return format!("error: {e}").replace(&dir, "<testdata>");
    }
    let rep = report::build(&an);
    let mut out = serde_json::to_string_pretty(&rep).expect("json");
    out.push_str(&report::render_text(&rep));
    out.push_str(&report::render_html(&an, &rep));
    if let Some(r) = route {
        out.push_str(&format!("{:?}", report::render_plan(&an, &r)));
    }
    out
}

fn what_ifs(specs: &[&str]) -> Options {
    Options {
        what_if: specs
            .iter()
            .map(|s| WhatIf::parse(s).expect("what-if"))
            .collect(),
        ..Options::default()
    }
}

/// (case, digest of its outputs) for every case.
fn digests() -> Vec<(String, String)> {
    let mut cases: Vec<(String, PathBuf, Options)> = Vec::new();
    let root = testdata();
    for f in files(&root) {
        let name = f
            .strip_prefix(&root)
            .unwrap_or(&f)
            .display()
            .to_string()
            .replace('\\', "/");
        cases.push((name.clone(), f.clone(), Options::default()));
        cases.push((
            format!("{name} crisp"),
            f.clone(),
            Options {
                semantics: Semantics::CRISP,
                no_skew_correction: true,
                emit_plan: Some("a".into()),
                ..Options::default()
            },
        ));
    }
    let synthetic = std::env::temp_dir().join(format!(
        "manifold-report-digests-{}.json",
        std::process::id()
    ));
    std::fs::write(&synthetic, manifold_trace::synth::checkout_file(300, 7)).expect("write");
    let s = |name: &str, opts: Options| (format!("synthetic {name}"), synthetic.clone(), opts);
    cases.push(s("default", Options::default()));
    cases.push(s(
        "plan",
        Options {
            emit_plan: Some("checkout".into()),
            ..Options::default()
        },
    ));
    cases.push(s(
        "crisp",
        Options {
            semantics: Semantics::CRISP,
            ..Options::default()
        },
    ));
    for w in [
        "parallelize:frontend:POST /checkout",
        "batch:catalog:GET /products/{id}",
        "cache:catalog:GET /products/{id}=0.7",
        "async:orders:POST /orders",
        "speedup:payments:POST /payments=30%",
        "batch:stock:GET /stock",
    ] {
        cases.push(s(w, what_ifs(&[w])));
    }
    cases.push(s(
        "all what-ifs",
        what_ifs(&[
            "parallelize:frontend:POST /checkout",
            "speedup:payments:POST /payments=50%",
            "async:events:publish order-created",
            "cache:pricing:GET /price=0.5",
            "batch:stock:GET /stock",
        ]),
    ));
    let out = cases
        .into_iter()
        .map(|(name, path, opts)| {
            let text = outputs(&path, opts);
            if std::env::var("REPORT_CASE").is_ok_and(|c| c == name) {
                println!("{text}");
            }
            let digest = format!("{:016x} {}", fingerprint(text.as_bytes()), text.len());
            (name, digest)
        })
        .collect();
    let _ = std::fs::remove_file(&synthetic);
    out
}

fn expected_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/expected/report-digests.txt")
}

#[test]
fn reports_are_the_same_as_before_the_fast_paths() {
    let text = std::fs::read_to_string(expected_path()).expect("expected digests");
    let want: Vec<(String, String)> = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, digest) = l.split_once('\t').expect("name<TAB>digest");
            (name.to_string(), digest.to_string())
        })
        .collect();
    let got = digests();
    assert_eq!(got.len(), want.len(), "number of cases");
    assert!(
        got.len() > 80,
        "every test file twice and the synthetic cases"
    );
    let differ: Vec<&str> = got
        .iter()
        .zip(&want)
        .filter(|(g, w)| g != w)
        .map(|(g, _)| g.0.as_str())
        .collect();
    // On a difference, the lines this build gives, in the expected file's format: what to
    // paste into it when a report changes on purpose.
    let lines: String = got.iter().map(|(n, d)| format!("{n}\t{d}\n")).collect();
    assert!(
        differ.is_empty(),
        "reports differ from before: {differ:?}\nthis build's digests:\n{lines}"
    );
}
