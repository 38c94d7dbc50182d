//! The memory benchmark's unit tests: answer parsing, spec checks, `/proc` readings and the
//! generated gateway config.

use super::client::complete;
use super::*;

#[test]
fn an_answer_is_complete_by_length_or_last_chunk() {
    assert_eq!(complete(b"HTTP/1.1 200 OK\r\nContent-Le"), Ok(None));
    let head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
    assert_eq!(complete(head), Ok(None));
    assert_eq!(complete(&[&head[..], b"hello"].concat()), Ok(Some(200)));
    let chunked = b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
    assert_eq!(complete(chunked), Ok(None));
    assert_eq!(
        complete(&[&chunked[..], b"0\r\n\r\n"].concat()),
        Ok(Some(503))
    );
    assert!(complete(b"garbage\r\n\r\n").is_err());
    assert!(complete(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
}

#[test]
fn absurd_specs_are_refused_with_what_is_wrong() {
    let mut s = MemorySpec::quick("manifold".into());
    s.connections = MAX_CONNECTIONS + 1;
    assert!(s.check().unwrap_err().to_string().contains("connections"));
    let mut s = MemorySpec::quick("manifold".into());
    s.in_flight = 0;
    assert!(s.check().unwrap_err().to_string().contains("in-flight"));
    let mut s = MemorySpec::quick("manifold".into());
    s.upstream_delay = Duration::from_millis(10);
    assert!(s.check().unwrap_err().to_string().contains("delay"));
}

#[test]
fn this_process_has_a_resident_reading() {
    let r = resident(std::process::id()).expect("/proc is readable");
    assert!(r.rss_kib > 0 && r.pss_kib > 0, "{r:?}");
}

#[test]
fn the_gateway_config_compiles() {
    let spec = MemorySpec::quick("manifold".into());
    let toml = gateway_toml("http://127.0.0.1:9", &spec);
    let c = manifold_config::compile("memory.toml".as_ref(), &toml);
    assert!(c.is_ok(), "{:?}", c.err());
}
