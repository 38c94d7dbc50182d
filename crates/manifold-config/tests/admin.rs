//! The admin listener's keys (`admin_token`, `admin_token_file`, the fail-closed bind rule),
//! secrets kept out of `/config`, and the one route-shape rule shared with the gateway.

use manifold_config::{compile, route_shape, ErrorKind};

const TOKEN: &str = "0123456789abcdef-admin";

fn err_on(src: &str, needle: &str, part: &str) {
    let errs = match compile("t.toml".as_ref(), src) {
        Ok(_) => panic!("expected errors for:\n{src}"),
        Err(e) => e.errors,
    };
    let line = src
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle} not in source"))
        + 1;
    assert!(
        errs.iter()
            .any(|e| e.kind == ErrorKind::Value && e.line == line && e.message.contains(part)),
        "wanted an error on line {line} mentioning {part:?}, got {errs:#?}"
    );
}

#[test]
fn a_non_loopback_admin_without_a_token_is_refused() {
    err_on(
        "[server]\nadmin = \"0.0.0.0:9901\"\n",
        "admin =",
        "is not a loopback address and no `server.admin_token`",
    );
    err_on(
        "[server]\nadmin = \"[::]:9901\"\n",
        "admin =",
        "server.admin_token",
    );
    let ok = compile(
        "t.toml".as_ref(),
        &format!("[server]\nadmin = \"0.0.0.0:9901\"\nadmin_token = \"{TOKEN}\"\n"),
    )
    .unwrap();
    assert_eq!(ok.server.admin_token.unwrap().expose(), TOKEN);
    // Loopback without a token stays as it was.
    let ok = compile("t.toml".as_ref(), "[server]\nadmin = \"127.0.0.1:9901\"\n").unwrap();
    assert!(ok.server.admin_token.is_none());
}

#[test]
fn weak_or_doubled_tokens_are_refused_where_they_are_written() {
    err_on(
        "[server]\nadmin_token = \"short\"\n",
        "admin_token",
        "at least 16",
    );
    err_on(
        "[server]\nadmin_token = \"0123456789 abcdef\"\n",
        "admin_token",
        "visible ASCII",
    );
    err_on(
        &format!("[server]\nadmin_token = \"{TOKEN}\"\nadmin_token_file = \"t\"\n"),
        "admin_token_file",
        "both set",
    );
    err_on(
        "[server]\nadmin_token_file = \"/nonexistent/manifold-token\"\n",
        "admin_token_file",
        "cannot read /nonexistent/manifold-token",
    );
}

