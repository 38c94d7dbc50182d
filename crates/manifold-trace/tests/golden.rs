//! Golden tests over every file in `testdata/` (copies of `../shared/testdata/traces`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use manifold_trace::assemble::assemble;
use manifold_trace::read::{read_bytes, read_file, ReadError};
use manifold_trace::skew::correct_clock_skew;
use manifold_trace::{critical_path, CpGraph, Interner, Semantics, SpanKind, Trace, Warnings};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

fn traces_of(path: &Path, interner: &mut Interner, warnings: &mut Warnings) -> Vec<Trace> {
    let mut raws = Vec::new();
    read_file(path, interner, warnings, &mut |t, _, _| raws.push(t)).expect("read");
    raws.into_iter()
        .filter_map(|r| assemble(r.trace_id, r.spans, interner, warnings))
        .collect()
}

#[test]
fn jaeger_ui_critical_path_sections_exactly() {
    let path = testdata()
        .join("jaeger-ui__criticalpath-testcases__DERIVED-jaeger-json-with-expected.json");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json");
    let cases = doc["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 9);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let bytes = serde_json::to_vec(&case["trace"]).expect("bytes");
        let mut i = Interner::new();
        let mut w = Warnings::default();
        let raws = read_bytes(&bytes, &mut i, &mut w).expect(name);
        assert_eq!(raws.len(), 1, "{name}");
        let r = raws.into_iter().next().expect("one");
        let t = assemble(r.trace_id, r.spans, &i, &mut w).expect("trace");
        let g = CpGraph::from_trace(&t, &mut w);
        let cp = critical_path(&g, Semantics::JAEGER);
        // jaeger-ui lists sections latest first
        let got: Vec<(String, i64, i64)> = cp
            .sections
            .iter()
            .rev()
            .map(|s| {
                (
                    t.spans[s.node as usize].id.render(&i),
                    s.start / 1000,
                    s.end / 1000,
                )
            })
            .collect();
        let want: Vec<(String, i64, i64)> = case["expectedCriticalPathSections"]
            .as_array()
            .expect("expected")
            .iter()
            .map(|e| {
                (
                    e["spanID"].as_str().expect("id").to_string(),
                    e["sectionStart"].as_i64().expect("start"),
                    e["sectionEnd"].as_i64().expect("end"),
                )
            })
            .collect();
        assert_eq!(got, want, "{name}");
    }
}

fn crisp_files() -> Vec<PathBuf> {
    let dir = testdata().join("crisp-test-cases/test_cases");
    let mut out = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).expect("dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// CRISP's name for a span: `[service] operation`.
fn crisp_op(t: &Trace, i: &Interner, n: u32) -> String {
    let s = &t.spans[n as usize];
    format!("[{}] {}", i.name(s.service), i.name(s.operation))
}

/// CRISP's call path of a span: the names from the root down, joined by `->`.
fn crisp_call_path(t: &Trace, i: &Interner, n: u32) -> String {
    let mut names = vec![crisp_op(t, i, n)];
    let mut at = t.spans[n as usize].parent;
    while let Some(p) = at {
        names.push(crisp_op(t, i, p));
        at = t.spans[p as usize].parent;
    }
    names.reverse();
    names.join("->")
}

fn int_map(v: &serde_json::Value) -> BTreeMap<String, i64> {
    v.as_object()
        .expect("map")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_i64().expect("int")))
        .collect()
}

fn counts_map(v: &serde_json::Value) -> BTreeMap<String, Vec<u32>> {
    v.as_object()
        .expect("map")
        .iter()
        .map(|(k, v)| {
            let a = v
                .as_array()
                .expect("array")
                .iter()
                .map(|x| x.as_u64().expect("count") as u32)
                .collect();
            (k.clone(), a)
        })
        .collect()
}

