use super::*;
use crate::format;

fn read(s: &str) -> Result<Vec<RawTrace>, ReadError> {
    let mut i = Interner::new();
    let mut w = Warnings::default();
    read_bytes(s.as_bytes(), &mut i, &mut w)
}

#[test]
fn shapes() {
    let span = r#"{"traceID":"1","spanID":"a","operationName":"x","references":[],"startTime":1,"duration":2,"processID":"p"}"#;
    let trace =
        format!(r#"{{"traceID":"1","spans":[{span}],"processes":{{"p":{{"serviceName":"s"}}}}}}"#);
    assert_eq!(
        read(&format!(r#"{{"data":[{trace},{trace}],"total":0}}"#))
            .expect("data")
            .len(),
        2
    );
    assert_eq!(read(&trace).expect("single").len(), 1);
    assert_eq!(read(&format!("[{trace}]")).expect("array").len(), 1);
    assert_eq!(read(&format!("{span}\n{span}\n")).expect("ndjson").len(), 1);
    let z = r#"{"traceId":"1","id":"2","name":"a","timestamp":1,"duration":1,"localEndpoint":{"serviceName":"s"}}"#;
    assert_eq!(read(&format!("[{z}]")).expect("zipkin").len(), 1);
    assert_eq!(
        read(&format!("[[{z}],[{z}]]"))
            .expect("zipkin traces")
            .len(),
        2
    );
}

#[test]
fn otlp_streams_and_api_v3() {
    let rs = r#"{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"s"}}]},"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"a","startTimeUnixNano":"1","endTimeUnixNano":"9"}]}]}"#;
    let doc = format!(r#"{{"resourceSpans":[{rs},{rs}]}}"#);
    let t = read(&format!("{doc}\n{doc}\n")).expect("ndjson otlp");
    assert_eq!(t.len(), 1, "one trace id across lines");
    assert_eq!(t[0].spans.len(), 4);
    let v3 = format!(r#"{{"result":{{"resourceSpans":[{rs}]}}}}"#);
    assert_eq!(read(&v3).expect("api_v3").len(), 1);
}

/// Everything a reader produced, with symbols resolved (interners may number names in a
/// different order), for comparing readers.
fn outcome(bytes: &[u8], fast: FastPaths, chunk_reads: bool) -> String {
    let mut i = Interner::new();
    let mut w = Warnings::default();
    let mut traces = Vec::new();
    let r: Box<dyn Read> = if chunk_reads {
        // a reader that hands out a few bytes at a time: units straddle every refill
        Box::new(Dribble(io::Cursor::new(bytes.to_vec())))
    } else {
        Box::new(io::Cursor::new(bytes.to_vec()))
    };
    let res = read_stream_with(
        r,
        Path::new("<memory>"),
        &mut i,
        &mut w,
        &mut |t, _, _| traces.push(t),
        fast,
        crate::limits::Limits::DEFAULT,
    );
    let mut out = format!("{:?}\n", res.map_err(|e| e.to_string()));
    for t in &traces {
        out.push_str(&format!("trace {}\n", t.trace_id));
        for s in &t.spans {
            out.push_str(&format!(
                "  {} <- {:?} {:?} {}/{} {}+{} {:?} {} h={} m={} p={}\n",
                s.id.render(&i),
                s.parent_id.map(|p| p.render(&i)),
                s.link,
                i.name(s.service),
                i.name(s.operation),
                s.start,
                s.duration,
                s.kind,
                s.flags,
                i.name(s.host),
                i.name(s.http_method),
                i.name(s.http_path),
            ));
        }
    }
    out.push_str(&format!("{:?}", w.nonzero()));
    out
}

struct Dribble(io::Cursor<Vec<u8>>);

impl Read for Dribble {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(7);
        self.0.read(&mut buf[..n])
    }
}

fn same_with_and_without_fast_paths(doc: &[u8]) {
    let general = outcome(doc, FastPaths::None, false);
    assert_eq!(
        outcome(doc, FastPaths::Serde, false),
        general,
        "serde fast path"
    );
    assert_eq!(
        outcome(doc, FastPaths::All, false),
        general,
        "all fast paths"
    );
    assert_eq!(
        outcome(doc, FastPaths::All, true),
        general,
        "all, small reads"
    );
}

fn jaeger_samples() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/traces");
    let mut docs = vec![crate::synth::checkout_file(3, 9).into_bytes()];
    for name in [
        "jaeger-ui__TraceStatistics-testTrace__jaeger-json.json",
        "jaeger__uimodel-fixture-ui_01__jaeger-ui-json.json",
    ] {
        if let Ok(b) = std::fs::read(dir.join(name)) {
            // the hand-written reader takes these real traces itself (not only its fallbacks)
            assert!(
                format::jaeger::fast::lex::trace(&b, 0).is_ok(),
                "{name} is read fast"
            );
            docs.push(b);
            let mut env = b"{\"data\":[".to_vec();
            env.extend_from_slice(docs.last().map_or(&[][..], |d| &d[..]));
            env.extend_from_slice(b"]}");
            docs.push(env);
        }
    }
    docs
}

#[test]
fn fast_paths_read_exactly_what_the_general_parser_reads() {
    for doc in jaeger_samples() {
        same_with_and_without_fast_paths(&doc);
    }
    let trace = |extra: &str, tag: &str| {
        format!(
            r#"{{"data":[{{"traceID":"00ff","spans":[{{"traceID":"ff","spanID":"a","operationName":"GET /x","references":[{{"refType":"FOLLOWS_FROM","traceID":"ff","spanID":"c"}},{{"refType":"CHILD_OF","traceID":"ee","spanID":"d"}}],"startTime":1,"duration":2,"tags":[{{"key":"http.method","type":"string","value":"post"}},{{"key":"http.url","value":"http://h/p?q=1"}},{{"key":"error","value":true}},{{"key":"n","value":[1,{{"a":null}}]}}{tag}],"logs":[{{"timestamp":3,"fields":[{{"key":"event","value":"error"}}]}}],"processID":"p"{extra}}}],"processes":{{"p":{{"serviceName":"s","tags":[{{"key":"hostname","value":"h1"}}]}},"p":{{"serviceName":"t"}}}},"warnings":null}}]}}"#
        )
    };
    for extra in [
        "",
        r#","flags":1.5e3"#,
        r#","startTime":3"#,
        r#","x":"a"b""#,
        r#","operationName":null,"y":-0"#,
        r#","process":{"serviceName":"inline"}"#,
        r#","z":{"deep":[[[[[]]]]]}"#,
    ] {
        same_with_and_without_fast_paths(trace(extra, "").as_bytes());
    }
    for tag in [
        r#",{"key":"http.status_code","value":500.0}"#,
        r#",{"key":"error","value":-0}"#,
        r#",{"key":"error","value":0.0}"#,
        r#",{"key":"http.status_code","value":1e400}"#,
        r#",{"key":"http.status_code","value":18446744073709551616}"#,
        r#",{"key":"http.status_code","value":-9223372036854775808}"#,
        r#",{"key":"x","value":1E+2,"type":"float64"}"#,
        r#",{"key":"http.url","value":"http://h/é"}"#,
        r#",{"key":"http.url","value":"http://h/é"}"#,
        r#",{"value":"GET","key":"http.method"}"#,
        r#",{"key":"db.statement","value":"insert into \"t\" values ('\u00e9')"}"#,
        r#",{"key":"http.route","value":"/\ud83d\ude00"}"#,
        r#",{"key":"http.route","value":"/\ud800"}"#,
        r#",{"key":"http.route","value":"/\x"}"#,
        r#",{"key":"http.route","type":"a\"b\\","value":"/"}"#,
        r#",{"key":"http.route","type":"\ud800","value":"/"}"#,
    ] {
        same_with_and_without_fast_paths(trace("", tag).as_bytes());
        let dur = tag.replace("\"key\"", "\"k\"").replace("value", "v");
        same_with_and_without_fast_paths(trace(&format!(",\"q\":[{}]", &dur[1..]), "").as_bytes());
    }
    // keys out of the usual order, other spellings, repeats under another spelling (the
    // hand-written reader guesses the next key; a wrong guess must change nothing)
    for (from, to) in [
        (
            r#""refType":"FOLLOWS_FROM","traceID":"ff","spanID":"c""#,
            r#""spanId":"c","ref_type":"FOLLOWS_FROM","traceId":"ff""#,
        ),
        (
            r#""refType":"FOLLOWS_FROM","traceID":"ff","spanID":"c""#,
            r#""refType":"FOLLOWS_FROM","traceID":"ff","spanID":"c","traceId":"ff""#,
        ),
        (
            r#""traceID":"ff","spanID":"a","operationName":"GET /x""#,
            r#""operationName":"GET /x","spanId":"a","flags":1,"traceId":"ff""#,
        ),
        (
            r#""traceID":"ff","spanID":"a","operationName":"GET /x""#,
            r#""traceID":"ff","spanID":"a","spanId":"b","operationName":"GET /x""#,
        ),
        (
            r#""key":"http.method","type":"string""#,
            r#""type":"string","key":"http.method","type":1"#,
        ),
        (r#""processID":"p""#, r#""processID" : "p""#),
        (r#""traceID":"00ff""#, r#""traceID":"ff","traceID":"ff""#),
    ] {
        let doc = trace("", "").replace(from, to);
        assert_ne!(doc, trace("", ""), "{to}");
        same_with_and_without_fast_paths(doc.as_bytes());
    }
    for time in [
        "1.5",
        "-0",
        "1e400",
        "1e3",
        "\"1.5\"",
        "\"2017-01-26T16:46:31Z\"",
        "true",
        "[]",
    ] {
        let doc = trace("", "").replace("\"startTime\":1,", &format!("\"startTime\":{time},"));
        same_with_and_without_fast_paths(doc.as_bytes());
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]
    #[test]
    fn fast_paths_agree_on_damaged_input(
        which in 0usize..8,
        at in 0usize..100_000,
        how in 0u8..4,
        byte in proptest::sample::select(vec![
            b'\\', b'"', b',', b'}', b']', b'{', b'[', b'0', b'9', b'.', b'-', b'e', b' ',
            b'n', b't', b':', 0x01, 0xC3, 0xFF, b'a',
        ]),
    ) {
        let docs = jaeger_samples();
        let mut doc = docs[which % docs.len()].clone();
        let k = at % doc.len();
        match how {
            0 => doc.truncate(k),
            1 => doc[k] = byte,
            2 => doc.insert(k, byte),
            _ => {
                doc.remove(k);
            }
        }
        let general = outcome(&doc, FastPaths::None, false);
        proptest::prop_assert_eq!(outcome(&doc, FastPaths::Serde, false), general.clone());
        proptest::prop_assert_eq!(outcome(&doc, FastPaths::All, false), general.clone());
        proptest::prop_assert_eq!(outcome(&doc, FastPaths::All, true), general);
    }
}

#[test]
fn not_a_trace_names_the_reason() {
    for bad in [
        "",
        "hello",
        r#"{"cases":[]}"#,
        "[1,2]",
        r#"{"data":[{"a":1}"#,
    ] {
        match read(bad) {
            Err(ReadError::NotATrace { .. }) => {}
            other => panic!("{bad:?} gave {other:?}"),
        }
    }
}

/// Found by rev-cli: a directory holding a link to its parent was walked until the kernel gave
/// up following links (each file read ~40 times, every trace counted ~40 times), and a FIFO
/// named `*.json` in it blocked `manifold analyze DIR` for ever.
#[test]
fn a_directory_walk_enters_each_directory_once_and_takes_regular_files_only() {
    let root = std::env::temp_dir().join(format!("manifold-trace-walk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let sub = root.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("a.json"), "[]").unwrap();
    std::os::unix::fs::symlink("..", sub.join("up")).unwrap();
    std::os::unix::fs::symlink(&sub, root.join("again")).unwrap();
    let fifo = root.join("fifo.json");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let files = expand_paths(std::slice::from_ref(&root)).unwrap();
    let _ = std::fs::remove_dir_all(&root);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].ends_with("a.json"), "{files:?}");
}
