//! `[server] concurrency`: "adaptive" (the default) or a fixed number, checked with line:col.

use manifold_config::policy::Concurrency;
use manifold_config::{compile, ErrorKind};

const REST: &str = "[upstreams.a]\nendpoints = [\"http://127.0.0.1:7001\"]\n[routes.r]\npath = \"/r\"\nproxy = \"a\"\n";

fn with(value: &str) -> String {
    format!("[server]\nlisten = \"127.0.0.1:0\"\nconcurrency = {value}\n{REST}")
}

#[test]
fn concurrency_defaults_to_adaptive_and_takes_a_number() {
    let config = compile("t.toml".as_ref(), REST).expect("valid");
    assert_eq!(config.server.concurrency, Concurrency::Adaptive);
    let config = compile("t.toml".as_ref(), &with("\"adaptive\"")).expect("valid");
    assert_eq!(config.server.concurrency, Concurrency::Adaptive);
    let config = compile("t.toml".as_ref(), &with("64")).expect("valid");
    assert_eq!(config.server.concurrency, Concurrency::Fixed(64));
    let config = compile("t.toml".as_ref(), &with("1000000")).expect("valid");
    assert_eq!(config.server.concurrency, Concurrency::Fixed(1_000_000));
}

#[test]
fn bad_concurrency_values_name_the_line_and_the_allowed_values() {
    for (value, part) in [
        ("0", "out of range"),
        ("-5", "out of range"),
        ("1000001", "out of range"),
        ("9223372036854775807", "out of range"),
        ("\"fast\"", "write \"adaptive\""),
        ("\"Adaptive\"", "write \"adaptive\""),
        ("2.5", "write \"adaptive\""),
        ("true", "write \"adaptive\""),
        ("[1]", "write \"adaptive\""),
    ] {
        let src = with(value);
        let err = compile("t.toml".as_ref(), &src).expect_err("an invalid concurrency");
        let e = err
            .errors
            .iter()
            .find(|e| e.message.contains("server.concurrency"))
            .unwrap_or_else(|| panic!("{value}: no concurrency error in {err}"));
        assert_eq!(e.kind, ErrorKind::Value, "{value}");
        assert_eq!((e.line, e.column), (3, 15), "{value}: {e:?}");
        assert!(e.message.contains(part), "{value}: {}", e.message);
    }
}

#[test]
fn check_prints_the_listener_limit() {
    let config = compile("t.toml".as_ref(), REST).expect("valid");
    let text = manifold_config::describe(&config);
    let first = text.lines().next().expect("a first line");
    assert!(first.ends_with("; concurrency adaptive"), "{first}");
    let config = compile("t.toml".as_ref(), &with("64")).expect("valid");
    let text = manifold_config::describe(&config);
    let first = text.lines().next().expect("a first line");
    assert!(first.ends_with("; concurrency 64"), "{first}");
}

#[test]
fn loop_limit_defaults_to_3_and_is_checked_with_its_line() {
    let config = compile("t.toml".as_ref(), REST).expect("valid");
    assert_eq!(config.server.loop_limit, 3);
    let src = format!("[server]\nlisten = \"127.0.0.1:0\"\nloop_limit = 32\n{REST}");
    let config = compile("t.toml".as_ref(), &src).expect("valid");
    assert_eq!(config.server.loop_limit, 32);
    for value in ["0", "-1", "33", "9223372036854775807"] {
        let src = format!("[server]\nlisten = \"127.0.0.1:0\"\nloop_limit = {value}\n{REST}");
        let err = compile("t.toml".as_ref(), &src).expect_err("an invalid loop_limit");
        let e = err
            .errors
            .iter()
            .find(|e| e.message.contains("server.loop_limit"))
            .unwrap_or_else(|| panic!("{value}: no loop_limit error in {err}"));
        assert_eq!((e.line, e.column), (3, 14), "{value}: {e:?}");
        assert!(
            e.message.contains("write 1 to 32"),
            "{value}: {}",
            e.message
        );
    }
}