/// Every expected value in every CRISP test file is compared; a field this test does not know
/// fails it. CRISP's own `checkResults` compares only some of these fields, and its map
/// comparison never fails (it returns the error message, which is truthy), so one typo survives
/// in CRISP's files: 11.json starts both its `errCPErrCounts` keys with
/// `errorCriticalPathSyntheticRoot->[[S1] O1`. The doubled bracket is corrected here and counted.
#[test]
fn crisp_cases_with_overlap_allowance() {
    use manifold_trace::errors::{error_critical_path, no_error_critical_path, time_saved_on_cp};
    use manifold_trace::model::flags::ERROR;
    const SYNTH: &str = "errorCriticalPathSyntheticRoot->";
    let files = crisp_files();
    assert_eq!(files.len(), 33);
    let mut checked_files = 0;
    let mut fields: BTreeMap<String, usize> = BTreeMap::new();
    let mut values = 0usize;
    let mut corrected_typos = 0;
    for f in files {
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&f).expect("read")).expect("json");
        let testing = &doc["testing"];
        // the first files keep only opTimeExclusive, as `[ {op: time} ]`
        let expected: serde_json::Map<String, serde_json::Value> = if testing.is_array() {
            assert_eq!(testing.as_array().map(Vec::len), Some(1), "{f:?}");
            let mut m = serde_json::Map::new();
            m.insert("opTimeExclusive".into(), testing[0].clone());
            m
        } else {
            testing.as_object().expect("testing").clone()
        };
        let mut i = Interner::new();
        let mut w = Warnings::default();
        let traces = traces_of(&f, &mut i, &mut w);
        assert_eq!(traces.len(), 1, "{f:?}");
        let t = &traces[0];
        let g = CpGraph::from_trace(t, &mut w);
        let sem = Semantics {
            overlap_allowance: 0.01,
        };
        let cp = critical_path(&g, sem);
        let is_error = |n: u32| t.spans[n as usize].has(ERROR);
        let ecp = error_critical_path(&g, &cp, is_error);
        // sections still tile the root
        let total: i64 = cp.sections.iter().map(|s| s.end - s.start).sum();
        assert_eq!(total, g.duration(g.root), "{f:?}");
        let reach = g.reachable();
        for (field, want) in &expected {
            let what = format!("{field} of {f:?}");
            let n_values = match want {
                serde_json::Value::Object(m) => m.len().max(1),
                _ => 1,
            };
            match field.as_str() {
                "opTimeExclusive" => {
                    let mut got: BTreeMap<String, i64> = BTreeMap::new();
                    for n in &cp.nodes {
                        *got.entry(crisp_op(t, &i, n.node)).or_insert(0) += n.exclusive / 1000;
                    }
                    assert_eq!(got, int_map(want), "{what}");
                }
                "totalWork" => {
                    let sum: i64 = reach.iter().map(|&n| g.duration(n)).sum();
                    assert_eq!(Some(sum / 1000), want.as_i64(), "{what}");
                }
                "timeSavedOnWork" => {
                    let errs: i64 = reach
                        .iter()
                        .filter(|&&n| is_error(n))
                        .map(|&n| g.duration(n))
                        .sum();
                    assert_eq!(Some(errs / 1000), want.as_i64(), "{what}");
                }
                "timeSavedOnCP" => {
                    let saved = time_saved_on_cp(&g, sem, is_error);
                    assert_eq!(Some(saved / 1000), want.as_i64(), "{what}");
                }
                "errCPCallpathTimeExclusive"
                | "errCallpathTimeExclusive"
                | "errOpTimeExclusive" => {
                    let mut got: BTreeMap<String, i64> = BTreeMap::new();
                    for e in ecp.iter().filter(|e| e.error) {
                        let key = match field.as_str() {
                            "errCPCallpathTimeExclusive" => {
                                format!("{SYNTH}{}", crisp_call_path(t, &i, e.node))
                            }
                            "errCallpathTimeExclusive" => crisp_call_path(t, &i, e.node),
                            _ => crisp_op(t, &i, e.node),
                        };
                        *got.entry(key).or_insert(0) += e.exclusive / 1000;
                    }
                    assert_eq!(got, int_map(want), "{what}");
                }
                "errOpTimeInclusive" => {
                    let mut got: BTreeMap<String, i64> = BTreeMap::new();
                    for e in &ecp {
                        *got.entry(crisp_op(t, &i, e.node)).or_insert(0) += e.inclusive / 1000;
                    }
                    assert_eq!(got, int_map(want), "{what}");
                }
                "errCPErrCounts" | "errCounts" => {
                    let prefix = if field == "errCPErrCounts" { SYNTH } else { "" };
                    let mut got: BTreeMap<String, Vec<u32>> = BTreeMap::new();
                    for e in ecp.iter().filter(|e| !e.counts.is_empty()) {
                        let key = format!("{prefix}{}", crisp_call_path(t, &i, e.node));
                        let a = got.entry(key).or_insert_with(|| vec![0; 3]);
                        for (x, y) in a.iter_mut().zip(e.counts.to_array()) {
                            *x += y;
                        }
                    }
                    let mut want = counts_map(want);
                    let typo = format!("{SYNTH}[[");
                    let fixed: Vec<String> = want
                        .keys()
                        .filter(|k| k.starts_with(&typo))
                        .cloned()
                        .collect();
                    for k in fixed {
                        let v = want.remove(&k).expect("key");
                        want.insert(k.replacen(&typo, &format!("{SYNTH}["), 1), v);
                        corrected_typos += 1;
                    }
                    assert_eq!(got, want, "{what}");
                }
                "noErrCP" => {
                    let mut got: BTreeMap<String, i64> = BTreeMap::new();
                    for (n, ex) in no_error_critical_path(&g, sem, is_error) {
                        *got.entry(crisp_op(t, &i, n)).or_insert(0) += ex / 1000;
                    }
                    assert_eq!(got, int_map(want), "{what}");
                }
                other => panic!("{f:?}: field {other} is not checked"),
            }
            *fields.entry(field.clone()).or_insert(0) += 1;
            values += n_values;
        }
        checked_files += 1;
    }
    assert_eq!(checked_files, 33);
    assert_eq!(corrected_typos, 2);
    eprintln!("CRISP fields checked: {fields:?}; {values} expected values");
    // how many files expect each field, and how many values (map entries, scalars, and each
    // expected-empty map as one) that makes: all of them are compared above
    let want_fields: BTreeMap<String, usize> = [
        ("errCPCallpathTimeExclusive", 14),
        ("errCPErrCounts", 14),
        ("errCallpathTimeExclusive", 8),
        ("errCounts", 8),
        ("errOpTimeExclusive", 9),
        ("errOpTimeInclusive", 9),
        ("noErrCP", 16),
        ("opTimeExclusive", 33),
        ("timeSavedOnCP", 23),
        ("timeSavedOnWork", 23),
        ("totalWork", 23),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(fields, want_fields);
    assert_eq!(values, 354);
}

