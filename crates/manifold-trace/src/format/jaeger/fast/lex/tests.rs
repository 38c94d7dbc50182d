use super::*;

fn run(s: &str) -> R<usize> {
    trace(s.as_bytes(), 4).map(|(t, n)| {
        assert!(!t.spans.is_empty() || s.contains("[]"));
        n
    })
}

#[test]
fn same_bytes_is_equality() {
    let words = [
        "", "a", "ab", "key", "type", "spanID", "traceID", "refType", "CHILD_OF",
    ];
    let long = [
        "0123456789abcdef",
        "0123456789abcdeF",
        "0000000000c0ffee0000000000000001",
    ];
    for a in words.iter().chain(&long) {
        for b in words.iter().chain(&long) {
            assert_eq!(same_bytes(a.as_bytes(), b.as_bytes()), a == b, "{a} {b}");
        }
        for i in 0..a.len() {
            let mut c = a.as_bytes().to_vec();
            c[i] ^= 1;
            assert!(!same_bytes(a.as_bytes(), &c));
        }
    }
}

#[test]
fn plain_trace_and_its_length() {
    let doc = r#" {"traceID":"1","spans":[{"spanID":"a","startTime":1,"duration":2,"tags":[{"key":"k","type":"string","value":"v"}],"logs":[],"references":[{"refType":"CHILD_OF","spanID":"b"}],"processID":"p"}],"processes":{"p":{"serviceName":"s","tags":[]}},"warnings":null},"#;
    assert_eq!(run(doc), Ok(doc.len() - 1));
}

#[test]
fn incomplete_is_eof_and_unusual_bails() {
    let doc = r#"{"traceID":"1","spans":[{"spanID":"a","startTime":12"#;
    for n in 0..doc.len() {
        assert_eq!(run(&doc[..n]).err(), Some(Stop::Eof), "{}", &doc[..n]);
    }
    for bad in [
        r#"{"traceID":"1","spans":[{"spanID":"a\n"}]}"#,
        r#"{"traceID":"1","spans":[{"spanID":"a","startTime":01}]}"#,
        r#"{"traceID":"1","spans":[{"spanID":"a","startTime":1e999}]}"#,
        r#"{"traceID":"1","spans":[{"spanID":"a","startTime":1.}]}"#,
        r#"{"traceID":"1","spans":[{"spanID":"a",}]}"#,
        r#"{"traceID":"1","spans":[{"spanID":"a","spanID":"b"}]}"#,
        r#"{"traceID":"1"}"#,
        r#"{"data":[]}"#,
        r#"{"traceID":"1","spans":[{"spanID":"a","x":[1,]}]}"#,
        r#"{"traceID":"1","spans":[{"spanID":"a","x":tru}]}"#,
        "{\"traceID\":\"1\",\"spans\":[{\"spanID\":\"a\u{1}\"}]}",
    ] {
        assert_eq!(run(bad).err(), Some(Stop::Bail), "{bad}");
    }
}
