//! `manifold check` and `manifold serve` as a user runs them.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn manifold() -> Command {
    Command::new(env!("CARGO_BIN_EXE_manifold"))
}

fn repo(path: &str) -> String {
    format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_prints_the_dags_and_critical_paths_of_the_shop() {
    let out = manifold()
        .args(["check", "-c", &repo("examples/shop.toml")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("route checkout: POST /checkout"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "critical path: order → shipping → confirm = 450ms (one after another: 750ms)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("critical path: orders = 200ms (one after another: 300ms)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("level 1: payment, inventory, shipping"),
        "{stdout}"
    );
}

#[test]
fn check_reports_every_error_with_its_location() {
    let dir = std::env::temp_dir().join(format!("manifold-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "[upstreams.a]\nendpoints = [\"http://127.0.0.1:1\"]\ntimeout = \"soon\"\n\n[routes.r]\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"x\"\n  upstream = \"b\"\n",
    )
    .unwrap();
    let out = manifold()
        .args(["check", "-c", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml:3:11:"), "{stderr}");
    assert!(
        stderr.contains("bad.toml:9:14:") && stderr.contains("unknown upstream `b`"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn check_says_what_each_cache_key_is_made_of() {
    let dir = std::env::temp_dir().join(format!("manifold-check-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keys.toml");
    std::fs::write(
        &file,
        r#"[upstreams.users]
endpoints = ["http://127.0.0.1:1"]

[routes.me]
path = "/me/{id}"
  [[routes.me.calls]]
  name = "user"
  upstream = "users"
  path = "/users/{path.id}"
  headers = { authorization = "{header.authorization}" }
  cache = { ttl = "30s" }

[routes.raw]
path = "/raw/{*rest}"
proxy = "users"
cache = { ttl = "30s" }
"#,
    )
    .unwrap();
    let out = manifold()
        .args(["check", "-c", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "cache key: upstream users, GET /users/{path.id}, sent headers authorization, path id, header authorization"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "cache key: route raw, GET path and query; requests carrying authorization or cookie are not cached"
        ),
        "{stdout}"
    );
    let out = manifold()
        .args(["check", "--json", "-c", file.to_str().unwrap()])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["routes"][0]["compose"]["calls"][0]["cache"]["key_inputs"],
        serde_json::json!([
            {"source": "path", "index": 0, "name": "id"},
            {"source": "header", "name": "authorization"}
        ]),
        "{json}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The arguments that serve the shop on free ports.
#[test]
fn check_warns_when_a_required_call_reads_an_optional_one_and_still_succeeds() {
    let dir = std::env::temp_dir().join(format!("manifold-check-warn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("warn.toml");
    std::fs::write(
        &file,
        "[upstreams.a]\nendpoints = [\"http://127.0.0.1:1\"]\n\n[routes.r]\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"recs\"\n  upstream = \"a\"\n  optional = true\n  [[routes.r.calls]]\n  name = \"top\"\n  upstream = \"a\"\n  path = \"/t/{recs.id}\"\n",
    )
    .unwrap();
    let out = manifold()
        .args(["check", "-c", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "warn.toml:11:10: warning: route `r`: call `top` is required and reads `recs`"
        ),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

fn serve_shop_args() -> Vec<String> {
    let config = repo("examples/shop.toml");
    [
        "serve",
        "-c",
        &config,
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Start `command` (a `manifold serve`) and read its first line ("manifold listening on …").
fn start_serving(command: &mut Command, stderr: Stdio) -> (std::process::Child, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

#[test]
fn serve_starts_answers_and_stops_on_sigterm() {
    let (mut child, line) = start_serving(manifold().args(serve_shop_args()), Stdio::null());
    // "manifold listening on 127.0.0.1:PORT (admin 127.0.0.1:PORT), 2 route(s)"
    let admin = line
        .split("(admin ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_owned();
    let mut conn = std::net::TcpStream::connect(&admin).unwrap();
    use std::io::{Read, Write};
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    conn.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn serve_raises_its_open_file_limit_and_warns_when_it_is_still_short() {
    // Start with a soft limit of 256 under a hard limit of 1,024 (a shell may lower both, the
    // soft one first).
    let mut shell = Command::new("bash");
    shell
        .args([
            "-c",
            "ulimit -Sn 256 && ulimit -Hn 1024 && exec \"$0\" \"$@\"",
            env!("CARGO_BIN_EXE_manifold"),
        ])
        .args(serve_shop_args());
    let (child, line) = start_serving(&mut shell, Stdio::piped());
    assert!(line.starts_with("manifold listening on"), "{line}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("{limits}"));
    let fields: Vec<&str> = open_files.split_whitespace().collect();
    // "Max open files  SOFT  HARD  files": the soft limit was raised to the hard one.
    assert_eq!(fields[3], "1024", "{open_files}");
    assert_eq!(fields[4], "1024", "{open_files}");

    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the open-file limit is 1024")
            && stderr.contains("server.max_connections = 8192"),
        "{stderr}"
    );
}