#[test]
fn crisp_case_10_needs_the_allowance() {
    let f = testdata().join("crisp-test-cases/test_cases/10.json");
    let mut i = Interner::new();
    let mut w = Warnings::default();
    let t = &traces_of(&f, &mut i, &mut w)[0];
    let g = CpGraph::from_trace(t, &mut w);
    let strict = critical_path(&g, Semantics::JAEGER);
    assert!(strict
        .nodes
        .iter()
        .all(|n| i.name(t.spans[n.node as usize].operation) != "O3"));
    let tol = critical_path(&g, Semantics::CRISP);
    assert!(tol
        .nodes
        .iter()
        .any(|n| i.name(t.spans[n.node as usize].operation) == "O3"));
}

fn servers_inside_clients(t: &Trace) -> Vec<String> {
    let mut bad = Vec::new();
    for s in &t.spans {
        if let Some(p) = s.parent {
            let c = &t.spans[p as usize];
            if c.kind == SpanKind::Client
                && s.kind == SpanKind::Server
                && (s.start < c.start || s.end() > c.end())
            {
                bad.push(format!("{:?}", s.id));
            }
        }
    }
    bad
}

#[test]
fn zipkin_skew_and_ascend_are_corrected() {
    for (file, shifted) in [
        ("zipkin__lens-testdata-skew__zipkin-v2-json.json", 1usize),
        ("zipkin__lens-testdata-ascend__zipkin-v2-json.json", 1usize),
    ] {
        let mut i = Interner::new();
        let mut w = Warnings::default();
        let mut traces = traces_of(&testdata().join(file), &mut i, &mut w);
        assert_eq!(traces.len(), 1, "{file}");
        let t = &mut traces[0];
        assert_eq!(
            servers_inside_clients(t).len(),
            shifted,
            "{file} is skewed before correction"
        );
        let fixed = correct_clock_skew(t, &mut w);
        assert_eq!(fixed, shifted, "{file}");
        assert!(servers_inside_clients(t).is_empty(), "{file}");
        // zipkin's own check: every child starts after its parent
        for s in &t.spans {
            if let Some(p) = s.parent {
                assert!(s.start >= t.spans[p as usize].start, "{file}: {:?}", s.id);
            }
        }
        // after correction nothing is clipped away: every span is on the root's tree
        let g = CpGraph::from_trace(t, &mut w);
        assert_eq!(g.reachable().len(), t.spans.len(), "{file}");
    }
    // the skew file: the server moves to be centred in its client, its child with it
    let mut i = Interner::new();
    let mut w = Warnings::default();
    let mut traces = traces_of(
        &testdata().join("zipkin__lens-testdata-skew__zipkin-v2-json.json"),
        &mut i,
        &mut w,
    );
    let t = &mut traces[0];
    correct_clock_skew(t, &mut w);
    let by_op = |t: &Trace, op: &str, kind: SpanKind| {
        t.spans
            .iter()
            .find(|s| i.name(s.operation) == op && s.kind == kind)
            .expect(op)
            .clone()
    };
    let server = by_op(t, "post", SpanKind::Server);
    assert_eq!(server.start, 1_470_150_004_074_683_000);
    let child = by_op(t, "async", SpanKind::Unspecified);
    assert_eq!(child.start, 1_470_150_004_074_684_000);
}

