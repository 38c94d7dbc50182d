//! The `[server]` section: limits, drain delay and HTTP/2 idle timeout, defaults and bad values.

use super::*;

#[test]
fn server_limits_compile_and_bad_ones_name_the_line() {
    let ok = format!(
        "[server]\nbody_read_timeout = \"5s\"\nmax_connections = 64\ndrain_timeout = \"0s\"\n{UPSTREAMS}[routes.r]\npath = \"/r\"\nproxy = \"a\"\n"
    );
    let config = compile("t.toml".as_ref(), &ok).expect("valid");
    assert_eq!(config.server.body_read_timeout, Duration::from_secs(5));
    assert_eq!(config.server.max_connections, 64);
    assert_eq!(config.server.drain_timeout, Duration::ZERO);
    // Defaults where unset.
    let plain = format!("{UPSTREAMS}[routes.r]\npath = \"/r\"\nproxy = \"a\"\n");
    let config = compile("t.toml".as_ref(), &plain).expect("valid");
    assert_eq!(config.server.body_read_timeout, Duration::from_secs(30));
    assert_eq!(config.server.max_connections, 8192);

    let bad = format!(
        "[server]\nheader_read_timeout = \"0s\"\nbody_read_timeout = \"soon\"\nmax_connections = 0\n{UPSTREAMS}[routes.r]\npath = \"/r\"\nproxy = \"a\"\n"
    );
    one(
        &bad,
        ErrorKind::Value,
        "header_read_timeout",
        "`server.header_read_timeout` must be more than 0",
    );
    one(
        &bad,
        ErrorKind::Value,
        "body_read_timeout",
        "`server.body_read_timeout`: \"soon\" is not a duration",
    );
    one(
        &bad,
        ErrorKind::Value,
        "max_connections",
        "`server.max_connections` must be more than 0",
    );
}

#[test]
fn drain_delay_and_h2_idle_timeout_have_defaults_and_are_checked() {
    let plain = format!("{UPSTREAMS}[routes.r]\npath = \"/r\"\nproxy = \"a\"\n");
    let config = compile("t.toml".as_ref(), &plain).expect("valid");
    assert_eq!(config.server.drain_delay, Duration::from_secs(5));
    assert_eq!(config.server.h2_idle_timeout, Duration::from_secs(300));
    let ok = format!(
        "[server]\ndrain_delay = \"0s\"\nh2_idle_timeout = \"250ms\"\n{UPSTREAMS}[routes.r]\npath = \"/r\"\nproxy = \"a\"\n"
    );
    let config = compile("t.toml".as_ref(), &ok).expect("valid");
    assert_eq!(config.server.drain_delay, Duration::ZERO);
    assert_eq!(config.server.h2_idle_timeout, Duration::from_millis(250));
    let bad = format!(
        "[server]\ndrain_delay = \"later\"\nh2_idle_timeout = \"0s\"\n{UPSTREAMS}[routes.r]\npath = \"/r\"\nproxy = \"a\"\n"
    );
    one(
        &bad,
        ErrorKind::Value,
        "drain_delay",
        "`server.drain_delay`: \"later\" is not a duration",
    );
    one(
        &bad,
        ErrorKind::Value,
        "h2_idle_timeout",
        "`server.h2_idle_timeout` must be more than 0",
    );
}

#[test]
fn send_timeout_has_nginxs_default_and_is_checked() {
    let plain = format!("{UPSTREAMS}[routes.r]\npath = \"/r\"\nproxy = \"a\"\n");
    let config = compile("t.toml".as_ref(), &plain).expect("valid");
    assert_eq!(config.server.send_timeout, Duration::from_secs(60));
    let ok = format!(
        "[server]\nsend_timeout = \"15s\"\n{UPSTREAMS}[routes.r]\npath = \"/r\"\nproxy = \"a\"\n"
    );
    let config = compile("t.toml".as_ref(), &ok).expect("valid");
    assert_eq!(config.server.send_timeout, Duration::from_secs(15));
    for (value, message) in [
        ("0s", "`server.send_timeout` must be more than 0"),
        (
            "never",
            "`server.send_timeout`: \"never\" is not a duration",
        ),
    ] {
        let bad = format!(
            "[server]\nsend_timeout = \"{value}\"\n{UPSTREAMS}[routes.r]\npath = \"/r\"\nproxy = \"a\"\n"
        );
        one(&bad, ErrorKind::Value, "send_timeout", message);
    }
}

/// `max_parsed_bytes`: 256 MiB by default, 0 refused at its line, any other u64 taken (the
/// gateway clamps what its semaphore cannot count).
#[test]
fn max_parsed_bytes_has_a_default_and_refuses_zero() {
    let plain = format!("{UPSTREAMS}[routes.r]\npath = \"/r\"\nproxy = \"a\"\n");
    let config = compile("t.toml".as_ref(), &plain).expect("valid");
    assert_eq!(config.server.max_parsed_bytes, 256 * 1024 * 1024);
    let huge = format!(
        "[server]\nmax_parsed_bytes = 18446744073709551615\n{UPSTREAMS}[routes.r]\npath = \"/r\"\nproxy = \"a\"\n"
    );
    let config = compile("t.toml".as_ref(), &huge).expect("valid");
    assert_eq!(config.server.max_parsed_bytes, u64::MAX);
    let bad = format!(
        "[server]\nmax_parsed_bytes = 0\n{UPSTREAMS}[routes.r]\npath = \"/r\"\nproxy = \"a\"\n"
    );
    one(
        &bad,
        ErrorKind::Value,
        "max_parsed_bytes",
        "`server.max_parsed_bytes` must be more than 0",
    );
}