#[test]
fn the_token_file_is_read_beside_the_config_and_trimmed() {
    let dir = std::env::temp_dir().join(format!("manifold-admin-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("admin.token"), format!("  {TOKEN}\n")).unwrap();
    let config = compile(
        &dir.join("m.toml"),
        "[server]\nadmin = \"0.0.0.0:9901\"\nadmin_token_file = \"admin.token\"\n",
    )
    .unwrap();
    assert_eq!(config.server.admin_token.as_ref().unwrap().expose(), TOKEN);
    std::fs::remove_dir_all(&dir).ok();
}

/// The token file was read whole, whatever it was: a FIFO blocked `manifold check` (and a
/// start or reload) forever, `/dev/zero` was read until memory ran out, and a 1 MB file of
/// letters became a 1 MB token. Only a regular file of at most 4 KiB is read.
#[test]
fn a_token_file_that_is_not_a_small_regular_file_is_refused() {
    err_on(
        "[server]\nadmin_token_file = \"/dev/null\"\n",
        "admin_token_file",
        "not a regular file",
    );
    let dir = std::env::temp_dir().join(format!("manifold-big-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("big.token"), "a".repeat(1 << 20)).unwrap();
    let errs = compile(
        &dir.join("m.toml"),
        "[server]\nadmin_token_file = \"big.token\"\n",
    )
    .unwrap_err()
    .errors;
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        errs.iter()
            .any(|e| e.line == 2 && e.message.contains("more than 4096 bytes")),
        "{errs:#?}"
    );
}

/// Fault 6: `/config` (the config serialized) showed broker passwords and credential headers.
#[test]
fn the_serialized_config_shows_no_secret() {
    let src = format!(
        r#"[server]
admin_token = "{TOKEN}"
[queue]
backend = "nats"
url = "nats://app:queuepass@127.0.0.1:4222"
[events]
backend = "rabbitmq"
url = "amqp://app:eventpass@127.0.0.1:5672/%2f"
[cache]
redis = "redis://:redispass@127.0.0.1:6379"
[upstreams.a]
endpoints = ["http://127.0.0.1:7001"]
[routes.r]
path = "/r"
  [[routes.r.calls]]
  name = "x"
  upstream = "a"
  path = "/x"
  headers = {{ authorization = "Bearer statictoken", x-api-key = "apikeyvalue", Cookie = "sid=cookievalue", accept = "text/plain" }}
  [routes.r.response]
  headers = {{ x-session-token = "resptoken" }}
  body = {{ x = "{{x}}" }}
"#
    );
    let config = compile("t.toml".as_ref(), &src).unwrap_or_else(|e| panic!("{e}"));
    let shown = serde_json::to_string(&config).unwrap();
    let debug = format!("{:?}", config.server);
    for secret in [
        TOKEN,
        "queuepass",
        "eventpass",
        "redispass",
        "statictoken",
        "apikeyvalue",
        "cookievalue",
        "resptoken",
    ] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(!debug.contains(TOKEN), "{debug}");
    assert!(shown.contains("nats://app:***@127.0.0.1:4222"), "{shown}");
    assert!(shown.contains("text/plain"), "{shown}");
}

/// An endpoint with credentials is refused, and the refusal does not repeat the password.
#[test]
fn an_endpoint_with_credentials_is_refused_without_echoing_them() {
    let src = "[upstreams.a]\nendpoints = [\"http://u:endpointpass@127.0.0.1:7001\"]\n";
    let e = compile("t.toml".as_ref(), src).unwrap_err().to_string();
    assert!(e.contains("must not carry credentials"), "{e}");
    assert!(!e.contains("endpointpass"), "{e}");
}

/// Fault 5's rule: routes differing only in parameter names have one shape, so a GET and a POST
/// on it are one path with two methods (accepted), and the gateway groups them the same way.
#[test]
fn routes_differing_in_parameter_names_share_a_shape() {
    assert_eq!(route_shape("/u/{id}"), route_shape("/u/{x}"));
    let src = "[upstreams.a]\nendpoints = [\"http://127.0.0.1:7001\"]\n[routes.get]\npath = \"/u/{id}\"\nproxy = \"a\"\n[routes.post]\nmethod = \"POST\"\npath = \"/u/{x}\"\nproxy = \"a\"\n";
    let config = compile("t.toml".as_ref(), src).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.routes.len(), 2);
}

/// A path that is not a config (a huge log, `/dev/zero`) is refused once past the bound, not
/// read until memory runs out; a pipe still works (`-c <(...)`).
#[test]
fn a_config_file_past_the_size_bound_is_refused() {
    let dir = std::env::temp_dir().join(format!("manifold-config-size-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.toml");
    let line = "# padding padding padding padding padding padding padding padding\n";
    let copies = (manifold_config::MAX_CONFIG_BYTES as usize / line.len()) + 1;
    std::fs::write(&big, line.repeat(copies)).unwrap();
    let err = manifold_config::load(&big).unwrap_err().to_string();
    assert!(err.contains("larger than 16 MiB"), "{err}");
    let zero = manifold_config::load(std::path::Path::new("/dev/zero"))
        .unwrap_err()
        .to_string();
    assert!(zero.contains("larger than 16 MiB"), "{zero}");
    std::fs::remove_dir_all(&dir).ok();
}