#[test]
fn every_file_reads_or_is_named_not_a_trace() {
    let mut files = manifold_trace::read::expand_paths(&[testdata()]).expect("walk");
    files.retain(|f| !f.to_string_lossy().contains("crisp-test-cases"));
    assert_eq!(files.len(), 9);
    for f in files {
        let mut i = Interner::new();
        let mut w = Warnings::default();
        let mut n = 0;
        let r = read_file(&f, &mut i, &mut w, &mut |_, _, _| n += 1);
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        if name.contains("DERIVED") {
            match r {
                Err(ReadError::NotATrace { path, .. }) => assert_eq!(path, f),
                other => panic!("{name}: {other:?}"),
            }
            assert!(format!(
                "{}",
                read_file(&f, &mut i, &mut w, &mut |_, _, _| {}).unwrap_err()
            )
            .contains(&name));
        } else {
            r.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(n >= 1, "{name}");
        }
    }
}

#[test]
fn real_export_defects_are_counted() {
    let mut i = Interner::new();
    let mut w = Warnings::default();
    let traces = traces_of(
        &testdata().join("jaeger__uimodel-fixture-ui_01__jaeger-ui-json.json"),
        &mut i,
        &mut w,
    );
    assert_eq!(traces.len(), 1);
    use manifold_trace::WarningKind::*;
    assert_eq!(w.count(DuplicateSpanId), 1, "{:?}", w.nonzero());
    assert_eq!(w.count(ForeignReference), 1, "{:?}", w.nonzero());
    // messaging: consumers under producers are not waited for
    let mut i = Interner::new();
    let mut w = Warnings::default();
    let t = &traces_of(
        &testdata().join("zipkin__lens-testdata-messaging-kafka__zipkin-v2-json.json"),
        &mut i,
        &mut w,
    )[0];
    let g = CpGraph::from_trace(t, &mut w);
    for n in g.reachable() {
        let s = &t.spans[n as usize];
        if let Some(p) = s.parent {
            assert!(
                !(t.spans[p as usize].kind == SpanKind::Producer && s.kind == SpanKind::Consumer)
            );
        }
    }
}

#[test]
fn gzip_and_otlp() {
    use std::io::Write as _;
    let src = testdata().join("opentelemetry-proto__examples-trace__otlp-json.json");
    let bytes = std::fs::read(&src).expect("read");
    let dir = std::env::temp_dir().join(format!("manifold-trace-gz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let gz = dir.join("t.json.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).expect("create"),
        flate2::Compression::fast(),
    );
    enc.write_all(&bytes).expect("write");
    enc.finish().expect("finish");
    let mut i = Interner::new();
    let mut w = Warnings::default();
    let traces = traces_of(&gz, &mut i, &mut w);
    assert_eq!(traces.len(), 1);
    assert_eq!(i.name(traces[0].spans[0].service), "my.service");
    assert_eq!(traces[0].spans[0].kind, SpanKind::Server);
    assert_eq!(traces[0].spans[0].duration, 1_000_000_000);
    std::fs::remove_dir_all(&dir).ok();
}
